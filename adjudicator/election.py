"""When a standby adjudicator may take over: the journal's view of the leader, judged purely.

Theory of operation
-------------------
A standby notices a silent leader through its own journal stream: no entry, commit index or
closed timestamp advance for `failover_timeout_ms` plus a random jitter (redrawn after every
attempt, so two standbys rarely fire together). Its own silence proves little: the standby
may itself have been starved of CPU, or its stream may hang on a replica cut off from the
leader. So before fencing it asks every journal replica for its Status and calls `assess`:

  NO_MAJORITY     the replicas that answered include no quorum (quorumdb/quorum.py: 2 of 3,
                  or in an active-active cluster 2 of 3 regions each by a majority of its
                  replicas): fencing cannot succeed; try again later (and tell clients the
                  journal is unavailable, saying what is missing).
  LEADER_ALIVE    some replica holds a closed timestamp younger than the timeout: the
                  leader's heartbeats reached a journal quorum recently (a closed_ts is
                  published only after a quorum acked an append sent after it, and it is
                  the leader's clock, capped at its now().earliest). The standby was the slow
                  one; it counts this as progress and keeps following.
  RIVAL_TAKING_OVER some replica promised an epoch above every epoch this standby has seen
                  lead, and not one it already deferred to: another candidate is fencing
                  right now. The standby waits one more timeout instead of fencing over it
                  (a duel would depose the winner). If that candidate dies mid-way, the
                  next assessment sees the same promised epoch and takes over.
  TAKE_OVER       otherwise: fence with an epoch above every promised one (`fence_epoch`).

The caller acts on the verdict only if its own stream showed no progress while the replicas
answered: a rival that fenced meanwhile has the same epoch as the one the standby just saw and
the dead leader's closed timestamps, which reads as TAKE_OVER (adjudicator/service.py).

The same assessment tells a restarting initial leader whether to lead at once (a fresh
cluster: no leader known anywhere, or a silent one) or to join as a standby (LEADER_ALIVE).

Pure: no I/O, no clock reads; `now_earliest` comes from the caller's clock. Comparing a
closed_ts (the leader's clock) with our clock is safe up to the clock error bound, which is
orders of magnitude below the timeout.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Sequence

from quorumdb.quorum import Quorum

JOURNAL_MAJORITY = 2  # of 3 replicas (a cluster of one region)


class Verdict(enum.Enum):
    NO_MAJORITY = "no_majority"
    LEADER_ALIVE = "leader_alive"
    RIVAL_TAKING_OVER = "rival_taking_over"
    TAKE_OVER = "take_over"


@dataclasses.dataclass(frozen=True)
class ReplicaView:
    """One journal replica's Status, as far as leadership goes."""

    name: str
    promised_epoch: int
    leader: str
    closed_ts: int
    commit_index: int


@dataclasses.dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reason: str
    fence_epoch: int = 0  # TAKE_OVER: the epoch to fence with (above every promise seen)
    rival_epoch: int = 0  # RIVAL_TAKING_OVER: the epoch being fenced by someone else
    leader: str = ""  # LEADER_ALIVE: who leads, as the replicas say


def assess(
    views: Sequence[ReplicaView],
    quorum: Quorum | int,
    now_earliest: int,
    timeout_ns: int,
    epoch_seen: int,
    deferred_epoch: int,
) -> Assessment:
    """Whether a standby should take over now (see the module docstring). `quorum`: the journal's
    quorum rule (an int n: any majority of n replicas, for callers that only count)."""
    assert timeout_ns > 0
    missing = no_quorum_reason(views, quorum)
    if missing:
        return Assessment(Verdict.NO_MAJORITY, missing)
    freshest = max(views, key=lambda view: view.closed_ts)
    age_ns = now_earliest - freshest.closed_ts
    if freshest.closed_ts > 0 and age_ns < timeout_ns:
        return Assessment(
            Verdict.LEADER_ALIVE,
            f"journal replica {freshest.name} heard leader {freshest.leader or '?'} "
            f"{max(age_ns, 0) / 1e6:.0f} ms ago",
            leader=freshest.leader,
        )
    promised = max(view.promised_epoch for view in views)
    if promised > epoch_seen and promised != deferred_epoch:
        return Assessment(
            Verdict.RIVAL_TAKING_OVER,
            f"epoch {promised} was promised to a candidate that does not lead yet",
            rival_epoch=promised,
        )
    if freshest.closed_ts == 0:
        why = "no leader has ever closed time in the journal"
    else:
        why = f"the journal heard no leader for {age_ns / 1e6:.0f} ms"
    return Assessment(Verdict.TAKE_OVER, why, fence_epoch=promised + 1)


def no_quorum_reason(views: Sequence[ReplicaView], quorum: Quorum | int) -> str:
    """"" when the answering replicas include a quorum, else what is missing."""
    if isinstance(quorum, int):
        assert quorum >= JOURNAL_MAJORITY
        needed = quorum // 2 + 1
        if len(views) >= needed:
            return ""
        return (f"journal unavailable: no majority of journal replicas ({needed} of {quorum} needed, "
                f"{len(views)} reachable)")
    names = [view.name for view in views if view.name in quorum.replicas]
    if quorum.is_quorum(names):
        return ""
    if not quorum.multi_region:
        return (f"journal unavailable: no majority of journal replicas ({needed_text(quorum)} needed, "
                f"{len(names)} reachable)")
    present = set(names)
    reachable = ", ".join(f"{region} ({sum(name in present for name in replicas)})"
                          for region, replicas in quorum.groups)
    return (f"journal unavailable: no majority of journal replicas ({needed_text(quorum)} needed; "
            f"reachable: {reachable})")


def needed_text(quorum: Quorum) -> str:
    """"2 of 3" (replicas), or "2 of 3 regions, each by a majority of its journal replicas"."""
    if not quorum.multi_region:
        replicas = quorum.groups[0][1]
        return f"{quorum.needed_in(replicas)} of {len(replicas)}"
    return quorum.describe()


def failover_jitter_ms(timeout_ms: int, uniform: float) -> float:
    """The extra wait of one failover attempt: up to half the timeout, from a [0, 1) draw."""
    assert 0.0 <= uniform <= 1.0
    return 0.5 * timeout_ms * uniform
