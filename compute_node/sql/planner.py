"""Access-path planner: which keys or key range a statement must read from storage.

Theory of operation
-------------------
`plan_access(table, where)` looks only at the top-level AND-ed conditions of a WHERE
clause that compare a primary-key column with a constant (col = c, c = col,
col IN (c1, c2), col BETWEEN a AND b, col < c, ...). From them it picks:

  * "point": every primary-key column is pinned to one or more constants: read the
    cartesian product of those keys (at most limits.PLAN_POINT_KEYS_MAX; beyond that
    the planner falls back to a range);
  * "range": the leading primary-key columns are pinned to single values and the next
    one is optionally bounded: scan [start, end) of encoded keys;
  * "full": scan the whole table.

The plan only narrows what is read: the executor always applies the complete WHERE
clause to every row it reads, so a plan is correct as long as it reads a superset of
the matching rows. Constants are used only when they convert exactly to the column's
type (an integer literal for an integer column, a string for a text column, ...);
anything else is left to the filter. The planner is pure: no I/O, no awaits.
"""
from __future__ import annotations

import dataclasses
import enum
import itertools
import re
from typing import Any

from sqlglot import exp

from compute_node.sql import types
from compute_node.sql.catalog import TableDef, identifier_name
from compute_node.sql.types import Kind
from quorumdb import keys, limits
from quorumdb.errors import SqlError


class PlanKind(str, enum.Enum):
    POINT = "point"
    RANGE = "range"
    FULL = "full"


@dataclasses.dataclass(frozen=True)
class AccessPlan:
    kind: PlanKind
    point_keys: tuple[bytes, ...] = ()   # sorted, unique (kind POINT)
    start: bytes = b""                    # kind RANGE/FULL: start <= key < end
    end: bytes | None = None

    def describe(self) -> str:
        if self.kind is PlanKind.POINT:
            return f"point read of {len(self.point_keys)} key(s)"
        if self.kind is PlanKind.RANGE:
            return f"range scan [{self.start.hex()}, {self.end.hex() if self.end else '∞'})"
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


_FLIPPED = {exp.LT: exp.GT, exp.LTE: exp.GTE, exp.GT: exp.LT, exp.GTE: exp.LTE, exp.EQ: exp.EQ}


def plan_access(table: TableDef, where: exp.Expression | None) -> AccessPlan:
    bounds = {position: _ColumnBounds() for position in table.primary_key}
    for conjunct in _conjuncts(where):
        _collect(table, conjunct, bounds)
    prefix = table.rows_prefix
    pinned_sets: list[set] = []
    for position in table.primary_key:
        pinned = bounds[position].pinned()
        if pinned is None:
            break
        pinned_sets.append(pinned)
    if len(pinned_sets) == len(table.primary_key):
        count = 1
        for values in pinned_sets:
            count *= len(values)
        if count <= limits.PLAN_POINT_KEYS_MAX:
            point_keys = sorted({prefix + keys.encode_key_tuple(combo)
                                 for combo in itertools.product(*[sorted(v, key=types.sort_key) for v in pinned_sets])})
            return AccessPlan(PlanKind.POINT, tuple(point_keys))
    # Range: leading columns pinned to exactly one value, then an optional bound.
    leading: list[Any] = []
    for position in table.primary_key:
        pinned = bounds[position].pinned()
        if pinned is not None and len(pinned) == 1:
            leading.append(next(iter(pinned)))
            continue
        if pinned is not None and len(pinned) == 0:
            return AccessPlan(PlanKind.POINT, ())
        break
    range_bounds = bounds[table.primary_key[len(leading)]] if len(leading) < len(table.primary_key) else None
    base = prefix + keys.encode_key_tuple(leading)
    start, end = base, keys.prefix_end(base)
    bounded = bool(leading)
    if range_bounds is not None and range_bounds.pinned() is None:
        if range_bounds.lower is not None:
            value, inclusive = range_bounds.lower
            encoded = base + keys.encode_key_element(value)
            start = encoded if inclusive else keys.prefix_end(encoded)
            bounded = True
        if range_bounds.upper is not None:
            value, inclusive = range_bounds.upper
            encoded = base + keys.encode_key_element(value)
            end = keys.prefix_end(encoded) if inclusive else encoded
            bounded = True
    if not bounded:
        return AccessPlan(PlanKind.FULL, start=prefix, end=keys.prefix_end(prefix))
    if start is None or (end is not None and start >= end):
        return AccessPlan(PlanKind.POINT, ())  # an empty range
    return AccessPlan(PlanKind.RANGE, start=start, end=end)


def _conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _primary_key_column(table: TableDef, node: exp.Expression) -> int | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
        return None
    # A qualifier (table name or alias) was already checked when the WHERE clause was compiled.
    position = table.column_index(identifier_name(node.this))
    if position is None or position not in table.primary_key:
        return None
    return position


def _collect(table: TableDef, node: exp.Expression, bounds: dict[int, _ColumnBounds]) -> None:
    if isinstance(node, exp.In) and not node.args.get("query"):
        position = _primary_key_column(table, node.this)
        if position is None:
            return
        values = [key_constant(option, table.columns[position].sql_type) for option in node.expressions]
        if any(value is _NOT_USABLE for value in values):
            return
        bounds[position].equal_sets.append({v for v in values if v is not None})
        return
    if isinstance(node, exp.Between) and not node.args.get("symmetric"):
        position = _primary_key_column(table, node.this)
        if position is None:
            return
        sql_type = table.columns[position].sql_type
        low = key_constant(node.args["low"], sql_type)
        high = key_constant(node.args["high"], sql_type)
        if low is not _NOT_USABLE and low is not None:
            _tighten(bounds[position], "lower", (low, True))
        if high is not _NOT_USABLE and high is not None:
            _tighten(bounds[position], "upper", (high, True))
        return
    node_type = type(node)
    if node_type not in _FLIPPED:
        return
    position = _primary_key_column(table, node.this)
    other = node.expression
    if position is None:
        position = _primary_key_column(table, node.expression)
        other = node.this
        node_type = _FLIPPED[node_type]
    if position is None:
        return
    value = key_constant(other, table.columns[position].sql_type)
    if value is _NOT_USABLE:
        return
    column = bounds[position]
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
    """The constant `node` as a key value of `sql_type`, None for NULL, or _NOT_USABLE."""
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
        try:
            value = types.parse_text_as(text, types.SqlType(kind) if kind is Kind.VARCHAR else sql_type)
        except SqlError:
            return _NOT_USABLE  # the compiler reports the error
        return value
    if kind in types.INT_KINDS and re.fullmatch(r"\d+", text):
        value = -int(text) if negate else int(text)
        return value if keys.INT_MIN <= value <= keys.INT_MAX else _NOT_USABLE
    if kind is Kind.DOUBLE:
        try:
            value = float(text)
        except ValueError:
            return _NOT_USABLE
        return -value if negate else value
    return _NOT_USABLE
