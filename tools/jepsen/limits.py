"""Bounds of the Jepsen-style harness (tools.jepsen), each with why it has its value.

Kept in the harness's own package because quorumdb/limits.py belongs to the database;
these bound the test tool, not the system under test.
"""

# --- Clients ----------------------------------------------------------------------
# Client RPC deadline (Connection.timeout_s): long enough to ride out a leader failover
# (~1-4 s) inside one statement, short enough that a stuck client ends the run promptly.
CLIENT_TIMEOUT_S = 12.0
# Attempts of one logical operation when the database answers 40001 (each attempt is a new
# transaction, chosen by the client, never replayed by the server).
OP_ATTEMPTS_MAX = 8
# Jittered exponential backoff between those attempts.
OP_BACKOFF_FIRST_S = 0.01
OP_BACKOFF_MAX_S = 0.5
# Pause after a failed reconnect before trying the next compute node (a whole AZ may be down).
RECONNECT_PAUSE_S = 0.2
# Clients one run may start (threads in this process; each holds one session).
CLIENTS_MAX = 64
# Operations one client may issue in a run (bounds the history for very long soaks).
OPS_PER_CLIENT_MAX = 200_000

# --- Run phases ---------------------------------------------------------------------
# A fresh 15-process cluster on a small shared machine starts in ~10-30 s.
CLUSTER_READY_TIMEOUT_S = 120.0
# After the last fault is healed and every node restarted: how long the run waits for every
# node to report healthy and for a SELECT to succeed before the final reads.
RECOVERY_TIMEOUT_S = 120.0
# The final reads (balances, transfer ids, set members, lists) are retried this long.
FINAL_READ_TIMEOUT_S = 60.0
# Client threads get this long after the run's end to finish the operation in flight
# (one statement deadline plus margin) before they are abandoned and their op recorded "info".
CLIENT_JOIN_TIMEOUT_S = CLIENT_TIMEOUT_S + 10.0
# Run duration bounds (seconds): a soak of hours is fine, a typo of days is not.
DURATION_MAX_S = 24 * 3600.0

# --- Nemesis --------------------------------------------------------------------------
# First fault no earlier than this after the clients start (let the workload warm up).
NEMESIS_WARMUP_S = 2.0
# How long one fault lasts (kill .. restart, partition .. heal), drawn uniformly.
FAULT_DOWN_MIN_S = 3.0
FAULT_DOWN_MAX_S = 6.0
# Quiet time between the end of one fault and the start of the next, drawn uniformly.
FAULT_GAP_MIN_S = 1.5
FAULT_GAP_MAX_S = 3.5
# Faults one schedule may hold (bounds a soak's schedule; ~1 fault / 7 s over 24 h fits).
SCHEDULE_FAULTS_MAX = 20_000
# Deadline of the Status calls used to find the adjudicator leader.
LEADER_LOOKUP_TIMEOUT_S = 1.0

# --- Checkers ---------------------------------------------------------------------------
# Operations a checker accepts; a longer history is refused with a clear verdict
# ("unchecked: too large") instead of an unbounded graph search.
CHECK_OPS_MAX = 500_000
# rw edges a G-single search starts from (each costs one bounded graph search).
CHECK_RW_EDGES_MAX = 200_000
# Anomalies of one kind that are reported in full (the rest are counted).
ANOMALIES_REPORTED_MAX = 20

assert FAULT_DOWN_MIN_S <= FAULT_DOWN_MAX_S
assert FAULT_GAP_MIN_S <= FAULT_GAP_MAX_S
assert CLIENT_JOIN_TIMEOUT_S > CLIENT_TIMEOUT_S
