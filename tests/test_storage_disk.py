"""The storage node's stores touch files only through their Disk.

SegmentLog and CheckpointStore run here on the simulation's in-memory disk; the real
directory they are given must stay empty, so any file access that bypasses the Disk shows up
(as a file on disk, or as a FileNotFoundError from the real file system).
"""
from __future__ import annotations

import pathlib

import pytest

from quorumdb.pb import common_pb2
from tools.sim.disk import DiskState, SimDisk
from storage_node import checkpoint
from storage_node.store import CheckpointStore, SegmentLog, log_file_name


class DictDisk(SimDisk):
    """The simulation's in-memory disk (tools/sim/disk.py), recording the paths it fsyncs."""

    def __init__(self):
        self.synced: list[str] = []
        super().__init__(DiskState(), on_fsync=self.synced.append)


def entry(index: int, value: bytes = b"v") -> common_pb2.Entry:
    return common_pb2.Entry(index=index, ts=index * 10, kind=common_pb2.ENTRY_TXN,
                            writes=[common_pb2.Write(key=b"k%d" % index, value=value)])


@pytest.fixture
def directory(tmp_path):
    path = tmp_path / "node"  # never created on the real disk
    yield path
    assert not path.exists(), "a store wrote to the real disk"
    assert list(tmp_path.iterdir()) == []


def test_segment_log_runs_on_its_disk_only(directory):
    disk = DictDisk()
    segment_log = SegmentLog(directory, disk=disk)
    assert segment_log.open() == 0
    segment_log.append([entry(1), entry(2)])
    segment_log.append([entry(3)])
    first_file = str(directory / log_file_name(1))
    assert disk.synced == [first_file, first_file], "one sync per batch"
    segment_log.roll()
    segment_log.append([entry(4), entry(5)])
    assert disk.listdir(directory) == [log_file_name(1), log_file_name(4)]
    assert [e.index for e in segment_log.read(2, 10, 1 << 20)] == [2, 3, 4, 5]
    assert [e.index for e in segment_log.read(1, 2, 1 << 20)] == [1, 2]
    assert [e.index for e in segment_log.read(1, 10, 1)] == [1], "at least one entry, then the byte bound"
    assert segment_log.drop_through(3) == 1
    assert disk.listdir(directory) == [log_file_name(4)]
    segment_log.close()

    reopened = SegmentLog(directory, disk=disk)
    assert reopened.open() == 2
    assert (reopened.first_index, reopened.last_index) == (4, 5)
    reopened.append([entry(6)])
    assert [e.index for e in reopened.read(0, 10, 1 << 20)] == [4, 5, 6]
    reopened.reset()
    assert disk.listdir(directory) == []
    reopened.close()


def test_a_torn_tail_is_cut_through_the_disk(directory):
    disk = DictDisk()
    segment_log = SegmentLog(directory, disk=disk)
    segment_log.open()
    segment_log.append([entry(1), entry(2), entry(3)])
    segment_log.close()
    path = str(directory / log_file_name(1))
    disk.truncate(path, disk.size(path) - 3)  # a torn last record
    disk.synced.clear()
    reopened = SegmentLog(directory, disk=disk)
    assert reopened.open() == 2
    assert reopened.truncated_bytes > 0
    assert disk.synced == [path], "the cut is made durable"
    assert [e.index for e in reopened.read(1, 10, 1 << 20)] == [1, 2]


def test_a_dropped_file_ends_a_read_early(directory):
    disk = DictDisk()
    segment_log = SegmentLog(directory, disk=disk)
    segment_log.open()
    segment_log.append([entry(1)])
    segment_log.roll()
    segment_log.append([entry(2)])
    disk.unlink(directory / log_file_name(2))  # as if dropped between the plan and the read
    assert [e.index for e in segment_log.read(1, 10, 1 << 20)] == [1]


def _checkpoint_bytes(index: int) -> list[bytes]:
    header = checkpoint.CheckpointHeader(index, index * 10, index * 10, 0, 0)
    return list(checkpoint.encode(header, [(b"k", [index * 10], [b"v%d" % index])], 64))


def test_checkpoint_store_runs_on_its_disk_only(directory):
    disk = DictDisk()
    store = CheckpointStore(directory, disk=disk)
    disk.mkdir(directory)
    disk.write(directory / "checkpoint-00000000000000000007.ckpt.tmp", b"half")  # an interrupted write
    assert store.open() == []
    assert disk.listdir(directory) == []
    size = store.write(10, _checkpoint_bytes(10))
    assert size == len(disk.read(store.path(10)))
    writer = store.receiver(20)
    for chunk in _checkpoint_bytes(20):
        writer.write(chunk)
    writer.publish(verify=True)
    assert store.indexes() == [10, 20]
    loaded = store.load_newest()
    assert loaded.index == 20 and loaded.records == [(b"k", [200], [b"v20"])]
    aborted = store.receiver(30)
    aborted.write(b"partial")
    aborted.abort()
    assert store.delete_below(20) == 1
    assert disk.listdir(directory) == [store.path(20).name]
    opened = disk.open_read(store.path(20))
    assert opened.read(opened.size) == disk.read(store.path(20))


def test_the_stores_take_the_runtimes_disk_by_default(directory):
    from quorumdb import runtime

    disk = DictDisk()

    class Simulated(runtime.Runtime):
        pass

    simulated = Simulated()
    simulated.disk = disk
    token = runtime.use(simulated)
    try:
        segment_log = SegmentLog(directory)
        store = CheckpointStore(pathlib.Path(directory))
    finally:
        runtime._current.reset(token)
    assert segment_log.disk is disk and store.disk is disk
    segment_log.open()
    segment_log.append([entry(1)])
    store.open()
    store.write(1, _checkpoint_bytes(1))
    assert disk.listdir(directory) == [store.path(1).name, log_file_name(1)]
