"""`quorumdb backup status` and `quorumdb snapshot create|list|delete`: reading the backup, pinning points.

The storage copies write the backup (storage_node/backup.py); these commands only read its
object store, and write or remove one kind of object, `snapshots/<name>.json`
(quorumdb/backup_layout.py has the layout).

What the store can restore: a restore to T needs a base image at or before T and every log entry
from that base up to the uploaded index (backup_layout.plan_restore). Retention removes old bases
and logs, but a snapshot keeps the objects it lists, so the store may hold an old base whose
following logs are partly gone; such a base serves its snapshots, not the continuous window.
`restorable_window` therefore starts at the oldest base whose logs reach the uploaded index
without a gap, not at the oldest base the store holds.

A snapshot names a time T and the objects a restore to T needs. Creating one waits (bounded)
until the backup is restorable at T, plans the restore as `quorumdb restore` would, writes the
snapshot object (put is immutable: a name is never overwritten), and then checks that retention
did not remove a planned object in the meantime (if it did, the snapshot is removed again and
the command fails). Deleting a snapshot removes only its object; retention reclaims the objects
it pinned once no snapshot and no part of the window needs them.

The pure half (window, report, plan, tables) takes a listing, decoded objects and `now`; the
command half does the I/O. Every failure the user can cause or meet is a `BackupCommandError`
whose message names what is wrong; the command prints it and exits 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from quorumdb import backup_layout as layout
from tools import format as fmt
from quorumdb import limits, timefmt
from tools import nodestatus, toolcreds
from tools.dr import locate as locate_mod
from quorumdb.objectstore import (
    ObjectCorrupt,
    ObjectExists,
    ObjectMissing,
    ObjectStore,
    ObjectStoreError,
    open_store,
)
from quorumdb.pb import common_pb2

EXIT_OK = 0
EXIT_FAILED = 1
NS_PER_MS = 1_000_000
KINDS = ("bases", "logs", "manifests", "snapshots", "other")


class BackupCommandError(Exception):
    """What the user is told before exit 1; nothing was written (or it was undone)."""


# --- pure: what the listing says ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Window:
    earliest_ts: int  # 0 with latest_ts: nothing restorable
    latest_ts: int
    uploaded_index: int


def restorable_window(view: layout.BackupView) -> Window:
    """[earliest, latest]: the times a restore reaches from a base and unbroken logs (no snapshot needed)."""
    earliest = view.earliest_restorable_ts
    if earliest == 0:
        return Window(0, 0, view.uploaded_index)
    return Window(earliest, view.latest_restorable_ts, view.uploaded_index)


def kind_totals(listing: list[tuple[str, int]]) -> dict[str, dict[str, int]]:
    """Objects and bytes per kind of key."""
    totals = {kind: {"objects": 0, "bytes": 0} for kind in KINDS}
    for key, size in listing:
        kind = _kind(key)
        totals[kind]["objects"] += 1
        totals[kind]["bytes"] += size
    return totals


def _kind(key: str) -> str:
    if layout.parse_base(key) is not None:
        return "bases"
    if layout.parse_log(key) is not None:
        return "logs"
    if layout.parse_manifest_key(key) is not None:
        return "manifests"
    if key.startswith(layout.SNAPSHOT_PREFIX) and key.endswith(".json"):
        return "snapshots"
    return "other"


@dataclasses.dataclass(frozen=True)
class SnapshotRow:
    name: str
    key: str
    snapshot: layout.Snapshot | None  # None: the object could not be read (error says why)
    objects: int = 0  # objects it pins (base + logs)
    bytes: int = 0  # their bytes, as the store holds them
    missing: tuple[str, ...] = ()  # pinned keys the store no longer holds: the snapshot cannot restore
    error: str = ""


def snapshot_row(key: str, snapshot: layout.Snapshot | None, error: str, sizes: dict[str, int]) -> SnapshotRow:
    name = key[len(layout.SNAPSHOT_PREFIX):-len(".json")]
    if snapshot is None:
        return SnapshotRow(name, key, None, error=error)
    pinned = (snapshot.base, *snapshot.logs)
    missing = tuple(k for k in pinned if k not in sizes)
    return SnapshotRow(name, key, snapshot, len(pinned), sum(sizes.get(k, 0) for k in pinned), missing)


def snapshot_json(row: SnapshotRow) -> dict[str, Any]:
    if row.snapshot is None:
        return {"name": row.name, "error": row.error}
    snap = row.snapshot
    return {"name": row.name, "time": timefmt.format_utc(snap.to_ts), "ts": snap.to_ts, "index": snap.index,
            "objects": row.objects, "bytes": row.bytes, "created": timefmt.format_utc(snap.created_at_ns),
            "created_ts": snap.created_at_ns, "missing": list(row.missing)}


@dataclasses.dataclass(frozen=True)
class CopyBackup:
    """One storage copy's own view of the backup (its NodeStatus), None when it did not answer."""
    name: str
    status: common_pb2.NodeStatus | None


