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

# The largest clock error bound `quorumdb up --clock-error-ms` takes: commit-wait is about twice
# the bound, so beyond a second every commit would wait seconds.
CLOCK_ERROR_MS_MAX = 1_000

# --- Bulk loads and sequences (compute_node/sql/bulk.py) --------------------------------
# Rows written to a keyspace only one transaction can see (a table it created or truncated)
# are committed ahead in batches of this many keys: each batch is an ordinary commit, so it
# obeys the quotas above. It is also the most such writes one transaction holds in memory.
BULK_BATCH_ROWS_MAX = TXN_ROWS_MAX
BULK_BATCH_BYTES_MAX = TXN_BYTES_MAX
# Autonomous transactions (a sequence range, a new private keyspace id) retry a conflict this
# many times: they are one read and one write of a single key, so a conflict means only that
# another node reserved at the same moment.
AUTONOMOUS_RETRIES_MAX = 50
AUTONOMOUS_BACKOFF_S = 0.002
# Values a compute node reserves from a sequence at once: the first reservation is small (an
# idle sequence wastes little when the node restarts), each one used up within a second
# doubles the next, up to the maximum (one reservation commit per 1,000 values at most).
SEQUENCE_RESERVE_MIN = 32
SEQUENCE_RESERVE_MAX = 1_000
# A statement that ran out of reserved values mid-way reserves what it needs and runs again
# (it wrote nothing yet); this bounds how often.
SEQUENCE_STATEMENT_RETRIES_MAX = 8
# Sequences a compute node caches ranges of.
SEQUENCE_CACHE_ENTRIES_MAX = 10_000

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
# How long one gRPC connection attempt (TCP, TLS handshake, HTTP/2 settings) may take before the
# channel gives it up and tries again (quorumdb/rpc.py OPTIONS).
CONNECT_ATTEMPT_TIMEOUT_MS = 5_000

# Journal lease (journal/core.py, journal/writer_core.py): a replica that acknowledges the
# leader's append refuses fences for this long, so while 2 replicas do, the leader may publish
# closed-timestamp claims without confirming each one (a read then waits one journal round trip
# less). Longer than the idle heartbeat period (leases stay valid between heartbeats), shorter
# than the failover timeout (a dead leader's lease has run out when a standby fences).
JOURNAL_LEASE_MS = 250

# --- Batches and queues --------------------------------------------------------
# Commit requests one adjudicator batch resolves and appends at once (group commit).
COMMIT_BATCH_MAX = 512
# Batches an adjudicator leader of an active-active cluster has on their way to the journal at
# once (decided and appended, not yet durable): a batch there takes a WAN round trip, and one at
# a time made every commit wait for the batch before it. A cluster of one region keeps one.
COMMIT_BATCHES_IN_FLIGHT_MAX = 4
# Commit requests queued at the adjudicator before new ones are refused.
COMMIT_QUEUE_MAX = 8_192
# Entries in one Append / ReadEntries / Subscribe message.
ENTRIES_PER_MESSAGE_MAX = 1_000
# Keys in one storage Get, rows in one storage Scan page.
GET_KEYS_MAX = 1_000
SCAN_PAGE_MAX = 1_000
# Rows a single SELECT may return to a client (bounds memory of a statement).
RESULT_ROWS_MAX = 1_000_000
# substring()/regexp_replace() find PostgreSQL's match extent (longest or shortest at the leftmost
# start) by trying full matches at each possible end: quadratic in the text after the match start,
# so that text is bounded (compute_node/sql/regex.py).
REGEX_EXTENT_TEXT_CHARS_MAX = 20_000
# Open cursors per session (DECLARE): each holds its materialised rows (at most RESULT_ROWS_MAX).
SESSION_CURSORS_MAX = 64
# Savepoints open in one transaction: each keeps a copy of the write buffer's changed keys.
SAVEPOINTS_MAX = 256
# Open sessions per compute node.
SESSIONS_MAX = 10_000
# An idle session is closed after this long.
SESSION_IDLE_S = 3_600.0
# SQL: keys one statement's point plan may read (cartesian product of IN lists); beyond it, a range scan.
PLAN_POINT_KEYS_MAX = 1_000
# SQL: rows one statement may read from storage (bounds a scan's pages and a statement's memory); 54000 beyond.
STATEMENT_ROWS_READ_MAX = 10_000_000
# Rows one statement's window functions visit in frames that do not simply grow (a sliding
# `ROWS BETWEEN n PRECEDING AND n FOLLOWING`, or any EXCLUDE): such a frame is recomputed per row,
# rows x frame work in Python; past this it would hold a core for minutes (54000 instead).
WINDOW_FRAME_ROWS_MAX = 50_000_000
# Iterations of one WITH RECURSIVE query (each runs the recursive term once over the rows the
# previous one produced); the rows it accumulates are bounded by RESULT_ROWS_MAX as well. A
# recursion without a stopping condition fails here with 54000 instead of running forever.
RECURSIVE_ITERATIONS_MAX = 100_000
# gRPC message size (a 3,000-row transaction of 2 KiB rows fits easily).
GRPC_MESSAGE_BYTES_MAX = 64 * 1024 * 1024
# Uncommitted entries an adjudicator keeps in memory to resend to slow replicas.
WRITER_BUFFER_ENTRIES_MAX = 100_000
# Bytes of already committed entries the writer keeps besides (a lagging replica is sent them
# from memory; older ones it reads back from another replica). Without a byte bound, 100,000
# entries of bulk batches (a 3,000-row batch is ~0.3 MB) would keep a whole million-row load,
# ~400 MB, in the adjudicator leader. Uncommitted entries always stay.
WRITER_BUFFER_COMMITTED_BYTES_MAX = 32 * 1024 * 1024

