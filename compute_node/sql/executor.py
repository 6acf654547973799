"""Runs one parsed statement inside a Transaction: the only SQL code that awaits.

Theory of operation
-------------------
Each statement is compiled first (names, types and constant conversions are checked,
so errors come before any read), then planned, then executed against the transaction:
  * queries (SELECT, set operations, VALUES) go through select.py: compile, fetch,
    run; SELECT ... FOR UPDATE adds the keys of the rows it returns to the commit's
    lock keys, so a concurrent change of them makes this transaction's commit fail;
  * INSERT builds every row (column defaults, assignment casts, NOT NULL, CHECK),
    reads the primary keys and unique-index entries of all rows in one batch, then
    applies ON CONFLICT (DO NOTHING skips, DO UPDATE updates the existing row with
    EXCLUDED.*) or fails with 23505, and buffers the row and its index entries;
  * UPDATE/DELETE read the matching rows (point, range, index or full plan), then
    buffer new values or tombstones and keep every secondary index in step
    (old entries deleted, new ones written, unique ones checked);
  * RETURNING is a select list evaluated over the rows written (deleted for DELETE);
  * DDL (CREATE/DROP TABLE, CREATE/DROP INDEX, ALTER TABLE ADD/DROP COLUMN, CREATE/DROP
    SEQUENCE) reads and writes catalog keys through the same buffer, so it is transactional;
    CREATE INDEX fills the index from the table's rows in the same transaction;
  * TRUNCATE gives each table a new private keyspace; rows written there take the bulk path
    (bulk.py, transaction.py); a table CREATEd in the transaction moves to one when an insert
    would take the transaction over the row quota; ALTER TABLE ADD PRIMARY KEY copies a table with hidden row ids
    into a new private keyspace keyed by the new key (add_primary_key explains how concurrent
    writers are kept from being lost); VACUUM and ANALYZE check their tables and do nothing;
  * a statement whose nextval ran out of this node's reserved values before it wrote anything
    reserves what it needs and runs again (`execute`, sequences.py).

Interface for other writers (COPY):
    `await insert_rows(txn, table, rows, validated=False) -> int` writes whole rows (one value
    per column of table.columns, of the column's Python type, defaults applied, a hidden row id
    may be None) with NOT NULL / CHECK (unless validated), primary-key and unique checks (23505)
    and the bulk path when `is_bulk_target(txn, table)`; see its docstring for the contract.
  * EXPLAIN compiles and plans a statement without reading rows and prints the plan.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from sqlglot import exp

from compute_node.sql import bulk, sequences, system_views, types
from compute_node.sql.catalog import (
    CheckDef, IndexDef, TableDef, column_from_def, create_spec, default_text, identifier_name, table_name,
    unique_name,
)
from compute_node.sql.expressions import Compiled, Compiler, Scope, constant, contains_aggregate
from compute_node.sql.parser import Explain, Utility
from compute_node.sql.planner import plan_access
from compute_node.sql.query import compile_select
from compute_node.sql.result import StatementResult
from compute_node.sql.select import (
    QueryContext, SelectPlan, compile_query, compile_select_plan, fetch, load_table, output_columns,
    preload_tables, read_rows, run_query, stream_query,
)
from compute_node.sql.transaction import Transaction
from quorumdb import errors, keys, limits
from quorumdb.errors import SqlError


# Backwards-compatible names (tests and tools import these).
load_table = load_table


async def execute(txn: Transaction, statement: exp.Expression) -> StatementResult:
    """Runs one statement; one that ran out of reserved sequence values before writing anything
    reserves what it needs and runs again (compute_node/sql/sequences.py)."""
    demand: dict[str, int] = {}
    for _ in range(limits.SEQUENCE_STATEMENT_RETRIES_MAX):
        # The statement's first sequence preparation (its fetch phase, before any write of it)
        # saves the buffers; nothing is copied for the many statements that use no sequence.
        txn.statement_savepoint = None
        before = (len(txn.write_buffer), txn.write_bytes, len(txn.pending), txn.flushed_batches)
        txn.sequence_demand = demand
        try:
            return await _execute(txn, statement)
        except sequences.NeedValues as need:
            saved = txn.statement_savepoint
            if saved is None:
                if before != (len(txn.write_buffer), txn.write_bytes, len(txn.pending), txn.flushed_batches):
                    raise AssertionError("a statement wrote before preparing its sequence values") from None
            elif txn.flushed_batches != saved[4]:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                               "nextval() ran out of reserved values in a statement that already committed "
                               "bulk rows ahead; run it again") from None
            else:
                txn.write_buffer, txn.write_bytes, txn.pending, txn.lock_keys = saved[0], saved[1], saved[2], saved[3]
            demand[need.name] = max(need.count, 2 * demand.get(need.name, 0), limits.SEQUENCE_RESERVE_MIN)
        finally:
            txn.sequence_demand = {}
            txn.statement_savepoint = None
    raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, "a statement ran out of sequence values too often")


_DDL = (exp.Create, exp.Drop, exp.Alter, exp.TruncateTable, Utility)


async def _execute(txn: Transaction, statement: exp.Expression) -> StatementResult:
    if isinstance(statement, _DDL) and txn.schema_version is None:
        # DDL writes catalog keys from the definitions it loads, which may come from the node's
        # cache; learning the snapshot's catalog version first (one key) makes a stale cache miss
        # instead of being found out after the writes (SchemaStale must come before any write).
        await txn.get_many([])
    if isinstance(statement, Utility):
        return await run_utility(txn, statement)
    if isinstance(statement, exp.TruncateTable):
        return await run_truncate(txn, statement)
    if isinstance(statement, Explain):
        return await run_explain(txn, statement)
    if isinstance(statement, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery)):
        return await run_select(txn, statement)
    if statement.args.get("with_") is not None or statement.args.get("with") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "WITH on INSERT, UPDATE or DELETE is not supported")
    if isinstance(statement, exp.Insert):
        return await run_insert(txn, statement)
    if isinstance(statement, exp.Update):
        return await run_update(txn, statement)
    if isinstance(statement, exp.Delete):
        return await run_delete(txn, statement)
    if isinstance(statement, exp.Create):
        return await run_create(txn, statement)
    if isinstance(statement, exp.Drop):
        return await run_drop(txn, statement)
    if isinstance(statement, exp.Alter):
        return await run_alter(txn, statement)
    raise AssertionError(f"parser let through {type(statement).__name__}")


def new_context(txn: Transaction) -> QueryContext:
    return QueryContext(txn, txn.start_ts, txn.rng)


async def require_table(txn: Transaction, table_node: exp.Expression, changes: bool = False) -> TableDef:
    """The table the node names. A sequence is a relation too, but only queries read it: a
    statement that `changes` it (INSERT, UPDATE, DELETE) or needs a table is 42809, as in
    PostgreSQL, rather than 42P01 for a relation that exists."""
    name = table_name(table_node)
    table = await load_table(txn, name)
    if table is None:
        if await sequences.load_sequence(txn, name) is not None:
            raise SqlError(errors.WRONG_OBJECT_TYPE, f'cannot change sequence "{name}"' if changes else
                           f'"{name}" is not a table')
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{name}" does not exist')
    return table


def table_scope(table: TableDef, table_node: exp.Expression | None = None, parent: Scope | None = None) -> Scope:
    alias = table_node.args.get("alias") if table_node is not None else None
    alias_name = identifier_name(alias.this) if alias is not None and alias.this is not None else None
    if alias is not None and alias.columns:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "column aliases on the target table are not supported")
    scope = Scope.single(table.name, tuple((c.name, c.sql_type) for c in table.columns), alias_name)
    scope.parent = parent
    return scope


# --- SELECT -------------------------------------------------------------------------
async def run_select(txn: Transaction, select: exp.Expression) -> StatementResult:
    ctx = new_context(txn)
    plan, rows, source_keys = await run_query(txn, select, ctx,
                                              lambda compiled: txn.note_columns(output_columns(compiled)))
    if isinstance(plan, SelectPlan) and plan.sources and plan.sources[0].plan is not None:
        txn.last_plan = plan.sources[0].plan
    if isinstance(plan, SelectPlan) and plan.program.for_update:
        for key in source_keys:
            txn.lock(key)
    return StatementResult(output_columns(plan), rows, f"SELECT {len(rows)}")


async def select_rows(txn: Transaction, select: exp.Expression):
    """(columns as (name, SqlType), rows) of a query run inside another statement."""
    ctx = new_context(txn)
    plan, rows, _ = await run_query(txn, select, ctx)
    return plan.columns, rows


# --- shared row checks ------------------------------------------------------------------
@dataclasses.dataclass
class TableRules:
    """What every written row of a table must satisfy, compiled once per statement."""
    table: TableDef
    checks: list[tuple[str, Compiled]]

    def validate(self, row: Sequence[Any]) -> None:
        _check_not_null(self.table, row)
        for name, check in self.checks:
            if check.evaluate(row) is False:
                raise SqlError(errors.CHECK_VIOLATION,
                               f'new row for relation "{self.table.name}" violates check constraint "{name}"',
                               detail=f"Failing row contains ({_format_values(row)}).")


def compile_rules(table: TableDef, ctx: QueryContext | None = None) -> TableRules:
    scope = table_scope(table)
    checks = []
    for check in table.checks:
        node = _parse_expression(check.sql)
        checks.append((check.name, Compiler(scope, "CHECK", None, ctx).compile_condition(node)))
    return TableRules(table, checks)


def _parse_expression(sql: str) -> exp.Expression:
    import sqlglot

    from compute_node.sql.parser import Dialect
    return sqlglot.parse_one(f"SELECT {sql}", read=Dialect).expressions[0]


def _check_not_null(table: TableDef, row: Sequence[Any]) -> None:
    for column, value in zip(table.columns, row):
        if value is None and column.not_null:
            raise SqlError(errors.NOT_NULL_VIOLATION,
                           f'null value in column "{column.name}" of relation "{table.name}" violates not-null constraint',
                           detail=f"Failing row contains ({_format_values(row)}).")


def _duplicate_key(table: TableDef, row: Sequence[Any], index: IndexDef | None = None) -> SqlError:
    if index is None:
        positions = table.primary_key
        constraint = table.constraint_name
    else:
        positions = table.index_positions(index)
        constraint = index.name
    names = ", ".join(table.columns[p].name for p in positions)
    values = _format_values([row[p] for p in positions])
    return SqlError(errors.UNIQUE_VIOLATION, f'duplicate key value violates unique constraint "{constraint}"',
                    detail=f"Key ({names})=({values}) already exists.")


def _format_values(values: Sequence[Any]) -> str:
    return ", ".join("null" if v is None else types.format_value(v) for v in values)


def _unique_probe(table: TableDef, index: IndexDef, row: Sequence[Any]) -> bytes | None:
    """The key a unique index entry of `row` would have, None when its columns hold a NULL."""
    values = tuple(row[p] for p in table.index_positions(index))
    if any(v is None for v in values):
        return None
    return index.prefix + keys.encode_key_tuple(values)


def write_row(txn: Transaction, table: TableDef, row: Sequence[Any], old_row: Sequence[Any] | None,
              old_key: bytes | None) -> bytes:
    """Buffers `row` (replacing `old_row` stored at `old_key`) and keeps the indexes in step."""
    key = table.row_key(row)
    new_entries = table.index_entries(row)
    if old_row is not None:
        old_entries = table.index_entries(old_row)
        for entry_key, entry_value in old_entries.items():
            if new_entries.get(entry_key) != entry_value:
                txn.put(entry_key, None)
        if old_key is not None and old_key != key:
            txn.put(old_key, None)
    else:
        old_entries = {}
    txn.put(key, table.encode_row(row))
    for entry_key, entry_value in new_entries.items():
        if old_entries.get(entry_key) != entry_value:
            txn.put(entry_key, entry_value)
    return key


def delete_row(txn: Transaction, table: TableDef, row: Sequence[Any], key: bytes) -> None:
    for entry_key in table.index_entries(row):
        txn.put(entry_key, None)
    txn.put(key, None)


async def check_unique(txn: Transaction, table: TableDef, row: Sequence[Any], key: bytes,
                       old_key: bytes | None) -> None:
    """23505 if `row` (to be stored at `key`) duplicates the primary key or a unique index of another row."""
    probes = [(None, key)] if key != old_key else []
    primary_key = keys.encode_key_tuple(table.primary_key_values(row))
    for index in table.indexes:
        if index.unique:
            probe = _unique_probe(table, index, row)
            if probe is not None:
                probes.append((index, probe))
    if not probes:
        return
    found = await txn.get_many([probe for _, probe in probes])
    for index, probe in probes:
        value = found[probe]
        if value is None:
            continue
        if index is None or value != primary_key:
            raise _duplicate_key(table, row, index)


# --- INSERT ---------------------------------------------------------------------------
ROWID_ATTEMPTS_MAX = 8   # a taken row id is drawn again (bulk.py: it practically never happens)


def is_bulk_target(txn: Transaction, table: TableDef) -> bool:
    """True when `table`'s rows live in a keyspace private to `txn` (created by TRUNCATE or a
    rewrite in this transaction): its writes take the bulk path."""
    return bool(txn.private_ranges) and txn.is_private(table.rows_prefix)


def _check_writable(txn: Transaction, table: TableDef) -> None:
    """40001 while another transaction rewrites the table (ALTER TABLE ... ADD PRIMARY KEY)."""
    if table.rewrite_by is not None and table.rewrite_by != txn.txn_id \
            and txn.start_ts - table.rewrite_ts <= limits.TXN_AGE_MAX_NS + REWRITE_MARK_MARGIN_NS:
        raise SqlError(errors.SERIALIZATION_FAILURE,
                       f'table "{table.name}" is being rewritten by another transaction, please retry: ({errors.DSQL_SCHEMA_CHANGED})',
                       hint="ALTER TABLE ... ADD PRIMARY KEY rewrites the table; writes wait for it to end.")


async def insert_rows(txn: Transaction, table: TableDef, rows: Sequence[Sequence[Any]], *,
                      validated: bool = False) -> int:
    """Writes new rows into `table`: the one way rows enter a table (INSERT without ON CONFLICT,
    COPY). Contract:
      * `rows` hold one value per column of `table.columns` (hidden row id included, in its
        position), each already of its column's Python type (types.assign / the COPY text parser
        made it so) and with defaults applied; a row id of None is drawn here;
      * unless `validated`, NOT NULL and CHECK are checked here (23502, 23514);
      * primary-key and unique-index duplicates, against stored rows, the transaction's own
        writes and the other rows given, fail with 23505 and PostgreSQL's DETAIL;
      * the rows go into the table's current definition in this transaction (txn.tables), so a
        caller may keep passing the TableDef it loaded first;
      * rows go through txn.put: into the write buffer (the transaction quotas apply: 54000),
        or, when the table was truncated or rewritten in this transaction (or created in it and
        these rows would pass the quota: it then moves to a private keyspace), onto the bulk
        path: committed ahead every limits.BULK_BATCH_ROWS_MAX keys, never more than one batch
        held in memory (compute_node/sql/bulk.py);
      * returns the number of rows written. On an error some rows may be written: as for any
        failed statement, the transaction (block) must then be rolled back.
    Call it with rows in chunks (e.g. 1,000 at a time) to bound the caller's memory too."""
    table = txn.tables.get(table.name) or table  # this transaction's current definition (it may have moved)
    _check_writable(txn, table)
    rules = None if validated else compile_rules(table, new_context(txn))
    bulk_target = is_bulk_target(txn, table)
    if not bulk_target and table.name in txn.created_tables and \
            len(txn.write_buffer) + len(rows) * (1 + len(table.indexes)) > limits.TXN_ROWS_MAX:
        table = await _make_created_table_private(txn, table)
        bulk_target = True
    chunk_rows = max(1, min(limits.BULK_BATCH_ROWS_MAX, limits.TXN_ROWS_MAX) // (1 + len(table.indexes)))
    written = 0
    for offset in range(0, len(rows), chunk_rows):
        chunk = [list(row) for row in rows[offset:offset + chunk_rows]]
        for row in chunk:
            assert len(row) == len(table.columns), "insert_rows takes whole rows"
            if table.has_rowid and row[table.rowid_position] is None:
                row[table.rowid_position] = txn.next_rowid()
            if rules is not None:
                rules.validate(row)
        await _write_new_rows(txn, table, chunk, bulk_target)
        written += len(chunk)
        if bulk_target:
            await txn.flush_private()
    return written


async def _make_created_table_private(txn: Transaction, table: TableDef) -> TableDef:
    """A table created by this transaction, about to outgrow the quotas: it moves to a private
    keyspace (like TRUNCATE's) with the rows and index entries already buffered for it, which
    carry no table id in their values, so only their keys change."""
    moved = await move_to_private_keyspace(txn, table, drop_old=False)
    prefixes = [(table.rows_prefix, moved.rows_prefix)] + [
        (old.prefix, new.prefix) for old, new in zip(table.indexes, moved.indexes)]
    for old_prefix, new_prefix in prefixes:
        for key in [k for k in txn.write_buffer if k.startswith(old_prefix)]:
            value = txn.write_buffer.pop(key)
            txn.write_bytes -= len(key) + (len(value) if value is not None else 0)
            if value is not None:
                txn.put(new_prefix + key[len(old_prefix):], value)
    _save_table(txn, moved)
    return moved


async def _write_new_rows(txn: Transaction, table: TableDef, rows: list[list], bulk_target: bool) -> None:
    # Row ids in a private keyspace are consecutive and only this transaction writes there:
    # their keys need no read (bulk.py). Every other key that must be free is read in one batch.
    probe_row_keys = not (bulk_target and table.has_rowid)
    row_keys = [table.row_key(row) for row in rows]
    probes = list(dict.fromkeys((row_keys if probe_row_keys else [])
                                + [p for row in rows for p in _unique_probes(table, row)]))
    existing = await txn.get_many(probes) if probes else {}
    for row, key in zip(rows, row_keys):
        if probe_row_keys and table.has_rowid:
            key = await _free_rowid(txn, table, row, key, existing)
        elif probe_row_keys and existing.get(key) is not None:
            raise _duplicate_key(table, row, None)
        for index in table.indexes:
            if index.unique:
                probe = _unique_probe(table, index, row)
                if probe is not None and existing.get(probe) is not None:
                    raise _duplicate_key(table, row, index)
        write_row(txn, table, row, None, None)
        _remember(table, row, key, existing)


async def _free_rowid(txn: Transaction, table: TableDef, row: list, key: bytes, existing: dict) -> bytes:
    """The row's key once its row id is one no stored row has (drawing again if it was taken)."""
    for _ in range(ROWID_ATTEMPTS_MAX):
        if key not in existing:
            existing[key] = await txn.get(key)
        if existing[key] is None:
            return key
        txn.skip_rowids()
        row[table.rowid_position] = txn.next_rowid()
        key = table.row_key(row)
    raise AssertionError("row ids collided repeatedly: the random source is broken")


_INSERT_ARGS = {"this", "expression", "is_function", "stored", "by_name", "exists", "partition", "settings",
                "default", "overwrite", "ignore", "source", "conflict", "returning", "overriding"}


async def run_insert(txn: Transaction, insert: exp.Insert) -> StatementResult:
    _reject_unknown_args(insert, _INSERT_ARGS, "INSERT")
    target = insert.this
    column_nodes = None
    if isinstance(target, exp.Schema):
        column_nodes = target.expressions
        target = target.this
    system_views.reject_write(target, "INSERT")
    await preload_tables(txn, insert)
    table = await require_table(txn, target, changes=True)
    ctx = new_context(txn)
    positions = _insert_positions(table, column_nodes)
    defaults = _compile_defaults(table, ctx)
    # Everything is compiled before any value is computed: errors in names and types come first,
    # as in PostgreSQL, and Describe (which stops at the first value) sees the whole statement.
    rules = compile_rules(table, ctx)
    conflict = insert.args.get("conflict")
    handler = _ConflictHandler(table, conflict, ctx, insert.this) if conflict is not None else None
    returning = _compile_returning(insert.args.get("returning"), table, target, ctx, txn)
    source = insert.args.get("expression")
    typed_rows: list[list[tuple[Any, types.SqlType] | None]] = []
    if source is None and insert.args.get("default"):
        typed_rows = [[]]
        positions = []
    elif isinstance(source, exp.Values):
        compiler = Compiler(Scope(), "VALUES", None, ctx)
        compiled_rows = []
        for tuple_node in source.expressions:
            value_nodes = tuple_node.expressions if isinstance(tuple_node, exp.Tuple) else [tuple_node]
            _check_width(len(value_nodes), positions, column_nodes is not None)
            compiled_rows.append([_compile_value(compiler, node) for node in value_nodes])
        widths = {len(row) for row in compiled_rows}
        if len(widths) > 1:
            raise SqlError(errors.SYNTAX_ERROR, "VALUES lists must all be the same length")
        for compiled_row in compiled_rows:  # a $n in VALUES takes its column's type (Describe)
            for position, compiled in zip(positions, compiled_row):
                if compiled is not None and compiled.param is not None:
                    compiled.param.infer(table.columns[position].sql_type)
        await fetch(ctx)
        for compiled_row in compiled_rows:
            typed_rows.append([None if c is None else (c.evaluate(()), c.sql_type) for c in compiled_row])
    elif isinstance(source, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)):
        streamed = await _stream_query_rows(txn, table, insert, positions, column_nodes, defaults, rules, ctx) \
            if handler is None and returning is None else None
        if streamed is not None:
            return streamed
        columns, query_rows = await select_rows(txn, source)
        _check_width(len(columns), positions, column_nodes is not None)
        column_types = [sql_type for _, sql_type in columns]
        if handler is None:  # rows are typed and built a chunk at a time: memory holds the query's rows once
            return await _insert_query_rows(txn, table, insert, positions, query_rows, column_types, defaults,
                                            rules, ctx, returning)
        typed_rows = [list(zip(row, column_types)) for row in query_rows]
    else:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of INSERT is not supported")
    for position, item in zip(positions, typed_rows[0] if typed_rows and typed_rows[0] else []):
        if item is None:
            continue
        sql_type = item[1]
        column = table.columns[position]
        if not types.can_assign(sql_type, column.sql_type):
            raise SqlError(errors.DATATYPE_MISMATCH,
                           f'column "{column.name}" is of type {column.sql_type.display_name} but expression is of '
                           f'type {sql_type.display_name}', hint="You will need to rewrite or cast the expression.")
    _check_generated(table, positions, typed_rows, insert)
    await sequences.prepare_defaults(ctx, table, positions, len(typed_rows))
    new_rows = [_build_row(table, positions, typed, defaults, rules, txn) for typed in typed_rows]
    if handler is None:
        await insert_rows(txn, table, new_rows, validated=True)
        return _dml_result(f"INSERT 0 {len(new_rows)}", returning, new_rows)
    _check_writable(txn, table)
    written: list[Sequence[Any]] = []
    row_keys = [table.row_key(row) for row in new_rows]
    probe_keys = list(dict.fromkeys(row_keys + [p for row in new_rows for p in _unique_probes(table, row)]))
    existing = await txn.get_many(probe_keys) if probe_keys else {}
    touched: set[bytes] = set()
    for row, key in zip(new_rows, row_keys):
        conflict_found = await _find_conflict(txn, table, row, key, existing, touched)
        if conflict_found is None:
            write_row(txn, table, row, None, None)
            touched.add(key)
            _remember(table, row, key, existing)
            written.append(row)
            continue
        index, old_key = conflict_found
        if handler is None or not handler.matches(index):
            raise _duplicate_key(table, row, index)
        if handler.do_nothing:
            continue
        if old_key in touched:
            raise SqlError(errors.CARDINALITY_VIOLATION, "ON CONFLICT DO UPDATE command cannot affect row a second time",
                           hint="Ensure that no rows proposed for insertion within the same command have duplicate "
                                "constrained values.")
        old_value = await txn.get(old_key)
        assert old_value is not None
        old_row = table.decode_row(old_value)
        updated = handler.update(old_row, row, rules)
        if updated is None:
            continue
        new_key = table.row_key(updated)
        await check_unique(txn, table, updated, new_key, old_key)
        write_row(txn, table, updated, old_row, old_key)
        touched.add(new_key)
        _forget(table, old_row, old_key, existing)
        _remember(table, updated, new_key, existing)
        written.append(updated)
    return _dml_result(f"INSERT 0 {len(written)}", returning, written)


