"""The continuous backup's objects: names, contents, and what a restore or retention needs (pure).

Storage copies write these objects (storage_node/backup.py); `quorumdb restore`, `snapshot` and
`backup status` read them (tools/dr/). Everything here is pure: it names keys, encodes and
decodes bytes, and plans from a listing; the callers do the I/O.

Objects, under the store's root (or the s3:// prefix); numbers are zero-padded to 20 digits so
key order is numeric order:

    segment/pg0/base/<index>-<ts>.ckpt
        a storage checkpoint (storage_node/checkpoint.py format, sha256 inside) of the protection
        group at applied index <index>, whose last applied entry has commit_ts <ts>.
        Index 0 is the empty genesis base of a new cluster.
    segment/pg0/log/<first>-<last>-<first ts>-<last ts>.log
        the journal entries [first, last], consecutive, framed like the local log
        (u32 length | u32 crc32 | serialized Entry), ts strictly increasing.
    segment/pg0/manifest/<uploaded index>-<restorable ts>.json
        {"format": 1, "uploaded_index", "restorable_ts", "base_index", "uploader", "written_at_ns"}:
        every entry <= uploaded_index is in base + log objects, and every commit with
        commit_ts <= restorable_ts has an index <= uploaded_index (the uploading copy's closed
        timestamp when it had applied exactly that index). The newest one is the latest
        restorable time; older ones are removed.
    cluster.toml
        the source cluster's cluster file (written once by the first uploader): a restore gives
        the new cluster the same settings (its own ports, directory and backup location).
    snapshots/<name>.json
        {"format": 1, "name", "to_ts", "index", "base", "logs", "created_at_ns"}: a named restore
        point; the keys it lists are never removed by retention.

Ranges uploaded by two copies (one took over from another that was slow or dead) may overlap;
the entries at one index are the same on every copy (they are the journal's), so a restore
takes each index once, from whichever object holds it.
"""
from __future__ import annotations

import dataclasses
import json
import re
import struct
import zlib
from typing import Iterable, Sequence

from quorumdb.pb import common_pb2

PG = "pg0"
SEGMENT_PREFIX = f"segment/{PG}/"
BASE_PREFIX = f"{SEGMENT_PREFIX}base/"
LOG_PREFIX = f"{SEGMENT_PREFIX}log/"
MANIFEST_PREFIX = f"{SEGMENT_PREFIX}manifest/"
SNAPSHOT_PREFIX = "snapshots/"
CLUSTER_CONFIG_KEY = "cluster.toml"
FORMAT = 1

_BASE = re.compile(r"^(\d{20})-(\d{20})\.ckpt$")
_LOG = re.compile(r"^(\d{20})-(\d{20})-(\d{20})-(\d{20})\.log$")
_MANIFEST = re.compile(r"^(\d{20})-(\d{20})\.json$")
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_FRAME = struct.Struct(">II")


class BackupLayoutError(ValueError):
    """Objects that do not make sense together, or a request they cannot satisfy."""


class OutsideWindow(BackupLayoutError):
    """The time asked for is not restorable from what the store holds."""


@dataclasses.dataclass(frozen=True)
class BaseObject:
    key: str
    index: int
    ts: int
    size: int = 0


@dataclasses.dataclass(frozen=True)
class LogObject:
    key: str
    first: int
    last: int
    first_ts: int
    last_ts: int
    size: int = 0


@dataclasses.dataclass(frozen=True)
class Manifest:
    uploaded_index: int
    restorable_ts: int
    base_index: int
    uploader: str
    written_at_ns: int


@dataclasses.dataclass(frozen=True)
class Snapshot:
    name: str
    to_ts: int
    index: int
    base: str
    logs: tuple[str, ...]
    created_at_ns: int


# --- keys ------------------------------------------------------------------------------------
def base_key(index: int, ts: int) -> str:
    return f"{BASE_PREFIX}{index:020d}-{ts:020d}.ckpt"


def log_key(first: int, last: int, first_ts: int, last_ts: int) -> str:
    assert 0 < first <= last and first_ts <= last_ts, (first, last, first_ts, last_ts)
    return f"{LOG_PREFIX}{first:020d}-{last:020d}-{first_ts:020d}-{last_ts:020d}.log"


def manifest_key(uploaded_index: int, restorable_ts: int) -> str:
    return f"{MANIFEST_PREFIX}{uploaded_index:020d}-{restorable_ts:020d}.json"


def check_snapshot_name(name: str) -> str:
    if not _SNAPSHOT_NAME.match(name):
        raise BackupLayoutError(f"bad snapshot name {name!r}: use letters, digits, '.', '_' and '-' "
                                "(at most 63, starting with a letter or digit)")
    return name


def snapshot_key(name: str) -> str:
    return f"{SNAPSHOT_PREFIX}{check_snapshot_name(name)}.json"


