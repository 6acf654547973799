"""Retried commits, purely: the checker's txn_id table and the retry decision.

Story: an old leader decides a stream of transactions; only a prefix of its appends reaches
the journal before it dies (the rest was on a minority and is overwritten). Every sender
whose outcome is unknown resends the SAME request to a new leader, which has applied the
journal through its own leader entry. The check: every transaction is in the final journal
at most once; a resend is COMMITTED with the original commit_ts exactly when the original is
in the journal; a transaction not in the journal is decided afresh; nothing acknowledged is
lost. Also the table's garbage collection and the "history forgotten" case.
"""
from __future__ import annotations

import random

import pytest

from adjudicator.core import CommittedTxn, ConflictChecker, Outcome, TxnRecord, TxnRequest

AGE_NS = 1_000_000


def checker() -> ConflictChecker:
    return ConflictChecker(txn_age_max_ns=AGE_NS, gc_keys_per_call=1_000, start_ts_ahead_max_ns=AGE_NS)


def request(txn_id: str, start_ts: int, *keys: bytes, retry: bool = False) -> TxnRequest:
    return TxnRequest(start_ts=start_ts, write_keys=keys or (txn_id.encode(),), txn_id=txn_id, retry=retry)


def test_duplicate_of_an_own_decision_before_and_after_its_append():
    c = checker()
    c.apply_committed([CommittedTxn(10, (), index=1)])
    c.begin_term(1)
    [first] = c.decide_batch([request("a", 20)], now_latest=100)
    assert first.outcome is Outcome.COMMITTED
    [pending] = c.decide_batch([request("a", 20, retry=True)], now_latest=101)
    assert pending.outcome is Outcome.DUPLICATE and pending.index == 0 and pending.commit_ts == first.commit_ts
    c.record_appended("a", first.commit_ts, 2)
    [durable] = c.decide_batch([request("a", 20, retry=True)], now_latest=102)
    assert (durable.outcome, durable.commit_ts, durable.index) == (Outcome.DUPLICATE, first.commit_ts, 2)
    # The journal delivering the same entry later changes nothing.
    c.apply_committed([CommittedTxn(first.commit_ts, (b"a",), "a", 2)])
    assert c.lookup("a") == TxnRecord(first.commit_ts, 2)


def test_resend_inside_one_batch_is_a_duplicate_of_the_first():
    c = checker()
    decisions = c.decide_batch([request("x", 5), request("x", 5, retry=False)], now_latest=50)
    assert [d.outcome for d in decisions] == [Outcome.COMMITTED, Outcome.DUPLICATE]
    assert decisions[1].index == 0 and decisions[1].commit_ts == decisions[0].commit_ts


def test_standby_table_comes_from_the_journal():
    c = checker()
    c.apply_committed([CommittedTxn(30, (b"k",), "t1", 1), CommittedTxn(31, (), index=2)])
    c.begin_term(2)
    [d] = c.decide_batch([request("t1", 20, b"k", retry=True)], now_latest=40)
    assert (d.outcome, d.commit_ts, d.index) == (Outcome.DUPLICATE, 30, 1)


def test_resend_not_in_the_journal_is_decided_normally_conflict_included():
    c = checker()
    c.apply_committed([CommittedTxn(30, (b"k",), "other", 1), CommittedTxn(31, (), index=2)])
    c.begin_term(2)
    [conflict] = c.decide_batch([request("mine", 20, b"k", retry=True)], now_latest=40)
    assert conflict.outcome is Outcome.CONFLICT  # "mine" never committed: a true abort
    [ok] = c.decide_batch([request("mine2", 35, b"k", retry=True)], now_latest=41)
    assert ok.outcome is Outcome.COMMITTED


def test_resend_before_the_known_history_is_unknown():
    c = checker()
    c.apply_committed([CommittedTxn(500, (), index=7)])
    c.forget_before(400)  # the journal was truncated under this checker
    c.begin_term(7)
    [d] = c.decide_batch([request("old", 300, retry=True)], now_latest=600)
    assert d.outcome is Outcome.UNKNOWN and "cannot tell" in d.message
    [first_send] = c.decide_batch([request("old2", 300)], now_latest=600)
    assert first_send.outcome is Outcome.TOO_OLD


