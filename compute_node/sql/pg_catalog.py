"""pg_catalog as relations: PostgreSQL's system catalogs built from QuorumDB's table definitions (pure).

Theory of operation
-------------------
PostgreSQL tools learn the schema by querying pg_catalog (psql's \\d commands, drivers' type
look-ups, ORM reflection, pg_dump). As CockroachDB does, QuorumDB answers those queries with
the ordinary SQL engine over *virtual relations*: a `FROM pg_catalog.pg_class` makes the
executor read every table definition of the statement's snapshot (select.fetch, the same scan
information_schema uses), and `CATALOG_RELATIONS[name].build(snapshot)` turns the definitions
into rows with PostgreSQL's column names and types (plus the system column `tableoid`, which
`*` leaves out). Joins, WHERE, ORDER BY, subqueries and the catalog functions
(catalog_functions.py: format_type, pg_get_indexdef, ::regclass, ...) then run as for any
table. Nothing matches query text.

What is real and what is synthetic:

  * pg_class, pg_attribute, pg_index, pg_constraint, pg_attrdef describe exactly the tables,
    columns, primary keys, UNIQUE constraints, indexes, CHECK constraints and DEFAULTs of the
    snapshot (so they see the transaction's own DDL);
  * sequences (standalone, and those serial and identity columns own) are pg_class rows of
    relkind 'S' with pg_sequence rows; pg_depend holds only the rows that tie a sequence to its
    owning column ('a', or 'i' for identity) and a nextval DEFAULT to its sequence ('n'): psql's
    "Owned by" and pg_dump's OWNED BY / identity / separate SET DEFAULT come from them;
  * OIDs are synthetic and stable: a table is 16384 + 2 * its catalog_id (the table_id it was
    created with: TRUNCATE and rewrites move its rows to private ids too large for an oid, and it
    keeps its oid as in PostgreSQL), its primary-key index one more, a secondary index 16384 + 2 *
    its catalog_id, a sequence 16384 + 2 * sequence_id (ids come
    from one counter), constraints and
    defaults have their own ranges below; namespaces, types, access methods and collations use
    PostgreSQL's own OIDs (public 2200, pg_catalog 11, int4 23, btree 403, ...), so a tool's
    hard-coded OIDs mean the same thing here;
  * pg_type lists the built-in types QuorumDB has (and their array types);
  * one database (the connection's), one login role (the connection's user, oid 10, the owner
    of everything; schema public belongs to pg_database_owner as in PostgreSQL 15), one
    tablespace, no functions, extensions, inheritance, triggers, policies, publications or
    statistics objects: those catalogs exist (with PostgreSQL's columns) and are empty, which is the true answer here; pg_description holds only
    PostgreSQL's comment on schema public (QuorumDB has no COMMENT ON);
  * sizes (reltuples, relpages) are not tracked: -1 and 0, as PostgreSQL shows a table never
    analysed.

The session a statement runs in (user, database, backend pid, settings) is a `ClientInfo`
the wire layer gives the engine session; the gRPC API uses the defaults.
"""
from __future__ import annotations

import dataclasses
import platform
import re
from typing import Any, Callable, Sequence

from compute_node.sql import types
from compute_node.sql.catalog import TableDef
from compute_node.sql.types import Kind, SqlType
from quorumdb import errors

# --- fixed OIDs (PostgreSQL's own where the object exists there) --------------------------
PG_CATALOG_NAMESPACE_OID = 11
PG_TOAST_NAMESPACE_OID = 99
PUBLIC_NAMESPACE_OID = 2200
INFORMATION_SCHEMA_NAMESPACE_OID = 13000
OWNER_OID = 10
# PostgreSQL 15 gives schema public to this predefined role (whoever owns the database).
DATABASE_OWNER_ROLE_OID = 6171
DATABASE_OWNER_ROLE = "pg_database_owner"
DATABASE_OID = 5
TABLESPACE_OID = 1663            # pg_default
HEAP_AM_OID = 2
BTREE_AM_OID = 403
DEFAULT_COLLATION_OID = 100
C_COLLATION_OID = 950
POSIX_COLLATION_OID = 951
UTF8_ENCODING = 6
TABLE_OID_BASE = 16384
# Constraints and defaults live in their own ranges (an oid names one object of a catalog;
# these keep them distinct from relations as PostgreSQL's single oid counter would).
CONSTRAINT_OID_BASE = 1 << 30
CHECKS_PER_TABLE_MAX = 1024
ATTRDEF_OID_BASE = (1 << 30) + (1 << 29)
COLUMNS_PER_TABLE_MAX = 1600     # PostgreSQL's MaxHeapAttributeNumber
VERSION_TEXT = (f"PostgreSQL 15.0 (QuorumDB 0.1) on {platform.machine() or 'x86_64'}-pc-linux-gnu, "
                "compiled by Python, 64-bit")



class RegOid(int):
    """An oid typed regclass/regtype/regnamespace: the integer for comparisons, the name as text."""

    def __new__(cls, oid: int, text: str):
        value = super().__new__(cls, oid)
        value.text = text
        return value

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"RegOid({int(self)}, {self.text!r})"

@dataclasses.dataclass(frozen=True)
class ClientInfo:
    """Who runs the statement: what current_user, current_database(), pg_backend_pid() and
    current_setting() report, and whom pg_roles and pg_database show."""
    user: str = "quorumdb"
    database: str = "quorumdb"
    process_id: int = 0
    settings: Any = None          # .get(name) -> str (pgwire/settings.py Settings), or None

    def setting(self, name: str) -> str:
        from quorumdb.errors import SqlError
        if self.settings is not None:
            return self.settings.get(name)
        for known, value in FIXED_SETTINGS:
            if known.lower() == name.lower():
                return value
        raise SqlError(errors.UNDEFINED_OBJECT, f'unrecognized configuration parameter "{name}"')

    def all_settings(self) -> list[tuple[str, str, str]]:
        """(name, value, description) of every setting, as SHOW ALL lists them."""
        if self.settings is not None and hasattr(self.settings, "show_all"):
            return self.settings.show_all()
        return [(name, value, "") for name, value in FIXED_SETTINGS]


# What a session without the PostgreSQL endpoint's settings (the gRPC API) reports: the values
# that endpoint starts with, which are also the only ones it accepts for most of them.
FIXED_SETTINGS = (
    ("server_version", "15.0 (QuorumDB)"), ("server_version_num", "150000"), ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"), ("TimeZone", "UTC"), ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"), ("search_path", '"$user", public'),
    ("transaction_isolation", "repeatable read"), ("max_identifier_length", "63"), ("lc_collate", "C"),
    ("lc_ctype", "C"), ("default_table_access_method", "heap"), ("default_tablespace", ""),
)


DEFAULT_CLIENT = ClientInfo()


@dataclasses.dataclass
class Snapshot:
    """The catalog as one statement sees it: the table and sequence definitions (name order,
    sequences as bulk.SequenceDef) and the client."""
    tables: Sequence[TableDef]
    client: ClientInfo = DEFAULT_CLIENT
    sequences: Sequence[Any] = ()
    # sequence_id -> (last_value, log_cnt, is_called), the stored state as a relation reads it
    # (bulk.relation_row); pg_sequences shows last_value.
    sequence_rows: dict = dataclasses.field(default_factory=dict)
    _by_oid: dict | None = None
    _constraints: dict | None = None

    def user_relations(self) -> list["RelationInfo"]:
        return relations(self.tables) + sequence_relations(self.sequences, self.tables)

    def relation(self, oid: int) -> "RelationInfo | None":
        if self._by_oid is None:
            self._by_oid = {info.oid: info for info in self.user_relations()}
            for info in system_relations():
                self._by_oid.setdefault(info.oid, info)
        return self._by_oid.get(oid)

    def relation_named(self, name: str, schema: str | None) -> "RelationInfo | None":
        for namespace in ([schema] if schema else ["pg_catalog", "public"]):
            for info in (self.user_relations() if namespace == "public" else
                         system_relations() if namespace == "pg_catalog" else []):
                if info.name == name:
                    return info
        return None


