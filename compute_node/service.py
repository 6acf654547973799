"""The Compute gRPC servicer: sessions in, SQL results out.

A thin shell: sessions (compute_node.sessions.session.Session) do the SQL; this module
keeps the session table (bounded by SESSIONS_MAX, idle ones reaped after
SESSION_IDLE_S), serializes requests on one session with a lock, bounds each
Execute by STATEMENT_TIMEOUT_S and converts results to protobuf.

A statement that times out answers 57014 and the session stays open, except when
the deadline struck while a commit was in flight: then the outcome is unknown and
the answer is 40003, never a guess.
"""
from __future__ import annotations

import asyncio
import dataclasses
import decimal
import functools
import logging
from typing import Any, Callable, Protocol

import grpc

from quorumdb import config as config_mod
from quorumdb import errors, limits, regions, runtime, sqllex
from compute_node.sql.catalog_functions import RegOid
from quorumdb.pb import common_pb2, compute_pb2, compute_pb2_grpc

log = logging.getLogger("compute_node.service")

SINT64_MIN = -(2**63)
SINT64_MAX = 2**63 - 1


class SessionLike(Protocol):
    transaction_status: str

    async def execute(self, sql: str, params: list[str] | None = None) -> list[Any]: ...

    async def close(self) -> None: ...


class CommitTracker:
    """A per-session view of the Backend that knows whether a commit is in flight, and the
    session's read mode (`SET quorumdb.read_mode`; None: the cluster's)."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.commit_in_flight = False
        self.session_read_mode: str | None = None
        self.last_commit_ts = 0  # SHOW quorumdb.last_commit_ts: what a client records to check a restore
        # Global Database (compute_node/cluster/region_view.py): on a secondary region, writes are refused
        # unless forwarded to the primary (SET quorumdb.write_forwarding = session | global).
        self.write_forwarding = "off"
        self._region_floor_ts = 0  # a secondary session's reads never go back in time

    def _secondary(self):
        """This node's RegionView when its region does not accept writes (None otherwise)."""
        view = getattr(self._backend, "region_view", None)
        if view is None or not view.enabled or view.is_writer:
            return None
        return view

    def start_ts(self) -> int:
        view = self._secondary()
        if view is None:
            return self._backend.start_ts()
        point = view.point
        if point.role == "fenced":
            raise errors.SqlError(errors.CANNOT_CONNECT_NOW, f"region {view.region} serves nothing: {point.message}",
                           hint="connect to the primary region's endpoint (quorumdb global status)")
        ts = max(point.replicated_ts, self._region_floor_ts)
        if ts <= 0:
            raise errors.SqlError(errors.CANNOT_CONNECT_NOW,
                           f"region {view.region} has not replicated anything from the primary yet",
                           hint="retry in a moment; quorumdb global status shows the replication lag")
        self._region_floor_ts = ts
        return ts

    async def before_transaction(self) -> None:
        """write_forwarding = global on a secondary: a new transaction first waits until this
        region has replicated the primary's state as of now (commit-wait makes every commit
        acknowledged before now lie below now().latest)."""
        view = self._secondary()
        if view is None or self.write_forwarding != "global":
            return
        target = self._backend.now_ts()
        if not await view.wait_replicated(target, limits.FORWARD_VISIBLE_TIMEOUT_S):
            raise errors.SqlError(errors.CANNOT_CONNECT_NOW,
                           f"region {view.region} did not replicate the primary's current state within "
                           f"{limits.FORWARD_VISIBLE_TIMEOUT_S:.0f} s (write_forwarding = global)")

    def replica_lag(self) -> str:
        """SHOW quorumdb.replica_lag: how far this region is behind its primary."""
        view = getattr(self._backend, "region_view", None)
        if view is None or not view.enabled:
            return "0 ms, 0 entries (no regions)"
        point = view.point
        if view.is_writer:
            return f"0 ms, 0 entries ({point.role or 'primary'})"
        entries = max(0, point.primary_commit_index - point.replicated_index)
        return f"{regions.lag_text(point.lag_ms)}, {entries} entries ({point.role} of {point.primary_region})"

    def now_ts(self) -> int:
        return self._backend.now_ts()

    async def get_many(self, keys, ts):
        if self.session_read_mode is None:
            return await self._backend.get_many(keys, ts)
        return await self._backend.get_many(keys, ts, read_mode=self.session_read_mode)

    async def scan(self, start, end, ts, limit):
        if self.session_read_mode is None:
            return await self._backend.scan(start, end, ts, limit)
        return await self._backend.scan(start, end, ts, limit, read_mode=self.session_read_mode)

    async def commit(self, start_ts, writes, lock_keys, txn_id, private_keyspace=False):
        view = self._secondary()
        if view is not None:
            self._check_forwarding(view)
        self.commit_in_flight = True
        try:
            if view is not None:  # write forwarding: the primary region's leader decides
                commit_ts = await view.forward_commit(start_ts, writes, lock_keys, txn_id, private_keyspace)
            elif private_keyspace:
                commit_ts = await self._backend.commit(start_ts, writes, lock_keys, txn_id, private_keyspace=True)
            else:  # the four-argument form every backend takes (test doubles too)
                commit_ts = await self._backend.commit(start_ts, writes, lock_keys, txn_id)
        except asyncio.CancelledError:
            raise  # cancelled mid-commit (statement deadline): the flag stays set, the outcome is unknown
        except BaseException:
            self.commit_in_flight = False
            raise
        self.commit_in_flight = False
        self.last_commit_ts = commit_ts
        if view is not None:
            # The session reads its own write from now on: answer once this region holds it.
            if not await view.wait_replicated(commit_ts, limits.FORWARD_VISIBLE_TIMEOUT_S):
                log.warning("forwarded commit %d not replicated here within %.0f s", commit_ts,
                            limits.FORWARD_VISIBLE_TIMEOUT_S)
            self._region_floor_ts = max(self._region_floor_ts, commit_ts)
        return commit_ts

    def _check_forwarding(self, view) -> None:
        """A write in a region that does not accept them: 25006 unless this session forwards it."""
        point = view.point
        if self.write_forwarding != "off" and point.role == "secondary":
            return
        why = (point.message if point.role != "secondary" else
               f"region {view.region} is a read-only secondary of the global database (primary: "
               f"{point.primary_region})")
        raise errors.SqlError(errors.READ_ONLY_SQL_TRANSACTION, f"cannot execute a write in a read-only region: {why}",
                              hint="SET quorumdb.write_forwarding = 'session' (or 'global') sends writes to the "
                                   "primary region; or connect to the writer endpoint")

    def __getattr__(self, name: str):  # anything else the session may use (clock, leader, ...)
        attribute = getattr(self._backend, name)
        if name == "scan_filtered" and attribute is not None and self.session_read_mode is not None:
            return functools.partial(attribute, read_mode=self.session_read_mode)
        return attribute


