"""Journal truncation and storage health, on the pure replica core: truncation pauses while fewer
than 4 storage copies are complete and resumes after repair; a wiped copy stops counting."""
from __future__ import annotations

from journal.core import ReplicaCore
from quorumdb.pb import common_pb2

STORAGE = [f"storage-az{az}-{s}" for az in (1, 2, 3) for s in "ab"]
SEGMENT = 10


def committed_core(last_index: int) -> ReplicaCore:
    core = ReplicaCore(STORAGE, segment_entries=SEGMENT)
    entries = [common_pb2.Entry(index=i, epoch=1, ts=i) for i in range(1, last_index + 1)]
    core.append(1, "adjudicator-az1", 0, 0, entries, last_index, 0, 0)
    return core


def report(core: ReplicaCore, scls: dict[str, int]) -> int:
    for node, scl in scls.items():
        core.report_scl(node, scl)
    return core.first_index


def test_truncation_pauses_with_three_copies_down_and_resumes_after_repair():
    core = committed_core(100)
    assert report(core, dict.fromkeys(STORAGE, 25)) == 21
    # Three copies stop at 25 (down: their last report stands); the others go on to 100.
    up, down = STORAGE[:3], STORAGE[3:]
    for _ in range(5):
        first_index = report(core, dict.fromkeys(up, 100))
        assert first_index == 21, "the 4th highest SCL is a down copy's 25: nothing more may go"
    # One of them is repaired: 4 copies hold 100 again.
    assert report(core, {down[0]: 100}) == 101
    assert core.durable_index == 100


def test_a_wiped_copy_reporting_a_lower_scl_stops_counting():
    core = committed_core(100)
    report(core, {STORAGE[0]: 90, STORAGE[1]: 90, STORAGE[2]: 90, STORAGE[3]: 60})
    assert core.durable_index == 60 and core.first_index == 61
    # STORAGE[0] was wiped and comes back empty: 90, 90, 60, 0 -> durable index stays where it was
    # (it never goes back) but cannot grow on the strength of what STORAGE[0] lost.
    report(core, {STORAGE[0]: 0, STORAGE[3]: 95})
    assert core.scl_by_node[STORAGE[0]] == 0
    assert core.durable_index == 60 and core.first_index == 61
    report(core, {STORAGE[0]: 95})  # rebuilt
    assert core.durable_index == 90 and core.first_index == 91


def test_healing_settings_round_trip_through_the_cluster_file(tmp_path):
    from quorumdb import config as config_mod

    written = config_mod.default_cluster(tmp_path, journal_segment_entries=77, storage_checkpoint_entries=99)
    loaded = config_mod.load(written.write())
    assert (loaded.journal_segment_entries, loaded.storage_checkpoint_entries) == (77, 99)
    defaults = config_mod.load(config_mod.default_cluster(tmp_path / "d").write())
    assert (defaults.journal_segment_entries, defaults.storage_checkpoint_entries) == (10_000, 20_000)
