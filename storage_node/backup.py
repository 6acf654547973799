"""The storage copy's continuous backup: the async shell around storage_node/backup_core.py.

Every storage copy runs a BackupAgent. Each cycle (every POLL_S, longer after failures) it reads
the store's newest manifest (so every copy learns the uploaded index, which gates dropping its
local log: SegmentState.backup_uploaded_index), and, while backup_core.Takeover says this copy
is the uploader, performs backup_core.next_step: a base, log objects plus a manifest, or a
refreshed manifest; then retention at most every RETENTION_EVERY_S. Object keys and contents
are quorumdb/backup_layout.py's.

The store must never slow storage down or stop it: every store call runs in this agent's own
two worker threads (never the default pool the local log's appends use) with a timeout, and
every failure is logged (at most every FAILURE_LOG_EVERY_S), shown in Status and retried with
backoff. While the store is unreachable nothing is uploaded, so the local log grows: no
un-uploaded entry is dropped.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Callable, TypeVar

from quorumdb import backup_layout as layout
from quorumdb import limits
from quorumdb.config import ClusterConfig, NodeConfig
from quorumdb.objectstore import ObjectExists, ObjectStoreError, open_store
from storage_node import backup_core as core
from storage_node import checkpoint

log = logging.getLogger("storage_node.backup")

FAILURE_LOG_EVERY_S = 30.0
T = TypeVar("T")


class BackupAgent:
    def __init__(self, cluster: ClusterConfig, node: NodeConfig, state, now_s: Callable[[], float] = time.monotonic):
        self.cluster = cluster
        self.node = node
        self.state = state
        self.location = cluster.backup_location
        self.now_s = now_s
        self.rank = core.rank_of([n.name for n in cluster.storages], node.name)
        self.takeover = core.Takeover(node.name, self.rank, now_s())
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="backup")
        self._store = None
        self.uploader = False
        self.uploaded_index = 0
        self.restorable_ts = 0
        self.base_index = 0
        self.has_base = False
        self.newest_base_bytes = 0
        self.log_bytes_after_base = 0
        self._log_bytes_base_index: int | None = None  # log_bytes_after_base counts from this base
        self._manifest_key: str | None = None
        self._manifest_uploader = ""
        self.last_error = ""
        self.failures = 0
        self._last_failure_log_s = -FAILURE_LOG_EVERY_S
        self.last_ship_s = 0.0
        self.last_manifest_s = 0.0
        self.last_retention_s = now_s()
        self.config_uploaded = False
        self.bytes_uploaded = 0
        state.backup = self
        state.backup_uploaded_index = 0  # learnt from the store; until then no log leaves this copy

    # --- status ------------------------------------------------------------------------------
    def status_fields(self) -> dict:
        line = core.describe(self.location, self.uploader, self.uploaded_index, self.restorable_ts, time.time_ns(),
                             self.state.segment.applied_index, self.last_error, self.state.segment_log.size_bytes)
        return {"backup_uploader": self.uploader, "backup_uploaded_index": self.uploaded_index,
                "backup_restorable_ts": self.restorable_ts, "backup": line}

    # --- the store, bounded --------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args, data_bytes: int = 0) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        timeout_s = core.call_timeout_s(data_bytes)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise ObjectStoreError(f"{self.location}: {getattr(fn, '__name__', 'call')} took more than "
                                   f"{timeout_s:.0f}s") from None

    def _open(self):
        if self._store is None:
            self._store = open_store(self.location)
            self._store.check()
        return self._store

    async def store(self):
        return await self._call(self._open)

    # --- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        log.info("backup to %s: rank %d of the storage copies", self.location, self.rank)
        try:
            while True:
                try:
                    await self.cycle()
                    if self.failures:
                        log.info("backup to %s works again after %d failures", self.location, self.failures)
                    self.failures = 0
                    self.last_error = ""
                except (ObjectStoreError, layout.BackupLayoutError, checkpoint.CorruptCheckpoint, OSError,
                        ValueError, ImportError) as error:
                    self._failed(error)
                except Exception as error:  # noqa: BLE001 - whatever a store client raises, storage serves on
                    if not self.failures:
                        log.exception("backup to %s: unexpected error", self.location)
                    self._failed(error)
                poll_s = core.POLL_S if self.uploader else core.STANDBY_POLL_S
                await asyncio.sleep(max(poll_s, core.backoff_s(self.failures)))
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:300]
        now = self.now_s()
        if now - self._last_failure_log_s >= FAILURE_LOG_EVERY_S or self.failures == 1:
            self._last_failure_log_s = now
            log.warning("backup to %s failed (%d in a row; the local log is kept, now %d bytes): %s",
                        self.location, self.failures, self.state.segment_log.size_bytes, self.last_error)

    def copy_view(self) -> core.CopyView:
        state = self.state
        segment = state.segment  # applied_index and closed_ts in one instant (no await between)
        return core.CopyView(segment.applied_index, segment.closed_ts, state.segment_log.first_index,
                             state.segment_log.last_index, state.checkpoint_index)

    def store_view(self) -> core.StoreView:
        return core.StoreView(self.has_base, self.base_index, self.newest_base_bytes, self.uploaded_index,
                              self.restorable_ts, self.log_bytes_after_base)

    async def cycle(self) -> None:
        if self.state.replaying:
            return
        store = await self.store()
        await self.learn_manifest(store)
        now = self.now_s()
        copy = self.copy_view()
        self.uploader = self.takeover.active(now, core.has_work(copy, self.store_view()))
        if not self.uploader:
            return
        await self.learn_bases(store)
        if not self.config_uploaded:
            await self._put(store, layout.CLUSTER_CONFIG_KEY, self.cluster.to_toml().encode())
            self.config_uploaded = True
        step = core.next_step(copy, self.store_view(), now, self.last_ship_s, self.last_manifest_s,
                              self.takeover.stalled_s(now), self.cluster.backup_base_log_bytes)
        match step:
            case core.Idle():
                pass
            case core.GenesisBase():
                await self.put_genesis(store)
            case core.CheckpointBase():
                await self.put_checkpoint_base(store, step)
            case core.ShipLog():
                await self.ship(store, step)
            case core.RefreshManifest():
                await self.put_manifest(store, step.uploaded_index, step.restorable_ts)
        if now - self.last_retention_s >= core.RETENTION_EVERY_S:
            self.last_retention_s = now
            await self.retention(store)

    async def learn_manifest(self, store) -> None:
        """The newest manifest: what every copy must know (the uploaded index gates its log drops)."""
        manifests = await self._call(store.list, layout.MANIFEST_PREFIX)
        parsed = [(info.key, *p) for info in manifests if (p := layout.parse_manifest_key(info.key)) is not None]
        if parsed:
            key, index, _ = max(parsed, key=lambda m: (m[1], m[2]))
            if key != self._manifest_key:
                manifest = layout.decode_manifest(await self._call(store.get, key))
                self._manifest_key = key
                self._manifest_uploader = manifest.uploader
            self.uploaded_index = max(self.uploaded_index, index)
            self.restorable_ts = max(self.restorable_ts, max(m[2] for m in parsed))
            self.takeover.observe(key, self._manifest_uploader, self.now_s())
            self.has_base = True  # a manifest is only written after a base
        await self.state.learn_uploaded_index(self.uploaded_index)

    async def learn_bases(self, store) -> None:
        """The newest base, and the log bytes after it (only the uploader needs them)."""
        bases = [b for info in await self._call(store.list, layout.BASE_PREFIX)
                 if (b := layout.parse_base(info.key, info.size)) is not None]
        self.has_base = bool(bases)
        if bases:
            newest = max(bases, key=lambda b: b.index)
            self.base_index, self.newest_base_bytes = newest.index, newest.size
            if self._log_bytes_base_index != newest.index:
                logs = await self._call(store.list, layout.LOG_PREFIX)
                self.log_bytes_after_base = sum(o.size for info in logs
                                                if (o := layout.parse_log(info.key, info.size)) and o.first > newest.index)
                self._log_bytes_base_index = newest.index

    async def _put(self, store, key: str, data: bytes) -> None:
        try:
            await self._call(store.put, key, data, data_bytes=len(data))
        except ObjectExists:
            # Another copy wrote this key first (its checkpoint of the same index may differ in GC'd
            # versions, a manifest in its uploader): either serves equally.
            log.info("backup: %s exists already (another copy wrote it)", key)
            return
        self.bytes_uploaded += len(data)

    async def put_genesis(self, store) -> None:
        data = b"".join(checkpoint.encode(checkpoint.CheckpointHeader(0, 0, 0, 0), [], limits.CHECKPOINT_CHUNK_BYTES))
        await self._put(store, layout.base_key(0, 0), data)
        log.info("backup: uploaded the genesis base")
        self.has_base, self.base_index, self.newest_base_bytes = True, 0, len(data)

    async def put_checkpoint_base(self, store, step: core.CheckpointBase) -> None:
        path = self.state.checkpoints.path(step.index)
        try:
            data = await self._call(self.state.checkpoints.disk.read, path)
        except FileNotFoundError:
            return  # replaced by a newer checkpoint meanwhile: the next cycle takes that one
        header = checkpoint.verify(data)
        assert header.applied_index == step.index, (header.applied_index, step.index)
        started = self.now_s()
        await self._put(store, layout.base_key(step.index, header.last_applied_ts), data)
        log.info("backup: uploaded checkpoint %d as a base (%d bytes, %.0f ms)%s", step.index, len(data),
                 (self.now_s() - started) * 1000,
                 f"; entries ({self.uploaded_index}, {step.index}) were never uploaded: times in between are "
                 "not restorable" if step.rebase else "")
        self.has_base, self.base_index, self.newest_base_bytes = True, step.index, len(data)
        self.log_bytes_after_base, self._log_bytes_base_index = 0, step.index
        if step.index > self.uploaded_index:
            # Every commit with ts <= the checkpoint's closed_ts is in it: a restorable point already.
            await self.put_manifest(store, step.index, max(header.closed_ts, header.last_applied_ts))

    async def ship(self, store, step: core.ShipLog) -> None:
        """Log objects for [from_index, through_index] (about CYCLE_BYTES_MAX at most), then a manifest."""
        self.last_ship_s = self.now_s()
        entries = []
        sizes: list[int] = []  # each entry's, computed once: the batch bound and the object split use them
        read_bytes = 0
        next_index = step.from_index
        while next_index <= step.through_index and read_bytes < core.CYCLE_BYTES_MAX:
            chunk = await self._call(self.state.segment_log.read, next_index,
                                     min(limits.ENTRIES_PER_MESSAGE_MAX, step.through_index - next_index + 1),
                                     limits.READ_LOG_BYTES_MAX)
            chunk = [e for e in chunk if e.index <= step.through_index]
            if not chunk or chunk[0].index != next_index:
                break  # the local log changed under us (a peer checkpoint replaced it): ship what we have
            entries += chunk
            chunk_sizes = [e.ByteSize() for e in chunk]
            sizes += chunk_sizes
            read_bytes += sum(chunk_sizes)
            next_index = chunk[-1].index + 1
        if not entries:
            raise ObjectStoreError(f"local log does not hold index {step.from_index} any more")
        for start, stop in core.split_for_objects(sizes):
            part = entries[start:stop]
            data = layout.encode_log(part)
            await self._put(store, layout.log_key(part[0].index, part[-1].index, part[0].ts, part[-1].ts), data)
            self.log_bytes_after_base += len(data)
        last = entries[-1]
        restorable_ts = core.restorable_ts_after(last.index, step.through_index, step.closed_ts, last.ts)
        await self.put_manifest(store, last.index, restorable_ts)

    async def put_manifest(self, store, uploaded_index: int, restorable_ts: int) -> None:
        manifest = layout.Manifest(uploaded_index, restorable_ts, self.base_index, self.node.name, time.time_ns())
        key = layout.manifest_key(uploaded_index, restorable_ts)
        await self._put(store, key, layout.encode_manifest(manifest))
        self.last_manifest_s = self.now_s()
        self.uploaded_index = max(self.uploaded_index, uploaded_index)
        self.restorable_ts = max(self.restorable_ts, restorable_ts)
        await self.state.learn_uploaded_index(self.uploaded_index)
        self._manifest_key, self._manifest_uploader = key, self.node.name
        self.takeover.observe(key, self.node.name, self.now_s())
        # Older manifests are superseded: keep the newest two (one may be being read right now).
        manifests = sorted(info.key for info in await self._call(store.list, layout.MANIFEST_PREFIX))
        for old in manifests[:-2]:
            await self._call(store.delete, old)

    async def retention(self, store) -> None:
        listing = await self._call(store.list, "")
        view = layout.BackupView.from_listing((info.key, info.size) for info in listing)
        pinned: set[str] = set()
        for key in view.snapshot_keys:
            # A snapshot that cannot be read might pin anything: no retention this round.
            snapshot = layout.decode_snapshot(await self._call(store.get, key))
            pinned |= layout.snapshot_pins(snapshot)
        doomed = layout.plan_retention(view, time.time_ns(), int(self.cluster.backup_retention_s * 1e9), pinned)
        for key in doomed:
            await self._call(store.delete, key)
        if doomed:
            log.info("backup retention: removed %d objects older than %.0fs (%d pinned by snapshots kept)",
                     len(doomed), self.cluster.backup_retention_s, len(pinned))