INSERT_QUERY_CHUNK_ROWS = 1_000  # rows of INSERT ... SELECT typed, built and written at a time


async def _insert_query_rows(txn: Transaction, table: TableDef, insert: exp.Insert, positions: list[int],
                             query_rows: list, column_types: list, defaults, rules: TableRules, ctx,
                             returning) -> StatementResult:
    """INSERT ... SELECT without ON CONFLICT: the query's rows become table rows a chunk at a time,
    so a bulk load never holds its rows twice over (one that reads no table streams instead:
    `_stream_query_rows`)."""
    _check_assignable(table, positions, column_types)
    total = len(query_rows)
    if total:
        _check_generated(table, positions, [list(zip(query_rows[0], column_types))], insert)
    await sequences.prepare_defaults(ctx, table, positions, total)
    written: list[Sequence[Any]] = []
    for offset in range(0, total, INSERT_QUERY_CHUNK_ROWS):
        typed_chunk = [list(zip(row, column_types)) for row in query_rows[offset:offset + INSERT_QUERY_CHUNK_ROWS]]
        _check_generated(table, positions, typed_chunk, insert)
        built = [_build_row(table, positions, typed, defaults, rules, txn) for typed in typed_chunk]
        await insert_rows(txn, table, built, validated=True)
        if returning is not None:
            written.extend(built)
    return _dml_result(f"INSERT 0 {total}", returning, written)