def copy_json(copy: CopyBackup) -> dict[str, Any]:
    if copy.status is None:
        return {"name": copy.name, "up": False}
    status = copy.status
    return {"name": copy.name, "up": True, "backup_uploader": status.backup_uploader,
            "backup_uploaded_index": status.backup_uploaded_index,
            "backup_restorable_ts": status.backup_restorable_ts,
            "backup_restorable_time": timefmt.format_utc(status.backup_restorable_ts) if status.backup_restorable_ts else "",
            "backup": status.backup}


def status_report(located: locate_mod.Located, listing: list[tuple[str, int]], manifest: layout.Manifest | None,
                  snapshots: list[SnapshotRow], copies: list[CopyBackup] | None, now_ns: int) -> dict[str, Any]:
    """Everything `backup status` shows, as the JSON object it prints with --json."""
    view = layout.BackupView.from_listing(listing)
    window = restorable_window(view)
    if window.latest_ts == 0:
        raise BackupCommandError(_nothing_restorable(located.location, view))
    return {
        "location": located.location,
        "found_through": located.found_through,
        "earliest_restorable_ts": window.earliest_ts,
        "earliest_restorable_time": timefmt.format_utc(window.earliest_ts),
        "latest_restorable_ts": window.latest_ts,
        "latest_restorable_time": timefmt.format_utc(window.latest_ts),
        "upload_lag_ms": max(0, now_ns - window.latest_ts) // NS_PER_MS,
        "uploaded_index": window.uploaded_index,
        "objects": view.object_count,
        "bytes": view.total_bytes,
        "by_kind": kind_totals(listing),
        "uploader": manifest.uploader if manifest else "",
        "manifest_written_time": timefmt.format_utc(manifest.written_at_ns) if manifest else "",
        "copies": None if copies is None else [copy_json(c) for c in copies],
        "snapshots": [snapshot_json(row) for row in snapshots],
    }


def _nothing_restorable(location: str, view: layout.BackupView) -> str:
    if view.object_count == 0:
        return f"no backup at {location}: the store holds no objects (is this the cluster's backup location?)"
    return (f"the backup at {location} holds no restorable point yet ({view.object_count} objects, "
            f"{len(view.bases)} bases, {len(view.manifests)} manifests): the storage copies have not finished "
            "their first upload")


def plan_snapshot(name: str, view: layout.BackupView, to_ts: int, now_ns: int) -> layout.Snapshot:
    """The snapshot object for a restore to to_ts (the caller has waited until it is restorable)."""
    window = restorable_window(view)
    if window.latest_ts == 0:
        raise BackupCommandError("the backup holds no restorable point yet")
    if to_ts < window.earliest_ts:
        raise BackupCommandError(f"time {timefmt.describe(to_ts)} is before the earliest restorable time "
                                 f"{timefmt.describe(window.earliest_ts)}")
    if to_ts > window.latest_ts:
        raise BackupCommandError(f"time {timefmt.describe(to_ts)} is after the latest restorable time "
                                 f"{timefmt.describe(window.latest_ts)}")
    try:
        plan = layout.plan_restore(view, to_ts)
    except layout.BackupLayoutError as error:
        raise BackupCommandError(str(error)) from None
    return layout.Snapshot(name, to_ts, plan.through_index, plan.base.key, tuple(o.key for o in plan.logs), now_ns)