# --- Storage node -----------------------------------------------------------------
# Closed-timestamp promises a segment holds until it has applied their closed_index
# (the journal sends them in order; a handful covers any realistic lag).
STORAGE_PENDING_CLOSED_MAX = 64
# How often a storage node reports its SCL to every journal replica, and that call's deadline.
SCL_REPORT_INTERVAL_MS = 200
SCL_REPORT_TIMEOUT_S = 1.0
# An SCL every replica already acknowledged is reported again only this often (an idle copy).
SCL_REPORT_IDLE_S = 2.0
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
# The backtrack window (storage_node/core.py): its defaults (the cluster settings
# backtrack_window_s and backtrack_budget_bytes override them), the width of the buckets the
# budget is counted in (the window start moves in steps of this; 1 s keeps a 24 h window at
# 86,400 buckets at most, a few MB), and what one version weighs beyond its key and value.
BACKTRACK_WINDOW_DEFAULT_NS = 86_400 * 1_000_000_000
BACKTRACK_BUDGET_DEFAULT_BYTES = 64 * 1024 * 1024
BACKTRACK_BUCKET_NS = 1_000_000_000
BACKTRACK_VERSION_OVERHEAD_BYTES = 32
# `quorumdb backtrack` (tools/dr/backtrack.py): one Backtrack call (its entry is appended and
# commit-waited like a commit, so a commit's deadline), how many adjudicators it tries (NOT_LEADER
# hints, a failover in progress) with a pause between, and how long it waits for the storage
# copies to apply the entry (rewinding touches every changed key once), polling their Status.
BACKTRACK_CALL_TIMEOUT_S = 10.0
BACKTRACK_CALL_ATTEMPTS_MAX = 12
BACKTRACK_RETRY_BACKOFF_S = 0.5
BACKTRACK_APPLY_WAIT_S = 30.0
BACKTRACK_POLL_INTERVAL_S = 0.2
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
# Single-copy reads (read_mode = "single", compute_node/cluster/read_core.py): copies tried one after
# another (a failed, lagging or slower-than-the-hedge copy hands over to the next) before the
# read falls back to a quorum read; at least 2, so one failure never costs the fallback. A copy
# that refused a read as not caught up is asked after every other copy for READ_BEHIND_S.
READ_SINGLE_COPIES_MAX = 3
READ_BEHIND_S = 1.0
# Read streams (compute_node/cluster/read_stream.py, storage ReadStream): the Gets and Scans of every
# session of a compute node to one storage copy share one stream, each message carrying whatever
# was queued when the last one left. Ops per message, and bytes of keys per message:
READ_STREAM_BATCH_MAX = 512
READ_STREAM_BATCH_BYTES = 4 * 1024 * 1024
# Ops queued or unanswered on one stream (a compute node's read concurrency towards one copy).
READ_STREAM_PENDING_MAX = 8_192
# Ops one storage copy holds per stream while they wait for their ts to be closed.
READ_STREAM_WAITING_MAX = 8_192
# A stream lives at most this long (its gRPC deadline; rotated at half of it), and is closed
# after this long without ops.
READ_STREAM_LIFETIME_S = 120.0
READ_STREAM_IDLE_S = 30.0
# Ack-clocked batching (read and commit streams): while ops written on a stream are unanswered,
# new ops wait for the next answer (then go together in one message) but at most this long.
# Sending at once would make every message carry one op under load, and a message costs the
# same Python gRPC work whatever it carries; an idle stream still sends at once.
STREAM_LINGER_S = 0.001
# A reply message of a read stream stays below this (results beyond it go in the next message).
READ_STREAM_REPLY_BYTES = 8 * 1024 * 1024
# Empty merged scan pages a compute node skips past before answering (copies disagreeing).
SCAN_EMPTY_PAGES_MAX = 100
# Commit routing: the pause between rounds when no adjudicator leads (failover takes
# ~0.6-0.8 s); the number of sends is COMMIT_SENDS_MAX below.
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
assert BULK_BATCH_ROWS_MAX <= TXN_ROWS_MAX and BULK_BATCH_BYTES_MAX <= TXN_BYTES_MAX, "a flushed batch is a legal txn"
assert SEQUENCE_RESERVE_MIN <= SEQUENCE_RESERVE_MAX
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
assert TXN_BYTES_MAX < WRITER_BUFFER_COMMITTED_BYTES_MAX, "the latest transactions stay at hand for a lagging replica"

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
# `quorumdb snapshot create` waits at most this long (default; --wait) for the backup to become
# restorable at the snapshot's time: the upload lag of a running cluster is seconds, so a longer
# wait means the backup is not advancing and the user should hear that instead of a hang.
SNAPSHOT_WAIT_TIMEOUT_S = 30.0
# How often that wait lists the store's manifests again (one small LIST per poll).
BACKUP_POLL_INTERVAL_S = 0.25
# Listing and reading the store while another process uploads and removes objects: a manifest or
# snapshot listed a moment ago may be gone when read; the whole read is tried this many times.
BACKUP_READ_ATTEMPTS = 3

