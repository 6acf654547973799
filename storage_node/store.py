"""The local segment log: journal entries a storage node holds durably, on disk.

File `<node data dir>/segment.log` is a sequence of framed records:

    length (4 bytes, big endian) | crc32 of payload (4 bytes) | payload (a serialized Entry)

Records hold strictly consecutive entry indexes. `append` writes a whole batch with
one write and one os.fsync, so a batch costs one fsync however many entries it has;
the shell acknowledges nothing (SCL, reads) about an entry before `append` returns.
The calls are blocking: the shell runs them in a thread (asyncio.to_thread). One
lock serializes appends; reads use os.pread on their own descriptor and only touch
offsets of records already written, so they may run at the same time.

`open` scans the file, checks every frame and keeps the offset of each record. A
torn last record (a crash during a write: short header, short payload or wrong crc)
and anything after it is cut off and the truncation fsynced; the lost entries were
never reported durable by this node, and the journal or a peer supplies them again.

Later: checkpoints (an immutable file of materialized versions) so the log before a
checkpoint can be dropped and restart does not replay the whole history. Until then
the log grows with the journal and always starts at the node's first entry.
"""
from __future__ import annotations

import logging
import os
import pathlib
import struct
import threading
import zlib
from typing import Sequence

from quorumdb.pb import common_pb2

log = logging.getLogger(__name__)

LOG_FILE = "segment.log"
_FRAME = struct.Struct(">II")  # payload length, crc32(payload)


class SegmentLog:
    def __init__(self, directory: pathlib.Path | str):
        self.path = pathlib.Path(directory) / LOG_FILE
        self.first_index = 0  # index of the first record (0 while empty)
        self.last_index = 0   # index of the last record (0 while empty)
        self.truncated_bytes = 0  # bytes cut off as a torn tail by the last open()
        self._offsets: list[int] = []  # offset of the record for first_index + i
        self._end = 0
        self._lock = threading.Lock()
        self._append_file = None
        self._read_fd = -1

    # --- lifecycle ---------------------------------------------------------------
    def open(self) -> int:
        """Scan the log, cut a torn tail, get ready to append. Returns the number of records."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._append_file = open(self.path, "ab")
        if created:
            _fsync_dir(self.path.parent)
        self._read_fd = os.open(self.path, os.O_RDONLY)
        size = os.fstat(self._read_fd).st_size
        offset = 0
        while offset < size:
            entry, next_offset = self._read_record(offset, size)
            if entry is None:
                break
            self._remember(entry.index, offset)
            offset = next_offset
        if offset < size:
            self.truncated_bytes = size - offset
            log.warning("segment log %s: cutting torn tail of %d bytes at offset %d", self.path, size - offset, offset)
            os.truncate(self.path, offset)
            os.fsync(self._append_file.fileno())
        self._end = offset
        return len(self._offsets)

    def close(self) -> None:
        if self._append_file is not None:
            self._append_file.close()
            self._append_file = None
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    # --- writing -------------------------------------------------------------------
    def append(self, entries: Sequence[common_pb2.Entry]) -> None:
        """Write entries that directly follow last_index, then fsync once."""
        if not entries:
            return
        with self._lock:
            assert self._append_file is not None, "open() first"
            expected = self.last_index + 1 if self._offsets else entries[0].index
            frames = []
            offsets = []
            offset = self._end
            for entry in entries:
                assert entry.index == expected, f"log append {entry.index} does not follow {expected - 1}"
                payload = entry.SerializeToString()
                frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
                frames.append(frame)
                offsets.append(offset)
                offset += len(frame)
                expected += 1
            self._append_file.write(b"".join(frames))
            self._append_file.flush()
            os.fsync(self._append_file.fileno())
            for entry, entry_offset in zip(entries, offsets):
                self._remember(entry.index, entry_offset)
            self._end = offset

    def _remember(self, index: int, offset: int) -> None:
        if not self._offsets:
            self.first_index = index
        else:
            assert index == self.last_index + 1, f"segment log record {index} follows {self.last_index}"
        self._offsets.append(offset)
        self.last_index = index

    # --- reading -------------------------------------------------------------------
    def read(self, from_index: int, max_entries: int, bytes_max: int) -> list[common_pb2.Entry]:
        """Entries from from_index on: at most max_entries and about bytes_max (always at least one)."""
        assert max_entries > 0, max_entries
        with self._lock:  # a consistent view of what is written: (record count, end offset)
            count, written_end, first_index = len(self._offsets), self._end, self.first_index
        if count == 0 or from_index >= first_index + count:
            return []
        position = max(from_index, first_index) - first_index
        stop = min(count, position + max_entries)
        end = self._offsets[stop] if stop < count else written_end
        start = self._offsets[position]
        entries = []
        offset = start
        while offset < end:
            entry, offset = self._read_record(offset, end)
            assert entry is not None, f"segment log {self.path}: record at {offset} became unreadable"
            entries.append(entry)
            if offset - start >= bytes_max:
                break
        return entries

    def _read_record(self, offset: int, size: int) -> tuple[common_pb2.Entry | None, int]:
        """The entry at offset and the next offset; (None, offset) for a torn or corrupt record."""
        if offset + _FRAME.size > size:
            return None, offset
        length, crc = _FRAME.unpack(os.pread(self._read_fd, _FRAME.size, offset))
        payload_at = offset + _FRAME.size
        if payload_at + length > size:
            return None, offset
        payload = os.pread(self._read_fd, length, payload_at)
        if len(payload) != length or zlib.crc32(payload) != crc:
            return None, offset
        return common_pb2.Entry.FromString(payload), payload_at + length


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