# --- pure: text output -------------------------------------------------------------------------
def status_text(report: dict[str, Any]) -> str:
    kinds = report["by_kind"]
    parts = [f"{kinds[k]['objects']} {k} ({kinds[k]['bytes']} bytes)" for k in KINDS
             if k != "other" or kinds[k]["objects"]]
    lines = [
        f"backup:          {report['location']} (found through {report['found_through']})",
        f"restorable from: {report['earliest_restorable_time']} (commit_ts {report['earliest_restorable_ts']})",
        f"restorable to:   {report['latest_restorable_time']} (commit_ts {report['latest_restorable_ts']})",
        f"upload lag:      {report['upload_lag_ms']} ms",
        f"uploaded index:  {report['uploaded_index']}",
        f"uploader:        {report['uploader'] or '?'} (newest manifest, written {report['manifest_written_time']})",
        f"objects:         {report['objects']} ({report['bytes']} bytes): " + ", ".join(parts),
    ]
    copies = report["copies"]
    if copies is None:
        lines.append("storage copies:  not asked (--from names no cluster)")
    elif not any(c["up"] for c in copies):
        lines.append("storage copies:  none answers (is the cluster running?)")
    else:
        lines.append("storage copies:")
        lines.append(_copies_table(copies))
    snapshots = report["snapshots"]
    lines.append("snapshots:       none" if not snapshots else "snapshots:")
    if snapshots:
        lines.append(snapshots_table(snapshots))
    return "\n".join(lines) + "\n"


def _copies_table(copies: list[dict[str, Any]]) -> str:
    rows = []
    for c in copies:
        if not c["up"]:
            rows.append((c["name"], "down", "", "", "", ""))
            continue
        rows.append((c["name"], "up", "yes" if c["backup_uploader"] else "no", str(c["backup_uploaded_index"]),
                     c["backup_restorable_time"], c["backup"]))
    columns = [("copy", "text"), ("state", "text"), ("uploader", "text"), ("uploaded index", "bigint"),
               ("restorable to", "text"), ("backup", "text")]
    return fmt.format_table(columns, rows, fmt.PrintOptions(), footers=[]).rstrip("\n")


def snapshots_table(snapshots: list[dict[str, Any]]) -> str:
    rows = []
    for s in snapshots:
        if "error" in s:
            rows.append((s["name"], "", "", "", "", "", f"unreadable: {s['error']}"))
            continue
        note = f"{len(s['missing'])} pinned objects missing: cannot restore" if s["missing"] else ""
        rows.append((s["name"], s["time"], str(s["index"]), str(s["objects"]), str(s["bytes"]), s["created"], note))
    columns = [("name", "text"), ("time", "text"), ("index", "bigint"), ("objects", "bigint"),
               ("bytes pinned", "bigint"), ("created", "text"), ("problem", "text")]
    if not any(row[-1] for row in rows):
        columns, rows = columns[:-1], [row[:-1] for row in rows]
    return fmt.format_table(columns, rows, fmt.PrintOptions(), footers=[f"({len(rows)} snapshots)"]).rstrip("\n")


# --- I/O: reading the store --------------------------------------------------------------------
@dataclasses.dataclass
class StoreState:
    listing: list[tuple[str, int]]
    view: layout.BackupView
    manifest: layout.Manifest | None
    snapshots: list[SnapshotRow]


