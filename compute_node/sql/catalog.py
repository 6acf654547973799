"""Table definitions and how they are stored in the key-value catalog.

The catalog lives in the same keyspace as the data (quorumdb/keys.py): one key per
table name under the system prefix holds the table's definition as JSON, and a
counter key holds the last table id handed out. A transaction reads them at its
start_ts through its own write buffer, and DDL writes them through that buffer, so
CREATE/DROP TABLE commit (or roll back) with the transaction and replicate like any
other write. Two transactions that both create tables both write the counter key,
so the adjudicator lets only the first commit (OCC). A transaction that writes rows
of a table also locks the table's catalog key, so a concurrent DROP/CREATE of that
table makes one of them fail with 40001 instead of writing rows to a dead table id.

Every table needs a PRIMARY KEY: a table without one is rejected with 0A000 (rows are
stored under their primary key; there is no hidden rowid).

DROP TABLE deletes only the catalog key; the rows under the old table id become
unreachable and stay in storage (garbage collection of dropped tables is missing).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from sqlglot import exp

from compute_node.sql import types
from compute_node.sql.types import SqlType
from quorumdb import errors, keys
from quorumdb.errors import SqlError


@dataclasses.dataclass(frozen=True)
class ColumnDef:
    name: str
    sql_type: SqlType
    not_null: bool


@dataclasses.dataclass(frozen=True)
class TableDef:
    table_id: int
    name: str
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[int, ...]  # column positions, in key order

    def __post_init__(self):
        assert self.primary_key, "every table has a primary key"
        assert len(set(self.primary_key)) == len(self.primary_key)

    @property
    def constraint_name(self) -> str:
        return f"{self.name}_pkey"

    def column_index(self, name: str) -> int | None:
        for index, column in enumerate(self.columns):
            if column.name == name:
                return index
        return None

    def primary_key_values(self, row: Sequence[Any]) -> tuple:
        return tuple(row[index] for index in self.primary_key)

    def row_key(self, row: Sequence[Any]) -> bytes:
        return keys.row_key(self.table_id, self.primary_key_values(row))

    @property
    def rows_prefix(self) -> bytes:
        return keys.table_prefix(self.table_id)

    @property
    def catalog_key(self) -> bytes:
        return keys.catalog_table_key(self.name)

    def encode(self) -> bytes:
        return json.dumps({
            "table_id": self.table_id,
            "name": self.name,
            "columns": [{"name": c.name, "type": c.sql_type.to_json(), "not_null": c.not_null} for c in self.columns],
            "primary_key": list(self.primary_key),
        }, sort_keys=True).encode("utf-8")

    @staticmethod
    def decode(data: bytes) -> "TableDef":
        doc = json.loads(data.decode("utf-8"))
        columns = tuple(ColumnDef(c["name"], SqlType.from_json(c["type"]), c["not_null"]) for c in doc["columns"])
        return TableDef(doc["table_id"], doc["name"], columns, tuple(doc["primary_key"]))


def identifier_name(identifier: exp.Expression) -> str:
    """PostgreSQL folds unquoted identifiers to lower case and keeps quoted ones."""
    if isinstance(identifier, exp.Identifier):
        return identifier.this if identifier.quoted else identifier.this.lower()
    return identifier.name.lower()


def table_name(table: exp.Table) -> str:
    """The name of a table reference; only the `public` schema exists."""
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this kind of table reference is not supported")
    name = identifier_name(table.this)
    if table.args.get("catalog") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "cross-database references are not implemented")
    schema = table.args.get("db")
    if schema is not None and identifier_name(schema) != "public":
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{identifier_name(schema)}.{name}" does not exist')
    return name


def table_from_create(create: exp.Create, table_id: int) -> TableDef:
    """Builds a TableDef from CREATE TABLE (validation only; nothing is written)."""
    schema = create.this
    if not isinstance(schema, exp.Schema):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "CREATE TABLE without a column list is not supported")
    name = table_name(schema.this)
    if create.args.get("expression") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "CREATE TABLE AS is not supported")
    columns: list[ColumnDef] = []
    primary_key: list[int] | None = None
    pending_not_null: set[str] = set()
    for element in schema.expressions:
        if isinstance(element, exp.ColumnDef):
            column, is_primary = _column_from_def(element, name)
            if any(c.name == column.name for c in columns):
                raise SqlError(errors.DUPLICATE_COLUMN, f'column "{column.name}" specified more than once')
            columns.append(column)
            if is_primary:
                primary_key = _set_primary_key(primary_key, [len(columns) - 1], name)
        elif isinstance(element, exp.PrimaryKey):
            positions = []
            for key_part in element.expressions:
                part_name = identifier_name(key_part.this if isinstance(key_part, (exp.Ordered, exp.Column)) else key_part)
                pending_not_null.add(part_name)
                positions.append(part_name)
            primary_key = _set_primary_key(primary_key, positions, name)
        else:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"table constraint {element.sql(dialect='postgres')} is not supported")
    if not columns:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "tables without columns are not supported")
    if primary_key is None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       f'tables without a primary key are not supported (table "{name}")',
                       hint="Add a PRIMARY KEY to the table definition.")
    resolved: list[int] = []
    for part in primary_key:
        if isinstance(part, int):
            resolved.append(part)
            continue
        index = next((i for i, c in enumerate(columns) if c.name == part), None)
        if index is None:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{part}" named in key does not exist')
        if index in resolved:
            raise SqlError(errors.DUPLICATE_COLUMN, f'column "{part}" appears twice in primary key constraint')
        resolved.append(index)
    for index in resolved:  # primary-key columns are implicitly NOT NULL
        columns[index] = dataclasses.replace(columns[index], not_null=True)
    return TableDef(table_id, name, tuple(columns), tuple(resolved))


def _set_primary_key(current, positions, table: str):
    if current is not None:
        raise SqlError(errors.INVALID_TABLE_DEFINITION,
                       f'multiple primary keys for table "{table}" are not allowed')
    return positions


def _column_from_def(element: exp.ColumnDef, table: str) -> tuple[ColumnDef, bool]:
    name = identifier_name(element.this)
    kind = element.args.get("kind")
    if kind is None:
        raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{name}"')
    sql_type = types.type_from_sqlglot(kind)
    not_null = False
    is_primary = False
    for constraint in element.constraints:
        constraint_kind = constraint.kind
        if isinstance(constraint_kind, exp.PrimaryKeyColumnConstraint):
            is_primary = True
        elif isinstance(constraint_kind, exp.NotNullColumnConstraint):
            if constraint_kind.args.get("allow_null"):
                continue  # an explicit NULL constraint: nullable, the default
            not_null = True
        else:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"column constraint {constraint.sql(dialect='postgres')} is not supported")
    return ColumnDef(name, sql_type, not_null), is_primary