@dataclasses.dataclass
class _SessionEntry:
    session: SessionLike
    tracker: CommitTracker
    lock: asyncio.Lock
    last_used_s: float


# session_factory(backend_view, session_id) -> Session
SessionFactory = Callable[[Any, str], SessionLike]


class ComputeService(compute_pb2_grpc.ComputeServicer):
    def __init__(
        self,
        node: config_mod.NodeConfig,
        backend,
        session_factory: SessionFactory,
        health: Callable[[], str] = lambda: "ok",
        engine_detail: Callable[[], str] | None = None,
        statement_timeout_s: float = limits.STATEMENT_TIMEOUT_S,
        sessions_max: int = limits.SESSIONS_MAX,
        session_idle_s: float = limits.SESSION_IDLE_S,
        monotonic: Callable[[], float] = runtime.monotonic,
        region: str = "",
    ) -> None:
        self._node = node
        self._region = region  # the node's region in a cluster of several ("" otherwise)
        self._backend = backend
        self._session_factory = session_factory
        self._health = health
        self._engine_detail = engine_detail
        self._statement_timeout_s = statement_timeout_s
        self._sessions_max = sessions_max
        self._session_idle_s = session_idle_s
        self._monotonic = monotonic
        self._sessions: dict[str, _SessionEntry] = {}

    # --- sessions --------------------------------------------------------------------

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def OpenSession(self, request, context):
        if len(self._sessions) >= self._sessions_max:
            await self.reap_idle()
        if len(self._sessions) >= self._sessions_max:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{errors.TOO_MANY_CONNECTIONS}: too many sessions on {self._node.name} "
                f"(at most {self._sessions_max})",
            )
        session_id = runtime.new_id()
        tracker = CommitTracker(self._backend)
        session = self._session_factory(tracker, session_id)
        self._sessions[session_id] = _SessionEntry(session, tracker, asyncio.Lock(), self._monotonic())
        log.debug("session %s opened by %r", session_id, request.client)
        return compute_pb2.OpenSessionReply(session_id=session_id)

    async def CloseSession(self, request, context):
        entry = self._sessions.pop(request.session_id, None)
        if entry is not None:
            async with entry.lock:
                await _close_quietly(entry.session)
        return compute_pb2.CloseSessionReply()

    async def reap_idle(self) -> int:
        """Close sessions idle for longer than session_idle_s; returns how many."""
        now_s = self._monotonic()
        idle = [
            session_id
            for session_id, entry in self._sessions.items()
            if not entry.lock.locked() and now_s - entry.last_used_s > self._session_idle_s
        ]
        for session_id in idle:
            entry = self._sessions.pop(session_id)
            await _close_quietly(entry.session)
        if idle:
            log.info("closed %d idle session(s)", len(idle))
        return len(idle)

    async def close_all(self) -> None:
        entries, self._sessions = list(self._sessions.values()), {}
        for entry in entries:
            await _close_quietly(entry.session)

    # --- statements ------------------------------------------------------------------

    async def Execute(self, request, context):
        entry = self._sessions.get(request.session_id)
        if entry is None:
            error = _no_session(request.session_id, self._node)
            return compute_pb2.ExecuteReply(results=[error_result(error)], transaction_status="I")
        params = None
        if request.has_params:
            try:
                params = [value_literal(value) for value in request.params]
            except (ValueError, errors.SqlError) as error:
                sql_error = error if isinstance(error, errors.SqlError) else errors.SqlError(
                    errors.INVALID_PARAMETER_VALUE, f"invalid parameter: {error}")
                return compute_pb2.ExecuteReply(results=[error_result(sql_error)],
                                                transaction_status=entry.session.transaction_status)
        async with entry.lock:
            entry.last_used_s = self._monotonic()
            results = await self._execute_bounded(entry, request.sql, params)
            entry.last_used_s = self._monotonic()
            return compute_pb2.ExecuteReply(
                results=[result_to_pb(result) for result in results],
                transaction_status=entry.session.transaction_status,
            )

    async def Copy(self, request, context):
        """One COPY statement, its input or output whole in the messages (compute_node/sessions/copy.py)."""
        from compute_node.sessions import copy as copy_mod

        entry = self._sessions.get(request.session_id)
        if entry is None:
            error = _no_session(request.session_id, self._node)
            return compute_pb2.CopyReply(result=error_result(error), transaction_status="I")
        async with entry.lock:
            entry.last_used_s = self._monotonic()
            entry.tracker.commit_in_flight = False
            data = b""
            try:
                async with asyncio.timeout(self._statement_timeout_s):
                    result, data = await copy_mod.run_whole(entry.session, request.sql, request.data)
            except TimeoutError:
                if entry.tracker.commit_in_flight:
                    entry.tracker.commit_in_flight = False
                    result = _ErrorOnly(errors.completion_unknown("the statement deadline passed while a COPY "
                                                                  "batch's commit was in flight"))
                else:
                    result = _ErrorOnly(errors.SqlError(errors.QUERY_CANCELED, "canceling statement due to "
                                                        f"statement timeout ({self._statement_timeout_s:g}s)"))
            except Exception as error:  # a bug in a session must not take the node down
                log.exception("COPY failed")
                result = _ErrorOnly(errors.SqlError(errors.INTERNAL_ERROR, f"internal error: {error!r}"))
            entry.last_used_s = self._monotonic()
            return compute_pb2.CopyReply(result=result_to_pb(result), data=data,
                                         transaction_status=entry.session.transaction_status)

    async def Describe(self, request, context):
        entry = self._sessions.get(request.session_id)
        if entry is None:
            return compute_pb2.DescribeReply(has_error=True, error=error_to_pb(_no_session(request.session_id, self._node)))
        async with entry.lock:
            entry.last_used_s = self._monotonic()
            try:
                async with asyncio.timeout(self._statement_timeout_s):
                    description = await entry.session.describe(request.sql, sqllex.parameter_count(request.sql))
            except TimeoutError:
                error = errors.SqlError(errors.QUERY_CANCELED, "canceling statement due to statement timeout")
                return compute_pb2.DescribeReply(has_error=True, error=error_to_pb(error))
            except errors.SqlError as error:
                return compute_pb2.DescribeReply(has_error=True, error=error_to_pb(error))
        columns = description.columns or []
        return compute_pb2.DescribeReply(
            param_types=[sql_type.pg_name for sql_type in description.param_types],
            columns=[compute_pb2.Column(name=name, type=type_name) for name, type_name in columns],
            returns_rows=description.columns is not None,
        )

    async def _execute_bounded(self, entry: _SessionEntry, sql: str, params: list[str] | None) -> list[Any]:
        entry.tracker.commit_in_flight = False
        try:
            async with asyncio.timeout(self._statement_timeout_s):
                if params is None:
                    return await entry.session.execute(sql)
                return await entry.session.execute(sql, params)
        except TimeoutError:
            if entry.tracker.commit_in_flight:
                entry.tracker.commit_in_flight = False
                error = errors.completion_unknown("the statement deadline passed while the commit was in flight")
            else:
                error = errors.SqlError(
                    errors.QUERY_CANCELED,
                    f"canceling statement due to statement timeout ({self._statement_timeout_s:g}s)",
                )
            return [_ErrorOnly(error)]
        except errors.SqlError as error:
            return [_ErrorOnly(error)]
        except Exception as error:  # a bug in a session must not take the node down
            log.exception("session execute failed")
            return [_ErrorOnly(errors.SqlError(errors.INTERNAL_ERROR, f"internal error: {error!r}"))]

    async def Status(self, request, context):
        leader = getattr(self._backend, "leader", None) or ""
        reads = getattr(self._backend, "status_detail", None)
        details = [f"sessions={len(self._sessions)}"]
        if reads is not None:
            details.append(reads())
        if self._engine_detail is not None:
            details.append(self._engine_detail())
        medians = getattr(self._backend, "latency_medians_ms", None)
        commit_ms, read_ms = medians() if medians is not None else (0.0, 0.0)
        return common_pb2.NodeStatus(
            name=self._node.name,
            az=self._node.az,
            service="compute",
            role="query",
            leader=leader,
            health=self._health(),
            detail=" ".join(details),
            region=self._region,
            commit_p50_ms=commit_ms,
            read_p50_ms=read_ms,
        )


