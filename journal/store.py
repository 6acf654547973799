"""Journal replica disk store: segment files of framed entries plus an atomic meta file.

Layout of `<node data dir>/journal/`:
  meta.json              promised_epoch, first_index, base_epoch, commit_index; replaced
                         atomically (write tmp, fsync, rename, fsync dir).
  seg-<k>.log            the entries with (index - 1) // segment_entries == k, as records
                         `u32 length | u32 crc32(payload) | payload (serialized Entry)`.

Durability: `append` writes and fsyncs before returning (one fsync covers a whole
Append). Restart replays the segments in order and cuts a torn or corrupt record (and
everything after it): only an unacknowledged tail can be torn, because nothing is
acknowledged before its fsync returns. Suffix truncation cuts the file holding the
first dropped entry and deletes later segments (later files first, so every crash point
leaves a prefix of the old log). Prefix truncation writes meta (new first_index) first,
then deletes whole segment files; leftovers below first_index are deleted at open.
A reset deletes every segment before writing the new meta.

Every file operation goes through a `Disk` (quorumdb/disk.py: real files in a node, simulated
ones in the deterministic simulation). All methods block: call them off the event loop
(`runtime.offload`).
"""
from __future__ import annotations

import json
import logging
import pathlib
import struct
import zlib

from journal.core import Meta
from quorumdb import limits, runtime
from quorumdb.disk import Disk
from quorumdb.pb import common_pb2

log = logging.getLogger("journal.store")

HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
META_FILE = "meta.json"
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".log"


class CorruptJournal(RuntimeError):
    """The files contradict each other in a way no crash can produce; a human must look."""


