"""The conflict checker against a brute-force model, plus targeted cases.

The model keeps every commit ever made and answers each request by scanning all of them:
TOO_OLD if start_ts is behind the age horizon (or ahead of the clock by more than the
allowed error, or before a forgotten point); CONFLICT naming the first key (writes, then
locks) that some commit with commit_ts > start_ts wrote; else COMMITTED at
max(now, last_ts + 1, start_ts + 1). The checker must give exactly the same answers while
keeping only a bounded table.
"""
from __future__ import annotations

import copy
import dataclasses
import random

import pytest

from adjudicator.core import CommittedTxn, ConflictChecker, Decision, Outcome, TxnRequest

AGE_NS = 1_000
AHEAD_NS = 50


@dataclasses.dataclass
class Model:
    commits: list[tuple[int, frozenset[bytes]]] = dataclasses.field(default_factory=list)
    last_ts: int = 0
    known_since_ts: int = 0

    def decide_batch(self, requests, now):
        self.known_since_ts = max(self.known_since_ts, now - AGE_NS)
        out = []
        for r in requests:
            if r.start_ts < now - AGE_NS or r.start_ts < self.known_since_ts or r.start_ts > now + AHEAD_NS:
                out.append((Outcome.TOO_OLD, 0, b""))
                continue
            newer_keys = set()
            for commit_ts, keys in self.commits:
                if commit_ts > r.start_ts:
                    newer_keys |= keys
            conflict = next((k for k in (*r.write_keys, *r.lock_keys) if k in newer_keys), None)
            if conflict is not None:
                out.append((Outcome.CONFLICT, 0, conflict))
                continue
            commit_ts = max(now, self.last_ts + 1, r.start_ts + 1)
            self.last_ts = commit_ts
            self.commits.append((commit_ts, frozenset(r.write_keys)))
            out.append((Outcome.COMMITTED, commit_ts, b""))
        return out

    def close_timestamp(self, now):
        self.last_ts = max(self.last_ts, now)
        return self.last_ts


def summary(decision: Decision):
    return (decision.outcome, decision.commit_ts, decision.conflict_key)


def random_request(rng: random.Random, now: int, txn_no: int) -> TxnRequest:
    keys = [b"k%d" % i for i in range(12)]
    write_keys = tuple(rng.sample(keys, rng.randint(1, 3)))
    lock_keys = tuple(rng.sample(keys, rng.randint(0, 2)))
    roll = rng.random()
    if roll < 0.05:
        start_ts = now - rng.randint(AGE_NS + 1, 3 * AGE_NS)  # too old
    elif roll < 0.08:
        start_ts = now + rng.randint(AHEAD_NS + 1, 4 * AHEAD_NS)  # broken client clock
    else:
        start_ts = now - rng.randint(-AHEAD_NS, 400)
    return TxnRequest(start_ts=max(0, start_ts), write_keys=write_keys, lock_keys=lock_keys, txn_id=f"t{txn_no}")


def new_checker(gc_keys_per_call: int = 7) -> ConflictChecker:
    return ConflictChecker(txn_age_max_ns=AGE_NS, gc_keys_per_call=gc_keys_per_call, start_ts_ahead_max_ns=AHEAD_NS)


@pytest.mark.parametrize("seed", range(40))
def test_checker_matches_brute_force_model(seed):
    rng = random.Random(seed)
    checker, model = new_checker(), Model()
    now = 10_000
    txn_no = 0
    last_commit_ts = 0
    for batch_no in range(150):
        now += rng.choice([0, 1, 5, 20, 100, 300])
        if rng.random() < 0.1:
            closed_ts = checker.close_timestamp(now)
            assert closed_ts == model.close_timestamp(now), f"seed {seed} batch {batch_no}: closed_ts"
        requests = []
        for _ in range(rng.randint(1, 8)):
            txn_no += 1
            requests.append(random_request(rng, now, txn_no))
        got = [summary(d) for d in checker.decide_batch(requests, now)]
        want = model.decide_batch(requests, now)
        assert got == want, f"seed {seed} batch {batch_no}: checker {got} != model {want} for {requests}"
        for request, (outcome, commit_ts, _) in zip(requests, got):
            if outcome is Outcome.COMMITTED:
                assert commit_ts > request.start_ts
                assert commit_ts > last_commit_ts, "commit timestamps strictly increase"
                last_commit_ts = commit_ts
    # The table is bounded by the age horizon, not by history.
    assert checker.tracked_keys <= 12
    assert len(model.commits) > 100


