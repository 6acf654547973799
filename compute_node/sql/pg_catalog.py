"""What PostgreSQL tools ask the catalog, answered from QuorumDB's table definitions.

Theory of operation
-------------------
psql's \\d commands, SQLAlchemy's reflection and drivers' start-up probes query pg_catalog
(pg_class, pg_attribute, pg_index, ... joined, with regex operators, casts to regclass and
catalog functions) and call session functions (version(), current_user, current_setting()).
The SQL engine implements none of that, and is being extended by others; so instead of
teaching it PostgreSQL's catalog, this module *recognises* those statements and answers them:

  * `SELECT` without FROM whose every item is a session function or a literal
    (`SELECT pg_catalog.version()`, `select current_schema()`, `SELECT current_setting('x')`);
  * the catalog queries of psql (\\d, \\dt, \\di, \\d NAME) and SQLAlchemy (has_table,
    get_table_names, get_columns, get_pk_constraint, get_indexes, ...), matched by their shape
    (the tables they read and the distinctive columns they ask for) with the names they look
    for pulled out of the text;
  * any other query reading pg_catalog tables answers no rows (with the columns of its select
    list, when they can be named), so a tool's optional look-ups (publications, policies,
    statistics objects, inheritance) find "nothing" rather than fail.

Answers are built from the table definitions (compute_node/sql/catalog.py TableDef) of the
session's snapshot, read by the caller (`context.tables()`), so they are consistent and see the
transaction's own DDL. OIDs are synthetic and stable: a table's oid is 16384 + table_id, its
primary-key index 2 * that, the namespace public is 2200, as in PostgreSQL.

`recognise(sql)` is pure (text in, an answer function or None out); the answer functions
await only `context.tables()`.
"""
from __future__ import annotations

import dataclasses
import platform
import re
from typing import Any, Awaitable, Callable, Protocol

from quorumdb import errors
from quorumdb.errors import SqlError

PUBLIC_NAMESPACE_OID = 2200
PG_CATALOG_NAMESPACE_OID = 11
TABLE_OID_BASE = 16384
OWNER_OID = 10
BTREE_AM_OID = 403  # PostgreSQL's oid of the btree access method
VERSION_TEXT = (f"PostgreSQL 16.0 (QuorumDB 0.1) on {platform.machine() or 'x86_64'}-pc-linux-gnu, "
                "compiled by Python, 64-bit")


@dataclasses.dataclass
class CatalogResult:
    columns: list[tuple[str, str]]
    rows: list[tuple]
    tag: str


class Context(Protocol):
    user: str
    database: str
    process_id: int
    settings: Any   # .get(name) -> str

    async def tables(self) -> list[Any]: ...


Answer = Callable[[Context], Awaitable[CatalogResult]]


def result(columns: list[tuple[str, str]], rows: list[tuple]) -> CatalogResult:
    return CatalogResult(columns, rows, f"SELECT {len(rows)}")


def recognise(sql: str) -> Answer | None:
    lowered = sql.lower()
    if not _MARKERS.search(lowered):
        return None
    answer = _function_select(sql)
    if answer is not None:
        return answer
    normalized = " ".join(lowered.split())
    for matcher in _MATCHERS:
        answer = matcher(sql, normalized)
        if answer is not None:
            return answer
    catalogs = _catalog_tables(normalized)
    if catalogs:
        if _empty_by_construction(catalogs, normalized):
            return _empty_answer(sql)
        return _unsupported_answer(catalogs)
    return None


def mentions_catalog(text: str) -> bool:
    """Whether `text` has anything recognise() looks for (a cheap test; False means it never matches)."""
    return _MARKERS.search(text.lower()) is not None


_MARKERS = re.compile(r"pg_|version\s*\(|current_|session_user|\buser\b|inet_server|txid_|has_\w+_privilege"
                      r"|obj_description|col_description|format_type|to_regclass")


# --- session functions ------------------------------------------------------------------------
_ITEM = re.compile(
    r"""^\s*(?:pg_catalog\s*\.\s*)?(?P<function>[a-z_][a-z0-9_]*)\s*(?:\(\s*(?P<args>(?:'(?:[^']|'')*'|[^()'])*)\s*\))?"""
    r"""(?:\s*::\s*(?:pg_catalog\s*\.\s*)?[a-z_ ]+)?(?:\s+(?:as\s+)?(?P<alias>"[^"]+"|[a-z_][a-z0-9_]*))?\s*$""",
    re.IGNORECASE)
_LITERAL = re.compile(r"""^\s*(?P<value>-?\d+(?:\.\d+)?|'(?:[^']|'')*')\s*(?:\s+(?:as\s+)?(?P<alias>"[^"]+"|[a-z_][a-z0-9_]*))?\s*$""",
                      re.IGNORECASE)
