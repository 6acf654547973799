"""Access-path planner: which keys or key range a statement must read from storage.

Theory of operation
-------------------
`plan_access(table, conjuncts, column_position)` looks only at the AND-ed conditions
that compare a column of the table with a constant (col = c, c = col,
col IN (c1, c2), col BETWEEN a AND b, col < c, ...). From them it derives, per
column, a set of pinned values and/or a range, and picks the cheapest path:

  * "point": every primary-key column is pinned to one or more constants: read the
    cartesian product of those keys (at most limits.PLAN_POINT_KEYS_MAX; beyond that
    the planner falls back to a range);
  * "index": the leading columns of a secondary index are pinned (or the first
    unpinned one is bounded): scan that slice of the index, then read exactly the
    rows its entries name (point reads), so only matching rows are touched;
  * "range": the leading primary-key columns are pinned to single values and the next
    one is optionally bounded: scan [start, end) of encoded keys;
  * "full": scan the whole table.
Preference: point, then the path that pins the most leading columns (a unique index
fully pinned first), then a bounded primary-key range, a bounded index range, full.

The plan only narrows what is read: the executor always applies the complete WHERE
clause to every row it reads, so a plan is correct as long as it reads a superset of
the matching rows. Constants are used only when they convert exactly to the column's
type (an integer literal for an integer column, a string for a text column, ...);
anything else is left to the filter. The planner is pure: no I/O, no awaits.
"""
from __future__ import annotations

import dataclasses
import decimal
import enum
import itertools
import re
from typing import Any, Callable, Sequence

from sqlglot import exp

from compute_node.sql import types
from compute_node.sql.catalog import IndexDef, TableDef, identifier_name
from compute_node.sql.types import Kind
from quorumdb import keys, limits
from quorumdb.errors import SqlError


class PlanKind(str, enum.Enum):
    POINT = "point"
    RANGE = "range"
    INDEX = "index"
    FULL = "full"


@dataclasses.dataclass(frozen=True)
class AccessPlan:
    kind: PlanKind
    point_keys: tuple[bytes, ...] = ()   # sorted, unique (kind POINT)
    start: bytes = b""                    # kind RANGE/FULL/INDEX: start <= key < end
    end: bytes | None = None
    index: IndexDef | None = None         # kind INDEX: entries of this index in [start, end)
    detail: str = ""                      # the conditions used, for EXPLAIN

    def describe(self) -> str:
        if self.kind is PlanKind.POINT:
            return f"point read of {len(self.point_keys)} key(s)"
        if self.kind is PlanKind.RANGE:
            return f"range scan [{self.start.hex()}, {self.end.hex() if self.end else '∞'})"
        if self.kind is PlanKind.INDEX:
            return f"index scan of {self.index.name}"
        return "full table scan"


@dataclasses.dataclass
class _ColumnBounds:
    equal_sets: list[set] = dataclasses.field(default_factory=list)
    lower: tuple[Any, bool] | None = None   # (value, inclusive)
    upper: tuple[Any, bool] | None = None

    def pinned(self) -> set | None:
        if not self.equal_sets:
            return None
        result = set(self.equal_sets[0])
        for values in self.equal_sets[1:]:
            result &= values
        return result

    @property
    def bounded(self) -> bool:
        return self.lower is not None or self.upper is not None


_FLIPPED = {exp.LT: exp.GT, exp.LTE: exp.GTE, exp.GT: exp.LT, exp.GTE: exp.LTE, exp.EQ: exp.EQ}
ColumnPosition = Callable[[exp.Expression], "int | None"]


