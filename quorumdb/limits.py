"""Every bound in QuorumDB, in one place, each with why it has that value.

TigerBeetle's rule: every loop and queue has a fixed upper bound. Values that
users may want to change are the DSQL quotas; the rest are engineering bounds.
"""

# --- DSQL quotas (Aurora DSQL's documented defaults) -------------------------
# Rows changed by one transaction; more is SQLSTATE 54000.
TXN_ROWS_MAX = 3_000
# Bytes of keys + values modified by one transaction; more is 54000.
TXN_BYTES_MAX = 10 * 1024 * 1024
# A transaction may run at most this long; the adjudicator forgets older conflicts.
TXN_AGE_MAX_NS = 5 * 60 * 1_000_000_000
# Key and row size.
KEY_BYTES_MAX = 1024
ROW_BYTES_MAX = 2 * 1024 * 1024

# --- Deadlines (every network call carries one) ------------------------------
# A client's whole statement: reads, commit and retries fit in it.
STATEMENT_TIMEOUT_S = 30.0
# One storage read RPC (includes the bounded wait for the closed timestamp).
STORAGE_READ_TIMEOUT_S = 3.0
# How long a storage node waits for its closed timestamp to pass a read's ts.
STORAGE_READ_WAIT_MS = 2_000
# One commit RPC from a compute node to the adjudicator.
COMMIT_TIMEOUT_S = 10.0
# One append/fence RPC from the adjudicator to a journal replica.
JOURNAL_RPC_TIMEOUT_S = 2.0
# A journal Subscribe stream ends after this long; the follower resubscribes.
SUBSCRIBE_STREAM_S = 60.0
# Status RPCs from tools.
STATUS_TIMEOUT_S = 2.0

# --- Batches and queues --------------------------------------------------------
# Commit requests one adjudicator batch resolves and appends at once (group commit).
COMMIT_BATCH_MAX = 512
# Commit requests queued at the adjudicator before new ones are refused.
COMMIT_QUEUE_MAX = 8_192
# Entries in one Append / ReadEntries / Subscribe message.
ENTRIES_PER_MESSAGE_MAX = 1_000
# Keys in one storage Get, rows in one storage Scan page.
GET_KEYS_MAX = 1_000
SCAN_PAGE_MAX = 1_000
# Rows a single SELECT may return to a client (bounds memory of a statement).
RESULT_ROWS_MAX = 1_000_000
# Open sessions per compute node.
SESSIONS_MAX = 10_000
# An idle session is closed after this long.
SESSION_IDLE_S = 3_600.0
# SQL: keys one statement's point plan may read (cartesian product of IN lists); beyond it, a range scan.
PLAN_POINT_KEYS_MAX = 1_000
# SQL: rows one statement may read from storage (bounds a scan's pages and a statement's memory); 54000 beyond.
STATEMENT_ROWS_READ_MAX = 10_000_000
# gRPC message size (a 3,000-row transaction of 2 KiB rows fits easily).
GRPC_MESSAGE_BYTES_MAX = 64 * 1024 * 1024
# Uncommitted entries an adjudicator keeps in memory to resend to slow replicas.
WRITER_BUFFER_ENTRIES_MAX = 100_000

# --- Storage node -----------------------------------------------------------------
# Closed-timestamp promises a segment holds until it has applied their closed_index
# (the journal sends them in order; a handful covers any realistic lag).
STORAGE_PENDING_CLOSED_MAX = 64
# How often a storage node reports its SCL to every journal replica, and that call's deadline.
SCL_REPORT_INTERVAL_MS = 200
SCL_REPORT_TIMEOUT_S = 1.0
# One ReadLog call to a storage peer during repair, and how many rounds over all peers
# one repair attempt makes before it goes back to the journal.
PEER_READ_LOG_TIMEOUT_S = 5.0
PEER_REPAIR_ROUNDS_MAX = 5
# Bytes of entries in one ReadLog reply (one entry is always sent, even if larger):
# keeps a reply well under the gRPC message limit.
READ_LOG_BYTES_MAX = 16 * 1024 * 1024
# Keys one MVCC garbage-collection step examines (bounds the time the event loop is held),
# and how often a step runs.
STORAGE_GC_KEYS_PER_STEP = 2_000
STORAGE_GC_INTERVAL_MS = 1_000
# Versions older than closed_ts minus this may be collected: a transaction lives at most
# TXN_AGE_MAX_NS, and one more minute covers clock error and slow statements.
STORAGE_VERSION_RETENTION_NS = TXN_AGE_MAX_NS + 60 * 1_000_000_000
# Backoff after the journal stream fails before following it again.
FOLLOW_RETRY_BACKOFF_MS = 200
# A storage node with no batch from the journal for this long reports "degraded: no journal".
STORAGE_JOURNAL_SILENCE_MS = 3_000

# --- Compute node ---------------------------------------------------------------
# A whole quorum read (3 copies asked, a failed copy replaced by the next): room for
# two rounds of storage calls, and still well inside the statement deadline.
READ_QUORUM_TIMEOUT_S = 2 * STORAGE_READ_TIMEOUT_S + 1.0
# A storage copy that failed a read is asked last for this long (no retry cost per read).
STORAGE_SUSPECT_S = 5.0
# When every copy was tried and fewer than 3 answered, ask the failed ones again after a
# pause, this many rounds in all: a restarted copy (or a gRPC channel still in its
# <= 1 s reconnect backoff) answers then; a lost quorum still fails in about a second.
READ_QUORUM_ROUNDS_MAX = 3
READ_RETRY_PAUSE_S = 0.6
# Empty merged scan pages a compute node skips past before answering (copies disagreeing).
SCAN_EMPTY_PAGES_MAX = 100
# Commit routing: adjudicators tried (NOT_LEADER hops, refused connections) for one
# commit, and the pause between rounds when no adjudicator leads (failover takes ~1-3 s).
COMMIT_ROUTE_ATTEMPTS_MAX = 60
COMMIT_ROUTE_BACKOFF_S = 0.1
# Readiness probe of a compute node (quorum read + leader Status), its period, and how
# long a success keeps the node "ok".
READINESS_PROBE_INTERVAL_S = 1.0
READINESS_FRESH_S = 5.0
# How often the compute node looks for idle sessions to close.
SESSION_REAP_INTERVAL_S = 30.0
# Client side: margin added to the server's statement deadline so that the server's
# own 57014 answer arrives before the client gives up.
CLIENT_DEADLINE_MARGIN_S = 5.0