assert UP_PROBE_STATEMENT_TIMEOUT_S < UP_READY_TIMEOUT_S
assert BACKUP_POLL_INTERVAL_S < SNAPSHOT_WAIT_TIMEOUT_S
# A follower that hears nothing from its replica for this long switches replica: a live
# writer heartbeats every few ms, so silence means the replica is cut off from it.
JOURNAL_FOLLOWER_IDLE_S = 3.0
assert JOURNAL_FOLLOWER_IDLE_S < SUBSCRIBE_STREAM_S
assert PLAN_POINT_KEYS_MAX <= GET_KEYS_MAX, "a point plan's keys fit in one storage Get"
assert RESULT_ROWS_MAX <= STATEMENT_ROWS_READ_MAX

# --- Network partitions and chaos (quorumdb/netfault.py, rpc.py, supervisor.py) ---------------
# How often a node stats its cluster's rules file: a cut takes effect within about this long,
# and no RPC ever touches the disk.
NETFAULT_POLL_MS = 50
# A server stream ends as soon as its peer's link is cut (quorumdb/rpc.py: the rules watcher
# completes the peer's cut signal); this bounds how long the stream's handler then gets to clean
# up before the call ends anyway.
NETFAULT_STREAM_CHECK_MS = 100
# Distinct handler objects a generic handler may return whose partition-guarded twins a node's
# server keeps (quorumdb/rpc.py); the generated code returns the same few objects on every call,
# and a handler that makes a new object per call is wrapped per call past this bound.
GUARDED_HANDLERS_MAX = 1024
# netfault.cut_links/isolate_*/heal wait this long after rewriting the rules, so that every live
# node has applied them when the call returns (a few poll periods plus scheduling slack).
NETFAULT_SETTLE_S = 0.25
# Cut links one rules file may hold (15 nodes have 105 links; room for much larger clusters)
# and the bytes a node reads from it.
NETFAULT_CUTS_MAX = 10_000
NETFAULT_RULES_BYTES_MAX = 4 * 1024 * 1024
# Threads of `quorumdb up`'s supervisor gRPC server: actions are serialized anyway.
SUPERVISOR_WORKERS = 4
# A restarted node must answer Status within this long, or the supervisor says it did not.
SUPERVISOR_RESTART_READY_TIMEOUT_S = 60.0
# One `quorumdb chaos` action RPC (covers restart-az waiting for 6 nodes to answer).
CHAOS_RPC_TIMEOUT_S = SUPERVISOR_RESTART_READY_TIMEOUT_S + 15.0
# The first call `quorumdb chaos` makes: a supervisor that does not answer this fast is not there.
CHAOS_CONNECT_TIMEOUT_S = 3.0

# Simulated one-way latency between AZs ($QUORUMDB_CROSS_AZ_DELAY_MS, quorumdb/rpc.py): at most
# this much, so that a typo cannot push every cross-AZ call past its deadline (real AZs in one
# region are a few ms apart; 200 ms is already another continent).
CROSS_AZ_DELAY_MS_MAX = 200

# Messages one direction of a stream between regions may hold in flight on the simulated WAN
# (quorumdb/rpc.py's delay lines): a writer waits while it is full. 1,024 messages within a
# 30 ms delay is over 30,000 messages a second per stream, more than a node sends; the bound
# keeps a stalled reader from queueing without limit.
WAN_STREAM_MESSAGES_MAX = 1024

assert NETFAULT_POLL_MS < NETFAULT_STREAM_CHECK_MS * 2
assert 2 * CROSS_AZ_DELAY_MS_MAX / 1000 < STATUS_TIMEOUT_S, "a delayed Status still answers in time"
assert NETFAULT_SETTLE_S * 1000 > 3 * NETFAULT_POLL_MS, "the settle wait covers several polls"
assert STATUS_TIMEOUT_S < SUPERVISOR_RESTART_READY_TIMEOUT_S < CHAOS_RPC_TIMEOUT_S

