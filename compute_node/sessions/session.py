"""A SQL session on a compute node: transaction state around the SQL engine.

Theory of operation
-------------------
A session runs the `;`-separated statements of each `execute` call in order and
stops after the first error (that statement's result carries the error). It is in
one of three states, reported as PostgreSQL's ReadyForQuery status:

  'I' idle:   each statement is its own transaction (autocommit): it takes a
              start_ts, runs, and commits (a transaction that wrote nothing commits
              locally); an error discards it.
  'T' block:  after BEGIN / START TRANSACTION every statement runs in the same
              transaction (same start_ts, one write buffer, read-your-writes) until
              COMMIT/END or ROLLBACK/ABORT.
  'E' failed: a statement of the block failed; every statement but COMMIT/ROLLBACK
              fails with 25P02; COMMIT then reports ROLLBACK, as PostgreSQL.

Savepoints (SAVEPOINT / RELEASE / ROLLBACK TO) live in the block: each keeps
`Transaction.savepoint_state()` (the write buffer, its size, the locks, the block's view of table
definitions) and the cursors open then; ROLLBACK TO restores them and takes a failed block back to
'T', as PostgreSQL. Cursors (DECLARE / FETCH / MOVE / CLOSE) run their query at DECLARE and keep
the rows (bounded by RESULT_ROWS_MAX together), so a cursor sees the transaction as it was then;
they close with the block, WITH HOLD ones only if it rolled back.

COMMIT sends the write buffer to `Backend.commit`; whatever it raises (40001
conflict, 40003 outcome unknown, 08006/57P03 unavailable) ends the transaction and
is returned as the COMMIT's error. A transaction older than limits.TXN_AGE_MAX_NS
(measured with backend.now_ts(), the session's only clock) fails its next statement
with 40001, as the adjudicator would refuse its commit anyway.

Values leave the session as the transport carries them: int, float, bool, str,
bytes and None; numeric, date, timestamp and uuid values become the text
PostgreSQL prints for them (`1.50`, `2024-01-02 03:04:05+00`), so every client
shows exactly what psql would.

COPY does not come through `execute` (its data travels beside the statement): the PostgreSQL
endpoint and the gRPC Copy call use `copy_columns` (checks before any data is sent), `copy_from`
(rows into the open block, or in autocommit validated whole and committed in batches that share
one snapshot: compute_node/sessions/copy.py) and `copy_failed` (a COPY that failed on its input fails the
open block, as any failed statement).

The session never writes to storage itself; the transport implements `Backend`.

`SET quorumdb.read_mode = 'single' | 'quorum' | DEFAULT`, `RESET quorumdb.read_mode` and
`SHOW quorumdb.read_mode` (each alone in its `execute` call) choose how this session's reads
reach storage (compute_node/cluster/read_core.py); the session hands the choice to its backend
view (service.CommitTracker.session_read_mode). Both modes return the same rows.

`EXPLAIN ANALYZE statement` runs the statement (as PostgreSQL does: an INSERT inserts) and, in
autocommit, commits it; `EXPLAIN ANALYZE COMMIT` (alone in its `execute` call) commits the open
transaction block. Both answer the plan and where the time went: parse, plan, execute (each
storage read, the copies it asked, hedges), commit (the commit stream, the adjudicator's queue,
conflict check, journal append and fsync quorum, commit-wait), measured through
compute_node/cluster/trace.py.
"""
from __future__ import annotations

import asyncio
import datetime
import decimal
import random
import re
import uuid
import weakref
from typing import Any, Awaitable, Callable, Sequence

from compute_node.sessions import copy as copy_mod
from compute_node.cluster import trace as trace_mod
from compute_node.sql import executor, pg_catalog, types
from compute_node.sql.describe import DescribeTransaction, Description
from compute_node.sql.describe import describe as describe_statement
from compute_node.sql.engine import Engine
from compute_node.sql.interval import Interval
from compute_node.sql.parser import (CloseCursor, DeclareCursor, Explain, FetchCursor, Savepoint,
                                     TransactionAction, TransactionControl, Utility)
from compute_node.sql.result import StatementResult
from compute_node.sql.sequences import SessionSequences
from compute_node.sql.transaction import Backend, SchemaStale, Transaction
from quorumdb import errors, limits, runtime, sqllex
from quorumdb.copyformat import CopyStatement, Record
from quorumdb.errors import SqlError

__all__ = ["Backend", "Session", "StatementResult"]