async def _stream_query_rows(txn: Transaction, table: TableDef, insert: exp.Insert, positions: list[int],
                             column_nodes, defaults, rules: TableRules, ctx) -> StatementResult | None:
    """INSERT ... SELECT over no table (pgbench's `SELECT aid, ... FROM generate_series(1, 1000000)`):
    the query's rows are made, typed, built and written a chunk at a time, so memory holds one
    chunk rather than the whole result (select.stream_query says which queries qualify). None
    when the query does not qualify, or a column takes a nextval default (its values are
    reserved for the whole row count up front): the caller materialises the query."""
    if any(column.sequence is not None for position, column in enumerate(table.columns) if position not in positions):
        return None
    streamed = await stream_query(txn, insert.args["expression"], new_context(txn), INSERT_QUERY_CHUNK_ROWS)
    if streamed is None:
        return None
    plan, chunks = streamed
    _check_width(len(plan.columns), positions, column_nodes is not None)
    column_types = [sql_type for _, sql_type in plan.columns]
    _check_assignable(table, positions, column_types)
    total = 0
    for chunk in chunks:
        typed_chunk = [list(zip(row, column_types)) for row in chunk]
        _check_generated(table, positions, typed_chunk, insert)
        built = [_build_row(table, positions, typed, defaults, rules, txn) for typed in typed_chunk]
        await insert_rows(txn, table, built, validated=True)
        total += len(built)
    return _dml_result(f"INSERT 0 {total}", None, [])


def _check_assignable(table: TableDef, positions: Sequence[int], column_types: Sequence) -> None:
    for position, sql_type in zip(positions, column_types):
        column = table.columns[position]
        if not types.can_assign(sql_type, column.sql_type):
            raise SqlError(errors.DATATYPE_MISMATCH,
                           f'column "{column.name}" is of type {column.sql_type.display_name} but expression is of '
                           f'type {sql_type.display_name}', hint="You will need to rewrite or cast the expression.")


def _check_generated(table: TableDef, positions: Sequence[int], typed_rows, insert: exp.Insert) -> None:
    """428C9 for an explicit value in a GENERATED ALWAYS column, unless OVERRIDING SYSTEM VALUE;
    OVERRIDING USER VALUE makes identity columns take their DEFAULT whatever was given."""
    overriding = insert.args.get("overriding")
    for slot, position in enumerate(positions):
        column = table.columns[position]
        if column.identity is None:
            continue
        if overriding == "user":
            for typed in typed_rows:
                if slot < len(typed):
                    typed[slot] = None  # the DEFAULT keyword: the sequence decides
            continue
        if column.identity == "always" and overriding != "system" and \
                any(slot < len(typed) and typed[slot] is not None for typed in typed_rows):
            raise SqlError(errors.GENERATED_ALWAYS, f'cannot insert a non-DEFAULT value into column "{column.name}"',
                           detail=f'Column "{column.name}" is an identity column defined as GENERATED ALWAYS.',
                           hint="Use OVERRIDING SYSTEM VALUE to override.")


def _check_width(width: int, positions: list[int], explicit: bool) -> None:
    if width > len(positions):
        raise SqlError(errors.SYNTAX_ERROR, "INSERT has more expressions than target columns")
    if width < len(positions) and explicit:
        raise SqlError(errors.SYNTAX_ERROR, "INSERT has more target columns than expressions")


def _unique_probes(table: TableDef, row: Sequence[Any]) -> list[bytes]:
    probes = []
    for index in table.indexes:
        if index.unique:
            probe = _unique_probe(table, index, row)
            if probe is not None:
                probes.append(probe)
    return probes


def _remember(table: TableDef, row, key: bytes, existing: dict) -> None:
    existing[key] = b"row"
    primary_key = keys.encode_key_tuple(table.primary_key_values(row))
    for index in table.indexes:
        if index.unique:
            probe = _unique_probe(table, index, row)
            if probe is not None:
                existing[probe] = primary_key


def _forget(table: TableDef, row, key: bytes, existing: dict) -> None:
    existing[key] = None
    for index in table.indexes:
        if index.unique:
            probe = _unique_probe(table, index, row)
            if probe is not None:
                existing[probe] = None


async def _find_conflict(txn, table: TableDef, row, key: bytes, existing: dict, touched: set):
    """(None for the primary key | the unique index, key of the conflicting row) or None."""
    if key not in existing:
        existing[key] = await txn.get(key)
    if existing.get(key) is not None:
        return None, key
    for index in table.indexes:
        if not index.unique:
            continue
        probe = _unique_probe(table, index, row)
        if probe is None:
            continue
        if probe not in existing:
            existing[probe] = await txn.get(probe)
        value = existing.get(probe)
        if value is not None:
            return index, table.rows_prefix + value
    return None


class _ConflictHandler:
    def __init__(self, table: TableDef, conflict: exp.OnConflict, ctx: QueryContext, target: exp.Expression):
        self.table = table
        action_node = conflict.args.get("action")
        # The action is a Var ('DO NOTHING' / 'DO UPDATE'): read its name, not its generated SQL.
        action = (action_node.name if isinstance(action_node, exp.Expression) else str(action_node or "")).upper()
        if conflict.args.get("constraint") is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "ON CONFLICT ON CONSTRAINT is not supported")
        if conflict.args.get("duplicate"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "ON DUPLICATE KEY is not supported")
        self.do_nothing = action == "DO NOTHING"
        target_nodes = conflict.args.get("conflict_keys") or []
        self.target: set | None = None
        if target_nodes:
            names = []
            for node in target_nodes:
                inner = node.this if isinstance(node, exp.Ordered) else node
                if not isinstance(inner, (exp.Column, exp.Identifier)):
                    raise SqlError(errors.FEATURE_NOT_SUPPORTED, "ON CONFLICT on expressions is not supported")
                name = identifier_name(inner.this if isinstance(inner, exp.Column) else inner)
                if table.column_index(name) is None:
                    raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" does not exist')
                names.append(name)
            wanted = frozenset(names)
            self.target = set()
            if wanted == frozenset(table.columns[p].name for p in table.primary_key):
                self.target.add(None)
            for index in table.indexes:
                if index.unique and wanted == frozenset(index.columns):
                    self.target.add(index.name)
            if not self.target:
                raise SqlError(errors.INVALID_COLUMN_REFERENCE,
                               "there is no unique or exclusion constraint matching the ON CONFLICT specification")
        elif not self.do_nothing:
            raise SqlError(errors.SYNTAX_ERROR, "ON CONFLICT DO UPDATE requires inference specification or "
                                                "constraint name",
                           hint="For example, ON CONFLICT (column_name).")
        if self.do_nothing:
            return
        alias = target.args.get("alias")
        visible = identifier_name(alias.this) if alias is not None else table.name
        columns = tuple((c.name, c.sql_type) for c in table.columns)
        from compute_node.sql.expressions import Relation
        scope = Scope([Relation(visible, columns), Relation("excluded", columns)])
        compiler = Compiler(scope, "UPDATE", None, ctx)
        self.assignments = _compile_assignments(table, conflict.expressions, compiler)
        where = conflict.args.get("where")
        self.where = compiler.compile_condition(where.this) if where is not None else None

    def matches(self, index: IndexDef | None) -> bool:
        return self.target is None or (index.name if index is not None else None) in self.target

    def update(self, old_row, proposed, rules: TableRules):
        combined = tuple(old_row) + tuple(proposed)
        if self.where is not None and self.where.evaluate(combined) is not True:
            return None
        new_row = list(old_row)
        for position, compiled in self.assignments:
            column = self.table.columns[position]
            new_row[position] = types.assign(compiled.evaluate(combined), compiled.sql_type, column.sql_type,
                                             column.name)
        rules.validate(new_row)
        return new_row


def _insert_positions(table: TableDef, column_nodes) -> list[int]:
    if column_nodes is None:
        return list(table.visible_positions)
    return insert_positions(table, [identifier_name(node.this if isinstance(node, exp.Column) else node)
                                    for node in column_nodes])


def insert_positions(table: TableDef, names: Sequence[str]) -> list[int]:
    """The positions an INSERT or COPY column list names (42703, 42701, a hidden row id 0A000)."""
    positions: list[int] = []
    for name in names:
        position = table.column_index(name)
        if position is None:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" of relation "{table.name}" does not exist')
        if table.columns[position].hidden:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'cannot assign to system column "{name}"')
        if position in positions:
            raise SqlError(errors.DUPLICATE_COLUMN, f'column "{name}" specified more than once')
        positions.append(position)
    return positions


def _compile_defaults(table: TableDef, ctx: QueryContext) -> list[Compiled | None]:
    compiler = Compiler(Scope(), "DEFAULT expressions", None, ctx)
    out = []
    for column in table.columns:
        if column.default is None:
            out.append(None)
            continue
        compiled = compiler.compile(_parse_expression(column.default))
        out.append(compiled)
    return out


def _is_default_keyword(node: exp.Expression) -> bool:
    if isinstance(node, exp.Var) and node.name.upper() == "DEFAULT":
        return True
    return isinstance(node, exp.Column) and not node.args.get("table") and isinstance(node.this, exp.Identifier) \
        and not node.this.quoted and node.this.this.upper() == "DEFAULT"


def _compile_value(compiler: Compiler, node: exp.Expression) -> Compiled | None:
    """None for the DEFAULT keyword."""
    if _is_default_keyword(node):
        return None
    if contains_aggregate(node):
        raise SqlError(errors.GROUPING_ERROR, f"aggregate functions are not allowed in {compiler.clause}")
    return compiler.compile(node)


def _build_row(table: TableDef, positions: Sequence[int], typed, defaults: list[Compiled | None],
               rules: TableRules, txn: Transaction | None = None) -> list:
    row: list[Any] = [None] * len(table.columns)
    rowid_position = table.rowid_position
    if rowid_position is not None:
        assert txn is not None, "a row of a table without a primary key needs its transaction's row ids"
        row[rowid_position] = txn.next_rowid()
    given: set[int] = set()
    for position, item in zip(positions, typed):
        if item is None:
            continue  # DEFAULT keyword
        value, sql_type = item
        column = table.columns[position]
        row[position] = types.assign(value, sql_type, column.sql_type, column.name)
        given.add(position)
    for position, default in enumerate(defaults):
        if position not in given and default is not None:
            column = table.columns[position]
            row[position] = types.assign(default.evaluate(()), default.sql_type, column.sql_type, column.name)
    rules.validate(row)
    return row