# --- Storage self-healing: checkpoints and repair (storage_node/) -------------------------
# A checkpoint is due every storage_checkpoint_entries entries (a cluster setting), and also after
# this many bytes of log since the last one: big transactions must not let the local log (and
# restart replay) grow without bound.
STORAGE_CHECKPOINT_LOG_BYTES_MAX = 256 * 1024 * 1024
# A storage copy's local log starts a new file once the current one holds this many bytes (besides
# at every checkpoint). A file with a successor is never written again, so a clone hard-links it
# instead of copying it: what a clone copies stays under one file, whatever the log's size.
STORAGE_LOG_FILE_BYTES_MAX = 1024 * 1024
# Bytes per checkpoint chunk: the unit the encoder hands to the disk writer and the size of one
# ReadCheckpoint stream message (far below the gRPC message limit).
CHECKPOINT_CHUNK_BYTES = 1024 * 1024
# Deadline of a whole ReadCheckpoint stream from a peer (a few GiB at local-disk speed).
PEER_CHECKPOINT_TIMEOUT_S = 300.0
# ReadCheckpoint streams one storage node serves at once (each reads its disk sequentially).
STORAGE_CHECKPOINT_STREAMS_MAX = 2

assert CHECKPOINT_CHUNK_BYTES < GRPC_MESSAGE_BYTES_MAX, "a checkpoint chunk fits in one message"
assert PEER_READ_LOG_TIMEOUT_S < PEER_CHECKPOINT_TIMEOUT_S

# --- Object store on S3 (quorumdb/s3store.py) ------------------------------------------------
# Connecting to the endpoint: a reachable S3 answers in milliseconds, so a few seconds means the
# endpoint is down or blackholed, and the backup loop should learn that quickly.
S3_CONNECT_TIMEOUT_S = 3.0
# Waiting for a response once the request is sent: a put of a large checkpoint object is answered
# only after the whole body has been stored, so this is generous.
S3_READ_TIMEOUT_S = 60.0
# Attempts per call (botocore's "standard" retry mode: throttling, 5xx and connection errors,
# with jittered exponential backoff of at most a few seconds between them).
S3_ATTEMPTS_MAX = 3
# A conditional put that meets another writer's put of the same key in flight (409
# ConditionalRequestConflict) retries this many times before giving up.
S3_PUT_CONFLICT_RETRIES = 3
# Keys one list page returns (S3's maximum); a list pages through them all.
S3_LIST_PAGE_KEYS = 1000

# --- PostgreSQL wire protocol (compute_node/pgwire/, quorumdb/tokens.py) ---------------------
# Largest frontend message accepted (Query text, Bind with its parameters): far above any
# statement a transaction may write (TXN_BYTES_MAX), far below what would strain a node's memory.
PG_MESSAGE_BYTES_MAX = 32 * 1024 * 1024
# Largest startup packet (PostgreSQL's own MAX_STARTUP_PACKET_LENGTH).
PG_STARTUP_BYTES_MAX = 10_000
# A client must finish startup and authentication within this long (PostgreSQL's authentication_timeout).
PG_STARTUP_TIMEOUT_S = 60.0
# DSQL closes every connection after one hour; clients reconnect (57P01, see docs/POSTGRES.md).
PG_CONNECTION_LIFETIME_S = 3_600.0
# Open PostgreSQL connections per compute node (DSQL's default maximum per cluster): 53300 beyond.
PG_CONNECTIONS_MAX = 10_000
# New connections per second per compute node and the burst allowed (DSQL's defaults): 53400 beyond.
PG_CONNECTIONS_PER_S = 100.0
PG_CONNECTIONS_BURST = 1_000
# Prepared statements and open portals one connection may hold (bounds a connection's memory).
PG_PREPARED_STATEMENTS_MAX = 10_000
PG_PORTALS_MAX = 1_000
# Descriptions a connection keeps for statements it parses again by the same text (drivers
# re-Parse the unnamed statement at every execution; describing it again would read the catalog).
PG_DESCRIPTIONS_MAX = 256
# Parameters in one Bind (the protocol's own int16 count).
PG_PARAMETERS_MAX = 65_535
# DataRow messages written before waiting for the socket to drain (bounds the write buffer).
PG_ROWS_PER_DRAIN = 1_000
# Socket bytes read at once.
PG_READ_CHUNK_BYTES = 256 * 1024
# How long a CancelRequest connection may take to send its 16 bytes.
PG_CANCEL_READ_TIMEOUT_S = 5.0
# SCRAM-SHA-256 iteration count: RFC 7677's minimum, which clients (scramp, used by pg8000) enforce.
PG_SCRAM_ITERATIONS = 4096
# SCRAM keys cached per (user, token expiry): the server derives them for every candidate expiry
# (about 60) on a user's first connection; ~100 bytes each, so this bounds the cache to ~10 MB.
PG_SCRAM_CACHE_ENTRIES = 100_000
# Authentications doing key stretching at once (each holds a thread for up to ~0.2 s).
PG_AUTH_CONCURRENCY = 2
# Auth tokens (`quorumdb token`): default and maximum lifetime (as DSQL's IAM tokens).
TOKEN_LIFETIME_DEFAULT_S = 15 * 60
TOKEN_LIFETIME_MAX_S = 7 * 24 * 3600