@dataclasses.dataclass
class _ErrorOnly:
    """A result with no rows, only an error (duck-types session.StatementResult)."""

    error: errors.SqlError
    columns: list = dataclasses.field(default_factory=list)
    rows: list = dataclasses.field(default_factory=list)
    command_tag: str = ""


def _no_session(session_id: str, node: config_mod.NodeConfig) -> errors.SqlError:
    return errors.SqlError(
        errors.CONNECTION_DOES_NOT_EXIST,
        f"session {session_id!r} does not exist on {node.name} (closed, idle too long, or the node restarted)",
        hint="Open a new session.",
    )


async def _close_quietly(session: SessionLike) -> None:
    try:
        await session.close()
    except Exception:
        log.exception("closing a session failed")


# --- protobuf conversion ------------------------------------------------------------


def error_result(error: errors.SqlError) -> compute_pb2.StatementResult:
    return compute_pb2.StatementResult(has_error=True, error=error_to_pb(error))


def error_to_pb(error: errors.SqlError) -> compute_pb2.SqlError:
    return compute_pb2.SqlError(
        sqlstate=error.sqlstate, message=error.message, detail=error.detail or "", hint=error.hint or "",
        context=getattr(error, "context", "") or "",
    )


def result_to_pb(result: Any) -> compute_pb2.StatementResult:
    """session.StatementResult -> protobuf."""
    message = compute_pb2.StatementResult(
        columns=[compute_pb2.Column(name=name, type=type_name) for name, type_name in result.columns],
        rows=[compute_pb2.Row(values=[value_to_pb(value) for value in row]) for row in result.rows],
        command_tag=result.command_tag or "",
    )
    if result.error is not None:
        message.has_error = True
        message.error.CopyFrom(error_to_pb(result.error))
    return message


