"""Queries: FROM clauses, joins, subqueries, CTEs, VALUES and set operations.

Theory of operation
-------------------
A query runs in three phases, so that everything that awaits happens before any
expression is evaluated and expression evaluation stays synchronous:

  1. compile (pure): `compile_query(node, parent_scope, ctx)` resolves every name
     and type and returns a plan tree: SelectPlan (sources joined left to right,
     then a SelectProgram for WHERE/GROUP BY/ORDER BY/LIMIT), SetOpPlan
     (UNION/INTERSECT/EXCEPT [ALL]) or ValuesPlan. Subqueries in expressions and
     in FROM, and CTEs, are compiled into the same tree. Each base-table source
     gets an access plan from the planner, using the conjuncts of WHERE (and of
     its own ON clause) that name only that table; it reads a superset and the
     full conditions are applied afterwards.
  2. fetch (async): `fetch(ctx)` reads the rows of every base-table source the
     plan tree registered (and the catalog rows of information_schema views),
     through the transaction (snapshot at start_ts + own writes).
  3. run (sync): `plan.run()` joins (hash join on equality conditions between the
     new table and the ones before it, nested loops otherwise; LEFT and FULL JOIN
     pad unmatched left rows with NULLs, RIGHT and FULL JOIN add the right rows no
     left row matched), filters, groups, computes window functions, sorts and limits.
     A correlated subquery runs once per outer row over its already-fetched rows; an
     uncorrelated one runs once.

LATERAL subqueries and functions in FROM (table_functions.py) are compiled in a
scope of the FROM items before them; the join hands each left row to them (through
the scope's cell, as a correlated subquery gets its outer row) and runs them once per
left row. NATURAL JOIN is USING over the common column names; a FULL join's merged
USING column, COALESCE(left, right), lives in a hidden slot after the right source's
columns, filled as rows join. WITH RECURSIVE runs the recursive term over a working
table until it yields nothing (RecursivePlan).

The top-level SELECT streams its first source instead of fetching it, so
`SELECT ... LIMIT n` over a large table stops reading early (`run_top`); with a
RIGHT or FULL join it collects the root rows first (unmatched right rows are known
only at the end).
Functions in FROM: generate_series, unnest (several arrays side by side, WITH
ORDINALITY) and pg_options_to_table (table_functions.py).
Not supported (0A000): FULL JOIN without an equality in ON (PostgreSQL refuses it
too), parenthesized joins in FROM, other functions in FROM, ORDER BY/LIMIT and
SEARCH/CYCLE in a recursive query, FOR UPDATE over joins or derived tables.
"""
from __future__ import annotations

import collections
import dataclasses
import operator
from typing import Any, AsyncIterator, Callable, Iterator

from sqlglot import exp

from compute_node.sql import bulk, pg_catalog, sequences, system_views, table_functions, types
# Importing catalog_functions installs the catalog's functions into expressions.py's compiler;
# every statement is compiled at or below this module, so they are there before the first one.
from compute_node.sql import catalog_functions  # noqa: F401
from compute_node.sql.bulk import SequenceDef, SequenceState
from compute_node.sql.catalog import TableDef, identifier_name, table_name
from compute_node.sql.expressions import (
    Compiled, Compiler, Context, Relation, Scope, _group_key_value,
    coerce, contains_aggregate, output_name, sql_and,
)
from compute_node.sql.planner import AccessPlan, PlanKind, plan_access, split_and
from compute_node.sql.pushdown import Pushdown
from compute_node.sql.pushdown import build as build_pushdown
from compute_node.sql.query import SelectProgram, _limit_value, compile_select
from compute_node.sql.types import Kind, SqlType
from quorumdb import errors, keys, limits
from quorumdb.errors import SqlError


# --- catalog access -------------------------------------------------------------------
async def load_table(txn, name: str) -> TableDef | None:
    """The definition of `name` in this transaction's snapshot (the node's schema cache when it
    is right for the snapshot); using it locks the catalog key (OC001)."""
    if name in txn.tables:
        return txn.tables[name]
    await preload_names(txn, [name])
    return txn.tables[name]


async def preload_names(txn, names) -> None:
    """Definitions of `names` into txn.tables: from the schema cache, else one read for all."""
    missing = []
    for name in names:
        if name in txn.tables:
            continue
        key = keys.catalog_table_key(name)
        cached = txn.cached_table(name)
        if cached is None:
            missing.append((name, key))
            continue
        table, raw = cached
        txn.note_schema_read(key, raw)
        txn.tables[name] = table
    if not missing:
        return
    found = await txn.get_many([key for _, key in missing])
    for name, key in missing:
        raw = found[key]
        txn.note_schema_read(key, raw)
        table = TableDef.decode(raw) if raw is not None else None
        txn.tables[name] = table
        if table is not None:
            txn.remember_table(name, key, table, raw)


async def load_all_tables(txn) -> list[TableDef]:
    """Every table of the snapshot (start_ts plus the transaction's own DDL), in name order."""
    prefix = keys.CATALOG_TABLE_PREFIX
    tables = []
    async for _, value in txn.scan(prefix, keys.prefix_end(prefix)):
        tables.append(TableDef.decode(value))
    return tables


async def load_all_sequences(txn) -> list[SequenceDef]:
    """Every sequence definition of the snapshot (with the transaction's own DDL), in name order."""
    prefix = keys.CATALOG_SEQUENCE_PREFIX
    return [SequenceDef.decode(value) async for _, value in txn.scan(prefix, keys.prefix_end(prefix))]


async def preload_tables(txn, statement: exp.Expression) -> None:
    """Reads the definitions of every table the statement names, so compiling needs no I/O; a
    name that is neither a table nor one of the statement's CTEs may be a sequence, which a
    query reads as a one-row relation (pg_dump's `SELECT last_value, is_called FROM seq`)."""
    names = set()
    for node in statement.find_all(exp.Table):
        if system_views.is_system_reference(node) or not isinstance(node.this, exp.Identifier):
            continue
        if node.args.get("db") is not None and identifier_name(node.args["db"]) != "public":
            continue
        names.add(identifier_name(node.this))
    await preload_names(txn, sorted(names))
    cte_names = {identifier_name(cte.args["alias"].this) for cte in statement.find_all(exp.CTE)
                 if cte.args.get("alias") is not None and cte.args["alias"].this is not None}
    # Read afresh for every statement: the transaction's own DDL may have changed them.
    txn.sequence_relations = {}
    for name in sorted(names - cte_names):
        if txn.tables.get(name) is None:
            txn.sequence_relations[name] = await sequences.load_sequence(txn, name)


async def read_rows(txn, table: TableDef, plan: AccessPlan,
                    pushdown: bytes | None = None) -> AsyncIterator[tuple[bytes, tuple]]:
    """Rows the plan selects, with the transaction's own writes merged in. A range or full
    scan with `pushdown` (compute_node/sql/pushdown.py) may skip rows its filter rejects and
    return unneeded columns as NULL."""
    if plan.kind is PlanKind.POINT:
        found = await txn.get_many(list(plan.point_keys))
        for key in plan.point_keys:
            value = found[key]
            if value is not None:
                yield key, table.decode_row(value)
        return
    if plan.kind is PlanKind.INDEX:
        row_keys: list[bytes] = []
        async for _, value in txn.scan(plan.start, plan.end):
            row_keys.append(table.rows_prefix + value)
            if len(row_keys) >= limits.GET_KEYS_MAX:
                async for item in _read_keys(txn, table, row_keys):
                    yield item
                row_keys = []
        async for item in _read_keys(txn, table, row_keys):
            yield item
        return
    async for key, value in txn.scan(plan.start, plan.end, pushdown):
        yield key, table.decode_row(value)


async def _read_keys(txn, table: TableDef, row_keys: list[bytes]) -> AsyncIterator[tuple[bytes, tuple]]:
    if not row_keys:
        return
    found = await txn.get_many(row_keys)
    for key in row_keys:
        value = found[key]
        assert value is not None, f"index entry of {table.name} names a missing row"
        yield key, table.decode_row(value)