def test_a_retry_needs_a_caught_up_leader():
    c = checker()
    c.apply_committed([CommittedTxn(10, (), index=3)])
    with pytest.raises(AssertionError):
        c.begin_term(4)  # not yet applied through its own leader entry
    with pytest.raises(AssertionError):
        c.decide_batch([request("r", 5, retry=True)], now_latest=20)


def test_txn_table_is_collected_with_the_age_horizon():
    c = checker()
    c.apply_committed([CommittedTxn(100 + i, (b"k%d" % i,), f"t{i}", i + 1) for i in range(50)])
    assert len(c.txns) == 50
    c.collect_garbage(now_latest=100 + 25 + AGE_NS)
    assert len(c.txns) == 25 and c.lookup("t24") is None and c.lookup("t25") is not None
    assert c.known_since_ts == 125  # what was forgotten is covered by the UNKNOWN rule


@pytest.mark.parametrize("seed", range(30))
def test_failover_with_resends_commits_each_transaction_at_most_once(seed):
    rng = random.Random(seed)
    journal: list[CommittedTxn] = [CommittedTxn(1, (), index=1)]  # the old leader's entry
    old = checker()
    old.apply_committed(journal)
    old.begin_term(1)
    now = 1_000
    requests: dict[str, TxnRequest] = {}
    decided: list[tuple[str, int]] = []  # (txn_id, commit_ts) the old leader decided COMMITTED, in order
    keys = [b"k%d" % i for i in range(8)]
    for n in range(rng.randint(5, 40)):
        now += rng.randint(1, 5)
        txn = request(f"t{n}", now - rng.randint(0, 20), *rng.sample(keys, rng.randint(1, 2)))
        requests[txn.txn_id] = txn
        [d] = old.decide_batch([txn], now_latest=now)
        if d.outcome is Outcome.COMMITTED:
            decided.append((txn.txn_id, d.commit_ts))
    # A prefix of the old leader's appends reached a majority (acknowledged or not); the rest is gone.
    durable = rng.randint(0, len(decided))
    acknowledged = set(txn_id for txn_id, _ in decided[: rng.randint(0, durable)])
    for txn_id, commit_ts in decided[:durable]:
        journal.append(CommittedTxn(commit_ts, requests[txn_id].write_keys, txn_id, len(journal) + 1))
    now += 10
    journal.append(CommittedTxn(now, (), index=len(journal) + 1))  # the new leader's entry
    new = checker()
    new.apply_committed(journal)
    new.begin_term(len(journal))
    # Every sender not acknowledged resends (in random order, some twice).
    resends = [txn_id for txn_id in requests if txn_id not in acknowledged]
    resends += rng.sample(resends, len(resends) // 3)
    rng.shuffle(resends)
    first_commit = {txn_id: commit_ts for txn_id, commit_ts in decided[:durable]}
    for txn_id in resends:
        now += 1
        original = requests[txn_id]
        resend = TxnRequest(original.start_ts, original.write_keys, original.lock_keys, txn_id, retry=True)
        [d] = new.decide_batch([resend], now_latest=now)
        if d.outcome is Outcome.COMMITTED:
            assert txn_id not in first_commit, f"{txn_id} committed twice"
            journal.append(CommittedTxn(d.commit_ts, resend.write_keys, txn_id, len(journal) + 1))
            new.record_appended(txn_id, d.commit_ts, len(journal))
            first_commit[txn_id] = d.commit_ts
        elif d.outcome is Outcome.DUPLICATE:
            assert first_commit[txn_id] == d.commit_ts, f"{txn_id}: duplicate with a different commit_ts"
            assert d.index > 0
        else:
            assert d.outcome is Outcome.CONFLICT, d  # never UNKNOWN or TOO_OLD here: history is complete
            assert txn_id not in first_commit
    in_journal = [txn.txn_id for txn in journal if txn.txn_id]
    assert len(in_journal) == len(set(in_journal)), "a transaction is in the journal twice"
    assert acknowledged <= set(in_journal), "an acknowledged commit was lost"