def value_literal(value: compute_pb2.Value) -> str:
    """A parameter of an ExecuteRequest as the SQL literal it stands for (client.param_value's inverse)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "is_null":
        return "NULL"
    if kind == "literal":
        return value.literal  # statements.literal_node refuses anything but a literal
    return sqllex.quote_literal(getattr(value, kind))


def value_to_pb(value: Any) -> compute_pb2.Value:
    if value is None:
        return compute_pb2.Value(is_null=True)
    if isinstance(value, bool):  # before int: bool is an int subclass
        return compute_pb2.Value(bool_value=value)
    if isinstance(value, RegOid):  # x::regclass: an oid that prints as the object's name, as psql shows it
        return compute_pb2.Value(text_value=str(value))
    if isinstance(value, int):
        if SINT64_MIN <= value <= SINT64_MAX:
            return compute_pb2.Value(int_value=value)
        return compute_pb2.Value(text_value=str(value))
    if isinstance(value, float):
        return compute_pb2.Value(double_value=value)
    if isinstance(value, str):
        return compute_pb2.Value(text_value=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return compute_pb2.Value(bytes_value=bytes(value))
    if isinstance(value, decimal.Decimal):
        return compute_pb2.Value(text_value=str(value))
    return compute_pb2.Value(text_value=str(value))
