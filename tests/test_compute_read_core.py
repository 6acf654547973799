"""read_core: which copies to ask, and merging their answers (pure, no network)."""
from __future__ import annotations

import random

import pytest

from compute_node.cluster import read_core
from compute_node.cluster.read_core import ScanPage, Version

COPIES = [
    ("storage-az1-a", "az1"), ("storage-az1-b", "az1"),
    ("storage-az2-a", "az2"), ("storage-az2-b", "az2"),
    ("storage-az3-a", "az3"), ("storage-az3-b", "az3"),
]


def v(key: bytes, value: bytes, ts: int, found: bool = True) -> Version:
    return Version(key, value, ts, found)


def test_order_puts_own_az_first_then_stable_order():
    order = read_core.order_copies(COPIES, "az2", {}, now_s=0.0)
    assert order == ["storage-az2-a", "storage-az2-b", "storage-az1-a", "storage-az1-b", "storage-az3-a", "storage-az3-b"]


def test_order_moves_recently_failed_copies_last_until_suspicion_expires():
    suspect = {"storage-az1-a": 10.0}
    assert read_core.order_copies(COPIES, "az1", suspect, now_s=5.0)[:2] == ["storage-az1-b", "storage-az2-a"]
    assert read_core.order_copies(COPIES, "az1", suspect, now_s=5.0)[-1] == "storage-az1-a"
    assert read_core.order_copies(COPIES, "az1", suspect, now_s=10.5)[0] == "storage-az1-a"


def test_point_merge_highest_version_wins_and_flags_disagreement():
    keys = [b"a", b"b", b"c"]
    answers = [
        [v(b"a", b"a1", 10), v(b"b", b"", 0, False), v(b"c", b"c5", 5)],
        [v(b"a", b"a2", 20), v(b"b", b"", 0, False), v(b"c", b"c5", 5)],
        [v(b"a", b"a1", 10), v(b"b", b"b7", 7), v(b"c", b"c5", 5)],
    ]
    merged = read_core.merge_point(keys, answers)
    assert merged.values == {b"a": b"a2", b"b": b"b7", b"c": b"c5"}
    assert merged.disagreements == [b"a", b"b"]


def test_point_merge_newer_tombstone_beats_older_value():
    keys = [b"k"]
    answers = [[v(b"k", b"old", 5)], [v(b"k", b"", 9, found=False)], [v(b"k", b"", 9, found=False)]]
    merged = read_core.merge_point(keys, answers)
    assert merged.values == {b"k": None}
    assert merged.disagreements == [b"k"]


def test_point_merge_agreement_has_no_disagreements():
    keys = [b"x"]
    merged = read_core.merge_point(keys, [[v(b"x", b"1", 3)]] * 3)
    assert merged.values == {b"x": b"1"}
    assert merged.disagreements == []


def page(name: str, keys: list[bytes], more: bool, ts: int = 1) -> ScanPage:
    return ScanPage(name, tuple(v(key, key.upper(), ts) for key in keys), more)


def test_scan_merge_all_complete_returns_everything():
    pages = [page(n, [b"a", b"b"], False) for n in ("x", "y", "z")]
    merged = read_core.merge_scan(pages, limit=10)
    assert merged.rows == [(b"a", b"A"), (b"b", b"B")]
    assert not merged.more
    assert merged.disagreements == []
    assert merged.resume_after is None


def test_scan_merge_bounded_by_smallest_last_key_of_copies_with_more():
    # Copy y missed key b (it has a hole) so its page of 3 reaches further.
    pages = [
        page("x", [b"a", b"b", b"c"], True),
        page("y", [b"a", b"c", b"d"], True),
        page("z", [b"a", b"b", b"c"], True),
    ]
    merged = read_core.merge_scan(pages, limit=3)
    assert [key for key, _ in merged.rows] == [b"a", b"b", b"c"]
    assert merged.more
    assert merged.resume_after == b"c"
    assert merged.disagreements == [b"b"]  # d is beyond the bound: not judged on this page


def test_scan_merge_bound_drops_rows_past_a_short_page():
    pages = [
        page("x", [b"a", b"b"], True),
        page("y", [b"a", b"b", b"c"], False),
        page("z", [b"a", b"b", b"c"], False),
    ]
    merged = read_core.merge_scan(pages, limit=2)
    assert [key for key, _ in merged.rows] == [b"a", b"b"]
    assert merged.more and merged.resume_after == b"b"