# --- statement context ---------------------------------------------------------------------
class QueryContext(Context):
    """Everything one statement's compile and fetch phases share."""

    def __init__(self, txn, start_ts_ns: int = 0, rng=None):
        super().__init__(start_ts_ns, rng, self._compile_subquery, getattr(txn, "param_types", None),
                         getattr(txn, "client", None) or pg_catalog.DEFAULT_CLIENT)
        self.txn = txn
        self.table_sources: list["Source"] = []
        self.view_sources: list["Source"] = []
        self.sequence_sources: list["Source"] = []
        self.ctes: list[dict[str, "CtePlan"]] = []
        self.streamed: "Source | None" = None
        self.expression_subplans: list["QueryPlan"] = []

    def _compile_subquery(self, node: exp.Expression, scope: Scope) -> "QueryPlan":
        plan = compile_query(node, scope, self)
        self.expression_subplans.append(plan)
        return plan

    def table(self, name: str) -> TableDef:
        table = self.txn.tables.get(name)
        if table is None:
            raise SqlError(errors.UNDEFINED_TABLE, f'relation "{name}" does not exist')
        return table

    def find_cte(self, name: str) -> "CtePlan | None":
        for frame in reversed(self.ctes):
            if name in frame:
                return frame[name]
        return None


async def fetch(ctx: QueryContext) -> None:
    """Phase 2: reads the rows of every registered source (except the streamed one)."""
    sequences = getattr(ctx, "sequences", None)
    if sequences is not None:  # nextval & co. get their values ready (compute_node/sql/sequences.py)
        await sequences.prepare()
    for source in ctx.table_sources:
        if source is ctx.streamed:
            continue
        rows = []
        async for key, row in read_rows(ctx.txn, source.table, source.plan, source.pushdown_spec):
            rows.append((key, row))
            if len(rows) > limits.STATEMENT_ROWS_READ_MAX:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"statement reads more than {limits.STATEMENT_ROWS_READ_MAX} rows")
        source.fetched = rows
    for source in ctx.sequence_sources:
        definition = source.view.definition
        state_key = keys.sequence_state_key(definition.sequence_id)
        state = SequenceState.decode((await ctx.txn.get_many([state_key]))[state_key], definition)
        source.fetched = [(None, bulk.relation_row(definition, state))]
    if ctx.view_sources or ctx.needs_catalog:
        # One catalog scan serves the statement's system views and its catalog functions
        # (pg_get_indexdef, ::regclass, ...), so they all see the same snapshot.
        tables = await load_all_tables(ctx.txn)
        all_sequences = await load_all_sequences(ctx.txn)
        state_keys = [keys.sequence_state_key(sequence.sequence_id) for sequence in all_sequences]
        states = await ctx.txn.get_many(state_keys) if state_keys else {}
        ctx.catalog = pg_catalog.Snapshot(tables, ctx.client, all_sequences, {
            sequence.sequence_id: bulk.relation_row(sequence, SequenceState.decode(states[key], sequence))
            for sequence, key in zip(all_sequences, state_keys)})
        for source in ctx.view_sources:
            source.fetched = [(None, row) for row in system_views.view_rows(source.view, ctx.catalog)]


# --- plans -------------------------------------------------------------------------------
class QueryPlan:
    columns: list[tuple[str, SqlType]]
    correlated: bool = False
    unknown_columns: frozenset = frozenset()  # columns that are untyped string literals

    def resolution_types(self) -> list[SqlType]:
        """Column types as a set operation sees them (untyped literals still untyped)."""
        return [types.UNKNOWN if i in self.unknown_columns else t for i, (_, t) in enumerate(self.columns)]

    def run(self) -> list[tuple]:
        raise NotImplementedError

    def explain(self, depth: int = 0) -> list[str]:
        raise NotImplementedError


@dataclasses.dataclass(eq=False)
class Source:
    relation: Relation
    kind: str                               # table, view, derived, cte, values, function, lateral
    join_kind: str = "root"                 # root, inner, left, right, full, cross
    table: TableDef | None = None
    plan: AccessPlan | None = None
    view: Any = None
    subplan: QueryPlan | None = None
    condition: Compiled | None = None
    hash_keys: tuple[list[Compiled], list[Compiled]] | None = None
    fetched: list | None = None
    pushdown: "Pushdown | None" = None     # filter/projection storage applies (single-table scans)
    # A table function (`produce(left row) -> rows`) or a LATERAL subquery: its rows depend on the
    # row of the sources before it, which `lateral_scope` (those sources) exposes to its compiled
    # arguments or, through `lateral_scope.cell`, to the subquery's outer references.
    produce: Callable[[tuple], list[tuple]] | None = None
    lateral_scope: Scope | None = None
    reads_left: bool = True                 # a function whose arguments name an earlier FROM item
    # FULL JOIN ... USING/NATURAL: the merged columns are COALESCE(left, right), values no source
    # row holds, so they get hidden slots after this source's own columns, filled as rows join:
    # (left position, right position, slot position, left type, right type, merged type).
    merged: list[tuple[int, int, int, SqlType, SqlType, SqlType]] | None = None
    hidden_width: int = 0
    # per-run state
    _rows: list | None = None
    _hash: dict | None = None

    @property
    def width(self) -> int:
        return len(self.relation.columns)

    @property
    def pushdown_spec(self) -> bytes | None:
        return self.pushdown.spec if self.pushdown is not None else None

    def start_run(self) -> None:
        self._rows = None
        self._hash = None

    @property
    def lateral(self) -> bool:
        """True when the rows depend on the row of the sources before this one."""
        if self.produce is not None:
            return self.reads_left
        return self.kind == "lateral" and self.subplan.correlated

    def rows(self) -> list[tuple[bytes | None, tuple]]:
        if self._rows is not None:
            return self._rows
        if self.kind in ("table", "view"):
            assert self.fetched is not None, f"source {self.relation.name} was not fetched"
            self._rows = self.fetched
        elif self.produce is not None or self.lateral:
            self._rows = [(None, row) for row in self.rows_for(())]
        else:
            assert self.subplan is not None
            self._rows = [(None, row) for row in self.subplan.run()]
        return self._rows

    def rows_for(self, left: tuple) -> list[tuple]:
        """A lateral source's rows for one row of the sources before it."""
        if self.produce is not None:
            return self.produce(left)
        cell = self.lateral_scope.cell
        saved = cell[0]
        cell[0] = left
        try:
            return self.subplan.run()
        finally:
            cell[0] = saved

    def join(self, left_rows: list[tuple]) -> list[tuple]:
        """Joins this source to the rows of the sources before it. RIGHT and FULL joins need every
        left row in one call: the right rows no left row matched are added at the end."""
        lateral = self.lateral
        right = [] if lateral else self.rows()
        if self.hidden_width:
            hidden = (None,) * self.hidden_width
            right = [(key, row + hidden) for key, row in right]
        padding_before = self.relation.offset
        out: list[tuple] = []
        condition = self.condition.evaluate if self.condition is not None else None
        if self.hash_keys is not None and self._hash is None:
            assert not lateral
            table: dict = collections.defaultdict(list)
            right_evals = [k.evaluate for k in self.hash_keys[1]]
            pad = (None,) * padding_before
            for index, (_, row) in enumerate(right):
                combined = pad + row
                key = tuple(e(combined) for e in right_evals)
                if any(v is None for v in key):
                    continue
                table[tuple(_group_key_value(v) for v in key)].append((index, row))
            self._hash = table
        left_evals = [k.evaluate for k in self.hash_keys[0]] if self.hash_keys is not None else None
        nulls = (None,) * self.width
        pads_left = self.join_kind in ("left", "full")
        matched_right: set[int] | None = set() if self.join_kind in ("right", "full") else None
        # Every right row with its index: for nested loops and to find the unmatched ones (with a
        # hash join fed one root row at a time, building it per call would cost O(right) each).
        needs_all = not lateral and (left_evals is None or matched_right is not None)
        every_right = list(enumerate(row for _, row in right)) if needs_all else []
        for left in left_rows:
            if lateral:
                candidates = list(enumerate(self.rows_for(left)))
            elif left_evals is not None:
                key = tuple(e(left) for e in left_evals)
                candidates = [] if any(v is None for v in key) else \
                    self._hash.get(tuple(_group_key_value(v) for v in key), [])
            else:
                candidates = every_right
            matched = False
            for index, row in candidates:
                combined = left + row
                if condition is None or condition(combined) is True:
                    out.append(combined)
                    matched = True
                    if matched_right is not None:
                        matched_right.add(index)
            if not matched and pads_left:
                out.append(left + nulls)
            if len(out) > limits.RESULT_ROWS_MAX:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"join result exceeds the limit of {limits.RESULT_ROWS_MAX} rows")
        if matched_right is not None:
            left_nulls = (None,) * padding_before
            out += [left_nulls + row for index, row in every_right if index not in matched_right]
        if self.merged:
            out = [self._fill_merged(row) for row in out]
        return out

    def _fill_merged(self, row: tuple) -> tuple:
        values = list(row)
        for left, right, slot, left_type, right_type, merged_type in self.merged:
            if row[left] is not None:
                values[slot] = types.convert(row[left], left_type, merged_type)
            elif row[right] is not None:
                values[slot] = types.convert(row[right], right_type, merged_type)
        return tuple(values)

    def describe(self) -> str:
        name = self.relation.name
        if self.kind == "table":
            table = self.table
            alias = f" {name}" if name != table.name else ""
            plan = self.plan
            if plan.kind is PlanKind.POINT:
                if not plan.point_keys:
                    return f"Empty Result on {table.name}{alias} (contradictory key conditions)"
                return f"Point Lookup on {table.name}{alias} ({len(plan.point_keys)} key(s): {plan.detail})"
            if plan.kind is PlanKind.RANGE:
                return f"Primary Key Range Scan on {table.name}{alias} ({plan.detail})"
            if plan.kind is PlanKind.INDEX:
                return f"Index Scan using {plan.index.name} on {table.name}{alias} ({plan.detail})"
            return f"Full Scan on {table.name}{alias}"
        if self.kind == "view":
            kind = "Sequence" if isinstance(self.view, SequenceRelation) else "System View"
            return f"{kind} Scan on {self.view.name}"
        if self.kind == "cte":
            return f"CTE Scan on {name}"
        if self.kind == "values":
            return f"Values Scan on {name}"
        if self.kind == "function":
            return f"Function Scan on {name}"
        if self.kind == "lateral":
            return f"Lateral Subquery Scan on {name}"
        return f"Subquery Scan on {name}"


