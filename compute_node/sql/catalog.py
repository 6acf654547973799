"""Table and index definitions and how they are stored in the key-value catalog.

The catalog lives in the same keyspace as the data (quorumdb/keys.py): one key per
table name under the system prefix holds the table's definition as JSON (columns,
primary key, defaults, CHECK constraints and secondary indexes), one key per index
name holds the name of its table, and a counter key holds the last table/index id
handed out. A transaction reads them at its start_ts through its own write buffer,
and DDL writes them through that buffer, so DDL commits (or rolls back) with the
transaction and replicates like any other write. Two transactions that both create
tables or indexes both write the counter key, so the adjudicator lets only the
first commit (OCC).

Schema changes and transactions: every transaction that reads a table definition
locks its catalog key (executor.load_table). A transaction that used a definition
which another transaction changed after its start_ts therefore cannot commit; the
session reports that as 40001 with code OC001, as DSQL does.

Rows are stored by physical *slot*: ADD COLUMN appends a slot (rows written before
hold fewer values and read the column's `missing` value, the DEFAULT evaluated when
the column was added, as PostgreSQL's attmissingval); DROP COLUMN removes the
column from the definition but leaves its slot in old rows, so neither rewrites a
row. Definitions written before slots existed decode with slot = position.

A table without a PRIMARY KEY gets a hidden bigint column, ROWID_COLUMN (ColumnDef.hidden),
and that column is its primary key: rows are keyed by it like any other key, so indexes,
UPDATE and DELETE need nothing special. TableDef.has_rowid says so; visible_columns is what
`*`, INSERT's default column list and the catalog views show. The ids are drawn per
transaction from a random start (bulk.py explains why there is no central counter).
Definitions written before this existed always had a primary key and decode unchanged.

A serial or identity column names its owned sequence (ColumnDef.sequence; its DEFAULT is
nextval of it) and identity columns say ALWAYS or BY DEFAULT (ColumnDef.identity). A
sequence's options live under keys.catalog_sequence_key(name) (bulk.SequenceDef), its value
under keys.sequence_state_key(id), outside every ordinary commit (sequences.py).

TRUNCATE and ALTER TABLE ADD PRIMARY KEY give a table new ids (a new keyspace) taken from a
separate counter by a small transaction of their own, so that no other transaction can
ever write there (bulk.py: the bulk path). While ADD PRIMARY KEY copies a table that others
may write, the definition carries `rewrite_by` (the rewriting transaction) so that writers
fail with 40001 instead of writing rows the copy would miss.

DROP TABLE deletes the catalog keys (and the table's owned sequences); the rows and index
entries under the old ids become unreachable and stay in storage (garbage collection of them
is missing), as do those of the keyspaces TRUNCATE and rewrites leave behind.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import struct
from typing import Any, Sequence

from sqlglot import exp

from compute_node.sql import types
from compute_node.sql.interval import Interval
from compute_node.sql.types import SqlType
from quorumdb import errors, keys, limits
from quorumdb.errors import SqlError

# The hidden key column of a table created without a PRIMARY KEY. Like PostgreSQL's system
# columns (ctid) it may be named in a query but never appears in `*`, the catalog views or
# INSERT's default column list, and no user column may take its name.
ROWID_COLUMN = "quorumdb_rowid"


@dataclasses.dataclass(frozen=True)
class ColumnDef:
    name: str
    sql_type: SqlType
    not_null: bool
    default: str | None = None   # SQL text of the DEFAULT expression
    slot: int = -1               # physical position in stored rows; -1: the logical position
    missing: str | None = None   # hex of keys.encode_row([value]) for rows older than the column
    hidden: bool = False         # the row id of a table without a primary key (ROWID_COLUMN)
    identity: str | None = None  # 'always' / 'by default' for GENERATED ... AS IDENTITY
    sequence: str | None = None  # the sequence this column owns (serial, identity): dropped with it

    def missing_value(self) -> Any:
        if self.missing is None:
            return None
        return stored_value(keys.decode_row(bytes.fromhex(self.missing))[0], self.sql_type)

    def encode_missing(self, value: Any) -> str:
        return keys.encode_row([storable_value(value, self.sql_type)]).hex()


# Interval values are kept in rows as PostgreSQL's 16-byte binary form (microseconds, days,
# months): the row codec (quorumdb/keys.py, shared with storage) stays free of SQL types.
def storable_value(value: Any, sql_type: SqlType) -> Any:
    if sql_type.kind is types.Kind.INTERVAL and value is not None:
        return struct.pack(">qii", value.micros, value.days, value.months)
    return value


def stored_value(value: Any, sql_type: SqlType) -> Any:
    if sql_type.kind is types.Kind.INTERVAL and isinstance(value, bytes):  # (a missing value is decoded already)
        micros, days, months = struct.unpack(">qii", value)
        return Interval(months, days, micros)
    return value


@dataclasses.dataclass(frozen=True)
class IndexDef:
    name: str
    index_id: int
    columns: tuple[str, ...]
    unique: bool
    constraint: bool = False     # created by a UNIQUE constraint (not CREATE INDEX)
    descending: tuple[bool, ...] = ()
    # The id its catalog oid comes from (pg_catalog.py), kept when the entries move to a private
    # keyspace (TRUNCATE, rewrites, a build flushed ahead), whose ids do not fit an oid; -1: index_id.
    oid_id: int = -1

    @property
    def catalog_id(self) -> int:
        return self.oid_id if self.oid_id >= 0 else self.index_id

    @property
    def prefix(self) -> bytes:
        return keys.index_prefix(self.index_id)


@dataclasses.dataclass(frozen=True)
class CheckDef:
    name: str
    sql: str                     # the boolean expression, PostgreSQL dialect


@dataclasses.dataclass(frozen=True)
class TableDef:
    table_id: int
    name: str
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[int, ...]  # column positions, in key order
    indexes: tuple[IndexDef, ...] = ()
    checks: tuple[CheckDef, ...] = ()
    slot_count: int = -1          # physical slots in stored rows; -1: len(columns)
    # Set (by a small transaction of its own) while ALTER TABLE ... ADD PRIMARY KEY copies the
    # table: the rewriting transaction's id and its start_ts; others' writes fail with 40001.
    rewrite_by: str | None = None
    rewrite_ts: int = 0
    primary_key_name: str | None = None  # CONSTRAINT name PRIMARY KEY; None: <table>_pkey
    # The id its catalog oids come from: the table_id it was created with. TRUNCATE and rewrites
    # move its rows to private ids (too large for an oid), but a table keeps its oid, as in
    # PostgreSQL, where TRUNCATE gives a new relfilenode and keeps the oid. -1: table_id.
    oid_id: int = -1

    @property
    def catalog_id(self) -> int:
        return self.oid_id if self.oid_id >= 0 else self.table_id

    def __post_init__(self):
        assert self.primary_key, "every table has a key: its primary key or the hidden row id"
        assert len(set(self.primary_key)) == len(self.primary_key)
        assert all(0 <= p < len(self.columns) for p in self.primary_key)
        hidden = [p for p, c in enumerate(self.columns) if c.hidden]
        assert len(hidden) <= 1, "at most one hidden row id"
        assert not hidden or self.primary_key == tuple(hidden), "the hidden row id is the whole key"
        # Keys are ordered byte strings (quorumdb/keys.py) with no encoding for intervals, whose
        # order (30-day months) would also need one that equal values ('1 mon', '30 days') share.
        key_columns = [self.columns[p] for p in self.primary_key] + [
            column for index in self.indexes for column in self.columns if column.name in index.columns]
        for column in key_columns:
            if column.sql_type.kind is types.Kind.INTERVAL:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                               f'column "{column.name}" of type interval cannot be part of a key or an index')

    @functools.cached_property
    def _interval_positions(self) -> tuple[int, ...]:
        return tuple(p for p, column in enumerate(self.columns) if column.sql_type.kind is types.Kind.INTERVAL)

    @functools.cached_property
    def has_rowid(self) -> bool:
        """True when the table has no PRIMARY KEY: rows are keyed by the hidden row id."""
        return self.columns[self.primary_key[0]].hidden

    @property
    def rowid_position(self) -> int | None:
        return self.primary_key[0] if self.has_rowid else None

    @property
    def visible_columns(self) -> tuple[ColumnDef, ...]:
        """The columns SELECT *, INSERT without a column list and the catalog views show."""
        return tuple(c for c in self.columns if not c.hidden)

    @property
    def visible_positions(self) -> tuple[int, ...]:
        return tuple(p for p, c in enumerate(self.columns) if not c.hidden)

    @property
    def constraint_name(self) -> str:
        return self.primary_key_name or f"{self.name}_pkey"

    @property
    def physical_slots(self) -> int:
        return self.slot_count if self.slot_count >= 0 else len(self.columns)

    def column_slot(self, position: int) -> int:
        slot = self.columns[position].slot
        return slot if slot >= 0 else position

    @functools.cached_property  # read for every row encoded or decoded; definitions are immutable
    def identity_layout(self) -> bool:
        return self.physical_slots == len(self.columns) and all(
            self.column_slot(i) == i for i in range(len(self.columns)))

    def column_index(self, name: str) -> int | None:
        for index, column in enumerate(self.columns):
            if column.name == name:
                return index
        return None

    def index_positions(self, index: IndexDef) -> tuple[int, ...]:
        positions = tuple(self.column_index(name) for name in index.columns)
        assert all(p is not None for p in positions), f"index {index.name} names a missing column"
        return positions  # type: ignore[return-value]

    def find_index(self, name: str) -> IndexDef | None:
        return next((index for index in self.indexes if index.name == name), None)

    def primary_key_values(self, row: Sequence[Any]) -> tuple:
        return tuple(row[index] for index in self.primary_key)

    def row_key(self, row: Sequence[Any]) -> bytes:
        return keys.row_key(self.table_id, self.primary_key_values(row))

    def key_for_primary_key(self, values: Sequence[Any]) -> bytes:
        return keys.row_key(self.table_id, values)

    @property
    def rows_prefix(self) -> bytes:
        return keys.table_prefix(self.table_id)

    @property
    def catalog_key(self) -> bytes:
        return keys.catalog_table_key(self.name)

    # --- rows ---------------------------------------------------------------------
    def encode_row(self, row: Sequence[Any]) -> bytes:
        assert len(row) == len(self.columns)
        if self._interval_positions:
            row = [storable_value(value, column.sql_type) for value, column in zip(row, self.columns)]
        if self.identity_layout:
            return keys.encode_row(row)
        physical: list[Any] = [None] * self.physical_slots
        for position, value in enumerate(row):
            physical[self.column_slot(position)] = value
        return keys.encode_row(physical)

    def decode_row(self, data: bytes) -> tuple:
        row = self._decode_stored(data)
        if self._interval_positions:
            row = tuple(stored_value(value, column.sql_type) if position in self._interval_positions else value
                        for position, (value, column) in enumerate(zip(row, self.columns)))
        return row

    def _decode_stored(self, data: bytes) -> tuple:
        stored = keys.decode_row(data)
        if len(stored) == len(self.columns) and self.identity_layout:
            return stored
        assert len(stored) <= self.physical_slots, f"row of {self.name} has {len(stored)} values"
        out = []
        for position, column in enumerate(self.columns):
            slot = self.column_slot(position)
            out.append(stored[slot] if slot < len(stored) else column.missing_value())
        return tuple(out)

    # --- index entries ------------------------------------------------------------------
    def index_entry(self, index: IndexDef, row: Sequence[Any]) -> tuple[bytes, bytes]:
        """(key, value) of the entry `row` has in `index`; the value is the encoded primary key."""
        values = tuple(row[p] for p in self.index_positions(index))
        primary_key = keys.encode_key_tuple(self.primary_key_values(row))
        key = index.prefix + keys.encode_key_tuple(values)
        if not index.unique or any(v is None for v in values):
            key += primary_key
        return key, primary_key

    def index_entries(self, row: Sequence[Any]) -> dict[bytes, bytes]:
        return dict(self.index_entry(index, row) for index in self.indexes)

    # --- JSON ----------------------------------------------------------------------------
    def encode(self) -> bytes:
        doc: dict = {
            "table_id": self.table_id,
            "name": self.name,
            "columns": [_column_json(c) for c in self.columns],
            "primary_key": list(self.primary_key),
        }
        if self.indexes:
            doc["indexes"] = [{"name": i.name, "index_id": i.index_id, "columns": list(i.columns),
                               "unique": i.unique, "constraint": i.constraint, "descending": list(i.descending),
                               **({"oid_id": i.oid_id} if i.oid_id >= 0 else {})}
                              for i in self.indexes]
        if self.checks:
            doc["checks"] = [{"name": c.name, "sql": c.sql} for c in self.checks]
        if self.slot_count >= 0:
            doc["slot_count"] = self.slot_count
        if self.rewrite_by is not None:
            doc["rewrite_by"] = self.rewrite_by
            doc["rewrite_ts"] = self.rewrite_ts
        if self.primary_key_name is not None:
            doc["primary_key_name"] = self.primary_key_name
        if self.oid_id >= 0:
            doc["oid_id"] = self.oid_id
        return json.dumps(doc, sort_keys=True).encode("utf-8")

    @staticmethod
    def decode(data: bytes) -> "TableDef":
        doc = json.loads(data.decode("utf-8"))
        columns = tuple(ColumnDef(c["name"], SqlType.from_json(c["type"]), c["not_null"], c.get("default"),
                                  c.get("slot", -1), c.get("missing"), c.get("hidden", False),
                                  c.get("identity"), c.get("sequence"))
                        for c in doc["columns"])
        indexes = tuple(IndexDef(i["name"], i["index_id"], tuple(i["columns"]), i["unique"], i.get("constraint", False),
                                 tuple(i.get("descending", ())), i.get("oid_id", -1)) for i in doc.get("indexes", ()))
        checks = tuple(CheckDef(c["name"], c["sql"]) for c in doc.get("checks", ()))
        return TableDef(doc["table_id"], doc["name"], columns, tuple(doc["primary_key"]), indexes, checks,
                        doc.get("slot_count", -1), doc.get("rewrite_by"), doc.get("rewrite_ts", 0),
                        doc.get("primary_key_name"), doc.get("oid_id", -1))


def _column_json(column: ColumnDef) -> dict:
    doc: dict = {"name": column.name, "type": column.sql_type.to_json(), "not_null": column.not_null}
    if column.default is not None:
        doc["default"] = column.default
    if column.slot >= 0:
        doc["slot"] = column.slot
    if column.missing is not None:
        doc["missing"] = column.missing
    if column.hidden:
        doc["hidden"] = True
    if column.identity is not None:
        doc["identity"] = column.identity
    if column.sequence is not None:
        doc["sequence"] = column.sequence
    return doc


def identifier_name(identifier: exp.Expression) -> str:
    """PostgreSQL folds unquoted identifiers to lower case and keeps quoted ones."""
    if isinstance(identifier, exp.Identifier):
        return identifier.this if identifier.quoted else identifier.this.lower()
    return identifier.name.lower()


def table_name(table: exp.Expression) -> str:
    """The name of a table reference; only the `public` schema exists."""
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this kind of table reference is not supported")
    name = identifier_name(table.this)
    if table.args.get("catalog") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "cross-database references are not implemented")
    schema = table.args.get("db")
    if schema is not None and identifier_name(schema) != "public":
        raise SqlError(errors.INVALID_SCHEMA_NAME, f'schema "{identifier_name(schema)}" does not exist')
    return name


def unique_name(base: str, taken: set[str]) -> str:
    """PostgreSQL's ChooseRelationName: base, then base1, base2, ..."""
    if base not in taken:
        return base
    for suffix in range(1, 10_000):
        if f"{base}{suffix}" not in taken:
            return f"{base}{suffix}"
    raise AssertionError("no free name")