# --- types ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TypeInfo:
    oid: int
    name: str            # typname
    length: int          # typlen
    by_value: bool
    category: str        # typcategory
    format_name: str     # what format_type prints
    element: int = 0     # typelem (arrays)
    array: int = 0       # typarray
    collation: int = 0   # typcollation
    preferred: bool = False
    align: str = "i"
    storage: str = "p"


def _base(oid, name, length, by_value, category, format_name, array, collation=0, preferred=False, align="i",
          storage=None):
    storage = storage or ("x" if length == -1 else "p")
    return TypeInfo(oid, name, length, by_value, category, format_name, 0, array, collation, preferred, align, storage)


_BASE_TYPES = [
    _base(16, "bool", 1, True, "B", "boolean", 1000, preferred=True, align="c"),
    _base(17, "bytea", -1, False, "U", "bytea", 1001),
    _base(18, "char", 1, True, "Z", '"char"', 1002, align="c"),
    _base(19, "name", 64, False, "S", "name", 1003, collation=950, align="c"),
    _base(20, "int8", 8, True, "N", "bigint", 1016, align="d"),
    _base(21, "int2", 2, True, "N", "smallint", 1005, align="s"),
    _base(22, "int2vector", -1, False, "A", "int2vector", 1006),
    _base(23, "int4", 4, True, "N", "integer", 1007),
    _base(24, "regproc", 4, True, "N", "regproc", 1008),
    _base(25, "text", -1, False, "S", "text", 1009, collation=100, preferred=True),
    _base(26, "oid", 4, True, "N", "oid", 1028, preferred=True),
    _base(30, "oidvector", -1, False, "A", "oidvector", 1013),
    _base(700, "float4", 4, True, "N", "real", 1021),
    _base(701, "float8", 8, True, "N", "double precision", 1022, preferred=True, align="d"),
    _base(1042, "bpchar", -1, False, "S", "character", 1014, collation=100),
    _base(1043, "varchar", -1, False, "S", "character varying", 1015, collation=100),
    _base(1082, "date", 4, True, "D", "date", 1182),
    _base(1114, "timestamp", 8, True, "D", "timestamp without time zone", 1115, align="d"),
    _base(1184, "timestamptz", 8, True, "D", "timestamp with time zone", 1185, preferred=True, align="d"),
    _base(1186, "interval", 16, False, "T", "interval", 1187, preferred=True, align="d"),
    _base(1700, "numeric", -1, False, "N", "numeric", 1231, storage="m"),
    _base(2205, "regclass", 4, True, "N", "regclass", 2210),
    _base(2206, "regtype", 4, True, "N", "regtype", 2211),
    _base(4089, "regnamespace", 4, True, "N", "regnamespace", 4090),
    _base(2950, "uuid", 16, False, "U", "uuid", 2951, align="c"),
]
TYPES: dict[int, TypeInfo] = {}
for _info in _BASE_TYPES:
    TYPES[_info.oid] = _info
    TYPES[_info.array] = TypeInfo(_info.array, "_" + _info.name, -1, False, "A", _info.format_name + "[]",
                                  _info.oid, 0, _info.collation, False, "d" if _info.align == "d" else "i", "x")

_KIND_OIDS = {
    Kind.SMALLINT: 21, Kind.INTEGER: 23, Kind.BIGINT: 20, Kind.NUMERIC: 1700, Kind.REAL: 700,
    Kind.DOUBLE: 701, Kind.TEXT: 25, Kind.VARCHAR: 1043, Kind.CHAR: 1042, Kind.BOOLEAN: 16, Kind.DATE: 1082,
    Kind.TIMESTAMP: 1114, Kind.TIMESTAMPTZ: 1184, Kind.UUID: 2950, Kind.BYTEA: 17, Kind.INTERVAL: 1186,
}
_ALIAS_OIDS = {"oid": 26, "regclass": 2205, "regtype": 2206, "regnamespace": 4089, "regproc": 24, "name": 19,
               '"char"': 18, "int2vector": 22, "oidvector": 30, "text[]": 1009, "name[]": 1003, "oid[]": 1028,
               "smallint[]": 1005, '"char"[]': 1002}


def type_oid(sql_type: SqlType) -> int:
    if sql_type.pg_alias is not None:
        return _ALIAS_OIDS[sql_type.pg_alias]
    if sql_type.kind is Kind.ARRAY:
        return TYPES[type_oid(sql_type.element)].array
    return _KIND_OIDS[sql_type.kind]


def type_modifier(sql_type: SqlType) -> int:
    """atttypmod: PostgreSQL's encoding of varchar(n)/char(n) (n + 4) and numeric(p,s)."""
    if sql_type.kind in (Kind.VARCHAR, Kind.CHAR) and sql_type.length is not None:
        return sql_type.length + 4
    if sql_type.kind is Kind.NUMERIC and sql_type.precision is not None:
        return ((sql_type.precision << 16) | (sql_type.scale or 0)) + 4
    return -1


def format_type(oid: int | None, typmod: int | None) -> str | None:
    """PostgreSQL's format_type(type_oid, typmod)."""
    if oid is None:
        return None
    info = TYPES.get(oid)
    if info is None:
        return "???"
    name = info.format_name
    if typmod is not None and typmod >= 4:
        if oid in (1042, 1043):
            return f"{name}({typmod - 4})"
        if oid == 1700:
            return f"numeric({(typmod - 4) >> 16},{(typmod - 4) & 0xFFFF})"
    return name


def type_named(name: str) -> TypeInfo | None:
    """The type `name` denotes as regtype input reads it (typname or format_type spelling)."""
    text = name.strip().lower()
    if text.startswith("pg_catalog."):
        text = text[len("pg_catalog."):]
    aliases = {"int": "int4", "integer": "int4", "smallint": "int2", "bigint": "int8", "boolean": "bool",
               "real": "float4", "double precision": "float8", "character varying": "varchar",
               "character": "bpchar", "varchar": "varchar", "decimal": "numeric",
               "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz"}
    array = text.endswith("[]")
    base = aliases.get(text[:-2] if array else text, text[:-2] if array else text)
    for info in TYPES.values():
        if info.name == base and info.element == 0:
            return TYPES[info.array] if array else info
    return None


def regtype_text(oid: int | None) -> str | None:
    if oid is None:
        return None
    info = TYPES.get(oid)
    return info.format_name if info is not None else str(oid)


# --- relations of the snapshot ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class IndexInfo:
    oid: int
    name: str
    columns: tuple[str, ...]
    descending: tuple[bool, ...]
    unique: bool
    primary: bool
    constraint: str | None          # 'p' primary key, 'u' UNIQUE constraint, None: a plain index


@dataclasses.dataclass(frozen=True)
class RelationInfo:
    oid: int
    name: str
    kind: str                        # relkind: 'r' table, 'i' index, 'S' sequence
    namespace: int
    table: Any                       # TableDef (None for pg_catalog's own relations and sequences)
    index: IndexInfo | None = None
    columns: tuple[tuple[str, SqlType], ...] = ()   # pg_catalog relations and sequences only
    sequence: Any = None             # a sequence's bulk.SequenceDef


def table_oid(table: TableDef) -> int:
    return TABLE_OID_BASE + 2 * table.catalog_id


