"""The storage node's stores touch files only through their Disk.

SegmentLog and CheckpointStore run here on a dict-backed disk written in this file; the real
directory they are given must stay empty, so any file access that bypasses the Disk shows up
(as a file on disk, or as a FileNotFoundError from the real file system).
"""
from __future__ import annotations

import pathlib

import pytest

from quorumdb.pb import common_pb2
from storage_node import checkpoint
from storage_node.store import CheckpointStore, SegmentLog, log_file_name


class _AppendFile:
    def __init__(self, disk: "DictDisk", path: str):
        self._disk = disk
        self._path = path
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self._disk.files[self._path] += data

    def sync(self) -> None:
        assert not self.closed
        self._disk.synced.append(self._path)

    def tell(self) -> int:
        return len(self._disk.files[self._path])

    def close(self) -> None:
        self.closed = True


class _ReadFile:
    def __init__(self, data: bytes):
        self._data = data  # a snapshot: readable even if the name goes meanwhile
        self._offset = 0
        self.size = len(data)

    def read(self, length: int) -> bytes:
        chunk = self._data[self._offset:self._offset + length]
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class DictDisk:
    """Files as a dict from path to contents; records the fsync calls it gets."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        self.synced: list[str] = []
        self.dir_syncs: list[str] = []

    def _file(self, path) -> str:
        key = str(path)
        if key not in self.files:
            raise FileNotFoundError(key)
        return key

    def mkdir(self, path) -> None:
        self.dirs.add(str(path))

    def listdir(self, path) -> list[str]:
        prefix = str(path) + "/"
        return sorted(k[len(prefix):] for k in self.files if k.startswith(prefix) and "/" not in k[len(prefix):])

    def exists(self, path) -> bool:
        return str(path) in self.files or str(path) in self.dirs

    def size(self, path) -> int:
        return len(self.files[self._file(path)])

    def read(self, path) -> bytes:
        return self.files[self._file(path)]

    def pread(self, path, offset: int, length: int) -> bytes:
        return self.files[self._file(path)][offset:offset + length]

    def write(self, path, data: bytes) -> None:
        self.files[str(path)] = bytes(data)

    def append(self, path, data: bytes) -> int:
        offset = len(self.files.get(str(path), b""))
        self.files[str(path)] = self.files.get(str(path), b"") + data
        return offset

    def open_append(self, path) -> _AppendFile:
        self.files.setdefault(str(path), b"")
        return _AppendFile(self, str(path))

    def open_read(self, path) -> _ReadFile:
        return _ReadFile(self.files[self._file(path)])

    def truncate(self, path, size: int) -> None:
        key = self._file(path)
        self.files[key] = self.files[key][:size]

    def fsync(self, path) -> None:
        self.synced.append(self._file(path))

    def fsync_dir(self, path) -> None:
        assert str(path) in self.dirs, path
        self.dir_syncs.append(str(path))

    def replace(self, source, target) -> None:
        self.files[str(target)] = self.files.pop(self._file(source))

    def unlink(self, path, missing_ok: bool = False) -> None:
        if missing_ok and str(path) not in self.files:
            return
        del self.files[self._file(path)]


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
    disk.files[path] = disk.files[path][:-3]
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
    del disk.files[str(directory / log_file_name(2))]  # as if dropped between the plan and the read
    assert [e.index for e in segment_log.read(1, 10, 1 << 20)] == [1]


def _checkpoint_bytes(index: int) -> list[bytes]:
    header = checkpoint.CheckpointHeader(index, index * 10, index * 10, 0, 0)
    return list(checkpoint.encode(header, [(b"k", [index * 10], [b"v%d" % index])], 64))


def test_checkpoint_store_runs_on_its_disk_only(directory):
    disk = DictDisk()
    store = CheckpointStore(directory, disk=disk)
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