def _compile_returning(returning: exp.Returning | None, table: TableDef, target: exp.Expression,
                       ctx: QueryContext, txn: Transaction):
    if returning is None:
        return None
    if returning.args.get("into"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "RETURNING INTO is not supported")
    if any(contains_aggregate(node) for node in returning.expressions):
        raise SqlError(errors.GROUPING_ERROR, "aggregate functions are not allowed in RETURNING")
    scope = table_scope(table, target if isinstance(target, exp.Table) else None)
    select = exp.Select(expressions=[node.copy() for node in returning.expressions])
    program = compile_select(select, scope, True, ctx)
    txn.note_columns([(name, sql_type.pg_name) for name, sql_type in program.columns])
    return program


def _dml_result(tag: str, returning, rows: list[Sequence[Any]]) -> StatementResult:
    if returning is None:
        return StatementResult.tag(tag)
    returning.reset()
    for row in rows:
        returning.add_row(tuple(row))
    out, _ = returning.finish()
    columns = [(name, sql_type.pg_name) for name, sql_type in returning.columns]
    return StatementResult(columns, out, tag)


# --- UPDATE / DELETE ----------------------------------------------------------------------
async def _matching_rows(txn: Transaction, table: TableDef, target: exp.Expression, where: exp.Where | None,
                         ctx: QueryContext, scope: Scope):
    condition = Compiler(scope, "WHERE", None, ctx).compile_condition(where.this) if where is not None else None
    plan = plan_access(table, where.this if where is not None else None,
                       lambda column: _target_position(scope, table, column))
    txn.last_plan = plan
    await fetch(ctx)
    matched: list[tuple[bytes, tuple]] = []
    # Rows of a keyspace private to the transaction are flushed ahead (bulk path): no quota.
    rows_max = limits.STATEMENT_ROWS_READ_MAX if is_bulk_target(txn, table) else limits.TXN_ROWS_MAX
    async for key, row in read_rows(txn, table, plan):
        if condition is None or condition.evaluate(row) is True:
            if len(matched) >= rows_max:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"transaction exceeds the limit of {limits.TXN_ROWS_MAX} modified rows",
                               hint="Split the change into several smaller transactions.")
            matched.append((key, row))
    return matched


def _target_position(scope: Scope, table: TableDef, column: exp.Column) -> int | None:
    try:
        found = scope.resolve_local(column)
    except SqlError:
        return None
    return None if found is None else found[0]


_UPDATE_ARGS = {"this", "expressions", "where", "returning"}


def _compile_assignments(table: TableDef, nodes, compiler: Compiler) -> list[tuple[int, Compiled]]:
    assignments: list[tuple[int, Compiled]] = []
    for assignment in nodes:
        if not isinstance(assignment, exp.EQ) or not isinstance(assignment.this, exp.Column):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of UPDATE ... SET is not supported")
        column_node = assignment.this
        if column_node.args.get("table") is not None:
            raise SqlError(errors.UNDEFINED_COLUMN,
                           f'column "{identifier_name(column_node.args["table"])}" of relation "{table.name}" does not exist')
        name = identifier_name(column_node.this)
        position = table.column_index(name)
        if position is None:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" of relation "{table.name}" does not exist')
        if table.columns[position].hidden:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'cannot assign to system column "{name}"')
        if table.columns[position].identity == "always" and not _is_default_keyword(assignment.expression):
            raise SqlError(errors.GENERATED_ALWAYS, f'column "{name}" can only be updated to DEFAULT',
                           detail=f'Column "{name}" is an identity column defined as GENERATED ALWAYS.')
        if any(existing == position for existing, _ in assignments):
            raise SqlError(errors.SYNTAX_ERROR, f'multiple assignments to same column "{name}"')
        compiled = _compile_value(compiler, assignment.expression)
        column = table.columns[position]
        if compiled is None:
            default = column.default
            compiled = compiler.compile(_parse_expression(default)) if default is not None else constant(None, types.NULL)
        if compiled.param is not None:  # SET col = $n: $n takes the column's type (Describe)
            compiled.param.infer(column.sql_type)
        if not types.can_assign(compiled.sql_type, column.sql_type):
            raise SqlError(errors.DATATYPE_MISMATCH,
                           f'column "{column.name}" is of type {column.sql_type.display_name} but expression is of '
                           f'type {compiled.sql_type.display_name}', hint="You will need to rewrite or cast the expression.")
        assignments.append((position, compiled))
    return assignments


async def run_update(txn: Transaction, update: exp.Update) -> StatementResult:
    if update.args.get("from_") is not None or update.args.get("from") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "UPDATE ... FROM is not supported")
    _reject_unknown_args(update, _UPDATE_ARGS, "UPDATE")
    system_views.reject_write(update.this, "UPDATE")
    await preload_tables(txn, update)
    table = await require_table(txn, update.this, changes=True)
    ctx = new_context(txn)
    scope = table_scope(table, update.this)
    compiler = Compiler(scope, "UPDATE", None, ctx)
    assignments = _compile_assignments(table, update.expressions, compiler)
    rules = compile_rules(table, ctx)
    returning = _compile_returning(update.args.get("returning"), table, update.this, ctx, txn)
    _check_writable(txn, table)
    matched = await _matching_rows(txn, table, update.this, update.args.get("where"), ctx, scope)
    # Every new row is computed before the first is written, so a statement that runs out of
    # sequence values (nextval in SET) can run again from the start (executor.execute).
    new_rows = []
    for key, row in matched:
        new_row = list(row)
        for position, compiled in assignments:
            column = table.columns[position]
            new_row[position] = types.assign(compiled.evaluate(row), compiled.sql_type, column.sql_type, column.name)
        rules.validate(new_row)
        new_rows.append(new_row)
    written = []
    for (key, row), new_row in zip(matched, new_rows):
        new_key = table.row_key(new_row)
        if new_key != key:
            txn.put(key, None)  # the old key is free before the new one is checked
        await check_unique(txn, table, new_row, new_key, key)
        write_row(txn, table, new_row, row, key)
        written.append(new_row)
        if txn.pending and txn.flush_due():
            await txn.flush_private()
    return _dml_result(f"UPDATE {len(matched)}", returning, written)


_DELETE_ARGS = {"this", "where", "using", "cluster", "returning"}


async def run_delete(txn: Transaction, delete: exp.Delete) -> StatementResult:
    _reject_unknown_args(delete, _DELETE_ARGS, "DELETE")
    if delete.args.get("using"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "DELETE ... USING is not supported")
    system_views.reject_write(delete.this, "DELETE")
    await preload_tables(txn, delete)
    table = await require_table(txn, delete.this, changes=True)
    ctx = new_context(txn)
    scope = table_scope(table, delete.this)
    returning = _compile_returning(delete.args.get("returning"), table, delete.this, ctx, txn)
    _check_writable(txn, table)
    matched = await _matching_rows(txn, table, delete.this, delete.args.get("where"), ctx, scope)
    for key, row in matched:
        delete_row(txn, table, row, key)
        if txn.pending and txn.flush_due():
            await txn.flush_private()
    return _dml_result(f"DELETE {len(matched)}", returning, [row for _, row in matched])


# --- DDL ---------------------------------------------------------------------------------
_CREATE_ARGS = {"this", "kind", "exists", "replace", "refresh", "unique", "concurrently"}


async def _next_id(txn: Transaction) -> int:
    counter = await txn.get(keys.TABLE_ID_COUNTER_KEY)
    last_id = int.from_bytes(counter, "big") if counter is not None else 0
    if last_id >= keys.TABLE_ID_MAX:
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, "no table ids left")
    txn.put(keys.TABLE_ID_COUNTER_KEY, (last_id + 1).to_bytes(8, "big"))
    return last_id + 1


async def _relation_exists(txn: Transaction, name: str) -> str | None:
    """'table', 'index' or None: tables and indexes share one namespace, as in PostgreSQL."""
    if await load_table(txn, name) is not None:
        return "table"
    if await txn.get(keys.catalog_index_key(name)) is not None:
        return "index"
    if await txn.get(keys.catalog_sequence_key(name)) is not None:
        return "sequence"
    return None


async def _free_name(txn: Transaction, base: str, taken: set[str]) -> str:
    for attempt in range(10_000):
        candidate = base if attempt == 0 else f"{base}{attempt}"
        if candidate in taken:
            continue
        if await _relation_exists(txn, candidate) is None:
            return candidate
    raise AssertionError("no free relation name")


def _save_table(txn: Transaction, table: TableDef) -> None:
    txn.put(table.catalog_key, table.encode())
    txn.tables[table.name] = table


async def run_create(txn: Transaction, create: exp.Create) -> StatementResult:
    kind = str(create.args.get("kind") or "").upper()
    if kind == "INDEX":
        return await run_create_index(txn, create)
    if kind != "TABLE":
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"CREATE {kind or 'this object'} is not supported")
    if create.args.get("replace"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "CREATE OR REPLACE TABLE is not supported")
    _check_storage_parameters(create.args.get("properties"))
    _reject_unknown_args(create, _CREATE_ARGS | {"expression", "properties"}, "CREATE TABLE")
    schema = create.this
    system_views.reject_write(schema.this if isinstance(schema, exp.Schema) else schema, "CREATE TABLE")
    spec = create_spec(create, 1)  # validate the definition before reading anything
    name = spec.table.name
    _validate_expressions(spec.table, spec.check_nodes, spec.default_nodes)
    existing = await _relation_exists(txn, name)
    if existing is not None:
        if create.args.get("exists"):
            return StatementResult.tag("CREATE TABLE")  # PostgreSQL: NOTICE relation already exists, skipping
        raise SqlError(errors.DUPLICATE_TABLE, f'relation "{name}" already exists')
    if len(spec.unique_constraints) > limits.TABLE_INDEXES_MAX:
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, f"a table can have at most {limits.TABLE_INDEXES_MAX} indexes")
    table_id = await _next_id(txn)
    table = dataclasses.replace(spec.table, table_id=table_id)
    taken = {name} | {check.name for check in table.checks}
    indexes = []
    for explicit, columns in spec.unique_constraints:
        if any(existing_index.columns == columns for existing_index in indexes) or \
                columns == tuple(table.columns[p].name for p in table.primary_key):
            continue  # PostgreSQL keeps one index per distinct column list
        index_name = explicit or await _free_name(txn, f"{name}_{'_'.join(columns)}_key", taken)
        if index_name in taken or await _relation_exists(txn, index_name) is not None:
            raise SqlError(errors.DUPLICATE_TABLE, f'relation "{index_name}" already exists')
        taken.add(index_name)
        _check_index_columns(table, columns)
        indexes.append(IndexDef(index_name, await _next_id(txn), columns, True, True, (False,) * len(columns)))
    table = dataclasses.replace(table, indexes=tuple(indexes))
    columns = list(table.columns)
    for position, options in spec.sequences:
        column = columns[position]
        sequence_name = await _free_name(txn, f"{name}_{column.name}_seq", taken)
        taken.add(sequence_name)
        numbers = {key: _option_int(node, key.upper()) for key, node in options.items()}
        definition = sequence_from_options(sequence_name, await _next_id(txn), numbers,
                                           sequence_type_of(column.sql_type), (name, column.name))
        txn.put(keys.catalog_sequence_key(sequence_name), definition.encode())
        columns[position] = dataclasses.replace(column, default=f"nextval('{sequence_name}'::regclass)",
                                             sequence=sequence_name)
    table = dataclasses.replace(table, columns=tuple(columns))
    for index in indexes:
        txn.put(keys.catalog_index_key(index.name), name.encode("utf-8"))
    _save_table(txn, table)
    txn.created_tables.add(name)  # loads into it may take the bulk path (insert_rows)
    return StatementResult.tag("CREATE TABLE")


# Storage parameters that only tune PostgreSQL's heap and vacuum: no answer depends on them, so
# they are accepted and ignored (QuorumDB stores rows in its own LSM-like MVCC storage).
_IGNORED_STORAGE_PARAMETERS = {"fillfactor", "autovacuum_enabled", "toast.autovacuum_enabled",
                               "parallel_workers", "toast_tuple_target"}