assert PG_STARTUP_BYTES_MAX < PG_MESSAGE_BYTES_MAX
assert TXN_BYTES_MAX < PG_MESSAGE_BYTES_MAX, "a statement inserting a full transaction fits in one Query"
assert PG_CONNECTIONS_BURST >= PG_CONNECTIONS_PER_S
assert TOKEN_LIFETIME_DEFAULT_S <= TOKEN_LIFETIME_MAX_S

# --- Failover, commit retries, hedged reads (adjudicator/, compute_node/) -------
# Deadline of a standby's Status probe of each journal replica before it takes over: short, since
# it sits on the failover path; a replica that does not answer in time counts as unreachable.
FAILOVER_PROBE_TIMEOUT_S = 0.25
# How often a standby compares its journal silence with the failover timeout.
FAILOVER_CHECK_MS = 20
# The initial leader's liveness horizon when failover is disabled (failover_timeout_ms = 0):
# a journal that heard a leader this recently means another adjudicator leads. Also how long a
# standby that has never seen a leader (cluster start) waits before taking over itself.
INITIAL_LEADER_SILENCE_MS = 3_000
# One Commit attempt from a compute node: below COMMIT_TIMEOUT_S so that a hung (SIGSTOPped)
# leader leaves time to resend to the next one. A resend is always safe (same txn_id).
COMMIT_ATTEMPT_TIMEOUT_S = 3.0
# --- compute -> adjudicator commit stream (compute_node/cluster/commit_stream.py) ---
# Requests per CommitBatch message and bytes per message (at least one request always goes).
COMMIT_STREAM_BATCH_MAX = 256
COMMIT_STREAM_BATCH_BYTES = 16 * 1024 * 1024
# Batches one stream may have unanswered at the adjudicator (it stops reading beyond that).
COMMIT_STREAM_BATCHES_INFLIGHT_MAX = 64
# Requests a compute node may have queued or unanswered on one stream; beyond, a send is refused.
COMMIT_STREAM_PENDING_MAX = 8_192
# A stream's gRPC deadline; the sender opens a new stream after half of it and half-closes the old.
COMMIT_STREAM_LIFETIME_S = 120.0
# A stream with nothing to send for this long is half-closed (reopened on the next commit).
COMMIT_STREAM_IDLE_S = 30.0
# Closed timestamps on demand (adjudicator/heartbeat.py): a leader heartbeats every heartbeat_ms
# only while some compute node said, within READ_DEMAND_LEASE_S, that it serves reads (compute
# nodes repeat it at most every READ_DEMAND_RESEND_S while they do); otherwise every
# IDLE_HEARTBEAT_MS, which keeps standbys and storage seeing a live leader (their silence
# limits are 500 ms and more). An idle cluster thus spends a tenth of the heartbeat CPU.
READ_DEMAND_LEASE_S = 0.25
READ_DEMAND_RESEND_S = 0.1
IDLE_HEARTBEAT_MS = 100
# The journal writer's Append stream to one replica: its gRPC deadline; reopened after half of it.
JOURNAL_APPEND_STREAM_LIFETIME_S = 120.0
# Appends the journal writer keeps in flight on the stream to a replica of another region
# (journal/writer_core.py "Pipelining"): a batch then goes out at once instead of waiting a WAN
# round trip for the previous message's reply. Within the region one at a time (lockstep).
JOURNAL_APPEND_PIPELINE_DEPTH = 8
# Environment switch: QUORUMDB_UNARY_RPC=1 makes compute nodes send one unary Commit per
# transaction and the journal writer one unary Append per message, as before the streams
# (kept so that the streams' effect can be measured; docs/BENCHMARKS.md).
UNARY_RPC_ENV = "QUORUMDB_UNARY_RPC"
# Commit sends (NOT_LEADER hops, refused connections, resends) for one commit: with 3
# adjudicators and COMMIT_ROUTE_BACKOFF_S between rounds, enough rounds to cover the whole
# COMMIT_TIMEOUT_S deadline.
COMMIT_SENDS_MAX = 400
# Hedged storage reads: a copy that has not answered within max(min, factor x the recent median
# latency), capped at max, gets company: the next copy is asked too; the first 3 answers win.
READ_HEDGE_DELAY_MIN_S = 0.05
READ_HEDGE_DELAY_MAX_S = 1.0
READ_HEDGE_MEDIAN_FACTOR = 4
# Recent read latencies kept for the median (per compute node).
READ_LATENCY_WINDOW = 64

