"""Runs one parsed statement inside a Transaction: the only SQL code that awaits.

Theory of operation
-------------------
Each statement is compiled first (names, types and constant conversions are checked,
so errors come before any read), then planned (`planner.plan_access`: point reads,
a primary-key range or a full scan), then executed against the transaction:
  * SELECT feeds matching rows to its SelectProgram (query.py);
  * INSERT converts every value to its column's type, checks NOT NULL and the
    primary key (against storage at start_ts, the write buffer and the statement's
    own earlier rows) and buffers the new rows;
  * UPDATE/DELETE read the matching rows, then buffer new values or tombstones;
    an UPDATE that changes a primary key deletes the old key and inserts the new
    one with the same duplicate check;
  * CREATE/DROP TABLE read and write catalog keys through the same buffer;
  * SELECT from information_schema.tables/columns/key_column_usage scans the catalog
    keys (through the buffer, so it sees the transaction's own DDL) and feeds the
    rows system_views.py builds from them to the same SelectProgram.
Writes to a table also lock its catalog key, so a concurrent change of the table's
definition makes the commit fail with 40001 rather than write to a dropped table.
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Sequence

from sqlglot import exp

from compute_node.sql import system_views, types
from compute_node.sql.catalog import TableDef, identifier_name, table_from_create, table_name
from compute_node.sql.expressions import EMPTY_SCOPE, Compiled, Compiler, Scope, constant, contains_aggregate
from compute_node.sql.planner import AccessPlan, PlanKind, plan_access
from compute_node.sql.query import compile_select
from compute_node.sql.result import StatementResult
from compute_node.sql.transaction import Transaction
from quorumdb import errors, keys, limits
from quorumdb.errors import SqlError


async def execute(txn: Transaction, statement: exp.Expression) -> StatementResult:
    if isinstance(statement, exp.Select):
        return await run_select(txn, statement)
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
    raise AssertionError(f"parser let through {type(statement).__name__}")


# --- catalog ----------------------------------------------------------------------
async def load_table(txn: Transaction, name: str) -> TableDef | None:
    if name in txn.tables:
        return txn.tables[name]
    raw = await txn.get(keys.catalog_table_key(name))
    table = TableDef.decode(raw) if raw is not None else None
    txn.tables[name] = table
    return table


async def load_all_tables(txn: Transaction) -> list[TableDef]:
    """Every table of the snapshot (start_ts plus the transaction's own DDL), in name order."""
    prefix = keys.CATALOG_TABLE_PREFIX
    tables = []
    async for _, value in txn.scan(prefix, keys.prefix_end(prefix)):
        table = TableDef.decode(value)
        txn.tables[table.name] = table
        tables.append(table)
    return tables


async def require_table(txn: Transaction, table_node: exp.Expression) -> TableDef:
    name = table_name(table_node)
    table = await load_table(txn, name)
    if table is None:
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{name}" does not exist')
    return table


def table_scope(table: TableDef, table_node: exp.Expression) -> Scope:
    return _scope(table.name, tuple((c.name, c.sql_type) for c in table.columns), table_node)


def _scope(name: str, columns: tuple[tuple[str, types.SqlType], ...], table_node: exp.Expression) -> Scope:
    alias = table_node.args.get("alias")
    alias_name = identifier_name(alias.this) if alias is not None and alias.this is not None else None
    if alias is not None and alias.columns:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "column aliases in FROM are not supported")
    return Scope(name, alias_name, columns)


async def read_rows(txn: Transaction, table: TableDef, plan: AccessPlan) -> AsyncIterator[tuple[bytes, tuple]]:
    """Rows the plan selects, in primary-key order, with the transaction's own writes merged in."""
    if plan.kind is PlanKind.POINT:
        found = await txn.get_many(list(plan.point_keys))
        for key in plan.point_keys:
            value = found[key]
            if value is not None:
                yield key, _decode(table, value)
        return
    async for key, value in txn.scan(plan.start, plan.end):
        yield key, _decode(table, value)


def _decode(table: TableDef, value: bytes) -> tuple:
    row = keys.decode_row(value)
    assert len(row) == len(table.columns), f"row of {table.name} has {len(row)} values"
    return row


def plan_for(txn: Transaction, table: TableDef, where: exp.Where | None) -> AccessPlan:
    plan = plan_access(table, where.this if where is not None else None)
    txn.last_plan = plan
    return plan