def parse_base(key: str, size: int = 0) -> BaseObject | None:
    match = _BASE.match(key[len(BASE_PREFIX):]) if key.startswith(BASE_PREFIX) else None
    return BaseObject(key, int(match.group(1)), int(match.group(2)), size) if match else None


def parse_log(key: str, size: int = 0) -> LogObject | None:
    match = _LOG.match(key[len(LOG_PREFIX):]) if key.startswith(LOG_PREFIX) else None
    if not match:
        return None
    first, last, first_ts, last_ts = (int(g) for g in match.groups())
    return LogObject(key, first, last, first_ts, last_ts, size)


def parse_manifest_key(key: str) -> tuple[int, int] | None:
    match = _MANIFEST.match(key[len(MANIFEST_PREFIX):]) if key.startswith(MANIFEST_PREFIX) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


# --- contents --------------------------------------------------------------------------------
def encode_log(entries: Sequence[common_pb2.Entry]) -> bytes:
    parts = []
    for entry in entries:
        payload = entry.SerializeToString()
        parts.append(_FRAME.pack(len(payload), zlib.crc32(payload)))
        parts.append(payload)
    return b"".join(parts)


def decode_log(data: bytes, obj: LogObject | None = None) -> list[common_pb2.Entry]:
    """The entries of a log object; checks framing, crc, consecutive indexes and the key's range."""
    entries: list[common_pb2.Entry] = []
    offset = 0
    name = obj.key if obj else "log object"
    while offset < len(data):
        if offset + _FRAME.size > len(data):
            raise BackupLayoutError(f"{name}: truncated frame at byte {offset}")
        length, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size:offset + _FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise BackupLayoutError(f"{name}: corrupt record at byte {offset}")
        entry = common_pb2.Entry.FromString(payload)
        if entries and (entry.index != entries[-1].index + 1 or entry.ts <= entries[-1].ts):
            raise BackupLayoutError(f"{name}: entry {entry.index} does not follow {entries[-1].index}")
        entries.append(entry)
        offset += _FRAME.size + length
    if obj is not None and (not entries or entries[0].index != obj.first or entries[-1].index != obj.last):
        raise BackupLayoutError(f"{name}: holds [{entries[0].index if entries else '-'}, "
                                f"{entries[-1].index if entries else '-'}], its name says [{obj.first}, {obj.last}]")
    return entries


def encode_manifest(manifest: Manifest) -> bytes:
    return json.dumps({"format": FORMAT, **dataclasses.asdict(manifest)}, sort_keys=True).encode()


def decode_manifest(data: bytes) -> Manifest:
    raw = _load_json(data, "manifest")
    try:
        return Manifest(int(raw["uploaded_index"]), int(raw["restorable_ts"]), int(raw["base_index"]),
                        str(raw["uploader"]), int(raw["written_at_ns"]))
    except (KeyError, TypeError, ValueError) as error:
        raise BackupLayoutError(f"manifest: missing or bad field {error}") from None


def encode_snapshot(snapshot: Snapshot) -> bytes:
    body = dataclasses.asdict(snapshot)
    body["logs"] = list(snapshot.logs)
    return json.dumps({"format": FORMAT, **body}, sort_keys=True, indent=1).encode()


def decode_snapshot(data: bytes) -> Snapshot:
    raw = _load_json(data, "snapshot")
    try:
        return Snapshot(str(raw["name"]), int(raw["to_ts"]), int(raw["index"]), str(raw["base"]),
                        tuple(str(k) for k in raw["logs"]), int(raw["created_at_ns"]))
    except (KeyError, TypeError, ValueError) as error:
        raise BackupLayoutError(f"snapshot: missing or bad field {error}") from None


def snapshot_pins(snapshot: Snapshot) -> set[str]:
    """The keys a snapshot needs: retention never removes them."""
    return {snapshot.base, *snapshot.logs}