_NO_PAREN_FUNCTIONS = {"current_user", "session_user", "user", "current_schema", "current_catalog", "current_role"}


def _session_value(function: str, args: list[str], context: Context) -> tuple[Any, str]:
    match function:
        case "version":
            return VERSION_TEXT, "text"
        case "current_database" | "current_catalog":
            return context.database, "name"
        case "current_schema":
            return "public", "name"
        case "current_schemas":
            return ["pg_catalog", "public"] if args and args[0].lower() == "true" else ["public"], "name[]"
        case "current_user" | "session_user" | "user" | "current_role" | "getpgusername":
            return context.user, "name"
        case "pg_backend_pid":
            return context.process_id, "integer"
        case "current_setting":
            if not args:
                raise SqlError(errors.UNDEFINED_FUNCTION, "function current_setting() does not exist")
            return context.settings.get(_string(args[0])), "text"
        case "pg_is_in_recovery":
            return False, "boolean"
        case "inet_server_port":
            return None, "integer"
        case "inet_server_addr":
            return "127.0.0.1", "text"
        case "pg_postmaster_start_time" | "now" | "transaction_timestamp" | "statement_timestamp":
            return None, "timestamp with time zone"
        case "txid_current" | "pg_current_xact_id":
            return None, "bigint"
    raise KeyError(function)


_KNOWN_FUNCTIONS = {"version", "current_database", "current_catalog", "current_schema", "current_schemas",
                    "current_user", "session_user", "user", "current_role", "getpgusername", "pg_backend_pid",
                    "current_setting", "pg_is_in_recovery", "inet_server_port", "inet_server_addr"}