def read_state(store: ObjectStore, with_snapshots: bool = True) -> StoreState:
    """The listing, the newest manifest and (optionally) every snapshot, as one consistent read.

    The uploader removes old manifests while we read; an object listed a moment ago and gone
    when read makes us list again (bounded).
    """
    for attempt in range(limits.BACKUP_READ_ATTEMPTS):
        listing = [(info.key, info.size) for info in store.list("")]
        view = layout.BackupView.from_listing(listing)
        try:
            manifest = _manifest(store, view)
        except ObjectMissing:
            if attempt + 1 == limits.BACKUP_READ_ATTEMPTS:
                raise
            continue
        sizes = dict(listing)
        rows = [_snapshot_row(store, key, sizes) for key in view.snapshot_keys] if with_snapshots else []
        return StoreState(listing, view, manifest, rows)
    raise AssertionError("unreachable")


def _manifest(store: ObjectStore, view: layout.BackupView) -> layout.Manifest | None:
    if not view.manifests:
        return None
    key = view.manifests[-1][0]
    try:
        return layout.decode_manifest(store.get(key))
    except layout.BackupLayoutError as error:
        raise BackupCommandError(f"{store.location}: {key}: {error}") from None


def _snapshot_row(store: ObjectStore, key: str, sizes: dict[str, int]) -> SnapshotRow:
    try:
        return snapshot_row(key, layout.decode_snapshot(store.get(key)), "", sizes)
    except (layout.BackupLayoutError, ObjectStoreError) as error:
        # One damaged snapshot must not hide the others (or the rest of the status).
        return snapshot_row(key, None, str(error), sizes)


def _open(located: locate_mod.Located) -> ObjectStore:
    try:
        return open_store(located.location)
    except (ObjectStoreError, ValueError, ImportError) as error:
        raise BackupCommandError(f"cannot open the backup at {located.location}: {error}") from None


def _copies(located: locate_mod.Located) -> list[CopyBackup] | None:
    if not located.storage_nodes:
        return None
    statuses = nodestatus.fetch_statuses(located.storage_nodes, limits.STATUS_TIMEOUT_S,
                                         credentials=toolcreds.source(located.data_dir))
    return [CopyBackup(node.name, status) for node, status in zip(located.storage_nodes, statuses, strict=True)]


# --- commands ----------------------------------------------------------------------------------
def backup_status(args: argparse.Namespace, out: TextIO, now_ns: Callable[[], int] = time.time_ns) -> int:
    located = locate_mod.locate_from_args(args)
    store = _open(located)
    state = read_state(store)
    copies = _copies(located)
    report = status_report(located, state.listing, state.manifest, state.snapshots, copies, now_ns())
    out.write(json.dumps(report, indent=2) + "\n" if args.json else status_text(report))
    return EXIT_OK


def snapshot_create(args: argparse.Namespace, out: TextIO, now_ns: Callable[[], int] = time.time_ns,
                    sleep: Callable[[float], None] = time.sleep,
                    monotonic: Callable[[], float] = time.monotonic) -> int:
    name = _name(args.name)
    now = now_ns()
    # A time on the millisecond, so that the ISO time printed names exactly the same cut.
    to_ts = _time(args.at_time) if args.at_time is not None else now - now % NS_PER_MS
    if to_ts > now:
        raise BackupCommandError(f"time {timefmt.describe(to_ts)} is in the future (now is {timefmt.format_utc(now)})")
    if args.wait < 0:
        raise BackupCommandError(f"--wait {args.wait}: must be 0 or more seconds")
    located = locate_mod.locate_from_args(args)
    store = _open(located)
    key = layout.snapshot_key(name)
    if _exists(store, key):
        raise BackupCommandError(f"snapshot {name} exists (at {store.location}): pick another name or delete it first")
    state = _wait_restorable(store, to_ts, args.wait, sleep, monotonic)
    snapshot = plan_snapshot(name, state.view, to_ts, now_ns())
    try:
        store.put(key, layout.encode_snapshot(snapshot))
    except ObjectExists:
        raise BackupCommandError(f"snapshot {name} exists (at {store.location}): created meanwhile by someone else") from None
    row = _check_pinned(store, key, snapshot)
    out.write(f"created snapshot {name} at {store.location}\n"
              f"time:   {timefmt.describe(snapshot.to_ts)}\n"
              f"index:  {snapshot.index}\n"
              f"pinned: {row.objects} objects, {row.bytes} bytes (1 base, {len(snapshot.logs)} logs)\n")
    return EXIT_OK