def plan_access(table: TableDef, where: exp.Expression | Sequence[exp.Expression] | None,
                column_position: ColumnPosition | None = None) -> AccessPlan:
    conjuncts = where if isinstance(where, (list, tuple)) else split_and(where)
    position_of = column_position or (lambda node: _column_by_name(table, node))
    bounds: dict[int, _ColumnBounds] = {}
    for conjunct in conjuncts:
        for part in split_and(conjunct):
            _collect(table, part, bounds, position_of)
    prefix = table.rows_prefix
    pk_pinned = _pinned_prefix(table.primary_key, bounds)
    if len(pk_pinned) == len(table.primary_key):
        count = 1
        for values in pk_pinned:
            count *= len(values)
        if count <= limits.PLAN_POINT_KEYS_MAX:
            point_keys = sorted({prefix + keys.encode_key_tuple(combo)
                                 for combo in itertools.product(*[sorted(v, key=_value_order) for v in pk_pinned])})
            return AccessPlan(PlanKind.POINT, tuple(point_keys), detail=_detail(table, table.primary_key, bounds))
    if any(len(values) == 0 for values in pk_pinned):
        return AccessPlan(PlanKind.POINT, ())
    candidates = []
    primary = _range_plan(table, table.primary_key, bounds, prefix)
    if primary is not None:
        candidates.append((primary[1], primary[2], 1, primary[0]))
    for index in table.indexes:
        positions = table.index_positions(index)
        found = _range_plan(table, positions, bounds, index.prefix)
        if found is None:
            continue
        plan, pinned, bounded = found
        if plan.kind is PlanKind.POINT:  # an empty slice
            return plan
        unique_hit = index.unique and pinned == len(positions)
        plan = AccessPlan(PlanKind.INDEX, start=plan.start, end=plan.end, index=index, detail=plan.detail)
        candidates.append((pinned + (0.5 if unique_hit else 0), bounded, 0, plan))
    if candidates:
        best = max(candidates, key=lambda c: (c[0], c[1], c[2]))
        if best[0] > 0 or best[1]:
            return best[3]
    return AccessPlan(PlanKind.FULL, start=prefix, end=keys.prefix_end(prefix))


def _value_order(value: Any) -> Any:
    return types.sort_key(value)


def _pinned_prefix(positions: Sequence[int], bounds: dict[int, _ColumnBounds]) -> list[set]:
    pinned_sets: list[set] = []
    for position in positions:
        column = bounds.get(position)
        pinned = column.pinned() if column is not None else None
        if pinned is None:
            break
        pinned_sets.append(pinned)
    return pinned_sets


def _range_plan(table: TableDef, positions: Sequence[int], bounds: dict[int, _ColumnBounds],
                prefix: bytes) -> tuple[AccessPlan, int, bool] | None:
    """A scan of `prefix` narrowed by the leading pinned columns and one bound; None if unnarrowed."""
    leading: list[Any] = []
    for position in positions:
        column = bounds.get(position)
        pinned = column.pinned() if column is not None else None
        if pinned is not None and len(pinned) == 1:
            leading.append(next(iter(pinned)))
            continue
        if pinned is not None and len(pinned) == 0:
            return AccessPlan(PlanKind.POINT, ()), len(leading), True
        break
    next_column = bounds.get(positions[len(leading)]) if len(leading) < len(positions) else None
    base = prefix + keys.encode_key_tuple(leading)
    start, end = base, keys.prefix_end(base)
    bounded = False
    if next_column is not None and next_column.pinned() is None:
        if next_column.lower is not None:
            value, inclusive = next_column.lower
            encoded = base + keys.encode_key_element(value)
            start = encoded if inclusive else keys.prefix_end(encoded)
            bounded = True
        if next_column.upper is not None:
            value, inclusive = next_column.upper
            encoded = base + keys.encode_key_element(value)
            end = keys.prefix_end(encoded) if inclusive else encoded
            bounded = True
    if not leading and not bounded:
        return None
    used = list(positions[:len(leading) + (1 if bounded else 0)])
    if start is None or (end is not None and start >= end):
        return AccessPlan(PlanKind.POINT, ()), len(leading), bounded
    return AccessPlan(PlanKind.RANGE, start=start, end=end, detail=_detail(table, used, bounds)), len(leading), bounded


def _detail(table: TableDef, positions: Sequence[int], bounds: dict[int, _ColumnBounds]) -> str:
    parts = []
    for position in positions:
        column = bounds.get(position)
        if column is None:
            continue
        name = table.columns[position].name
        pinned = column.pinned()
        if pinned is not None:
            values = sorted(pinned, key=_value_order)
            shown = ", ".join(_show(v) for v in values)
            parts.append(f"{name} = {shown}" if len(values) == 1 else f"{name} IN ({shown})")
            continue
        if column.lower is not None:
            parts.append(f"{name} {'>=' if column.lower[1] else '>'} {_show(column.lower[0])}")
        if column.upper is not None:
            parts.append(f"{name} {'<=' if column.upper[1] else '<'} {_show(column.upper[0])}")
    return " AND ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return types.format_value(value)
    return "'" + types.format_value(value).replace("'", "''") + "'"


def split_and(node: exp.Expression | None) -> list[exp.Expression]:
    """The conjuncts of a condition (a AND (b AND c) -> [a, b, c]); none for no condition."""
    if node is None:
        return []
    if isinstance(node, exp.Paren):
        return split_and(node.this)
    if isinstance(node, exp.And):
        return split_and(node.this) + split_and(node.expression)
    return [node]