def test_scan_merge_newest_version_of_each_key_wins():
    pages = [
        ScanPage("x", (v(b"a", b"old", 1), v(b"b", b"B", 1)), False),
        ScanPage("y", (v(b"a", b"new", 2), v(b"b", b"B", 1)), False),
        ScanPage("z", (v(b"a", b"old", 1), v(b"b", b"B", 1)), False),
    ]
    merged = read_core.merge_scan(pages, limit=10)
    assert merged.rows == [(b"a", b"new"), (b"b", b"B")]
    assert merged.disagreements == [b"a"]


def test_scan_merge_caps_at_limit_when_copies_disagree():
    pages = [page("x", [b"a", b"c"], False), page("y", [b"b", b"d"], False), page("z", [b"a", b"d"], False)]
    merged = read_core.merge_scan(pages, limit=2)
    assert [key for key, _ in merged.rows] == [b"a", b"b"]
    assert merged.more and merged.resume_after == b"b"


def test_scan_merge_paging_reassembles_the_range_randomized():
    """Paging with merge_scan over 3 copies that each miss random keys yields every key exactly once."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for _ in range(200):
        universe = sorted({bytes([rng.randrange(256)]) for _ in range(rng.randrange(1, 40))})
        copies = [[key for key in universe if rng.random() > 0.1] for _ in range(3)]
        # Each key is on at least one copy (the merge cannot invent keys).
        expected = sorted(set().union(*map(set, copies)))
        limit = rng.randrange(1, 8)
        seen: list[bytes] = []
        start = b""
        for _ in range(1000):
            pages = []
            for i, keys in enumerate(copies):
                in_range = [key for key in keys if key >= start]
                pages.append(page(f"c{i}", in_range[:limit], len(in_range) > limit))
            merged = read_core.merge_scan(pages, limit)
            seen += [key for key, _ in merged.rows]
            if not merged.more:
                break
            start = merged.resume_after + b"\x00"
        assert seen == expected, f"seed {seed}: paging lost or repeated keys"


def test_check_answers_reject_malformed_pages():
    assert read_core.check_get_answer([b"a"], [v(b"b", b"", 0, False)]) is not None
    assert read_core.check_get_answer([b"a", b"b"], [v(b"a", b"", 0, False)]) is not None
    assert read_core.check_get_answer([b"a"], [v(b"a", b"1", 1)]) is None
    assert read_core.check_scan_page(page("x", [], True), b"", None, 5) is not None
    assert read_core.check_scan_page(page("x", [b"b", b"a"], False), b"", None, 5) is not None
    assert read_core.check_scan_page(page("x", [b"a", b"z"], False), b"a", b"m", 5) is not None
    assert read_core.check_scan_page(page("x", [b"a", b"b", b"c"], True), b"", None, 2) is not None
    assert read_core.check_scan_page(page("x", [b"a", b"b"], True), b"a", b"m", 2) is None


def test_hedge_delay_follows_the_median_within_bounds():
    window = read_core.LatencyWindow(size=5)
    assert read_core.hedge_delay_s(window.median_s(), 0.05, 1.0, 4) == 0.05  # nothing measured yet
    for latency_s in (0.001, 0.002, 0.003):
        window.record(latency_s)
    assert read_core.hedge_delay_s(window.median_s(), 0.05, 1.0, 4) == 0.05  # fast reads: the floor
    for latency_s in (0.1, 0.2, 0.3, 0.4, 0.5):  # the window keeps only the last 5
        window.record(latency_s)
    assert window.median_s() == 0.3
    assert read_core.hedge_delay_s(window.median_s(), 0.05, 1.0, 2) == pytest.approx(0.6)
    assert read_core.hedge_delay_s(window.median_s(), 0.05, 1.0, 4) == 1.0  # capped


def test_copies_to_launch_replaces_slow_and_failed_copies_only():
    assert read_core.copies_to_launch(answers=0, on_time_pending=0, unasked=6) == 3
    assert read_core.copies_to_launch(answers=0, on_time_pending=2, unasked=3) == 1  # one copy is slow
    assert read_core.copies_to_launch(answers=2, on_time_pending=1, unasked=3) == 0
    assert read_core.copies_to_launch(answers=1, on_time_pending=0, unasked=1) == 1  # none left beyond it
    assert read_core.copies_to_launch(answers=3, on_time_pending=0, unasked=3) == 0


# --- read modes: the single caught-up-copy read ----------------------------------------------


def test_answers_needed_per_read_mode():
    assert read_core.answers_needed("quorum") == read_core.READ_QUORUM == 3
    assert read_core.answers_needed("single") == 1
    with pytest.raises(ValueError, match="unknown read mode"):
        read_core.answers_needed("one")


def test_single_order_asks_own_az_first():
    order = read_core.order_copies(COPIES, "az3", {}, now_s=0.0, behind_until_s={})
    assert order[:2] == ["storage-az3-a", "storage-az3-b"]
    assert order == read_core.order_copies(COPIES, "az3", {}, now_s=0.0), "no copy behind: same order as quorum"


def test_single_order_skips_copies_known_behind_even_after_suspects():
    # az1-a refused as not caught up (behind, and suspect like every failure); az1-b merely failed.
    suspect = {"storage-az1-a": 10.0, "storage-az1-b": 10.0}
    behind = {"storage-az1-a": 3.0}
    order = read_core.order_copies(COPIES, "az1", suspect, now_s=2.0, behind_until_s=behind)
    assert order[0] == "storage-az2-a", "a healthy copy of another AZ before any suspect or behind copy"
    assert order[-2:] == ["storage-az1-b", "storage-az1-a"], "the behind copy is asked after the failed one"
    # Once "behind" expires the copy is only suspect again, in its AZ's place among suspects.
    order = read_core.order_copies(COPIES, "az1", suspect, now_s=3.5, behind_until_s=behind)
    assert order[-2:] == ["storage-az1-a", "storage-az1-b"]
    # The quorum order (no behind map) is unchanged by it.
    assert read_core.order_copies(COPIES, "az1", suspect, now_s=2.0)[-2:] == ["storage-az1-a", "storage-az1-b"]


def test_single_copy_launch_asks_one_then_hands_over_on_failure_or_slowness():
    # Start: exactly one copy.
    assert read_core.copies_to_launch(answers=0, on_time_pending=0, unasked=3, needed=1) == 1
    # It is on its way and not late: nothing more.
    assert read_core.copies_to_launch(answers=0, on_time_pending=1, unasked=2, needed=1) == 0
    # It failed (or said not caught up): the next copy.
    assert read_core.copies_to_launch(answers=0, on_time_pending=0, unasked=2, needed=1) == 1
    # It is slower than the hedge delay (pending, but no longer on time): a hedge, one more copy.
    assert read_core.copies_to_launch(answers=0, on_time_pending=0, unasked=2, needed=1) == 1
    # Answered: done, whatever is still pending.
    assert read_core.copies_to_launch(answers=1, on_time_pending=0, unasked=2, needed=1) == 0
    # Nothing left to ask within the single-copy budget: the caller falls back to a quorum read.
    assert read_core.copies_to_launch(answers=0, on_time_pending=0, unasked=0, needed=1) == 0
    # The quorum read's default is unchanged.
    assert read_core.copies_to_launch(answers=0, on_time_pending=0, unasked=6) == 3


def test_single_copy_read_simulated_asks_one_copy_unless_it_fails():
    """Drive order + launch as the shell does, with scripted copy outcomes: the number of
    copies asked is 1 when the first copy answers, and each failure adds exactly one."""
    rng = random.Random(7)
    for _ in range(500):
        own_az = rng.choice(["az1", "az2", "az3"])
        order = read_core.order_copies(COPIES, own_az, {}, now_s=0.0, behind_until_s={})[:3]
        failing = set(rng.sample(order, rng.randint(0, 3)))
        asked: list[str] = []
        answers = 0
        while True:
            launch = read_core.copies_to_launch(answers, 0, len(order) - len(asked), needed=1)
            if launch == 0:
                break
            name = order[len(asked)]
            asked.append(name)
            if name not in failing:
                answers += 1
        assert asked[0].startswith(f"storage-{own_az}-"), "the first copy asked is in the reader's AZ"
        if answers:
            assert asked[-1] not in failing and all(name in failing for name in asked[:-1])
            assert len(asked) == 1 + len([name for name in asked if name in failing])
        else:
            assert asked == order, "every copy of the budget was tried before the quorum fallback"
