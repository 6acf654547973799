"""Self-healing of storage nodes in-process over real gRPC, fed by a fake journal (fast, no processes).

Story: node a checkpoints every 10 entries and drops its log behind them; the journal forgets
what a new node b needs; b cannot find it in any peer's log, so it streams a's checkpoint,
verifies and installs it, takes the rest from a's log and the journal, and answers exactly
what a answers. A node whose directory was wiped while it was stopped rebuilds the same way,
and while it rebuilds it never answers a read with stale data.
"""
from __future__ import annotations

import asyncio
import shutil

import grpc
import pytest

from quorumdb.pb import common_pb2, storage_pb2
from tests.test_storage_service import FakeJournal, storage_nodes, wait_applied
from tests.util import make_config

WAIT_S = 20.0
CHECKPOINT_ENTRIES = 10


@pytest.fixture
async def world(tmp_path):
    cluster = make_config(tmp_path, storage_checkpoint_entries=CHECKPOINT_ENTRIES)
    async with storage_nodes(cluster) as (journal, start):
        yield cluster, journal, start


def detail_field(status: common_pb2.NodeStatus, name: str) -> int:
    fields = dict(part.split("=", 1) for part in status.detail.split())
    return int(fields[name])


async def wait_status(stub, what: str, predicate) -> common_pb2.NodeStatus:
    async def poll():
        while True:
            try:
                status = await stub.Status(common_pb2.StatusRequest(), timeout=1.0)
                if predicate(status):
                    return status
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    try:
        return await asyncio.wait_for(poll(), WAIT_S)
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")


async def all_rows(stub, ts: int) -> dict[bytes, bytes]:
    reply = await stub.Scan(storage_pb2.ScanRequest(start=b"", ts=ts, limit=1_000, wait_ms=2_000), timeout=3)
    assert not reply.more
    return {v.key: v.value for v in reply.versions}


def commit_many(journal: FakeJournal, first_ts: int, count: int) -> int:
    for i in range(count):
        ts = first_ts + i
        journal.commit(ts, **{f"k{ts % 23:02d}": f"v{ts}".encode(), f"d{ts % 5}": None if ts % 3 == 0 else b"x"})
    return first_ts + count - 1


async def commit_in_rounds(journal: FakeJournal, stub, first_ts: int, rounds: int, per_round: int = 15) -> int:
    """Commit rounds of entries, each time until the node has checkpointed all of them."""
    last_ts = first_ts - 1
    for _ in range(rounds):
        last_ts = commit_many(journal, last_ts + 1, per_round)
        journal.heartbeat(last_ts)
        await wait_status(stub, f"a checkpoint at {journal.last_index}",
                          lambda s: detail_field(s, "checkpoint_index") == journal.last_index)
    return last_ts


async def test_new_node_repairs_through_a_peer_checkpoint(world, caplog):
    caplog.set_level("INFO", logger="storage_node")
    cluster, journal, start = world
    running_a, stub_a = await start("storage-az1-a")
    last_ts = await commit_in_rounds(journal, stub_a, 100, rounds=4)
    # The log goes in steps (behind each older checkpoint, once the backup holds it): wait for the last.
    status_a = await wait_status(stub_a, "a drops its log behind the older checkpoint",
                                 lambda s: s.applied_index == 60 and s.first_index >= 46)
    print(f"node a: {status_a.detail}")
    assert status_a.first_index == 46, "the log starts after the older of the two kept checkpoints (45)"
    assert detail_field(status_a, "log_entries") <= 2 * CHECKPOINT_ENTRIES + 10
    last_ts = commit_many(journal, last_ts + 1, 3)
    journal.heartbeat(last_ts)
    await wait_applied(stub_a, 63)
    # b needs 1..62: the journal starts at 63 and a's log at 46, so b must take a's checkpoint (60)
    # and then 61..62 from a's log.
    journal.truncate_before(63)
    running_b, stub_b = await start("storage-az1-b")
    status_b = await wait_applied(stub_b, 63)
    assert status_b.scl == 63
    await wait_applied(stub_a, 63)
    rows_b = await all_rows(stub_b, last_ts)
    assert rows_b == await all_rows(stub_a, last_ts), "b answers exactly what a answers"
    assert len(rows_b) >= 23
    assert running_b.node.state.checkpoint_index == 60, "b's state came from a's checkpoint"
    assert running_b.node.state.checkpoints.indexes() == [60], "the installed checkpoint is on b's disk"
    messages = [r.getMessage() for r in caplog.records]
    assert any("installed checkpoint 60 from storage-az1-a" in m for m in messages), messages
    assert any("peer repair: applied [61, 62] from storage-az1-a" in m for m in messages), messages


async def test_wiped_node_rebuilds_and_is_never_stale(world):
    cluster, journal, start = world
    last_ts = commit_many(journal, 100, 25)
    journal.heartbeat(last_ts)
    running_a, stub_a = await start("storage-az1-a")
    running_b, stub_b = await start("storage-az1-b")
    await wait_applied(stub_a, 25)
    await wait_applied(stub_b, 25)
    await running_b.halt()
    shutil.rmtree(cluster.node_data_dir("storage-az1-b"))
    last_ts = await commit_in_rounds(journal, stub_a, last_ts + 1, rounds=3, per_round=13)
    status_a = await wait_status(stub_a, "a drops its log", lambda s: s.applied_index == 64 and s.first_index > 1)
    print(f"node a: {status_a.detail}")
    journal.truncate_before(61)
    expected = await all_rows(stub_a, last_ts)

    await running_b.start()
    answers = {"unavailable": 0, "correct": 0}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while answers["correct"] < 3:
        assert loop.time() < deadline, f"b never served ts {last_ts}: {answers}"
        try:
            reply = await stub_b.Scan(storage_pb2.ScanRequest(start=b"", ts=last_ts, limit=1_000, wait_ms=50),
                                      timeout=1)
        except grpc.aio.AioRpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
            answers["unavailable"] += 1
            continue
        got = {v.key: v.value for v in reply.versions}
        assert got == expected, "a rebuilding node answered with stale or partial data"
        answers["correct"] += 1
    print(f"reads during the rebuild: {answers}")
    status_b = await wait_applied(stub_b, 64)
    assert status_b.scl == 64
    assert running_b.node.state.checkpoint_index == 64


async def test_health_says_repairing(world):
    cluster, journal, start = world
    running, stub = await start("storage-az1-a")
    journal.commit(100, a=b"1")
    await wait_applied(stub, 1)
    running.node.state.repairing = True
    status = await stub.Status(common_pb2.StatusRequest(), timeout=3)
    assert status.health == "degraded: repairing"
    assert "checkpoint_index=0" in status.detail and "log_bytes=" in status.detail
