"""Storage self-healing in a real cluster: journal x3 + adjudicator x3 + storage x6 processes.

Small settings make it quick: journal segments of 50 entries (the truncation granularity),
a storage checkpoint every 200 entries. The tests share one cluster and run in file order:

1. checkpoints keep every storage node's local log short, and a SIGKILLed node restarts from
   its checkpoint, replaying only the log after it (sizes and timings printed);
2. a node that was down while the journal *and* every peer's log moved past it comes back
   through a peer's checkpoint, then peer logs and the journal;
3. a node whose data directory was wiped while it was stopped rebuilds from a peer
   checkpoint plus the journal, its SCL reaches the others', and no read it answers while it
   rebuilds is stale;
4. with 3 storage copies down the journal keeps committing but its first index stops moving;
   once they are back and caught up it moves again.
"""
from __future__ import annotations

import concurrent.futures
import re
import shutil
import time

import grpc
import pytest

from quorumdb import limits
from quorumdb.pb import storage_pb2
from tests.test_storage_cluster import DEADLINE_S, Harness, running_harness
from tests.util import make_config

pytestmark = pytest.mark.cluster

SEGMENT_ENTRIES = 50
CHECKPOINT_ENTRIES = 200


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("heal-cluster"), journal_segment_entries=SEGMENT_ENTRIES,
                         storage_checkpoint_entries=CHECKPOINT_ENTRIES)
    with running_harness(config) as harness:
        yield harness


def storage_names(harness: Harness) -> list[str]:
    return [n.name for n in harness.config.storages]


def detail(status) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=", 1) for part in status.detail.split())}


def commit_keys(harness: Harness, prefix: bytes, count: int):
    """Commit `count` single-key transactions concurrently (group commit); returns (keys, newest reply)."""
    keys = [b"%s/%06d" % (prefix, i) for i in range(count)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda key: harness.commit({key: key}), keys))
    return keys, max(replies, key=lambda r: r.commit_ts)


def journal_first_indexes(harness: Harness) -> list[int]:
    return [s.first_index for j in harness.config.journals if (s := harness.status(j.name))]


def sample(keys: list[bytes]) -> list[bytes]:
    half = limits.GET_KEYS_MAX // 2
    return keys if len(keys) <= 2 * half else keys[:half] + keys[-half:]


def assert_holds(harness: Harness, name: str, keys: list[bytes], ts: int) -> None:
    versions = harness.get(name, sample(keys), ts)
    wrong = [v.key for v in versions if not v.found or v.value != v.key]
    assert not wrong, f"{name} is missing or wrong on {len(wrong)} committed keys, e.g. {wrong[:3]}"


def wait_caught_up(harness: Harness, name: str, index: int):
    return harness.wait_for(f"{name} healthy with SCL >= {index}",
                            lambda: (s := harness.status(name)) and s.scl >= index and s.health == "ok" and s)


def test_checkpoints_bound_the_log_and_the_restart(harness):
    started = time.monotonic()
    keys, last = commit_keys(harness, b"ckpt", 1_500)
    print(f"\n1500 commits in {time.monotonic() - started:.1f} s; journal index {last.index}")
    for name in storage_names(harness):
        status = wait_caught_up(harness, name, last.index)
        harness.wait_for(f"{name} checkpointed", lambda: detail(harness.status(name))["checkpoint_index"] > 0)
    time.sleep(0.5)  # let the last checkpoints finish
    for name in storage_names(harness):
        status = harness.status(name)
        d = detail(status)
        print(f"{name}: scl {status.scl} checkpoint {d['checkpoint_index']} ({d['checkpoint_bytes']} bytes), "
              f"log [{status.first_index}, {status.last_index}] {d['log_entries']} entries {d['log_bytes']} bytes "
              f"in {d['log_files']} files")
        assert status.first_index > 1, f"{name} never dropped its log"
        # The log runs from the older of the two kept checkpoints: about two intervals, plus at most
        # one journal batch of overshoot per checkpoint.
        bound = 2 * CHECKPOINT_ENTRIES + 2 * limits.ENTRIES_PER_MESSAGE_MAX
        assert d["log_entries"] <= bound, f"{name}: the log holds {d['log_entries']} of {status.scl} entries"

    victim = "storage-az1-a"
    at_kill = harness.status(victim)
    harness.cluster.kill(victim)
    killed = time.monotonic()
    harness.cluster.restart(victim)
    status = wait_caught_up(harness, victim, last.index)
    print(f"{victim}: SIGKILLed and restarted, caught up in {time.monotonic() - killed:.2f} s")
    assert_holds(harness, victim, keys, last.commit_ts)
    lines = [line for line in harness.config.log_path(victim).read_text().splitlines() if "replayed" in line]
    match = re.search(r"replayed (\d+) entries from the local log after checkpoint (\d+) in (\d+) ms", lines[-1])
    assert match, lines[-1]
    replayed, from_checkpoint, replay_ms = (int(g) for g in match.groups())
    print(f"{victim} restart: checkpoint {from_checkpoint} + {replayed} log entries replayed in {replay_ms} ms "
          f"(of {at_kill.scl} entries in all)")
    assert from_checkpoint > 0
    assert replayed <= detail(at_kill)["log_entries"] + 5, "restart replays only the log after the checkpoint"
    assert status.scl >= last.index


