"""Read-only information_schema views (and pg_catalog's relations) built from the stored catalog (pure, no I/O).

Theory of operation
-------------------
`information_schema.tables`, `.columns` and `.key_column_usage` are not stored: a
SELECT from one of them has the executor read every table definition (the catalog
keys under keys.CATALOG_TABLE_PREFIX) at the transaction's start_ts, merged with the
transaction's write buffer, and `view_rows` turns those definitions into rows. So a
view is a consistent snapshot, sees the transaction's own uncommitted CREATE/DROP
TABLE, and costs one catalog scan per statement. The rows then go through the normal
SELECT program (WHERE, ORDER BY, projections, aggregates, LIMIT); there is no access
planning (a view is always read whole).

The same machinery serves pg_catalog: `CATALOG_VIEWS` are pg_catalog.py's relations
(pg_class, pg_attribute, ...), built from the same definitions plus the session's
ClientInfo, and select.fetch hands that catalog snapshot to the catalog functions too.

Only the `public` schema holds user tables and `information_schema` is not on the
search path: an unqualified `tables` or `columns` names a user table, as in
PostgreSQL; pg_catalog is searched first, so an unqualified `pg_class` is the catalog's. Writing to a view (INSERT/UPDATE/DELETE) is 0A000 and DROP/CREATE in
information_schema is 42809, with PostgreSQL-like messages.

Column types follow PostgreSQL's information_schema domains: sql_identifier -> text,
character_data / yes_or_no -> character varying, cardinal_number -> integer.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from sqlglot import exp

from compute_node.sql import pg_catalog, types
from compute_node.sql.catalog import TableDef, identifier_name
from compute_node.sql.types import Kind, SqlType
from quorumdb import errors
from quorumdb.errors import SqlError

SCHEMA_NAME = "information_schema"
USER_SCHEMA = "public"
# What table_catalog reports: the one database a cluster serves (qsql's default dbname).
DATABASE_NAME = "quorumdb"
WRONG_OBJECT_TYPE = errors.WRONG_OBJECT_TYPE  # PostgreSQL's wrong_object_type (not in quorumdb/errors.py, which we do not own)

_IDENTIFIER = types.TEXT                     # sql_identifier
_CHARACTER_DATA = SqlType(Kind.VARCHAR)      # character_data
_YES_OR_NO = SqlType(Kind.VARCHAR, 3)        # yes_or_no
_CARDINAL = types.INTEGER                    # cardinal_number


@dataclasses.dataclass(frozen=True)
class SystemView:
    name: str
    columns: tuple[tuple[str, SqlType], ...]
    build: Callable[[Sequence[TableDef]], list[tuple]]
    of_snapshot: bool = False   # build takes the whole pg_catalog.Snapshot (sequences too)


def _tables_rows(tables: Sequence[TableDef]) -> list[tuple]:
    return [(DATABASE_NAME, USER_SCHEMA, table.name, "BASE TABLE") for table in tables]


def _columns_rows(tables: Sequence[TableDef]) -> list[tuple]:
    rows = []
    for table in tables:
        for position, column in enumerate(table.visible_columns, start=1):
            sql_type = column.sql_type
            max_length = sql_type.length if sql_type.kind in (Kind.VARCHAR, Kind.CHAR) else None
            # An identity column's sequence is no default to PostgreSQL: is_identity says it instead.
            rows.append((DATABASE_NAME, USER_SCHEMA, table.name, column.name, position,
                         sql_type.kind.value, "NO" if column.not_null else "YES", max_length,
                         column.default if column.identity is None else None,
                         sql_type.precision, sql_type.scale if sql_type.precision is not None else None,
                         "NO" if column.identity is None else "YES",
                         None if column.identity is None else column.identity.upper()))
    return rows


def _table_constraints_rows(tables: Sequence[TableDef]) -> list[tuple]:
    rows = []
    for table in tables:
        if not table.has_rowid:
            rows.append((DATABASE_NAME, USER_SCHEMA, table.constraint_name, USER_SCHEMA, table.name, "PRIMARY KEY"))
        for index in table.indexes:
            if index.constraint:
                rows.append((DATABASE_NAME, USER_SCHEMA, index.name, USER_SCHEMA, table.name, "UNIQUE"))
        for check in table.checks:
            rows.append((DATABASE_NAME, USER_SCHEMA, check.name, USER_SCHEMA, table.name, "CHECK"))
    return rows


def _check_constraints_rows(tables: Sequence[TableDef]) -> list[tuple]:
    return [(DATABASE_NAME, USER_SCHEMA, check.name, check.sql) for table in tables for check in table.checks]


def _key_column_usage_rows(tables: Sequence[TableDef]) -> list[tuple]:
    rows = []
    for table in tables:
        if table.has_rowid:
            continue
        for key_position, column_index in enumerate(table.primary_key, start=1):
            rows.append((DATABASE_NAME, USER_SCHEMA, table.constraint_name, DATABASE_NAME, USER_SCHEMA,
                         table.name, table.columns[column_index].name, key_position, None))
    return rows


_SEQUENCE_PRECISION = {"smallint": 16, "integer": 32, "bigint": 64}


def _sequences_rows(snapshot: pg_catalog.Snapshot) -> list[tuple]:
    """As PostgreSQL's view: not the sequences of identity columns (the standard counts those as
    part of their column)."""
    rows = []
    for sequence in snapshot.sequences:
        if pg_catalog.is_identity_sequence(sequence, snapshot.tables):
            continue
        data_type = pg_catalog.sequence_type(sequence, snapshot.tables)
        rows.append((DATABASE_NAME, USER_SCHEMA, sequence.name, data_type, _SEQUENCE_PRECISION[data_type], 2, 0,
                     str(sequence.start), str(sequence.min_value), str(sequence.max_value), str(sequence.increment),
                     "NO"))
    return rows


VIEWS: dict[str, SystemView] = {view.name: view for view in (
    SystemView("tables", (
        ("table_catalog", _IDENTIFIER), ("table_schema", _IDENTIFIER), ("table_name", _IDENTIFIER),
        ("table_type", _CHARACTER_DATA),
    ), _tables_rows),
    SystemView("columns", (
        ("table_catalog", _IDENTIFIER), ("table_schema", _IDENTIFIER), ("table_name", _IDENTIFIER),
        ("column_name", _IDENTIFIER), ("ordinal_position", _CARDINAL), ("data_type", _CHARACTER_DATA),
        ("is_nullable", _YES_OR_NO), ("character_maximum_length", _CARDINAL),
        ("column_default", _CHARACTER_DATA), ("numeric_precision", _CARDINAL), ("numeric_scale", _CARDINAL),
        ("is_identity", _YES_OR_NO), ("identity_generation", _CHARACTER_DATA),
    ), _columns_rows),
    SystemView("table_constraints", (
        ("constraint_catalog", _IDENTIFIER), ("constraint_schema", _IDENTIFIER), ("constraint_name", _IDENTIFIER),
        ("table_schema", _IDENTIFIER), ("table_name", _IDENTIFIER), ("constraint_type", _CHARACTER_DATA),
    ), _table_constraints_rows),
    SystemView("check_constraints", (
        ("constraint_catalog", _IDENTIFIER), ("constraint_schema", _IDENTIFIER), ("constraint_name", _IDENTIFIER),
        ("check_clause", _CHARACTER_DATA),
    ), _check_constraints_rows),
    SystemView("key_column_usage", (
        ("constraint_catalog", _IDENTIFIER), ("constraint_schema", _IDENTIFIER),
        ("constraint_name", _IDENTIFIER), ("table_catalog", _IDENTIFIER), ("table_schema", _IDENTIFIER),
        ("table_name", _IDENTIFIER), ("column_name", _IDENTIFIER), ("ordinal_position", _CARDINAL),
        ("position_in_unique_constraint", _CARDINAL),
    ), _key_column_usage_rows),
    SystemView("sequences", (
        ("sequence_catalog", _IDENTIFIER), ("sequence_schema", _IDENTIFIER), ("sequence_name", _IDENTIFIER),
        ("data_type", _CHARACTER_DATA), ("numeric_precision", _CARDINAL), ("numeric_precision_radix", _CARDINAL),
        ("numeric_scale", _CARDINAL), ("start_value", _CHARACTER_DATA), ("minimum_value", _CHARACTER_DATA),
        ("maximum_value", _CHARACTER_DATA), ("increment", _CHARACTER_DATA), ("cycle_option", _YES_OR_NO),
    ), _sequences_rows, of_snapshot=True),
)}


# pg_catalog's relations (compute_node/sql/pg_catalog.py). pg_catalog is searched first, as in
# PostgreSQL, so `pg_class` names pg_catalog.pg_class unqualified.
CATALOG_SCHEMA = "pg_catalog"
CATALOG_VIEWS = pg_catalog.CATALOG_RELATIONS


def schema_of(table: exp.Expression) -> str | None:
    """The schema a table reference names (folded like any identifier), or None."""
    if not isinstance(table, exp.Table):
        return None
    schema = table.args.get("db")
    return identifier_name(schema) if schema is not None else None


def is_system_reference(table: exp.Expression) -> bool:
    if not isinstance(table, exp.Table) or table.args.get("catalog") is not None:
        return False
    schema = schema_of(table)
    if schema in (SCHEMA_NAME, CATALOG_SCHEMA):
        return True
    return schema is None and isinstance(table.this, exp.Identifier) and view_name(table) in CATALOG_VIEWS


def view_name(table: exp.Table) -> str:
    return identifier_name(table.this) if isinstance(table.this, exp.Identifier) else table.name.lower()


def resolve_view(table: exp.Table) -> SystemView:
    """The view `information_schema.<name>` names; 42P01 for one that does not exist."""
    assert is_system_reference(table)
    name = view_name(table)
    schema = schema_of(table) or CATALOG_SCHEMA
    view = (VIEWS if schema == SCHEMA_NAME else CATALOG_VIEWS).get(name)
    if view is None:
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{schema}.{name}" does not exist')
    return view


def view_rows(view: "SystemView | pg_catalog.CatalogRelation", snapshot: pg_catalog.Snapshot) -> list[tuple[Any, ...]]:
    """The view's rows over the snapshot's definitions (in name order), each the width of view.columns."""
    if isinstance(view, pg_catalog.CatalogRelation):
        return pg_catalog.relation_rows(view, snapshot)
    rows = view.build(snapshot if view.of_snapshot else snapshot.tables)
    assert all(len(row) == len(view.columns) for row in rows), f"{view.name} row width"
    return rows


def reject_write(table: exp.Expression, statement: str) -> None:
    """0A000/42809 if `statement` (INSERT, UPDATE, DELETE, CREATE TABLE, DROP TABLE) targets information_schema."""
    if not is_system_reference(table):
        return
    name = view_name(table)
    if statement in ("INSERT", "UPDATE", "DELETE"):
        verb = {"INSERT": "insert into", "UPDATE": "update", "DELETE": "delete from"}[statement]
        resolve_view(table)  # 42P01 for a view that does not exist
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'cannot {verb} view "{name}"',
                       detail="information_schema views are read-only; they show the catalog.")
    if statement == "DROP TABLE":
        if name not in VIEWS:
            raise SqlError(errors.UNDEFINED_TABLE, f'table "{SCHEMA_NAME}.{name}" does not exist')
        raise SqlError(WRONG_OBJECT_TYPE, f'"{name}" is not a table',
                       detail="information_schema views are read-only system views.")
    raise SqlError(WRONG_OBJECT_TYPE,
                   f'{statement} in schema "{SCHEMA_NAME}" is not allowed: it holds only read-only system views')
