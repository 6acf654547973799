"""The one disk interface of the roles' stores (journal segments, storage log and checkpoints).

A store never calls `open`, `os.fsync` or `os.replace` itself: it asks a `Disk`. Two kinds
exist:

* `RealDisk` (here): the operating system's files, every call a plain syscall or two. What a
  node process uses; behaviour and cost are those of the code before this interface.
* `tools.sim.disk.SimDisk`: files in memory with the crash semantics of a real disk
  (unsynced data and directory entries lost on a crash, the last unsynced write possibly torn),
  used by the deterministic simulation.

The calls block. A node's shell runs them off its event loop with `runtime.offload`
(a worker thread for a real disk, inline in virtual time for a simulated one).

Durability is explicit, as on a real file system: appending, `write` and `truncate` change
the file's contents; only `fsync(path)` makes them survive a crash; a created, renamed or
removed name survives a crash only after `fsync_dir` of its directory.
"""
from __future__ import annotations

import os
import pathlib
from typing import Protocol, Union

PathLike = Union[str, pathlib.Path]


class AppendFile(Protocol):
    """A file open for appending (a journal segment, the storage log's current file, a checkpoint being written)."""

    def write(self, data: bytes) -> None: ...
    def sync(self) -> None: ...
    def tell(self) -> int: ...
    def close(self) -> None: ...


class ReadFile(Protocol):
    """A file open for reading: its contents stay readable even if the name is removed meanwhile."""

    size: int
    def read(self, length: int) -> bytes: ...
    def close(self) -> None: ...


class Disk(Protocol):
    def mkdir(self, path: PathLike) -> None: ...
    def listdir(self, path: PathLike) -> list[str]: ...
    def exists(self, path: PathLike) -> bool: ...
    def size(self, path: PathLike) -> int: ...
    def read(self, path: PathLike) -> bytes: ...
    def pread(self, path: PathLike, offset: int, length: int) -> bytes: ...
    def write(self, path: PathLike, data: bytes) -> None: ...
    def open_append(self, path: PathLike) -> AppendFile: ...
    def open_read(self, path: PathLike) -> ReadFile: ...
    def truncate(self, path: PathLike, size: int) -> None: ...
    def fsync(self, path: PathLike) -> None: ...
    def fsync_dir(self, path: PathLike) -> None: ...
    def replace(self, source: PathLike, target: PathLike) -> None: ...
    def unlink(self, path: PathLike, missing_ok: bool = False) -> None: ...


class _RealAppendFile:
    def __init__(self, path: PathLike):
        self._file = open(path, "ab")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class _RealReadFile:
    def __init__(self, path: PathLike):
        self._file = open(path, "rb")
        self.size = os.fstat(self._file.fileno()).st_size

    def read(self, length: int) -> bytes:
        return self._file.read(length)

    def close(self) -> None:
        self._file.close()


class RealDisk:
    """The operating system's files."""

    def mkdir(self, path: PathLike) -> None:
        pathlib.Path(path).mkdir(parents=True, exist_ok=True)

    def listdir(self, path: PathLike) -> list[str]:
        return sorted(os.listdir(path))

    def exists(self, path: PathLike) -> bool:
        return os.path.exists(path)

    def size(self, path: PathLike) -> int:
        return os.stat(path).st_size

    def read(self, path: PathLike) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def pread(self, path: PathLike, offset: int, length: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def write(self, path: PathLike, data: bytes) -> None:
        """Create or replace the file's contents (not durable until fsync)."""
        with open(path, "wb") as f:
            f.write(data)

    def open_append(self, path: PathLike) -> AppendFile:
        return _RealAppendFile(path)

    def open_read(self, path: PathLike) -> ReadFile:
        return _RealReadFile(path)

    def truncate(self, path: PathLike, size: int) -> None:
        os.truncate(path, size)

    def fsync(self, path: PathLike) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fsync_dir(self, path: PathLike) -> None:
        self.fsync(path)

    def replace(self, source: PathLike, target: PathLike) -> None:
        os.replace(source, target)

    def unlink(self, path: PathLike, missing_ok: bool = False) -> None:
        pathlib.Path(path).unlink(missing_ok=missing_ok)


REAL = RealDisk()