assert FAILOVER_PROBE_TIMEOUT_S < STATUS_TIMEOUT_S
assert IDLE_HEARTBEAT_MS * 2 <= JOURNAL_LEASE_MS, "an idle leader's heartbeats keep its lease"
assert COMMIT_ATTEMPT_TIMEOUT_S < COMMIT_TIMEOUT_S
assert COMMIT_SENDS_MAX * COMMIT_ROUTE_BACKOFF_S / 3 >= COMMIT_TIMEOUT_S, "sends last the whole deadline"
assert READ_HEDGE_DELAY_MIN_S < READ_HEDGE_DELAY_MAX_S < STORAGE_READ_TIMEOUT_S
assert 2 <= READ_SINGLE_COPIES_MAX, "a single-copy read survives one failed copy without the quorum fallback"
assert READ_STREAM_BATCH_MAX >= 1 and READ_STREAM_PENDING_MAX >= READ_STREAM_BATCH_MAX
assert STORAGE_READ_TIMEOUT_S < READ_STREAM_LIFETIME_S / 2, "a read outlives no stream it is on"
assert READ_STREAM_REPLY_BYTES < GRPC_MESSAGE_BYTES_MAX

# --- SQL schema and statements (compute_node/sql) ---------------------------------
# Columns per table, as DSQL's quota (PostgreSQL allows 1,600); more is SQLSTATE 54011.
TABLE_COLUMNS_MAX = 255
# Secondary indexes (CREATE INDEX and UNIQUE constraints) per table, as DSQL's quota; more is 54000.
TABLE_INDEXES_MAX = 24
# Columns in one index, as DSQL's quota; more is 54011.
INDEX_COLUMNS_MAX = 8
# Characters in one SQL statement: bounds parse time and memory; more is 54000.
STATEMENT_BYTES_MAX = 1024 * 1024
# Table definitions a compute node's schema cache holds (compute_node/sql/schema_cache.py):
# beyond it the least recently stored go, and the next use reads the catalog again.
SCHEMA_CACHE_TABLES_MAX = 10_000
# The statement cache (compute_node/sql/statements.py): statement shapes per compute node (least
# recently used go), variants of one shape (texts whose unliftable literals differ), and idle tree
# copies per variant (one per concurrent run of that statement: a 64-client benchmark needs 64).
STATEMENT_CACHE_SHAPES_MAX = 1_000
STATEMENT_CACHE_VARIANTS_MAX = 4
STATEMENT_CACHE_INSTANCES_MAX = 128
# Values one transaction remembers from its point reads (its snapshot never changes, so a key
# read twice is asked once); beyond it reads still work, uncached.
TXN_READ_CACHE_KEYS_MAX = 10_000

# --- Scan pushdown (quorumdb/pushdown.py) --------------------------------------
# Live keys one filtered Scan call examines: bounds a copy's work per call (decode + predicate
# run on the storage event loop, ~2.3 us a row measured: ~9 ms) even when almost nothing
# matches; the reply then carries resume_key.
SCAN_PUSHDOWN_EXAMINE_MAX = 4_000
# Bytes of one pushdown spec (filter + projection): bounds the parse work a request can cause.
SCAN_PUSHDOWN_SPEC_BYTES_MAX = 64 * 1024
# Nesting depth of a pushed filter (AND/OR/NOT): bounds recursion on the storage node.
SCAN_PUSHDOWN_DEPTH_MAX = 32
assert SCAN_PUSHDOWN_EXAMINE_MAX >= SCAN_PAGE_MAX

# --- Node process -------------------------------------------------------------------
# After SIGTERM a node gets this long to stop gracefully, then exits anyway (logging what was
# still pending): nothing acknowledged depends on a graceful stop. Below the launcher's
# SIGKILL fallback (10 s) so a stuck shutdown never costs a tier the full wait.
NODE_SHUTDOWN_S = 3.0

assert COMMIT_STREAM_BATCH_BYTES + TXN_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX, "a batch message always fits"
assert COMMIT_ATTEMPT_TIMEOUT_S < COMMIT_STREAM_LIFETIME_S / 2, "a send outlives no stream it is on"
assert JOURNAL_RPC_TIMEOUT_S < JOURNAL_APPEND_STREAM_LIFETIME_S / 2, "an append outlives no stream it is on"
assert 1 <= JOURNAL_APPEND_PIPELINE_DEPTH <= WAN_STREAM_MESSAGES_MAX, "a full window fits the WAN's delay line"
assert READ_DEMAND_RESEND_S * 2 <= READ_DEMAND_LEASE_S, "a busy compute node renews its lease in time"