class CtePlan(QueryPlan):
    def __init__(self, name: str, plan: QueryPlan, column_names: list[str] | None):
        self.name = name
        self.plan = plan
        names = column_names or [c[0] for c in plan.columns]
        if len(names) > len(plan.columns):
            raise SqlError(errors.INVALID_COLUMN_REFERENCE, f'WITH query "{name}" has {len(plan.columns)} columns available but {len(names)} columns specified')
        names = names + [c[0] for c in plan.columns[len(names):]]
        self.columns = [(n, t) for n, (_, t) in zip(names, plan.columns)]
        self.correlated = plan.correlated
        self._cache: list | None = None

    def run(self) -> list[tuple]:
        if self.correlated:
            return self.plan.run()
        if self._cache is None:
            self._cache = self.plan.run()
        return self._cache

    def explain(self, depth: int = 0) -> list[str]:
        return self.plan.explain(depth)


class SelectPlan(QueryPlan):
    def __init__(self, sources: list[Source], program: SelectProgram, scope: Scope, ctx: QueryContext):
        self.sources = sources
        self.program = program
        self.scope = scope
        self.ctx = ctx
        self.columns = list(program.columns)
        self.correlated = scope.uses_outer
        self.unknown_columns = frozenset(program.unknown_outputs)
        self.subplans: list[QueryPlan] = []
        # RIGHT/FULL joins add the right rows no left row matched: they need all the left rows
        # at once, so the root is not fed one row at a time.
        self.batch = any(s.join_kind in ("right", "full") for s in sources[1:])

    def _feed_batch(self, root_rows) -> None:
        rows = [row for _, row in root_rows]
        for source in self.sources[1:]:
            rows = source.join(rows)
        program = self.program
        for combined in rows:
            if program.matches(combined):
                program.add_row(combined, None)
                if program.enough():
                    return

    def _joined(self, key: bytes | None, row: tuple) -> list[tuple]:
        rows = [row]
        for source in self.sources[1:]:
            rows = source.join(rows)
            if not rows:
                break
        return rows

    def _start(self) -> None:
        self.program.reset()
        for source in self.sources:
            source.start_run()

    def _feed(self, key: bytes | None, row: tuple) -> bool:
        """Feeds one root row through the joins and the program; True when the program has enough."""
        program = self.program
        for combined in (self._joined(key, row) if len(self.sources) > 1 else (row,)):
            if program.matches(combined):
                program.add_row(combined, key)
                if program.enough():
                    return True
        return False

    def run_chunks(self, chunk_rows: int) -> Iterator[list[tuple]]:
        """The rows of a streamable plan (`stream_query`), about chunk_rows at a time as they are
        made: memory holds one chunk, not the result."""
        assert chunk_rows > 0 and self.program.streamable and len(self.sources) <= 1
        self._start()
        if not self.sources:
            if self.program.matches(()):
                self.program.add_row(())
        else:
            for key, row in self.sources[0].rows():
                self._feed(key, row)
                if len(self.program._rows) >= chunk_rows:
                    yield self.program.take_rows()
        rows = self.program.take_rows()
        if rows:
            yield rows

    def run(self) -> list[tuple]:
        self._start()
        if not self.sources:
            if self.program.matches(()):
                self.program.add_row(())
        elif self.batch:
            self._feed_batch(self.sources[0].rows())
        else:
            for key, row in self.sources[0].rows():
                if self._feed(key, row):
                    break
        rows, _ = self.program.finish()
        return rows

    async def run_top(self) -> tuple[list[tuple], list[bytes]]:
        """The top-level run: streams the first source when it is a base table."""
        self._start()
        root = self.sources[0] if self.sources else None
        if root is not None and root is self.ctx.streamed and self.batch:
            root_rows = []
            async for key, row in read_rows(self.ctx.txn, root.table, root.plan, root.pushdown_spec):
                root_rows.append((key, row))
                if len(root_rows) > limits.STATEMENT_ROWS_READ_MAX:
                    raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                                   f"statement reads more than {limits.STATEMENT_ROWS_READ_MAX} rows")
            self._feed_batch(root_rows)
        elif root is not None and root is self.ctx.streamed:
            async for key, row in read_rows(self.ctx.txn, root.table, root.plan, root.pushdown_spec):
                if self._feed(key, row):
                    break
        elif root is None:
            if self.program.matches(()):
                self.program.add_row(())
        elif self.batch:
            self._feed_batch(root.rows())
        else:
            for key, row in root.rows():
                if self._feed(key, row):
                    break
        return self.program.finish()

    def explain(self, depth: int = 0) -> list[str]:
        program = self.program
        lines: list[str] = []
        steps = []
        if program.limit is not None or program.offset:
            steps.append(f"Limit ({'' if program.limit is None else program.limit}"
                         f"{', offset ' + str(program.offset) if program.offset else ''})")
        if program.for_update:
            steps.append("Lock Rows (FOR UPDATE: keys join the commit's conflict check)")
        if program.order:
            steps.append(f"Sort ({len(program.order)} key(s))")
        if program.distinct:
            steps.append("Distinct")
        if program.set_returning is not None:
            steps.append(f"ProjectSet ({len(program.set_returning.calls)} set-returning function(s))")
        if program.windows is not None:
            steps.append(f"WindowAgg ({len(program.windows.calls)} window function(s))")
        if program.grouped:
            steps.append(f"Aggregate ({len(program.collector.group_nodes)} group key(s), "
                         f"{len(program.collector.aggregates)} aggregate(s))")
        if program.where is not None:
            steps.append("Filter (WHERE)")
        indent = depth
        for step in steps:
            lines.append(_indent(indent) + step)
            indent += 1
        if not self.sources:
            lines.append(_indent(indent) + "Result (no table)")
        elif len(self.sources) == 1:
            lines += _source_lines(self.sources[0], indent)
        else:
            lines += _join_lines(self.sources, indent)
        for subplan in self.subplans:
            lines.append(_indent(indent) + ("Correlated SubPlan" if subplan.correlated else "SubPlan (run once)"))
            lines += subplan.explain(indent + 1)
        return lines


def _indent(depth: int) -> str:
    return "" if depth == 0 else "  " * depth + "->  "


