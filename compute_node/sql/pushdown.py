"""What a single-table SELECT pushes to storage: a filter and a projection (pure).

Theory of operation
-------------------
`build(table, relation, conjuncts, position_of, statement)` looks at a SELECT whose only
source is a base table read by a full or range scan. Each AND-ed conjunct of WHERE is
translated into quorumdb/pushdown.py's filter language when, and only when, the
storage node's evaluation is exactly the engine's: comparisons (= <> < <= > >=) of a
column with a constant where
  * integer columns (smallint/integer/bigint) meet an integer literal within int64;
  * double precision columns meet an integer literal below 2**53 or a decimal literal
    (PostgreSQL converts it to float8, correctly rounded, as Python's float() does);
  * text/varchar columns meet a string literal (C collation: code point order);
  * boolean columns meet TRUE/FALSE;
  * any of those meets NULL (never true);
plus IS [NOT] NULL on any column, a boolean column alone, and AND/OR/NOT of pushable
parts. char(n), real, numeric, dates, casts, functions, parameters and other columns
are left to the compute node. A conjunct that is not exactly pushable is simply not
pushed; the engine re-applies the complete WHERE to every row storage returns, so the
pushed filter only saves traffic and never decides the answer alone.

Projection: the columns the statement can use are every table column whose name appears
as an identifier anywhere in the statement (a superset: table names, aliases and the
qualifier of t.col excepted), plus the primary key; `*` (other
than in count(*)) or a whole-row reference (the table's name used as a value) needs all
columns, and then nothing is projected. Unneeded columns come back as NULL.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

from sqlglot import exp

from compute_node.sql.catalog import TableDef, identifier_name
from compute_node.sql.types import Kind
from quorumdb import pushdown as storage_pushdown

_FLOAT_SAFE_INT = 2**53
_OPS = {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
_FLIP = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_DECIMAL = re.compile(r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclasses.dataclass(frozen=True)
class Pushdown:
    spec: bytes                       # quorumdb/pushdown.py JSON
    filter_sql: str | None            # the pushed conjuncts, for EXPLAIN
    columns: tuple[str, ...] | None   # the columns storage returns (None: all)

    def explain_lines(self) -> list[str]:
        lines = []
        if self.filter_sql is not None:
            lines.append(f"Storage Filter: ({self.filter_sql})")
        if self.columns is not None:
            lines.append(f"Storage Columns: {', '.join(self.columns)}")
        return lines


def build(table: TableDef, relation_name: str, relation_columns: Sequence[tuple[str, Any]],
          conjuncts: Sequence[exp.Expression], position_of: Callable[[exp.Expression], "int | None"],
          statement: exp.Expression) -> Pushdown | None:
    nodes, shown = [], []
    for conjunct in conjuncts:
        node = _translate(table, conjunct, position_of)
        if node is not None:
            nodes.append(node)
            shown.append(conjunct.sql(dialect="postgres"))
    filter_node = None if not nodes else nodes[0] if len(nodes) == 1 else ["and", *nodes]
    needed = _needed_positions(table, relation_name, relation_columns, statement)
    slots = None
    names = None
    if needed is not None and len(needed) < len(table.columns):
        slots = [table.column_slot(p) for p in sorted(needed)]
        names = tuple(table.columns[p].name for p in sorted(needed))
    if filter_node is None and slots is None:
        return None
    spec = storage_pushdown.encode(filter_node, slots)
    return Pushdown(spec, " AND ".join(shown) if shown else None, names)


def _needed_positions(table: TableDef, relation_name: str, relation_columns: Sequence[tuple[str, Any]],
                      statement: exp.Expression) -> set[int] | None:
    """Positions of the table columns the statement may use; None: all of them."""
    for star in statement.find_all(exp.Star):
        if not isinstance(star.parent, exp.Count):
            return None
    names: set[str] = set()
    for node in statement.find_all(exp.Identifier):
        parent = node.parent
        if isinstance(parent, (exp.Table, exp.TableAlias)):
            continue  # a table name or alias, not a value
        if isinstance(parent, exp.Column) and node is not parent.this:
            continue  # the qualifier of t.col
        names.add(identifier_name(node))
    for node in statement.find_all(exp.Var):
        names.add(str(node.this).lower())
    if relation_name in names or table.name in names:
        return None  # possibly a whole-row reference
    needed = {position for position, (name, _) in enumerate(relation_columns) if name in names}
    return needed | set(table.primary_key)


def _translate(table: TableDef, node: exp.Expression, position_of) -> list | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, (exp.And, exp.Or)):
        left = _translate(table, node.this, position_of)
        right = _translate(table, node.expression, position_of)
        if left is None or right is None:
            return None
        return ["and" if isinstance(node, exp.And) else "or", left, right]
    if isinstance(node, exp.Not):
        inner = _translate(table, node.this, position_of)
        return None if inner is None else ["not", inner]
    if isinstance(node, exp.Is):
        position = _column(node.this, position_of)
        target = node.expression
        if position is None or not isinstance(target, exp.Null):
            return None
        test = ["isnull", table.column_slot(position)]
        return ["not", test] if node.args.get("negate") else test
    if isinstance(node, exp.Column):
        position = _column(node, position_of)
        if position is None or table.columns[position].sql_type.kind is not Kind.BOOLEAN:
            return None
        return ["col", table.column_slot(position)]
    symbol = _OPS.get(type(node))
    if symbol is None:
        return None
    position, other = _column(node.this, position_of), node.expression
    if position is None:
        position, other, symbol = _column(node.expression, position_of), node.this, _FLIP[symbol]
    if position is None:
        return None
    kind = _storage_kind(table.columns[position].sql_type.kind)
    if kind is None:
        return None
    ok, constant = _constant(other, kind)
    if not ok:
        return None
    return ["cmp", symbol, table.column_slot(position), kind, constant]


def _column(node: exp.Expression, position_of) -> int | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
        return None
    return position_of(node)


def _storage_kind(kind: Kind) -> str | None:
    if kind in (Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT):
        return "int"
    if kind is Kind.DOUBLE:
        return "float"
    if kind in (Kind.TEXT, Kind.VARCHAR):
        return "text"
    if kind is Kind.BOOLEAN:
        return "bool"
    return None


def _constant(node: exp.Expression, kind: str) -> tuple[bool, Any]:
    """(usable, value): the literal as the storage filter compares it."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Null):
        return True, None
    if kind == "bool":
        return (True, bool(node.this)) if isinstance(node, exp.Boolean) else (False, None)
    negate = False
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        negate, node = True, node.this
    if not isinstance(node, exp.Literal):
        return False, None
    text = node.this
    if kind == "text":
        return (True, text) if node.is_string and not negate and "\x00" not in text else (False, None)
    if node.is_string:
        return False, None
    if kind == "int":
        if not re.fullmatch(r"\d+", text):
            return False, None
        value = -int(text) if negate else int(text)
        return (True, value) if -(2**63) <= value <= 2**63 - 1 else (False, None)
    # float
    if re.fullmatch(r"\d+", text):
        value = int(text)
        if value >= _FLOAT_SAFE_INT:
            return False, None
        return True, float(-value if negate else value)
    if not _DECIMAL.fullmatch(text):
        return False, None
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        return False, None
    return True, -value if negate else value
