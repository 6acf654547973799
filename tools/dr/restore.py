"""`quorumdb restore`: a new cluster holding exactly the commits with commit_ts <= T, from a backup.

    quorumdb restore --from DIR|s3://bucket/prefix (--to-time T | --latest | --snapshot NAME)
                     --data-dir NEW [--base-port N]

Phases (each timed and printed):
  plan      list the backup, pick T (the latest restorable time, a snapshot's to_ts, or the time
            given, which must be inside the window) and the objects: the newest base at or before
            T and the log objects after it (backup_layout.plan_restore, or the snapshot's pins);
  download  fetch and verify them (the store checks its sha256, the checkpoint its own hash, every
            log record its crc and the index sequence);
  replay    rebuild the segment: the base decoded into a storage Segment, then the log entries in
            index order while entry.ts <= T. Entries are in commit_ts order, so this is a
            transaction-consistent cut: every commit <= T, none after;
  write     one checkpoint at the last applied index K, header closed_ts = T (every commit <= T is
            applied), into every storage node directory of the new cluster; its journals seeded to
            continue after K (tools/dr/newcluster.py). The source's settings come from the
            backup's cluster.toml object (config.default_cluster's when it has none).

Nothing is written before the plan and every object have been checked... except the new data
directory, which is removed again on any error (the source and the backup are only read).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import tempfile
import time
from typing import Callable

from quorumdb import backup_layout as layout
from quorumdb import config as config_mod
from quorumdb import limits, timefmt
from tools.dr import newcluster
from quorumdb.objectstore import ObjectCorrupt, ObjectMissing, ObjectStore, ObjectStoreError, open_store
from storage_node import checkpoint
from storage_node.core import Segment
from storage_node.service import to_record
from storage_node.store import CheckpointStore

HELP = __doc__


class RestoreError(Exception):
    """The restore cannot be done; the message names the object, time or location at fault."""


@dataclasses.dataclass
class RestoreResult:
    to_ts: int
    index: int
    entries_replayed: int
    bytes_read: int
    keys: int
    objects: int
    base_key: str
    seconds: dict[str, float]
    cluster: config_mod.ClusterConfig


def open_backup(location: str) -> ObjectStore:
    """The store, checked to exist and answer (a local path must be an existing directory)."""
    if not location.startswith("s3://"):
        path = pathlib.Path(location)
        if not path.is_dir():
            raise RestoreError(f"backup location {location} does not exist or is not a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise RestoreError(f"backup location {location} cannot be read (permission denied)")
    try:
        store = open_store(location)
        if location.startswith("s3://"):
            store.check()
        return store
    except ObjectStoreError as error:
        raise RestoreError(f"backup location {location} cannot be reached: {error}") from None
    except ImportError as error:
        raise RestoreError(f"backup location {location}: {error}") from None


def _get(store: ObjectStore, key: str) -> bytes:
    try:
        return store.get(key)
    except ObjectMissing:
        raise RestoreError(f"object {key} is missing from {store.location}") from None
    except ObjectCorrupt as error:
        raise RestoreError(f"object {key} is corrupt: {error}") from None
    except ObjectStoreError as error:
        raise RestoreError(f"cannot read {key} from {store.location}: {error}") from None


def plan(store: ObjectStore, to_ts: int | None, snapshot: str | None) -> tuple[layout.RestorePlan, layout.BackupView]:
    """The restore plan for T (None: the latest restorable time) or a snapshot."""
    try:
        view = layout.BackupView.from_listing((info.key, info.size) for info in store.list(""))
    except ObjectStoreError as error:
        raise RestoreError(f"cannot list the backup at {store.location}: {error}") from None
    if snapshot is not None:
        try:
            key = layout.snapshot_key(snapshot)
        except layout.BackupLayoutError as error:
            raise RestoreError(str(error)) from None
        try:
            pinned = layout.decode_snapshot(_get(store, key))
        except layout.BackupLayoutError as error:
            raise RestoreError(f"snapshot object {key} is unreadable: {error}") from None
        return _snapshot_plan(view, pinned, key), view
    if not view.bases or not view.latest_restorable_ts:
        raise RestoreError(f"the backup at {store.location} holds no restorable point (no base image and manifest"
                           f"{'' if view.object_count else '; it is empty'})")
    if to_ts is None:
        to_ts = view.latest_restorable_ts
    try:
        return layout.plan_restore(view, to_ts), view
    except layout.OutsideWindow as error:
        window = (f"the backup at {store.location} can restore {timefmt.format_utc(view.earliest_restorable_ts)} .. "
                  f"{timefmt.format_utc(view.latest_restorable_ts)}" if view.latest_restorable_ts
                  else f"the backup at {store.location} holds no restorable point")
        raise RestoreError(f"{timefmt.format_utc(to_ts)} (commit_ts {to_ts}) cannot be restored: {error}; "
                           f"{window}") from None
    except layout.BackupLayoutError as error:
        raise RestoreError(f"backup at {store.location} is incomplete: {error}") from None


def _snapshot_plan(view: layout.BackupView, snapshot: layout.Snapshot, key: str) -> layout.RestorePlan:
    sizes = {b.key: b.size for b in view.bases} | {o.key: o.size for o in view.logs}
    base = layout.parse_base(snapshot.base, sizes.get(snapshot.base, 0))
    logs = [layout.parse_log(k, sizes.get(k, 0)) for k in snapshot.logs]
    if base is None or any(o is None for o in logs):
        raise RestoreError(f"snapshot {key} names keys that are not base or log objects")
    logs.sort(key=lambda o: (o.first, o.last))
    return layout.RestorePlan(base, tuple(logs), snapshot.to_ts, snapshot.index)


def source_settings(store: ObjectStore, placeholder: pathlib.Path) -> config_mod.ClusterConfig:
    """The backed-up cluster's cluster file (default settings when the backup has none)."""
    try:
        text = store.get(layout.CLUSTER_CONFIG_KEY)
    except ObjectMissing:
        return config_mod.default_cluster(placeholder)
    except ObjectStoreError as error:
        raise RestoreError(f"cannot read {layout.CLUSTER_CONFIG_KEY} from {store.location}: {error}") from None
    with tempfile.TemporaryDirectory() as scratch:
        path = pathlib.Path(scratch) / config_mod.CONFIG_FILE
        path.write_bytes(text)
        try:
            loaded = config_mod.load(path)
        except (ValueError, TypeError, KeyError) as error:
            raise RestoreError(f"object {layout.CLUSTER_CONFIG_KEY} is not a valid cluster file: {error}") from None
    return dataclasses.replace(loaded, data_dir=placeholder)