def encode_record(entry: common_pb2.Entry) -> bytes:
    payload = entry.SerializeToString()
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class JournalStore:
    def __init__(self, directory: pathlib.Path, segment_entries: int = limits.JOURNAL_SEGMENT_ENTRIES,
                 disk: Disk | None = None):
        assert segment_entries > 0
        self.directory = pathlib.Path(directory)
        self.disk = disk if disk is not None else runtime.disk()
        self.segment_entries = segment_entries
        # For each held index from first_index: (segment number, byte offset of its record).
        self._first_index = 1
        self._positions: list[tuple[int, int]] = []

    # --- open / replay ------------------------------------------------------------
    def open(self) -> tuple[Meta, list[common_pb2.Entry]]:
        """Create the directory if needed; return the meta and the entries since first_index."""
        self.disk.mkdir(self.directory)
        meta = self._read_meta()
        self._first_index = meta.first_index
        self._positions = []
        entries: list[common_pb2.Entry] = []
        torn = False
        for segment in self._segments():
            if torn or (segment + 1) * self.segment_entries < meta.first_index:
                self.disk.unlink(self._segment_path(segment))  # below first_index, or after a torn record
                continue
            torn = self._replay_segment(segment, meta.first_index, entries)
        self.disk.fsync_dir(self.directory)
        return meta, entries

    def _replay_segment(self, segment: int, first_index: int, entries: list[common_pb2.Entry]) -> bool:
        """Append the segment's entries >= first_index; cut a torn tail. Returns True if torn."""
        path = self._segment_path(segment)
        data = self.disk.read(path)
        offset = 0
        while offset < len(data):
            entry = _decode_at(data, offset)
            if entry is None:
                log.warning("%s: torn or corrupt record at byte %d; cutting the log there", path, offset)
                self.disk.truncate(path, offset)
                self.disk.fsync(path)
                return True
            if entry.index >= first_index:
                expected = first_index + len(entries)
                if entry.index != expected or (entry.index - 1) // self.segment_entries != segment:
                    raise CorruptJournal(f"{path}: entry {entry.index} where {expected} was expected")
                entries.append(entry)
                self._positions.append((segment, offset))
            offset += HEADER.size + HEADER.unpack_from(data, offset)[0]
        return False

    # --- meta ---------------------------------------------------------------------
    def _read_meta(self) -> Meta:
        path = self.directory / META_FILE
        if not self.disk.exists(path):
            return Meta()
        raw = json.loads(self.disk.read(path))
        return Meta(int(raw["promised_epoch"]), int(raw["first_index"]), int(raw["base_epoch"]), int(raw["commit_index"]))

    def write_meta(self, meta: Meta) -> None:
        path = self.directory / META_FILE
        tmp = self.directory / (META_FILE + ".tmp")
        body = json.dumps({
            "promised_epoch": meta.promised_epoch,
            "first_index": meta.first_index,
            "base_epoch": meta.base_epoch,
            "commit_index": meta.commit_index,
        }).encode()
        self.disk.write(tmp, body)
        self.disk.fsync(tmp)
        self.disk.replace(tmp, path)
        self.disk.fsync_dir(self.directory)

    # --- append / truncate --------------------------------------------------------
    @property
    def last_index(self) -> int:
        return self._first_index + len(self._positions) - 1

    def append(self, entries: list[common_pb2.Entry]) -> None:
        """Write entries after last_index and fsync every touched file."""
        if not entries:
            return
        by_segment: dict[int, list[common_pb2.Entry]] = {}
        for position, entry in enumerate(entries):
            assert entry.index == self.last_index + 1 + position, "appended entries must be consecutive"
            by_segment.setdefault((entry.index - 1) // self.segment_entries, []).append(entry)
        new_file = False
        for segment, segment_entries in by_segment.items():
            path = self._segment_path(segment)
            new_file = new_file or not self.disk.exists(path)
            records = [encode_record(entry) for entry in segment_entries]
            file = self.disk.open_append(path)  # one open, write and fsync, as a plain file would take
            try:
                offset = file.tell()
                file.write(b"".join(records))
                file.sync()
            finally:
                file.close()
            for record in records:
                self._positions.append((segment, offset))
                offset += len(record)
        if new_file:
            self.disk.fsync_dir(self.directory)

    def truncate_suffix(self, from_index: int) -> None:
        """Drop entries with index >= from_index."""
        assert self._first_index <= from_index <= self.last_index
        segment, offset = self._positions[from_index - self._first_index]
        for later in sorted((s for s in self._segments() if s > segment), reverse=True):
            self.disk.unlink(self._segment_path(later))
        self.disk.fsync_dir(self.directory)
        self.disk.truncate(self._segment_path(segment), offset)
        self.disk.fsync(self._segment_path(segment))
        del self._positions[from_index - self._first_index:]

    def truncate_prefix(self, meta: Meta) -> None:
        """Persist meta (its first_index is the new one), then delete segments wholly below it."""
        new_first = meta.first_index
        assert (new_first - 1) % self.segment_entries == 0, "prefix truncation removes whole segments"
        assert self._first_index < new_first <= self.last_index + 1
        self.write_meta(meta)
        for segment in self._segments():
            if (segment + 1) * self.segment_entries < new_first:
                self.disk.unlink(self._segment_path(segment))
        self.disk.fsync_dir(self.directory)
        del self._positions[:new_first - self._first_index]
        self._first_index = new_first

    def reset(self, meta: Meta) -> None:
        """Drop every entry; the log restarts empty at meta.first_index."""
        for segment in sorted(self._segments(), reverse=True):
            self.disk.unlink(self._segment_path(segment))
        self.disk.fsync_dir(self.directory)
        self.write_meta(meta)
        self._positions = []
        self._first_index = meta.first_index

    # --- files --------------------------------------------------------------------
    def _segment_path(self, segment: int) -> pathlib.Path:
        return self.directory / f"{SEGMENT_PREFIX}{segment:012d}{SEGMENT_SUFFIX}"

    def _segments(self) -> list[int]:
        numbers = []
        for name in self.disk.listdir(self.directory):
            if name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX):
                numbers.append(int(name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]))
        return sorted(numbers)


def _decode_at(data: bytes, offset: int) -> common_pb2.Entry | None:
    """The entry whose record starts at offset, or None if the record is torn or corrupt."""
    if offset + HEADER.size > len(data):
        return None
    length, crc = HEADER.unpack_from(data, offset)
    start = offset + HEADER.size
    payload = data[start:start + length]
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    entry = common_pb2.Entry()
    try:
        entry.ParseFromString(payload)
    except Exception:  # noqa: BLE001 - any parse failure of a crc-valid record is corruption
        return None
    return entry