# --- SELECT -------------------------------------------------------------------------
async def run_select(txn: Transaction, select: exp.Select) -> StatementResult:
    program, rows, _ = await select_rows(txn, select)
    columns = [(name, sql_type.pg_name) for name, sql_type in program.columns]
    return StatementResult(columns, rows, f"SELECT {len(rows)}")


async def select_rows(txn: Transaction, select: exp.Select):
    from_clause = select.args.get("from_") or select.args.get("from")
    if select.args.get("joins"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "joins are not supported")
    if from_clause is None:
        program = compile_select(select, EMPTY_SCOPE, has_table=False)
        if program.matches(()):
            program.add_row(())
        rows, _ = program.finish()
        return program, rows, None
    table_node = from_clause.this
    if not isinstance(table_node, exp.Table):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "subqueries in FROM are not supported")
    if system_views.is_system_reference(table_node):
        return await _select_from_view(txn, select, table_node)
    table = await require_table(txn, table_node)
    program = compile_select(select, table_scope(table, table_node), has_table=True)
    plan = plan_for(txn, table, select.args.get("where"))
    async for key, row in read_rows(txn, table, plan):
        if program.matches(row):
            program.add_row(row, key)
            if program.enough():
                break
    rows, source_keys = program.finish()
    if program.for_update:
        for key in source_keys:
            txn.lock(key)
    return program, rows, table


async def _select_from_view(txn: Transaction, select: exp.Select, table_node: exp.Table):
    view = system_views.resolve_view(table_node)
    program = compile_select(select, _scope(view.name, view.columns, table_node), has_table=True)
    if program.for_update:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'cannot lock rows in view "{view.name}"')
    for row in system_views.view_rows(view, await load_all_tables(txn)):
        if program.matches(row):
            program.add_row(row)
            if program.enough():
                break
    rows, _ = program.finish()
    return program, rows, None


# --- INSERT ---------------------------------------------------------------------------
_INSERT_ARGS = {"this", "expression", "is_function", "stored", "by_name", "exists", "partition", "settings",
                "default", "overwrite", "ignore", "source"}


async def run_insert(txn: Transaction, insert: exp.Insert) -> StatementResult:
    if insert.args.get("conflict") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "INSERT ... ON CONFLICT is not supported")
    if insert.args.get("returning") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "RETURNING is not supported")
    _reject_unknown_args(insert, _INSERT_ARGS, "INSERT")
    target = insert.this
    column_nodes = None
    if isinstance(target, exp.Schema):
        column_nodes = target.expressions
        target = target.this
    system_views.reject_write(target, "INSERT")
    table = await require_table(txn, target)
    positions = _insert_positions(table, column_nodes)
    source = insert.args.get("expression")
    if isinstance(source, exp.Values):
        widths = {len(t.expressions) if isinstance(t, exp.Tuple) else 1 for t in source.expressions}
        if len(widths) > 1:
            raise SqlError(errors.SYNTAX_ERROR, "VALUES lists must all be the same length")
        typed_rows = [_values_row(table, positions, tuple_node, column_nodes is not None)
                      for tuple_node in source.expressions]
    elif isinstance(source, exp.Select):
        program, rows, _ = await select_rows(txn, source)
        if len(program.columns) > len(positions):
            raise SqlError(errors.SYNTAX_ERROR, "INSERT has more expressions than target columns")
        if len(program.columns) < len(positions) and column_nodes is not None:
            raise SqlError(errors.SYNTAX_ERROR, "INSERT has more target columns than expressions")
        column_types = [sql_type for _, sql_type in program.columns]
        typed_rows = [list(zip(row, column_types)) for row in rows]
    else:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of INSERT is not supported")
    new_rows = [_build_row(table, positions, typed) for typed in typed_rows]
    row_keys = [table.row_key(row) for row in new_rows]
    existing = await txn.get_many(list(dict.fromkeys(row_keys)))
    seen: set[bytes] = set()
    for row, key in zip(new_rows, row_keys):
        if key in seen or existing[key] is not None:
            raise _duplicate_key(table, row)
        seen.add(key)
    for row, key in zip(new_rows, row_keys):
        txn.put(key, keys.encode_row(row))
    if new_rows:
        txn.lock(table.catalog_key)
    return StatementResult.tag(f"INSERT 0 {len(new_rows)}")


