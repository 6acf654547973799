"""The journal lease: closed-timestamp claims published without a confirmation round are safe.

A replica that grants a lease with its append acknowledgement refuses fences for the lease time
after the append arrived (journal/core.py); the writer publishes a claim at once only while 2
replicas' grants, counted from its own send times, are unexpired (journal/writer_core.py). The
property the closed timestamps need: a claim published at (true) time t was made before any rival
writer fenced a majority. The model test drives 3 replica cores, an old and a new writer core and
skewed clocks (each within the error bound) through random schedules and checks exactly that.
"""
from __future__ import annotations

import random

import pytest

from journal.core import AppendStatus, ReplicaCore
from journal.writer_core import ReplicaTail, WriterCore
from quorumdb.pb import common_pb2

STORAGE = [f"storage-{i}" for i in range(6)]
REPLICAS = ["j1", "j2", "j3"]
LEASE = 250
ERROR = 10


def test_a_replica_refuses_fences_during_a_grant_then_accepts():
    core = ReplicaCore(STORAGE, lease_ns=LEASE)
    core.fence(1, "old", (0, 0))
    granted = core.append(1, "old", 0, 0, [], 0, 0, 0, now=(1_000, 1_010))
    assert granted.status is AppendStatus.OK and granted.lease_granted
    refused = core.fence(2, "new", (1_100, 1_110))
    assert not refused.ok and core.promised_epoch == 1
    assert refused.retry_after_ns == 1_010 + LEASE - 1_100 + 1
    # After a refusal the current writer's appends are still taken, but extend nothing.
    later = core.append(1, "old", 0, 0, [], 0, 0, 0, now=(1_200, 1_210))
    assert later.status is AppendStatus.OK and not later.lease_granted
    assert core.fence(2, "new", (1_010 + LEASE - 1, 1_300)).ok is False
    won = core.fence(2, "new", (1_010 + LEASE, 1_300))
    assert won.ok and won.retry_after_ns == 0 and core.promised_epoch == 2


def test_a_restarted_replica_honours_grants_it_forgot():
    core = ReplicaCore(STORAGE, lease_ns=LEASE)
    core.started(5_000)
    assert not core.fence(1, "a", (5_100, 5_120)).ok
    assert core.fence(1, "a", (5_000 + LEASE, 5_300)).ok


def test_without_a_clock_there_is_no_lease():
    core = ReplicaCore(STORAGE, lease_ns=LEASE)
    core.fence(1, "a")
    assert not core.append(1, "a", 0, 0, [], 0, 0, 0).lease_granted
    assert core.fence(2, "b").ok


def writer(epoch: int, last_index: int = 0) -> WriterCore:
    return WriterCore(REPLICAS, f"w{epoch}", epoch, ReplicaTail("j1", last_index, epoch - 1, last_index, 1),
                      last_index, lease_ns=LEASE)


def test_the_writer_publishes_at_once_inside_its_lease_and_confirms_outside():
    core = writer(1)
    core.assign([common_pb2.Entry(kind=common_pb2.ENTRY_LEADER, ts=10)])
    assert core.lease_until() == 0
    for name, sent in (("j1", 100), ("j2", 120), ("j3", 90)):
        core.on_ok(name, core.plan(name), 1, core.commit_index, core.closed(), sent_earliest=sent, lease_granted=True)
    assert core.lease_until() == 100 + LEASE  # the second latest grant
    number = core.request_heartbeat(closed_ts=500, now_latest=100 + LEASE - 1)
    assert number == 0 and core.closed() == (500, 1), "published without a confirmation round"
    number = core.request_heartbeat(closed_ts=900, now_latest=100 + LEASE)
    assert number > 0 and core.closed() == (500, 1), "outside the lease it waits for confirmation"
    assert not core.heartbeat_confirmed(number)


def test_no_grant_no_lease():
    core = writer(1)
    core.assign([common_pb2.Entry(kind=common_pb2.ENTRY_LEADER, ts=10)])
    for name in REPLICAS:
        core.on_ok(name, core.plan(name), 1, 0, core.closed(), sent_earliest=100, lease_granted=False)
    assert core.lease_until() == 0
    assert core.request_heartbeat(closed_ts=500, now_latest=101) > 0