# --- sequences ---------------------------------------------------------------------------
# A sequence's oid follows the tables' scheme: its id comes from the same counter as table and
# index ids, so 16384 + 2 * sequence_id names nothing else.
# What `SELECT * FROM seq` shows (PostgreSQL's sequence relation has exactly these columns).
SEQUENCE_COLUMNS = (("last_value", types.BIGINT), ("log_cnt", types.BIGINT), ("is_called", types.BOOLEAN))
_SEQUENCE_TYPE_OIDS = {"smallint": 21, "integer": 23, "bigint": 20}


def sequence_oid(sequence: Any) -> int:
    return TABLE_OID_BASE + 2 * sequence.sequence_id


def sequence_type(sequence: Any, tables: Sequence[TableDef]) -> str:
    """smallint, integer or bigint. An entry stored before sequences kept their type is read as
    its owning column's type (a serial's or identity column's sequence always has it), else as
    bigint, CREATE SEQUENCE's default."""
    if sequence.data_type is not None:
        return sequence.data_type
    if sequence.owned_by is not None:
        column = _owning_column(sequence, tables)
        if column is not None:
            return {Kind.SMALLINT: "smallint", Kind.INTEGER: "integer"}.get(column[1].sql_type.kind, "bigint")
    return "bigint"


def _owning_column(sequence: Any, tables: Sequence[TableDef]) -> tuple[TableDef, Any, int] | None:
    """(table, column, attnum) of the column that owns the sequence, if it (still) does."""
    if sequence.owned_by is None:
        return None
    table_name, column_name = sequence.owned_by
    for table in tables:
        if table.name == table_name:
            attnum = attnum_of(table, column_name)
            if attnum is None:
                return None
            return table, user_columns(table)[attnum - 1], attnum
    return None


def is_identity_sequence(sequence: Any, tables: Sequence[TableDef]) -> bool:
    owner = _owning_column(sequence, tables)
    return owner is not None and owner[1].identity is not None


def sequence_relations(sequences: Sequence[Any], tables: Sequence[TableDef]) -> list[RelationInfo]:
    return [RelationInfo(sequence_oid(sequence), sequence.name, "S", PUBLIC_NAMESPACE_OID, None, None,
                         SEQUENCE_COLUMNS, sequence) for sequence in sequences]


def user_columns(table: TableDef) -> Sequence[Any]:
    """The columns a table shows (tables keyed by a hidden row id, where a tree has them, hide it)."""
    return getattr(table, "visible_columns", table.columns)


def attnum_of(table: TableDef, name: str) -> int | None:
    """A column's attnum: its place among the columns the table shows, from 1 (PostgreSQL's
    numbering for the same table; the hidden row id has none)."""
    for attnum, column in enumerate(user_columns(table), start=1):
        if column.name == name:
            return attnum
    return None


def indexes_of(table: TableDef) -> list[IndexInfo]:
    """The primary-key index (none for a table keyed by a hidden row id) and every secondary
    index of a table, primary key first."""
    found = []
    if not getattr(table, "has_rowid", False):
        pk_columns = tuple(table.columns[p].name for p in table.primary_key)
        found.append(IndexInfo(table_oid(table) + 1, table.constraint_name, pk_columns, (False,) * len(pk_columns),
                               True, True, "p"))
    for index in table.indexes:
        descending = tuple(index.descending) or (False,) * len(index.columns)
        found.append(IndexInfo(TABLE_OID_BASE + 2 * index.catalog_id, index.name, tuple(index.columns), descending,
                               bool(index.unique), False, "u" if index.constraint else None))
    return found


def relations(tables: Sequence[TableDef]) -> list[RelationInfo]:
    found = []
    for table in tables:
        found.append(RelationInfo(table_oid(table), table.name, "r", PUBLIC_NAMESPACE_OID, table))
        for info in indexes_of(table):
            found.append(RelationInfo(info.oid, info.name, "i", PUBLIC_NAMESPACE_OID, table, info))
    return found


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident: quoted unless a lower-case plain identifier (keywords aside)."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and name not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


_RESERVED = frozenset({"all", "and", "any", "array", "as", "asc", "case", "check", "column", "constraint", "create",
                       "default", "desc", "distinct", "do", "else", "end", "false", "for", "foreign", "from", "grant",
                       "group", "having", "in", "into", "limit", "not", "null", "offset", "on", "or", "order",
                       "primary", "references", "select", "table", "then", "to", "true", "union", "unique", "user",
                       "using", "when", "where", "with"})


def index_columns_text(info: IndexInfo) -> str:
    return ", ".join(quote_ident(column) + (" DESC" if descending else "")
                     for column, descending in zip(info.columns, info.descending))


def index_definition(table: TableDef, info: IndexInfo, column: int = 0, pretty: bool = False) -> str:
    """pg_get_indexdef(oid, column, pretty): the CREATE INDEX statement, or one key column's text.
    As PostgreSQL, the table is schema-qualified except in the pretty form (public is on the
    search path)."""
    if column:
        if column > len(info.columns):
            return ""
        return quote_ident(info.columns[column - 1])
    unique = "UNIQUE " if info.unique else ""
    qualifier = "" if pretty else "public."
    return (f"CREATE {unique}INDEX {quote_ident(info.name)} ON {qualifier}{quote_ident(table.name)} "
            f"USING btree ({index_columns_text(info)})")


@dataclasses.dataclass(frozen=True)
class ConstraintInfo:
    oid: int
    name: str
    kind: str                  # contype: p, u, c
    table: TableDef
    index: IndexInfo | None    # p and u: the index that enforces it
    check_sql: str | None = None

    def definition(self, pretty: bool = True) -> str:
        """pg_get_constraintdef: PostgreSQL parenthesises every operator of a CHECK unless asked
        for the pretty form (psql asks for it, pg_dump and SQLAlchemy do not)."""
        if self.kind == "c":
            return f"CHECK ({_pretty(self.check_sql) if pretty else _fully_parenthesised(self.check_sql)})"
        columns = ", ".join(quote_ident(column) for column in self.index.columns)
        return f"{'PRIMARY KEY' if self.kind == 'p' else 'UNIQUE'} ({columns})"


def _fully_parenthesised(sql: str) -> str:
    """The CHECK expression with every operator parenthesised, as PostgreSQL's deparser prints
    it outside pretty mode: `qty > 0` -> `(qty > 0)`, `a > 0 AND b < 5` -> `((a > 0) AND (b < 5))`."""
    import sqlglot
    from sqlglot import exp
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return f"({sql})"
    operators = (exp.Binary, exp.Not, exp.Is, exp.In, exp.Between, exp.Like, exp.ILike)
    nodes = [node for node in tree.walk() if isinstance(node, operators)]
    for node in reversed(nodes):  # deepest first
        if isinstance(node.parent, exp.Paren):
            continue
        paren = exp.Paren()
        if node is tree:
            tree = paren
        else:
            node.replace(paren)
        paren.set("this", node)
    return tree.sql(dialect="postgres", normalize_functions="lower")


def _pretty(sql: str) -> str:
    """The pretty form: PostgreSQL keeps the parentheses around arithmetic under another kind of
    operator (`((a + 1) * 2) > b`), drops the rest, and prints function names in lower case."""
    import sqlglot
    from sqlglot import exp
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return sql
    arithmetic = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)
    nodes = [node for node in tree.walk() if isinstance(node, arithmetic)]
    for node in reversed(nodes):
        parent = node.parent
        if parent is None or isinstance(parent, (exp.Paren,) + arithmetic) or not isinstance(parent, exp.Binary):
            continue
        paren = exp.Paren()
        node.replace(paren)
        paren.set("this", node)
    return tree.sql(dialect="postgres", normalize_functions="lower")


