"""A new journal writer resumes each lagging replica after its own last entry (pure WriterCore).

Story: the old leader dies with journal-2 a few entries behind (the slowest of 3). The new
writer must not probe journal-2 at the best replica's tail: at or below the storage-durable
index a replica that lacks the previous entry restarts its log there, a false truncation
that costs its followers (standby adjudicators) their history. It resends the missing
entries (read from the best replica) right after journal-2's own last entry.
"""
from __future__ import annotations

from journal.writer_core import ReplicaTail, WriterCore, best_tail

REPLICAS = ["j1", "j2", "j3"]


def test_lagging_replica_resumes_after_its_own_tail():
    tails = [ReplicaTail("j1", 400, 1, 398, 1), ReplicaTail("j2", 395, 1, 395, 1), ReplicaTail("j3", 400, 1, 398, 1)]
    best = best_tail(tails)
    core = WriterCore(REPLICAS, "adj", 2, best, 398, tails=tails)
    plan = core.plan("j2")
    assert plan.prev_index == 395 and plan.from_index == 396
    assert plan.entries is None, "entries 396..400 predate this writer: they are read from a replica"
    assert core.source_for("j2", plan.to_index) == best.name
    other = "j3" if best.name == "j1" else "j1"
    assert core.plan(other).prev_index == 400  # an up-to-date replica is probed at the tail


def test_without_tails_every_replica_is_probed_at_the_best_tail():
    best = ReplicaTail("j1", 400, 1, 398, 1)
    core = WriterCore(REPLICAS, "adj", 2, best, 398)
    assert {name: core.plan(name).prev_index for name in REPLICAS} == {"j1": 400, "j2": 400, "j3": 400}