def _wait_restorable(store: ObjectStore, to_ts: int, wait_s: float, sleep: Callable[[float], None],
                     monotonic: Callable[[], float]) -> StoreState:
    deadline = monotonic() + wait_s
    while True:
        state = read_state(store, with_snapshots=False)
        window = restorable_window(state.view)
        if window.latest_ts and to_ts < window.earliest_ts:
            # Waiting cannot help a time the window has already left.
            raise BackupCommandError(f"time {timefmt.describe(to_ts)} is before the earliest restorable time "
                                     f"{timefmt.describe(window.earliest_ts)}")
        if window.latest_ts >= to_ts:
            return state
        if monotonic() >= deadline:
            reached = (f"is restorable only up to {timefmt.describe(window.latest_ts)}" if window.latest_ts
                       else "holds no restorable point")
            raise BackupCommandError(
                f"the backup at {store.location} {reached}, before {timefmt.describe(to_ts)}, after waiting "
                f"{wait_s:g} s: is the cluster running and its backup uploading? (see `quorumdb backup status`)")
        sleep(min(limits.BACKUP_POLL_INTERVAL_S, max(0.0, deadline - monotonic())))


def _check_pinned(store: ObjectStore, key: str, snapshot: layout.Snapshot) -> SnapshotRow:
    """Every planned object is still there now that the snapshot protects it; else undo and fail."""
    sizes = {info.key: info.size for info in store.list(layout.SEGMENT_PREFIX)}
    row = snapshot_row(key, snapshot, "", sizes)
    if row.missing:
        store.delete(key)
        raise BackupCommandError(f"retention removed {row.missing[0]} (needed for {timefmt.describe(snapshot.to_ts)}) "
                                 "while the snapshot was written: the time is leaving the window, pick a later one")
    return row


def snapshot_list(args: argparse.Namespace, out: TextIO) -> int:
    located = locate_mod.locate_from_args(args)
    store = _open(located)
    state = read_state(store)
    rows = [snapshot_json(row) for row in state.snapshots]
    if args.json:
        out.write(json.dumps(rows, indent=2) + "\n")
    elif not rows:
        out.write(f"no snapshots at {store.location}\n")
    else:
        out.write(snapshots_table(rows) + "\n")
    return EXIT_OK


def snapshot_delete(args: argparse.Namespace, out: TextIO) -> int:
    name = _name(args.name)
    located = locate_mod.locate_from_args(args)
    store = _open(located)
    key = layout.snapshot_key(name)
    try:
        data = store.get(key)
    except ObjectMissing:
        names = [k[len(layout.SNAPSHOT_PREFIX):-len(".json")] for k in
                 (info.key for info in store.list(layout.SNAPSHOT_PREFIX)) if k.endswith(".json")]
        raise BackupCommandError(f"no snapshot named {name} at {store.location} "
                                 f"(snapshots: {', '.join(names) if names else 'none'})") from None
    except ObjectCorrupt:
        data = b""  # a damaged snapshot object can still be deleted
    store.delete(key)
    try:
        snapshot = layout.decode_snapshot(data)
        what = f"time {timefmt.describe(snapshot.to_ts)}, index {snapshot.index}, {1 + len(snapshot.logs)} objects pinned"
    except layout.BackupLayoutError:
        what = "its object was unreadable"
    out.write(f"deleted snapshot {name} ({what}); retention reclaims what it pinned once nothing else needs it\n")
    return EXIT_OK