def constraints_of(table: TableDef) -> list[ConstraintInfo]:
    found = []
    for info in indexes_of(table):
        if info.constraint is not None:
            found.append(ConstraintInfo(CONSTRAINT_OID_BASE + info.oid - TABLE_OID_BASE, info.name, info.constraint,
                                        table, info))
    assert len(table.checks) <= CHECKS_PER_TABLE_MAX, "more CHECK constraints than the oid range holds"
    base = CONSTRAINT_OID_BASE + (table_oid(table) - TABLE_OID_BASE) * CHECKS_PER_TABLE_MAX
    for position, check in enumerate(table.checks):
        # offset by the table's own oid range so that no check collides with an index-backed one
        found.append(ConstraintInfo(base + (1 << 28) + position, check.name, "c", table, None, check.sql))
    return found


def attrdef_oid(table: TableDef, attnum: int) -> int:
    return ATTRDEF_OID_BASE + (table_oid(table) - TABLE_OID_BASE) * COLUMNS_PER_TABLE_MAX + attnum


# --- the virtual relations ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CatalogRelation:
    name: str
    oid: int
    user_columns: tuple[tuple[str, SqlType], ...]
    build: Callable[[Snapshot], list[tuple]]
    # PostgreSQL's system column every catalog row has (pg_dump reads `tableoid, oid` of each
    # object); `SELECT *` leaves it out (expressions.Relation.system).
    system_columns = ("tableoid",)

    @property
    def columns(self) -> tuple[tuple[str, SqlType], ...]:
        return self.user_columns + (("tableoid", OID),)


I2, I4, I8, F4, B, T = types.SMALLINT, types.INTEGER, types.BIGINT, types.REAL, types.BOOLEAN, types.TEXT
OID, NAME, CH = types.OID, types.NAME, types.CHAR1
_REGPROC = types.REGPROC


def _namespaces(snapshot: Snapshot) -> list[tuple]:
    return [(PG_CATALOG_NAMESPACE_OID, "pg_catalog", OWNER_OID, None),
            (PG_TOAST_NAMESPACE_OID, "pg_toast", OWNER_OID, None),
            (PUBLIC_NAMESPACE_OID, "public", DATABASE_OWNER_ROLE_OID, None),
            (INFORMATION_SCHEMA_NAMESPACE_OID, "information_schema", OWNER_OID, None)]


def _class_row(oid, name, namespace, kind, am, natts, checks, has_index, replident) -> tuple:
    return (oid, name, namespace, 0, 0, OWNER_OID, am, oid, 0, 0, -1.0, 0, 0, has_index, False, "p", kind, natts,
            checks, False, False, False, False, False, True, replident, False, 0, 0, 0, None, None, None)


def _classes(snapshot: Snapshot) -> list[tuple]:
    rows = []
    for info in relations(snapshot.tables):
        if info.kind == "r":
            rows.append(_class_row(info.oid, info.name, info.namespace, "r", HEAP_AM_OID, len(user_columns(info.table)),
                                   len(info.table.checks), True, "d"))
        else:
            rows.append(_class_row(info.oid, info.name, info.namespace, "i", BTREE_AM_OID, len(info.index.columns), 0,
                                   False, "n"))
    for info in sequence_relations(snapshot.sequences, snapshot.tables):
        rows.append(_class_row(info.oid, info.name, info.namespace, "S", 0, len(SEQUENCE_COLUMNS), 0, False, "n"))
    for info in system_relations():
        view = info.name in SYSTEM_VIEWS
        rows.append(_class_row(info.oid, info.name, info.namespace, "v" if view else "r", 0 if view else HEAP_AM_OID,
                               len(info.columns), 0, False, "n"))
    return rows


# The relations of pg_catalog that are views in PostgreSQL (relkind 'v': \dt does not list them).
SYSTEM_VIEWS = frozenset({"pg_roles", "pg_user", "pg_settings", "pg_indexes", "pg_tables", "pg_views", "pg_matviews",
                          "pg_sequences", "pg_seclabels"})


def _attribute_row(relation_oid, name, sql_type, attnum, not_null, has_default, collation, identity="") -> tuple:
    oid = type_oid(sql_type)
    info = TYPES[oid]
    return (relation_oid, name, oid, -1, info.length, attnum, 1 if info.element else 0, -1, type_modifier(sql_type),
            info.by_value, info.align, info.storage, "", not_null, has_default, False, identity, "", False, True, 0,
            collation, None, None, None, None)


def _identity(column) -> str:
    """attidentity: 'a' GENERATED ALWAYS, 'd' BY DEFAULT, '' for other columns."""
    identity = getattr(column, "identity", None)
    return "" if identity is None else ("a" if identity == "always" else "d")


def _has_default(column) -> bool:
    """An identity column's nextval is no DEFAULT in PostgreSQL's catalog (attidentity says it)."""
    return column.default is not None and not _identity(column)


def _collation_of(sql_type: SqlType) -> int:
    return DEFAULT_COLLATION_OID if sql_type.kind in types.TEXT_KINDS and sql_type.pg_alias is None else \
        (C_COLLATION_OID if sql_type.pg_alias == "name" else 0)


def _attributes(snapshot: Snapshot) -> list[tuple]:
    rows = []
    for table in snapshot.tables:
        oid = table_oid(table)
        for attnum, column in enumerate(user_columns(table), start=1):
            rows.append(_attribute_row(oid, column.name, column.sql_type, attnum, bool(column.not_null),
                                       _has_default(column), _collation_of(column.sql_type), _identity(column)))
        for info in indexes_of(table):
            for attnum, name in enumerate(info.columns, start=1):
                position = table.column_index(name)
                sql_type = table.columns[position].sql_type if position is not None else types.TEXT
                rows.append(_attribute_row(info.oid, name, sql_type, attnum, False, False, _collation_of(sql_type)))
    for info in sequence_relations(snapshot.sequences, snapshot.tables) + system_relations():
        for attnum, (name, sql_type) in enumerate(info.columns, start=1):
            rows.append(_attribute_row(info.oid, name, sql_type, attnum, info.kind == "S", False,
                                       _collation_of(sql_type)))
    return rows


def _sequences(snapshot: Snapshot) -> list[tuple]:
    """pg_sequence: QuorumDB has no CYCLE (a sequence stops at its bound), so seqcycle is false."""
    return [(sequence_oid(sequence), _SEQUENCE_TYPE_OIDS[sequence_type(sequence, snapshot.tables)], sequence.start,
             sequence.increment, sequence.max_value, sequence.min_value, sequence.cache, False)
            for sequence in snapshot.sequences]


def _sequences_view(snapshot: Snapshot) -> list[tuple]:
    """pg_sequences. last_value is NULL until a value was reserved, as PostgreSQL's is until
    one was taken (bulk.relation_row: a value reserved by any node counts here)."""
    rows = []
    for sequence in snapshot.sequences:
        data_type = sequence_type(sequence, snapshot.tables)
        last_value, _, called = snapshot.sequence_rows.get(sequence.sequence_id, (None, 0, False))
        rows.append(("public", sequence.name, snapshot.client.user, RegOid(_SEQUENCE_TYPE_OIDS[data_type], data_type),
                     sequence.start, sequence.min_value, sequence.max_value, sequence.increment, False,
                     sequence.cache, last_value if called else None))
    return rows


PG_CLASS_OID = 1259
PG_ATTRDEF_OID = 2604