def _source_lines(source: Source, depth: int) -> list[str]:
    lines = [_indent(depth) + source.describe()]
    if source.pushdown is not None:
        pad = " " * (len(_indent(depth)) + 2)
        lines += [pad + line for line in source.pushdown.explain_lines()]
    if source.subplan is not None:
        lines += source.subplan.explain(depth + 1)
    return lines


def _join_lines(sources: list[Source], depth: int) -> list[str]:
    if len(sources) == 1:
        return _source_lines(sources[0], depth)
    last = sources[-1]
    method = "Hash Join" if last.hash_keys is not None else "Nested Loop"
    kind = {"left": "Left ", "right": "Right ", "full": "Full ", "cross": "Cross ", "inner": ""}[last.join_kind]
    lines = [_indent(depth) + f"{method} ({kind or 'Inner '}join {last.relation.name})"]
    lines += _join_lines(sources[:-1], depth + 1)
    lines += _source_lines(last, depth + 1)
    return lines


class ValuesPlan(QueryPlan):
    def __init__(self, rows: list[list[Compiled]], names: list[str] | None = None):
        width = len(rows[0])
        column_types = []
        for position in range(width):
            column_types.append(types.common_type([row[position].sql_type for row in rows], "VALUES"))
        self.rows = [[coerce(row[p], column_types[p]) for p in range(width)] for row in rows]
        names = names or [f"column{i + 1}" for i in range(width)]
        self.columns = list(zip(names, column_types))
        self.correlated = False

    def run(self) -> list[tuple]:
        return [tuple(c.evaluate(()) for c in row) for row in self.rows]

    def explain(self, depth: int = 0) -> list[str]:
        return [_indent(depth) + f"Values ({len(self.rows)} row(s))"]


def _set_value(value: Any, source: SqlType, target: SqlType) -> Any:
    if value is None or source.kind == target.kind:
        return value
    if source.kind is Kind.UNKNOWN:
        return types.parse_text_as(value, target)
    return types.convert(value, source, target)


class SetOpPlan(QueryPlan):
    def __init__(self, kind: str, distinct: bool, left: QueryPlan, right: QueryPlan):
        self.kind = kind
        self.distinct = distinct
        self.left, self.right = left, right
        if len(left.columns) != len(right.columns):
            raise SqlError(errors.SYNTAX_ERROR, f"each {kind} query must have the same number of columns")
        self.columns = []
        unknown = set()
        for position, (name, left_type, right_type) in enumerate(
                zip([n for n, _ in left.columns], left.resolution_types(), right.resolution_types())):
            if left_type.kind is Kind.UNKNOWN and right_type.kind is Kind.UNKNOWN:
                unknown.add(position)
            self.columns.append((name, types.common_type([left_type, right_type], kind)))
        self.unknown_columns = frozenset(unknown)
        self.correlated = left.correlated or right.correlated
        self.order: list[tuple[int, bool, bool]] = []
        self.limit: int | None = None
        self.offset = 0

    def _convert(self, plan: QueryPlan, rows: list[tuple]) -> list[tuple]:
        conversions = [(source, target) for source, (_, target) in zip(plan.resolution_types(), self.columns)]
        if all(s.kind == t.kind for s, t in conversions):
            return rows
        return [tuple(_set_value(v, s, t) for v, (s, t) in zip(row, conversions)) for row in rows]

    def _marker(self, row: tuple) -> tuple:
        return tuple(_group_key_value(v.rstrip(" ") if isinstance(v, str) and t.kind is Kind.CHAR else v)
                     for v, (_, t) in zip(row, self.columns))

    def run(self) -> list[tuple]:
        left = self._convert(self.left, self.left.run())
        right = self._convert(self.right, self.right.run())
        if self.kind == "UNION":
            rows = left + right
            if self.distinct:
                seen: dict = {}
                for row in rows:
                    seen.setdefault(self._marker(row), row)
                rows = list(seen.values())
        else:
            right_counts = collections.Counter(self._marker(r) for r in right)
            rows = []
            emitted: set = set()
            for row in left:
                marker = self._marker(row)
                present = right_counts.get(marker, 0) > 0
                if self.kind == "INTERSECT":
                    keep = present
                    if present and not self.distinct:
                        right_counts[marker] -= 1
                else:
                    keep = not present
                    if present and not self.distinct:
                        right_counts[marker] -= 1
                        keep = False
                if keep and self.distinct:
                    if marker in emitted:
                        continue
                    emitted.add(marker)
                if keep:
                    rows.append(row)
        if len(rows) > limits.RESULT_ROWS_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, f"query result exceeds the limit of {limits.RESULT_ROWS_MAX} rows")
        rows = types.sort_by_keys(rows, [(d, n) for _, d, n in self.order], columns=[p for p, _, _ in self.order])
        end = None if self.limit is None else self.offset + self.limit
        return rows[self.offset:end]

    def explain(self, depth: int = 0) -> list[str]:
        word = self.kind + ("" if self.distinct else " ALL")
        lines = [_indent(depth) + word]
        lines += self.left.explain(depth + 1)
        lines += self.right.explain(depth + 1)
        return lines


# --- compile ---------------------------------------------------------------------------------
def compile_query(node: exp.Expression, parent: Scope | None, ctx: QueryContext) -> QueryPlan:
    """Phase 1 for any query expression (SELECT, set operation, VALUES, parenthesized query)."""
    while isinstance(node, exp.Subquery) and not node.args.get("alias"):
        inner = node.this
        _reject_modifiers(node)
        node = inner
    with_clause = node.args.get("with_") or node.args.get("with")
    if with_clause is not None:
        recursive = bool(with_clause.args.get("recursive"))
        _check_args(with_clause, {"expressions", "recursive"}, "in WITH")
        for cte in with_clause.expressions:
            _check_args(cte, {"this", "alias", "materialized"}, "in a WITH query")
        frame: dict[str, CtePlan] = {}
        ctx.ctes.append(frame)
        try:
            for cte in with_clause.expressions:
                alias = cte.args["alias"]
                name = identifier_name(alias.this)
                if name in frame:
                    raise SqlError(errors.DUPLICATE_ALIAS, f'WITH query name "{name}" specified more than once')
                if not isinstance(cte.this, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values,
                                             exp.Subquery)):
                    raise SqlError(errors.FEATURE_NOT_SUPPORTED, "data-modifying statements in WITH are not supported")
                column_names = [identifier_name(c) for c in alias.columns] if alias.columns else None
                if recursive and _references(cte.this, name):
                    frame[name] = _compile_recursive(name, cte.this, column_names, parent, ctx, frame)
                    continue
                frame[name] = CtePlan(name, compile_query(cte.this, parent, ctx), column_names)
            return _compile_body(node, parent, ctx)
        finally:
            ctx.ctes.pop()
    return _compile_body(node, parent, ctx)


# --- WITH RECURSIVE ----------------------------------------------------------------------


class WorkingTable(QueryPlan):
    """What a recursive term reads under the CTE's name: the rows of the previous iteration."""

    def __init__(self, columns: list[tuple[str, SqlType]]):
        self.columns = columns
        self.rows: list[tuple] = []

    def run(self) -> list[tuple]:
        return self.rows

    def explain(self, depth: int = 0) -> list[str]:
        return [_indent(depth) + "WorkTable Scan"]