# --- Observability: metrics, the web console, `quorumdb top` (docs/OBSERVABILITY.md) -----
# Label combinations one histogram metric of a node may hold (methods x services is ~40); more
# share one overflow histogram, so a bug that makes label values cannot grow memory.
METRICS_HISTOGRAM_CHILDREN_MAX = 256
# A node's /metrics endpoint: connections served at once (Prometheus, the console, `top`: a few),
# the deadline to read a request and write the answer, and the largest request head it reads.
METRICS_HTTP_CONNECTIONS_MAX = 16
METRICS_HTTP_TIMEOUT_S = 5.0
METRICS_HTTP_REQUEST_BYTES_MAX = 16 * 1024
# One scrape of one node's /metrics by the console or `top` (a node that does not answer within
# this is shown without figures, not waited for).
METRICS_SCRAPE_TIMEOUT_S = 2.0
# The console polls the nodes this often while a page has asked for data within
# CONSOLE_WATCHED_S, and every CONSOLE_IDLE_POLL_S otherwise (events such as a leader change are
# still noticed; nobody watching costs the cluster almost nothing).
CONSOLE_POLL_S = 1.0
CONSOLE_WATCHED_S = 30.0
CONSOLE_IDLE_POLL_S = 10.0
# Points of history the console keeps per chart (5 minutes at one per second) and events it keeps.
CONSOLE_HISTORY_POINTS = 300
CONSOLE_EVENTS_MAX = 500
# HTTP requests the console serves at once (threads), the deadline of one request's socket, and
# the largest request body it reads (a chaos action is a few dozen bytes).
CONSOLE_HTTP_WORKERS = 8
CONSOLE_HTTP_TIMEOUT_S = 10.0
CONSOLE_REQUEST_BYTES_MAX = 4096
# `quorumdb up --prometheus`: how often Prometheus scrapes every node, and how long `up` gives the
# Prometheus server to exit after SIGTERM.
PROMETHEUS_SCRAPE_INTERVAL_S = 5
PROMETHEUS_STOP_TIMEOUT_S = 10.0
# The writer endpoint (tools/haproxy.py): HAProxy asks each compute node's /role this often
# (a demoted writer is out after HAPROXY_CHECK_FALL failed checks: about a second), with this
# deadline per check; a connection to a node must open within HAPROXY_CONNECT_TIMEOUT_S; an idle
# client session is closed after HAPROXY_SESSION_IDLE_S (the PostgreSQL endpoint's own lifetime,
# pg_connection_lifetime_s, is an hour too); at most HAPROXY_CONNECTIONS_MAX connections at once.
HAPROXY_CHECK_INTER_MS = 500
HAPROXY_CHECK_FALL = 2
HAPROXY_CHECK_TIMEOUT_S = 1.0
HAPROXY_CONNECT_TIMEOUT_S = 2.0
HAPROXY_SESSION_IDLE_S = 3600
HAPROXY_CONNECTIONS_MAX = 4096
# `haproxy -c` (check the configuration) and the start (until the writer port listens) each get
# this long; `stop` waits this long after SIGTERM before SIGKILL.
HAPROXY_CHECK_CONFIG_TIMEOUT_S = 10.0
HAPROXY_START_TIMEOUT_S = 10.0
HAPROXY_STOP_TIMEOUT_S = 10.0
# EXPLAIN ANALYZE (compute_node/cluster/trace.py): storage reads and copies one statement's trace records
# (a statement reading more shows the first ones and counts the rest).
TRACE_READS_MAX = 64
TRACE_COPIES_MAX = 256
# Batches whose timings an adjudicator keeps to answer an EXPLAIN ANALYZE COMMIT (the batch of a
# commit is looked up by its journal index when its reply is sent: a handful back at most).
COMMIT_TIMELINE_BATCHES = 256

assert METRICS_SCRAPE_TIMEOUT_S < CONSOLE_POLL_S * 3
assert CONSOLE_POLL_S < CONSOLE_IDLE_POLL_S < CONSOLE_WATCHED_S
# The most bytes the console or `top` reads from one node's /metrics (a node's are ~30 KB).
METRICS_SCRAPE_BYTES_MAX = 4 * 1024 * 1024