def _dependencies(snapshot: Snapshot) -> list[tuple]:
    """pg_depend, for sequences only (what psql's \\d and pg_dump read to tie a sequence to its
    column): an owned sequence depends on its column, 'a' (serial, OWNED BY) or 'i' (identity),
    and a DEFAULT that calls nextval of a sequence depends on it, 'n'. pg_dump orders its output
    by these rows (it dumps a serial column's DEFAULT after the sequence, as ALTER TABLE ... SET
    DEFAULT). Other dependencies (on schemas, of indexes and constraints on their tables) are not
    listed: pg_dump orders those objects by their type alone."""
    rows = []
    by_name = {sequence.name: sequence for sequence in snapshot.sequences}
    for sequence in snapshot.sequences:
        owner = _owning_column(sequence, snapshot.tables)
        if owner is None:
            continue
        table, column, attnum = owner
        rows.append((PG_CLASS_OID, sequence_oid(sequence), 0, PG_CLASS_OID, table_oid(table), attnum,
                     "i" if is_identity_sequence(sequence, snapshot.tables) else "a"))
    for table in snapshot.tables:
        for attnum, column in enumerate(user_columns(table), start=1):
            called = _nextval_target(column.default) if _has_default(column) else None
            if called in by_name:
                rows.append((PG_ATTRDEF_OID, attrdef_oid(table, attnum), 0, PG_CLASS_OID,
                             sequence_oid(by_name[called]), 0, "n"))
    return rows


_NEXTVAL = re.compile(r"nextval\('((?:[^']|'')+)'::regclass\)")


def _nextval_target(default: str | None) -> str | None:
    """The sequence a stored DEFAULT `nextval('name'::regclass)` names (catalog.default_text keeps
    every nextval in that spelling), or None for another default."""
    found = _NEXTVAL.fullmatch(default or "")
    if found is None:
        return None
    name = found.group(1).replace("''", "'")
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _indexes(snapshot: Snapshot) -> list[tuple]:
    rows = []
    for table in snapshot.tables:
        for info in indexes_of(table):
            keys_ = [attnum_of(table, name) for name in info.columns]
            width = len(keys_)
            collations = [_collation_of(user_columns(table)[k - 1].sql_type) for k in keys_]
            # indoption bits: 1 DESC, 2 NULLS FIRST (which DESC implies here, as by default in PostgreSQL)
            options = [3 if descending else 0 for descending in info.descending]
            rows.append((info.oid, table_oid(table), width, width, info.unique, False, info.primary, False, True,
                         False, True, True, True, False, False, keys_, collations, [0] * width, options, None, None))
    return rows