@pytest.mark.parametrize("seed", range(20))
def test_standby_applying_committed_entries_answers_like_the_leader(seed):
    rng = random.Random(1000 + seed)
    leader, standby = new_checker(), new_checker(gc_keys_per_call=3)
    now = 50_000
    txn_no = 0
    for batch_no in range(120):
        now += rng.choice([0, 3, 40, 250])
        if rng.random() < 0.15:
            standby.observe_closed(leader.close_timestamp(now))
        requests = []
        for _ in range(rng.randint(1, 6)):
            txn_no += 1
            requests.append(random_request(rng, now, txn_no))
        decisions = leader.decide_batch(requests, now)
        entries = [
            CommittedTxn(d.commit_ts, r.write_keys, r.txn_id)
            for r, d in zip(requests, decisions)
            if d.outcome is Outcome.COMMITTED
        ]
        # The journal delivers in chunks, sometimes twice (resubscribe after a lost stream).
        cut = rng.randint(0, len(entries))
        standby.apply_committed(entries[:cut])
        standby.apply_committed(entries[cut:])
        if rng.random() < 0.2:
            standby.apply_committed(entries)
        if rng.random() < 0.3:
            standby.collect_garbage(now)
        if batch_no % 10 == 9:
            probe_now = now + rng.randint(0, 10)
            probes = [random_request(rng, probe_now, -i) for i in range(10)]
            from_leader = [summary(d) for d in copy.deepcopy(leader).decide_batch(probes, probe_now)]
            from_standby = [summary(d) for d in copy.deepcopy(standby).decide_batch(probes, probe_now)]
            assert from_standby == from_leader, f"seed {seed} batch {batch_no}: standby differs"


def test_first_committer_wins_inside_a_batch():
    checker = new_checker()
    now = 5_000
    a = TxnRequest(start_ts=4_990, write_keys=(b"x",), txn_id="a")
    b = TxnRequest(start_ts=4_990, write_keys=(b"y", b"x"), txn_id="b")
    c = TxnRequest(start_ts=4_990, write_keys=(b"y",), txn_id="c")
    da, db, dc = checker.decide_batch([a, b, c], now)
    assert da.outcome is Outcome.COMMITTED and da.commit_ts == now
    assert db.outcome is Outcome.CONFLICT and db.conflict_key == b"x"
    assert "OC000" in db.message and "'a'" not in db.message and "by a" in db.message
    # b lost, so it recorded nothing: c may write y.
    assert dc.outcome is Outcome.COMMITTED and dc.commit_ts == now + 1


def test_lock_keys_are_checked_but_not_recorded():
    checker = new_checker()
    checker.decide_batch([TxnRequest(start_ts=90, write_keys=(b"a",), txn_id="w")], 100)
    # Write skew prevented: T1 read-locked a (written after its start) -> conflict.
    (d1,) = checker.decide_batch([TxnRequest(start_ts=95, write_keys=(b"b",), lock_keys=(b"a",))], 101)
    assert d1.outcome is Outcome.CONFLICT and d1.conflict_key == b"a"
    # A lock alone records nothing: a later writer of the locked key from an old snapshot is fine.
    (d2,) = checker.decide_batch([TxnRequest(start_ts=101, write_keys=(b"c",), lock_keys=(b"d",))], 102)
    assert d2.outcome is Outcome.COMMITTED
    assert checker.last_commit_ts(b"d") is None
    (d3,) = checker.decide_batch([TxnRequest(start_ts=101, write_keys=(b"d",))], 103)
    assert d3.outcome is Outcome.COMMITTED


def test_a_private_keyspace_commit_is_remembered_by_txn_id_but_not_by_key():
    """A bulk batch flushed ahead (keys only its own transaction can write before its catalog
    change commits): decided as usual, its keys left out of the conflict table on the leader and
    on a standby applying the journal; its txn_id still answers a resend."""
    checker = new_checker()
    batch = TxnRequest(start_ts=90, write_keys=tuple(b"p%d" % i for i in range(1000)), txn_id="t:flush1",
                       private_keyspace=True)
    (decided,) = checker.decide_batch([batch], 100)
    assert decided.outcome is Outcome.COMMITTED and decided.commit_ts == 100
    assert checker.tracked_keys == 0
    (again,) = checker.decide_batch([dataclasses.replace(batch, retry=True)], 101)
    assert again.outcome is Outcome.DUPLICATE and again.commit_ts == 100
    (ordinary,) = checker.decide_batch([TxnRequest(start_ts=95, write_keys=(b"q",), txn_id="o")], 102)
    assert ordinary.outcome is Outcome.COMMITTED and checker.tracked_keys == 1
    standby = new_checker()
    standby.apply_committed([CommittedTxn(100, batch.write_keys, "t:flush1", 1, private_keyspace=True),
                             CommittedTxn(102, (b"q",), "o", 2)])
    assert standby.tracked_keys == 1 and standby.lookup("t:flush1") is not None
    assert standby.last_ts == 102


