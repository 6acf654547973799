"""Disk durability helpers shared by every store (journal, storage, tokens, network rules).

A new, renamed or deleted file is durable only once its directory entry is: after
os.replace / os.link / unlink of something that must survive a crash, fsync the directory.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
from typing import Iterator


def fsync_dir(directory: pathlib.Path | str) -> None:
    """fsync a directory, making the creation, renaming or removal of its entries durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: pathlib.Path, data: bytes) -> None:
    """Make `data` the file's whole contents, durably: a temporary file, fsync, rename, fsync the
    directory. A reader sees the old contents or the new, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def locked(lock_path: pathlib.Path) -> Iterator[None]:
    """An exclusive flock on lock_path (created with its directory) for the block: tools that
    read, change and rewrite one small file (network rules, WAN rules, the control state)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