def _check_columns(table: TableDef, check_sql: str) -> list[int]:
    """conkey of a CHECK constraint: the attnums of the columns its expression reads."""
    import sqlglot
    from sqlglot import exp
    try:
        tree = sqlglot.parse_one(check_sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return []
    attnums = {attnum_of(table, column.name.lower()) for column in tree.find_all(exp.Column)}
    return sorted(attnum for attnum in attnums if attnum is not None)


def _constraints(snapshot: Snapshot) -> list[tuple]:
    rows = []
    for table in snapshot.tables:
        for info in constraints_of(table):
            keys_ = ([attnum_of(table, name) for name in info.index.columns] if info.index is not None
                     else _check_columns(table, info.check_sql))
            rows.append((info.oid, info.name, PUBLIC_NAMESPACE_OID, info.kind, False, False, True, table_oid(table),
                         0, info.index.oid if info.index is not None else 0, 0, 0, " ", " ", " ", True, 0,
                         info.kind == "c", keys_, None, None, None, None, None, None, info.check_sql))
    return rows


def _attrdefs(snapshot: Snapshot) -> list[tuple]:
    rows = []
    for table in snapshot.tables:
        for attnum, column in enumerate(user_columns(table), start=1):
            if _has_default(column):
                rows.append((attrdef_oid(table, attnum), table_oid(table), attnum,
                             default_text(column.default, column.sql_type)))
    return rows


def default_text(sql: str, sql_type: SqlType) -> str:
    """A DEFAULT as pg_get_expr prints it: the stored SQL with PostgreSQL's spelling of what
    tools compare -- lower-case true/false, and a string constant cast to the column's type
    ('x'::text), as PostgreSQL stores it coerced. Anything else is the stored text."""
    import sqlglot
    from sqlglot import exp
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return sql
    if isinstance(tree, exp.Boolean):
        return "true" if tree.this else "false"
    if isinstance(tree, exp.Literal) and tree.is_string:
        return f"{tree.sql(dialect='postgres')}::{format_type(type_oid(sql_type.base), -1)}"
    return sql


def _types(snapshot: Snapshot) -> list[tuple]:
    rows = []
    for info in sorted(TYPES.values(), key=lambda t: t.oid):
        rows.append((info.oid, info.name, PG_CATALOG_NAMESPACE_OID, OWNER_OID, info.length, info.by_value,
                     "b", info.category, info.preferred, True, ",", 0, info.element, info.array,
                     info.name + ("_in" if info.element == 0 else ""), info.align, info.storage, False, 0, -1, 0,
                     info.collation, None, None))
    return rows


def _databases(snapshot: Snapshot) -> list[tuple]:
    return [(DATABASE_OID, snapshot.client.database, OWNER_OID, UTF8_ENCODING, "c", False, True, -1, 0, 0,
             TABLESPACE_OID, "C", "C", None, None, None)]


def _roles(snapshot: Snapshot) -> list[tuple]:
    # The connected user owns every object (a superuser that can create roles and databases);
    # replication and row-level security do not exist here, so those attributes are false.
    return [(OWNER_OID, snapshot.client.user, True, True, True, True, True, False, False, -1, "********", None,
             None),
            (DATABASE_OWNER_ROLE_OID, DATABASE_OWNER_ROLE, False, True, False, False, False, False, False, -1, None,
             None, None)]


def _users(snapshot: Snapshot) -> list[tuple]:
    return [(snapshot.client.user, OWNER_OID, True, True, False, False, "********", None, None)]


def _settings(snapshot: Snapshot) -> list[tuple]:
    return [(name, value, None, "Ungrouped", description or None, None, "user", "string", "session", None, None,
             None, None, None, None, None, False) for name, value, description in snapshot.client.all_settings()]


def _access_methods(snapshot: Snapshot) -> list[tuple]:
    return [(HEAP_AM_OID, "heap", RegOid(3, "heap_tableam_handler"), "t"),
            (BTREE_AM_OID, "btree", RegOid(330, "bthandler"), "i")]


def _collations(snapshot: Snapshot) -> list[tuple]:
    return [(DEFAULT_COLLATION_OID, "default", PG_CATALOG_NAMESPACE_OID, OWNER_OID, "d", True, -1, None, None),
            (C_COLLATION_OID, "C", PG_CATALOG_NAMESPACE_OID, OWNER_OID, "c", True, -1, "C", "C"),
            (POSIX_COLLATION_OID, "POSIX", PG_CATALOG_NAMESPACE_OID, OWNER_OID, "c", True, -1, "POSIX", "POSIX")]


def _tablespaces(snapshot: Snapshot) -> list[tuple]:
    return [(TABLESPACE_OID, "pg_default", OWNER_OID, None, None), (1664, "pg_global", OWNER_OID, None, None)]


PUBLIC_SCHEMA_COMMENT = "standard public schema"  # PostgreSQL 15's comment on schema public


def _descriptions(snapshot: Snapshot) -> list[tuple]:
    # QuorumDB keeps no comments (COMMENT ON is not supported); the one row is PostgreSQL's own.
    return [(PUBLIC_NAMESPACE_OID, CATALOG_RELATIONS["pg_namespace"].oid, 0, PUBLIC_SCHEMA_COMMENT)]


def description(oid: int, catalog: str | None) -> str | None:
    """obj_description(oid [, catalog]): the comment pg_description holds for the object."""
    if oid == PUBLIC_NAMESPACE_OID and catalog in (None, "pg_namespace"):
        return PUBLIC_SCHEMA_COMMENT
    return None


def _indexes_view(snapshot: Snapshot) -> list[tuple]:
    return [("public", table.name, info.name, None, index_definition(table, info))
            for table in snapshot.tables for info in indexes_of(table)]


def _tables_view(snapshot: Snapshot) -> list[tuple]:
    return [("public", table.name, snapshot.client.user, None, True, False, False, False) for table in snapshot.tables]


def _empty(snapshot: Snapshot) -> list[tuple]:
    return []



def _c(spec: str) -> tuple[tuple[str, SqlType], ...]:
    """Columns from 'name:type name:type ...' (types by their PostgreSQL names)."""
    found = []
    for item in spec.split():
        name, type_name = item.split(":")
        found.append((name, _SPEC_TYPES[type_name]))
    return tuple(found)


_SPEC_TYPES = {"oid": OID, "name": NAME, "char": CH, "int2": I2, "int4": I4, "int8": I8, "float4": F4, "bool": B,
               "text": T, "regproc": _REGPROC, "text[]": types.TEXT_ARRAY, "name[]": types.NAME_ARRAY,
               "oid[]": types.OID_ARRAY, "int2vector": types.INT2VECTOR, "oidvector": types.OIDVECTOR,
               "int2[]": types.SMALLINT_ARRAY, "char[]": types.CHAR1_ARRAY, "timestamptz": types.TIMESTAMPTZ,
               "xid": I8, "regclass": types.REGCLASS, "regtype": types.REGTYPE}

CATALOG_RELATIONS: dict[str, CatalogRelation] = {relation.name: relation for relation in (
    CatalogRelation("pg_namespace", 2615, _c("oid:oid nspname:name nspowner:oid nspacl:text[]"), _namespaces),
    CatalogRelation("pg_class", 1259, _c(
        "oid:oid relname:name relnamespace:oid reltype:oid reloftype:oid relowner:oid relam:oid relfilenode:oid "
        "reltablespace:oid relpages:int4 reltuples:float4 relallvisible:int4 reltoastrelid:oid relhasindex:bool "
        "relisshared:bool relpersistence:char relkind:char relnatts:int2 relchecks:int2 relhasrules:bool "
        "relhastriggers:bool relhassubclass:bool relrowsecurity:bool relforcerowsecurity:bool relispopulated:bool "
        "relreplident:char relispartition:bool relrewrite:oid relfrozenxid:xid relminmxid:xid relacl:text[] "
        "reloptions:text[] relpartbound:text"),
        _classes),
    CatalogRelation("pg_attribute", 1249, _c(
        "attrelid:oid attname:name atttypid:oid attstattarget:int4 attlen:int2 attnum:int2 attndims:int4 "
        "attcacheoff:int4 atttypmod:int4 attbyval:bool attalign:char attstorage:char attcompression:char "
        "attnotnull:bool atthasdef:bool atthasmissing:bool attidentity:char attgenerated:char attisdropped:bool "
        "attislocal:bool attinhcount:int4 attcollation:oid attacl:text[] attoptions:text[] attfdwoptions:text[] "
        "attmissingval:text[]"),
        _attributes),
    CatalogRelation("pg_index", 2610, _c(
        "indexrelid:oid indrelid:oid indnatts:int2 indnkeyatts:int2 indisunique:bool indnullsnotdistinct:bool "
        "indisprimary:bool indisexclusion:bool indimmediate:bool indisclustered:bool indisvalid:bool "
        "indcheckxmin:bool indisready:bool indislive:bool indisreplident:bool indkey:int2vector "
        "indcollation:oidvector indclass:oidvector indoption:int2vector indexprs:text indpred:text"), _indexes),
    CatalogRelation("pg_constraint", 2606, _c(
        "oid:oid conname:name connamespace:oid contype:char condeferrable:bool condeferred:bool convalidated:bool "
        "conrelid:oid contypid:oid conindid:oid conparentid:oid confrelid:oid confupdtype:char confdeltype:char "
        "confmatchtype:char conislocal:bool coninhcount:int4 connoinherit:bool conkey:int2[] confkey:int2[] "
        "conpfeqop:oid[] conppeqop:oid[] conffeqop:oid[] confdelsetcols:int2[] conexclop:oid[] conbin:text"),
        _constraints),
    CatalogRelation("pg_attrdef", 2604, _c("oid:oid adrelid:oid adnum:int2 adbin:text"), _attrdefs),
    CatalogRelation("pg_type", 1247, _c(
        "oid:oid typname:name typnamespace:oid typowner:oid typlen:int2 typbyval:bool typtype:char "
        "typcategory:char typispreferred:bool typisdefined:bool typdelim:char typrelid:oid typelem:oid "
        "typarray:oid typinput:text typalign:char typstorage:char typnotnull:bool typbasetype:oid typtypmod:int4 "
        "typndims:int4 typcollation:oid typdefault:text typacl:text[]"), _types),
    CatalogRelation("pg_database", 1262, _c(
        "oid:oid datname:name datdba:oid encoding:int4 datlocprovider:char datistemplate:bool datallowconn:bool "
        "datconnlimit:int4 datfrozenxid:xid datminmxid:xid dattablespace:oid datcollate:text datctype:text "
        "daticulocale:text datcollversion:text datacl:text[]"),
        _databases),
    CatalogRelation("pg_roles", 12001, _c(
        "oid:oid rolname:name rolsuper:bool rolinherit:bool rolcreaterole:bool rolcreatedb:bool rolcanlogin:bool "
        "rolreplication:bool rolbypassrls:bool rolconnlimit:int4 rolpassword:text rolvaliduntil:timestamptz "
        "rolconfig:text[]"), _roles),
    CatalogRelation("pg_authid", 1260, _c(
        "oid:oid rolname:name rolsuper:bool rolinherit:bool rolcreaterole:bool rolcreatedb:bool rolcanlogin:bool "
        "rolreplication:bool rolbypassrls:bool rolconnlimit:int4 rolpassword:text rolvaliduntil:timestamptz "
        "rolconfig:text[]"), _roles),
    CatalogRelation("pg_user", 12002, _c(
        "usename:name usesysid:oid usecreatedb:bool usesuper:bool userepl:bool usebypassrls:bool passwd:text "
        "valuntil:timestamptz useconfig:text[]"), _users),
    CatalogRelation("pg_auth_members", 1261, _c("oid:oid roleid:oid member:oid grantor:oid admin_option:bool"),
                    _empty),
    CatalogRelation("pg_settings", 12003, _c(
        "name:text setting:text unit:text category:text short_desc:text extra_desc:text context:text vartype:text "
        "source:text min_val:text max_val:text enumvals:text[] boot_val:text reset_val:text sourcefile:text "
        "sourceline:int4 pending_restart:bool"), _settings),
    CatalogRelation("pg_am", 2601, _c("oid:oid amname:name amhandler:regproc amtype:char"), _access_methods),
    CatalogRelation("pg_proc", 1255, _c(
        "oid:oid proname:name pronamespace:oid proowner:oid prolang:oid prokind:char prorettype:oid "
        "proargtypes:oidvector pronargs:int2 proretset:bool prosrc:text proacl:text[] proargnames:text[] "
        "proallargtypes:oid[] proargmodes:char[] proconfig:text[] prosupport:regproc"), _empty),
    CatalogRelation("pg_collation", 3456, _c(
        "oid:oid collname:name collnamespace:oid collowner:oid collprovider:char collisdeterministic:bool "
        "collencoding:int4 collcollate:text collctype:text"), _collations),
    CatalogRelation("pg_inherits", 2611, _c("inhrelid:oid inhparent:oid inhseqno:int4 inhdetachpending:bool"),
                    _empty),
    CatalogRelation("pg_tablespace", 1213, _c("oid:oid spcname:name spcowner:oid spcacl:text[] spcoptions:text[]"),
                    _tablespaces),
    CatalogRelation("pg_extension", 3079, _c(
        "oid:oid extname:name extowner:oid extnamespace:oid extrelocatable:bool extversion:text extconfig:oid[] "
        "extcondition:text[]"), _empty),
    CatalogRelation("pg_description", 2609, _c(
        "objoid:oid classoid:oid objsubid:int4 description:text"), _descriptions),
    CatalogRelation("pg_shdescription", 2396, _c(
        "objoid:oid classoid:oid description:text"), _empty),
    CatalogRelation("pg_sequence", 2224, _c(
        "seqrelid:oid seqtypid:oid seqstart:int8 seqincrement:int8 seqmax:int8 seqmin:int8 "
        "seqcache:int8 seqcycle:bool"), _sequences),
    CatalogRelation("pg_trigger", 2620, _c(
        "oid:oid tgrelid:oid tgparentid:oid tgname:name tgfoid:oid tgtype:int2 tgenabled:char "
        "tgisinternal:bool tgconstrrelid:oid tgconstrindid:oid tgconstraint:oid tgdeferrable:bool "
        "tginitdeferred:bool tgnargs:int2 tgattr:int2vector tgargs:text tgqual:text tgoldtable:name "
        "tgnewtable:name"), _empty),
    CatalogRelation("pg_policy", 3256, _c(
        "oid:oid polname:name polrelid:oid polcmd:char polpermissive:bool polroles:oid[] "
        "polqual:text polwithcheck:text"), _empty),
    CatalogRelation("pg_statistic_ext", 3381, _c(
        "oid:oid stxrelid:oid stxname:name stxnamespace:oid stxowner:oid stxstattarget:int4 "
        "stxkeys:int2vector stxkind:char[] stxexprs:text"), _empty),
    CatalogRelation("pg_publication", 6104, _c(
        "oid:oid pubname:name pubowner:oid puballtables:bool pubinsert:bool pubupdate:bool "
        "pubdelete:bool pubtruncate:bool pubviaroot:bool"), _empty),
    CatalogRelation("pg_publication_rel", 6106, _c(
        "oid:oid prpubid:oid prrelid:oid prqual:text prattrs:int2vector"), _empty),
    CatalogRelation("pg_publication_namespace", 6237, _c(
        "oid:oid pnpubid:oid pnnspid:oid"), _empty),
    CatalogRelation("pg_rewrite", 2618, _c(
        "oid:oid rulename:name ev_class:oid ev_type:char ev_enabled:char is_instead:bool "
        "ev_qual:text ev_action:text"), _empty),
    CatalogRelation("pg_depend", 2608, _c(
        "classid:oid objid:oid objsubid:int4 refclassid:oid refobjid:oid refobjsubid:int4 "
        "deptype:char"), _dependencies),
    CatalogRelation("pg_enum", 3501, _c(
        "oid:oid enumtypid:oid enumsortorder:float4 enumlabel:name"), _empty),
    CatalogRelation("pg_range", 3541, _c(
        "rngtypid:oid rngsubtype:oid rngmultitypid:oid rngcollation:oid rngsubopc:oid "
        "rngcanonical:regproc rngsubdiff:regproc"), _empty),
    CatalogRelation("pg_foreign_table", 3118, _c(
        "ftrelid:oid ftserver:oid ftoptions:text[]"), _empty),
    CatalogRelation("pg_partitioned_table", 3350, _c(
        "partrelid:oid partstrat:char partnatts:int2 partdefid:oid partattrs:int2vector "
        "partclass:oidvector partcollation:oidvector partexprs:text"), _empty),
    CatalogRelation("pg_event_trigger", 3466, _c(
        "oid:oid evtname:name evtevent:name evtowner:oid evtfoid:oid evtenabled:char evttags:text[]"), _empty),
    CatalogRelation("pg_language", 2612, _c(
        "oid:oid lanname:name lanowner:oid lanispl:bool lanpltrusted:bool lanplcallfoid:oid "
        "laninline:oid lanvalidator:oid lanacl:text[]"), _empty),
    CatalogRelation("pg_foreign_server", 1417, _c(
        "oid:oid srvname:name srvowner:oid srvfdw:oid srvtype:text srvversion:text srvacl:text[] "
        "srvoptions:text[]"), _empty),
    CatalogRelation("pg_foreign_data_wrapper", 2328, _c(
        "oid:oid fdwname:name fdwowner:oid fdwhandler:oid fdwvalidator:oid fdwacl:text[] "
        "fdwoptions:text[]"), _empty),
    CatalogRelation("pg_conversion", 2607, _c(
        "oid:oid conname:name connamespace:oid conowner:oid conforencoding:int4 contoencoding:int4 "
        "conproc:regproc condefault:bool"), _empty),
    CatalogRelation("pg_ts_config", 3602, _c(
        "oid:oid cfgname:name cfgnamespace:oid cfgowner:oid cfgparser:oid"), _empty),
    CatalogRelation("pg_amop", 2602, _c(
        "oid:oid amopfamily:oid amoplefttype:oid amoprighttype:oid amopstrategy:int2 amoppurpose:char "
        "amopopr:oid amopmethod:oid amopsortfamily:oid"), _empty),
    CatalogRelation("pg_amproc", 2603, _c(
        "oid:oid amprocfamily:oid amproclefttype:oid amprocrighttype:oid amprocnum:int2 amproc:regproc"), _empty),
    CatalogRelation("pg_seclabels", 12009, _c(
        "objoid:oid classoid:oid objsubid:int4 objtype:text objnamespace:oid objname:text provider:text "
        "label:text"), _empty),
    CatalogRelation("pg_cast", 2605, _c(
        "oid:oid castsource:oid casttarget:oid castfunc:oid castcontext:char castmethod:char"), _empty),
    CatalogRelation("pg_operator", 2617, _c(
        "oid:oid oprname:name oprnamespace:oid oprowner:oid oprkind:char oprcanmerge:bool "
        "oprcanhash:bool oprleft:oid oprright:oid oprresult:oid oprcom:oid oprnegate:oid "
        "oprcode:regproc oprrest:regproc oprjoin:regproc"), _empty),
    CatalogRelation("pg_opfamily", 2753, _c(
        "oid:oid opfmethod:oid opfname:name opfnamespace:oid opfowner:oid"), _empty),
    CatalogRelation("pg_aggregate", 2600, _c(
        "aggfnoid:regproc aggkind:char aggnumdirectargs:int2 aggtransfn:regproc aggfinalfn:regproc "
        "aggcombinefn:regproc aggserialfn:regproc aggdeserialfn:regproc aggmtransfn:regproc "
        "aggminvtransfn:regproc aggmfinalfn:regproc aggfinalextra:bool aggmfinalextra:bool "
        "aggfinalmodify:char aggmfinalmodify:char aggsortop:oid aggtranstype:oid aggtransspace:int4 "
        "aggmtranstype:oid aggmtransspace:int4 agginitval:text aggminitval:text"), _empty),
    CatalogRelation("pg_transform", 3576, _c(
        "oid:oid trftype:oid trflang:oid trffromsql:regproc trftosql:regproc"), _empty),
    CatalogRelation("pg_largeobject_metadata", 2995, _c(
        "oid:oid lomowner:oid lomacl:text[]"), _empty),
    CatalogRelation("pg_subscription", 6100, _c(
        "oid:oid subdbid:oid subskiplsn:text subname:name subowner:oid subenabled:bool "
        "subbinary:bool substream:bool subtwophasestate:char subdisableonerr:bool subconninfo:text "
        "subslotname:name subsynccommit:text subpublications:text[]"), _empty),
    CatalogRelation("pg_ts_parser", 3601, _c(
        "oid:oid prsname:name prsnamespace:oid prsstart:regproc prstoken:regproc prsend:regproc "
        "prsheadline:regproc prslextype:regproc"), _empty),
    CatalogRelation("pg_ts_dict", 3600, _c(
        "oid:oid dictname:name dictnamespace:oid dictowner:oid dicttemplate:oid dictinitoption:text"), _empty),
    CatalogRelation("pg_ts_template", 3764, _c(
        "oid:oid tmplname:name tmplnamespace:oid tmplinit:regproc tmpllexize:regproc"), _empty),
    CatalogRelation("pg_user_mapping", 1418, _c(
        "oid:oid umuser:oid umserver:oid umoptions:text[]"), _empty),
    CatalogRelation("pg_seclabel", 3596, _c(
        "objoid:oid classoid:oid objsubid:int4 provider:text label:text"), _empty),
    CatalogRelation("pg_shseclabel", 3592, _c(
        "objoid:oid classoid:oid provider:text label:text"), _empty),
    CatalogRelation("pg_statistic_ext_data", 3429, _c(
        "stxoid:oid stxdinherit:bool stxdndistinct:text stxddependencies:text stxdmcv:text "
        "stxdexpr:text[]"), _empty),
    CatalogRelation("pg_init_privs", 3394, _c(
        "objoid:oid classoid:oid objsubid:int4 privtype:char initprivs:text[]"), _empty),
    CatalogRelation("pg_default_acl", 826, _c(
        "oid:oid defaclrole:oid defaclnamespace:oid defaclobjtype:char defaclacl:text[]"), _empty),
    CatalogRelation("pg_opclass", 2616, _c(
        "oid:oid opcmethod:oid opcname:name opcnamespace:oid opcowner:oid opcfamily:oid "
        "opcintype:oid opcdefault:bool opckeytype:oid"), _empty),
    CatalogRelation("pg_indexes", 12004, _c("schemaname:name tablename:name indexname:name tablespace:name "
                                            "indexdef:text"), _indexes_view),
    CatalogRelation("pg_tables", 12005, _c("schemaname:name tablename:name tableowner:name tablespace:name "
                                           "hasindexes:bool hasrules:bool hastriggers:bool rowsecurity:bool"),
                    _tables_view),
    CatalogRelation("pg_views", 12006, _c("schemaname:name viewname:name viewowner:name definition:text"), _empty),
    CatalogRelation("pg_matviews", 12007, _c("schemaname:name matviewname:name matviewowner:name definition:text"),
                    _empty),
    CatalogRelation("pg_sequences", 12008, _c(
        "schemaname:name sequencename:name sequenceowner:name data_type:regtype start_value:int8 min_value:int8 "
        "max_value:int8 increment_by:int8 cycle:bool cache_size:int8 last_value:int8"), _sequences_view),
)}


def system_relations() -> list[RelationInfo]:
    return [RelationInfo(relation.oid, relation.name, "r", PG_CATALOG_NAMESPACE_OID, None, None, relation.user_columns)
            for relation in CATALOG_RELATIONS.values()]


def relation_rows(relation: CatalogRelation, snapshot: Snapshot) -> list[tuple]:
    rows = relation.build(snapshot)
    assert all(len(row) == len(relation.user_columns) for row in rows), f"{relation.name} row width"
    return [row + (relation.oid,) for row in rows]


# --- what the catalog functions compute (expressions.py calls these) -----------------------------
def relation_text(snapshot: Snapshot, oid: int) -> str:
    """oid::regclass::text: the relation's name (schema-qualified when not on the search path)."""
    info = snapshot.relation(oid)
    if info is None:
        return str(oid)
    return quote_ident(info.name)


def indexdef(snapshot: Snapshot, oid: int, column: int = 0, pretty: bool = False) -> str | None:
    info = snapshot.relation(oid)
    if info is None or info.kind != "i":
        return None
    return index_definition(info.table, info.index, column, pretty)


def constraintdef(snapshot: Snapshot, oid: int, pretty: bool = False) -> str | None:
    if snapshot._constraints is None:  # built once per statement: pg_constraint queries call this per row
        snapshot._constraints = {info.oid: info for table in snapshot.tables for info in constraints_of(table)}
    info = snapshot._constraints.get(oid)
    return info.definition(pretty) if info is not None else None


def namespace_name(oid: int | None) -> str | None:
    return {PG_CATALOG_NAMESPACE_OID: "pg_catalog", PUBLIC_NAMESPACE_OID: "public", PG_TOAST_NAMESPACE_OID:
            "pg_toast", INFORMATION_SCHEMA_NAMESPACE_OID: "information_schema"}.get(oid, str(oid) if oid else None)


def namespace_oid(name: str) -> int | None:
    return {"pg_catalog": PG_CATALOG_NAMESPACE_OID, "public": PUBLIC_NAMESPACE_OID, "pg_toast":
            PG_TOAST_NAMESPACE_OID, "information_schema": INFORMATION_SCHEMA_NAMESPACE_OID}.get(name)


def encoding_name(encoding: int | None) -> str | None:
    if encoding is None:
        return None
    return {UTF8_ENCODING: "UTF8", 0: "SQL_ASCII"}.get(encoding, "")


def user_name(snapshot: Snapshot, oid: int | None) -> str | None:
    if oid is None:
        return None
    if oid == DATABASE_OWNER_ROLE_OID:
        return DATABASE_OWNER_ROLE
    return snapshot.client.user if oid == OWNER_OID else f"unknown (OID={oid})"


def relation_size(snapshot: Snapshot, oid: int) -> int | None:
    """pg_relation_size & co.: QuorumDB does not track sizes; 0 for a relation that exists."""
    return 0 if snapshot.relation(oid) is not None else None


def size_pretty(size: int | None) -> str | None:
    """PostgreSQL's pg_size_pretty: bytes up to 10 kB, then kB, MB, GB, TB (rounded half up)."""
    if size is None:
        return None
    limit = 10 * 1024
    if abs(size) < limit:
        return f"{size} bytes"
    value = size >> 9  # one extra bit kept for rounding half up, as PostgreSQL does
    for unit in ("kB", "MB", "GB", "TB"):
        if abs(value) < limit * 2:
            return f"{(value + 1) // 2} {unit}"
        value >>= 10
    return f"{(value + 1) // 2} PB"


def resolve_regclass(snapshot: Snapshot, text: str) -> int | None:
    """'name'::regclass: the oid of the relation a (possibly qualified, possibly quoted) name denotes."""
    schema, name = _split_qualified(text)
    info = snapshot.relation_named(name, schema)
    return info.oid if info is not None else None


def _split_qualified(text: str) -> tuple[str | None, str]:
    parts = []
    for match in re.finditer(r'"((?:[^"]|"")*)"|([^."]+)', text.strip()):
        parts.append(match.group(1).replace('""', '"') if match.group(1) is not None else match.group(2).strip().lower())
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    return None, parts[0] if parts else ""


def unknown_relation_error(text: str):
    from quorumdb import errors
    from quorumdb.errors import SqlError
    return SqlError(errors.UNDEFINED_TABLE, f'relation "{text}" does not exist')


def catalog_reference(schema: str | None, name: str) -> CatalogRelation | None:
    """The pg_catalog relation a FROM item names (pg_catalog is searched before public, as in
    PostgreSQL): `pg_catalog.pg_class`, or unqualified `pg_class`."""
    if schema not in (None, "pg_catalog"):
        return None
    return CATALOG_RELATIONS.get(name)


__all__ = ["CATALOG_RELATIONS", "ClientInfo", "Snapshot", "format_type", "relation_rows", "type_oid"]