def _check_storage_parameters(properties: exp.Properties | None) -> None:
    for prop in (properties.expressions if properties is not None else []):
        if isinstance(prop, exp.Property) and prop.name.lower() in _IGNORED_STORAGE_PARAMETERS:
            if prop.name.lower() == "fillfactor":
                value = prop.args.get("value")
                number = int(value.this) if isinstance(value, exp.Literal) and value.this.isdigit() else None
                if number is None or not 10 <= number <= 100:
                    raise SqlError(errors.INVALID_PARAMETER_VALUE,
                                   f'value {value.sql(dialect="postgres") if value is not None else ""} out of bounds '
                                   'for option "fillfactor"', detail="Valid values are between \"10\" and \"100\".")
            continue
        shown = prop.sql(dialect="postgres")
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       f"CREATE TABLE ... {shown} is not supported (TEMP, UNLOGGED and storage parameters other "
                       f"than {', '.join(sorted(_IGNORED_STORAGE_PARAMETERS))} are refused)")


def _validate_expressions(table: TableDef, check_nodes, default_nodes) -> None:
    scope = table_scope(table)
    for _, node in check_nodes:
        if any(isinstance(n, (exp.Subquery, exp.Exists, exp.Select)) for n in node.walk()):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "cannot use subquery in check constraint")
        if contains_aggregate(node):
            raise SqlError(errors.GROUPING_ERROR, "aggregate functions are not allowed in check constraints")
        Compiler(scope, "CHECK constraint").compile_condition(node)
    for position, node in default_nodes.items():
        if any(isinstance(n, exp.Column) for n in node.walk()):
            raise SqlError(errors.INVALID_COLUMN_REFERENCE, "cannot use column reference in DEFAULT expression")
        if any(isinstance(n, (exp.Subquery, exp.Exists, exp.Select)) for n in node.walk()):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "cannot use subquery in DEFAULT expression")
        column = table.columns[position]
        compiled = Compiler(Scope(), "DEFAULT expressions").compile(node)
        if not types.can_assign(compiled.sql_type, column.sql_type):
            raise SqlError(errors.DATATYPE_MISMATCH,
                           f'column "{column.name}" is of type {column.sql_type.display_name} but default expression '
                           f'is of type {compiled.sql_type.display_name}',
                           hint="You will need to rewrite or cast the expression.")
        if compiled.constant:
            types.assign(compiled.evaluate(()), compiled.sql_type, column.sql_type, column.name)


def _check_index_columns(table: TableDef, columns: Sequence[str]) -> None:
    if len(columns) > limits.INDEX_COLUMNS_MAX:
        raise SqlError(errors.TOO_MANY_COLUMNS, f"cannot use more than {limits.INDEX_COLUMNS_MAX} columns in an index")
    for column_name in columns:
        if table.column_index(column_name) is None:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{column_name}" does not exist')


async def run_create_index(txn: Transaction, create: exp.Create) -> StatementResult:
    index_node = create.this
    if not isinstance(index_node, exp.Index):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of CREATE INDEX is not supported")
    if create.args.get("concurrently"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "CREATE INDEX CONCURRENTLY is not supported")
    params = index_node.args.get("params")
    if params is None or not params.args.get("columns"):
        raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
    using = params.args.get("using")
    if using is not None and using.name.lower() != "btree":
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'access method "{using.name.lower()}" is not supported')
    if params.args.get("where") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "partial indexes (CREATE INDEX ... WHERE) are not supported")
    if params.args.get("include"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "INCLUDE columns are not supported")
    columns: list[str] = []
    descending: list[bool] = []
    for item in params.args["columns"]:
        inner = item.this if isinstance(item, exp.Ordered) else item
        if not isinstance(inner, exp.Column) or inner.args.get("table") is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "indexes on expressions are not supported")
        columns.append(identifier_name(inner.this))
        descending.append(bool(isinstance(item, exp.Ordered) and item.args.get("desc")))
    table_node = index_node.args.get("table")
    system_views.reject_write(table_node, "CREATE TABLE")
    table = await require_table(txn, table_node)
    _check_index_columns(table, columns)
    unique = bool(create.args.get("unique"))
    name_node = index_node.this
    if name_node is not None:
        index_name = identifier_name(name_node)
        if await _relation_exists(txn, index_name) is not None:
            if create.args.get("exists"):
                return StatementResult.tag("CREATE INDEX")  # NOTICE: relation already exists, skipping
            raise SqlError(errors.DUPLICATE_TABLE, f'relation "{index_name}" already exists')
    else:
        index_name = await _free_name(txn, f"{table.name}_{'_'.join(columns)}_idx", set())
    table = await add_index(txn, table, index_name, columns, unique, False, descending)
    _save_table(txn, table)
    return StatementResult.tag("CREATE INDEX")


async def add_index(txn: Transaction, table: TableDef, index_name: str, columns: Sequence[str], unique: bool,
                    constraint: bool, descending: Sequence[bool]) -> TableDef:
    """Adds an index (CREATE INDEX, ALTER TABLE ... ADD UNIQUE) filled with every existing row's
    entry; returns the table's new definition, which the caller saves.

    The entries go into a private keyspace, flushed ahead in batches (so an index over more rows
    than one transaction may write can be built), when the table's own keyspace is private to
    this transaction, or when the statement is the first of its transaction: the table is then
    marked as being rewritten first (as ADD PRIMARY KEY does), so a concurrent writer fails with
    40001 instead of adding a row the index would miss. Later in a transaction that already read
    or wrote, the entries go into the transaction's own writes, within its limits."""
    if len(table.indexes) >= limits.TABLE_INDEXES_MAX:
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, f"a table can have at most {limits.TABLE_INDEXES_MAX} indexes")
    first_statement = _may_mark(txn)
    if not is_bulk_target(txn, table) and first_statement:
        await txn.check_schema_version()  # a cached definition must be this snapshot's before the mark
        table = await _mark_for_rewrite(txn, table)
        table = dataclasses.replace(table, rewrite_by=None, rewrite_ts=0)  # this commit ends the mark
    oid_id = await _next_id(txn)  # a small id for its oid, whichever keyspace its entries take
    if is_bulk_target(txn, table) or first_statement:
        index_id = (await allocate_private_ids(txn, 1))[0]
        txn.add_private_prefix(keys.index_prefix(index_id))
    else:
        index_id = oid_id
    index = IndexDef(index_name, index_id, tuple(columns), unique, constraint, tuple(descending),
                     oid_id if oid_id != index_id else -1)
    table = dataclasses.replace(table, indexes=table.indexes + (index,))
    await _fill_index(txn, table, index)
    txn.put(keys.catalog_index_key(index_name), table.name.encode("utf-8"))
    return table


async def _fill_index(txn: Transaction, table: TableDef, index: IndexDef) -> None:
    """Writes the entry of every existing row; a duplicate in a unique index fails the statement.
    An index in a private keyspace (bulk path) is written a batch at a time, duplicates found
    by reading the entries already written, so memory holds one batch."""
    private = txn.is_private(index.prefix)
    chunk_max = min(limits.BULK_BATCH_ROWS_MAX, limits.TXN_ROWS_MAX)
    seen: dict[bytes, tuple] = {}
    prefix = table.rows_prefix
    async for _, value in txn.scan(prefix, keys.prefix_end(prefix)):
        row = table.decode_row(value)
        entry_key, _ = table.index_entry(index, row)
        if index.unique and entry_key in seen:
            raise _duplicate_entry(table, index, row)
        seen[entry_key] = row
        if not private:
            txn.put(*table.index_entry(index, row))
        elif len(seen) >= chunk_max:
            await _write_index_chunk(txn, table, index, seen)
            seen = {}
    if private and seen:
        await _write_index_chunk(txn, table, index, seen)


def _duplicate_entry(table: TableDef, index: IndexDef, row) -> SqlError:
    positions = table.index_positions(index)
    names = ", ".join(table.columns[p].name for p in positions)
    return SqlError(errors.UNIQUE_VIOLATION, f'could not create unique index "{index.name}"',
                    detail=f"Key ({names})=({_format_values([row[p] for p in positions])}) is duplicated.")


async def _write_index_chunk(txn: Transaction, table: TableDef, index: IndexDef, entries: dict[bytes, tuple]) -> None:
    if index.unique:
        found = await txn.get_many(list(entries))
        for entry_key, row in entries.items():
            if found[entry_key] is not None:
                raise _duplicate_entry(table, index, row)
    for row in entries.values():
        txn.put(*table.index_entry(index, row))
    await txn.flush_private()


async def run_drop(txn: Transaction, drop: exp.Drop) -> StatementResult:
    kind = str(drop.args.get("kind") or "").upper()
    if kind == "INDEX":
        return await run_drop_index(txn, drop)
    if kind != "TABLE":
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"DROP {kind or 'this object'} is not supported")
    table_nodes = drop.args.get("tables") or ([drop.this] if drop.this is not None else [])
    dropped: list[TableDef] = []
    for table_node in table_nodes:
        if system_views.is_system_reference(table_node) and drop.args.get("exists") \
                and system_views.view_name(table_node) not in system_views.VIEWS:
            continue  # PostgreSQL: NOTICE table does not exist, skipping
        system_views.reject_write(table_node, "DROP TABLE")
        name = table_name(table_node)
        table = await load_table(txn, name)
        if table is None:
            if await txn.get(keys.catalog_index_key(name)) is not None:
                raise SqlError(errors.WRONG_OBJECT_TYPE, f'"{name}" is not a table', hint="Use DROP INDEX to remove an index.")
            if drop.args.get("exists"):
                continue  # PostgreSQL: NOTICE table does not exist, skipping
            raise SqlError(errors.UNDEFINED_TABLE, f'table "{name}" does not exist')
        dropped.append(table)
    for table in dropped:
        if is_bulk_target(txn, table):  # rows this transaction loaded but did not flush yet: never flush them
            gone = [table.rows_prefix] + [index.prefix for index in table.indexes]
            txn.pending = {k: v for k, v in txn.pending.items() if not any(k.startswith(p) for p in gone)}
        for index in table.indexes:
            txn.put(keys.catalog_index_key(index.name), None)
        for column in table.columns:
            if column.sequence is not None:  # owned by the column: PostgreSQL drops it too
                txn.put(keys.catalog_sequence_key(column.sequence), None)
        txn.put(table.catalog_key, None)
        txn.tables[table.name] = None
    return StatementResult.tag("DROP TABLE")


async def run_drop_index(txn: Transaction, drop: exp.Drop) -> StatementResult:
    if drop.args.get("concurrently"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "DROP INDEX CONCURRENTLY is not supported")
    targets: list[tuple[TableDef, IndexDef]] = []
    for node in drop.args.get("tables") or []:
        name = table_name(node)
        owner = await txn.get(keys.catalog_index_key(name))
        if owner is None:
            if await load_table(txn, name) is not None:
                raise SqlError(errors.WRONG_OBJECT_TYPE, f'"{name}" is not an index', hint="Use DROP TABLE to remove a table.")
            if drop.args.get("exists"):
                continue  # NOTICE: index does not exist, skipping
            raise SqlError(errors.UNDEFINED_OBJECT, f'index "{name}" does not exist')
        table = await load_table(txn, owner.decode("utf-8"))
        assert table is not None, f"index {name} names a missing table"
        index = table.find_index(name)
        assert index is not None, f"table {table.name} does not list index {name}"
        if index.constraint:
            raise SqlError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                           f"cannot drop index {name} because constraint {name} on table {table.name} requires it",
                           hint=f"You can drop constraint {name} on table {table.name} instead.")
        targets.append((table, index))
    for table, index in targets:
        current = txn.tables[table.name]
        _save_table(txn, dataclasses.replace(current, indexes=tuple(i for i in current.indexes if i.name != index.name)))
        txn.put(keys.catalog_index_key(index.name), None)
    return StatementResult.tag("DROP INDEX")