def rebuild(store: ObjectStore, restore_plan: layout.RestorePlan, seconds: dict[str, float],
            clock: Callable[[], float] = time.monotonic) -> tuple[Segment, int, int]:
    """(segment at the cut, entries replayed, bytes read): download + replay."""
    to_ts = restore_plan.to_ts
    started = clock()
    base_bytes = _get(store, restore_plan.base.key)
    try:
        header, records = checkpoint.decode(base_bytes)
    except checkpoint.CorruptCheckpoint as error:
        raise RestoreError(f"base object {restore_plan.base.key} is corrupt: {error}") from None
    if header.applied_index != restore_plan.base.index:
        raise RestoreError(f"base object {restore_plan.base.key} holds index {header.applied_index}")
    bytes_read = len(base_bytes)
    seconds["download"] = clock() - started
    started = clock()
    segment = Segment.from_checkpoint(header.applied_index, header.last_applied_ts, header.closed_ts,
                                      header.gc_horizon_ts, records)
    del records, base_bytes
    seconds["replay"] = clock() - started
    replayed = 0
    for obj in restore_plan.logs:
        started = clock()
        data = _get(store, obj.key)
        bytes_read += len(data)
        try:
            entries = layout.decode_log(data, obj)
        except layout.BackupLayoutError as error:
            raise RestoreError(f"log object {obj.key} is corrupt: {error}") from None
        seconds["download"] += clock() - started
        started = clock()
        fresh = [e for e in entries if e.index > segment.applied_index]
        if fresh and fresh[0].index != segment.applied_index + 1:
            raise RestoreError(f"log object {obj.key} starts at {fresh[0].index}, the restore needs "
                               f"{segment.applied_index + 1}: an object is missing")
        cut = [e for e in fresh if e.ts <= to_ts]  # ts increase with the index: a prefix
        segment.apply(to_record(e) for e in cut)
        replayed += len(cut)
        seconds["replay"] += clock() - started
        if len(cut) < len(fresh):
            break
    else:
        if segment.applied_index < restore_plan.through_index:
            raise RestoreError(f"the log objects end at index {segment.applied_index}, the restore needs "
                               f"{restore_plan.through_index}: an object is missing")
    if segment.last_applied_ts > to_ts:
        raise RestoreError(f"base {restore_plan.base.key} is newer than {timefmt.describe(to_ts)}")
    return segment, replayed, bytes_read


