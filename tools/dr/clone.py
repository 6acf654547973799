"""`quorumdb clone`: a copy-on-write clone of a cluster, as a new cluster that runs beside it.

Theory of operation. A storage copy's state at any index is its checkpoint C (an immutable file:
written once under a temporary name, renamed, never modified, only ever unlinked by name) plus
the entries of its local log after C. Journal order has strictly increasing commit_ts, so the
state "every commit with commit_ts <= T" is C plus the log entries after C up to the last one
with ts <= T (index K), provided

  * C.last_applied_ts <= T (C holds nothing later than T), and
  * every commit with ts <= T is known to be in the log: either the log holds an entry with
    ts >= T after the cut (later indexes have later ts), or the copy reported, while running,
    closed_ts >= T at an applied index A the log reaches (every commit <= T has index <= A, and
    a copy fsyncs an entry into its log before it applies it).

The clone takes ONE source copy's cut, hard-links C into each of its six storage directories
(a hard link shares the immutable bytes: nothing is copied, and the source deleting its own name
later leaves the clone's names intact), writes the entries C+1..K as a fresh local log file in
each, and seeds its journals to continue after K (newcluster.seed_journals). Every copy of the
clone then starts from the same state, and the clone's first leader appends at K + 1 with a
commit_ts from the clock, later than T. So the work is one checkpoint's worth of links plus a
log tail bounded by the checkpoint interval: neither grows with the data size.

The source keeps running: its log files are appended (a torn last record is simply where reading
stops) and deleted behind new checkpoints, and old checkpoints are unlinked. A file that vanishes
between the listing and the link or read makes the whole attempt start over on a fresh listing
(bounded attempts). Nothing is ever written into the source's directory: files there are only
opened read-only and used as link sources.

The decisions (which copy, which checkpoint, which cut, what time range is available) are pure
functions below, tested directly; the rest reads files, asks Status and writes the new directory.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Sequence

from quorumdb import config as config_mod
from quorumdb import timefmt
from tools import nodestatus, toolcreds
from tools.dr import newcluster
from quorumdb.durable import fsync_dir
from quorumdb.pb import common_pb2
from storage_node import checkpoint as checkpoint_format
from storage_node import store as store_mod

# How long to wait for a running source copy to apply every commit up to T. A healthy copy
# closes time within a few heartbeats; longer means the source is not keeping up (or T is in
# the future), and the user should hear so rather than wait.
CLOSED_WAIT_S = 10.0
STATUS_POLL_S = 0.1
STATUS_TIMEOUT_S = 1.0
# A source file vanishing mid-copy (a checkpoint or log file dropped behind a newer checkpoint)
# costs one retry; each new listing is newer, so a few attempts suffice unless the source
# checkpoints faster than we can link one file.
COPY_ATTEMPTS_MAX = 5

_FRAME = struct.Struct(">II")  # storage_node/store.py's log frame: payload length, crc32(payload)
_HEADER = struct.Struct(">8sQQQQ")  # storage_node/checkpoint.py's header
_TRAILER = struct.Struct(">8sQQ32s")
_LOG_NAME = re.compile(r"^log-(\d{20})\.seg$")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d{20})\.ckpt$")


class CloneError(Exception):
    """The clone cannot be made (the message says why); the source was not touched."""


class SourceChanged(Exception):
    """A source file vanished while it was being read or linked: list again and start over."""


# --- pure decisions ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CheckpointFile:
    index: int
    last_applied_ts: int
    size_bytes: int


@dataclasses.dataclass(frozen=True)
class CopyView:
    """What one source storage copy can rebuild, as read from its files (and its Status, if running).

    log: (index, ts) of the consecutive entries of its local log, ascending.
    closed_ts / applied_index: from a Status taken BEFORE the files were listed (0: not answering).
    """
    name: str
    checkpoints: tuple[CheckpointFile, ...]
    log: tuple[tuple[int, int], ...]
    closed_ts: int = 0
    applied_index: int = 0


@dataclasses.dataclass(frozen=True)
class Base:
    """A state to start from: a checkpoint, or (index 0) the empty state before the first entry."""
    index: int
    earliest_ts: int   # the earliest cut time this base serves
    latest_ts: int     # the latest cut time this base plus the log after it covers
    checkpoint: CheckpointFile | None
    log_connects: bool  # the local log continues right after this base


@dataclasses.dataclass(frozen=True)
class Cut:
    copy: str
    base_index: int                 # the checkpoint's applied index (0: no checkpoint)
    checkpoint: CheckpointFile | None
    cut_index: int                  # K: the last entry included
    cut_entry_ts: int               # ts of entry K (the checkpoint's last_applied_ts if K is the base)

    @property
    def entries(self) -> int:
        return self.cut_index - self.base_index


def bases(view: CopyView) -> list[Base]:
    """Every base the copy's files can start from, oldest first, with the cut times it covers."""
    log = view.log
    first_index = log[0][0] if log else 0
    last_index = log[-1][0] if log else 0
    starts: list[tuple[int, int, CheckpointFile | None]] = []  # (index, earliest_ts, checkpoint)
    if log and first_index == 1:
        # No checkpoint needed: the log holds everything from the first entry. A time before the
        # first commit is not a state of this cluster worth cloning.
        starts.append((0, log[0][1], None))
    for ckpt in view.checkpoints:
        starts.append((ckpt.index, ckpt.last_applied_ts, ckpt))
    found = []
    for index, earliest_ts, ckpt in starts:
        connects = bool(log) and first_index <= index + 1 <= last_index + 1
        if connects:
            reach_index = max(index, last_index)
        else:
            reach_index = index  # the log does not continue this base: only its own state
        reach_ts = earliest_ts if reach_index == index else log[reach_index - first_index][1]
        latest_ts = reach_ts
        if view.closed_ts and view.applied_index <= reach_index:
            latest_ts = max(latest_ts, view.closed_ts)
        found.append(Base(index, earliest_ts, latest_ts, ckpt, connects))
    return found


