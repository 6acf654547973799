"""A storage node's disk: the segmented local log and the checkpoint files.

Local log. Files `<node data dir>/log-<first index, 20 digits>.seg`, each a sequence of
framed records holding strictly consecutive entry indexes, the files one after the other:

    length (4 bytes, big endian) | crc32 of payload (4 bytes) | payload (a serialized Entry)

`append` writes a whole batch with one write and one fsync (a batch costs one fsync
however many entries it has); the shell acknowledges nothing (SCL, reads) about an entry
before `append` returns. `roll()` makes the next append start a new file, which is how the
log gets file boundaries to drop at: the shell rolls at every checkpoint (and a file that reaches
limits.STORAGE_LOG_FILE_BYTES_MAX rolls by itself: a file with a successor is never written again,
which is what lets a clone hard-link it), and
`drop_through(index)` deletes, oldest first, the files whose entries are all <= index.
`reset()` deletes every file (a checkpoint fetched from a peer replaced the whole state).
The calls block: the shell runs them off its event loop (runtime.offload). One lock
serializes the writers; `read` only takes the lock to see which records exist, then preads
exactly those records (one pread per file), so a file deleted meanwhile just ends the read
early.

Every file operation goes through a `quorumdb.disk.Disk` (the operating system's files in a
node process, a simulated disk in the deterministic simulation); the stores take the current
runtime's disk when they are built.

`open` scans every file and checks every frame. A torn last record (a crash during a
write: short header, short payload or wrong crc) and anything after it, including later
files, is cut off and the cut fsynced: the lost entries were never reported durable, and
the journal or a peer supplies them again. A file whose first record does not follow the
previous file is a gap: it and every later file are dropped the same way. A log written
before the log was segmented (`segment.log`) is renamed into the new scheme at open.

Checkpoints. Files `<node data dir>/checkpoint-<applied index, 20 digits>.ckpt` in the
format of storage_node/checkpoint.py, written to a `.tmp` file, fsynced, renamed and the
directory fsynced, so a name only ever holds a complete file; `load_newest` still
verifies the sha256 and falls back to the next older checkpoint when one is corrupt.
A checkpoint received from a peer is written the same way and verified before its rename.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import struct
import threading
import zlib
from typing import Iterable, Sequence

from quorumdb import limits, runtime
from quorumdb.disk import AppendFile, Disk
from quorumdb.pb import common_pb2
from storage_node import checkpoint

log = logging.getLogger(__name__)

LEGACY_LOG_FILE = "segment.log"
LOG_PREFIX = "log-"
LOG_SUFFIX = ".seg"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_SUFFIX = ".ckpt"
TMP_SUFFIX = ".tmp"
_FRAME = struct.Struct(">II")  # payload length, crc32(payload)
_LOG_NAME = re.compile(r"^log-(\d{20})\.seg$")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d{20})\.ckpt$")


def log_file_name(first_index: int) -> str:
    return f"{LOG_PREFIX}{first_index:020d}{LOG_SUFFIX}"


def checkpoint_file_name(index: int) -> str:
    return f"{CHECKPOINT_PREFIX}{index:020d}{CHECKPOINT_SUFFIX}"


@dataclasses.dataclass
class _LogFile:
    path: pathlib.Path
    first_index: int
    offsets: list[int]  # offset of the record for first_index + i
    end: int            # bytes written (offset after the last record)

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1


class SegmentLog:
    def __init__(self, directory: pathlib.Path | str, disk: Disk | None = None):
        self.directory = pathlib.Path(directory)
        self.disk = disk if disk is not None else runtime.disk()
        self.truncated_bytes = 0  # bytes cut off as a torn tail (or gap) by the last open()
        self._files: list[_LogFile] = []
        self._lock = threading.Lock()
        self._append_file: AppendFile | None = None  # open on self._files[-1] when not None
        self._roll_pending = False

    # --- views -----------------------------------------------------------------------
    @property
    def first_index(self) -> int:
        """Index of the first record (0 while empty)."""
        files = self._files
        return files[0].first_index if files else 0

    @property
    def last_index(self) -> int:
        """Index of the last record (0 while empty)."""
        files = self._files
        return files[-1].last_index if files else 0

    @property
    def entry_count(self) -> int:
        return sum(len(f.offsets) for f in self._files)

    @property
    def size_bytes(self) -> int:
        return sum(f.end for f in self._files)

    @property
    def file_count(self) -> int:
        return len(self._files)

    # --- lifecycle ---------------------------------------------------------------------
    def open(self) -> int:
        """Scan the files, cut a torn tail, get ready to append. Returns the number of records."""
        disk = self.disk
        disk.mkdir(self.directory)
        self._adopt_legacy_log()
        self.truncated_bytes = 0
        self._files = []
        paths = [self.directory / name for name in disk.listdir(self.directory) if _LOG_NAME.match(name)]
        cut = False
        for path in paths:
            if cut:
                self.truncated_bytes += disk.size(path)
                log.warning("local log: dropping %s, which follows a cut", path.name)
                disk.unlink(path)
                continue
            log_file, cut = self._scan(path)
            if log_file is None:
                disk.unlink(path)
            else:
                self._files.append(log_file)
        disk.fsync_dir(self.directory)
        return self.entry_count

    def _scan(self, path: pathlib.Path) -> tuple[_LogFile | None, bool]:
        """(the file's records, True if it was cut); None when it holds no usable record."""
        named_first = int(_LOG_NAME.match(path.name).group(1))
        expected = self.last_index + 1 if self._files else named_first
        offsets: list[int] = []
        # The whole file at once: every frame is checked anyway, and a file is bounded (about
        # STORAGE_LOG_FILE_BYTES_MAX plus one batch).
        data = self.disk.read(path)
        size = len(data)
        offset = 0
        while offset < size:
            entry, next_offset = _parse_record(data, offset)
            if entry is None or entry.index != expected + len(offsets) or named_first != expected:
                break
            offsets.append(offset)
            offset = next_offset
        cut = offset < size
        if cut:
            log.warning("local log %s: cutting %d bytes at offset %d (torn, corrupt or not following index %d)",
                        path.name, size - offset, offset, expected + len(offsets) - 1)
            self.truncated_bytes += size - offset
            self.disk.truncate(path, offset)
            self.disk.fsync(path)
        if not offsets:
            return None, cut
        return _LogFile(path, named_first, offsets, offset), cut

    def _adopt_legacy_log(self) -> None:
        disk = self.disk
        legacy = self.directory / LEGACY_LOG_FILE
        if not disk.exists(legacy):
            return
        entry = _read_first_record(disk, legacy)
        if entry is None:
            disk.unlink(legacy)
        else:
            disk.replace(legacy, self.directory / log_file_name(entry.index))
            log.info("local log: adopted %s as %s", LEGACY_LOG_FILE, log_file_name(entry.index))
        disk.fsync_dir(self.directory)

    def close(self) -> None:
        with self._lock:
            self._close_append_file()

    def _close_append_file(self) -> None:
        if self._append_file is not None:
            self._append_file.close()
            self._append_file = None

    # --- writing -------------------------------------------------------------------------
    def append(self, entries: Sequence[common_pb2.Entry]) -> None:
        """Write entries that directly follow last_index (any index when empty), then fsync once."""
        if not entries:
            return
        with self._lock:
            expected = self.last_index + 1 if self._files else entries[0].index
            new_file = (self._roll_pending or not self._files
                        or self._files[-1].end >= limits.STORAGE_LOG_FILE_BYTES_MAX)
            if new_file:
                self._close_append_file()
                path = self.directory / log_file_name(expected)
                target = _LogFile(path, expected, [], 0)
                self._append_file = self.disk.open_append(path)
            else:
                target = self._files[-1]
                if self._append_file is None:
                    self._append_file = self.disk.open_append(target.path)
            frames = []
            offsets = []
            offset = target.end
            for entry in entries:
                assert entry.index == expected, f"log append {entry.index} does not follow {expected - 1}"
                payload = entry.SerializeToString()
                frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
                frames.append(frame)
                offsets.append(offset)
                offset += len(frame)
                expected += 1
            self._append_file.write(b"".join(frames))
            self._append_file.sync()
            if new_file:
                self.disk.fsync_dir(self.directory)
                self._files.append(target)
                self._roll_pending = False
            target.offsets.extend(offsets)
            target.end = offset

    def roll(self) -> None:
        """The next append starts a new file (so everything before can later be dropped whole).

        Takes no lock, so the event loop may call it directly: an append already running
        finishes in the current file (or has just started a new one, which serves as well).
        """
        if self._files:
            self._roll_pending = True

    def drop_through(self, index: int) -> int:
        """Delete, oldest first, every file whose entries are all <= index. Returns how many."""
        dropped = 0
        with self._lock:
            while self._files and self._files[0].last_index <= index:
                if len(self._files) == 1:
                    self._close_append_file()
                    self._roll_pending = False
                self.disk.unlink(self._files.pop(0).path)
                dropped += 1
            if dropped:
                self.disk.fsync_dir(self.directory)
        return dropped

    def reset(self) -> None:
        """Delete every file (newest first, so a crash leaves a prefix); the log is empty."""
        with self._lock:
            self._close_append_file()
            self._roll_pending = False
            for log_file in reversed(self._files):
                self.disk.unlink(log_file.path)
            self._files = []
            self.disk.fsync_dir(self.directory)

    # --- reading -------------------------------------------------------------------------
    def read(self, from_index: int, max_entries: int, bytes_max: int) -> list[common_pb2.Entry]:
        """Entries from from_index on: at most max_entries and about bytes_max (always at least one)."""
        assert max_entries > 0, max_entries
        # (file, offsets of the records wanted, end of the last one): the records are fixed here,
        # under the lock, by count and by size (each record's size is the gap to the next offset),
        # so each file costs one pread of exactly the bytes returned.
        plan: list[tuple[pathlib.Path, list[int], int]] = []
        with self._lock:  # a consistent view of what is written
            index = max(from_index, self.first_index)
            planned = 0
            planned_bytes = 0
            for log_file in self._files:
                if planned == max_entries or (planned and planned_bytes >= bytes_max):
                    break
                if log_file.last_index < index:
                    continue
                offsets = log_file.offsets
                position = index - log_file.first_index
                taken = position
                while taken < len(offsets) and planned < max_entries and (planned == 0 or planned_bytes < bytes_max):
                    record_end = offsets[taken + 1] if taken + 1 < len(offsets) else log_file.end
                    planned_bytes += record_end - offsets[taken]
                    planned += 1
                    taken += 1
                end = offsets[taken] if taken < len(offsets) else log_file.end
                plan.append((log_file.path, offsets[position:taken], end))
                index = log_file.first_index + taken
        entries: list[common_pb2.Entry] = []
        for path, offsets, end in plan:
            start = offsets[0]
            try:
                data = self.disk.pread(path, start, end - start)
            except FileNotFoundError:
                break  # dropped behind a checkpoint meanwhile: what was read so far is still consecutive
            for offset in offsets:
                entry, _ = _parse_record(data, offset - start)
                assert entry is not None, f"local log {path}: record at {offset} became unreadable"
                entries.append(entry)
        return entries


def _parse_record(data: bytes, offset: int) -> tuple[common_pb2.Entry | None, int]:
    """The entry framed at data[offset:] and the next offset; (None, offset) for a torn or corrupt record."""
    size = len(data)
    if offset + _FRAME.size > size:
        return None, offset
    length, crc = _FRAME.unpack_from(data, offset)
    payload_at = offset + _FRAME.size
    if payload_at + length > size:
        return None, offset
    payload = data[payload_at:payload_at + length]
    if zlib.crc32(payload) != crc:
        return None, offset
    try:
        return common_pb2.Entry.FromString(payload), payload_at + length
    except Exception:  # noqa: BLE001 - a crc-valid record that does not parse is corruption
        return None, offset


def _read_first_record(disk: Disk, path: pathlib.Path) -> common_pb2.Entry | None:
    """The first entry of a file (None if torn or corrupt), reading only that record."""
    header = disk.pread(path, 0, _FRAME.size)
    if len(header) < _FRAME.size:
        return None
    length, _ = _FRAME.unpack(header)
    entry, _ = _parse_record(header + disk.pread(path, _FRAME.size, length), 0)
    return entry


# --- checkpoints -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    index: int
    header: checkpoint.CheckpointHeader
    records: list[checkpoint.Record]
    size_bytes: int


class CheckpointStore:
    def __init__(self, directory: pathlib.Path | str, disk: Disk | None = None):
        self.directory = pathlib.Path(directory)
        self.disk = disk if disk is not None else runtime.disk()

    def open(self) -> list[int]:
        """Remove leftovers of interrupted writes; return the checkpoint indexes present."""
        self.disk.mkdir(self.directory)
        for name in self.disk.listdir(self.directory):
            if name.startswith(CHECKPOINT_PREFIX) and name.endswith(CHECKPOINT_SUFFIX + TMP_SUFFIX):
                log.info("removing unfinished checkpoint %s", name)
                self.disk.unlink(self.directory / name)
        self.disk.fsync_dir(self.directory)
        return self.indexes()

    def indexes(self) -> list[int]:
        found = []
        for name in self.disk.listdir(self.directory):
            match = _CHECKPOINT_NAME.match(name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def path(self, index: int) -> pathlib.Path:
        return self.directory / checkpoint_file_name(index)

    def write(self, index: int, chunks: Iterable[bytes]) -> int:
        """Write a checkpoint durably under its final name; returns its size in bytes."""
        writer = self.receiver(index)
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.publish(verify=False)
        except BaseException:
            writer.abort()
            raise

    def receiver(self, index: int) -> "CheckpointWriter":
        return CheckpointWriter(self, index)

    def load_newest(self) -> LoadedCheckpoint | None:
        """The newest checkpoint that verifies; corrupt ones are logged and skipped (not deleted)."""
        for index in reversed(self.indexes()):
            loaded = self.load(index)
            if loaded is not None:
                return loaded
        return None

    def load(self, index: int) -> LoadedCheckpoint | None:
        path = self.path(index)
        try:
            data = self.disk.read(path)
            header, records = checkpoint.decode(data)
        except (OSError, checkpoint.CorruptCheckpoint) as error:
            log.warning("checkpoint %s is unusable (%s); trying an older one", path.name, error)
            return None
        if header.applied_index != index:
            log.warning("checkpoint %s holds applied index %d; ignored", path.name, header.applied_index)
            return None
        return LoadedCheckpoint(index, header, records, len(data))

    def delete_below(self, index: int) -> int:
        """Delete checkpoints older than index. Returns how many."""
        older = [i for i in self.indexes() if i < index]
        for old in older:
            self.disk.unlink(self.path(old))
        if older:
            self.disk.fsync_dir(self.directory)
        return len(older)


class CheckpointWriter:
    """Writes one checkpoint into a .tmp file; publish() fsyncs (verifies) and renames it."""

    def __init__(self, store: CheckpointStore, index: int):
        self.store = store
        self.index = index
        self.tmp_path = store.path(index).with_name(checkpoint_file_name(index) + TMP_SUFFIX)
        disk = store.disk
        disk.write(self.tmp_path, b"")  # created empty, or a leftover emptied (as opening with "wb")
        self._file: AppendFile | None = disk.open_append(self.tmp_path)
        self.size_bytes = 0

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._file.write(chunk)
        self.size_bytes += len(chunk)

    def publish(self, verify: bool) -> int:
        """fsync, optionally verify the whole file (a peer's bytes), rename, fsync the directory."""
        assert self._file is not None
        disk = self.store.disk
        self._file.sync()
        self._file.close()
        self._file = None
        if verify:
            header = checkpoint.verify(disk.read(self.tmp_path))
            if header.applied_index != self.index:
                raise checkpoint.CorruptCheckpoint(
                    f"received checkpoint holds applied index {header.applied_index}, announced {self.index}")
        disk.replace(self.tmp_path, self.store.path(self.index))
        disk.fsync_dir(self.store.directory)
        return self.size_bytes

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.store.disk.unlink(self.tmp_path, missing_ok=True)