IN_FAILED_BLOCK = "current transaction is aborted, commands ignored until end of transaction block"

READ_MODE_SETTING = "quorumdb.read_mode"
READ_MODES = ("quorum", "single")  # as compute_node/cluster/read_core.py READ_MODES
_READ_MODE_STATEMENT = re.compile(
    r"\s*(?:(?P<set>SET)\s+(?:SESSION\s+)?quorumdb\.read_mode\s*(?:=|\s+TO\s+)\s*(?P<value>'[^']*'|\w+)"
    r"|(?P<reset>RESET)\s+quorumdb\.read_mode|(?P<show>SHOW)\s+quorumdb\.read_mode)\s*;?\s*",
    re.IGNORECASE,
)
# Global Database (docs/REGIONS.md): whether this session's writes on a secondary region are sent
# to the primary (and whose state it waits for), and how far the region is behind.
WRITE_FORWARDING_SETTING = "quorumdb.write_forwarding"
WRITE_FORWARDING_MODES = ("off", "session", "global")
_WRITE_FORWARDING_STATEMENT = re.compile(
    r"\s*(?:(?P<set>SET)\s+(?:SESSION\s+)?quorumdb\.write_forwarding\s*(?:=|\s+TO\s+)\s*(?P<value>'[^']*'|\w+)"
    r"|(?P<reset>RESET)\s+quorumdb\.write_forwarding|(?P<show>SHOW)\s+quorumdb\.write_forwarding)\s*;?\s*",
    re.IGNORECASE,
)
REPLICA_LAG_SETTING = "quorumdb.replica_lag"
_REPLICA_LAG_STATEMENT = re.compile(r"\s*SHOW\s+quorumdb\.replica_lag\s*;?\s*", re.IGNORECASE)
# The commit_ts of this session's last commit (0: none yet), so a client can record when each of
# its acknowledged commits happened (a point-in-time restore to T must hold exactly those <= T).
LAST_COMMIT_TS_SETTING = "quorumdb.last_commit_ts"
_LAST_COMMIT_TS_STATEMENT = re.compile(r"\s*SHOW\s+quorumdb\.last_commit_ts\s*;?\s*", re.IGNORECASE)
# EXPLAIN ANALYZE COMMIT (the parser takes no transaction control after EXPLAIN: it is ours alone).
_EXPLAIN_COMMIT_STATEMENT = re.compile(
    r"\s*EXPLAIN\s+(?:\(\s*ANALY[SZ]E(?:\s+(?:TRUE|ON))?\s*\)|ANALY[SZ]E(?:\s+VERBOSE)?)\s+(?:COMMIT|END)"
    r"(?:\s+(?:WORK|TRANSACTION))?\s*;?\s*",
    re.IGNORECASE,
)


def _invalid_value(setting: str, value: str, allowed) -> StatementResult:
    return StatementResult.failed(SqlError(
        errors.INVALID_PARAMETER_VALUE,
        f'invalid value for parameter "{setting}": "{value}"',
        hint=f"Available values: {', '.join(allowed)}."))