def available_range(views: Sequence[CopyView]) -> tuple[int, int] | None:
    """(earliest, latest) cut time any copy serves; None when no copy can rebuild anything."""
    spans = [(b.earliest_ts, b.latest_ts) for view in views for b in bases(view) if b.earliest_ts <= b.latest_ts]
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


def plan_copy(view: CopyView, at_ts: int) -> Cut | None:
    """The cut at at_ts from this copy: its newest base covering at_ts, or None."""
    for base in reversed(bases(view)):
        if not base.earliest_ts <= at_ts <= base.latest_ts:
            continue
        cut_index, cut_ts = base.index, base.earliest_ts
        for index, ts in view.log if base.log_connects else ():
            if index <= base.index:
                continue
            if ts > at_ts:
                break
            cut_index, cut_ts = index, ts
        return Cut(view.name, base.index, base.checkpoint, cut_index, cut_ts)
    return None


def copy_order(copies: Sequence[tuple[str, int, int, int]], at_ts: int) -> list[str]:
    """Names of (name, closed_ts, applied_index, reach) in the order to try them: copies whose Status
    showed every commit <= at_ts applied first, then the most advanced (applied index or, for a
    copy that does not answer, how far its files reach)."""
    def key(copy: tuple[str, int, int, int]):
        name, closed_ts, applied_index, reach = copy
        return (not closed_ts >= at_ts > 0, -max(applied_index, reach), name)
    return [copy[0] for copy in sorted(copies, key=key)]


def order_copies(views: Sequence[CopyView], at_ts: int) -> list[CopyView]:
    by_name = {view.name: view for view in views}
    reach = {view.name: view.log[-1][0] if view.log else 0 for view in views}
    return [by_name[name] for name in copy_order(
        [(v.name, v.closed_ts, v.applied_index, reach[v.name]) for v in views], at_ts)]


def choose_cut(views: Sequence[CopyView], at_ts: int) -> Cut:
    """The cut from the first copy (in order_copies order) that covers at_ts; CloneError naming the range."""
    for view in order_copies(views, at_ts):
        cut = plan_copy(view, at_ts)
        if cut is not None:
            return cut
    span = available_range(views)
    if span is None:
        raise CloneError("no storage copy of the source holds a checkpoint or a log to clone from")
    earliest, latest = span
    if at_ts > latest:
        raise CloneError(f"time {timefmt.describe(at_ts)} is later than any source copy has applied; "
                         f"available: {timefmt.describe(earliest)} to {timefmt.describe(latest)}")
    if at_ts < earliest:
        raise CloneError(f"time {timefmt.describe(at_ts)} is earlier than the oldest checkpoint the source "
                         f"copies keep; available: {timefmt.describe(earliest)} to {timefmt.describe(latest)} "
                         "(an older time needs a restore from the backup: quorumdb restore)")
    raise CloneError(f"no single source copy covers {timefmt.describe(at_ts)} (copies' files cover parts of "
                     f"{timefmt.describe(earliest)} to {timefmt.describe(latest)})")


