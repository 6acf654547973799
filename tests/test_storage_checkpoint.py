"""Checkpoints: the format (round trip, any damage detected), the segment's view of a point,
the checkpoint files (fallback past a corrupt one) and SegmentState's write / restart / install."""
from __future__ import annotations

import asyncio
import random

import pytest

from quorumdb.config import NodeConfig
from quorumdb.pb import common_pb2
from storage_node import checkpoint
from storage_node.core import Record, Segment
from storage_node.service import SegmentState
from storage_node.store import CheckpointStore, SegmentLog, checkpoint_file_name

NODE = NodeConfig("storage-az1-a", "storage", "az1", "127.0.0.1", 1)


def header_of(segment: Segment) -> checkpoint.CheckpointHeader:
    return checkpoint.CheckpointHeader(segment.applied_index, segment.last_applied_ts, segment.closed_ts,
                                       segment.gc_horizon_ts)


def encode_segment(segment: Segment, chunk_bytes: int = 1 << 20) -> bytes:
    view = segment.checkpoint_view()
    return b"".join(checkpoint.encode(header_of(segment), segment.checkpoint_records(view), chunk_bytes))


def restore(data: bytes) -> Segment:
    header, records = checkpoint.decode(data)
    return Segment.from_checkpoint(header.applied_index, header.last_applied_ts, header.closed_ts,
                                   header.gc_horizon_ts, records)


def random_records(rng: random.Random, first_index: int, count: int, first_ts: int, keys: int = 30) -> list[Record]:
    records = []
    ts = first_ts
    for index in range(first_index, first_index + count):
        ts += rng.randint(1, 5)
        writes = tuple((b"k%03d" % rng.randrange(keys), None if rng.random() < 0.2 else b"v%d" % index)
                       for _ in range(rng.randint(0, 3)))
        records.append(Record(index=index, ts=ts, writes=writes))
    return records


def every_read(segment: Segment, keys: list[bytes], ts_values: list[int]) -> list:
    return [(key, ts, segment.get(key, ts)) for key in keys for ts in ts_values]


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_answers_every_read_as_the_original(seed):
    rng = random.Random(seed)
    segment = Segment()
    segment.apply(random_records(rng, 1, 300, 1_000))
    segment.gc_step(segment.last_applied_ts - 200, 10_000)
    restored = restore(encode_segment(segment, chunk_bytes=64))
    keys = [b"k%03d" % i for i in range(30)] + [b"missing"]
    ts_values = list(range(segment.gc_horizon_ts, segment.last_applied_ts + 3))
    assert every_read(restored, keys, ts_values) == every_read(segment, keys, ts_values), f"seed {seed}"
    assert (restored.applied_index, restored.last_applied_ts, restored.gc_horizon_ts) == (
        segment.applied_index, segment.last_applied_ts, segment.gc_horizon_ts)
    assert restored.closed_ts == segment.closed_ts
    assert restored.scan(b"", None, segment.last_applied_ts, 1_000) == segment.scan(
        b"", None, segment.last_applied_ts, 1_000)
    restored.apply(random_records(rng, 301, 5, segment.last_applied_ts))  # it goes on from there
    assert restored.applied_index == 305


def test_a_view_excludes_what_is_applied_after_it():
    segment = Segment()
    segment.apply([Record(1, 10, ((b"a", b"a10"), (b"b", b"b10"))), Record(2, 20, ((b"a", b"a20"),))])
    view = segment.checkpoint_view()
    header = header_of(segment)
    # Applied while the checkpoint is being encoded (the worker thread's situation):
    segment.apply([Record(3, 30, ((b"a", b"a30"), (b"c", b"c30"), (b"b", None)))])
    data = b"".join(checkpoint.encode(header, segment.checkpoint_records(view), 1 << 20))
    restored = restore(data)
    assert restored.applied_index == 2
    assert restored.get(b"a", 100) == (b"a20", 20)
    assert restored.get(b"b", 100) == (b"b10", 10)
    assert restored.get(b"c", 100) == (None, 0), "a key created after the view is not in it"