@dataclasses.dataclass
class CreateSpec:
    """What CREATE TABLE asks for, before ids are handed out."""
    table: TableDef                               # with table_id 1 and no indexes
    unique_constraints: list[tuple[str | None, tuple[str, ...]]]  # (explicit name, columns)
    check_nodes: list[tuple[str, exp.Expression]]
    default_nodes: dict[int, exp.Expression]
    # serial and identity columns: (column position, sequence options from the definition)
    sequences: list[tuple[int, dict]] = dataclasses.field(default_factory=list)


def table_from_create(create: exp.Create, table_id: int = 1) -> TableDef:
    """The definition CREATE TABLE describes, without its secondary indexes (nothing is written)."""
    return create_spec(create, table_id).table


def create_spec(create: exp.Create, table_id: int = 1) -> CreateSpec:
    """Validates CREATE TABLE and builds the definition (nothing is written)."""
    schema = create.this
    if create.args.get("expression") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "CREATE TABLE AS is not supported")
    if not isinstance(schema, exp.Schema):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "CREATE TABLE without a column list is not supported")
    name = table_name(schema.this)
    columns: list[ColumnDef] = []
    primary_key: list | None = None
    primary_key_name: str | None = None
    uniques: list[tuple[str | None, tuple[str, ...]]] = []
    checks: list[tuple[str | None, exp.Expression, str | None]] = []  # (explicit name, expr, column)
    defaults: dict[int, exp.Expression] = {}
    sequences: list[tuple[int, dict]] = []
    for element in schema.expressions:
        if isinstance(element, exp.ColumnDef):
            position = len(columns)
            column, is_primary = _column_from_def(element, name, uniques, checks, defaults, position, sequences)
            if column.name == ROWID_COLUMN:
                raise SqlError(errors.DUPLICATE_COLUMN,
                               f'column name "{column.name}" conflicts with a system column name')
            if any(c.name == column.name for c in columns):
                raise SqlError(errors.DUPLICATE_COLUMN, f'column "{column.name}" specified more than once')
            columns.append(column)
            if is_primary:
                primary_key = _set_primary_key(primary_key, [column.name], name)
        else:
            constraint_name = None
            parts = [element]
            if isinstance(element, exp.Constraint):
                constraint_name = identifier_name(element.this)
                parts = element.expressions
            for part in parts:
                if isinstance(part, exp.PrimaryKey):
                    names = [identifier_name(k.this if isinstance(k, (exp.Ordered, exp.Column)) else k)
                             for k in part.expressions]
                    primary_key = _set_primary_key(primary_key, names, name)
                    primary_key_name = constraint_name
                elif isinstance(part, exp.UniqueColumnConstraint) and isinstance(part.this, exp.Schema):
                    uniques.append((constraint_name, tuple(identifier_name(i) for i in part.this.expressions)))
                elif isinstance(part, exp.CheckColumnConstraint):
                    checks.append((constraint_name, part.this, None))
                elif isinstance(part, exp.ForeignKey):
                    raise SqlError(errors.FEATURE_NOT_SUPPORTED, "foreign keys are not supported")
                else:
                    raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                                   f"table constraint {part.sql(dialect='postgres')} is not supported")
    if not columns:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "tables without columns are not supported")
    if len(columns) > limits.TABLE_COLUMNS_MAX:
        raise SqlError(errors.TOO_MANY_COLUMNS, f"tables can have at most {limits.TABLE_COLUMNS_MAX} columns")
    if primary_key is None:
        # No PRIMARY KEY: rows are keyed by a hidden row id (see the module docstring).
        columns.append(ColumnDef(ROWID_COLUMN, types.BIGINT, True, hidden=True))
        primary_key = [ROWID_COLUMN]
    resolved: list[int] = []
    for part in primary_key:
        index = next((i for i, c in enumerate(columns) if c.name == part), None)
        if index is None:
            raise SqlError(errors.UNDEFINED_COLUMN, f'column "{part}" named in key does not exist')
        if index in resolved:
            raise SqlError(errors.DUPLICATE_COLUMN, f'column "{part}" appears twice in primary key constraint')
        resolved.append(index)
    for index in resolved:  # primary-key columns are implicitly NOT NULL
        columns[index] = dataclasses.replace(columns[index], not_null=True)
    for _, unique_columns in uniques:
        for column_name in unique_columns:
            if not any(c.name == column_name for c in columns):
                raise SqlError(errors.UNDEFINED_COLUMN, f'column "{column_name}" named in key does not exist')
    check_defs: list[CheckDef] = []
    check_nodes: list[tuple[str, exp.Expression]] = []
    taken: set[str] = set()
    for explicit, node, column_name in checks:
        if explicit is not None:
            check_name = explicit
        else:
            # PostgreSQL's choice: the column of a column constraint, or the one column a table
            # constraint reads; a table constraint over several columns is just <table>_check.
            read = {identifier_name(c.this) for c in node.find_all(exp.Column)}
            referenced = column_name or (next(iter(read)) if len(read) == 1 else None)
            check_name = unique_name(f"{name}_{referenced}_check" if referenced else f"{name}_check", taken)
        taken.add(check_name)
        check_defs.append(CheckDef(check_name, node.sql(dialect="postgres")))
        check_nodes.append((check_name, node))
    table = TableDef(table_id, name, tuple(columns), tuple(resolved), (), tuple(check_defs),
                     primary_key_name=primary_key_name if primary_key_name != f"{name}_pkey" else None)
    return CreateSpec(table, uniques, check_nodes, defaults, sequences)


