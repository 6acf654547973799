"""A simulated disk with a real disk's crash semantics (the `quorumdb.disk.Disk` interface).

Each node owns one `DiskState` for the whole simulation; each incarnation of the node (start,
crash, restart) sees it through a new `SimDisk`. A crash keeps only what was made durable:

* file contents survive as of their last `fsync`; of the bytes appended since, a random
  prefix may survive too (a torn last write: the stores' CRCs must catch the cut);
* a created, renamed or removed name survives only once `fsync_dir` of its directory ran;
  otherwise the directory is as it was at its last fsync_dir (a file created and fsynced
  whose directory was not is gone; a rename not yet fsynced is undone);
* directories themselves are durable when created (the stores create them once, at open).

A file is an inode shared by the names that point at it, as on POSIX: a file removed or
replaced while open for reading (`open_read`) keeps its contents for that reader, and writes
through an open append handle go to the inode, named or not. After a crash, calls through the
old incarnation's `SimDisk` raise `NodeCrashed`: a dead process writes nothing.
"""
from __future__ import annotations

import os
import random


class NodeCrashed(BaseException):
    """The node this disk or network endpoint belonged to has crashed (BaseException: code that
    catches Exception must not swallow a crash and go on as if it were alive)."""


class _Inode:
    __slots__ = ("data", "durable")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""


def _norm(path) -> str:
    return os.path.normpath(str(path))


class DiskState:
    """Everything one node has on disk, across its incarnations."""

    def __init__(self) -> None:
        self.names: dict[str, _Inode] = {}      # the current directory entries
        self.durable_names: dict[str, _Inode] = {}  # as a crash would leave them
        self.dirs: set[str] = set()
        self.fsyncs = 0
        self.bytes_written = 0

    def crash(self, rng: random.Random, tear: bool) -> int:
        """Lose what was not durable; returns the number of bytes lost. `tear`: the last unsynced
        append of a file may survive in part."""
        lost = 0
        self.names = dict(self.durable_names)
        seen: set[int] = set()
        for name in sorted(self.names):  # sorted: the rng is drawn in the same order every run
            inode = self.names[name]
            if id(inode) in seen:
                continue
            seen.add(id(inode))
            if bytes(inode.data) == inode.durable:
                continue
            kept = inode.durable
            if tear and len(inode.data) > len(kept) and inode.data[:len(kept)] == kept:
                extra = len(inode.data) - len(kept)
                kept = bytes(inode.data[:len(kept) + rng.randrange(extra)])
            lost += abs(len(inode.data) - len(kept))
            inode.data = bytearray(kept)
            inode.durable = kept
        return lost


class _AppendFile:
    def __init__(self, disk: "SimDisk", inode: _Inode, path: str):
        self._disk = disk
        self._inode = inode
        self._path = path

    def write(self, data: bytes) -> None:
        self._disk._check()
        self._inode.data += data
        self._disk.state.bytes_written += len(data)

    def sync(self) -> None:
        self._disk._check()
        self._disk._before_fsync()
        self._inode.durable = bytes(self._inode.data)
        self._disk._synced(self._path)

    def tell(self) -> int:
        return len(self._inode.data)

    def close(self) -> None:
        pass


class _ReadFile:
    def __init__(self, data: bytes):
        self._data = data
        self._offset = 0
        self.size = len(data)

    def read(self, length: int) -> bytes:
        chunk = self._data[self._offset:self._offset + length]
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class SimDisk:
    """One incarnation's view of a node's DiskState."""

    def __init__(self, state: DiskState, alive=lambda: True, before_fsync=lambda: None, on_fsync=None):
        self.state = state
        self._alive = alive
        self._before_fsync = before_fsync  # the fault point hook (may crash the node)
        self._on_fsync = on_fsync  # told each fsynced file's path (tests count syncs with it)

    def _synced(self, path: str) -> None:
        self.state.fsyncs += 1
        if self._on_fsync is not None:
            self._on_fsync(path)

    def _check(self) -> None:
        if not self._alive():
            raise NodeCrashed("the node crashed: its disk takes no more calls")

    def _inode(self, path) -> _Inode:
        self._check()
        inode = self.state.names.get(_norm(path))
        if inode is None:
            raise FileNotFoundError(2, "No such file (simulated disk)", str(path))
        return inode

    def _parent_exists(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent not in self.state.dirs:
            raise FileNotFoundError(2, "No such directory (simulated disk)", parent)

    def _create(self, path) -> _Inode:
        key = _norm(path)
        inode = self.state.names.get(key)
        if inode is None:
            self._parent_exists(key)
            inode = self.state.names[key] = _Inode()
        return inode

    # --- the Disk interface --------------------------------------------------------------
    def mkdir(self, path) -> None:
        self._check()
        key = _norm(path)
        while key not in self.state.dirs and key not in ("/", "."):
            self.state.dirs.add(key)
            key = os.path.dirname(key)

    def listdir(self, path) -> list[str]:
        self._check()
        key = _norm(path)
        if key not in self.state.dirs:
            raise FileNotFoundError(2, "No such directory (simulated disk)", str(path))
        names = {os.path.basename(p) for p in self.state.names if os.path.dirname(p) == key}
        names |= {os.path.basename(d) for d in self.state.dirs if os.path.dirname(d) == key and d != key}
        return sorted(names)

    def exists(self, path) -> bool:
        self._check()
        key = _norm(path)
        return key in self.state.names or key in self.state.dirs

    def size(self, path) -> int:
        return len(self._inode(path).data)

    def read(self, path) -> bytes:
        return bytes(self._inode(path).data)

    def pread(self, path, offset: int, length: int) -> bytes:
        return bytes(self._inode(path).data[offset:offset + length])

    def write(self, path, data: bytes) -> None:
        self._check()
        inode = self._create(path)
        inode.data = bytearray(data)
        self.state.bytes_written += len(data)

    def open_append(self, path) -> _AppendFile:
        self._check()
        return _AppendFile(self, self._create(path), _norm(path))

    def open_read(self, path) -> _ReadFile:
        return _ReadFile(bytes(self._inode(path).data))

    def truncate(self, path, size: int) -> None:
        inode = self._inode(path)
        del inode.data[size:]

    def fsync(self, path) -> None:
        inode = self._inode(path)
        self._before_fsync()
        inode.durable = bytes(inode.data)
        self._synced(_norm(path))

    def fsync_dir(self, path) -> None:
        self._check()
        key = _norm(path)
        state = self.state
        for name in [n for n in state.durable_names if os.path.dirname(n) == key and n not in state.names]:
            del state.durable_names[name]
        for name, inode in state.names.items():
            if os.path.dirname(name) == key:
                state.durable_names[name] = inode
        state.fsyncs += 1

    def replace(self, source, target) -> None:
        self._check()
        inode = self._inode(source)
        self._parent_exists(_norm(target))
        del self.state.names[_norm(source)]
        self.state.names[_norm(target)] = inode

    def unlink(self, path, missing_ok: bool = False) -> None:
        self._check()
        if self.state.names.pop(_norm(path), None) is None and not missing_ok:
            raise FileNotFoundError(2, "No such file (simulated disk)", str(path))