# --- reading the source's files (read-only) -------------------------------------------------
@dataclasses.dataclass
class CopyFiles:
    view: CopyView
    directory: pathlib.Path
    frames: dict[int, bytes]  # index -> the framed record, exactly as in the source's log
    # (file name, first index, last index) of each log file read whole, in order, except the
    # newest file (the one the source still appends to): these never change again.
    closed_files: tuple[tuple[str, int, int], ...] = ()


def read_checkpoint_header(path: pathlib.Path) -> CheckpointFile | None:
    """Header and trailer of a complete checkpoint file, read in O(1); None if absent or incomplete.

    The sha256 over the whole file is not checked here (that would cost time in proportion to the
    data); the clone's storage nodes verify it when they load the checkpoint, as after any restart.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER.size + _TRAILER.size:
            return None
        magic, applied_index, last_applied_ts, _closed_ts, _gc = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
        trailer = os.pread(fd, _TRAILER.size, size - _TRAILER.size)
    finally:
        os.close(fd)
    trailer_magic, _keys, body_length, _sha = _TRAILER.unpack(trailer)
    if magic != checkpoint_format.MAGIC or trailer_magic != checkpoint_format.TRAILER_MAGIC:
        return None
    if body_length != size - _TRAILER.size:
        return None
    return CheckpointFile(applied_index, last_applied_ts, size)


def read_log(directory: pathlib.Path, names: Sequence[str],
             closed: list[tuple[str, int, int]] | None = None) -> tuple[list[tuple[int, int]], dict[int, bytes]]:
    """The consecutive framed entries of the named log files (sorted), stopping at a torn tail or a gap.

    `closed`, when given, receives (name, first, last) of every file read to its end that has a
    successor among the names (the source appends only to its newest file).
    Raises SourceChanged when a file vanished (dropped behind a checkpoint while we read).
    """
    entries: list[tuple[int, int]] = []
    frames: dict[int, bytes] = {}
    for position, name in enumerate(names):
        named_first = int(_LOG_NAME.match(name).group(1))
        if entries and named_first != entries[-1][0] + 1:
            break  # a gap: what follows does not connect
        try:
            data = (directory / name).read_bytes()
        except FileNotFoundError:
            raise SourceChanged(f"{directory / name} vanished") from None
        offset = 0
        while offset + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, offset)
            end = offset + _FRAME.size + length
            if end > len(data):
                break  # being written right now, or torn by a crash: nothing after it counts
            payload = data[offset + _FRAME.size:end]
            if zlib.crc32(payload) != crc:
                break
            entry = common_pb2.Entry.FromString(payload)
            expected = entries[-1][0] + 1 if entries else named_first
            if entry.index != expected:
                break
            entries.append((entry.index, entry.ts))
            frames[entry.index] = data[offset:end]
            offset = end
        else:
            if closed is not None and position + 1 < len(names) and entries and entries[-1][0] >= named_first:
                closed.append((name, named_first, entries[-1][0]))
            continue
        if offset < len(data):
            break  # a torn or corrupt record ends the log
    return entries, frames


def listed_reach(directory: pathlib.Path) -> int:
    """How far a copy's files reach by their names alone (the newest log file's or checkpoint's index)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    indexes = [int(m.group(1)) for n in names for m in (_LOG_NAME.match(n) or _CHECKPOINT_NAME.match(n),) if m]
    return max(indexes, default=0)