async def run_alter(txn: Transaction, alter: exp.Alter) -> StatementResult:
    kind = str(alter.args.get("kind") or "").upper()
    if kind != "TABLE":
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"ALTER {kind or 'this object'} is not supported")
    # ONLY excludes descendant tables; QuorumDB has no inheritance, so it names the same table.
    system_views.reject_write(alter.this, "ALTER TABLE")
    name = table_name(alter.this)
    table = await load_table(txn, name)
    if table is None:
        if alter.args.get("exists"):
            return StatementResult.tag("ALTER TABLE")  # NOTICE: relation does not exist, skipping
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{name}" does not exist')
    for action in alter.args.get("actions") or []:
        primary_key = _primary_key_action(action)
        if primary_key is not None:
            if len(alter.args.get("actions")) != 1:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, "ADD PRIMARY KEY must be the only action of its ALTER TABLE")
            table = await add_primary_key(txn, table, *primary_key)
            continue
        if isinstance(action, exp.AddConstraint) and any(
                isinstance(part, exp.ForeignKey) or isinstance(getattr(part, "expressions", None), list)
                and any(isinstance(p, exp.ForeignKey) for p in part.expressions)
                for part in action.expressions):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "foreign keys are not supported")
        unique = _unique_constraint_action(action)
        if unique is not None:
            table = await _add_unique_constraint(txn, table, *unique)
            continue
        if isinstance(action, exp.AlterColumn):
            table = await _alter_column(txn, table, action)
            continue
        if isinstance(action, exp.ColumnDef):
            table = await _add_column(txn, table, action)
        elif isinstance(action, exp.Drop) and str(action.args.get("kind") or "").upper() == "COLUMN":
            table = await _drop_column(txn, table, action)
        else:
            shown = type(action).__name__
            words = {"AlterRename": "RENAME", "AlterColumn": "ALTER COLUMN", "AddConstraint": "ADD CONSTRAINT",
                     "RenameColumn": "RENAME COLUMN", "DropPartition": "DROP PARTITION"}.get(shown, shown)
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"ALTER TABLE ... {words} is not supported")
    _save_table(txn, table)
    return StatementResult.tag("ALTER TABLE")


def _unique_constraint_action(action: exp.Expression) -> tuple[str | None, list[str]] | None:
    """(constraint name, columns) of ADD [CONSTRAINT name] UNIQUE (cols), else None."""
    if not isinstance(action, exp.AddConstraint) or len(action.expressions) != 1:
        return None
    part, name = action.expressions[0], None
    if isinstance(part, exp.Constraint):
        if len(part.expressions) != 1:
            return None
        name, part = identifier_name(part.this), part.expressions[0]
    if not isinstance(part, exp.UniqueColumnConstraint):
        return None
    _reject_unknown_args(part, {"this", "nulls", "include"}, "UNIQUE constraint")
    include = part.args.get("include")
    if include is not None and any(value not in (None, False, [], "") for value in include.args.values()):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "UNIQUE constraints with INCLUDE or storage options are not "
                                                     "supported")
    if part.args.get("nulls"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "UNIQUE NULLS NOT DISTINCT is not supported")
    schema = part.this
    if not isinstance(schema, exp.Schema) or not schema.expressions:
        raise SqlError(errors.SYNTAX_ERROR, "UNIQUE needs a column list")
    columns = [identifier_name(item.this if isinstance(item, exp.Column) else item) for item in schema.expressions]
    return name, columns


async def _add_unique_constraint(txn: Transaction, table: TableDef, name: str | None, columns: list[str]) -> TableDef:
    _check_index_columns(table, columns)
    if any(table.columns[table.column_index(c)].hidden for c in columns):
        raise SqlError(errors.UNDEFINED_COLUMN, f'column "{columns[0]}" named in key does not exist')
    if name is None:
        name = await _free_name(txn, f"{table.name}_{'_'.join(columns)}_key", set())
    elif await _relation_exists(txn, name) is not None or any(c.name == name for c in table.checks):
        raise SqlError(errors.DUPLICATE_TABLE, f'relation "{name}" already exists')
    return await add_index(txn, table, name, columns, True, True, [False] * len(columns))


async def _alter_column(txn: Transaction, table: TableDef, action: exp.AlterColumn) -> TableDef:
    """ALTER [COLUMN] c SET DEFAULT expr | DROP DEFAULT | SET NOT NULL | DROP NOT NULL."""
    _reject_unknown_args(action, {"this", "default", "drop", "allow_null"}, "ALTER COLUMN")
    name = identifier_name(action.this)
    position = table.column_index(name)
    if position is None or table.columns[position].hidden:
        raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" of relation "{table.name}" does not exist')
    column = table.columns[position]
    default, drop, allow_null = action.args.get("default"), action.args.get("drop"), action.args.get("allow_null")
    if default is not None and not drop and allow_null is None:
        if column.identity is not None:  # PostgreSQL reports this one as a syntax error
            raise SqlError(errors.SYNTAX_ERROR, f'column "{name}" of relation "{table.name}" is an identity column',
                           hint="Use ALTER TABLE ... ALTER COLUMN ... DROP IDENTITY instead.")
        _validate_expressions(table, [], {position: default})
        changed = dataclasses.replace(column, default=default_text(default))
    elif drop and allow_null is None:
        if column.identity is not None:
            raise SqlError(errors.INVALID_TABLE_DEFINITION,
                           f'column "{name}" of relation "{table.name}" is an identity column',
                           hint="Use ALTER TABLE ... ALTER COLUMN ... DROP IDENTITY instead.")
        changed = dataclasses.replace(column, default=None)
    elif allow_null is False and not drop and default is None:
        prefix = table.rows_prefix
        async for _, value in txn.scan(prefix, keys.prefix_end(prefix)):
            if table.decode_row(value)[position] is None:
                raise SqlError(errors.NOT_NULL_VIOLATION, f'column "{name}" of relation "{table.name}" contains null values')
        changed = dataclasses.replace(column, not_null=True)
    elif allow_null is True and drop and default is None:
        if position in table.primary_key:
            raise SqlError(errors.INVALID_TABLE_DEFINITION, f'column "{name}" is in a primary key')
        if column.identity is not None:
            raise SqlError(errors.INVALID_TABLE_DEFINITION,
                           f'column "{name}" of relation "{table.name}" is an identity column')
        changed = dataclasses.replace(column, not_null=False)
    else:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of ALTER COLUMN is not supported (SET DATA TYPE, ...)")
    columns = list(table.columns)
    columns[position] = changed
    return dataclasses.replace(table, columns=tuple(columns))


def _primary_key_action(action: exp.Expression) -> tuple[str | None, list[str]] | None:
    """(constraint name, columns) of ADD [CONSTRAINT name] PRIMARY KEY (cols), else None."""
    if not isinstance(action, exp.AddConstraint) or len(action.expressions) != 1:
        return None
    part = action.expressions[0]
    name = None
    if isinstance(part, exp.Constraint):
        if len(part.expressions) != 1:
            return None
        name = identifier_name(part.this)
        part = part.expressions[0]
    if not isinstance(part, exp.PrimaryKey):
        return None
    columns = [identifier_name(k.this if isinstance(k, (exp.Ordered, exp.Column)) else k) for k in part.expressions]
    return name, columns


# A rewrite mark stays in force this long after the transaction age limit (the marking and the
# rewriting transaction's start are milliseconds apart; this covers clock error generously).
REWRITE_MARK_MARGIN_NS = 60 * 1_000_000_000


async def add_primary_key(txn: Transaction, table: TableDef, constraint: str | None, names: list[str]) -> TableDef:
    """ALTER TABLE t ADD [CONSTRAINT name] PRIMARY KEY (cols) on a table with hidden row ids:
    the table is copied into a new private keyspace keyed by the new primary key (rows and every
    index rebuilt), flushed ahead in batches like a bulk load; duplicates are 23505, NULLs 23502.

    Concurrent writers must not be lost. When this transaction itself made the table's keyspace
    (TRUNCATE earlier in it), nobody else can write there. Otherwise the statement must be the
    first of its transaction: a small transaction of its own first *marks* the table (its catalog
    entry names this transaction) and moves the schema version; then this transaction takes a
    new snapshot and copies. A writer that started before the mark locked the old catalog entry,
    so its commit fails (40001); one that starts after sees the mark and fails at once (40001).
    The mark is removed when this transaction ends without committing; if even that fails it
    expires with the transaction age limit."""
    if not table.has_rowid:
        raise SqlError(errors.INVALID_TABLE_DEFINITION, f'multiple primary keys for table "{table.name}" are not allowed')
    pk_name = constraint if constraint is not None and constraint != f"{table.name}_pkey" else None
    if len(names) > limits.INDEX_COLUMNS_MAX:
        raise SqlError(errors.TOO_MANY_COLUMNS, f"cannot use more than {limits.INDEX_COLUMNS_MAX} columns in an index")
    shown = pk_name or f"{table.name}_pkey"
    if await _relation_exists(txn, shown) is not None or any(c.name == shown for c in table.checks):
        raise SqlError(errors.DUPLICATE_TABLE, f'relation "{shown}" already exists')
    positions: list[int] = []
    for name in names:
        position = table.column_index(name)
        if position is None or table.columns[position].hidden:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" of relation "{table.name}" does not exist')
        if position in positions:
            raise SqlError(errors.DUPLICATE_COLUMN, f'column "{name}" appears twice in primary key constraint')
        positions.append(position)
    if not is_bulk_target(txn, table):
        await txn.check_schema_version()  # a cached definition must be this snapshot's before the mark
        table = await _mark_for_rewrite(txn, table)
    old = table
    kept = [p for p in range(len(old.columns)) if not old.columns[p].hidden]
    columns = tuple(dataclasses.replace(old.columns[p], slot=-1, missing=None,
                                        not_null=old.columns[p].not_null or p in positions) for p in kept)
    new_table = TableDef(old.table_id, old.name, columns, tuple(kept.index(p) for p in positions), old.indexes,
                         old.checks, primary_key_name=pk_name, oid_id=old.catalog_id)
    new_table = await move_to_private_keyspace(txn, new_table, drop_old=False)
    # Only this transaction writes the new keyspace: a duplicate key can only be between two
    # copied rows, found in memory (bulk.KeyDigests) rather than by a storage read per row. The
    # unique indexes need no check: they held in the snapshot the same rows are copied from.
    digests = bulk.KeyDigests(limits.REWRITE_KEYS_MAX)
    prefix = old.rows_prefix
    null_column: str | None = None  # PostgreSQL reports duplicates before NULLs: so do we
    try:
        async for _, value in txn.scan(prefix, keys.prefix_end(prefix), prefetch=True):
            row = old.decode_row(value)
            missing = next((old.columns[p].name for p in positions if row[p] is None), None)
            if missing is not None:
                null_column = null_column or missing
                continue
            new_row = [row[p] for p in kept]
            digests.add(write_row(txn, new_table, new_row, None, None))
            if txn.flush_due():
                await txn.flush_private()
    except OverflowError:
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                       f'table "{old.name}" is too large to rewrite: more than {limits.REWRITE_KEYS_MAX} keys',
                       hint="Create a new table with the primary key and load it with INSERT ... SELECT.") from None
    candidates = digests.repeated()
    if candidates:
        await _raise_rewrite_duplicate(txn, old, new_table, kept, positions, digests, candidates)
    if null_column is not None:
        raise SqlError(errors.NOT_NULL_VIOLATION, f'column "{null_column}" of relation "{old.name}" contains null values')
    if is_bulk_target(txn, old):  # the old private keyspace is garbage now: do not flush it
        stale = [old.rows_prefix] + [index.prefix for index in old.indexes]
        txn.pending = {k: v for k, v in txn.pending.items() if not any(k.startswith(p) for p in stale)}
    return new_table


async def _raise_rewrite_duplicate(txn: Transaction, old: TableDef, new_table: TableDef, kept: list[int],
                                   positions: list[int], digests: bulk.KeyDigests, candidates: set[int]) -> None:
    """23505 naming a key two rows of the rewrite share, if one does: the rows whose keys have a
    repeated digest are read again and their keys compared (a shared digest alone proves nothing).
    Memory: the keys of the candidate rows only."""
    seen: set[bytes] = set()
    prefix = old.rows_prefix
    async for _, value in txn.scan(prefix, keys.prefix_end(prefix)):
        row = old.decode_row(value)
        if any(row[p] is None for p in positions):
            continue
        new_row = [row[p] for p in kept]
        key = new_table.row_key(new_row)
        if digests.digest_of(key) not in candidates:
            continue
        if key in seen:
            detail = _duplicate_key(new_table, new_row, None).detail.replace("already exists", "is duplicated")
            raise SqlError(errors.UNIQUE_VIOLATION, f'could not create unique index "{new_table.constraint_name}"',
                           detail=detail)
        seen.add(key)


