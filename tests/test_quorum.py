"""The quorum rule of one region and of an active-active cluster (quorumdb/quorum.py)."""
from __future__ import annotations

import itertools
import random

from quorumdb.quorum import Quorum

REGIONS = {"us-east-1": ["e1a", "e1b", "e1c"], "us-east-2": ["e2a", "e2b", "e2c"],
           "us-west-2": ["w1", "w2", "w3"]}


def all_subsets(names):
    for size in range(len(names) + 1):
        yield from (frozenset(c) for c in itertools.combinations(names, size))


def test_single_region_is_two_of_three():
    quorum = Quorum.single(["a", "b", "c"])
    assert quorum.match({"a": 5, "b": 3, "c": 9}) == 5
    assert quorum.is_quorum(["a", "c"]) and not quorum.is_quorum(["b"])
    assert quorum.describe() == "2 of 3 journal replicas"


def test_regions_need_two_regions_each_by_its_majority():
    quorum = Quorum.of_regions(REGIONS)
    assert quorum.is_quorum(["e1a", "e1b", "w1", "w3"])
    assert not quorum.is_quorum(["e1a", "e1b", "e1c", "w1"])  # one whole region and a minority of another
    assert not quorum.is_quorum(["e1a", "e2a", "w1", "e1b"][:3])
    # Each region's value is its 2nd highest; the answer is the 2nd highest of those.
    values = {"e1a": 10, "e1b": 9, "e1c": 1, "e2a": 50, "e2b": 2, "e2c": 2, "w1": 7, "w2": 8, "w3": 0}
    assert quorum.region_match(values) == {"us-east-1": 9, "us-east-2": 2, "us-west-2": 7}
    assert quorum.match(values) == 7


def test_any_two_quorums_intersect():
    """The property every protocol on the quorum rests on, over all 512 subsets of 9 replicas."""
    quorum = Quorum.of_regions(REGIONS)
    quorums = [s for s in all_subsets(quorum.replicas) if quorum.is_quorum(s)]
    assert quorums
    minimal = [q for q in quorums if not any(other < q for other in quorums)]
    assert len(minimal) == 3 * 3 * 3  # 3 pairs of regions x 3 majorities in each
    for a, b in itertools.combinations(minimal, 2):
        assert a & b, (a, b)


def test_match_is_the_highest_value_a_quorum_reached():
    """Checked against the definition by brute force on random values."""
    quorum = Quorum.of_regions(REGIONS)
    rng = random.Random(7)
    subsets = [s for s in all_subsets(quorum.replicas) if quorum.is_quorum(s)]
    for _ in range(200):
        values = {name: rng.randrange(20) for name in quorum.replicas}
        expected = max(min(values[name] for name in s) for s in subsets)
        assert quorum.match(values) == expected


def test_can_reach_after_losing_a_region_but_not_two():
    quorum = Quorum.of_regions(REGIONS)
    assert quorum.can_reach(REGIONS["us-east-1"])
    assert quorum.can_reach(REGIONS["us-west-2"] + ["e1a"])
    assert not quorum.can_reach(REGIONS["us-west-2"] + ["e1a", "e1b"])