class RecursivePlan(QueryPlan):
    """`non-recursive term UNION [ALL] recursive term`, evaluated as PostgreSQL does: the
    non-recursive term's rows are the first working table; each iteration runs the recursive
    term over the working table and its new rows (for UNION: rows not seen before) become the
    next one; the result is every row produced, in order, when an iteration yields none."""

    def __init__(self, name: str, anchor: QueryPlan, step: QueryPlan, working: WorkingTable, distinct: bool):
        self.name = name
        self.anchor, self.step, self.working = anchor, step, working
        self.distinct = distinct
        self.columns = list(working.columns)
        self.correlated = anchor.correlated or step.correlated
        if len(step.columns) != len(self.columns):
            raise SqlError(errors.SYNTAX_ERROR, "each UNION query must have the same number of columns")
        self.conversions = []
        for position, ((_, wanted), step_type) in enumerate(zip(self.columns, step.resolution_types())):
            if step_type.kind is not wanted.kind:
                common = types.common_type([wanted, step_type], "UNION")
                if common.kind is not wanted.kind:
                    raise SqlError(errors.DATATYPE_MISMATCH,
                                   f'recursive query "{name}" column {position + 1} has type {wanted.display_name} '
                                   f'in non-recursive term but type {common.display_name} overall',
                                   hint="Cast the output of the non-recursive term to the correct type.")
            self.conversions.append((step_type, wanted))

    def run(self) -> list[tuple]:
        seen: set = set()
        rows = self._new_rows(self.anchor.run(), seen)
        result = list(rows)
        for _ in range(limits.RECURSIVE_ITERATIONS_MAX + 1):
            if not rows:
                return result
            self.working.rows = rows
            produced = [tuple(_set_value(v, s, t) for v, (s, t) in zip(row, self.conversions))
                        for row in self.step.run()]
            rows = self._new_rows(produced, seen)
            result += rows
            if len(result) > limits.RESULT_ROWS_MAX:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f'recursive query "{self.name}" produces more than {limits.RESULT_ROWS_MAX} rows')
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                       f'recursive query "{self.name}" runs more than {limits.RECURSIVE_ITERATIONS_MAX} iterations')

    def _new_rows(self, rows: list[tuple], seen: set) -> list[tuple]:
        if not self.distinct:
            return rows
        fresh = []
        for row in rows:
            marker = tuple(_group_key_value(v) for v in row)
            if marker not in seen:
                seen.add(marker)
                fresh.append(row)
        return fresh

    def explain(self, depth: int = 0) -> list[str]:
        lines = [_indent(depth) + f"Recursive Union{'' if self.distinct else ' All'} ({self.name})"]
        lines += self.anchor.explain(depth + 1)
        lines += self.step.explain(depth + 1)
        return lines


def _references(node: exp.Expression, name: str) -> bool:
    return bool(_recursive_references(node, name))


def _recursive_references(node: exp.Expression, name: str) -> list[exp.Table]:
    return [t for t in node.find_all(exp.Table)
            if isinstance(t.this, exp.Identifier) and t.args.get("db") is None and identifier_name(t.this) == name]


def _compile_recursive(name: str, node: exp.Expression, column_names: list[str] | None, parent: Scope | None,
                       ctx: QueryContext, frame: dict) -> CtePlan:
    if not isinstance(node, exp.Union):
        raise SqlError(errors.INVALID_RECURSION, f'recursive query "{name}" does not have the form '
                                        f'non-recursive-term UNION [ALL] recursive-term')
    for key, word in (("order", "ORDER BY"), ("limit", "LIMIT"), ("offset", "OFFSET")):
        if node.args.get(key) is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{word} in a recursive query is not implemented")
    anchor_node, step_node = node.this, node.expression
    if _references(anchor_node, name):
        raise SqlError(errors.INVALID_RECURSION,
                       f'recursive reference to query "{name}" must not appear within its non-recursive term')
    _check_recursive_term(step_node, name)
    anchor = compile_query(anchor_node, parent, ctx)
    columns = CtePlan(name, anchor, column_names).columns
    columns = [(n, types.TEXT if t.kind in types.UNTYPED_KINDS else t) for n, t in columns]
    working = WorkingTable(columns)
    frame[name] = working  # the recursive term reads the working table under the CTE's name
    step = compile_query(step_node, parent, ctx)
    plan = RecursivePlan(name, anchor, step, working, bool(node.args.get("distinct")))
    return CtePlan(name, plan, None)


def _check_recursive_term(term: exp.Expression, name: str) -> None:
    """PostgreSQL's rules for where the recursive reference may stand (42P19)."""
    references = _recursive_references(term, name)
    if len(references) > 1:
        raise SqlError(errors.INVALID_RECURSION, f'recursive reference to query "{name}" must not appear more than once')
    for reference in references:
        node: exp.Expression = reference
        while node is not term and node.parent is not None:
            parent = node.parent
            if isinstance(parent, exp.Select) and parent is not term and not _in_from(parent):
                raise SqlError(errors.INVALID_RECURSION,
                               f'recursive reference to query "{name}" must not appear within a subquery')
            if isinstance(parent, (exp.Intersect, exp.Except)):
                raise SqlError(errors.INVALID_RECURSION,
                               f'recursive reference to query "{name}" must not appear within INTERSECT/EXCEPT')
            if isinstance(parent, exp.Select) and _outer_joined(parent, node):
                raise SqlError(errors.INVALID_RECURSION,
                               f'recursive reference to query "{name}" must not appear within an outer join')
            node = parent
    if isinstance(term, exp.Select) and references:
        if any(contains_aggregate(e) for e in term.expressions) or term.args.get("group") is not None:
            raise SqlError(errors.INVALID_RECURSION, "aggregate functions are not allowed in a recursive query's recursive term")
        for key, word in (("order", "ORDER BY"), ("limit", "LIMIT"), ("offset", "OFFSET")):
            if term.args.get(key) is not None:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{word} in a recursive query is not implemented")


def _in_from(select: exp.Select) -> bool:
    """True when `select` is a subquery in a FROM clause (not an expression)."""
    holder = select.parent
    return isinstance(holder, exp.Subquery) and isinstance(holder.parent, (exp.From, exp.Join, exp.Lateral))


def _outer_joined(select: exp.Select, item: exp.Expression) -> bool:
    """True when FROM item `item` (the From node or a Join of `select`) may be NULL-padded."""
    joins = select.args.get("joins") or []
    if isinstance(item, exp.From):
        later = joins
    elif isinstance(item, exp.Join) and item in joins:
        if str(item.args.get("side") or "").upper() in ("LEFT", "FULL"):
            return True
        later = joins[joins.index(item) + 1:]
    else:
        return False
    return any(str(j.args.get("side") or "").upper() in ("RIGHT", "FULL") for j in later)


def _check_args(node: exp.Expression, handled: set[str], where: str) -> None:
    """Refuses arguments the engine would otherwise ignore (SEARCH/CYCLE clauses, ...)."""
    for key, value in node.args.items():
        if key not in handled and value not in (None, False, []):
            word = "SEARCH/CYCLE" if key == "search" else key.upper()  # sqlglot keeps CYCLE under "search"
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{word} {where} is not supported")


def _reject_modifiers(node: exp.Expression) -> None:
    for key in ("order", "limit", "offset"):
        if node.args.get(key) is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{key.upper()} on a parenthesized query is not supported")


def _compile_body(node: exp.Expression, parent: Scope | None, ctx: QueryContext) -> QueryPlan:
    if isinstance(node, exp.Select):
        return compile_select_plan(node, parent, ctx)
    if isinstance(node, (exp.Union, exp.Intersect, exp.Except)):
        return _compile_set_operation(node, parent, ctx)
    if isinstance(node, exp.Values):
        return _compile_values(node, parent, ctx, None)
    raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"this kind of query ({type(node).__name__}) is not supported")


def _compile_set_operation(node, parent: Scope | None, ctx: QueryContext) -> SetOpPlan:
    kind = {exp.Union: "UNION", exp.Intersect: "INTERSECT", exp.Except: "EXCEPT"}[type(node)]
    left = compile_query(node.this, parent, ctx)
    right = compile_query(node.expression, parent, ctx)
    plan = SetOpPlan(kind, bool(node.args.get("distinct")), left, right)
    order = node.args.get("order")
    if order is not None:
        for item in order.expressions:
            plan.order.append(_set_order_item(item, plan))
    plan.limit = _limit_value(node.args.get("limit"), "LIMIT", ctx)
    plan.offset = _limit_value(node.args.get("offset"), "OFFSET", ctx) or 0
    return plan


def _set_order_item(item: exp.Ordered, plan: SetOpPlan) -> tuple[int, bool, bool]:
    node = item.this
    descending = bool(item.args.get("desc"))
    nulls_first = item.args.get("nulls_first")
    if nulls_first is None:
        nulls_first = descending
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        position = int(node.this)
        if not 1 <= position <= len(plan.columns):
            raise SqlError(errors.INVALID_COLUMN_REFERENCE, f"ORDER BY position {position} is not in select list")
        return position - 1, descending, bool(nulls_first)
    if isinstance(node, exp.Column) and node.args.get("table") is None and not isinstance(node.this, exp.Star):
        name = identifier_name(node.this)
        for index, (column_name, _) in enumerate(plan.columns):
            if column_name == name:
                return index, descending, bool(nulls_first)
        raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" does not exist')
    raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                   f"ORDER BY on a {plan.kind} result must name an output column or position")