def _insert_positions(table: TableDef, column_nodes) -> list[int]:
    if column_nodes is None:
        return list(range(len(table.columns)))
    positions = []
    for node in column_nodes:
        name = identifier_name(node.this if isinstance(node, exp.Column) else node)
        position = table.column_index(name)
        if position is None:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" of relation "{table.name}" does not exist')
        if position in positions:
            raise SqlError(errors.DUPLICATE_COLUMN, f'column "{name}" specified more than once')
        positions.append(position)
    return positions


def _values_row(table: TableDef, positions: list[int], tuple_node: exp.Expression, explicit: bool):
    value_nodes = tuple_node.expressions if isinstance(tuple_node, exp.Tuple) else [tuple_node]
    if len(value_nodes) > len(positions):
        raise SqlError(errors.SYNTAX_ERROR, "INSERT has more expressions than target columns")
    if len(value_nodes) < len(positions) and explicit:
        raise SqlError(errors.SYNTAX_ERROR, "INSERT has more target columns than expressions")
    compiler = Compiler(EMPTY_SCOPE, "VALUES")
    typed = []
    for node in value_nodes:
        compiled = _compile_value(compiler, node)
        typed.append((compiled.evaluate(()), compiled.sql_type))
    return typed


def _compile_value(compiler: Compiler, node: exp.Expression) -> Compiled:
    if isinstance(node, exp.Var) and node.name.upper() == "DEFAULT":
        return constant(None, types.NULL)  # no column defaults exist: DEFAULT is NULL
    if contains_aggregate(node):
        raise SqlError(errors.GROUPING_ERROR, f"aggregate functions are not allowed in {compiler.clause}")
    return compiler.compile(node)


def _build_row(table: TableDef, positions: Sequence[int], typed: Sequence[tuple[Any, types.SqlType]]) -> list:
    row: list[Any] = [None] * len(table.columns)
    for position, (value, sql_type) in zip(positions, typed):
        column = table.columns[position]
        row[position] = types.assign(value, sql_type, column.sql_type, column.name)
    _check_not_null(table, row)
    return row


def _check_not_null(table: TableDef, row: Sequence[Any]) -> None:
    for column, value in zip(table.columns, row):
        if value is None and column.not_null:
            raise SqlError(errors.NOT_NULL_VIOLATION,
                           f'null value in column "{column.name}" of relation "{table.name}" violates not-null constraint',
                           detail=f"Failing row contains ({_format_values(row)}).")


def _duplicate_key(table: TableDef, row: Sequence[Any]) -> SqlError:
    names = ", ".join(table.columns[p].name for p in table.primary_key)
    values = _format_values(table.primary_key_values(row))
    return SqlError(errors.UNIQUE_VIOLATION,
                    f'duplicate key value violates unique constraint "{table.constraint_name}"',
                    detail=f"Key ({names})=({values}) already exists.")


def _format_values(values: Sequence[Any]) -> str:
    return ", ".join("null" if v is None else types.format_value(v) for v in values)


# --- UPDATE / DELETE ----------------------------------------------------------------------
async def _matching_rows(txn: Transaction, table: TableDef, where: exp.Where | None, scope: Scope):
    condition = Compiler(scope, "WHERE").compile_condition(where.this) if where is not None else None
    matched: list[tuple[bytes, tuple]] = []
    async for key, row in read_rows(txn, table, plan_for(txn, table, where)):
        if condition is None or condition.evaluate(row) is True:
            if len(matched) >= limits.TXN_ROWS_MAX:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"transaction exceeds the limit of {limits.TXN_ROWS_MAX} modified rows",
                               hint="Split the change into several smaller transactions.")
            matched.append((key, row))
    return matched


_UPDATE_ARGS = {"this", "expressions", "where"}