def write_cluster(segment: Segment, to_ts: int, source: config_mod.ClusterConfig, data_dir: pathlib.Path,
                  base_port: int | None) -> config_mod.ClusterConfig:
    """The new cluster's directory: cluster.toml, one checkpoint per storage node, seeded journals."""
    try:
        cluster = newcluster.create(source, data_dir, base_port)
    except newcluster.NewClusterError as error:
        raise RestoreError(str(error)) from None
    view = segment.checkpoint_view()
    # closed_ts = T: every commit <= T is applied (the cut), none after it is.
    header = checkpoint.CheckpointHeader(view.applied_index, view.last_applied_ts, max(to_ts, view.last_applied_ts),
                                         view.gc_horizon_ts)
    data = b"".join(checkpoint.encode(header, segment.checkpoint_records(view), limits.CHECKPOINT_CHUNK_BYTES))
    for node in cluster.storages:
        directory = cluster.node_data_dir(node.name)
        directory.mkdir(parents=True, exist_ok=True)
        CheckpointStore(directory).write(view.applied_index, [data])
    newcluster.seed_journals(cluster, view.applied_index)
    return cluster


def restore(location: str, data_dir: pathlib.Path | str, to_ts: int | None = None, snapshot: str | None = None,
            base_port: int | None = None, clock: Callable[[], float] = time.monotonic) -> RestoreResult:
    """Plan, download, replay, write; on any error the new data directory is left as it was found."""
    data_dir = pathlib.Path(data_dir).resolve()
    try:
        newcluster.check_empty(data_dir)
    except newcluster.NewClusterError as error:
        raise RestoreError(str(error)) from None
    seconds: dict[str, float] = {}
    started = clock()
    store = open_backup(location)
    restore_plan, _ = plan(store, to_ts, snapshot)
    source = source_settings(store, pathlib.Path(tempfile.gettempdir()) / "quorumdb-restore-source")
    seconds["plan"] = clock() - started
    segment, replayed, bytes_read = rebuild(store, restore_plan, seconds, clock)
    started = clock()
    existed = data_dir.exists()
    try:
        cluster = write_cluster(segment, restore_plan.to_ts, source, data_dir, base_port)
    except BaseException:
        newcluster.discard(data_dir, existed)
        raise
    seconds["write"] = clock() - started
    return RestoreResult(restore_plan.to_ts, segment.applied_index, replayed, bytes_read, segment.key_count,
                         1 + len(restore_plan.logs), restore_plan.base.key, seconds, cluster)



# --- command line --------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="DIR|s3://bucket/prefix",
                        help="the backup to restore from (a cluster's backup location)")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--to-time", metavar="T", help="ISO 8601 UTC time, e.g. 2026-12-01T13:40:00.250Z")
    when.add_argument("--latest", action="store_true", help="the latest restorable time")
    when.add_argument("--snapshot", metavar="NAME", help="a snapshot made with `quorumdb snapshot create`")
    parser.add_argument("--data-dir", required=True, metavar="NEW", help="the new cluster's data directory (absent or empty)")
    parser.add_argument("--base-port", type=int, default=None,
                        help="the new cluster's base port (default: the block after the source's)")


def command(args: argparse.Namespace, out=sys.stdout, err=sys.stderr) -> int:
    try:
        to_ts = timefmt.parse_utc(args.to_time) if args.to_time else None
        result = restore(args.source, args.data_dir, to_ts=to_ts, snapshot=args.snapshot, base_port=args.base_port)
    except (RestoreError, timefmt.TimeFormatError) as error:
        print(f"quorumdb restore: {error}", file=err)
        return 1
    phases = ", ".join(f"{name} {result.seconds.get(name, 0.0):.2f}s" for name in ("plan", "download", "replay", "write"))
    print(f"restored {args.source} to {timefmt.describe(result.to_ts)}", file=out)
    print(f"  index {result.index}: base {result.base_key} + {result.entries_replayed} entries replayed; "
          f"{result.keys} keys; {result.objects} objects, {result.bytes_read} bytes read", file=out)
    print(f"  seconds: {phases}", file=out)
    print(f"  new cluster in {result.cluster.data_dir} on base port {result.cluster.base_port}", file=out)
    print(f"  start it: quorumdb up --data-dir {result.cluster.data_dir}", file=out)
    return 0