def _compile_values(node: exp.Values, parent: Scope | None, ctx: QueryContext, names: list[str] | None) -> ValuesPlan:
    compiler = Compiler(Scope([], parent), "VALUES", None, ctx)
    rows = []
    width = None
    for tuple_node in node.expressions:
        items = tuple_node.expressions if isinstance(tuple_node, exp.Tuple) else [tuple_node]
        if width is None:
            width = len(items)
        elif len(items) != width:
            raise SqlError(errors.SYNTAX_ERROR, "VALUES lists must all be the same length")
        rows.append([compiler.compile(item) for item in items])
    if names is not None and len(names) > width:
        raise SqlError(errors.INVALID_COLUMN_REFERENCE, f"table \"{names and 'values'}\" has {width} columns available but {len(names)} columns specified")
    full_names = None
    if names is not None:
        full_names = names + [f"column{i + 1}" for i in range(len(names), width)]
    plan = ValuesPlan(rows, full_names)
    plan.correlated = compiler.scope.uses_outer  # VALUES (t.x) in a subquery or LATERAL reads an outer row
    return plan


def compile_select_plan(select: exp.Select, parent: Scope | None, ctx: QueryContext,
                        stream_root: bool = False) -> SelectPlan:
    from_clause = select.args.get("from_") or select.args.get("from")
    joins = select.args.get("joins") or []
    if from_clause is None:
        if joins:
            raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near "JOIN"')
        scope = Scope([], parent)
        program = compile_select(select, scope, False, ctx)
        plan = SelectPlan([], program, scope, ctx)
        return plan
    items = [(from_clause.this, None)] + [(join.this, join) for join in joins]
    sources: list[Source] = []
    for item, join in items:
        join_kind = _join_kind(join) if join is not None else "root"
        source = _make_source(item, parent, ctx, sources, join_kind)
        source.join_kind = join_kind
        if join_kind == "full":
            _reserve_merged_slots(join, source, sources)
        if any(s.relation.name == source.relation.name for s in sources):
            raise SqlError(errors.DUPLICATE_ALIAS, f'table name "{source.relation.name}" specified more than once')
        sources.append(source)
    scope = Scope([s.relation for s in sources], parent)
    if any(s.lateral_scope is not None and s.lateral_scope.uses_outer for s in sources) or \
            any(s.kind in ("derived", "lateral", "cte", "values") and s.subplan.correlated and s.lateral_scope is None
                for s in sources):
        scope.uses_outer = True  # a FROM item reads a row of an enclosing query: so does this query
    star_entries = [(name, i, sources[0].relation.name) for i, name in sources[0].relation.star_columns()]
    for position, (item, join) in enumerate(items):
        if join is None:
            continue
        source = sources[position]
        prefix = Scope([s.relation for s in sources[:position + 1]], parent)
        prefix.cell = scope.cell
        star_entries = _compile_join(join, source, sources[:position], prefix, scope, ctx, star_entries)
    where = select.args.get("where")
    where_conjuncts = split_and(where.this) if where is not None else []
    for position, source in enumerate(sources):
        if source.kind != "table":
            continue
        usable = []
        if not _nullable_side(sources, position):
            usable += where_conjuncts
        join = items[position][1]
        if join is not None and join.args.get("on") is not None and source.join_kind in ("inner", "left"):
            usable += split_and(join.args["on"])
        source.plan = plan_access(source.table, usable, _position_in(scope, source))
    if len(sources) == 1 and sources[0].kind == "table" and sources[0].plan.kind in (PlanKind.FULL, PlanKind.RANGE):
        root = sources[0]
        root.pushdown = build_pushdown(root.table, root.relation.name, root.relation.columns, where_conjuncts,
                                       _position_in(scope, root), select)
    program = compile_select(select, scope, True, ctx, star_entries)
    plan = SelectPlan(sources, program, scope, ctx)
    if program.for_update and (len(sources) > 1 or sources[0].kind != "table"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "FOR UPDATE is supported only on a single table")
    if stream_root and sources and sources[0].kind == "table":
        ctx.streamed = sources[0]
    return plan


_JOIN_ARGS = {"this", "side", "kind", "on", "using", "method"}