def test_repair_through_a_peer_checkpoint_when_journal_and_peer_logs_moved_on(harness):
    victim = "storage-az3-b"
    before = harness.commit({b"gap/before": b"gap/before"})
    victim_scl = wait_caught_up(harness, victim, before.index).scl
    harness.cluster.kill(victim)
    peers = [n for n in storage_names(harness) if n != victim]
    keys: list[bytes] = []
    last = before
    deadline = time.monotonic() + 4 * DEADLINE_S
    while True:
        batch, newest = commit_keys(harness, b"gap%d" % len(keys), 300)
        keys += batch
        last = max(last, newest, key=lambda r: r.commit_ts)
        peer_firsts = [s.first_index for name in peers if (s := harness.status(name))]
        journal_firsts = journal_first_indexes(harness)
        if min(journal_firsts) > victim_scl + 1 and min(peer_firsts) > victim_scl + 1:
            break
        assert time.monotonic() < deadline, (
            f"journal {journal_firsts} / peer logs {peer_firsts} never moved past {victim_scl + 1}")
    print(f"\nvictim scl {victim_scl}; journal first indexes {journal_firsts}; peer log first indexes {peer_firsts}")
    started = time.monotonic()
    harness.cluster.restart(victim)
    status = wait_caught_up(harness, victim, last.index)
    print(f"{victim} repaired through a checkpoint in {time.monotonic() - started:.2f} s: {status.detail}")
    assert_holds(harness, victim, keys + [b"gap/before"], last.commit_ts)
    log_text = harness.config.log_path(victim).read_text()
    assert "installed checkpoint" in log_text, "the gap could only be filled from a peer's checkpoint"


def test_wiped_node_rebuilds_rejoins_and_is_never_stale(harness):
    victim = "storage-az2-a"
    keys, last = commit_keys(harness, b"wipe", 300)
    wait_caught_up(harness, victim, last.index)
    harness.cluster.kill(victim)
    shutil.rmtree(harness.config.node_data_dir(victim))
    more, last = commit_keys(harness, b"wipe2", 300)
    keys += more
    expected = {k: k for k in sample(keys)}
    started = time.monotonic()
    harness.cluster.restart(victim)
    answers = {"refused": 0, "correct": 0}
    stub = harness.storage(victim)
    deadline = time.monotonic() + DEADLINE_S
    while answers["correct"] < 3:
        assert time.monotonic() < deadline, f"{victim} never served ts {last.commit_ts}: {answers}"
        try:
            reply = stub.Get(storage_pb2.GetRequest(keys=list(expected), ts=last.commit_ts, wait_ms=100), timeout=2)
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
            answers["refused"] += 1
            time.sleep(0.02)
            continue
        got = {v.key: v.value for v in reply.versions if v.found}
        assert got == expected, f"{victim} answered while rebuilding with {len(expected) - len(got)} keys missing"
        answers["correct"] += 1
    others = max(s.scl for name in storage_names(harness) if name != victim and (s := harness.status(name)))
    status = wait_caught_up(harness, victim, others)
    print(f"\n{victim} rebuilt from nothing in {time.monotonic() - started:.2f} s; reads while rebuilding: "
          f"{answers}; {status.detail}")
    log_text = harness.config.log_path(victim).read_text()
    assert "installed checkpoint" in log_text


def test_truncation_pauses_with_three_copies_down_and_resumes(harness):
    down = ["storage-az1-b", "storage-az2-b", "storage-az3-a"]
    _, last = commit_keys(harness, b"pause0", 50)
    for name in storage_names(harness):
        wait_caught_up(harness, name, last.index)
    for name in down:
        harness.cluster.kill(name)
    down_scl = last.index  # every copy held it; the down copies' last reports say at least this
    time.sleep(limits.SCL_REPORT_INTERVAL_MS / 1000 * 3)
    paused_first = journal_first_indexes(harness)
    for round_number in range(4):
        _, newest = commit_keys(harness, b"pause%d" % (round_number + 1), 100)
        time.sleep(limits.SCL_REPORT_INTERVAL_MS / 1000 * 2)
        firsts = journal_first_indexes(harness)
        print(f"3 copies down: journal index {newest.index}, first indexes {firsts}")
        assert max(firsts) <= max(paused_first + [down_scl + 1]), (
            f"the journal truncated to {firsts} while only 3 copies were complete")
    assert newest.index > down_scl + 6 * SEGMENT_ENTRIES, "the journal kept committing"
    for name in down:
        harness.cluster.restart(name)
    _, resumed = commit_keys(harness, b"pause-after", 100)
    for name in down:
        wait_caught_up(harness, name, resumed.index)
    firsts = harness.wait_for("the journal to truncate again",
                              lambda: (f := journal_first_indexes(harness)) and min(f) > down_scl + 1 and f)
    print(f"copies back: journal first indexes {firsts} (paused at {paused_first})")