def _set_primary_key(current, names, table: str):
    if current is not None:
        raise SqlError(errors.INVALID_TABLE_DEFINITION,
                       f'multiple primary keys for table "{table}" are not allowed')
    return names


def column_from_def(element: exp.ColumnDef, table: str) -> tuple[ColumnDef, bool, list, list, dict]:
    uniques: list = []
    checks: list = []
    defaults: dict = {}
    column, is_primary = _column_from_def(element, table, uniques, checks, defaults, 0)
    return column, is_primary, uniques, checks, defaults


_SERIAL_TYPES = {"SMALLSERIAL": types.SMALLINT, "SERIAL": types.INTEGER, "BIGSERIAL": types.BIGINT}
_IDENTITY_OPTIONS = ("start", "increment", "minvalue", "maxvalue")


def default_text(node: exp.Expression) -> str:
    """The stored text of a DEFAULT expression. nextval of a sequence is kept in PostgreSQL's own
    spelling, `nextval('name'::regclass)` (what information_schema and pg_dump show), however it
    was written (`nextval('public.s')`, `nextval('s'::regclass)`)."""
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "nextval" and len(node.expressions) == 1:
        argument = node.expressions[0]
        if isinstance(argument, exp.Cast) and argument.args.get("to") is not None and \
                argument.args["to"].sql(dialect="postgres").lower() == "regclass":
            argument = argument.this
        if isinstance(argument, exp.Literal) and argument.is_string:
            name = argument.this
            if not name.startswith('"'):
                name = name.lower()
                name = name[len("public."):] if name.startswith("public.") else name
            return f"nextval('{name}'::regclass)"
    return node.sql(dialect="postgres")