# COPY (quorumdb/copyformat.py, compute_node/sql/copy.py). A COPY FROM in autocommit mode that
# writes more than one transaction's quota is validated whole before its first batch commits, so
# every row it loads is held in memory first: these bound that buffer (rows, and bytes of input
# text). The byte bound also lets qsql's \copy send its whole input in one gRPC message. The
# row bound keeps one COPY well inside the statement timeout (100,000 rows took 6 s on a
# 15-process test cluster on two cores): a timeout after the first batch would leave part of the
# load committed, so a COPY should never come near it.
COPY_ROWS_MAX = 200_000
COPY_BYTES_MAX = 48 * 1024 * 1024
# Keys (rows, and entries of unique indexes) a table rewrite (ALTER TABLE ... ADD PRIMARY KEY)
# checks for duplicates in memory, at about 8 bytes each (compute_node/sql/bulk.py KeyDigests):
# 20 million keys hold 160 MB. A rewrite must also end within TXN_AGE_MAX_NS, and at the ~20,000
# rows/s measured (docs/BENCHMARKS.md) that is ~6 million rows, so this is not the bound users
# meet first; it stops a runaway rewrite from taking the node's memory (54000 past it).
REWRITE_KEYS_MAX = 20_000_000
# A COPY FROM inside a transaction block into a table the block truncated, rewrote or created
# streams instead (pgbench -i's BEGIN; TRUNCATE; COPY ...; COMMIT): its rows go onto the bulk path,
# invisible to everyone until COMMIT and all undone by an error, so nothing needs holding whole.
# It is validated and written a chunk at a time: these bound one chunk (records, and bytes of
# input text) -- big enough that the per-chunk work (a catalog look-up, a statement of its own)
# is noise next to the rows, small enough that a chunk and its built rows take a few MB.
COPY_STREAM_CHUNK_ROWS = 10_000
COPY_STREAM_CHUNK_BYTES = 4 * 1024 * 1024
# The longest record (line, or CSV record with quoted newlines) a COPY reader buffers while it
# waits for the rest: a row can never be larger than ROW_BYTES_MAX, so this only stops garbage.
COPY_LINE_BYTES_MAX = 4 * 1024 * 1024
# COPY TO sends whole records in CopyData messages of about this size, draining after each (a slow
# client holds back the server, not its memory; small enough for any client's buffer).
COPY_OUT_CHUNK_BYTES = 64 * 1024
# Keys asked of storage at once while a COPY checks its rows against existing keys.
COPY_PROBE_KEYS = GET_KEYS_MAX
assert COPY_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX, "qsql's \\copy input fits in one Copy request"
assert ROW_BYTES_MAX <= COPY_LINE_BYTES_MAX <= COPY_BYTES_MAX
assert COPY_ROWS_MAX <= RESULT_ROWS_MAX, "what one COPY loads, one COPY TO (a SELECT) can send back"
assert COPY_STREAM_CHUNK_ROWS <= COPY_ROWS_MAX and COPY_STREAM_CHUNK_BYTES <= COPY_BYTES_MAX

# --- Global Database (docs/REGIONS.md) ---
# A compute node of a region asks its adjudicator leader for the region's role and replicated
# point this often (compute_node/cluster/region_view.py), and each call has this deadline.
REGION_POLL_MS = 100
# ... and this often while the region accepts writes (the primary: only a switchover or failover
# changes its view; HAProxy checks /role every 500 ms anyway).
REGION_POLL_WRITER_MS = 500
REGION_POINT_TIMEOUT_S = 1.0
# A session that waits for its region to replicate a point (write forwarding) asks this often.
REGION_WAIT_POLL_MS = 10
# How long a forwarded write's session waits for its region to replicate it before answering
# with an error (the commit itself is durable on the primary by then).
FORWARD_VISIBLE_TIMEOUT_S = 30.0
# The replication agent of a secondary: entries per local append, how often it tells the
# primary how far it has replicated, its RPC deadlines, and its retry backoff.
REPLICATION_BATCH_ENTRIES_MAX = 1_000
REPLICATION_REPORT_MS = 100
REPLICATION_RPC_TIMEOUT_S = 5.0
REPLICATION_RETRY_MS = 200
# Every adjudicator re-reads the global control state (quorumdb/regions.py) this often.
GLOBAL_STATE_POLL_MS = 100
# The primary's journal keeps entries no secondary has replicated, but not beyond this many:
# a secondary further behind must be seeded again (`quorumdb global status` says so). A journal
# replica holds its entries in memory (journal/core.py): at a few hundred bytes each, this is
# on the order of 100 MB per replica while a secondary is down.
GLOBAL_RETAIN_ENTRIES_MAX = 500_000
# A replication agent that found the primary's journal truncated past its need retries this rarely.
REPLICATION_STALLED_RETRY_S = 10.0
# A switchover is refused while the target is further behind than this (entries).
SWITCHOVER_LAG_ENTRIES_MAX = 10_000
# How long the primary holds a commit while no secondary is within the RPO limit before it
# refuses it (nothing committed), and the smallest limit `quorumdb global set-rpo` accepts.
RPO_HOLD_S = 2.0
RPO_MIN_S = 1.0
# A leader whose region's role changed steps down and takes over in the other mode (copying the
# primary's log, or deciding commits): attempts before it leaves it to the failover watch.
REGION_RECONCILE_ATTEMPTS_MAX = 20
# `quorumdb global switchover`: how long it waits for the new primary to lead.
SWITCHOVER_TIMEOUT_S = 60.0
# A secondary that has not reported for this long is not replicating now (a switchover to it is
# refused; it reports every REPLICATION_REPORT_MS).
REPLICA_REPORT_STALE_S = 2.0
assert RPO_HOLD_S < COMMIT_ATTEMPT_TIMEOUT_S, "a held commit is refused before its sender gives up on the leader"