def _string(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text


def _split_top_level(text: str) -> list[str]:
    items, depth, current, quoted = [], 0, [], False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if not quoted:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append("".join(current))
                current = []
                continue
        current.append(ch)
    items.append("".join(current))
    return items


def _function_select(sql: str) -> Answer | None:
    text = sql.strip().rstrip(";").strip()
    match = re.match(r"^select\s+(.*)$", text, re.IGNORECASE | re.DOTALL)
    if match is None or re.search(r"\b(from|where|union|order|limit)\b", match.group(1), re.IGNORECASE):
        return None
    plan: list[tuple[str, Any]] = []
    found_function = False
    for item in _split_top_level(match.group(1)):
        function_match = _ITEM.match(item)
        if function_match is not None:
            function = function_match.group("function").lower()
            has_parens = function_match.group("args") is not None or "(" in item
            if function in _KNOWN_FUNCTIONS and (has_parens or function in _NO_PAREN_FUNCTIONS):
                args = [a for a in _split_top_level(function_match.group("args") or "") if a.strip()]
                plan.append(("function", (function, args, _alias(function_match.group("alias")) or function)))
                found_function = True
                continue
            if function in ("true", "false") and not has_parens:
                plan.append(("literal", (function == "true", "boolean", _alias(function_match.group("alias")) or "bool")))
                continue
        literal_match = _LITERAL.match(item)
        if literal_match is not None:
            value = literal_match.group("value")
            if value.startswith("'"):
                typed = (_string(value), "text")
            elif "." in value:
                typed = (float(value), "numeric")
            else:
                typed = (int(value), "integer")
            plan.append(("literal", (typed[0], typed[1], _alias(literal_match.group("alias")) or "?column?")))
            continue
        return None
    if not found_function:
        return None

    async def answer(context: Context) -> CatalogResult:
        columns, row = [], []
        for kind, spec in plan:
            if kind == "function":
                function, args, name = spec
                value, type_name = _session_value(function, args, context)
            else:
                value, type_name, name = spec
            columns.append((name, type_name))
            row.append(value)
        return result(columns, [tuple(row)])

    return answer


def _alias(alias: str | None) -> str | None:
    if alias is None:
        return None
    return alias[1:-1] if alias.startswith('"') else alias.lower()


# --- catalog queries ------------------------------------------------------------------------
_MATCHERS: list[Callable[[str, str], Answer | None]] = []


def matcher(function: Callable[[str, str], Answer | None]) -> Callable[[str, str], Answer | None]:
    _MATCHERS.append(function)
    return function


@matcher
def _psycopg_type_info(sql: str, normalized: str) -> Answer | None:
    # psycopg's TypeInfo.fetch(name): SELECT typname AS name, oid, typarray AS array_oid,
    # oid::regtype::text AS regtype, typdelim AS delimiter FROM pg_type t WHERE t.oid = to_regtype('x')
    if "from pg_type t where t.oid = to_regtype(" not in normalized:
        return None
    found = re.search(r"to_regtype\(\s*'((?:[^']|'')*)'", sql, re.IGNORECASE)
    name = found.group(1).replace("''", "'").lower() if found else ""

    async def answer(context: Context) -> CatalogResult:
        from compute_node.pgwire import pgtypes  # the wire layer's type table (OIDs, typnames)

        rows = []
        oid = pgtypes.lookup_type(name)
        if oid is not None:  # no row for types QuorumDB lacks (hstore, citext, ...): the true answer
            rows.append((pgtypes.TYPES[oid][0], oid, pgtypes.array_oid(oid), pgtypes.regtype_name(oid), ","))
        columns = [("name", "name"), ("oid", "oid"), ("array_oid", "oid"), ("regtype", "text"), ("delimiter", '"char"')]
        return result(columns, rows)

    return answer


_CATALOG_TABLE = re.compile(r"\bpg_catalog\s*\.\s*pg_\w+|\bfrom\s+pg_\w+|\bjoin\s+pg_\w+")


# Catalogs of features QuorumDB does not have: in QuorumDB they hold no rows, so "no rows" is
# the true answer to a query that inner-joins one of them (psql's \d asks for policies,
# publications, statistics objects, inheritance, triggers, ... of every table it describes).
ALWAYS_EMPTY_CATALOGS = frozenset({
    "pg_policy", "pg_publication", "pg_publication_rel", "pg_publication_namespace", "pg_statistic_ext",
    "pg_statistic_ext_data", "pg_inherits", "pg_trigger", "pg_event_trigger", "pg_rewrite", "pg_foreign_table",
    "pg_foreign_server", "pg_foreign_data_wrapper", "pg_user_mapping", "pg_partitioned_table", "pg_description",
    "pg_shdescription", "pg_seclabel", "pg_shseclabel", "pg_subscription", "pg_subscription_rel", "pg_sequence",
    "pg_enum", "pg_range", "pg_extension", "pg_largeobject", "pg_largeobject_metadata", "pg_init_privs",
    "pg_default_acl", "pg_transform", "pg_policies", "pg_publication_tables", "pg_sequences", "pg_matviews",
    "pg_views", "pg_rules", "pg_triggers",
})
_OUTER = re.compile(r"\b(?:left|right|full|outer|except|intersect)\b")
# pg_* names that are not function calls: the catalog relations a query reads.
_CATALOG_NAME = re.compile(r"\b(pg_[a-z_0-9]+)\b(?!\s*\()")
_NOT_RELATIONS = frozenset({"pg_catalog", "pg_temp", "pg_toast"})


def _catalog_tables(normalized: str) -> set[str]:
    if not _CATALOG_TABLE.search(normalized):
        return set()
    return {m.group(1) for m in _CATALOG_NAME.finditer(normalized)} - _NOT_RELATIONS or {"pg_catalog"}


_UNION = re.compile(r"\bunion(?:\s+all)?\b")


def _empty_by_construction(catalogs: set[str], normalized: str) -> bool:
    """True when every UNION branch inner-joins a catalog that is always empty here (so the answer
    is truly empty): no outer join, no EXCEPT/INTERSECT."""
    if not catalogs & ALWAYS_EMPTY_CATALOGS:
        return False
    for branch in _UNION.split(normalized):
        if _OUTER.search(branch) or not _catalog_tables(branch) & ALWAYS_EMPTY_CATALOGS:
            return False
    return True


def _unsupported_answer(catalogs: set[str]) -> Answer:
    """Anything else is refused rather than answered wrongly (an empty pg_class would be a lie)."""
    names = ", ".join(sorted(catalogs))

    async def answer(context: Context) -> CatalogResult:
        raise SqlError(
            errors.FEATURE_NOT_SUPPORTED,
            f"this pg_catalog query is not supported (reads {names})",
            detail="QuorumDB answers the catalog queries of psql's \\d commands and SQLAlchemy's reflection, "
                   "and information_schema.tables/columns/key_column_usage.",
            hint="See docs/POSTGRES.md.",
        )

    return answer


def _empty_answer(sql: str) -> Answer:
    columns = [(name, "text") for name in _select_list_names(sql)]

    async def answer(context: Context) -> CatalogResult:
        return result(columns, [])

    return answer


def _select_list_names(sql: str) -> list[str]:
    """Best-effort output names of a SELECT's items (PostgreSQL's rules: alias, column, function)."""
    match = re.match(r"^\s*select\s+(?:distinct\s+)?(.*?)\s+from\s", sql, re.IGNORECASE | re.DOTALL)
    if match is None:
        return []
    names = []
    for item in _split_top_level(match.group(1)):
        item = item.strip()
        alias = re.search(r'\s(?:as\s+)?("[^"]+"|[a-z_][a-z0-9_]*)\s*$', item, re.IGNORECASE)
        if alias is not None and re.search(r"\sas\s", item, re.IGNORECASE):
            names.append(_alias(alias.group(1)))
            continue
        column = re.match(r"^(?:[a-z_][a-z0-9_]*\s*\.\s*)*([a-z_][a-z0-9_]*)$", item, re.IGNORECASE)
        if column is not None:
            names.append(column.group(1).lower())
            continue
        function = re.match(r"^(?:[a-z_][a-z0-9_]*\s*\.\s*)*([a-z_][a-z0-9_]*)\s*\(", item, re.IGNORECASE)
        names.append(function.group(1).lower() if function is not None else "?column?")
    return names


# --- relations: tables and their indexes, with synthetic OIDs ------------------------------------
@dataclasses.dataclass(frozen=True)
class Relation:
    oid: int
    name: str
    kind: str                 # 'r' table, 'i' index
    table: Any                # TableDef
    index: "IndexInfo | None" = None


@dataclasses.dataclass(frozen=True)
class IndexInfo:
    name: str
    columns: tuple[str, ...]
    descending: tuple[bool, ...]
    unique: bool
    primary: bool
    constraint: str | None    # 'p' primary key, 'u' unique constraint, None: a plain index


def table_oid(table: Any) -> int:
    return TABLE_OID_BASE + 2 * table.table_id


def indexes_of(table: Any) -> list[tuple[int, IndexInfo]]:
    """(oid, info) of the primary-key index and every secondary index of a table."""
    pk_columns = tuple(table.columns[p].name for p in table.primary_key)
    found = [] if table.has_rowid else [(table_oid(table) + 1, IndexInfo(
        table.constraint_name, pk_columns, (False,) * len(pk_columns), True, True, "p"))]
    for index in getattr(table, "indexes", ()) or ():
        descending = tuple(getattr(index, "descending", ()) or (False,) * len(index.columns))
        constraint = "u" if getattr(index, "constraint", False) else None
        found.append((TABLE_OID_BASE + 2 * index.index_id,
                      IndexInfo(index.name, tuple(index.columns), descending, bool(index.unique), False, constraint)))
    return found


def relations(tables: list[Any]) -> list[Relation]:
    found: list[Relation] = []
    for table in tables:
        found.append(Relation(table_oid(table), table.name, "r", table))
        for oid, info in indexes_of(table):
            found.append(Relation(oid, info.name, "i", table, info))
    return found


def format_type(sql_type: Any) -> str:
    display = getattr(sql_type, "display_name", None)
    if display and display != "unknown":
        return display
    return sql_type.pg_name


def _quote_ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def index_columns_text(info: IndexInfo) -> str:
    return ", ".join(_quote_ident(column) + (" DESC" if descending else "")
                     for column, descending in zip(info.columns, info.descending or (False,) * len(info.columns)))


def index_definition(table: Any, info: IndexInfo) -> str:
    unique = "UNIQUE " if info.unique else ""
    return (f"CREATE {unique}INDEX {_quote_ident(info.name)} ON public.{_quote_ident(table.name)} "
            f"USING btree ({index_columns_text(info)})")


def constraint_definition(info: IndexInfo) -> str | None:
    columns = ", ".join(_quote_ident(column) for column in info.columns)
    if info.constraint == "p":
        return f"PRIMARY KEY ({columns})"
    if info.constraint == "u":
        return f"UNIQUE ({columns})"
    return None


# --- pulling what a query looks for out of its text -------------------------------------------
_OID_EQUALS = re.compile(r"\b(?:oid|attrelid|indexrelid|indrelid|conrelid|objoid|relid)\s*=\s*'?(\d+)'?", re.IGNORECASE)
_OID_IN = re.compile(r"\b(?:oid|attrelid|indexrelid|indrelid|conrelid)\s+in\s*\(([\d\s,']+)\)", re.IGNORECASE)
_REGEX = re.compile(r"(relname|nspname)\s+operator\s*\(\s*pg_catalog\s*\.\s*~\s*\)\s*'((?:[^']|'')*)'", re.IGNORECASE)
_NAME_IN = re.compile(r"relname\s+in\s*\(((?:\s*'(?:[^']|'')*'(?:\s*::\s*\w+)?\s*,?)+)\)", re.IGNORECASE)
_NAME_EQUALS = re.compile(r"relname\s*=\s*'((?:[^']|'')*)'", re.IGNORECASE)
_STRING = re.compile(r"'((?:[^']|'')*)'")


def _oids(sql: str) -> set[int]:
    found = {int(value) for value in _OID_EQUALS.findall(sql)}
    for group in _OID_IN.findall(sql):
        found.update(int(value) for value in re.findall(r"\d+", group))
    return found


def _name_filter(sql: str) -> Callable[[str], bool]:
    """relname = 'x' / relname IN ('x', ...) / relname OPERATOR(pg_catalog.~) '^(x)$' -> predicate."""
    tests: list[Callable[[str], bool]] = []
    for column, pattern in _REGEX.findall(sql):
        compiled = re.compile(pattern.replace("''", "'"))
        if column.lower() == "relname":
            tests.append(lambda name, compiled=compiled: compiled.search(name) is not None)
        else:
            tests.append(lambda name, compiled=compiled: compiled.search("public") is not None)
    for group in _NAME_IN.findall(sql):
        names = {value.replace("''", "'") for value in _STRING.findall(group)}
        tests.append(lambda name, names=names: name in names)
    for value in _NAME_EQUALS.findall(sql):
        tests.append(lambda name, value=value.replace("''", "'"): name == value)
    return lambda name: all(test(name) for test in tests)


def _relkinds(normalized: str) -> set[str]:
    match = re.search(r"relkind\s+in\s*\(([^)]*)\)", normalized)
    if match is None:
        match = re.search(r"relkind\s*=\s*any\s*\(\s*array\s*\[([^\]]*)\]", normalized)
    if match is None:
        return {"r"}
    return set(_STRING.findall(match.group(1)))


async def _relations(context: Context) -> list[Relation]:
    return relations(await context.tables())


async def _named_relations(context: Context, kinds, matches: Callable[[str], bool]) -> list[Relation]:
    """The relations of the given kinds whose name passes the query's name filter, by name."""
    return [relation for relation in sorted(await _relations(context), key=lambda r: r.name)
            if relation.kind in kinds and matches(relation.name)]


def _by_oid(found: list[Relation], oids: set[int]) -> list[Relation]:
    return [relation for relation in found if relation.oid in oids]


# --- psql ------------------------------------------------------------------------------------
_KIND_NAMES = {"r": "table", "i": "index"}


@matcher
def _psql_list_relations(sql: str, normalized: str) -> Answer | None:
    # \d, \dt, \di, \dv, ... (psql's listTables)
    if 'c.relname as "name"' not in normalized or "from pg_catalog.pg_class c" not in normalized:
        return None
    kinds = _relkinds(normalized)
    with_table = 'as "table"' in normalized
    verbose = 'as "persistence"' in normalized
    matches = _name_filter(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in await _named_relations(context, kinds, matches):
            row: tuple = ("public", relation.name, _KIND_NAMES[relation.kind], context.user)
            if with_table:
                row += (relation.table.name if relation.kind == "i" else None,)
            if verbose:
                row += ("permanent", "heap" if relation.kind == "r" else "btree", "0 bytes", None)
            rows.append(row)
        columns = [("Schema", "name"), ("Name", "name"), ("Type", "text"), ("Owner", "name")]
        if with_table:
            columns.append(("Table", "name"))
        if verbose:
            columns += [("Persistence", "text"), ("Access method", "name"), ("Size", "text"), ("Description", "text")]
        return result(columns, rows)

    return answer


@matcher
def _psql_find_relation(sql: str, normalized: str) -> Answer | None:
    # describeTableDetails step 1: SELECT c.oid, n.nspname, c.relname ... relname OPERATOR(~) '^(t)$'
    if not normalized.startswith("select c.oid, n.nspname, c.relname from pg_catalog.pg_class c"):
        return None
    matches = _name_filter(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = [(relation.oid, "public", relation.name) for relation in await _relations(context)
                if matches(relation.name)]
        rows.sort(key=lambda row: row[2])
        return result([("oid", "oid"), ("nspname", "name"), ("relname", "name")], rows)

    return answer


@matcher
def _psql_relation_info(sql: str, normalized: str) -> Answer | None:
    # step 2: SELECT c.relchecks, c.relkind, c.relhasindex, ... WHERE c.oid = '16384'
    if not normalized.startswith("select c.relchecks, c.relkind, c.relhasindex"):
        return None
    oids = _oids(sql)
    width = len(_split_top_level(re.match(r"^\s*select\s+(.*?)\s+from\s", sql, re.I | re.S).group(1)))

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in _by_oid(await _relations(context), oids):
            checks = len(getattr(relation.table, "checks", ()) or ()) if relation.kind == "r" else 0
            row = (checks, relation.kind, relation.kind == "r", False, False, False, False, False, False, "", 0, "",
                   "p", "d", "heap" if relation.kind == "r" else "btree")
            rows.append(row[:width] + (None,) * (width - len(row)))
        names = ["relchecks", "relkind", "relhasindex", "relhasrules", "relhastriggers", "relrowsecurity",
                 "relforcerowsecurity", "relhasoids", "relispartition", "?column?", "reltablespace", "reloftype",
                 "relpersistence", "relreplident", "amname"]
        types_ = ["smallint", '"char"', "boolean", "boolean", "boolean", "boolean", "boolean", "boolean", "boolean",
                  "text", "oid", "text", '"char"', '"char"', "name"]
        columns = list(zip(names, types_))[:width] + [("?column?", "text")] * max(0, width - len(names))
        return result(columns, rows)

    return answer


@matcher
def _psql_table_columns(sql: str, normalized: str) -> Answer | None:
    # step 3 (table): SELECT a.attname, format_type(...), (default), a.attnotnull, collation, identity, generated
    if not normalized.startswith("select a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)"):
        return None
    oids = _oids(sql)
    index_form = "is_key" in normalized
    head = re.match(r"^\s*select\s+(.*?)\s+from\s+pg_catalog\.pg_attribute\s+a\s", sql, re.I | re.S)
    width = len(_split_top_level(head.group(1))) if head else 7

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in _by_oid(await _relations(context), oids):
            table = relation.table
            if relation.kind == "i":
                for column in relation.index.columns:
                    position = table.column_index(column)
                    sql_type = table.columns[position].sql_type if position is not None else None
                    rows.append((column, format_type(sql_type) if sql_type else "text", "yes", column))
                continue
            for column in table.visible_columns:
                default = getattr(column, "default", None)
                row = (column.name, format_type(column.sql_type), default, bool(column.not_null), None, "", "")
                rows.append(row[:width] + (None,) * (width - len(row)))
        if index_form:
            columns = [("attname", "name"), ("format_type", "text"), ("is_key", "text"), ("indexdef", "text")]
        else:
            names = [("attname", "name"), ("format_type", "text"), ("pg_get_expr", "text"), ("attnotnull", "boolean"),
                     ("attcollation", "name"), ("attidentity", '"char"'), ("attgenerated", '"char"')]
            columns = names[:width] + [("?column?", "text")] * max(0, width - len(names))
        return result(columns, rows)

    return answer


@matcher
def _psql_table_indexes(sql: str, normalized: str) -> Answer | None:
    # step 4: SELECT c2.relname, i.indisprimary, i.indisunique, ... FROM pg_class c, pg_class c2, pg_index i
    if not normalized.startswith("select c2.relname, i.indisprimary, i.indisunique"):
        return None
    oids = _oids(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in _by_oid(await _relations(context), oids):
            if relation.kind != "r":
                continue
            infos = sorted((info for _, info in indexes_of(relation.table)), key=lambda i: (not i.primary, i.name))
            for info in infos:
                rows.append((info.name, info.primary, info.unique, False, True,
                             index_definition(relation.table, info), constraint_definition(info), info.constraint,
                             False if info.constraint else None, False if info.constraint else None, False, 0))
        columns = [("relname", "name"), ("indisprimary", "boolean"), ("indisunique", "boolean"),
                   ("indisclustered", "boolean"), ("indisvalid", "boolean"), ("pg_get_indexdef", "text"),
                   ("pg_get_constraintdef", "text"), ("contype", '"char"'), ("condeferrable", "boolean"),
                   ("condeferred", "boolean"), ("indisreplident", "boolean"), ("reltablespace", "oid")]
        return result(columns, rows)

    return answer


@matcher
def _psql_index_info(sql: str, normalized: str) -> Answer | None:
    # \d INDEX: SELECT i.indisunique, i.indisprimary, ... a.amname, c2.relname, pg_get_expr(i.indpred...)
    if not normalized.startswith("select i.indisunique, i.indisprimary, i.indisclustered, i.indisvalid"):
        return None
    oids = _oids(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in _by_oid(await _relations(context), oids):
            if relation.kind == "i":
                info = relation.index
                rows.append((info.unique, info.primary, False, True, False, False, False, False, "btree",
                             relation.table.name, None))
        columns = [("indisunique", "boolean"), ("indisprimary", "boolean"), ("indisclustered", "boolean"),
                   ("indisvalid", "boolean"), ("condeferrable", "boolean"), ("condeferred", "boolean"),
                   ("indisreplident", "boolean"), ("indnullsnotdistinct", "boolean"), ("amname", "name"),
                   ("relname", "name"), ("pg_get_expr", "text")]
        return result(columns, rows)

    return answer


@matcher
def _psql_check_constraints(sql: str, normalized: str) -> Answer | None:
    # SELECT r.conname, pg_catalog.pg_get_constraintdef(r.oid, true) ... r.contype = 'c'
    if not normalized.startswith("select r.conname, pg_catalog.pg_get_constraintdef(r.oid, true)") \
            or "contype = 'c'" not in normalized:
        return None
    oids = _oids(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in _by_oid(await _relations(context), oids):
            for check in getattr(relation.table, "checks", ()) or ():
                rows.append((check.name, f"CHECK ({check.sql})"))
        return result([("conname", "name"), ("pg_get_constraintdef", "text")], sorted(rows))

    return answer


# --- SQLAlchemy's PostgreSQL dialect --------------------------------------------------------------
_SA_CLASS = "from pg_catalog.pg_class join pg_catalog.pg_namespace on pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace"


@matcher
def _sqlalchemy_relnames(sql: str, normalized: str) -> Answer | None:
    # has_table / get_table_names / the oid lookup before get_pk_constraint and friends
    with_oid = normalized.startswith("select pg_catalog.pg_class.oid, pg_catalog.pg_class.relname " + _SA_CLASS)
    if not (with_oid or normalized.startswith("select pg_catalog.pg_class.relname " + _SA_CLASS)):
        return None
    kinds = _relkinds(normalized)
    matches = _name_filter(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in await _named_relations(context, kinds, matches):
            rows.append((relation.oid, relation.name) if with_oid else (relation.name,))
        columns = ([("oid", "oid")] if with_oid else []) + [("relname", "name")]
        return result(columns, rows)

    return answer


@matcher
def _sqlalchemy_columns(sql: str, normalized: str) -> Answer | None:
    if not normalized.startswith("select pg_catalog.pg_attribute.attname as name, pg_catalog.format_type("):
        return None
    kinds = _relkinds(normalized)
    matches = _name_filter(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in await _named_relations(context, kinds, matches):
            for column in relation.table.visible_columns:
                rows.append((column.name, format_type(column.sql_type), getattr(column, "default", None),
                             bool(column.not_null), relation.name, None, "", None, None))
        columns = [("name", "name"), ("format_type", "text"), ("default", "text"), ("not_null", "boolean"),
                   ("table_name", "name"), ("comment", "text"), ("generated", '"char"'),
                   ("identity_options", "json"), ("collation", "json")]
        return result(columns, rows)

    return answer


@matcher
def _sqlalchemy_foreign_keys(sql: str, normalized: str) -> Answer | None:
    # get_foreign_keys / get_multi_foreign_keys: pg_class LEFT OUTER JOIN pg_constraint (contype 'f') ...
    if not (normalized.startswith("select pg_catalog.pg_class.relname, pg_catalog.pg_constraint.conname,")
            and re.search(r"pg_constraint\.contype\s*=\s*'f'", normalized)):
        return None
    kinds = _relkinds(normalized)
    matches = _name_filter(sql)

    async def answer(context: Context) -> CatalogResult:
        # QuorumDB has no foreign keys: each matching table once, its constraint columns NULL.
        rows = [(relation.name, None, None, None, None)
                for relation in await _named_relations(context, kinds, matches)]
        columns = [("relname", "name"), ("conname", "name"), ("anon_1", "text"), ("nspname", "name"),
                   ("description", "text")]
        return result(columns, rows)

    return answer


@matcher
def _access_method_by_name(sql: str, normalized: str) -> Answer | None:
    # SELECT pg_am.oid, pg_am.amname FROM pg_catalog.pg_am WHERE pg_am.amname = 'btree' (SQLAlchemy)
    if not re.match(r"select pg_catalog\.pg_am\.oid, pg_catalog\.pg_am\.amname from pg_catalog\.pg_am where", normalized):
        return None
    found = re.search(r"amname\s*=\s*'((?:[^']|'')*)'", sql, re.IGNORECASE)
    name = found.group(1) if found else ""

    async def answer(context: Context) -> CatalogResult:
        # QuorumDB's indexes are ordered (btree-like); it has no other access method.
        rows = [(BTREE_AM_OID, "btree")] if name == "btree" else []
        return result([("oid", "oid"), ("amname", "name")], rows)

    return answer


@matcher
def _non_default_opclasses(sql: str, normalized: str) -> Answer | None:
    # SELECT pg_opclass.oid, pg_opclass.opcname FROM pg_catalog.pg_opclass WHERE NOT pg_opclass.opcdefault
    if not re.match(r"select pg_catalog\.pg_opclass\.oid, pg_catalog\.pg_opclass\.opcname from "
                    r"pg_catalog\.pg_opclass where not pg_catalog\.pg_opclass\.opcdefault", normalized):
        return None

    async def answer(context: Context) -> CatalogResult:
        return result([("oid", "oid"), ("opcname", "name")], [])  # QuorumDB has only default opclasses

    return answer


@matcher
def _sqlalchemy_indexes(sql: str, normalized: str) -> Answer | None:
    # get_indexes / get_multi_indexes: SELECT pg_index.indrelid, pg_class.relname, pg_index.indisunique, ...
    # FROM pg_index JOIN pg_class ... WHERE pg_index.indrelid IN (oids) AND NOT pg_index.indisprimary
    if not normalized.startswith("select pg_catalog.pg_index.indrelid, pg_catalog.pg_class.relname, "
                                 "pg_catalog.pg_index.indisunique"):
        return None
    oids = _oids(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in _by_oid(await _relations(context), oids):
            if relation.kind != "r":
                continue
            secondary = sorted((info for _, info in indexes_of(relation.table) if not info.primary),
                               key=lambda info: info.name)
            for info in secondary:
                width = len(info.columns)
                # int2vector's text form is space-separated (not an array literal); 1 = DESC
                indoption = " ".join("1" if descending else "0" for descending in info.descending)
                rows.append((relation.oid, info.name, info.unique, True, info.constraint is not None, indoption,
                             None, BTREE_AM_OID, None, width, False, list(info.columns), [False] * width,
                             [0] * width))
        columns = [("indrelid", "oid"), ("relname", "name"), ("indisunique", "boolean"), ("indisvalid", "boolean"),
                   ("has_constraint", "boolean"), ("indoption", "int2vector"), ("reloptions", "text[]"),
                   ("relam", "oid"), ("filter_definition", "text"), ("indnkeyatts", "smallint"),
                   ("indnullsnotdistinct", "boolean"), ("elements", "text[]"), ("elements_is_expr", "boolean[]"),
                   ("elements_opclass", "bigint[]")]
        return result(columns, rows)

    return answer


@matcher
def _sqlalchemy_table_comments(sql: str, normalized: str) -> Answer | None:
    # get_table_comment: pg_class LEFT OUTER JOIN pg_description -> each table once, comment NULL
    if not normalized.startswith("select pg_catalog.pg_class.relname, pg_catalog.pg_description.description "
                                 "from pg_catalog.pg_class left outer join pg_catalog.pg_description"):
        return None
    kinds = _relkinds(normalized)
    matches = _name_filter(sql)

    async def answer(context: Context) -> CatalogResult:
        # QuorumDB keeps no comments: each matching table once, its description NULL.
        rows = [(relation.name, None) for relation in await _named_relations(context, kinds, matches)]
        return result([("relname", "name"), ("description", "text")], rows)

    return answer


@matcher
def _sqlalchemy_check_constraints(sql: str, normalized: str) -> Answer | None:
    # get_check_constraints: pg_class LEFT OUTER JOIN pg_constraint (contype 'c') LEFT OUTER JOIN pg_description
    if not (normalized.startswith("select pg_catalog.pg_class.relname, pg_catalog.pg_constraint.conname,")
            and re.search(r"pg_constraint\.contype\s*=\s*'c'", normalized)):
        return None
    kinds = _relkinds(normalized)
    matches = _name_filter(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in await _named_relations(context, kinds, matches):
            checks = sorted(getattr(relation.table, "checks", ()) or (), key=lambda check: check.name)
            if not checks:  # the LEFT JOIN keeps the table, with NULL constraint columns
                rows.append((relation.name, None, None, None))
            for check in checks:
                rows.append((relation.name, check.name, f"CHECK ({check.sql})", None))
        columns = [("relname", "name"), ("conname", "name"), ("anon_1", "text"), ("description", "text")]
        return result(columns, rows)

    return answer


@matcher
def _sqlalchemy_table_options(sql: str, normalized: str) -> Answer | None:
    # get_table_options: oid, relname, reloptions, access method, tablespace, inherited parents
    if not normalized.startswith("select pg_catalog.pg_class.oid, pg_catalog.pg_class.relname, "
                                 "pg_catalog.pg_class.reloptions"):
        return None
    kinds = _relkinds(normalized)
    matches = _name_filter(sql)

    async def answer(context: Context) -> CatalogResult:
        # No storage options, default access method and tablespace, no inheritance.
        rows = [(relation.oid, relation.name, None, None, None, None, None)
                for relation in await _named_relations(context, kinds, matches)]
        columns = [("oid", "oid"), ("relname", "name"), ("reloptions", "text[]"), ("relhasoids", "boolean"),
                   ("access_method_name", "name"), ("tablespace_name", "name"), ("parent_table_names", "name[]")]
        return result(columns, rows)

    return answer


@matcher
def _sqlalchemy_key_constraints(sql: str, normalized: str) -> Answer | None:
    # get_pk_constraint / get_unique_constraints: SELECT attr.conrelid, array_agg(...) AS cols, attr.conname, ...
    if not normalized.startswith("select attr.conrelid, array_agg("):
        return None
    match = re.search(r"pg_constraint\.contype\s*=\s*'(\w)'", normalized)
    kind = match.group(1) if match else "p"
    oids = _oids(sql)

    async def answer(context: Context) -> CatalogResult:
        rows = []
        for relation in _by_oid(await _relations(context), oids):
            if relation.kind != "r":
                continue
            for _, info in indexes_of(relation.table):
                if info.constraint == kind:
                    rows.append((relation.oid, list(info.columns), info.name, None, len(info.columns), False))
        rows.sort(key=lambda row: (row[0], row[2]))
        columns = [("conrelid", "oid"), ("cols", "text[]"), ("conname", "name"), ("description", "text"),
                   ("indnkeyatts", "smallint"), ("indnullsnotdistinct", "boolean")]
        return result(columns, rows)

    return answer
