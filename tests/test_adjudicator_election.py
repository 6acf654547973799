"""When a standby may take over (adjudicator/election.py), purely."""
from __future__ import annotations

import random

from adjudicator.election import ReplicaView, Verdict, assess, failover_jitter_ms

MS = 1_000_000
NOW = 1_000_000 * MS
TIMEOUT = 500 * MS


def view(name: str, epoch: int = 3, closed_ago_ms: float | None = 10, leader: str = "adjudicator-az1") -> ReplicaView:
    closed_ts = 0 if closed_ago_ms is None else NOW - int(closed_ago_ms * MS)
    return ReplicaView(name, epoch, leader, closed_ts, 100)


def run(views, epoch_seen=3, deferred=0):
    return assess(views, 3, NOW, TIMEOUT, epoch_seen, deferred)


def test_a_fresh_closed_timestamp_on_any_replica_means_the_leader_lives():
    result = run([view("j1", closed_ago_ms=2_000), view("j2", closed_ago_ms=30)])
    assert result.verdict is Verdict.LEADER_ALIVE and result.leader == "adjudicator-az1"
    assert "j2" in result.reason


def test_silent_journal_means_take_over_above_every_promise():
    result = run([view("j1", epoch=3, closed_ago_ms=900), view("j2", epoch=3, closed_ago_ms=700), view("j3", epoch=2, closed_ago_ms=None)])
    assert result.verdict is Verdict.TAKE_OVER and result.fence_epoch == 4
    assert "700 ms" in result.reason


def test_fresh_cluster_has_no_closed_time_and_is_taken_over():
    result = run([view("j1", epoch=0, closed_ago_ms=None, leader=""), view("j2", epoch=0, closed_ago_ms=None, leader="")],
                 epoch_seen=0)
    assert result.verdict is Verdict.TAKE_OVER and result.fence_epoch == 1


def test_without_a_majority_nobody_fences_and_the_reason_names_the_journal():
    result = run([view("j1", closed_ago_ms=900)])
    assert result.verdict is Verdict.NO_MAJORITY
    assert "journal unavailable: no majority of journal replicas (2 of 3 needed" in result.reason


def test_a_rival_fencing_now_is_given_one_timeout_then_overtaken():
    views = [view("j1", epoch=5, closed_ago_ms=900), view("j2", epoch=3, closed_ago_ms=900)]
    first = run(views, epoch_seen=3)
    assert first.verdict is Verdict.RIVAL_TAKING_OVER and first.rival_epoch == 5
    second = run(views, epoch_seen=3, deferred=first.rival_epoch)  # the rival never led
    assert second.verdict is Verdict.TAKE_OVER and second.fence_epoch == 6
    led = run(views, epoch_seen=5)  # the rival did lead (and then died): no deferral
    assert led.verdict is Verdict.TAKE_OVER


def test_jitter_is_bounded_by_half_the_timeout():
    rng = random.Random(7)
    draws = [failover_jitter_ms(500, rng.random()) for _ in range(1_000)]
    assert 0 <= min(draws) and max(draws) <= 250 and max(draws) - min(draws) > 200


# --- active-active: the quorum is 2 of 3 regions, each by a majority of its replicas --------------
def regional_quorum():
    from quorumdb.quorum import Quorum
    return Quorum.of_regions({region: [f"{region}/journal-az{i}" for i in (1, 2, 3)]
                              for region in ("us-east-1", "us-east-2", "us-west-2")})


def test_across_regions_five_replicas_are_no_quorum_when_they_hold_one_region_majority():
    views = [view(f"us-east-1/journal-az{i}", closed_ago_ms=900) for i in (1, 2, 3)]
    views.append(view("us-west-2/journal-az1", closed_ago_ms=900))
    views.append(view("us-east-2/journal-az2", closed_ago_ms=900))
    result = assess(views, regional_quorum(), NOW, TIMEOUT, 3, 0)
    assert result.verdict is Verdict.NO_MAJORITY
    assert result.reason == (
        "journal unavailable: no majority of journal replicas (2 of 3 regions, each by a majority of its "
        "journal replicas needed; reachable: us-east-1 (3), us-east-2 (1), us-west-2 (1))")


def test_across_regions_two_region_majorities_may_take_over():
    views = [view(f"us-east-2/journal-az{i}", closed_ago_ms=900) for i in (1, 3)]
    views += [view(f"us-west-2/journal-az{i}", closed_ago_ms=900) for i in (2, 3)]
    result = assess(views, regional_quorum(), NOW, TIMEOUT, 3, 0)
    assert result.verdict is Verdict.TAKE_OVER and result.fence_epoch == 4


def test_a_single_region_quorum_keeps_its_message():
    from quorumdb.quorum import Quorum
    result = assess([view("j1")], Quorum.single(["j1", "j2", "j3"]), NOW, TIMEOUT, 3, 0)
    assert result.reason == "journal unavailable: no majority of journal replicas (2 of 3 needed, 1 reachable)"
