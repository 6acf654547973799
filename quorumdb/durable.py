"""Disk durability helpers shared by every store (journal, storage, tokens, network rules).

A new, renamed or deleted file is durable only once its directory entry is: after
os.replace / os.link / unlink of something that must survive a crash, fsync the directory.
"""
from __future__ import annotations

import os
import pathlib


def fsync_dir(directory: pathlib.Path | str) -> None:
    """fsync a directory, making the creation, renaming or removal of its entries durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