def _load_json(data: bytes, what: str) -> dict:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BackupLayoutError(f"{what} is not JSON: {error}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BackupLayoutError(f"{what}: unknown format {raw.get('format') if isinstance(raw, dict) else raw!r}")
    return raw


# --- what the store holds ----------------------------------------------------------------------
@dataclasses.dataclass
class BackupView:
    """The backup as a listing shows it (manifest contents are in the newest manifest's key)."""

    bases: list[BaseObject]
    logs: list[LogObject]
    manifests: list[tuple[str, int, int]]  # (key, uploaded_index, restorable_ts), ascending
    snapshot_keys: list[str]
    other_keys: list[str]
    total_bytes: int

    @classmethod
    def from_listing(cls, listing: Iterable[tuple[str, int]]) -> "BackupView":
        view = cls([], [], [], [], [], 0)
        for key, size in listing:
            view.total_bytes += size
            if (base := parse_base(key, size)) is not None:
                view.bases.append(base)
            elif (log_object := parse_log(key, size)) is not None:
                view.logs.append(log_object)
            elif (parsed := parse_manifest_key(key)) is not None:
                view.manifests.append((key, *parsed))
            elif key.startswith(SNAPSHOT_PREFIX) and key.endswith(".json"):
                view.snapshot_keys.append(key)
            else:
                view.other_keys.append(key)
        view.bases.sort(key=lambda b: b.index)
        view.logs.sort(key=lambda o: (o.first, o.last))
        view.manifests.sort(key=lambda m: (m[1], m[2]))
        return view

    @property
    def object_count(self) -> int:
        return (len(self.bases) + len(self.logs) + len(self.manifests) + len(self.snapshot_keys)
                + len(self.other_keys))

    @property
    def uploaded_index(self) -> int:
        return self.manifests[-1][1] if self.manifests else 0

    @property
    def latest_restorable_ts(self) -> int:
        """Every commit with commit_ts <= this is in the store (0: nothing restorable yet)."""
        return max((m[2] for m in self.manifests), default=0)

    @property
    def earliest_restorable_ts(self) -> int:
        """The oldest time a restore reaches without a snapshot: the oldest base whose log objects run
        unbroken to the uploaded index (a base kept only because a snapshot pins it, its later logs
        gone, serves that snapshot, not the window); a genesis base: its first entry's time."""
        uploaded, latest = self.uploaded_index, self.latest_restorable_ts
        if latest == 0 or not self.bases:
            return 0
        reach_from = log_run_start(self.logs, uploaded)
        for base in self.bases:  # oldest first
            if base.index > uploaded or base.index + 1 < reach_from:
                continue
            if base.index > 0:
                return base.ts
            first = next((o for o in self.logs if o.first == 1), None)
            return first.first_ts if first else latest
        return 0


def log_run_start(logs: Sequence[LogObject], through: int) -> int:
    """The lowest index i such that the log objects hold every index in [i, through] (through + 1: none)."""
    runs: list[list[int]] = []  # merged [first, last], ascending
    for obj in sorted(logs, key=lambda o: o.first):
        if runs and obj.first <= runs[-1][1] + 1:
            runs[-1][1] = max(runs[-1][1], obj.last)
        else:
            runs.append([obj.first, obj.last])
    for first, last in runs:
        if first <= through <= last:
            return first
    return through + 1


@dataclasses.dataclass(frozen=True)
class RestorePlan:
    base: BaseObject
    logs: tuple[LogObject, ...]  # in order; together they hold every index in (base.index, through]
    to_ts: int
    through_index: int  # the restore applies entries up to here and stops at the first with ts > to_ts


def plan_restore(view: BackupView, to_ts: int) -> RestorePlan:
    """The base and log objects that rebuild exactly the commits with commit_ts <= to_ts."""
    latest = view.latest_restorable_ts
    earliest = view.earliest_restorable_ts
    if not view.bases or latest == 0:
        raise OutsideWindow("the backup holds no restorable point yet")
    if to_ts > latest:
        raise OutsideWindow(f"time {to_ts} is after the latest restorable time {latest}")
    usable = [b for b in view.bases if b.ts <= to_ts]
    if not usable or to_ts < earliest:
        raise OutsideWindow(f"time {to_ts} is before the earliest restorable time {earliest}")
    base = usable[-1]
    uploaded = view.uploaded_index
    chosen: list[LogObject] = []
    next_index = base.index + 1
    for obj in view.logs:
        if obj.last < next_index:
            continue  # already held (objects of two uploaders may overlap)
        if obj.first > next_index:
            break  # a gap: checked below
        chosen.append(obj)
        next_index = obj.last + 1
        if obj.last_ts > to_ts:
            break
    reached = next_index - 1
    covered = reached >= uploaded or (chosen and chosen[-1].last_ts > to_ts)
    if not covered:
        raise BackupLayoutError(f"the log objects after base {base.index} stop at index {reached}, "
                                f"before the uploaded index {uploaded}: an object is missing")
    return RestorePlan(base, tuple(chosen), to_ts, reached)


def plan_retention(view: BackupView, now_ns: int, retention_ns: int, pinned: set[str]) -> list[str]:
    """Keys to delete: bases and logs only needed before now - retention, unless pinned.

    The newest base at or before the window's start stays (it is what the oldest restorable time
    needs), with every log after it; the two newest manifests stay.
    """
    window_start = now_ns - retention_ns
    old_bases = [b for b in view.bases if b.ts <= window_start]
    keep_base = old_bases[-1] if old_bases else (view.bases[0] if view.bases else None)
    doomed: list[str] = []
    if keep_base is not None:
        doomed += [b.key for b in view.bases if b.index < keep_base.index]
        doomed += [o.key for o in view.logs if o.last <= keep_base.index]
    doomed += [key for key, _, _ in view.manifests[:-2]]
    return [key for key in doomed if key not in pinned]