def _may_mark(txn: Transaction) -> bool:
    """True while the transaction has read no data and written nothing: marking a table moves it
    to a later snapshot (_mark_for_rewrite), which only such a transaction may take."""
    return not (txn.write_buffer or txn.pending or txn.read_data)


async def _mark_for_rewrite(txn: Transaction, table: TableDef) -> TableDef:
    """Marks `table` as rewritten by `txn` (its own small transaction), then moves `txn` to a
    snapshot after the mark; returns the table as that snapshot has it."""
    if not _may_mark(txn):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       "ALTER TABLE ... ADD PRIMARY KEY must be the first statement of its transaction "
                       "(or follow TRUNCATE of the table in the same transaction)",
                       hint="Run it on its own or at the start of the transaction block.")
    key = table.catalog_key
    version_key = keys.SCHEMA_VERSION_KEY
    marked_ts = txn.backend.now_ts()
    from compute_node.sql.schema_cache import decode_version, encode_version

    def mark(found):
        raw = found[key]
        current = TableDef.decode(raw) if raw is not None else None
        if current is None or current.table_id != table.table_id:
            raise SqlError(errors.SERIALIZATION_FAILURE,
                           f"schema has been updated by another transaction, please retry: ({errors.DSQL_SCHEMA_CHANGED})")
        if current.rewrite_by is not None and current.rewrite_by != txn.txn_id                 and marked_ts - current.rewrite_ts <= limits.TXN_AGE_MAX_NS + REWRITE_MARK_MARGIN_NS:
            raise SqlError(errors.SERIALIZATION_FAILURE,
                           f'table "{table.name}" is being rewritten by another transaction, please retry: ({errors.DSQL_SCHEMA_CHANGED})')
        marked = dataclasses.replace(current, rewrite_by=txn.txn_id, rewrite_ts=marked_ts)
        version = encode_version(decode_version(found[version_key]) + 1)
        return [(key, marked.encode()), (version_key, version)], None

    await sequences.autonomous_update(txn.backend, [key, version_key], mark, f"{txn.txn_id}:mark")
    txn.abort_actions.append(lambda: _clear_rewrite_mark(txn, table.name))
    txn.restart_snapshot(txn.backend.start_ts())
    await txn.get_many([])  # learn the catalog version of the new snapshot before using any definition
    reloaded = await load_table(txn, table.name)
    if reloaded is None or reloaded.rewrite_by != txn.txn_id:
        raise SqlError(errors.SERIALIZATION_FAILURE,
                       f"schema has been updated by another transaction, please retry: ({errors.DSQL_SCHEMA_CHANGED})")
    return reloaded


async def _clear_rewrite_mark(txn: Transaction, name: str) -> None:
    key = keys.catalog_table_key(name)
    version_key = keys.SCHEMA_VERSION_KEY
    from compute_node.sql.schema_cache import decode_version, encode_version

    def clear(found):
        raw = found[key]
        current = TableDef.decode(raw) if raw is not None else None
        if current is None or current.rewrite_by != txn.txn_id:
            return [], None  # already replaced (committed) or marked by someone else since
        version = encode_version(decode_version(found[version_key]) + 1)
        return [(key, dataclasses.replace(current, rewrite_by=None, rewrite_ts=0).encode()),
                (version_key, version)], None

    await sequences.autonomous_update(txn.backend, [key, version_key], clear, f"{txn.txn_id}:unmark")


def _with_explicit_slots(table: TableDef) -> TableDef:
    columns = tuple(dataclasses.replace(c, slot=table.column_slot(i)) for i, c in enumerate(table.columns))
    return dataclasses.replace(table, columns=columns, slot_count=table.physical_slots)


async def _table_has_rows(txn: Transaction, table: TableDef) -> bool:
    prefix = table.rows_prefix
    async for _ in txn.scan(prefix, keys.prefix_end(prefix)):
        return True
    return False


async def _add_column(txn: Transaction, table: TableDef, action: exp.ColumnDef) -> TableDef:
    column, is_primary, uniques, checks, defaults = column_from_def(action, table.name)
    if table.column_index(column.name) is not None:
        if action.args.get("exists"):
            return table  # NOTICE: column already exists, skipping
        raise SqlError(errors.DUPLICATE_COLUMN, f'column "{column.name}" of relation "{table.name}" already exists')
    if is_primary:
        raise SqlError(errors.INVALID_TABLE_DEFINITION, f'multiple primary keys for table "{table.name}" are not allowed')
    if uniques:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "ADD COLUMN ... UNIQUE is not supported; add the column, then "
                                                     "CREATE UNIQUE INDEX")
    if len(table.columns) + 1 > limits.TABLE_COLUMNS_MAX:
        raise SqlError(errors.TOO_MANY_COLUMNS, f"tables can have at most {limits.TABLE_COLUMNS_MAX} columns")
    table = _with_explicit_slots(table)
    slot = table.physical_slots
    missing = None
    if 0 in defaults:
        probe = dataclasses.replace(table, columns=table.columns + (dataclasses.replace(column, slot=slot),),
                                    slot_count=slot + 1)
        _validate_expressions(probe, [], {len(table.columns): defaults[0]})
        compiled = Compiler(Scope(), "DEFAULT expressions", None, new_context(txn)).compile(defaults[0])
        value = types.assign(compiled.evaluate(()), compiled.sql_type, column.sql_type, column.name)
        if value is not None:
            missing = column.encode_missing(value)
    if column.not_null and missing is None and await _table_has_rows(txn, table):
        raise SqlError(errors.NOT_NULL_VIOLATION, f'column "{column.name}" of relation "{table.name}" contains null values')
    new_column = dataclasses.replace(column, slot=slot, missing=missing)
    check_defs = list(table.checks)
    taken = {c.name for c in check_defs}
    new_checks = []
    for explicit, node, column_name in checks:
        check_name = explicit or unique_name(f"{table.name}_{column_name}_check", taken)
        taken.add(check_name)
        new_checks.append((check_name, node))
        check_defs.append(CheckDef(check_name, node.sql(dialect="postgres")))
    result = dataclasses.replace(table, columns=table.columns + (new_column,), slot_count=slot + 1,
                                 checks=tuple(check_defs))
    if new_checks:
        _validate_expressions(result, new_checks, {})
        rules = compile_rules(dataclasses.replace(result, checks=tuple(CheckDef(n, x.sql(dialect="postgres"))
                                                                      for n, x in new_checks)))
        prefix = result.rows_prefix
        async for _, value in txn.scan(prefix, keys.prefix_end(prefix)):
            row = result.decode_row(value)
            for check_name, check in rules.checks:
                if check.evaluate(row) is False:
                    raise SqlError(errors.CHECK_VIOLATION,
                                   f'check constraint "{check_name}" of relation "{table.name}" is violated by some row')
    return result


async def _drop_column(txn: Transaction, table: TableDef, action: exp.Drop) -> TableDef:
    targets = action.args.get("tables") or []
    for node in targets:
        name = identifier_name(node.this if isinstance(node, exp.Column) else node)
        position = table.column_index(name)
        if position is None:
            if action.args.get("exists"):
                continue  # NOTICE: column does not exist, skipping
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" of relation "{table.name}" does not exist')
        if position in table.primary_key:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f'cannot drop column "{name}": it is part of the primary key of "{table.name}"')
        table = _with_explicit_slots(table)
        if table.columns[position].sequence is not None:  # the column's own sequence goes with it
            txn.put(keys.catalog_sequence_key(table.columns[position].sequence), None)
        columns = table.columns[:position] + table.columns[position + 1:]
        primary_key = tuple(p - (1 if p > position else 0) for p in table.primary_key)
        kept_indexes = []
        for index in table.indexes:
            if name in index.columns:
                txn.put(keys.catalog_index_key(index.name), None)  # PostgreSQL drops the index with the column
            else:
                kept_indexes.append(index)
        kept_checks = [check for check in table.checks
                       if name not in {identifier_name(c.this) for c in _parse_expression(check.sql).find_all(exp.Column)}]
        table = TableDef(table.table_id, table.name, columns, primary_key, tuple(kept_indexes), tuple(kept_checks),
                         table.slot_count)
    return table


# --- TRUNCATE, VACUUM, ANALYZE, sequences ---------------------------------------------------------
async def allocate_private_ids(txn: Transaction, count: int) -> list[int]:
    """`count` ids no other transaction will ever use, whether this one commits or not (bulk.py)."""
    key = keys.PRIVATE_ID_COUNTER_KEY

    def take(found):
        last = int.from_bytes(found[key], "big") if found[key] is not None else keys.PRIVATE_ID_BASE
        if last + count >= keys.TABLE_ID_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, "no private keyspace ids left")
        return [(key, (last + count).to_bytes(8, "big"))], list(range(last + 1, last + count + 1))

    return await sequences.autonomous_update(txn.backend, [key], take, f"{txn.txn_id}:ids")


async def move_to_private_keyspace(txn: Transaction, table: TableDef, drop_old: bool = True) -> TableDef:
    """`table` under new private ids (rows and every index), empty: TRUNCATE, and the target of a
    rewrite. Writes of this transaction to its previous private keyspace, if any, are dropped."""
    if drop_old and is_bulk_target(txn, table):
        old = [table.rows_prefix] + [index.prefix for index in table.indexes]
        txn.pending = {k: v for k, v in txn.pending.items() if not any(k.startswith(p) for p in old)}
    ids = await allocate_private_ids(txn, 1 + len(table.indexes))
    indexes = tuple(dataclasses.replace(index, index_id=index_id, oid_id=index.catalog_id)
                    for index, index_id in zip(table.indexes, ids[1:]))
    moved = dataclasses.replace(table, table_id=ids[0], indexes=indexes, rewrite_by=None, rewrite_ts=0,
                                oid_id=table.catalog_id)
    txn.add_private_prefix(moved.rows_prefix)
    for index in moved.indexes:
        txn.add_private_prefix(index.prefix)
    return moved


async def run_truncate(txn: Transaction, truncate: exp.TruncateTable) -> StatementResult:
    """TRUNCATE [TABLE] a, b [RESTART IDENTITY | CONTINUE IDENTITY] [CASCADE | RESTRICT]: each table
    gets a new, empty, private keyspace (as PostgreSQL gives it a new relfilenode); the catalog
    change commits with the transaction, and rows inserted after it take the bulk path. There are
    no foreign keys, so CASCADE has nothing more to truncate."""
    if truncate.args.get("is_database"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "TRUNCATE DATABASE is not supported")
    for unsupported in ("cluster", "partition"):
        if truncate.args.get(unsupported):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"TRUNCATE ... {unsupported.upper()} is not supported")
    tables: list[TableDef] = []
    for node in truncate.expressions:
        system_views.reject_write(node, "TRUNCATE")
        if isinstance(node, exp.Table) and node.args.get("only"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "TRUNCATE ONLY is not supported")
        table = await require_table(txn, node)
        _check_writable(txn, table)
        if all(t.name != table.name for t in tables):
            tables.append(table)
    # The definitions may come from the node's cache: make sure they are this snapshot's before
    # anything is allocated or written (SchemaStale runs the statement again otherwise).
    await txn.check_schema_version()
    restart = str(truncate.args.get("identity") or "").upper() == "RESTART"
    for table in tables:
        _save_table(txn, await move_to_private_keyspace(txn, table))
        if restart:
            for column in table.columns:
                if column.sequence is not None:
                    definition = await sequences.load_sequence(txn, column.sequence)
                    if definition is not None:
                        await sequences.statement_sequences(new_context(txn)).setval(
                            definition.name, definition.start, False)
    return StatementResult.tag("TRUNCATE TABLE")


async def run_utility(txn: Transaction, statement: Utility) -> StatementResult:
    if statement.command == "DROP SEQUENCE":
        return await run_drop_sequence(txn, statement)
    if statement.command == "CREATE SEQUENCE":
        return await run_create_sequence(txn, statement)
    if statement.command == "OWNER TO":
        return await run_owner_to(txn, statement)
    if statement.command == "ALTER SEQUENCE OWNED BY":
        return await run_sequence_owned_by(txn, statement)
    if statement.command == "ADD IDENTITY":
        return await run_add_identity(txn, statement)
    # VACUUM and ANALYZE: storage reclaims old versions itself and the planner uses no statistics,
    # so there is nothing to do; the tables must exist, as in PostgreSQL.
    for name in statement.names:
        if await load_table(txn, name) is None:
            raise SqlError(errors.UNDEFINED_TABLE, f'relation "{name}" does not exist')
    return StatementResult.tag(statement.command)