class ForgetfulReplica(ReplicaCore):
    """A broken replica: it grants leases but does not keep them (fences as if none was out)."""

    def fence(self, epoch, candidate, now=None):
        return super().fence(epoch, candidate, None)


def run_model(seed: int, replica_type=ReplicaCore) -> tuple[list[int], int | None]:
    """One random schedule: an old writer appending (acks delayed) and making claims, a new
    writer fencing replicas, time passing, each node's clock off by up to ERROR. Returns the true
    times of the claims the old writer published at once, and when the new one held a majority."""
    rng = random.Random(seed)
    offsets = {name: rng.randint(-ERROR, ERROR) for name in REPLICAS + ["old", "new"]}

    def now(node: str, true_time: int) -> tuple[int, int]:
        reading = true_time + offsets[node]
        return reading - ERROR, reading + ERROR

    replicas = {name: replica_type(STORAGE, lease_ns=LEASE) for name in REPLICAS}
    for name, replica in replicas.items():
        replica.fence(1, "old", now(name, 0))
    old = writer(1)
    old.assign([common_pb2.Entry(kind=common_pb2.ENTRY_LEADER, ts=1)])
    t = 0
    fenced_majority_at: int | None = None
    fenced: set[str] = set()
    published: list[int] = []
    in_flight: list[tuple[int, str, int]] = []  # (arrival true time, replica, send earliest)
    rival_from = rng.randint(50, 300)  # the step the new writer starts to fence at
    for step in range(400):
        t += rng.randint(1, 40)
        for arrival, name, sent in sorted(in_flight):
            if arrival <= t:
                in_flight.remove((arrival, name, sent))
                result = replicas[name].append(1, "old", 0, 0, [], 0, 0, 0, now=now(name, arrival))
                if result.status is AppendStatus.OK:
                    old.on_ok(name, old.plan(name), 1, old.commit_index, old.closed(), sent_earliest=sent,
                              lease_granted=result.lease_granted)
        action = rng.random()
        if step < rival_from:
            action *= 0.7  # no fencing yet
        if action < 0.4:  # the old writer sends an append, delayed up to 60
            in_flight.append((t + rng.randint(0, 60), rng.choice(REPLICAS), now("old", t)[0]))
        elif action < 0.7:  # the old writer makes a claim of its clock's latest
            reading = now("old", t)[1]
            if old.request_heartbeat(closed_ts=reading, now_latest=reading) == 0:
                published.append(t)
        else:  # the new writer tries to fence a replica
            name = rng.choice(REPLICAS)
            if name not in fenced and replicas[name].fence(2, "new", now(name, t)).ok:
                fenced.add(name)
                if len(fenced) == 2 and fenced_majority_at is None:
                    fenced_majority_at = t
    return published, fenced_majority_at


def test_model_a_claim_published_under_a_lease_precedes_every_rival_majority():
    """Over many schedules: every claim the old writer published without a confirmation round
    was made before the new writer had fenced a majority (the closed timestamps' safety)."""
    both = 0
    for seed in range(300):
        published, fenced_at = run_model(seed)
        if fenced_at is None:
            continue
        late = [claim for claim in published if claim >= fenced_at]
        assert not late, f"seed {seed}: claims published at {late}, a rival held a majority from {fenced_at}"
        both += bool(published)
    assert both >= 100, f"only {both} schedules had both published claims and a rival majority"


def test_model_finds_the_violation_when_replicas_do_not_keep_the_lease():
    """The check above can fail: replicas that grant leases they do not keep let a rival fence a
    majority while the old writer still publishes claims at once."""
    violations = 0
    for seed in range(300):
        published, fenced_at = run_model(seed, ForgetfulReplica)
        if fenced_at is not None and any(claim >= fenced_at for claim in published):
            violations += 1
    assert violations >= 10, violations