async def run_update(txn: Transaction, update: exp.Update) -> StatementResult:
    _reject_unknown_args(update, _UPDATE_ARGS, "UPDATE")
    system_views.reject_write(update.this, "UPDATE")
    table = await require_table(txn, update.this)
    scope = table_scope(table, update.this)
    compiler = Compiler(scope, "UPDATE")
    assignments: list[tuple[int, Compiled]] = []
    for assignment in update.expressions:
        if not isinstance(assignment, exp.EQ) or not isinstance(assignment.this, exp.Column):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of UPDATE ... SET is not supported")
        name = identifier_name(assignment.this.this)
        position = table.column_index(name)
        if position is None:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" of relation "{table.name}" does not exist')
        if any(existing == position for existing, _ in assignments):
            raise SqlError(errors.SYNTAX_ERROR, f'multiple assignments to same column "{name}"')
        assignments.append((position, _compile_value(compiler, assignment.expression)))
    matched = await _matching_rows(txn, table, update.args.get("where"), scope)
    for key, row in matched:
        new_row = list(row)
        for position, compiled in assignments:
            column = table.columns[position]
            new_row[position] = types.assign(compiled.evaluate(row), compiled.sql_type, column.sql_type, column.name)
        _check_not_null(table, new_row)
        new_key = table.row_key(new_row)
        if new_key != key:
            txn.put(key, None)
            if await txn.get(new_key) is not None:
                raise _duplicate_key(table, new_row)
        txn.put(new_key, keys.encode_row(new_row))
    if matched:
        txn.lock(table.catalog_key)
    return StatementResult.tag(f"UPDATE {len(matched)}")


_DELETE_ARGS = {"this", "where", "using", "cluster"}


async def run_delete(txn: Transaction, delete: exp.Delete) -> StatementResult:
    _reject_unknown_args(delete, _DELETE_ARGS, "DELETE")
    if delete.args.get("using"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "DELETE ... USING is not supported")
    system_views.reject_write(delete.this, "DELETE")
    table = await require_table(txn, delete.this)
    scope = table_scope(table, delete.this)
    matched = await _matching_rows(txn, table, delete.args.get("where"), scope)
    for key, _ in matched:
        txn.put(key, None)
    if matched:
        txn.lock(table.catalog_key)
    return StatementResult.tag(f"DELETE {len(matched)}")


# --- DDL ---------------------------------------------------------------------------------
_CREATE_ARGS = {"this", "kind", "exists", "replace", "refresh", "unique", "concurrently"}


async def run_create(txn: Transaction, create: exp.Create) -> StatementResult:
    kind = str(create.args.get("kind") or "").upper()
    if kind != "TABLE":
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"CREATE {kind or 'this object'} is not supported")
    if create.args.get("replace") or create.args.get("properties") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of CREATE TABLE is not supported")
    _reject_unknown_args(create, _CREATE_ARGS, "CREATE TABLE")
    schema = create.this
    system_views.reject_write(schema.this if isinstance(schema, exp.Schema) else schema, "CREATE TABLE")
    name = table_name(schema.this if isinstance(schema, exp.Schema) else schema)
    table_from_create(create, 1)  # validate the definition before reading anything
    if await load_table(txn, name) is not None:
        if create.args.get("exists"):
            return StatementResult.tag("CREATE TABLE")  # PostgreSQL: NOTICE relation already exists, skipping
        raise SqlError(errors.DUPLICATE_TABLE, f'relation "{name}" already exists')
    counter = await txn.get(keys.TABLE_ID_COUNTER_KEY)
    last_table_id = int.from_bytes(counter, "big") if counter is not None else 0
    if last_table_id >= keys.TABLE_ID_MAX:
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, "no table ids left")
    table = table_from_create(create, last_table_id + 1)
    txn.put(keys.TABLE_ID_COUNTER_KEY, table.table_id.to_bytes(8, "big"))
    txn.put(table.catalog_key, table.encode())
    txn.tables[name] = table
    return StatementResult.tag("CREATE TABLE")


async def run_drop(txn: Transaction, drop: exp.Drop) -> StatementResult:
    kind = str(drop.args.get("kind") or "").upper()
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
            if drop.args.get("exists"):
                continue  # PostgreSQL: NOTICE table does not exist, skipping
            raise SqlError(errors.UNDEFINED_TABLE, f'table "{name}" does not exist')
        dropped.append(table)
    for table in dropped:
        txn.put(table.catalog_key, None)
        txn.tables[table.name] = None
    return StatementResult.tag("DROP TABLE")


def _reject_unknown_args(node: exp.Expression, allowed: set[str], statement: str) -> None:
    for key, value in node.args.items():
        if key not in allowed and value not in (None, False, [], ""):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"{key.rstrip('_').upper()} in {statement} is not supported")