def _join_kind(join: exp.Join) -> str:
    for key, value in join.args.items():
        if key not in _JOIN_ARGS and value not in (None, False, []):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{key.upper()} in a join is not supported")
    side = str(join.args.get("side") or "").upper()
    kind = str(join.args.get("kind") or "").upper()
    method = str(join.args.get("method") or "").upper()
    if method not in ("", "NATURAL"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{method} JOIN is not supported")
    natural = method == "NATURAL"
    if natural and (join.args.get("on") is not None or join.args.get("using")):
        raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near "ON"')
    if side in ("LEFT", "RIGHT", "FULL"):
        if join.args.get("on") is None and not join.args.get("using") and not natural:
            raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
        return side.lower()
    if kind == "CROSS" or (join.args.get("on") is None and not join.args.get("using") and not natural):
        if kind in ("INNER",) or side:
            raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
        return "cross"
    return "inner"


def _nullable_side(sources: list[Source], position: int) -> bool:
    """True when the source's rows may be NULL-padded: its WHERE conjuncts cannot narrow its read."""
    if sources[position].join_kind in ("left", "full"):
        return True
    return any(s.join_kind in ("right", "full") for s in sources[position + 1:])


def _position_in(scope: Scope, source: Source):
    relation = source.relation
    table = source.table

    def position_of(column: exp.Column) -> int | None:
        try:
            found = scope.resolve_local(column)
        except SqlError:
            return None
        if found is None:
            return None
        index = found[0] - relation.offset
        if 0 <= index < len(relation.columns):
            return table.column_index(relation.columns[index][0])
        return None
    return position_of


def _make_source(item: exp.Expression, parent: Scope | None, ctx: QueryContext, before: list[Source],
                 join_kind: str) -> Source:
    alias_node = item.args.get("alias")
    alias = identifier_name(alias_node.this) if alias_node is not None and alias_node.this is not None else None
    column_aliases = [identifier_name(c) for c in alias_node.columns] if alias_node is not None and alias_node.columns \
        else None
    if isinstance(item, exp.Lateral) or (isinstance(item, exp.Table) and not isinstance(item.this, exp.Identifier)):
        return _make_lateral_source(item, parent, ctx, before, join_kind, alias, column_aliases)
    if isinstance(item, exp.Table):
        if isinstance(item.this, exp.Identifier) and item.args.get("ordinality"):
            raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near "WITH"')
        name = identifier_name(item.this)
        cte = ctx.find_cte(name) if item.args.get("db") is None else None
        if cte is not None:
            columns = _renamed(cte.columns, column_aliases, alias or name)
            return Source(Relation(alias or name, columns), "cte", subplan=cte)
        if system_views.is_system_reference(item):
            view = system_views.resolve_view(item)
            source = Source(Relation(alias or view.name, _renamed(view.columns, column_aliases, alias or view.name),
                                     system=frozenset(getattr(view, "system_columns", ()))), "view", view=view)
            ctx.view_sources.append(source)
            return source
        sequence = getattr(ctx.txn, "sequence_relations", {}).get(table_name(item))
        if sequence is not None:
            view = SequenceRelation(sequence.name, pg_catalog.SEQUENCE_COLUMNS, sequence)
            source = Source(Relation(alias or view.name, _renamed(view.columns, column_aliases, alias or view.name)),
                            "view", view=view)
            ctx.sequence_sources.append(source)
            return source
        table = ctx.table(table_name(item))
        columns = _renamed(tuple((c.name, c.sql_type) for c in table.columns), column_aliases, alias or table.name)
        source = Source(Relation(alias or table.name, columns), "table", table=table)
        ctx.table_sources.append(source)
        return source
    if isinstance(item, exp.Unnest) and item.expressions:  # unnest(a, b, ...): several arrays side by side
        return _make_lateral_source(item, parent, ctx, before, join_kind, alias, column_aliases)
    if isinstance(item, exp.Subquery):
        if alias is None:
            raise SqlError(errors.SYNTAX_ERROR, "subquery in FROM must have an alias",
                           hint='For example, FROM (SELECT ...) [AS] foo.')
        subplan = compile_query(item.this, parent, ctx)
        return Source(Relation(alias, _renamed(tuple(subplan.columns), column_aliases, alias)), "derived",
                      subplan=subplan)
    if isinstance(item, exp.Values):
        if alias is None:
            raise SqlError(errors.SYNTAX_ERROR, "VALUES in FROM must have an alias",
                           hint='For example, FROM (VALUES ...) [AS] foo.')
        subplan = _compile_values(item, parent, ctx, column_aliases)
        return Source(Relation(alias, tuple(subplan.columns)), "values", subplan=subplan)
    raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{type(item).__name__} in FROM is not supported")


@dataclasses.dataclass(frozen=True)
class SequenceRelation:
    """A sequence read as a relation: one row (last_value, log_cnt, is_called), from its stored
    state when the statement fetches (bulk.relation_row says what the values mean here)."""
    name: str
    columns: tuple[tuple[str, SqlType], ...]
    definition: SequenceDef


_LATERAL_ARGS = {"this", "alias", "ordinality", "view", "outer", "cross_apply"}
_FUNCTION_TABLE_ARGS = {"this", "alias", "ordinality", "db"}
_UNNEST_ARGS = {"expressions", "alias", "offset"}


def _make_lateral_source(item: exp.Expression, parent: Scope | None, ctx: QueryContext, before: list[Source],
                         join_kind: str, alias: str | None, column_aliases: list[str] | None) -> Source:
    """A function in FROM or a LATERAL subquery: compiled in a scope of the FROM items before it,
    whose current row the join hands over (PostgreSQL makes functions in FROM lateral too)."""
    allowed = _LATERAL_ARGS if isinstance(item, exp.Lateral) else \
        _UNNEST_ARGS if isinstance(item, exp.Unnest) else _FUNCTION_TABLE_ARGS
    for key, value in item.args.items():
        if key not in allowed and value not in (None, False, []):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"{key.upper()} on a function or LATERAL item is not supported")
    if isinstance(item, exp.Table) and item.args.get("db") is not None:
        if item.args.get("catalog") is not None or identifier_name(item.args["db"]) != "pg_catalog":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "functions of schemas other than pg_catalog are not supported")
    lateral_scope = Scope([s.relation for s in before], parent)
    inner = item.this
    ordinality = bool(item.args.get("ordinality"))
    ordinal_name = None
    if isinstance(item, exp.Unnest):  # unnest(a, b) [WITH ORDINALITY]: sqlglot keeps the ordinal's name in `offset`
        inner = item
        ordinality = bool(item.args.get("offset"))
        if isinstance(item.args.get("offset"), exp.Identifier):
            ordinal_name = identifier_name(item.args["offset"])
    if isinstance(item, exp.Lateral):
        if item.args.get("view") or item.args.get("outer") or item.args.get("cross_apply") is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of LATERAL is not supported")
        if isinstance(inner, exp.Subquery):
            if ordinality:
                raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near "WITH"')
            if alias is None:
                raise SqlError(errors.SYNTAX_ERROR, "subquery in FROM must have an alias",
                               hint='For example, FROM (SELECT ...) [AS] foo.')
            subplan = compile_query(inner.this, lateral_scope, ctx)
            if subplan.correlated and join_kind in ("right", "full"):
                _invalid_lateral_reference(inner, before, join_kind)
            return Source(Relation(alias, _renamed(tuple(subplan.columns), column_aliases, alias)), "lateral",
                          subplan=subplan, lateral_scope=lateral_scope)
    function_name = table_functions.from_function_name(inner)
    if function_name is None:
        name = inner.sql_name().lower() if not isinstance(inner, exp.Anonymous) else str(inner.this).lower()
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"function {name}() in FROM is not supported")
    reads_left = _names_scope(inner, lateral_scope)
    if reads_left and join_kind in ("right", "full"):
        _invalid_lateral_reference(inner, before, join_kind)
    produce, column_types = table_functions.from_function(inner, Compiler(lateral_scope, "FROM", None, ctx))
    name = alias or function_name
    if function_name == "pg_options_to_table":
        columns = [("option_name", column_types[0]), ("option_value", column_types[1])]
    else:  # one column is named after the alias, as PostgreSQL does; several are each the function's
        columns = [(name if len(column_types) == 1 else function_name, sql_type) for sql_type in column_types]
    if ordinality:
        columns.append((ordinal_name or "ordinality", types.BIGINT))
        series = produce
        produce = lambda left: [row + (number,) for number, row in enumerate(series(left), start=1)]  # noqa: E731
    return Source(Relation(name, _renamed(tuple(columns), column_aliases, name)), "function",
                  produce=produce, lateral_scope=lateral_scope, reads_left=reads_left)


def _names_scope(node: exp.Expression, scope: Scope) -> bool:
    """True when an expression names a column of `scope`'s own relations."""
    for column in node.find_all(exp.Column):
        if isinstance(column.this, exp.Star):
            continue
        try:
            if scope.resolve_local(column) is not None:
                return True
        except SqlError:
            continue
    return False


def _invalid_lateral_reference(node: exp.Expression, before: list[Source], join_kind: str) -> None:
    """The rows of the left side of a RIGHT/FULL join are not known row by row where a lateral
    item would be evaluated: PostgreSQL rejects the reference, and so do we."""
    names = {s.relation.name for s in before}
    qualifiers = [identifier_name(c.args["table"]) for c in node.find_all(exp.Column) if c.args.get("table") is not None]
    table = next((q for q in qualifiers if q in names), before[-1].relation.name if before else "?")
    raise SqlError(errors.INVALID_COLUMN_REFERENCE, f'invalid reference to FROM-clause entry for table "{table}"',
                   detail="The combining JOIN type must be INNER or LEFT for a LATERAL reference.")


def _renamed(columns, aliases: list[str] | None, name: str) -> tuple:
    columns = tuple(columns)
    if not aliases:
        return columns
    if len(aliases) > len(columns):
        raise SqlError(errors.INVALID_COLUMN_REFERENCE, f'table "{name}" has {len(columns)} columns available but {len(aliases)} columns specified')
    return tuple((aliases[i] if i < len(aliases) else n, t) for i, (n, t) in enumerate(columns))


def _compile_join(join: exp.Join, source: Source, left_sources: list[Source], prefix: Scope, scope: Scope,
                  ctx: QueryContext, star_entries: list) -> list:
    compiler = Compiler(prefix, "JOIN/ON", None, ctx)
    conditions: list[Compiled] = []
    hash_left: list[Compiled] = []
    hash_right: list[Compiled] = []
    using = join.args.get("using") or []
    if str(join.args.get("method") or "").upper() == "NATURAL":
        using = _natural_columns(star_entries, source)
    if using:
        merged_entries = []
        for identifier in using:
            name = identifier_name(identifier)
            # The left side's columns are what its `SELECT *` would show: a column merged by an
            # earlier USING/NATURAL join counts once (a JOIN b USING (id) JOIN c USING (id)).
            left_matches = [entry for entry in star_entries if entry[0] == name]
            if not left_matches:
                raise SqlError(errors.UNDEFINED_COLUMN,
                               f'column "{name}" specified in USING clause does not exist in left table')
            if len(left_matches) > 1:
                raise SqlError(errors.AMBIGUOUS_COLUMN, f'common column name "{name}" appears more than once in left table')
            right_index = next((i for i, (n, _) in enumerate(source.relation.columns) if n == name), None)
            if right_index is None:
                raise SqlError(errors.UNDEFINED_COLUMN,
                               f'column "{name}" specified in USING clause does not exist in right table')
            _, left_position, left_relation = left_matches[0]
            left_type = _column_type_at(left_sources, left_position)
            right_position = source.relation.offset + right_index
            if source.join_kind == "full":
                slot_index = next(i for i, (n, _) in enumerate(source.relation.columns) if n == HIDDEN_PREFIX + name)
                slot_position = source.relation.offset + slot_index
                merged_type = source.relation.columns[slot_index][1]
            right_type = source.relation.columns[right_index][1]
            left_compiled = Compiled(lambda row, i=left_position: row[i], left_type.base)
            right_compiled = Compiled(lambda row, i=right_position: row[i], right_type.base)
            if source.lateral:  # rows differ per left row: compared row by row, no hash table
                conditions.append(compiler.compare(left_compiled, right_compiled, "=", operator.eq))
            else:
                left_form, right_form = compiler.comparable(left_compiled, right_compiled, "=")
                hash_left.append(left_form)
                hash_right.append(right_form)
            # The merged column is the left one, except in a RIGHT join, where only the right one
            # is never NULL-padded (PostgreSQL's choice too).
            shown = (right_position, right_type, source.relation.name) if source.join_kind == "right" \
                else (left_position, left_type, left_relation)
            if source.join_kind == "full":
                source.merged = (source.merged or []) + [
                    (left_position, right_position, slot_position, left_type.base, right_type.base, merged_type)]
                shown = (slot_position, merged_type, source.relation.name)
            scope.using[name] = (shown[0], shown[1])
            prefix.using[name] = (shown[0], shown[1])
            merged_entries.append((name, shown[0], shown[2]))
        merged_names = {e[0] for e in merged_entries}
        star_entries = merged_entries + [e for e in star_entries if e[0] not in merged_names] + [
            (n, source.relation.offset + i, source.relation.name)
            for i, n in source.relation.star_columns() if n not in merged_names]
    else:
        star_entries = star_entries + [(n, source.relation.offset + i, source.relation.name)
                                       for i, n in source.relation.star_columns()]
    on = join.args.get("on")
    non_equalities = 0
    if on is not None:
        for conjunct in split_and(on):
            pair = None if source.lateral else _equi_pair(conjunct, prefix, source, compiler)
            if pair is not None:
                hash_left.append(pair[0])
                hash_right.append(pair[1])
            elif not _constant_true(conjunct):
                conditions.append(compiler.compile_condition(conjunct))
                if not _constant(conjunct):
                    non_equalities += 1
        if source.join_kind == "full" and not hash_left and non_equalities:
            # PostgreSQL runs a FULL join only as a merge join (equalities and constants) or a
            # hash join (at least one equality), so it refuses other ON conditions; so do we.
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           "FULL JOIN is only supported with merge-joinable or hash-joinable join conditions")
    if hash_left:
        source.hash_keys = (hash_left, hash_right)
    if conditions:
        combined = conditions[0]
        for extra in conditions[1:]:
            combined = sql_and(combined, extra)
        source.condition = combined
    return star_entries


