"""The region nemesis's pure parts (tools/jepsen/regions.py)."""
from __future__ import annotations

import pytest

from tools.jepsen.regions import REGION_KINDS, region_schedule, resume_times

PEERS = ["a1", "a2"]


def test_schedule_is_a_function_of_the_seed_and_covers_every_kind_first():
    first = region_schedule(11, 60, list(REGION_KINDS), PEERS, "w1")
    assert first == region_schedule(11, 60, list(REGION_KINDS), PEERS, "w1")
    assert first != region_schedule(12, 60, list(REGION_KINDS), PEERS, "w1")
    assert sorted(f.kind for f in first[:len(REGION_KINDS)]) == sorted(REGION_KINDS)


def test_faults_never_overlap_and_target_the_right_regions():
    faults = region_schedule(5, 200, list(REGION_KINDS), PEERS, "w1")
    for before, after in zip(faults, faults[1:]):
        assert before.at_s + before.down_s < after.at_s
    for fault in faults:
        if fault.kind.startswith("witness"):
            assert fault.regions == ("w1",)
        elif fault.kind == "link-cut":
            assert fault.regions == tuple(PEERS)
        else:
            assert len(fault.regions) == 1 and fault.regions[0] in PEERS
    assert faults[-1].at_s + 1.0 < 200


def test_a_short_run_still_gets_every_kind_once():
    faults = region_schedule(3, 10, list(REGION_KINDS), PEERS, "w1")
    assert sorted(f.kind for f in faults) == sorted(REGION_KINDS)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown region faults"):
        region_schedule(1, 30, ["region-kill", "meteor"], PEERS, "w1")


def test_resume_counts_only_writes_in_a_peer_the_fault_did_not_take():
    faults = [{"kind": "region-kill", "regions": ["a1"], "start": 10.0},
              {"kind": "link-cut", "regions": ["a1", "a2"], "start": 30.0},
              {"kind": "region-partition", "regions": ["a2"], "start": 50.0}]
    writes = {"a1": [10.2, 31.0, 51.0], "a2": [9.0, 12.5, 30.4]}
    assert resume_times(faults, writes) == [2.5, 0.4, 1.0]
    assert resume_times([{"kind": "region-kill", "regions": ["a1"], "start": 60.0}], writes) == [None]


def test_the_nemesis_counts_gaps_from_the_previous_heal(tmp_path):
    """A slow heal (a region restart under load) must not squeeze the next faults out."""
    import threading
    import time

    from tools.jepsen.history import Recorder
    from tools.jepsen.regions import RegionFault, RegionNemesis

    calls: list[tuple[float, tuple[str, ...]]] = []
    recorder = Recorder(tmp_path / "history.jsonl")

    def chaos(*args: str) -> None:
        calls.append((recorder.now(), args))
        if args[0] == "region-restart":
            time.sleep(0.3)  # the heal takes longer than the schedule's gap

    faults = [RegionFault(0.0, "region-kill", 0.05, ("a1",)), RegionFault(0.1, "link-cut", 0.05, ("a1", "a2")),
              RegionFault(0.2, "witness-partition", 0.05, ("w1",))]
    nemesis = RegionNemesis(tmp_path, faults, recorder, threading.Event(), log=lambda line: None, chaos=chaos)
    nemesis.start()
    assert nemesis.join(10.0)
    assert [args for _, args in calls] == [("region-kill", "a1"), ("region-restart", "a1"),
                                           ("region-link-cut", "a1", "a2"), ("region-heal",),
                                           ("region-partition", "w1"), ("region-heal",)]
    assert [f["kind"] for f in nemesis.injected] == ["region-kill", "link-cut", "witness-partition"]
    restart_done = nemesis.injected[0]["end"]
    assert calls[2][0] >= restart_done + 0.05 - 0.01  # the 0.05 s gap after the heal, not before it
    recorder.close()
