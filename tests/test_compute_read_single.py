"""Single-copy reads (read_mode "single") in StorageReader, against fake in-process storage
servers on real gRPC (the fakes of tests/test_compute_transport.py): one copy asked when
nothing is slow, own AZ first; a not-caught-up, failed or hung copy hands over to the next;
a read no single copy answers falls back to the quorum read."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from compute_node.cluster.storage_reader import StorageReader
from quorumdb import limits
from tests.test_compute_transport import DATA, FakeCluster, read_refused_in_time


@pytest.fixture
async def fake(tmp_path):
    cluster = FakeCluster(tmp_path)
    cluster.config = dataclasses.replace(cluster.config, read_mode="single")
    yield cluster
    await cluster.close()


def calls(fake) -> dict[str, int]:
    return {name: storage.calls for name, storage in fake.storages.items() if storage.calls}


async def test_single_read_asks_exactly_one_copy_in_its_own_az(fake):
    await fake.start_storage(DATA)
    reader = StorageReader(fake.config, "az3", fake.channels)
    assert reader.read_mode == "single"
    for _ in range(20):
        assert await reader.get_many([b"k1", b"k2", b"k3", b"missing"], ts=25) == {
            b"k1": b"v1", b"k2": b"new", b"k3": b"x", b"missing": None}
    rows, more = await reader.scan(b"", None, ts=35, limit=10)
    assert rows == [(b"k1", b"v1"), (b"k2", b"new")] and not more
    assert calls(fake) == {"storage-az3-a": 21}
    assert reader.reads == {"quorum": 0, "single": 21}
    assert reader.copies_asked == 21 and reader.hedges == 0 and reader.single_fallbacks == 0
    assert "read_mode=single reads_quorum=0 reads_single=21 copies_asked=21" in reader.status_detail()


async def test_per_read_mode_overrides_the_cluster_default(fake):
    await fake.start_storage(DATA)
    reader = StorageReader(dataclasses.replace(fake.config, read_mode="quorum"), "az2", fake.channels)
    assert await reader.get_many([b"k2"], ts=25) == {b"k2": b"new"}
    assert reader.copies_asked == 3
    assert await reader.get_many([b"k2"], ts=25, read_mode="single") == {b"k2": b"new"}
    assert reader.copies_asked == 4
    assert reader.reads == {"quorum": 1, "single": 1}
    with pytest.raises(ValueError):
        await reader.get_many([b"k2"], ts=25, read_mode="fastest")


async def test_not_caught_up_copy_hands_over_and_is_skipped_while_behind(fake):
    await fake.start_storage(DATA)
    fake.storages["storage-az1-a"].mode = "unavailable"  # alive, says "not caught up"
    reader = StorageReader(fake.config, "az1", fake.channels)
    assert await reader.get_many([b"k2"], ts=25) == {b"k2": b"new"}
    assert calls(fake) == {"storage-az1-a": 1, "storage-az1-b": 1}
    for _ in range(10):
        assert await reader.get_many([b"k2"], ts=25) == {b"k2": b"new"}
    assert calls(fake) == {"storage-az1-a": 1, "storage-az1-b": 11}, "the lagging copy is not asked again"


async def test_behind_copy_goes_after_failed_ones(fake):
    await fake.start_storage(DATA)
    fake.storages["storage-az1-a"].mode = "unavailable"
    reader = StorageReader(fake.config, "az1", fake.channels)
    assert await reader.get_many([b"k1"], ts=25) == {b"k1": b"v1"}   # az1-a behind, az1-b answers
    await fake.stop("storage-az1-b")
    assert await reader.get_many([b"k1"], ts=25) == {b"k1": b"v1"}   # az1-b refused: az2-a answers
    before = calls(fake)
    assert await reader.get_many([b"k1"], ts=25) == {b"k1": b"v1"}
    after = calls(fake)
    assert after["storage-az2-a"] == before["storage-az2-a"] + 1
    assert after["storage-az1-a"] == before["storage-az1-a"], "the behind copy comes last"


async def test_hung_copy_is_hedged_after_the_hedge_delay(fake):
    await fake.start_storage(DATA)
    fake.storages["storage-az2-a"].mode = "hang"
    reader = StorageReader(fake.config, "az2", fake.channels)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await reader.get_many([b"k1"], ts=25) == {b"k1": b"v1"}
    elapsed_s = loop.time() - began
    assert limits.READ_HEDGE_DELAY_MIN_S * 0.9 <= elapsed_s < limits.STORAGE_READ_TIMEOUT_S / 2
    assert reader.hedges == 1 and reader.copies_asked == 2
    # Outpaced by the hedge, the hung copy is suspect: later reads ask one copy, az2-b.
    for _ in range(5):
        assert await reader.get_many([b"k1"], ts=25) == {b"k1": b"v1"}
    assert reader.copies_asked == 7 and fake.storages["storage-az2-a"].calls == 1


async def test_no_single_copy_answers_then_the_quorum_read_does(fake):
    await fake.start_storage(DATA)
    for name in ("storage-az1-a", "storage-az1-b"):
        fake.storages[name].mode = "unavailable"
    await fake.stop("storage-az2-a")
    reader = StorageReader(fake.config, "az1", fake.channels)
    assert await reader.get_many([b"k2"], ts=25) == {b"k2": b"new"}
    assert reader.single_fallbacks == 1
    assert {"storage-az2-b", "storage-az3-a", "storage-az3-b"} <= set(calls(fake))


async def test_single_read_without_any_copy_is_57p03_within_the_deadline(fake):
    await fake.start_storage(DATA)
    for storage in fake.storages.values():
        storage.mode = "unavailable"
    error = await read_refused_in_time(fake)
    assert "journal" in error.hint