def test_a_view_drops_what_gc_at_its_horizon_would():
    segment = Segment()
    segment.apply([Record(1, 10, ((b"a", b"a10"), (b"gone", b"x"))), Record(2, 20, ((b"a", b"a20"), (b"gone", None))),
                   Record(3, 30, ((b"a", b"a30"),))])
    segment.gc_horizon_ts = 25  # as if gc_step had only moved the horizon so far
    header, records = checkpoint.decode(encode_segment(segment))
    assert records == [(b"a", [20, 30], [b"a20", b"a30"])], "versions below the newest one at 25, and a dead key, go"
    assert header.gc_horizon_ts == 25


def test_any_damage_is_detected():
    segment = Segment()
    segment.apply(random_records(random.Random(7), 1, 50, 1_000))
    data = encode_segment(segment)
    checkpoint.decode(data)
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(checkpoint.CorruptCheckpoint):
            checkpoint.decode(data[:cut])
    for position in (3, 40, len(data) // 2, len(data) - 5):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        with pytest.raises(checkpoint.CorruptCheckpoint):
            checkpoint.decode(bytes(damaged))


def test_store_falls_back_to_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.open() == []
    segment = Segment()
    rng = random.Random(1)
    segment.apply(random_records(rng, 1, 10, 1_000))
    store.write(10, [encode_segment(segment)])
    segment.apply(random_records(rng, 11, 10, segment.last_applied_ts))
    store.write(20, [encode_segment(segment)])
    assert store.indexes() == [10, 20]
    assert store.load_newest().index == 20
    path = store.path(20)
    path.write_bytes(path.read_bytes()[:-7])  # a damaged newest checkpoint
    loaded = store.load_newest()
    assert loaded.index == 10 and loaded.header.applied_index == 10
    (tmp_path / (checkpoint_file_name(30) + ".tmp")).write_bytes(b"half")
    assert store.open() == [10, 20], "an unfinished write is removed at open"
    assert store.delete_below(20) == 1 and store.indexes() == [20]


def test_a_received_checkpoint_is_verified_before_it_is_published(tmp_path):
    store = CheckpointStore(tmp_path)
    store.open()
    segment = Segment()
    segment.apply(random_records(random.Random(2), 1, 10, 1_000))
    data = encode_segment(segment)
    writer = store.receiver(10)
    writer.write(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(checkpoint.CorruptCheckpoint):
        writer.publish(verify=True)
    writer.abort()
    assert store.indexes() == [] and list(tmp_path.iterdir()) == []
    wrong_index = store.receiver(11)
    wrong_index.write(data)
    with pytest.raises(checkpoint.CorruptCheckpoint):
        wrong_index.publish(verify=True)
    wrong_index.abort()
    good = store.receiver(10)
    good.write(data)
    assert good.publish(verify=True) == len(data)
    assert store.load(10).header.applied_index == 10


# --- SegmentState: write, restart, fallback, install ---------------------------------------------
def entry(index: int, ts: int, key: bytes, value: bytes | None) -> common_pb2.Entry:
    return common_pb2.Entry(index=index, epoch=1, kind=common_pb2.ENTRY_TXN, ts=ts,
                            writes=[common_pb2.Write(key=key, value=value or b"", tombstone=value is None)])


def entries(first: int, last: int) -> list[common_pb2.Entry]:
    return [entry(i, 1_000 + i, b"k%02d" % (i % 17), None if i % 11 == 0 else b"v%d" % i) for i in range(first, last + 1)]


async def open_state(directory, checkpoint_entries: int = 10) -> SegmentState:
    segment_log = SegmentLog(directory)
    await asyncio.to_thread(segment_log.open)
    state = SegmentState(NODE, segment_log, checkpoint_entries=checkpoint_entries)
    await state.replay(asyncio.Event())
    return state


def snapshot(state: SegmentState) -> list:
    segment = state.segment
    return every_read(segment, [b"k%02d" % i for i in range(17)], [segment.last_applied_ts, segment.last_applied_ts - 7])


async def test_checkpoints_bound_the_log_and_restart_replays_only_after_them(tmp_path):
    state = await open_state(tmp_path)
    written = []
    for first in range(1, 61, 5):
        await state.append_and_apply(entries(first, first + 4))
        if state.checkpoint_wanted.is_set():  # the appender fixed a view: write it
            written.append(await state.write_checkpoint())
    assert written == [10, 20, 30, 40, 50, 60]
    assert state.checkpoints.indexes() == [50, 60], "the two newest checkpoints are kept"
    assert state.segment_log.first_index == 51, "the log holds what follows the older kept checkpoint"
    assert state.segment_log.entry_count == 10
    await state.append_and_apply(entries(61, 63))
    expected = snapshot(state)
    state.segment_log.close()

    restarted = await open_state(tmp_path)
    assert restarted.checkpoint_index == 60
    assert restarted.segment.applied_index == 63
    assert snapshot(restarted) == expected
    restarted.segment_log.close()

    # The newest checkpoint is damaged: the older one plus the log rebuild the same state.
    path = restarted.checkpoints.path(60)
    path.write_bytes(b"\0" + path.read_bytes()[1:])
    fallback = await open_state(tmp_path)
    assert fallback.checkpoint_index == 50
    assert fallback.segment.applied_index == 63
    assert snapshot(fallback) == expected
    fallback.segment_log.close()


async def test_a_log_that_does_not_reach_the_checkpoint_is_dropped(tmp_path):
    state = await open_state(tmp_path)
    await state.append_and_apply(entries(1, 30))
    await state.write_checkpoint()
    await state.append_and_apply(entries(31, 35))
    await state.write_checkpoint()
    await state.append_and_apply(entries(36, 40))
    assert state.segment_log.first_index == 31
    state.segment_log.close()
    for index in state.checkpoints.indexes():
        state.checkpoints.path(index).unlink()  # both checkpoints lost: the log starts at 31, nothing before
    state.checkpoints.write(30, [b"junk"])
    restarted = await open_state(tmp_path)
    assert restarted.segment.applied_index == 0
    assert restarted.segment_log.entry_count == 0, "a log with a hole before it cannot be replayed"
    restarted.segment_log.close()


async def test_install_replaces_state_and_log(tmp_path):
    source = await open_state(tmp_path / "source")
    await source.append_and_apply(entries(1, 40))
    index = await source.write_checkpoint()
    data = source.checkpoints.path(index).read_bytes()
    expected = snapshot(source)

    target = await open_state(tmp_path / "target")
    await target.append_and_apply(entries(1, 12))

    async def chunks(size: int):
        for offset in range(0, len(data), size):
            yield data[offset:offset + size]

    assert not await target.install_checkpoint(5, chunks(100)), "older than what it holds: refused"
    assert await target.install_checkpoint(40, chunks(100))
    assert target.segment.applied_index == 40 and target.checkpoint_index == 40
    assert target.segment_log.entry_count == 0
    assert snapshot(target) == expected
    await target.append_and_apply(entries(41, 42))
    target.segment_log.close()
    restarted = await open_state(tmp_path / "target")
    assert restarted.segment.applied_index == 42
    restarted.segment_log.close()

    damaged = await open_state(tmp_path / "damaged")
    bad = data[:100] + bytes([data[100] ^ 1]) + data[101:]

    async def bad_chunks():
        yield bad

    with pytest.raises(checkpoint.CorruptCheckpoint):
        await damaged.install_checkpoint(40, bad_chunks())
    assert damaged.segment.applied_index == 0
    assert damaged.checkpoints.indexes() == []
    damaged.segment_log.close()
    source.segment_log.close()