class Session:
    def __init__(self, backend: Backend, session_id: str, rng: random.Random | None = None,
                 engine: Engine | None = None):
        self.backend = backend
        self.engine = engine if engine is not None else Engine()
        self.rng = rng or runtime.rng()
        self.session_id = session_id
        # Who is connected (current_user, current_database(), pg_roles, ...); the PostgreSQL
        # endpoint sets it from the startup packet, the gRPC API keeps the defaults.
        self.client = pg_catalog.DEFAULT_CLIENT
        self._txn: Transaction | None = None   # the open block's transaction
        self._failed = False
        self._txn_count = 0
        self._lock = asyncio.Lock()             # one execute at a time
        self.sequences = SessionSequences()     # currval / lastval
        self.last_plan = None                   # access plan of the last statement that read a table
        # Savepoints of the open block, oldest first: (name, transaction state, cursors open then).
        self._savepoints: list[tuple[str, tuple, frozenset[str]]] = []
        self._cursors: dict[str, _Cursor] = {}  # open cursors (those WITHOUT HOLD close with the block)
        # When the current execute call began and how long its parse took (EXPLAIN ANALYZE's first
        # phase; None once a statement of the script has used it).
        self._parse: tuple[float, float, bool | None] | None = None
        # The newest transaction (a weak reference: an autocommit statement's transaction is
        # dropped when it ends): how the transport sees a statement committing rows ahead.
        self._latest_txn: weakref.ref | None = None

    @property
    def transaction_status(self) -> str:
        if self._txn is None:
            return "I"
        return "E" if self._failed else "T"

    @property
    def transaction(self) -> Transaction | None:
        return self._txn

    @property
    def savepoint_depth(self) -> int:
        """Savepoints of the open block (the PostgreSQL endpoint's settings follow them)."""
        return len(self._savepoints)

    async def execute(self, sql: str, params: Sequence[str] | None = None,
                      shape: sqllex.Shape | None = None) -> list[StatementResult]:
        """Run a script; `params` are SQL literal texts for $1, $2, ... (bound without pasting
        them into the text: compute_node/sql/statements.py); `shape` is sqllex.lift_literals(sql)
        when the caller has it already."""
        async with self._lock:
            started = trace_mod.clock()
            read_mode_statement = _READ_MODE_STATEMENT.fullmatch(sql) if params is None else None
            if read_mode_statement is not None:
                return [self._read_mode(read_mode_statement)]
            forwarding_statement = _WRITE_FORWARDING_STATEMENT.fullmatch(sql) if params is None else None
            if forwarding_statement is not None:
                return [self._write_forwarding(forwarding_statement)]
            if params is None and _REPLICA_LAG_STATEMENT.fullmatch(sql) is not None:
                lag = getattr(self.backend, "replica_lag", None)
                value = lag() if callable(lag) else "0 ms, 0 entries (no regions)"
                return [StatementResult([(REPLICA_LAG_SETTING, "text")], [(value,)], "SHOW")]
            if params is None and _LAST_COMMIT_TS_STATEMENT.fullmatch(sql) is not None:
                value = str(getattr(self.backend, "last_commit_ts", 0))
                return [StatementResult([(LAST_COMMIT_TS_SETTING, "text")], [(value,)], "SHOW")]
            if not params and _EXPLAIN_COMMIT_STATEMENT.fullmatch(sql) is not None:
                self._parse = (started, trace_mod.clock() - started, None)  # no parse: recognised whole
                return [_wire_values(await self._explain_commit())]
            misses = self.engine.statements.misses
            try:
                bound = self.engine.statements.bind(sql, params, shape)
                self._parse = (started, trace_mod.clock() - started, self.engine.statements.misses == misses)
            except SqlError as error:
                if self._txn is not None:
                    self._failed = True
                return [StatementResult.failed(error)]
            if self._txn is None and hasattr(self.backend, "before_transaction"):
                try:
                    await self.backend.before_transaction()
                except SqlError as error:
                    bound.release()
                    return [StatementResult.failed(error)]
            try:
                results: list[StatementResult] = []
                for statement in bound.statements:
                    result = await self._run(statement)
                    results.append(_wire_values(result))
                    if result.error is not None:
                        break
                return results
            finally:
                bound.release()

    async def describe(self, sql: str, param_count: int,
                       declared: Sequence[types.SqlType | None] = ()) -> Description:
        """The parameter types and result columns of one statement, compiled but not run
        (compute_node/sql/describe.py); raises SqlError for a statement that would not compile."""
        async with self._lock:
            bound = self.engine.statements.bind(sql)
            try:
                statements = bound.statements
                if len(statements) != 1:
                    raise SqlError(errors.SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement")
                if isinstance(statements[0], FetchCursor):  # its rows are those of the cursor's query
                    cursor = self._cursors.get(statements[0].name)
                    columns = cursor.columns if cursor is not None and not statements[0].move else None
                    return Description([types.TEXT] * param_count, columns)
                for _ in range(2):
                    txn = DescribeTransaction(self.backend, self.backend.start_ts(), f"{self.session_id}:describe",
                                              self.engine.schema_cache)
                    txn.client = self.client
                    try:
                        description = await describe_statement(txn, statements[0], param_count, list(declared))
                        await txn.check_schema_version()
                        return description
                    except SchemaStale:
                        continue  # the version is known now: the second round reads what it needs
                    except SqlError:
                        if not await _schema_was_stale(txn):
                            raise
                raise AssertionError("a described statement's schema was stale twice")
            finally:
                bound.release()

    async def close(self) -> None:
        if self._txn is not None:
            await self._txn.abort()
        self._end()

    def _setting_refused(self, setting: str, backend_attribute: str) -> StatementResult | None:
        """Why a quorumdb.* setting cannot be used now: a failed transaction block, or a backend
        without it. None when it can."""
        if self._failed:
            return StatementResult.failed(SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK))
        if not hasattr(self.backend, backend_attribute):
            return StatementResult.failed(SqlError(errors.FEATURE_NOT_SUPPORTED,
                                                   f"{setting} cannot be set on this backend"))
        return None

    def _write_forwarding(self, statement: re.Match) -> StatementResult:
        """SET / RESET / SHOW quorumdb.write_forwarding (off | session | global)."""
        refused = self._setting_refused(WRITE_FORWARDING_SETTING, "write_forwarding")
        if refused is not None:
            return refused
        if statement["show"]:
            return StatementResult([(WRITE_FORWARDING_SETTING, "text")], [(self.backend.write_forwarding,)], "SHOW")
        value = "off" if statement["reset"] else statement["value"].strip("'").lower()
        if value == "default":
            value = "off"
        if value not in WRITE_FORWARDING_MODES:
            return _invalid_value(WRITE_FORWARDING_SETTING, value, WRITE_FORWARDING_MODES)
        self.backend.write_forwarding = value
        return StatementResult.tag("RESET" if statement["reset"] else "SET")

    def _read_mode(self, statement: re.Match) -> StatementResult:
        """SET / RESET / SHOW quorumdb.read_mode (see the module docstring)."""
        refused = self._setting_refused(READ_MODE_SETTING, "session_read_mode")
        if refused is not None:
            return refused
        if statement["show"]:
            mode = self.backend.session_read_mode or getattr(self.backend, "read_mode", "quorum")
            return StatementResult([(READ_MODE_SETTING, "text")], [(mode,)], "SHOW")
        value = None if statement["reset"] else statement["value"].strip("'").lower()
        if value == "default":
            value = None
        if value is not None and value not in READ_MODES:
            return _invalid_value(READ_MODE_SETTING, value, READ_MODES)
        self.backend.session_read_mode = value
        return StatementResult.tag("RESET" if statement["reset"] else "SET")

    # --- statements ---------------------------------------------------------------
    async def _run(self, statement) -> StatementResult:
        self.last_plan = None
        if isinstance(statement, Explain) and statement.analyze:
            return await self._explain_analyze(statement)
        if isinstance(statement, TransactionControl):
            result = await self._control(statement.action)
            if result.error is None and result.command_tag == statement.action.value and statement.tag:
                result.command_tag = statement.tag
            return result
        if isinstance(statement, (Savepoint, DeclareCursor, FetchCursor, CloseCursor)):
            return await self._block_command(statement)
        if self._txn is None:
            return await self._autocommit(statement)
        if self._failed:
            return StatementResult.failed(SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK))
        if isinstance(statement, Utility) and statement.command == "VACUUM":
            self._failed = True  # as PostgreSQL (it does nothing here either way)
            return StatementResult.failed(SqlError(errors.ACTIVE_SQL_TRANSACTION,
                                                   "VACUUM cannot run inside a transaction block"))

        async def run() -> StatementResult:
            self._check_age(self._txn)
            self._txn.last_plan = None
            result = await self._execute_checked(self._txn, statement)
            self.last_plan = self._txn.last_plan
            return result

        return await self._in_block(run)

    async def _in_block(self, work: Callable[[], Awaitable[StatementResult]]) -> StatementResult:
        """`work` inside the open transaction block: any error fails the block (a SqlError is the
        statement's result, anything else goes on up)."""
        try:
            return await work()
        except SqlError as error:
            self._failed = True
            return StatementResult.failed(error)
        except BaseException:
            self._failed = True
            raise

    async def _autocommit(self, statement) -> StatementResult:
        txn = self._new_transaction()
        try:
            result = await self._execute_checked(txn, statement)
            self.last_plan = txn.last_plan
            await txn.commit()
        except SqlError as error:
            await txn.abort()
            return StatementResult.failed(error)
        return result

    async def _execute_checked(self, txn: Transaction, statement) -> StatementResult:
        """The statement's result once its transaction knows that the table definitions it used
        are those of its snapshot; run again (once) with definitions read at the snapshot when
        the node's cached ones were stale (compute_node/sql/schema_cache.py)."""
        try:
            result = await executor.execute(txn, statement)
            await txn.check_schema_version()
            return result
        except SchemaStale:
            pass
        except SqlError as error:
            if txn.schema_version is not None or txn.assumed_schema_version is None:
                raise
            if not await _schema_was_stale(txn):  # the error may come from a stale definition
                raise error
        txn.forget_stale_schema()
        self.engine.statement_retries += 1
        return await executor.execute(txn, statement)  # the version is known now: no second retry

    async def _control(self, action: TransactionAction) -> StatementResult:
        match action:
            case TransactionAction.BEGIN:
                if self._failed:
                    return StatementResult.failed(SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK))
                if self._txn is None:  # BEGIN inside a block: PostgreSQL warns and goes on
                    self._txn = self._new_transaction()
                return StatementResult.tag("BEGIN")
            case TransactionAction.COMMIT:
                return await self._commit()
            case TransactionAction.ROLLBACK:
                if self._txn is not None:
                    await self._txn.abort()
                self._end()
                return StatementResult.tag("ROLLBACK")
        raise AssertionError(action)

    async def _commit(self) -> StatementResult:
        txn = self._txn
        if txn is None:  # PostgreSQL: WARNING there is no transaction in progress
            return StatementResult.tag("COMMIT")
        if self._failed:
            await txn.abort()
            self._end()
            return StatementResult.tag("ROLLBACK")
        committed = False
        try:
            self._check_age(txn)
            await txn.commit()
            committed = True
        except SqlError as error:
            await txn.abort()
            return StatementResult.failed(error)
        finally:
            self._end(committed)
        return StatementResult.tag("COMMIT")

    # --- COPY (compute_node/sessions/copy.py) ---------------------------------------------------
    async def copy_columns(self, statement: CopyStatement) -> list[str]:
        """The columns a COPY FROM loads, checked before the client sends any data (42P01, 42703,
        25P02 now rather than after the upload, as PostgreSQL does). Reads only."""
        async with self._lock:
            if self._failed:
                raise SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK)
            txn = self._txn if self._txn is not None else self._new_transaction()
            try:
                try:
                    copy_plan = await copy_mod.plan(txn, statement)
                    await txn.check_schema_version()
                except SchemaStale:
                    txn.forget_stale_schema()
                    copy_plan = await copy_mod.plan(txn, statement)
            except SqlError:
                if self._txn is not None:
                    self._failed = True
                raise
            return copy_plan.column_names

    async def copy_from(self, statement: CopyStatement, records: list[Record]) -> StatementResult:
        """COPY FROM of records already read: into the open block, or (autocommit) validated
        whole and committed in batches within the transaction quotas."""
        async with self._lock:
            if self._txn is None:
                try:
                    count = await copy_mod.load_autocommit(self._new_transaction, self.backend.now_ts,
                                                           statement, records)
                except SqlError as error:
                    return StatementResult.failed(error)
                return StatementResult.tag(f"COPY {count}")
            if self._failed:
                return StatementResult.failed(SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK))
            async def load() -> StatementResult:
                self._check_age(self._txn)
                try:
                    count = await copy_mod.load_in_transaction(self._txn, statement, records)
                except SchemaStale:
                    self._txn.forget_stale_schema()
                    count = await copy_mod.load_in_transaction(self._txn, statement, records)
                return StatementResult.tag(f"COPY {count}")

            return await self._in_block(load)

    def fail_block(self) -> None:
        """The wire layer refused a statement of the open block (a write in a READ ONLY block):
        the block fails as after any error, so it can only roll back."""
        if self._txn is not None:
            self._failed = True

    def copy_streams(self, statement: CopyStatement) -> bool:
        """True when a COPY FROM may be loaded a chunk at a time (several `copy_from` calls, each
        validating and writing its records): inside a block, into a table the block truncated,
        rewrote or created. Its rows go onto the bulk path, which nobody else sees before COMMIT,
        and an error in any chunk fails the block, so the COPY stays all or nothing without its
        input being held whole (limits.COPY_STREAM_CHUNK_ROWS). Ask after `copy_columns`."""
        txn = self._txn
        if txn is None or self._failed or statement.table is None:
            return False
        table = txn.tables.get(statement.table)
        return table is not None and (executor.is_bulk_target(txn, table) or table.name in txn.created_tables)

    def copy_failed(self) -> None:
        """A COPY failed before its rows reached copy_from (bad input, CopyFail): like any failed
        statement, it fails the open transaction block."""
        if self._txn is not None:
            self._failed = True

    # --- EXPLAIN ANALYZE ---------------------------------------------------------------
    def _new_trace(self) -> trace_mod.StatementTrace:
        mode = getattr(self.backend, "session_read_mode", None) or getattr(self.backend, "read_mode", "quorum")
        trace = trace_mod.StatementTrace(getattr(self.backend, "node_name", "this compute node"), mode)
        if self._parse is not None:  # the first statement of the script pays its parse
            trace.started, trace.parse_s, trace.parse_cached = self._parse
            self._parse = None
        return trace

    async def _explain_analyze(self, explain: Explain) -> StatementResult:
        """Plan, run (and in autocommit, commit) a statement, timing each phase (compute_node/cluster/trace.py)."""
        if self._txn is not None and self._failed:
            return StatementResult.failed(SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK))
        trace = self._new_trace()
        token = trace_mod.CURRENT.set(trace)
        txn = self._txn or self._new_transaction()
        try:
            if self._txn is not None:
                self._check_age(txn)
            planned = trace_mod.clock()
            plan = await executor.run_explain(txn, Explain(explain.statement, analyze=False))
            executed = trace_mod.clock()
            trace.plan_s = executed - planned
            result = await self._execute_checked(txn, explain.statement)
            trace.execute = (executed, trace_mod.clock())
            trace.rows = len(result.rows) if result.columns else _rows_of_tag(result.command_tag)
            if self._txn is None:
                await self._traced_commit(txn, trace)
            else:
                trace.commit_note = "not yet: the transaction block is open (EXPLAIN ANALYZE COMMIT shows it)"
        except SqlError as error:
            if self._txn is not None:
                self._failed = True
            return StatementResult.failed(error)
        finally:
            trace_mod.CURRENT.reset(token)
        trace.ended = trace_mod.clock()
        lines = [row[0] for row in plan.rows] + trace_mod.render(trace)
        return StatementResult([("QUERY PLAN", "text")], [(line,) for line in lines], "EXPLAIN")

    async def _explain_commit(self) -> StatementResult:
        """EXPLAIN ANALYZE COMMIT: COMMIT, answered with where its time went."""
        txn = self._txn
        if txn is None:
            return StatementResult([("QUERY PLAN", "text")], [("Commit (no transaction in progress)",)], "EXPLAIN")
        if self._failed:
            self._end()
            return StatementResult([("QUERY PLAN", "text")], [("Rollback (the transaction had failed)",)], "EXPLAIN")
        trace = self._new_trace()
        token = trace_mod.CURRENT.set(trace)
        committed = False
        try:
            self._check_age(txn)
            await self._traced_commit(txn, trace)
            committed = True
        except SqlError as error:
            return StatementResult.failed(error)
        finally:
            trace_mod.CURRENT.reset(token)
            self._end(committed)
        trace.ended = trace_mod.clock()
        return StatementResult([("QUERY PLAN", "text")], [(line,) for line in ["Commit", *trace_mod.render(trace)]],
                               "EXPLAIN")

    @staticmethod
    async def _traced_commit(txn: Transaction, trace: trace_mod.StatementTrace) -> None:
        commit = trace.start_commit()
        commit.read_only = not txn.has_writes  # nothing to send: COMMIT ends on the compute node
        try:
            await txn.commit()
            commit.outcome = "committed"
        except SqlError as error:
            commit.outcome = error.sqlstate
            raise
        finally:
            commit.ended = trace_mod.clock()

    def _new_transaction(self, start_ts: int | None = None) -> Transaction:
        """A transaction at a new snapshot, or at `start_ts` (a COPY's later batches share the
        snapshot their rows were validated at: compute_node/sessions/copy.py)."""
        self._txn_count += 1
        txn = Transaction(self.backend, self.backend.start_ts() if start_ts is None else start_ts,
                          f"{self.session_id}:{self._txn_count}", self.engine.schema_cache)
        txn.rng = self.rng
        txn.client = self.client
        self._latest_txn = weakref.ref(txn)
        txn.sequences = self.engine.sequences
        txn.session_sequences = self.sequences
        return txn

    def _end(self, committed: bool = False) -> None:
        """The block is over: its savepoints go, and its cursors but WITH HOLD ones that were
        declared before it or that it committed (PostgreSQL drops a holdable cursor whose
        transaction rolled back)."""
        txn = self._txn
        self._txn = None
        self._failed = False
        self._savepoints.clear()
        for name in [name for name, cursor in self._cursors.items()
                     if not cursor.hold or (cursor.declared_in is txn and not committed)]:
            del self._cursors[name]
        for cursor in self._cursors.values():
            cursor.declared_in = None

    # --- savepoints and cursors ----------------------------------------------------------
    async def _block_command(self, statement) -> StatementResult:
        """SAVEPOINT / RELEASE / ROLLBACK TO and DECLARE / FETCH / MOVE / CLOSE (see _Cursor)."""
        if isinstance(statement, Savepoint) and statement.action == "ROLLBACK TO" and self._txn is not None:
            return self._rollback_to(statement.name)  # the one command a failed block accepts
        if self._txn is not None and self._failed:
            return StatementResult.failed(SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK))
        try:
            return await self._block_command_checked(statement)
        except SqlError as error:
            if self._txn is not None:
                self._failed = True
            return StatementResult.failed(error)

    async def _block_command_checked(self, statement) -> StatementResult:
        txn = self._txn
        if isinstance(statement, Savepoint):
            if txn is None:
                command = "SAVEPOINT" if statement.action == "SAVEPOINT" else f"{statement.action} SAVEPOINT"
                raise SqlError(errors.NO_ACTIVE_SQL_TRANSACTION, f"{command} can only be used in transaction blocks")
            if statement.action == "SAVEPOINT":
                if len(self._savepoints) >= limits.SAVEPOINTS_MAX:
                    raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                                   f"transaction exceeds the limit of {limits.SAVEPOINTS_MAX} savepoints")
                self._savepoints.append((statement.name, txn.savepoint_state(), frozenset(self._cursors)))
                return StatementResult.tag("SAVEPOINT")
            index = self._savepoint_index(statement.name)
            del self._savepoints[index:]  # RELEASE: it and every later savepoint; the writes stay
            return StatementResult.tag("RELEASE")
        if isinstance(statement, DeclareCursor):
            if txn is None and not statement.hold:
                raise SqlError(errors.NO_ACTIVE_SQL_TRANSACTION,
                               "DECLARE CURSOR can only be used in transaction blocks")
            if statement.name in self._cursors:
                raise SqlError(errors.DUPLICATE_CURSOR, f'cursor "{statement.name}" already exists')
            if len(self._cursors) >= limits.SESSION_CURSORS_MAX:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"session exceeds the limit of {limits.SESSION_CURSORS_MAX} open cursors")
            # The query runs now: a cursor sees the transaction as it is at DECLARE (as PostgreSQL's
            # cursor snapshot), its rows bounded by the engine's RESULT_ROWS_MAX. That also makes
            # WITH HOLD free: the rows are already materialised when the transaction commits.
            if txn is None:  # WITH HOLD in autocommit: its own transaction (reads only: commits locally)
                autocommit = self._new_transaction()
                result = await self._execute_checked(autocommit, statement.statement)
                await autocommit.commit()
            else:
                self._check_age(txn)
                result = await self._execute_checked(txn, statement.statement)
            held = sum(len(cursor.rows) for cursor in self._cursors.values())
            if held + len(result.rows) > limits.RESULT_ROWS_MAX:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"open cursors would hold more than {limits.RESULT_ROWS_MAX} rows")
            self._cursors[statement.name] = _Cursor(list(result.columns), result.rows, statement.hold, txn)
            return StatementResult.tag("DECLARE CURSOR")
        if isinstance(statement, CloseCursor):
            if statement.name is None:
                self._cursors.clear()
                return StatementResult.tag("CLOSE CURSOR ALL")
            self._cursor(statement.name)
            del self._cursors[statement.name]
            return StatementResult.tag("CLOSE CURSOR")
        assert isinstance(statement, FetchCursor)
        cursor = self._cursor(statement.name)
        if statement.count == 0:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "FETCH 0 (the current row again) is not supported")
        rows = cursor.take(statement.count)
        if statement.move:
            return StatementResult.tag(f"MOVE {len(rows)}")
        return StatementResult(cursor.columns, rows, f"FETCH {len(rows)}")

    def _cursor(self, name: str) -> "_Cursor":
        cursor = self._cursors.get(name)
        if cursor is None:
            raise SqlError(errors.INVALID_CURSOR_NAME, f'cursor "{name}" does not exist')
        return cursor

    def _savepoint_index(self, name: str) -> int:
        for index in range(len(self._savepoints) - 1, -1, -1):  # the newest of that name
            if self._savepoints[index][0] == name:
                return index
        raise SqlError(errors.INVALID_SAVEPOINT_SPECIFICATION, f'savepoint "{name}" does not exist')

    def _rollback_to(self, name: str) -> StatementResult:
        """ROLLBACK TO SAVEPOINT: the writes, locks and definitions as they were at the savepoint
        (later savepoints go, it stays); a failed block works again, as in PostgreSQL. Reads made
        since stay in the snapshot's cache: they are still true at start_ts."""
        assert self._txn is not None
        try:
            index = self._savepoint_index(name)
        except SqlError as error:
            self._failed = True
            return StatementResult.failed(error)
        _, state, cursors = self._savepoints[index]
        try:
            self._txn.rollback_to(state)
        except SqlError as error:
            self._failed = True
            return StatementResult.failed(error)
        del self._savepoints[index + 1:]
        for cursor_name in [c for c in self._cursors if c not in cursors]:
            del self._cursors[cursor_name]  # cursors declared after the savepoint close
        self._failed = False
        return StatementResult.tag("ROLLBACK")

    def flush_mark(self) -> tuple[Any, int]:
        """Where the bulk path stands before a statement (compare with `bulk_time_left_s`)."""
        txn = self._latest_txn() if self._latest_txn is not None else None
        return (txn, txn.flushed_batches if txn is not None else 0)

    def bulk_time_left_s(self, mark: tuple[Any, int]) -> float | None:
        """Seconds left before the transaction age limit if the statement running since `mark`
        committed rows ahead into a private keyspace (a bulk load or a table rewrite: such a
        statement is bounded by the age limit, not by the node's statement timeout; docs/SQL.md);
        None for any other statement."""
        txn = self._latest_txn() if self._latest_txn is not None else None
        if txn is None:
            return None
        before = mark[1] if mark[0] is txn else 0
        if txn.flushed_batches <= before:
            return None
        left_ns = limits.TXN_AGE_MAX_NS - (self.backend.now_ts() - txn.start_ts)
        return max(0.0, left_ns / 1_000_000_000)

    def _check_age(self, txn: Transaction) -> None:
        # now_ts, not start_ts: a statement of an open transaction starts no snapshot, and
        # start_ts would ask the leader to close a timestamp nobody reads at.
        age_ns = self.backend.now_ts() - txn.start_ts
        if age_ns > limits.TXN_AGE_MAX_NS:
            raise SqlError(errors.SERIALIZATION_FAILURE,
                           f"transaction age limit of {limits.TXN_AGE_MAX_NS // 1_000_000_000} seconds exceeded",
                           hint="Retry the transaction; keep transactions short.")


