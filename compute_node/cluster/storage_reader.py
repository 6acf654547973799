"""Reads from the 6 storage copies (the network shell around read_core).

Each read is sent to 3 copies at once (own AZ first); when a copy fails or times
out, the next copy in order is asked, so that 3 answers arrive within
READ_QUORUM_TIMEOUT_S. A copy that has not answered within the hedge delay
(read_core.hedge_delay_s: a few times the recent median latency, at least 50 ms) gets
company: the next copy is asked too and the first 3 answers win, so a paused copy
costs a read about the hedge delay, not the RPC deadline; it is then suspected and
asked last by the next reads. The answers are merged by read_core (highest version_ts
wins); a disagreement is logged at WARNING. When fewer than 3 copies can answer,
the read fails with SQLSTATE 57P03 ("cannot reach a read quorum").

Single-copy reads (read_mode "single", from the cluster file or per read): the same
round asks copies in order until ONE answers (own AZ first; a failed, hedged-out or
not-caught-up copy hands over to the next, at most READ_SINGLE_COPIES_MAX of them), then
falls back to the quorum read within the same deadline. read_core's docstring says why
one answering copy is never stale. Counters (`reads`, `copies_asked`, `hedges`,
`single_fallbacks`) are in the compute node's Status detail.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, TypeVar

import grpc

from compute_node.cluster import read_core
from compute_node.cluster.read_stream import ReadStream
from quorumdb import config as config_mod
from quorumdb import errors, limits, rpc, runtime
from quorumdb.pb import storage_pb2, storage_pb2_grpc

log = logging.getLogger("compute_node.cluster.storage_reader")

T = TypeVar("T")
# ask(copy, timeout_s) sends one copy its request and returns the future of the reply;
# answer(copy, reply) checks and converts the reply (raises BadAnswer).
Ask = Callable[[str, float], "asyncio.Future"]
Answer = Callable[[str, Any], T]


class BadAnswer(Exception):
    """A copy answered, but its answer is malformed; it counts as a failed copy."""


class StorageReader:
    def __init__(
        self,
        cluster: config_mod.ClusterConfig,
        own_az: str,
        channels: rpc.Channels,
        monotonic: Callable[[], float] = runtime.monotonic,
    ) -> None:
        self.read_mode = getattr(cluster, "read_mode", "quorum")  # the default; a read may override it
        # How long a copy may wait for the read's ts to be closed (the cluster's setting, if any).
        self._wait_cap_ms = getattr(cluster, "read_wait_ms", 0) or limits.STORAGE_READ_WAIT_MS
        self._several_regions = bool(getattr(cluster, "global_file", ""))
        read_core.answers_needed(self.read_mode)  # an unknown mode fails here, at start
        self._copies = [(node.name, node.az) for node in cluster.storages]
        assert len(self._copies) >= read_core.READ_QUORUM, "a cluster needs at least 3 storage copies"
        self._stubs = {node.name: storage_pb2_grpc.StorageStub(channels.get(node.address)) for node in cluster.storages}
        # One read stream per copy (read_stream.py); QUORUMDB_UNARY_RPC=1 sends unary Get/Scan calls
        # instead, to measure the difference.
        self._streams = None if rpc.unary_rpc() else {
            name: ReadStream(name, stub) for name, stub in self._stubs.items()}
        self._own_az = own_az
        self._monotonic = monotonic
        self._suspect_until_s: dict[str, float] = {}
        self._behind_until_s: dict[str, float] = {}  # copies that refused a read as not caught up
        self._latencies = read_core.LatencyWindow()
        self.hedges = 0  # copies asked because another was slow (status, tests)
        self.reads = {mode: 0 for mode in read_core.READ_MODES}  # point chunks + scan pages, by mode
        self.copies_asked = 0  # storage RPCs sent for reads (a single read that nothing slowed: 1)
        self.single_fallbacks = 0  # single-copy reads that fell back to a quorum read
        # Scan traffic received from all copies asked (keys + values), for tests and tuning.
        self.scan_rows_received = 0
        self.scan_bytes_received = 0
        # The highest commit_ts of any version a copy has returned to this node: a read-only
        # transaction answers only once the clock is surely past what it may have seen
        # (QuorumBackend.read_only_commit_wait).
        self.newest_version_ts = 0

    # --- public API (used by Backend) ----------------------------------------------

    def status_detail(self) -> str:
        streams = (self._streams or {}).values()
        return (f"read_mode={self.read_mode} reads_quorum={self.reads['quorum']} "
                f"reads_single={self.reads['single']} copies_asked={self.copies_asked} "
                f"hedges={self.hedges} single_fallbacks={self.single_fallbacks} "
                f"read_stream_messages={sum(s.batches_sent for s in streams)} "
                f"read_stream_ops={sum(s.ops_sent for s in streams)}")

    async def get_many(self, keys: list[bytes], ts: int, read_mode: str | None = None,
                       counted: bool = True) -> dict[bytes, bytes | None]:
        """`counted=False`: not in the read counters (the node's own readiness probe)."""
        unique_keys = list(dict.fromkeys(keys))
        values: dict[bytes, bytes | None] = {}
        for first in range(0, len(unique_keys), limits.GET_KEYS_MAX):
            chunk = unique_keys[first : first + limits.GET_KEYS_MAX]
            values.update(await self._get_chunk(chunk, ts, read_mode or self.read_mode, counted))
        return values

    async def scan(self, start: bytes, end: bytes | None, ts: int, limit: int, *,
                   pushdown: bytes | None = None, read_mode: str | None = None):
        """One merged page of at most min(limit, SCAN_PAGE_MAX) rows; more=True: continue after the last row.

        With `pushdown` (quorumdb/pushdown.py spec) the copies filter and project, and the
        answer is (rows, more, resume_after): the page may be empty with more=True, and the
        next page starts strictly after resume_after."""
        assert limit > 0
        page_limit = min(limit, limits.SCAN_PAGE_MAX)
        read_mode = read_mode or self.read_mode
        if pushdown is not None:
            merged = await self._scan_page(start, end, ts, page_limit, read_mode, pushdown)
            return merged.rows, merged.more, merged.resume_after
        for _ in range(limits.SCAN_EMPTY_PAGES_MAX):
            merged = await self._scan_page(start, end, ts, page_limit, read_mode)
            if merged.rows or not merged.more:
                return merged.rows, merged.more
            # Copies that said more all stopped on keys no copy holds live: skip past them.
            assert merged.resume_after is not None
            start = merged.resume_after + b"\x00"
        raise errors.SqlError(errors.INTERNAL_ERROR, "storage copies keep disagreeing on a scan; try again")

    def _saw(self, versions) -> None:
        if versions:
            newest = max(v.version_ts for v in versions)
            if newest > self.newest_version_ts:
                self.newest_version_ts = newest

    # --- one quorum round ----------------------------------------------------------

    async def close(self) -> None:
        for stream in (self._streams or {}).values():
            await stream.close()

    def _send(self, name: str, kind: str, request, timeout_s: float) -> asyncio.Future:
        """A future of one copy's reply to a Get or Scan: an op on its read stream (no task, no
        timer: the read's round enforces timeout_s), or a unary call in a task."""
        if self._streams is None:
            method = self._stubs[name].Get if kind == "get" else self._stubs[name].Scan
            return asyncio.ensure_future(method(request, timeout=timeout_s))
        op = storage_pb2.ReadOp(get=request) if kind == "get" else storage_pb2.ReadOp(scan=request)
        return self._streams[name].request(op)

    async def _get_chunk(self, keys: list[bytes], ts: int, read_mode: str,
                         counted: bool = True) -> dict[bytes, bytes | None]:
        def ask(name: str, timeout_s: float) -> asyncio.Future:
            request = storage_pb2.GetRequest(keys=keys, ts=ts, wait_ms=_wait_ms(timeout_s, self._wait_cap_ms))
            return self._send(name, "get", request, timeout_s)

        def answer(name: str, reply) -> list[read_core.Version]:
            versions = [_version(v) for v in reply.versions]
            self._saw(reply.versions)
            why = read_core.check_get_answer(keys, versions)
            if why is not None:
                raise BadAnswer(why)
            return versions

        answers = await self._read(ask, answer, f"read of {len(keys)} key(s) at ts {ts}", read_mode, counted)
        merged = read_core.merge_point(keys, [versions for _, versions in answers])
        if merged.disagreements:
            self._log_disagreements("get", ts, merged.disagreements, answers)
        return merged.values

    async def _scan_page(self, start: bytes, end: bytes | None, ts: int, limit: int, read_mode: str,
                         pushdown: bytes | None = None) -> read_core.ScanMerge:
        def ask(name: str, timeout_s: float) -> asyncio.Future:
            request = storage_pb2.ScanRequest(
                start=start, end=end or b"", ts=ts, limit=limit, wait_ms=_wait_ms(timeout_s, self._wait_cap_ms),
                pushdown=pushdown or b"",
            )
            return self._send(name, "scan", request, timeout_s)

        def answer(name: str, reply) -> read_core.ScanPage:
            self.scan_rows_received += len(reply.versions)
            self.scan_bytes_received += sum(len(v.key) + len(v.value) for v in reply.versions)
            page = read_core.ScanPage(name, tuple(_version(v) for v in reply.versions), reply.more,
                                      reply.resume_key or None)
            self._saw(reply.versions)
            why = read_core.check_scan_page(page, start, end or None, limit)
            if why is not None:
                raise BadAnswer(why)
            return page

        answers = await self._read(ask, answer, f"scan from {start.hex()} at ts {ts}", read_mode)
        merged = read_core.merge_scan([page for _, page in answers], limit)
        if merged.disagreements:
            self._log_disagreements("scan", ts, merged.disagreements, answers)
        return merged

    async def _read(
        self, ask: Ask, answer: Answer, what: str, read_mode: str, counted: bool = True
    ) -> list[tuple[str, T]]:
        """The answers a read in `read_mode` merges: 1 (single) or READ_QUORUM (quorum)."""
        needed = read_core.answers_needed(read_mode)
        if counted:
            self.reads[read_mode] += 1
        deadline = asyncio.get_running_loop().time() + limits.READ_QUORUM_TIMEOUT_S
        if needed == read_core.READ_QUORUM:
            return await self._quorum(ask, answer, what, deadline, counted)
        order = read_core.order_copies(self._copies, self._own_az, self._suspect_until_s, self._monotonic(),
                                       behind_until_s=self._behind_until_s)
        answers: list[tuple[str, T]] = []
        failures = await self._round(ask, answer, order[: limits.READ_SINGLE_COPIES_MAX], answers, deadline, needed,
                                     counted)
        if answers:
            if failures:
                log.info("%s (single copy): answered after failures: %s", what, "; ".join(failures))
            return answers
        self.single_fallbacks += 1
        log.info("%s: no single copy answered (%s); falling back to a quorum read", what, "; ".join(failures))
        return await self._quorum(ask, answer, what, deadline, counted)

    async def _quorum(
        self, ask: Ask, answer: Answer, what: str, deadline: float, counted: bool = True
    ) -> list[tuple[str, T]]:
        """Answers of READ_QUORUM copies, asking the next copy whenever one fails.

        When every copy was tried and fewer than 3 answered, the copies that failed are
        asked again after READ_RETRY_PAUSE_S (a restarted copy, or a channel still in
        reconnect backoff), at most READ_QUORUM_ROUNDS_MAX rounds within the deadline.
        """
        loop = asyncio.get_running_loop()
        answers: list[tuple[str, T]] = []
        failures: list[str] = []
        for round_number in range(limits.READ_QUORUM_ROUNDS_MAX):
            if round_number > 0:
                if loop.time() + limits.READ_RETRY_PAUSE_S >= deadline:
                    break
                await asyncio.sleep(limits.READ_RETRY_PAUSE_S)
            answered = {name for name, _ in answers}
            order = [
                name
                for name in read_core.order_copies(self._copies, self._own_az, self._suspect_until_s, self._monotonic())
                if name not in answered
            ]
            failures = await self._round(ask, answer, order, answers, deadline, read_core.READ_QUORUM, counted)
            if len(answers) >= read_core.READ_QUORUM:
                break
        if len(answers) < read_core.READ_QUORUM:
            log.warning("%s: no read quorum (%d of 3 answered): %s", what, len(answers), "; ".join(failures))
            raise errors.SqlError(
                errors.CANNOT_CONNECT_NOW,
                f"cannot reach a read quorum (3 of {len(self._copies)} storage copies): "
                f"{len(answers)} answered",
                detail="; ".join(failures),
                hint=_quorum_hint(failures, self._several_regions),
            )
        if failures:
            log.info("%s: answered after failures: %s", what, "; ".join(failures))
        return answers

    async def _round(
        self,
        ask: Ask,
        answer: Answer,
        order: list[str],
        answers: list[tuple[str, T]],
        deadline: float,
        needed: int,
        counted: bool = True,
    ) -> list[str]:
        """Ask copies in `order` until `needed` answered (in all) or all were tried; appends to
        `answers`, returns this round's failures. Copies slower than the hedge delay stop
        counting as on their way, so the next copy is asked too (see the module docstring); a
        copy silent past its own timeout counts as failed (DEADLINE_EXCEEDED)."""
        loop = asyncio.get_running_loop()
        failures: list[str] = []
        pending: dict[asyncio.Future, tuple[str, float, float]] = {}  # -> (copy, asked at, its deadline)
        slow: set[asyncio.Future] = set()
        next_position = 0
        hedge_s = read_core.hedge_delay_s(self._latencies.median_s())
        try:
            while len(answers) < needed:
                now = loop.time()
                remaining_s = deadline - now
                if remaining_s <= 0:
                    break
                for future, (name, asked_at, copy_deadline) in list(pending.items()):
                    if now >= copy_deadline:
                        future.cancel()
                        del pending[future]
                        slow.discard(future)
                        failures.append(f"{name}: DEADLINE_EXCEEDED no answer within "
                                        f"{copy_deadline - asked_at:.1f} s")
                        self._suspect_until_s[name] = self._monotonic() + limits.STORAGE_SUSPECT_S
                    elif now - asked_at >= hedge_s:
                        slow.add(future)
                launch = read_core.copies_to_launch(len(answers), len(pending) - len(slow), len(order) - next_position,
                                                    needed)
                for _ in range(launch):
                    name = order[next_position]
                    next_position += 1
                    if counted:
                        self.copies_asked += 1
                        if slow:
                            self.hedges += 1
                    timeout_s = min(limits.STORAGE_READ_TIMEOUT_S, remaining_s)
                    pending[ask(name, timeout_s)] = (name, now, now + timeout_s)
                if not pending:
                    break
                wait_s = min(remaining_s, min(copy_deadline for _, _, copy_deadline in pending.values()) - now)
                on_time = [asked_at for future, (_, asked_at, _) in pending.items() if future not in slow]
                if on_time and next_position < len(order):
                    wait_s = min(wait_s, max(0.0, min(on_time) + hedge_s - now))
                done, _ = await asyncio.wait(pending, timeout=max(0.0, wait_s), return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    name, asked_at, _ = pending.pop(future)
                    slow.discard(future)
                    try:
                        answers.append((name, answer(name, future.result())))
                        self._latencies.record(loop.time() - asked_at)
                        self._suspect_until_s.pop(name, None)
                        self._behind_until_s.pop(name, None)
                    except (grpc.aio.AioRpcError, BadAnswer) as error:
                        failures.append(f"{name}: {_describe(error)}")
                        self._suspect_until_s[name] = self._monotonic() + limits.STORAGE_SUSPECT_S
                        if _not_caught_up(error):
                            self._behind_until_s[name] = self._monotonic() + limits.READ_BEHIND_S
        finally:
            for future, (name, _, _) in pending.items():
                future.cancel()
                if len(answers) < needed:
                    failures.append(f"{name}: no answer within the read deadline")
                if future in slow:  # outpaced by a hedge: ask it last for a while
                    self._suspect_until_s[name] = self._monotonic() + limits.STORAGE_SUSPECT_S
        return failures

    def _log_disagreements(self, kind: str, ts: int, keys: list[bytes], answers: list[tuple[str, object]]) -> None:
        shown = ", ".join(key.hex() for key in keys[:5])
        log.warning(
            "storage copies %s disagree on %s at ts %d for %d key(s): %s",
            [name for name, _ in answers], kind, ts, len(keys), shown,
        )


def _quorum_hint(failures: list[str], several_regions: bool = False) -> str:
    if failures and all("not caught up" in failure for failure in failures):
        # Every copy is alive but none has been told that the snapshot time is closed:
        # the journal is not advancing (no adjudicator leader, or no journal majority), or, with
        # regions, this region no longer hears the others.
        cause = ("is this region cut off from the other regions (voted out: `quorumdb status`), or is "
                 "no adjudicator leading?" if several_regions else
                 "is the adjudicator leader or a majority of the journal down?")
        return ("The storage copies are up but the journal has not delivered anything up to this "
                f"transaction's start time: {cause} QuorumDB refuses rather than return stale data.")
    return "Storage copies are down or not caught up; retry when more are back."


def _wait_ms(timeout_s: float, cap_ms: int = limits.STORAGE_READ_WAIT_MS) -> int:
    """How long a copy may wait for its closed timestamp: the wait must end before the RPC deadline.
    At least 1 ms: 0 would mean the storage node's default."""
    return max(1, min(cap_ms, int(timeout_s * 1000) - 500))


def _version(version: storage_pb2.Version) -> read_core.Version:
    return read_core.Version(version.key, version.value, version.version_ts, version.found)


def _not_caught_up(error: Exception) -> bool:
    """The copy is alive but refused: its closed timestamp had not reached the read's ts."""
    return (isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE
            and "not caught up" in (error.details() or ""))


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name} {error.details() or ''}".strip()
    return str(error)
