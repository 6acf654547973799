"""When the adjudicator leader heartbeats: closed timestamps on demand (pure; no clock reads).

A heartbeat carries a closed timestamp to the journal, and through it to every storage copy;
a read at `ts` waits until its copy knows `ts` is closed. So a compute node says, on its commit
stream, at which ts its transactions read (`read_demand_ts`, taken when each one starts), and
the leader makes a claim of its now().latest at once unless a claim it made (a heartbeat, or
the commit_ts of a batch on its way to the journal) already covers that ts (`claim_needed`).
While commits flow, no heartbeat is needed for that: a demand that arrives while a batch is
queued or on its way to the journal is covered by the next batch, decided after the demand
(its commit_ts is the leader's latest then); only a demand still uncovered when the queue runs
empty gets a claim of its own. The read then waits one journal round trip plus the forwarding
to storage, not a heartbeat period, and the claim needs no wait for the clock: it is of the leader's latest, which is at
or after the compute node's latest when the transaction started (one clock here; with
different clocks the demand arrives later than it was taken, which covers the skew in all
but the worst case, and the periodic heartbeat below covers that case).

Periodic heartbeats go on beside the demands: standbys and storage must see a live leader,
well within their silence limits (failover_timeout_ms, 500 ms by default), and they cover
reads whose demand was lost. Heartbeats are also the largest fixed CPU cost of a cluster (each
one is an Append to 3 replicas, its confirmation, and a message to every journal subscriber;
docs/BENCHMARKS.md has the profile). So the leader heartbeats periodically:

  * every `heartbeat_s` while reads are active: a compute node that starts transactions says so
    on its commit stream (`CommitBatch.reads_active`), which holds for READ_DEMAND_LEASE_S;
  * every `idle_s` otherwise;
  * never sooner than `heartbeat_s` after a batch append, which moves the closed timestamp by
    itself (the writer carries the committed entry's ts).

A demand that arrives after a long quiet spell makes a heartbeat due at once (the last one is
older than `heartbeat_s`), so the first read after idling waits about as long as any other.
"""
from __future__ import annotations


def claim_needed(read_ts: int, claimed_ts: int) -> bool:
    """A demand to close read_ts that no claim made so far covers."""
    return read_ts > claimed_ts


def idle_interval_s(heartbeat_ms: int, failover_timeout_ms: int, idle_heartbeat_ms: int) -> float:
    """The heartbeat interval without read demand: IDLE_HEARTBEAT_MS, but at most a fifth of the
    failover timeout (standbys must keep seeing a live leader) and never below heartbeat_ms."""
    idle_ms = idle_heartbeat_ms
    if failover_timeout_ms > 0:
        idle_ms = min(idle_ms, failover_timeout_ms // 5)
    return max(idle_ms, heartbeat_ms) / 1000


def next_heartbeat_at(last_heartbeat: float, last_append: float, demand_until: float, now: float,
                      heartbeat_s: float, idle_s: float) -> float:
    """The monotonic time the next heartbeat is due (<= now: due now)."""
    interval_s = heartbeat_s if now < demand_until else idle_s
    return max(last_heartbeat + interval_s, last_append + heartbeat_s)