class _Cursor:
    """A cursor: the rows its query returned at DECLARE, read forward."""

    def __init__(self, columns: list[tuple[str, str]], rows: list[tuple], hold: bool = False,
                 declared_in: Transaction | None = None) -> None:
        self.columns = columns
        self.rows = rows
        self.position = 0
        self.hold = hold                  # WITH HOLD: outlives the transaction that commits it
        self.declared_in = declared_in    # the open block it was declared in (None: an earlier one)

    def take(self, count: int | None) -> list[tuple]:
        end = len(self.rows) if count is None else min(self.position + count, len(self.rows))
        taken = self.rows[self.position:end]
        self.position = max(self.position, end)
        return taken


async def _schema_was_stale(txn: Transaction) -> bool:
    try:
        await txn.check_schema_version()
    except SchemaStale:
        return True
    except SqlError:
        return False  # the check failed too (storage unreachable): the first error stands
    return False


def _rows_of_tag(tag: str) -> int | None:
    """Rows a command tag reports ('INSERT 0 3' -> 3, 'UPDATE 2' -> 2), None for other tags."""
    last = (tag or "").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else None


_TEXT_TYPES = (decimal.Decimal, datetime.date, uuid.UUID, Interval)


def _wire_values(result: StatementResult) -> StatementResult:
    """Numeric/date/time/uuid values as their PostgreSQL text (what the wire protocol carries);
    catalog arrays (lists) as their array text, which depends on the column's type."""
    if not any(isinstance(v, _TEXT_TYPES) or isinstance(v, list) for row in result.rows for v in row):
        return result
    type_names = [type_name for _, type_name in result.columns]
    vectors = [types.INT2VECTOR if name in ("int2vector", "oidvector") else None for name in type_names]
    result.rows = [tuple(types.format_array(v, vectors[i] if i < len(vectors) else None) if isinstance(v, list)
                         else _wire_value(v) for i, v in enumerate(row)) for row in result.rows]
    return result


def _wire_value(value: Any) -> Any:
    if isinstance(value, _TEXT_TYPES):
        return types.format_value(value)
    return value
