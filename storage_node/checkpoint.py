"""Checkpoint file format: the materialized MVCC state of a segment at one applied index (pure, no I/O).

A checkpoint is an immutable byte string:

    header   MAGIC (8) | applied_index u64 | last_applied_ts u64 | closed_ts u64 | gc_horizon_ts u64
             | window_start_ts u64
    records  per key, ascending:  key_length u32 | key | version_count u32 |
                                   per version: commit_ts u64 | value_length u32 | value
                                   (value_length TOMBSTONE = a delete, no value bytes follow)
    trailer  TRAILER_MAGIC (8) | key_count u64 | body_length u64 | sha256(header + records) (32)

All integers big endian. The trailer comes last so the file can be produced in one pass
(`CheckpointEncoder` yields bounded chunks while hashing) and a file cut short anywhere
is recognised as incomplete: `decode` checks both magics, the body length and the hash
before it trusts a single byte.

Versions: QDBCKP02 (written) adds window_start_ts, the backtrack window's start, which is a
function of the applied entries and must survive a restart (storage_node/core.py). QDBCKP01
files (no window_start_ts) are still read: their window starts at their GC horizon. The same bytes travel between storage peers (the
ReadCheckpoint stream), so a receiver verifies exactly what the sender wrote.
"""
from __future__ import annotations

import dataclasses
import hashlib
import struct
from typing import Iterable, Iterator

MAGIC = b"QDBCKP02"
MAGIC_V1 = b"QDBCKP01"
TRAILER_MAGIC = b"QDBCKEND"
TOMBSTONE = 0xFFFF_FFFF
_HEADER = struct.Struct(">8sQQQQQ")
_HEADER_V1 = struct.Struct(">8sQQQQ")
_TRAILER = struct.Struct(">8sQQ32s")
_U32 = struct.Struct(">I")
_VERSION = struct.Struct(">QI")

TRAILER_BYTES = _TRAILER.size


class CorruptCheckpoint(ValueError):
    """The bytes are not a complete, intact checkpoint."""


@dataclasses.dataclass(frozen=True)
class CheckpointHeader:
    applied_index: int
    last_applied_ts: int
    closed_ts: int
    gc_horizon_ts: int
    window_start_ts: int | None = None  # None: a QDBCKP01 file (the window starts at gc_horizon_ts)


Record = tuple[bytes, list[int], list["bytes | None"]]


def encode(header: CheckpointHeader, records: Iterable[Record], chunk_bytes: int) -> Iterator[bytes]:
    """The checkpoint's bytes in chunks of about chunk_bytes (the last one holds the trailer)."""
    assert chunk_bytes > 0
    digest = hashlib.sha256()
    body_length = 0
    key_count = 0
    parts: list[bytes] = []
    pending = 0

    def take(data: bytes) -> None:
        nonlocal body_length, pending
        digest.update(data)
        body_length += len(data)
        parts.append(data)
        pending += len(data)

    window_start_ts = header.gc_horizon_ts if header.window_start_ts is None else header.window_start_ts
    take(_HEADER.pack(MAGIC, header.applied_index, header.last_applied_ts, header.closed_ts, header.gc_horizon_ts,
                      window_start_ts))
    for key, commit_ts_list, values in records:
        assert len(commit_ts_list) == len(values) > 0, key
        pieces = [_U32.pack(len(key)), key, _U32.pack(len(values))]
        for commit_ts, value in zip(commit_ts_list, values):
            if value is None:
                pieces.append(_VERSION.pack(commit_ts, TOMBSTONE))
            else:
                assert len(value) < TOMBSTONE
                pieces.append(_VERSION.pack(commit_ts, len(value)))
                pieces.append(value)
        take(b"".join(pieces))
        key_count += 1
        if pending >= chunk_bytes:
            yield b"".join(parts)
            parts.clear()
            pending = 0
    parts.append(_TRAILER.pack(TRAILER_MAGIC, key_count, body_length, digest.digest()))
    yield b"".join(parts)


def verify(data: bytes | memoryview) -> CheckpointHeader:
    """Check magics, length and hash; return the header. Raises CorruptCheckpoint."""
    if len(data) < _HEADER_V1.size + _TRAILER.size:
        raise CorruptCheckpoint(f"{len(data)} bytes: shorter than a header and a trailer")
    trailer_magic, _key_count, body_length, sha = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if trailer_magic != TRAILER_MAGIC:
        raise CorruptCheckpoint("no trailer: the file is incomplete")
    if body_length != len(data) - _TRAILER.size:
        raise CorruptCheckpoint(f"body is {len(data) - _TRAILER.size} bytes, the trailer says {body_length}")
    if hashlib.sha256(memoryview(data)[:body_length]).digest() != sha:
        raise CorruptCheckpoint("sha256 mismatch")
    header, _ = _read_header(data, body_length)
    return header


def _read_header(data: bytes | memoryview, body_length: int) -> tuple[CheckpointHeader, int]:
    """The header and where the records start."""
    magic = bytes(data[:8])
    if magic == MAGIC and body_length >= _HEADER.size:
        _, applied_index, last_applied_ts, closed_ts, gc_horizon_ts, window_start_ts = _HEADER.unpack_from(data, 0)
        return CheckpointHeader(applied_index, last_applied_ts, closed_ts, gc_horizon_ts, window_start_ts), _HEADER.size
    if magic == MAGIC_V1:
        _, applied_index, last_applied_ts, closed_ts, gc_horizon_ts = _HEADER_V1.unpack_from(data, 0)
        return CheckpointHeader(applied_index, last_applied_ts, closed_ts, gc_horizon_ts), _HEADER_V1.size
    raise CorruptCheckpoint(f"bad magic {magic!r}")


def decode(data: bytes) -> tuple[CheckpointHeader, list[Record]]:
    """Verify, then parse every record. Raises CorruptCheckpoint."""
    verify(data)
    view = memoryview(data)
    end = len(data) - _TRAILER.size
    header, offset = _read_header(data, end)
    expected_keys = _TRAILER.unpack_from(data, end)[1]
    records: list[Record] = []
    try:
        while offset < end:
            (key_length,) = _U32.unpack_from(view, offset)
            offset += 4
            key = bytes(view[offset:offset + key_length])
            offset += key_length
            (count,) = _U32.unpack_from(view, offset)
            offset += 4
            commit_ts_list: list[int] = []
            values: list[bytes | None] = []
            for _ in range(count):
                commit_ts, value_length = _VERSION.unpack_from(view, offset)
                offset += _VERSION.size
                if value_length == TOMBSTONE:
                    values.append(None)
                else:
                    values.append(bytes(view[offset:offset + value_length]))
                    offset += value_length
                commit_ts_list.append(commit_ts)
            records.append((key, commit_ts_list, values))
    except struct.error as error:
        raise CorruptCheckpoint(f"record at byte {offset} runs past the end: {error}") from None
    if offset != end or len(records) != expected_keys:
        raise CorruptCheckpoint(f"{len(records)} keys ending at byte {offset}; trailer says {expected_keys} keys")
    return header, records
