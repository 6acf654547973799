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
# gRPC message size (a 3,000-row transaction of 2 KiB rows fits easily).
GRPC_MESSAGE_BYTES_MAX = 64 * 1024 * 1024
# Uncommitted entries an adjudicator keeps in memory to resend to slow replicas.
WRITER_BUFFER_ENTRIES_MAX = 100_000

assert TXN_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX, "a full transaction must fit in one commit message"
assert STORAGE_READ_WAIT_MS / 1000 < STORAGE_READ_TIMEOUT_S, "the read wait must end before the RPC deadline"
assert STORAGE_READ_TIMEOUT_S < STATEMENT_TIMEOUT_S
assert COMMIT_TIMEOUT_S < STATEMENT_TIMEOUT_S
assert JOURNAL_RPC_TIMEOUT_S < COMMIT_TIMEOUT_S
assert COMMIT_BATCH_MAX <= ENTRIES_PER_MESSAGE_MAX