def test_commit_ts_is_above_start_ts_last_ts_and_closed_ts():
    checker = new_checker()
    (d1,) = checker.decide_batch([TxnRequest(start_ts=130, write_keys=(b"k",))], 100)
    assert d1.commit_ts == 131  # a start_ts slightly ahead of the clock (within the error)
    closed_ts = checker.close_timestamp(200)
    assert closed_ts == 200
    (d2,) = checker.decide_batch([TxnRequest(start_ts=150, write_keys=(b"j",))], 190)  # clock behind closed
    assert d2.commit_ts == 201


def test_too_old_by_age_and_by_forgotten_history():
    checker = new_checker()
    (d1,) = checker.decide_batch([TxnRequest(start_ts=100, write_keys=(b"k",))], 100 + AGE_NS + 1)
    assert d1.outcome is Outcome.TOO_OLD and "too old" in d1.message
    checker.forget_before(5_000)
    (d2,) = checker.decide_batch([TxnRequest(start_ts=4_999, write_keys=(b"k",))], 5_100)
    assert d2.outcome is Outcome.TOO_OLD
    (d3,) = checker.decide_batch([TxnRequest(start_ts=5_000, write_keys=(b"k",))], 5_100)
    assert d3.outcome is Outcome.COMMITTED
    # A clock far ahead of the adjudicator is refused rather than dragging commit_ts along.
    (d4,) = checker.decide_batch([TxnRequest(start_ts=5_100 + AHEAD_NS + 1, write_keys=(b"k",))], 5_100)
    assert d4.outcome is Outcome.TOO_OLD and "ahead" in d4.message


def test_clock_going_backwards_cannot_hide_a_forgotten_commit():
    checker = new_checker(gc_keys_per_call=1_000)
    checker.decide_batch([TxnRequest(start_ts=90, write_keys=(b"k",))], 100)
    checker.collect_garbage(100 + AGE_NS + 10)  # forgets k's commit at 100
    assert checker.last_commit_ts(b"k") is None
    # A new leader whose clock reads earlier: start_ts 95 < 100 would have conflicted.
    (d,) = checker.decide_batch([TxnRequest(start_ts=95, write_keys=(b"k",))], 100 + AGE_NS - 50)
    assert d.outcome is Outcome.TOO_OLD


def test_garbage_collection_is_bounded_per_call_and_keeps_newer_commits():
    checker = ConflictChecker(txn_age_max_ns=AGE_NS, gc_keys_per_call=100)
    keys = tuple(b"key%d" % i for i in range(1_000))
    checker.decide_batch([TxnRequest(start_ts=9, write_keys=keys)], 10)
    checker.decide_batch([TxnRequest(start_ts=19, write_keys=(b"key0",))], 20)
    later = 10 + AGE_NS + 5
    assert checker.collect_garbage(later) == 100
    assert checker.tracked_keys == 1_000 - 99  # key0 was rewritten at 20: kept
    popped = sum(checker.collect_garbage(later) for _ in range(20))
    assert popped == 900
    assert checker.tracked_keys == 1
    assert checker.last_commit_ts(b"key0") == 20


def test_apply_committed_is_idempotent_and_keeps_the_max():
    checker = new_checker()
    txns = [CommittedTxn(100, (b"a", b"b"), "t1"), CommittedTxn(110, (b"a",), "t2"), CommittedTxn(105, (), "")]
    checker.apply_committed(txns)
    checker.apply_committed(reversed(txns))
    assert checker.last_commit_ts(b"a") == 110
    assert checker.last_commit_ts(b"b") == 100
    assert checker.last_ts == 110
    (d,) = checker.decide_batch([TxnRequest(start_ts=105, write_keys=(b"b",))], 106)
    assert d.outcome is Outcome.COMMITTED and d.commit_ts == 111


def test_thousands_of_batches_per_second():
    # The checker is on the commit path of every transaction: it must stay cheap.
    import time

    rng = random.Random(7)
    checker = ConflictChecker()
    now = 10**12
    requests = [TxnRequest(now - 1_000, (b"k%d" % rng.randrange(100_000),)) for _ in range(100)]
    started = time.perf_counter()
    for i in range(200):
        now += 1_000_000
        checker.decide_batch([dataclasses.replace(r, start_ts=now - 1_000) for r in requests], now)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"20,000 decisions took {elapsed:.2f} s"