def _column_by_name(table: TableDef, node: exp.Expression) -> int | None:
    """A single-table statement: the qualifier was already checked when the WHERE clause was compiled."""
    if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
        return None
    return table.column_index(identifier_name(node.this))


def _key_column(node: exp.Expression, position_of: ColumnPosition) -> int | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
        return None
    return position_of(node)


def _collect(table: TableDef, node: exp.Expression, bounds: dict[int, _ColumnBounds],
             position_of: ColumnPosition) -> None:
    if isinstance(node, exp.In) and not node.args.get("query") and not node.args.get("unnest"):
        position = _key_column(node.this, position_of)
        if position is None:
            return
        values = [key_constant(option, table.columns[position].sql_type) for option in node.expressions]
        if any(value is _NOT_USABLE for value in values):
            return
        bounds.setdefault(position, _ColumnBounds()).equal_sets.append({v for v in values if v is not None})
        return
    if isinstance(node, exp.Between) and not node.args.get("symmetric"):
        position = _key_column(node.this, position_of)
        if position is None:
            return
        sql_type = table.columns[position].sql_type
        low = key_constant(node.args["low"], sql_type)
        high = key_constant(node.args["high"], sql_type)
        column = bounds.setdefault(position, _ColumnBounds())
        if low is not _NOT_USABLE and low is not None:
            _tighten(column, "lower", (low, True))
        if high is not _NOT_USABLE and high is not None:
            _tighten(column, "upper", (high, True))
        return
    node_type = type(node)
    if node_type not in _FLIPPED:
        return
    position = _key_column(node.this, position_of)
    other = node.expression
    if position is None:
        position = _key_column(node.expression, position_of)
        other = node.this
        node_type = _FLIPPED[node_type]
    if position is None:
        return
    value = key_constant(other, table.columns[position].sql_type)
    if value is _NOT_USABLE:
        return
    column = bounds.setdefault(position, _ColumnBounds())
    if value is None:  # a comparison with NULL is never true
        column.equal_sets.append(set())
        return
    if node_type is exp.EQ:
        column.equal_sets.append({value})
    elif node_type in (exp.GT, exp.GTE):
        _tighten(column, "lower", (value, node_type is exp.GTE))
    else:
        _tighten(column, "upper", (value, node_type is exp.LTE))


def _tighten(column: _ColumnBounds, side: str, bound: tuple[Any, bool]) -> None:
    current = getattr(column, side)
    if current is None:
        setattr(column, side, bound)
        return
    current_key, new_key = types.sort_key(current[0]), types.sort_key(bound[0])
    if side == "lower":
        tighter = new_key > current_key or (new_key == current_key and not bound[1])
    else:
        tighter = new_key < current_key or (new_key == current_key and not bound[1])
    if tighter:
        setattr(column, side, bound)


_NOT_USABLE = object()


def key_constant(node: exp.Expression, sql_type: types.SqlType) -> Any:
    """The constant `node` as a key value of `sql_type`, None for NULL, or _NOT_USABLE.

    Only values that compare exactly like the column's own values qualify: a string
    literal parsed by the column type's input function, an integer literal for an
    integer or numeric column, a numeric literal for a numeric column, a boolean for
    a boolean column. char(n) columns are padded, so a literal is padded the same way.
    """
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Null):
        return None
    negate = False
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        negate, node = True, node.this
    kind = sql_type.kind
    if isinstance(node, exp.Boolean):
        return bool(node.this) if kind is Kind.BOOLEAN else _NOT_USABLE
    if not isinstance(node, exp.Literal):
        return _NOT_USABLE
    text = node.this
    if node.is_string:
        if kind in (Kind.REAL, Kind.DOUBLE):
            return _NOT_USABLE  # float keys: NaN/-0 subtleties are left to the filter
        try:
            if kind is Kind.CHAR:
                return types.check_string(text.rstrip(" "), sql_type) if len(text.rstrip(" ")) <= (sql_type.length or 0) \
                    else _NOT_USABLE
            parse_type = types.SqlType(kind) if kind is Kind.VARCHAR else sql_type
            if kind is Kind.NUMERIC:
                parse_type = types.NUMERIC
            value = types.parse_text_as(text, parse_type)
        except SqlError:
            return _NOT_USABLE  # the compiler reports the error
        return value
    if kind in types.INT_KINDS and re.fullmatch(r"\d+", text):
        value = -int(text) if negate else int(text)
        return value if keys.INT_MIN <= value <= keys.INT_MAX else _NOT_USABLE
    if kind is Kind.NUMERIC:
        try:
            value = decimal.Decimal(text)
        except decimal.InvalidOperation:
            return _NOT_USABLE
        return -value if negate else value
    return _NOT_USABLE