assert TXN_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX, "a full transaction must fit in one commit message"
assert STORAGE_READ_WAIT_MS / 1000 < STORAGE_READ_TIMEOUT_S, "the read wait must end before the RPC deadline"
assert STORAGE_READ_TIMEOUT_S < STATEMENT_TIMEOUT_S
assert COMMIT_TIMEOUT_S < STATEMENT_TIMEOUT_S
assert JOURNAL_RPC_TIMEOUT_S < COMMIT_TIMEOUT_S
assert COMMIT_BATCH_MAX <= ENTRIES_PER_MESSAGE_MAX
assert TXN_BYTES_MAX < READ_LOG_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX, "a repair reply holds any one transaction"
assert READ_QUORUM_TIMEOUT_S < STATEMENT_TIMEOUT_S, "a read must fail before its statement times out"
assert COMMIT_ROUTE_BACKOFF_S < COMMIT_TIMEOUT_S

# --- Adjudicator ----------------------------------------------------------------
# Keys one conflict-table garbage-collection call may drop: holds the event loop for a few
# ms at most, yet is far above what one commit batch adds, so collection keeps up.
ADJUDICATOR_GC_KEYS_PER_CALL = 50_000
# A start_ts this far ahead of the adjudicator's clock is a broken client clock: refused,
# because accepting it would drag every later commit_ts (and commit-wait) into the future.
START_TS_AHEAD_MAX_NS = 10 * 1_000_000_000
# Deadline of one take_over attempt (fence a majority + reconcile the tail + leader entry).
TAKE_OVER_TIMEOUT_S = 5.0
# Backoff between take_over attempts of the initial leader: doubles from min to max.
TAKE_OVER_BACKOFF_MIN_MS = 50
TAKE_OVER_BACKOFF_MAX_MS = 1_000
# How long a new leader waits to apply the journal up to its leader entry before giving up.
LEADER_CATCH_UP_TIMEOUT_S = 30.0
# A standby with no progress from the journal for this long reports "degraded".
ADJUDICATOR_JOURNAL_SILENCE_MS = 3_000

# --- Journal (journal/) ----------------------------------------------------------
# The writer's own deadline for one append to commit on 2 of 3 replicas; below
# COMMIT_TIMEOUT_S so the adjudicator can still answer "unavailable" in time.
JOURNAL_COMMIT_TIMEOUT_S = 5.0
# Entries per journal segment file; prefix truncation deletes whole segments, so
# this is also the granularity (and the slack) of truncation.
JOURNAL_SEGMENT_ENTRIES = 10_000
# Fence rounds a candidate writer tries (each with a higher epoch) before giving up.
JOURNAL_TAKE_OVER_ATTEMPTS_MAX = 5
# Concurrent Subscribe streams one journal replica serves (6 storage + 3 adjudicators + tools).
JOURNAL_SUBSCRIBERS_MAX = 256
# Backoff after a failed journal RPC (writer pipelines, follower resubscribe): doubles up to the max.
JOURNAL_RETRY_BACKOFF_MIN_S = 0.02
JOURNAL_RETRY_BACKOFF_MAX_S = 0.5

assert JOURNAL_COMMIT_TIMEOUT_S < COMMIT_TIMEOUT_S, "the adjudicator must learn 'unavailable' before its caller gives up"
assert JOURNAL_RPC_TIMEOUT_S < JOURNAL_COMMIT_TIMEOUT_S
assert ENTRIES_PER_MESSAGE_MAX <= WRITER_BUFFER_ENTRIES_MAX

# --- Tools (quorumdb up / status, qsql) ---------------------------------------------
# `quorumdb up` waits this long for every node to answer, compute to be healthy and a
# SELECT 1 to work: 15 Python processes on a small shared machine start in ~10-30 s.
UP_READY_TIMEOUT_S = 120.0
# `quorumdb up` gives its nodes this long to exit after SIGTERM before SIGKILL.
UP_STOP_TIMEOUT_S = 10.0
# Deadline of one `SELECT 1` readiness probe through a compute node during `quorumdb up`.
UP_PROBE_STATEMENT_TIMEOUT_S = 5.0
# How often `quorumdb up` checks its nodes for an unexpected exit.
UP_MONITOR_INTERVAL_S = 0.5

assert UP_PROBE_STATEMENT_TIMEOUT_S < UP_READY_TIMEOUT_S
# A follower that hears nothing from its replica for this long switches replica: a live
# writer heartbeats every few ms, so silence means the replica is cut off from it.
JOURNAL_FOLLOWER_IDLE_S = 3.0
assert JOURNAL_FOLLOWER_IDLE_S < SUBSCRIBE_STREAM_S
assert PLAN_POINT_KEYS_MAX <= GET_KEYS_MAX, "a point plan's keys fit in one storage Get"
assert RESULT_ROWS_MAX <= STATEMENT_ROWS_READ_MAX