def read_copy(directory: pathlib.Path, name: str, status: common_pb2.NodeStatus | None) -> CopyFiles:
    """List and read one copy's checkpoints and log, read-only."""
    try:
        listing = sorted(os.listdir(directory))
    except FileNotFoundError:
        listing = []
    checkpoints = []
    for file_name in listing:
        match = _CHECKPOINT_NAME.match(file_name)
        if match:
            header = read_checkpoint_header(directory / file_name)
            if header is not None and header.index == int(match.group(1)):
                checkpoints.append(header)
    closed: list[tuple[str, int, int]] = []
    log, frames = read_log(directory, [n for n in listing if _LOG_NAME.match(n)], closed)
    closed_ts = status.closed_ts if status is not None else 0
    applied_index = status.applied_index if status is not None else 0
    view = CopyView(name, tuple(checkpoints), tuple(log), closed_ts, applied_index)
    return CopyFiles(view, directory, frames, tuple(closed))


# --- the source's Status ---------------------------------------------------------------------
def storage_statuses(source: config_mod.ClusterConfig) -> dict[str, common_pb2.NodeStatus]:
    """Status of every storage copy that answers (concurrently, each within STATUS_TIMEOUT_S)."""
    nodes = source.storages
    credentials = toolcreds.source(source.data_dir, required=False)
    if credentials is None:
        return {}  # no credentials (e.g. a stopped cluster from before TLS): treated as not running
    replies = nodestatus.fetch_statuses(nodes, STATUS_TIMEOUT_S, credentials=credentials)
    return {node.name: reply for node, reply in zip(nodes, replies)
            if reply is not None and reply.service == "storage" and reply.name == node.name}