def _column_from_def(element: exp.ColumnDef, table: str, uniques: list, checks: list, defaults: dict,
                     position: int, sequences: list | None = None) -> tuple[ColumnDef, bool]:
    name = identifier_name(element.this)
    kind = element.args.get("kind")
    if kind is None:
        raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{name}"')
    type_name = kind.this.name if hasattr(kind.this, "name") else str(kind.this)
    serial_type = _SERIAL_TYPES.get(type_name)
    sql_type = serial_type if serial_type is not None else types.type_from_sqlglot(kind)
    not_null = False
    is_primary = False
    default = None
    identity = None
    sequence_options: dict | None = {} if serial_type is not None else None
    for constraint in element.constraints:
        constraint_kind = constraint.kind
        explicit = identifier_name(constraint.this) if constraint.this is not None else None
        if isinstance(constraint_kind, exp.PrimaryKeyColumnConstraint):
            is_primary = True
        elif isinstance(constraint_kind, exp.NotNullColumnConstraint):
            if constraint_kind.args.get("allow_null"):
                continue  # an explicit NULL constraint: nullable, the default
            not_null = True
        elif isinstance(constraint_kind, exp.DefaultColumnConstraint):
            default = default_text(constraint_kind.this)
            defaults[position] = constraint_kind.this
        elif isinstance(constraint_kind, exp.UniqueColumnConstraint):
            uniques.append((explicit, (name,)))
        elif isinstance(constraint_kind, exp.CheckColumnConstraint):
            checks.append((explicit, constraint_kind.this, name))
        elif isinstance(constraint_kind, exp.Reference):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "foreign keys are not supported")
        elif isinstance(constraint_kind, exp.GeneratedAsIdentityColumnConstraint) \
                and constraint_kind.args.get("expression") is None:
            if identity is not None or sequence_options is not None:
                raise SqlError(errors.SYNTAX_ERROR,
                               f'multiple identity specifications for column "{name}" of table "{table}"')
            if sql_type.kind not in types.INT_KINDS:
                raise SqlError(errors.DATATYPE_MISMATCH,
                               "identity column type must be smallint, integer, or bigint")
            identity = "always" if constraint_kind.this else "by default"
            sequence_options = {}
            for option in _IDENTITY_OPTIONS:
                node = constraint_kind.args.get(option)
                if node is not None:
                    sequence_options[option] = node
            for option in ("cycle", "on_null", "order"):
                if constraint_kind.args.get(option):
                    raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"identity option {option.upper()} is not supported")
            not_null = True
        else:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"column constraint {constraint.sql(dialect='postgres')} is not supported")
    if sequence_options is not None:
        if sequences is None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           "adding a serial or identity column to an existing table is not supported")
        if default is not None:
            raise SqlError(errors.SYNTAX_ERROR,
                           f'both default and identity specified for column "{name}" of table "{table}"')
        not_null = True
        sequences.append((position, sequence_options))
        defaults.pop(position, None)
    return ColumnDef(name, sql_type, not_null, default, identity=identity), is_primary