HIDDEN_PREFIX = "\x00merged "  # names no identifier can spell: the hidden slots of merged columns


def _reserve_merged_slots(join: exp.Join, source: Source, before: list[Source]) -> None:
    """Appends a hidden column per USING/NATURAL name of a FULL join to `source` (before the
    query's scope fixes every relation's offset); _compile_join fills in how to compute them."""
    if str(join.args.get("method") or "").upper() == "NATURAL":
        right_names = {name for name, _ in source.relation.columns}
        names = []
        for earlier in before:
            for name, _ in earlier.relation.columns:
                if name in right_names and name not in names and not name.startswith(HIDDEN_PREFIX):
                    names.append(name)
    else:
        names = [identifier_name(i) for i in join.args.get("using") or []]
    if not names:
        return
    hidden = []
    for name in names:
        right_type = next((t for n, t in source.relation.columns if n == name), types.TEXT)
        left_type = next((t for s in before for n, t in s.relation.columns if n == name), right_type)
        try:
            merged_type = types.common_type([left_type, right_type], "JOIN/USING")
        except SqlError:
            merged_type = right_type  # _compile_join reports the mismatch
        hidden.append((HIDDEN_PREFIX + name, merged_type))
    source.relation = Relation(source.relation.name, tuple(source.relation.columns) + tuple(hidden))
    source.hidden_width = len(hidden)


def _column_type_at(sources: list[Source], position: int) -> SqlType:
    for source in sources:
        index = position - source.relation.offset
        if 0 <= index < source.width:
            return source.relation.columns[index][1]
    raise AssertionError(f"no column at position {position}")


def _constant_true(node: exp.Expression) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    return isinstance(node, exp.Boolean) and bool(node.this)  # ON true: no condition at all


def _constant(node: exp.Expression) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    return isinstance(node, (exp.Boolean, exp.Null))


def _natural_columns(star_entries: list, source: Source) -> list[exp.Identifier]:
    """NATURAL JOIN's USING list: the names both sides have, in the left side's order."""
    right_names = {name for name, _ in source.relation.columns}
    names: list[str] = []
    for name, _, _ in star_entries:
        if name in right_names and name not in names:
            names.append(name)
    return [exp.Identifier(this=name, quoted=True) for name in names]


def _equi_pair(node: exp.Expression, prefix: Scope, source: Source, compiler: Compiler):
    """(left form, right form) when `node` is `left-side expr = new-table expr` (either order)."""
    while isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, exp.EQ):
        return None
    sides = [_side(part, prefix, source) for part in (node.this, node.expression)]
    if sides == ["left", "right"]:
        left_node, right_node = node.this, node.expression
    elif sides == ["right", "left"]:
        left_node, right_node = node.expression, node.this
    else:
        return None
    left_form, right_form = compiler.comparable(compiler.compile(left_node), compiler.compile(right_node), "=")
    return left_form, right_form


def _side(node: exp.Expression, prefix: Scope, source: Source) -> str:
    if any(isinstance(n, (exp.Subquery, exp.Select, exp.Exists)) for n in node.walk()):
        return "mixed"
    sides = set()
    for column in node.find_all(exp.Column):
        if isinstance(column.this, exp.Star):
            return "mixed"
        found = prefix.resolve_local(column)
        if found is None:
            continue
        sides.add("right" if found[0] >= source.relation.offset else "left")
    if len(sides) != 1:
        return "mixed"
    return sides.pop()


# --- running a top-level query ----------------------------------------------------------------
async def run_query(txn, node: exp.Expression, ctx: QueryContext,
                    compiled: Callable[[QueryPlan], None] | None = None) -> tuple[QueryPlan, list[tuple], list[bytes]]:
    """Compile, fetch and run a top-level query; also returns the source keys (FOR UPDATE).
    `compiled(plan)` is told the plan before anything is read (Describe)."""
    await preload_tables(txn, node)
    stream = isinstance(node, exp.Select) and not (node.args.get("with_") or node.args.get("with"))
    if stream:
        plan = compile_select_plan(node, None, ctx, stream_root=True)
    else:
        plan = compile_query(node, None, ctx)
    if compiled is not None:
        compiled(plan)
    _collect_subplans(plan, ctx)
    await fetch(ctx)
    if isinstance(plan, SelectPlan):
        rows, source_keys = await plan.run_top()
        return plan, rows, source_keys
    return plan, plan.run(), []


async def stream_query(txn, node: exp.Expression, ctx: QueryContext,
                       chunk_rows: int) -> tuple[QueryPlan, Iterator[list[tuple]]] | None:
    """(plan, its rows in chunks) of a query that names no table anywhere (a select list over
    generate_series, VALUES, no FROM) and keeps no rows (SelectProgram.streamable), compiled and
    fetched; None for any other query (run_query materialises it). Naming no table is what makes
    streaming safe under INSERT ... SELECT: rows written while the query still runs can never
    flow back into it. Bounded by the function's own row limit, not the result limit."""
    if not isinstance(node, exp.Select) or node.args.get("with_") or node.args.get("with"):
        return None
    if any(isinstance(table.this, exp.Identifier) for table in node.find_all(exp.Table)):
        return None
    await preload_tables(txn, node)
    plan = compile_select_plan(node, None, ctx, stream_root=True)
    if not isinstance(plan, SelectPlan) or not plan.program.streamable or len(plan.sources) > 1 \
            or any(source.kind in ("table", "view") for source in plan.sources):
        return None
    _collect_subplans(plan, ctx)
    await fetch(ctx)
    return plan, plan.run_chunks(chunk_rows)


def _collect_subplans(plan: QueryPlan, ctx: QueryContext) -> None:
    """Attaches the expression subqueries compiled during phase 1 to the top plan, for EXPLAIN."""
    if isinstance(plan, SelectPlan):
        plan.subplans = list(getattr(ctx, "expression_subplans", []))


def output_columns(plan: QueryPlan) -> list[tuple[str, str]]:
    return [(name, sql_type.pg_name) for name, sql_type in plan.columns]


__all__ = ["QueryContext", "QueryPlan", "SelectPlan", "compile_query", "compile_select_plan", "fetch", "run_query",
           "load_table", "load_all_tables", "preload_tables", "read_rows", "output_columns", "output_name"]