async def run_owner_to(txn: Transaction, statement: Utility) -> StatementResult:
    """ALTER TABLE|SEQUENCE|INDEX name OWNER TO role. Every object belongs to the connected user
    (pg_catalog shows it as the owner), the only role there is; so the owner can only be given
    to that user, and then nothing changes. pg_dump writes these lines for every object."""
    options = dict(statement.options)
    kind, role = options["kind"], options["role"]
    name = statement.names[0]
    found = await _relation_exists(txn, name)
    tag = f"ALTER {kind.upper()}"
    if found is None or (kind == "sequence" and found != "sequence") or (kind == "index" and found != "index"):
        if statement.if_exists:
            return StatementResult.tag(tag)
        shown = "relation" if kind == "table" else kind
        raise SqlError(errors.UNDEFINED_TABLE, f'{shown} "{name}" does not exist')
    user = getattr(getattr(txn, "client", None), "user", None)
    if role not in ("current_user", "session_user", "current_role") and user is not None and role != user:
        raise SqlError(errors.UNDEFINED_OBJECT, f'role "{role}" does not exist')
    return StatementResult.tag(tag)


async def run_sequence_owned_by(txn: Transaction, statement: Utility) -> StatementResult:
    """ALTER SEQUENCE s OWNED BY table.column | NONE: the sequence is dropped with its column."""
    name = statement.names[0]
    definition = await sequences.load_sequence(txn, name)
    if definition is None:
        if statement.if_exists:
            return StatementResult.tag("ALTER SEQUENCE")
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{name}" does not exist')
    owner = dict(statement.options)["owner"]
    if definition.owned_by is not None and definition.owned_by != owner:
        old_table = await load_table(txn, definition.owned_by[0])
        if old_table is not None:
            position = old_table.column_index(definition.owned_by[1])
            if position is not None and old_table.columns[position].sequence == name:
                if old_table.columns[position].identity is not None:
                    raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                                   "cannot change ownership of identity sequence")
                columns = list(old_table.columns)
                columns[position] = dataclasses.replace(columns[position], sequence=None)
                _save_table(txn, dataclasses.replace(old_table, columns=tuple(columns)))
    if owner is not None:
        table = await load_table(txn, owner[0])
        if table is None:
            raise SqlError(errors.UNDEFINED_TABLE, f'relation "{owner[0]}" does not exist')
        position = table.column_index(owner[1])
        if position is None or table.columns[position].hidden:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{owner[1]}" of relation "{owner[0]}" does not exist')
        if table.columns[position].sequence not in (None, name):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f'column "{owner[1]}" already owns sequence "{table.columns[position].sequence}"')
        columns = list(table.columns)
        columns[position] = dataclasses.replace(columns[position], sequence=name)
        _save_table(txn, dataclasses.replace(table, columns=tuple(columns)))
    txn.put(keys.catalog_sequence_key(name), dataclasses.replace(definition, owned_by=owner).encode())
    return StatementResult.tag("ALTER SEQUENCE")


async def run_add_identity(txn: Transaction, statement: Utility) -> StatementResult:
    """ALTER TABLE t ALTER COLUMN c ADD GENERATED {ALWAYS | BY DEFAULT} AS IDENTITY [(options)],
    as pg_dump writes identity columns: a sequence owned by the column becomes its default."""
    name = statement.names[0]
    table = await load_table(txn, name)
    if table is None:
        if statement.if_exists:
            return StatementResult.tag("ALTER TABLE")
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{name}" does not exist')
    options = dict(statement.options)
    column_name = options.pop("column")
    identity = options.pop("identity")
    position = table.column_index(column_name)
    if position is None or table.columns[position].hidden:
        raise SqlError(errors.UNDEFINED_COLUMN, f'column "{column_name}" of relation "{name}" does not exist')
    column = table.columns[position]
    if column.sql_type.kind not in types.INT_RANGES:
        raise SqlError(errors.INVALID_PARAMETER_VALUE,
                       "identity column type must be smallint, integer, or bigint")
    if not column.not_null:
        raise SqlError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE,
                       f'column "{column_name}" of relation "{name}" must be declared NOT NULL before identity '
                       'can be added')
    if column.identity is not None:
        raise SqlError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE,
                       f'column "{column_name}" of relation "{name}" is already an identity column')
    if column.default is not None:
        raise SqlError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE,
                       f'column "{column_name}" of relation "{name}" already has a default value')
    sequence_name = options.pop("sequence name", None) or await _free_name(txn, f"{name}_{column_name}_seq", set())
    if await _relation_exists(txn, sequence_name) is not None:
        raise SqlError(errors.DUPLICATE_TABLE, f'relation "{sequence_name}" already exists')
    options.pop("as", None)  # the column's type bounds the sequence, as PostgreSQL does
    definition = sequence_from_options(sequence_name, await _next_id(txn), options,
                                       sequence_type_of(column.sql_type), (name, column_name))
    txn.put(keys.catalog_sequence_key(sequence_name), definition.encode())
    columns = list(table.columns)
    columns[position] = dataclasses.replace(column, default=f"nextval('{sequence_name}'::regclass)",
                                         sequence=sequence_name, identity=identity)
    _save_table(txn, dataclasses.replace(table, columns=tuple(columns)))
    return StatementResult.tag("ALTER TABLE")


async def run_drop_sequence(txn: Transaction, statement: Utility) -> StatementResult:
    found = []
    for name in statement.names:
        definition = await sequences.load_sequence(txn, name)
        if definition is None:
            if statement.if_exists:
                continue  # NOTICE: sequence does not exist, skipping
            raise SqlError(errors.UNDEFINED_TABLE, f'sequence "{name}" does not exist')
        if definition.owned_by is not None:
            owner_table, owner_column = definition.owned_by
            raise SqlError(errors.DEPENDENT_OBJECTS_STILL_EXIST,
                           f"cannot drop sequence {name} because other objects depend on it",
                           detail=f"default value for column {owner_column} of table {owner_table} depends on "
                                  f"sequence {name}",
                           hint="Drop the table or column that owns it.")
        found.append(definition)
    for definition in found:
        txn.put(keys.catalog_sequence_key(definition.name), None)
    return StatementResult.tag("DROP SEQUENCE")


def _option_int(node: exp.Expression | None, what: str) -> int | None:
    """An identity column's sequence option (sqlglot node) as an integer."""
    if node is None:
        return None
    value = node
    negative = False
    if isinstance(value, exp.Neg):
        negative, value = True, value.this
    if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
        raise SqlError(errors.SYNTAX_ERROR, f"{what} must be an integer")
    return -int(value.this) if negative else int(value.this)


def sequence_type_of(sql_type) -> str:
    """The type of the sequence a serial or identity column owns: the column's own (PostgreSQL's
    serial is an integer sequence, smallserial a smallint one)."""
    return {types.Kind.SMALLINT: "smallint", types.Kind.INTEGER: "integer", types.Kind.BIGINT: "bigint"}[sql_type.kind]


_SEQUENCE_TYPE_BOUNDS = {"smallint": types.INT_RANGES[types.Kind.SMALLINT],
                         "integer": types.INT_RANGES[types.Kind.INTEGER],
                         "bigint": types.INT_RANGES[types.Kind.BIGINT]}


def sequence_from_options(name: str, sequence_id: int, options: dict, data_type: str = "bigint",
                          owned_by=None) -> bulk.SequenceDef:
    """A SequenceDef of `data_type` (smallint, integer, bigint: it bounds the values) from
    CREATE SEQUENCE / identity options (integers by option name), validated as PostgreSQL does."""
    type_min, type_max = _SEQUENCE_TYPE_BOUNDS[data_type]
    for what, value in options.items():
        if isinstance(value, int) and not bulk.BIGINT_MIN <= value <= bulk.BIGINT_MAX:
            raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f"{what.upper()} is out of range for type bigint")
    increment = options.get("increment", 1)
    if increment == 0:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, "INCREMENT must not be zero")
    low, high = bulk.sequence_bounds(increment, options.get("minvalue"), options.get("maxvalue"), type_min, type_max)
    if not type_min <= low <= type_max:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f"MINVALUE ({low}) is out of range for sequence data type")
    if not type_min <= high <= type_max:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f"MAXVALUE ({high}) is out of range for sequence data type")
    if low >= high:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f"MINVALUE ({low}) must be less than MAXVALUE ({high})")
    start = options.get("start")
    start = start if start is not None else (low if increment > 0 else high)
    if start < low:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f"START value ({start}) cannot be less than MINVALUE ({low})")
    if start > high:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f"START value ({start}) cannot be greater than MAXVALUE ({high})")
    cache = options.get("cache", 1)
    if cache < 1:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f"CACHE ({cache}) must be greater than zero")
    return bulk.SequenceDef(name, sequence_id, start, increment, low, high, min(cache, limits.SEQUENCE_RESERVE_MAX),
                            owned_by, data_type)


async def run_create_sequence(txn: Transaction, statement: Utility) -> StatementResult:
    name = statement.names[0]
    options = dict(statement.options)
    data_type = options.pop("as", "bigint")
    if await _relation_exists(txn, name) is not None:
        if statement.if_exists:
            return StatementResult.tag("CREATE SEQUENCE")  # NOTICE: relation already exists, skipping
        raise SqlError(errors.DUPLICATE_TABLE, f'relation "{name}" already exists')
    definition = sequence_from_options(name, await _next_id(txn), options, data_type)
    txn.put(keys.catalog_sequence_key(name), definition.encode())
    return StatementResult.tag("CREATE SEQUENCE")


# --- EXPLAIN ------------------------------------------------------------------------------------
async def run_explain(txn: Transaction, explain: Explain) -> StatementResult:
    statement = explain.statement
    if explain.analyze:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "EXPLAIN ANALYZE is not supported")
    await preload_tables(txn, statement)
    ctx = new_context(txn)
    if isinstance(statement, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values)):
        if isinstance(statement, exp.Select) and not statement.args.get("with_"):
            plan = compile_select_plan(statement, None, ctx)
        else:
            plan = compile_query(statement, None, ctx)
        if isinstance(plan, SelectPlan):
            plan.subplans = list(ctx.expression_subplans)
        lines = plan.explain()
    elif isinstance(statement, (exp.Update, exp.Delete)):
        table = await require_table(txn, statement.this)
        scope = table_scope(table, statement.this)
        where = statement.args.get("where")
        if where is not None:
            Compiler(scope, "WHERE", None, ctx).compile_condition(where.this)
        access = plan_access(table, where.this if where is not None else None,
                             lambda column: _target_position(scope, table, column))
        from compute_node.sql.select import Source
        from compute_node.sql.expressions import Relation
        source = Source(Relation(table.name, ()), "table", table=table, plan=access)
        verb = "Update" if isinstance(statement, exp.Update) else "Delete"
        lines = [f"{verb} on {table.name}", "  ->  " + source.describe()]
        if where is not None:
            lines.insert(1, "  ->  Filter (WHERE)")
            lines[2] = "        ->  " + source.describe()
    elif isinstance(statement, exp.Insert):
        target = statement.this.this if isinstance(statement.this, exp.Schema) else statement.this
        table = await require_table(txn, target)
        lines = [f"Insert on {table.name} ({1 + len(table.indexes)} key(s) per row: row"
                 f"{', ' + ', '.join(i.name for i in table.indexes) if table.indexes else ''})"]
    else:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "EXPLAIN of this statement is not supported")
    return StatementResult([("QUERY PLAN", "text")], [(line,) for line in lines], "EXPLAIN")


def _reject_unknown_args(node: exp.Expression, allowed: set[str], statement: str) -> None:
    for key, value in node.args.items():
        if key not in allowed and value not in (None, False, [], ""):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"{key.rstrip('_').upper()} in {statement} is not supported")