def _exists(store: ObjectStore, key: str) -> bool:
    return any(info.key == key for info in store.list(key))


def _name(text: str) -> str:
    try:
        return layout.check_snapshot_name(text)
    except layout.BackupLayoutError as error:
        raise BackupCommandError(str(error)) from None


def _time(text: str) -> int:
    try:
        return timefmt.parse_utc(text)
    except timefmt.TimeFormatError as error:
        raise BackupCommandError(f"--at-time: {error}") from None


# --- command line ------------------------------------------------------------------------------
def add_parsers(commands: argparse._SubParsersAction) -> None:
    backup = commands.add_parser("backup", help="the continuous backup: `backup status`",
                                 description="The continuous backup the storage copies upload (docs/DR.md).")
    backup_commands = backup.add_subparsers(dest="backup_command", required=True, metavar="status")
    status = backup_commands.add_parser(
        "status", help="restorable window, upload lag, objects and bytes, uploader, snapshots",
        description="Earliest and latest restorable time, upload lag, uploaded index, objects and bytes by kind, "
                    "the uploading copy (and every storage copy's view when the cluster answers), the snapshots. "
                    "Exit 1 when the store cannot be reached or holds nothing restorable.")
    locate_mod.add_arguments(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    snapshot = commands.add_parser("snapshot", help="named restore points that never expire: create, list, delete",
                                   description="Named restore points: the objects a restore to their time needs stay "
                                               "in the store until the snapshot is deleted (docs/DR.md).")
    snapshot_commands = snapshot.add_subparsers(dest="snapshot_command", required=True, metavar="create|list|delete")
    create = snapshot_commands.add_parser(
        "create", help="pin the backup at a time (default: now)",
        description="Wait until the backup is restorable at the time, then write snapshots/NAME.json naming the "
                    "base and log objects a restore to that time needs. Prints the time used, the index and "
                    "what it pins.")
    create.add_argument("name", metavar="NAME", help="letters, digits, '.', '_', '-' (at most 63)")
    create.add_argument("--at-time", default=None, metavar="T",
                        help="ISO 8601 UTC with milliseconds, e.g. 2026-12-01T13:40:00.250Z (default: now)")
    create.add_argument("--wait", type=float, default=limits.SNAPSHOT_WAIT_TIMEOUT_S, metavar="SECONDS",
                        help="wait at most this long for the backup to reach the time "
                             f"(default {limits.SNAPSHOT_WAIT_TIMEOUT_S:g})")
    locate_mod.add_arguments(create)
    listing = snapshot_commands.add_parser("list", help="every snapshot: time, index, bytes pinned, created")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    locate_mod.add_arguments(listing)
    delete = snapshot_commands.add_parser(
        "delete", help="remove a snapshot (retention reclaims its objects later)")
    delete.add_argument("name", metavar="NAME")
    locate_mod.add_arguments(delete)


def command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None,
            now_ns: Callable[[], int] = time.time_ns, sleep: Callable[[float], None] = time.sleep,
            monotonic: Callable[[], float] = time.monotonic) -> int:
    """Run `backup status` or `snapshot ...`; errors go to err with exit 1. The clock is a parameter for tests."""
    out, err = out or sys.stdout, err or sys.stderr
    if args.command == "backup":
        label = f"backup {args.backup_command}"
    else:
        label = f"snapshot {args.snapshot_command}"
    try:
        match label:
            case "backup status":
                code = backup_status(args, out, now_ns)
            case "snapshot create":
                code = snapshot_create(args, out, now_ns, sleep, monotonic)
            case "snapshot list":
                code = snapshot_list(args, out)
            case "snapshot delete":
                code = snapshot_delete(args, out)
            case _:
                raise AssertionError(label)
    except (BackupCommandError, locate_mod.LocateError, ObjectStoreError, layout.BackupLayoutError) as error:
        err.write(f"quorumdb {label}: {error}\n")
        return EXIT_FAILED
    out.flush()
    return code