def wait_closed(source: config_mod.ClusterConfig, at_ts: int, wait_s: float,
                statuses_of: Callable = storage_statuses) -> dict[str, common_pb2.NodeStatus]:
    """Statuses once some copy reports closed_ts >= at_ts, or the last ones seen after wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        statuses = statuses_of(source)
        if not statuses or any(s.closed_ts >= at_ts for s in statuses.values()):
            return statuses
        if time.monotonic() >= deadline:
            return statuses
        time.sleep(STATUS_POLL_S)


# --- the clone ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CloneReport:
    data_dir: pathlib.Path
    base_port: int
    at_ts: int
    source_running: bool
    copy: str
    checkpoint_index: int
    cut_index: int
    cut_entry_ts: int
    entries_copied: int
    bytes_linked: int      # checkpoint and closed log file bytes shared with the source (hard links)
    bytes_copied: int      # bytes the clone adds: log tails, journal metadata, cluster.toml
    clone_bytes: int       # directory_bytes(NEW): the clone's own view of its size
    seconds: float         # in all
    wait_seconds: float    # waiting for a running copy to apply every commit up to T (0 when T is past)
    copy_seconds: float    # reading the source's files, linking, writing the clone's files
    attempts: int
    note: str

    def lines(self) -> list[str]:
        source = "running" if self.source_running else "not running (cut from its files alone)"
        checkpoint = f"checkpoint {self.checkpoint_index}" if self.checkpoint_index else "no checkpoint"
        lines = [
            f"cloned at {timefmt.describe(self.at_ts)}",
            (f"source: {source}; copy used: {self.copy}, {checkpoint}, log entries "
             f"{self.checkpoint_index + 1}..{self.cut_index} ({self.entries_copied} copied, the rest in "
             f"hard-linked log files)"),
            f"cut: index {self.cut_index}, its commit {timefmt.describe(self.cut_entry_ts)}",
            (f"bytes: {self.bytes_linked} linked (shared with the source, copy-on-write), "
             f"{self.bytes_copied} copied; clone directory {self.clone_bytes} bytes"),
            (f"took {self.seconds:.3f} s: {self.wait_seconds:.3f} s asking the source's copies for Status "
             f"(waiting for one to apply T), "
             f"{self.copy_seconds:.3f} s reading, linking and copying ({self.attempts} attempt(s))"),
        ]
        if self.note:
            lines.append(f"note: {self.note}")
        lines.append(f"start it: quorumdb up --data-dir {self.data_dir}   (base port {self.base_port})")
        return lines


def clone(source_dir: pathlib.Path | str, data_dir: pathlib.Path | str, at_time: str | None = None,
          base_port: int | None = None, wait_s: float = CLOSED_WAIT_S,
          clock: Callable[[], int] = time.time_ns) -> CloneReport:
    """Make the clone; CloneError (with nothing left behind in data_dir) when it cannot."""
    started = time.monotonic()
    source = _load_source(source_dir)
    data_dir = pathlib.Path(data_dir).resolve()
    try:
        newcluster.check_empty(data_dir)
    except newcluster.NewClusterError as error:
        raise CloneError(str(error)) from None
    if data_dir == source.data_dir or source.data_dir in data_dir.parents:
        raise CloneError(f"{data_dir} is inside the source cluster's data directory {source.data_dir}")
    try:
        at_ts = timefmt.parse_utc(at_time) if at_time is not None else None
    except timefmt.TimeFormatError as error:
        raise CloneError(str(error)) from None
    if base_port is not None and not 0 < base_port < 65536 - config_mod.PORT_BLOCK:
        raise CloneError(f"--base-port {base_port} is not a port block start")
    if base_port is not None and abs(base_port - source.base_port) < config_mod.PORT_BLOCK:
        raise CloneError(f"--base-port {base_port} overlaps the source cluster's ports "
                         f"[{source.base_port}, {source.base_port + config_mod.PORT_BLOCK}): the clone runs beside it")

    existed = data_dir.exists()
    created_top = data_dir  # the outermost directory a failure must remove (parents made on the way)
    while not created_top.parent.exists():
        created_top = created_top.parent
    try:
        return _clone(source, data_dir, at_ts, base_port, wait_s, clock, started)
    except BaseException:
        newcluster.discard(data_dir, existed)
        if not existed and created_top != data_dir:
            shutil.rmtree(created_top, ignore_errors=True)
        raise


def _load_source(source_dir: pathlib.Path | str) -> config_mod.ClusterConfig:
    directory = pathlib.Path(source_dir)
    if not directory.is_dir():
        raise CloneError(f"source {directory} does not exist or is not a directory")
    path = directory / config_mod.CONFIG_FILE
    if not path.is_file():
        raise CloneError(f"source {directory} has no {config_mod.CONFIG_FILE}: not a cluster's data directory")
    try:
        return config_mod.load(path)
    except (OSError, ValueError) as error:
        raise CloneError(f"source {path} cannot be read: {error}") from None



def _clone(source: config_mod.ClusterConfig, data_dir: pathlib.Path, at_ts: int | None, base_port: int | None,
           wait_s: float, clock: Callable[[], int], started: float) -> CloneReport:
    requested_ts = at_ts if at_ts is not None else clock()
    wait_started = time.monotonic()
    statuses = wait_closed(source, requested_ts, wait_s)
    copy_started = time.monotonic()
    running = bool(statuses)
    note = ""
    for attempt in range(1, COPY_ATTEMPTS_MAX + 1):
        try:
            if at_ts is None and not running:
                # Nobody answers: "now" is whatever the most advanced copy's files hold. Commits the
                # journal acknowledged but no copy stored yet are not in any storage file.
                copies = {n.name: read_copy(source.node_data_dir(n.name), n.name, None) for n in source.storages}
                span = available_range([c.view for c in copies.values()])
                if span is None:
                    raise CloneError(f"no storage copy under {source.data_dir / 'nodes'} holds a checkpoint or a log")
                cut_ts = span[1]
                note = ("the source is not running: cut at the latest commit a storage copy's local log holds "
                        "(commits only in the journal's files are not included)")
                cut = choose_cut([c.view for c in copies.values()], cut_ts)
                files = copies[cut.copy]
            else:
                cut_ts = requested_ts
                files, cut = _find_cut(source, statuses, cut_ts)
            linked, copied, entries_copied, clone_config = _write_clone(source, data_dir, base_port, files, cut)
        except SourceChanged:
            newcluster.discard(data_dir, existed=True)
            if attempt == COPY_ATTEMPTS_MAX:
                raise CloneError(f"the source's files kept changing under {COPY_ATTEMPTS_MAX} attempts "
                                 "(checkpoints dropped faster than they could be linked)") from None
            continue
        clone_bytes = newcluster.directory_bytes(data_dir)
        return CloneReport(
            data_dir=data_dir, base_port=clone_config.base_port, at_ts=cut_ts, source_running=running,
            copy=cut.copy, checkpoint_index=cut.base_index, cut_index=cut.cut_index, cut_entry_ts=cut.cut_entry_ts,
            entries_copied=entries_copied, bytes_linked=linked, bytes_copied=copied, clone_bytes=clone_bytes,
            seconds=time.monotonic() - started, wait_seconds=copy_started - wait_started,
            copy_seconds=time.monotonic() - copy_started, attempts=attempt, note=note)
    raise AssertionError("unreachable: the loop returns or raises")


def _find_cut(source: config_mod.ClusterConfig, statuses: dict[str, common_pb2.NodeStatus],
              at_ts: int) -> tuple[CopyFiles, Cut]:
    """Read copies one at a time, best first, until one covers at_ts; CloneError naming the range."""
    candidates = []
    for node in source.storages:
        status = statuses.get(node.name)
        candidates.append((node.name, status.closed_ts if status else 0, status.applied_index if status else 0,
                           listed_reach(source.node_data_dir(node.name))))
    views = []
    for name in copy_order(candidates, at_ts):
        files = read_copy(source.node_data_dir(name), name, statuses.get(name))
        cut = plan_copy(files.view, at_ts)
        if cut is not None:
            return files, cut
        views.append(files.view)
    choose_cut(views, at_ts)  # raises, naming the range the copies serve
    raise AssertionError("choose_cut found a cut plan_copy did not")


def _write_clone(source: config_mod.ClusterConfig, data_dir: pathlib.Path, base_port: int | None,
                 files: CopyFiles, cut: Cut) -> tuple[int, int, int, config_mod.ClusterConfig]:
    """Lay out the new data directory. Returns (bytes linked, bytes copied, entries copied, the clone's config)."""
    try:
        clone_config = newcluster.create(source, data_dir, base_port)
    except newcluster.NewClusterError as error:
        raise CloneError(str(error)) from None
    shared = shared_log_files(files.closed_files, cut.base_index, cut.cut_index)
    tail_from = shared[-1][2] + 1 if shared else cut.base_index + 1
    tail = b"".join(files.frames[index] for index in range(tail_from, cut.cut_index + 1))
    linked = copied = 0
    # Immutable files the clone shares with the source: the checkpoint and the closed log files.
    shared_names = [store_mod.checkpoint_file_name(cut.base_index)] if cut.checkpoint is not None else []
    shared_names += [name for name, _, _ in shared]
    for node in clone_config.storages:
        directory = clone_config.node_data_dir(node.name)
        directory.mkdir(parents=True, exist_ok=True)
        for name in shared_names:
            try:
                added = newcluster.link_or_copy(files.directory / name, directory / name)
            except FileNotFoundError:
                raise SourceChanged(f"{files.directory / name} vanished") from None
            copied += added
            if node is clone_config.storages[0] and not added:
                linked += (directory / name).stat().st_size  # one inode, however many names: counted once
        if tail:
            path = directory / store_mod.log_file_name(tail_from)
            with open(path, "wb") as f:
                f.write(tail)
                f.flush()
                os.fsync(f.fileno())
            copied += len(tail)
        fsync_dir(directory)
    newcluster.seed_journals(clone_config, cut.cut_index)
    copied += _bytes_outside_storage(clone_config)
    return linked, copied, cut.cut_index + 1 - tail_from, clone_config


def shared_log_files(closed: Sequence[tuple[str, int, int]], base_index: int,
                     cut_index: int) -> list[tuple[str, int, int]]:
    """The source's closed log files the clone can hard-link: consecutive from base_index + 1 and
    ending before the cut's file (the file holding the cut is copied up to the cut, so the clone
    appends to a file of its own, never to one it shares with the source)."""
    shared: list[tuple[str, int, int]] = []
    next_index = base_index + 1
    for name, first, last in closed:
        if last < next_index:
            continue
        if first != next_index or last >= cut_index:
            break
        shared.append((name, first, last))
        next_index = last + 1
    return shared


def _bytes_outside_storage(cluster: config_mod.ClusterConfig) -> int:
    storage_dirs = {cluster.node_data_dir(n.name) for n in cluster.storages}
    total = 0
    for dirpath, dirnames, filenames in os.walk(cluster.data_dir):
        if pathlib.Path(dirpath) in storage_dirs:
            dirnames.clear()
            continue
        total += sum(os.lstat(os.path.join(dirpath, name)).st_size for name in filenames)
    return total
