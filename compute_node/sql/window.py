"""Window functions: `f(...) OVER (PARTITION BY ... ORDER BY ... frame)` (pure, no I/O).

Theory of operation
-------------------
Window functions run after WHERE, GROUP BY and HAVING and before DISTINCT, ORDER BY
and LIMIT, as in PostgreSQL. Compiling a select list (or ORDER BY) that calls one
hands the call to the query's `WindowCollector` (`Compiler.windows`), which compiles
its arguments, PARTITION BY and ORDER BY over the row the window sees (the source
row, or the grouped row of a grouped query, so `sum(count(*)) OVER ()` works) and
returns an evaluator that reads slot `base + k` of an *extended* row. At the end of
the query, `apply(rows)` partitions and sorts the rows once per distinct
(PARTITION BY, ORDER BY), computes every call, and returns each row followed by
its window values; the select list and ORDER BY are then evaluated over those.

Frames follow PostgreSQL: the default is RANGE BETWEEN UNBOUNDED PRECEDING AND
CURRENT ROW (the current row's peers included), without ORDER BY every row is a
peer; ROWS counts rows, GROUPS counts peer groups, RANGE with an offset compares the
single ORDER BY value (NULLs are peers of each other and lie before or after every
value, as they sort); EXCLUDE CURRENT ROW / GROUP / TIES remove rows from a frame.
An aggregate over a frame that starts at the partition's first row accumulates as
the frame grows; count and sums/averages of integers over a frame whose ends only
move forward add and remove each row once; other frames are recomputed per row
(reusing the previous result when the frame did not move), and the rows so visited
by one statement are bounded by `limits.WINDOW_FRAME_ROWS_MAX`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from sqlglot import exp

from compute_node.sql import types
from compute_node.sql.catalog import identifier_name
from compute_node.sql.expressions import (
    EMPTY_SCOPE, AggregateSpec, Compiled, Compiler, _aggregate_type, _as_text, _converted, _group_key_value,
    _no_function, coerce,
)
from compute_node.sql.types import Kind
from quorumdb import errors, limits
from quorumdb.errors import SqlError


RANKING = {exp.RowNumber: "row_number", exp.Rank: "rank", exp.DenseRank: "dense_rank",
           exp.PercentRank: "percent_rank", exp.CumeDist: "cume_dist", exp.Ntile: "ntile"}
VALUE = {exp.Lag: "lag", exp.Lead: "lead", exp.FirstValue: "first_value", exp.LastValue: "last_value",
         exp.NthValue: "nth_value"}
AGGREGATES = {exp.Count: "count", exp.Sum: "sum", exp.Min: "min", exp.Max: "max", exp.Avg: "avg",
              exp.LogicalAnd: "bool_and", exp.LogicalOr: "bool_or", exp.GroupConcat: "string_agg"}
_WINDOW_ARGS = {"this", "partition_by", "order", "spec", "alias", "over"}  # what add() reads


@dataclasses.dataclass
class Bound:
    side: str                    # "unbounded preceding", "preceding", "current", "following", "unbounded following"
    offset: Any = None           # the constant n of "n PRECEDING/FOLLOWING"


@dataclasses.dataclass
class Frame:
    mode: str                    # rows, range, groups
    start: Bound
    end: Bound
    exclude: str = "no others"   # no others, current row, group, ties


DEFAULT_FRAME = Frame("range", Bound("unbounded preceding"), Bound("current"))


@dataclasses.dataclass
class Ordering:
    """A (PARTITION BY, ORDER BY) pair: rows are partitioned and sorted once for all its calls."""
    partition: list[Compiled]
    order: list[tuple[Compiled, bool, bool]]      # (value, descending, nulls first)


@dataclasses.dataclass
class Call:
    name: str
    ordering: Ordering
    frame: Frame
    arguments: list[Compiled]
    aggregate: AggregateSpec | None
    result_type: types.SqlType
    # An aggregate whose state can drop a row exactly (count; sum/avg of integers), so a frame
    # sliding forward costs one add and one remove per row. Sums of numeric are not: removing
    # 1.50 leaves a scale PostgreSQL would not show; of floats neither: the order of additions
    # changes the last bits.
    invertible: bool = False


class WindowCollector:
    """The window calls of one SELECT; see the module docstring."""

    def __init__(self, definitions: Sequence[exp.Window], accumulator: Callable[[AggregateSpec], Any]):
        self.definitions: dict[str, exp.Window] = {}
        for definition in definitions:
            name = identifier_name(definition.this)
            if name in self.definitions:
                raise SqlError(errors.WINDOWING_ERROR, f'window "{name}" is already defined')
            self.definitions[name] = definition
        self.accumulator = accumulator
        self.calls: list[Call] = []
        self._orderings: dict[tuple, Ordering] = {}
        self.base = 0                # where window values start in the extended row (set by apply)

    # --- compile ---------------------------------------------------------------------
    def add(self, compiler: Compiler, node: exp.Window) -> Compiled:
        for key, value in node.args.items():
            if key not in _WINDOW_ARGS and value not in (None, False, []):
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{key.upper()} in a window is not supported")
        inner = Compiler(compiler.scope, "window function calls", compiler.aggregates, compiler.context)
        partition_nodes, order_node, spec = self._resolve(node)
        key = (tuple(n.sql(dialect="postgres") for n in partition_nodes),
               order_node.sql(dialect="postgres") if order_node is not None else "")
        ordering = self._orderings.get(key)
        if ordering is None:
            definer = Compiler(compiler.scope, "window definitions", compiler.aggregates, compiler.context)
            partition = [definer.compile_typed(n) for n in partition_nodes]
            order = []
            for item in (order_node.expressions if order_node is not None else []):
                if item.args.get("with_fill") is not None:
                    raise SqlError(errors.FEATURE_NOT_SUPPORTED, "WITH FILL is not supported")
                descending = bool(item.args.get("desc"))
                nulls_first = item.args.get("nulls_first")
                order.append((definer.compile_typed(item.this), descending,
                              descending if nulls_first is None else bool(nulls_first)))
            ordering = self._orderings[key] = Ordering(partition, order)
        frame = _frame(spec, ordering, compiler.context)
        function = node.this
        filter_node = None
        if isinstance(function, exp.Filter):
            condition = function.expression
            filter_node = condition.this if isinstance(condition, exp.Where) else condition
            function = function.this
            if type(function) not in AGGREGATES:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                               "FILTER is not implemented for non-aggregate window functions")
        if type(function) in RANKING:
            call = self._ranking(function, inner, ordering, frame)
        elif type(function) in VALUE:
            call = self._value(function, inner, ordering, frame)
        elif type(function) in AGGREGATES:
            call = self._aggregate(function, inner, ordering, frame, filter_node, compiler)
        else:
            name = str(function.this).lower() if isinstance(function, exp.Anonymous) else function.sql_name().lower()
            if isinstance(function, (exp.IgnoreNulls, exp.RespectNulls)):
                name = "IGNORE/RESPECT NULLS"
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"window function {name} is not supported")
        self.calls.append(call)
        slot = len(self.calls) - 1
        return Compiled(lambda row, k=slot, c=self: row[c.base + k], call.result_type)

    def _resolve(self, node: exp.Window):
        """(PARTITION BY nodes, ORDER BY node, frame spec) after following `OVER w` / `OVER (w ...)`."""
        partition = list(node.args.get("partition_by") or [])
        order = node.args.get("order")
        spec = node.args.get("spec")
        reference = node.args.get("alias")
        seen = 0
        while reference is not None:
            seen += 1
            if seen > len(self.definitions) + 1:
                raise SqlError(errors.WINDOWING_ERROR, "window definitions refer to each other in a cycle")
            name = identifier_name(reference)
            base = self.definitions.get(name)
            if base is None:
                raise SqlError(errors.UNDEFINED_OBJECT, f'window "{name}" does not exist')
            if partition:
                raise SqlError(errors.WINDOWING_ERROR, f'cannot override PARTITION BY clause of window "{name}"')
            if order is not None and base.args.get("order") is not None:
                raise SqlError(errors.WINDOWING_ERROR, f'cannot override ORDER BY clause of window "{name}"')
            copying = order is not None or spec is not None
            if copying and base.args.get("spec") is not None:
                raise SqlError(errors.WINDOWING_ERROR, f'cannot copy window "{name}" because it has a frame clause')
            partition = list(base.args.get("partition_by") or [])
            order = order if order is not None else base.args.get("order")
            spec = spec if spec is not None else base.args.get("spec")
            reference = base.args.get("alias")
        return partition, order, spec

    def _ranking(self, function, inner: Compiler, ordering: Ordering, frame: Frame) -> Call:
        name = RANKING[type(function)]
        argument_nodes = [function.this] if isinstance(function, (exp.RowNumber, exp.Ntile)) else \
            list(function.args.get("expressions") or [])
        argument_nodes = [n for n in argument_nodes if n is not None]
        if name == "ntile":
            if len(argument_nodes) != 1:
                raise _no_function(name, [inner.compile(n) for n in argument_nodes])
            buckets = _int_argument(name, inner, argument_nodes[0], [])
            return Call(name, ordering, frame, [buckets], None, types.INTEGER)
        arguments = [inner.compile(n) for n in argument_nodes]
        if arguments:
            raise _no_function(name, arguments)
        result_type = types.DOUBLE if name in ("percent_rank", "cume_dist") else types.BIGINT
        return Call(name, ordering, frame, [], None, result_type)

    def _value(self, function, inner: Compiler, ordering: Ordering, frame: Frame) -> Call:
        name = VALUE[type(function)]
        value = inner.compile(function.this)
        default_node = function.args.get("default") if name in ("lag", "lead") else None
        if value.sql_type.kind in types.UNTYPED_KINDS and default_node is None:
            # anyelement: an untyped argument leaves the result type undetermined.
            raise SqlError(errors.DATATYPE_MISMATCH,
                           "could not determine polymorphic type because input has type unknown")
        if name in ("lag", "lead"):
            offset_node = function.args.get("offset")
            offset = _int_argument(name, inner, offset_node, [value]) if offset_node is not None else None
            result_type = value.sql_type.base
            default = None
            if default_node is not None:  # lag(anycompatible, integer, anycompatible)
                default = inner.compile(default_node)
                try:
                    result_type = types.common_type([value.sql_type, default.sql_type], name)
                except SqlError:
                    raise _no_function(name, [value, offset or _integer_constant(1), default]) from None
                default = coerce(default, result_type)
                value = coerce(value, result_type)
            return Call(name, ordering, frame, [value, offset, default], None, result_type)
        if name == "nth_value":
            if function.args.get("from_first") is not None:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, "nth_value FROM FIRST/LAST is not supported")
            position = _int_argument(name, inner, function.args["offset"], [value])
            return Call(name, ordering, frame, [value, position], None, value.sql_type.base)
        return Call(name, ordering, frame, [value], None, value.sql_type.base)

    def _aggregate(self, function, inner: Compiler, ordering: Ordering, frame: Frame,
                   filter_node: exp.Expression | None, compiler: Compiler) -> Call:
        name = AGGREGATES[type(function)]
        argument_node = function.this
        if isinstance(argument_node, exp.Distinct):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "DISTINCT is not implemented for window functions")
        if function.args.get("expressions") and name in ("min", "max"):
            raise _no_function(name, [])
        argument = None
        if isinstance(argument_node, exp.Star):
            if name != "count":
                raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near "*"')
        else:
            argument = inner.compile_typed(argument_node)
        integer_argument = argument is not None and argument.sql_type.kind in types.INT_KINDS
        separator = None
        if name == "string_agg":
            separator_node = function.args.get("separator")
            if separator_node is None or argument.sql_type.kind not in types.TEXT_KINDS + types.UNTYPED_KINDS:
                raise _no_function(name, [argument])
            separator = _as_text(inner.compile_typed(separator_node))
            argument = _as_text(argument)
        condition = None
        if filter_node is not None:
            condition = Compiler(compiler.scope, "FILTER", compiler.aggregates,
                                 compiler.context).compile_condition(filter_node)
        result_type = _aggregate_type(name, argument)
        if argument is not None and name in ("sum", "avg") and argument.sql_type.kind in types.INT_KINDS \
                and result_type.kind is Kind.NUMERIC:
            argument = _converted(argument, types.NUMERIC)
        if argument is not None and argument.sql_type.kind is Kind.CHAR and name not in ("min", "max", "count"):
            argument = _as_text(argument)
        invertible = name == "count" or (name in ("sum", "avg") and integer_argument)
        spec = AggregateSpec(name, argument, False, result_type, condition, separator)
        return Call(name, ordering, frame, [], spec, result_type, invertible)

    # --- run -----------------------------------------------------------------------------
    def apply(self, rows: list[tuple]) -> list[tuple]:
        """Each row followed by the values of every window call."""
        if not rows:
            return []
        self.base = len(rows[0])
        values: list[list] = [[None] * len(self.calls) for _ in rows]
        budget = [limits.WINDOW_FRAME_ROWS_MAX]
        output_order: list[int] = []
        for ordering in self._orderings.values():
            calls = [(k, c) for k, c in enumerate(self.calls) if c.ordering is ordering]
            output_order = []
            for partition, order_values in _partitions(rows, ordering):
                output_order += partition
                peers = _Peers(order_values)
                partition_rows = [rows[i] for i in partition]
                for slot, call in calls:
                    results = _evaluate(call, partition_rows, order_values, peers, self.accumulator, budget)
                    for index, value in zip(partition, results):
                        values[index][slot] = value
        # Rows leave in the last window's order, as from PostgreSQL's last WindowAgg (what a
        # LIMIT without ORDER BY then keeps).
        return [rows[i] + tuple(values[i]) for i in output_order]


def _int_argument(name: str, inner: Compiler, node: exp.Expression, before: list[Compiled]) -> Compiled:
    compiled = inner.compile(node)
    if compiled.sql_type.kind not in (Kind.SMALLINT, Kind.INTEGER) + types.UNTYPED_KINDS:
        raise _no_function(name, before + [compiled])  # integer only: a bigint offset is 42883
    return _converted(coerce(compiled, types.INTEGER), types.INTEGER)


def _integer_constant(value: int) -> Compiled:
    return Compiled(lambda row: value, types.INTEGER, True)


def _frame(spec: exp.WindowSpec | None, ordering: Ordering, context) -> Frame:
    if spec is None:
        return DEFAULT_FRAME
    mode = str(spec.args.get("kind") or "").lower()
    if mode not in ("rows", "range", "groups"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"window frame {mode} is not supported")
    start = _bound(spec.args.get("start"), spec.args.get("start_side"), mode, ordering, context)
    end_node = spec.args.get("end")
    end = _bound(end_node, spec.args.get("end_side"), mode, ordering, context) if end_node is not None \
        else Bound("current")
    if start.side == "unbounded following":
        raise SqlError(errors.WINDOWING_ERROR, "frame start cannot be UNBOUNDED FOLLOWING")
    if end.side == "unbounded preceding":
        raise SqlError(errors.WINDOWING_ERROR, "frame end cannot be UNBOUNDED PRECEDING")
    if start.side == "current" and end.side == "preceding":
        raise SqlError(errors.WINDOWING_ERROR, "frame starting from current row cannot have preceding rows")
    if start.side == "following" and end.side in ("preceding", "current"):
        raise SqlError(errors.WINDOWING_ERROR, "frame starting from following row cannot have preceding rows"
                       if end.side == "preceding" else "frame starting from following row cannot end with current row")
    if mode == "groups" and not ordering.order:
        raise SqlError(errors.WINDOWING_ERROR, "GROUPS mode requires an ORDER BY clause")
    exclude = spec.args.get("exclude")
    exclude_word = " ".join(str(exclude.this if isinstance(exclude, exp.Var) else exclude).lower().split()) \
        if exclude is not None else "no others"
    if exclude_word not in ("no others", "current row", "group", "ties"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"EXCLUDE {exclude_word} is not supported")
    return Frame(mode, start, end, exclude_word)


def _bound(node, side, mode: str, ordering: Ordering, context) -> Bound:
    side_word = str(side or "").lower()
    if isinstance(node, str):
        word = node.upper()
        if word == "UNBOUNDED":
            return Bound(f"unbounded {side_word}")
        if word == "CURRENT ROW":
            return Bound("current")
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"window frame bound {node} is not supported")
    if isinstance(node, exp.Var) and node.name.upper() in ("UNBOUNDED", "CURRENT ROW"):
        return _bound(node.name, side, mode, ordering, context)
    if any(isinstance(n, (exp.Column, exp.Subquery, exp.Select)) for n in node.walk()):
        raise SqlError(errors.INVALID_COLUMN_REFERENCE, f"argument of {mode.upper()} must not contain variables")
    offset = Compiler(EMPTY_SCOPE, mode.upper(), None, context).compile(node)
    if offset.param is not None:  # $n being described: its type is the offset's, its value unknown
        offset.param.infer(types.BIGINT if mode != "range" or not ordering.order else ordering.order[0][0].sql_type)
        return Bound(side_word, 0)
    if mode == "range":
        offset = _range_offset(offset, ordering)
    else:
        offset = coerce(offset, types.BIGINT)
        if offset.sql_type.kind not in types.INT_KINDS + (Kind.NULL,):
            raise SqlError(errors.DATATYPE_MISMATCH,
                           f"argument of {mode.upper()} must be type bigint, not type {offset.sql_type.display_name}")
    value = offset.evaluate(())
    if value is None:
        raise SqlError(errors.NULL_VALUE_NOT_ALLOWED, f"frame {'starting' if side_word else 'ending'} offset must not be null")
    if value < 0:
        raise SqlError(errors.INVALID_PRECEDING_OR_FOLLOWING_SIZE, "frame starting offset must not be negative")
    return Bound(side_word, value)


def _range_offset(offset: Compiled, ordering: Ordering) -> Compiled:
    if len(ordering.order) != 1:
        raise SqlError(errors.WINDOWING_ERROR, "RANGE with offset PRECEDING/FOLLOWING requires exactly one ORDER BY column")
    column_type = ordering.order[0][0].sql_type
    kind = column_type.kind
    if offset.sql_type.kind is Kind.UNKNOWN:
        offset = coerce(offset, column_type)
    offset_kind = offset.sql_type.kind
    allowed = {Kind.SMALLINT: types.INT_KINDS, Kind.INTEGER: types.INT_KINDS, Kind.BIGINT: types.INT_KINDS,
               Kind.NUMERIC: (Kind.NUMERIC,) + types.INT_KINDS,
               Kind.REAL: types.NUMERIC_KINDS, Kind.DOUBLE: types.NUMERIC_KINDS}.get(kind, ())
    if offset_kind not in allowed and offset_kind is not Kind.NULL:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       f"RANGE with offset PRECEDING/FOLLOWING is not supported for column type "
                       f"{column_type.display_name} and offset type {offset.sql_type.display_name}")
    if kind in types.FLOAT_KINDS:
        return _converted(offset, types.DOUBLE)
    if kind is Kind.NUMERIC:
        return _converted(offset, types.NUMERIC)
    return offset


# --- run helpers -------------------------------------------------------------------------
def _partitions(rows: list[tuple], ordering: Ordering):
    """[(row indices in window order, their ORDER BY values)] per partition."""
    partition_evals = [c.evaluate for c in ordering.partition]
    groups: dict[tuple, tuple[tuple, list[int]]] = {}
    for index, row in enumerate(rows):
        partition_values = tuple(e(row) for e in partition_evals)
        key = tuple(_group_key_value(v) for v in partition_values)
        groups.setdefault(key, (partition_values, []))[1].append(index)
    # Partitions in PARTITION BY order (ascending, NULLs last), as PostgreSQL sorts them.
    in_order = sorted(groups.values(), key=lambda entry: tuple(
        (1, 0) if v is None else (0, types.sort_key(v)) for v in entry[0]))
    order_evals = [c.evaluate for c, _, _ in ordering.order]
    for _, indices in in_order:
        keyed = [(i, tuple(e(rows[i]) for e in order_evals)) for i in indices]
        keyed = types.sort_by_keys(keyed, [(d, n) for _, d, n in ordering.order], field=1)
        yield [i for i, _ in keyed], [v for _, v in keyed]


class _Peers:
    """Peer groups of a sorted partition: rows with equal ORDER BY values."""

    def __init__(self, order_values: list[tuple]):
        self.group_of: list[int] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        previous = object()
        for index, values in enumerate(order_values):
            marker = tuple(None if v is None else _group_key_value(types.sort_key(v)) for v in values)
            if marker != previous:
                if self.starts:
                    self.ends.append(index)
                self.starts.append(index)
                previous = marker
            self.group_of.append(len(self.starts) - 1)
        if self.starts:
            self.ends.append(len(order_values))

    def start(self, index: int) -> int:
        return self.starts[self.group_of[index]]

    def end(self, index: int) -> int:
        return self.ends[self.group_of[index]]


def _evaluate(call: Call, rows: list[tuple], order_values: list[tuple], peers: _Peers,
              accumulator, budget: list[int]) -> list:
    count = len(rows)
    name = call.name
    if name == "row_number":
        return list(range(1, count + 1))
    if name == "rank":
        return [peers.start(i) + 1 for i in range(count)]
    if name == "dense_rank":
        return [peers.group_of[i] + 1 for i in range(count)]
    if name == "percent_rank":
        return [0.0 if count == 1 else peers.start(i) / (count - 1) for i in range(count)]
    if name == "cume_dist":
        return [peers.end(i) / count for i in range(count)]
    if name == "ntile":
        return _ntile(call.arguments[0].evaluate, rows)
    if name in ("lag", "lead"):
        return _lag_lead(call, rows)
    bounds = _frame_bounds(call.frame, call.ordering, order_values, peers)
    if call.aggregate is not None:
        return _aggregate_values(call, rows, bounds, peers, accumulator, budget)
    value = call.arguments[0].evaluate
    out = []
    for i, (start, end) in enumerate(bounds):
        members = _members(call.frame, i, start, end, peers)
        if name == "first_value":
            out.append(value(rows[members[0]]) if members else None)
        elif name == "last_value":
            out.append(value(rows[members[-1]]) if members else None)
        else:
            position = call.arguments[1].evaluate(rows[i])
            if position is not None and position <= 0:
                raise SqlError(errors.INVALID_ARGUMENT_FOR_NTH_VALUE_FUNCTION, "argument of nth_value must be greater than zero")
            out.append(value(rows[members[position - 1]]) if position is not None and position <= len(members)
                       else None)
    return out


def _ntile(evaluate, rows: list[tuple]) -> list:
    count = len(rows)
    out: list = []
    buckets = None
    for i, row in enumerate(rows):
        if buckets is None:  # PostgreSQL reads the argument at each row until it is not NULL
            buckets = evaluate(row)
            if buckets is None:
                out.append(None)
                continue
            if buckets <= 0:
                raise SqlError(errors.INVALID_ARGUMENT_FOR_NTILE_FUNCTION, "argument of ntile must be greater than zero")
        size, remainder = divmod(count, buckets)
        big = remainder * (size + 1)  # the first `remainder` buckets hold size + 1 rows
        out.append(i // (size + 1) + 1 if i < big else remainder + (i - big) // size + 1)
    return out


def _lag_lead(call: Call, rows: list[tuple]) -> list:
    value, offset, default = call.arguments
    sign = -1 if call.name == "lag" else 1
    out = []
    for i, row in enumerate(rows):
        distance = 1 if offset is None else offset.evaluate(row)
        if distance is None:
            out.append(None)
            continue
        target = i + sign * distance
        if 0 <= target < len(rows):
            out.append(value.evaluate(rows[target]))
        else:
            out.append(default.evaluate(row) if default is not None else None)
    return out


def _frame_bounds(frame: Frame, ordering: Ordering, order_values: list[tuple], peers: _Peers) -> list[tuple[int, int]]:
    """[start, end) of each row's frame before EXCLUDE."""
    count = len(order_values)
    if frame.mode == "range" and (frame.start.offset is not None or frame.end.offset is not None):
        return _range_offset_bounds(frame, ordering, order_values, peers)
    out = []
    for i in range(count):
        out.append((_bound_index(frame.mode, frame.start, i, count, peers, True),
                     _bound_index(frame.mode, frame.end, i, count, peers, False)))
    return out


def _bound_index(mode: str, bound: Bound, i: int, count: int, peers: _Peers, is_start: bool) -> int:
    side = bound.side
    if side == "unbounded preceding":
        return 0
    if side == "unbounded following":
        return count
    if side == "current":
        if mode == "rows":
            return i if is_start else i + 1
        return peers.start(i) if is_start else peers.end(i)
    offset = bound.offset if side == "following" else -bound.offset
    if mode == "rows":
        position = i + offset if is_start else i + offset + 1
        return min(max(position, 0), count)
    group = peers.group_of[i] + offset  # groups (range with offsets is handled apart)
    groups = len(peers.starts)
    if is_start:
        return 0 if group < 0 else count if group >= groups else peers.starts[group]
    return 0 if group < 0 else count if group >= groups else peers.ends[group]


def _range_offset_bounds(frame: Frame, ordering: Ordering, order_values: list[tuple],
                         peers: _Peers) -> list[tuple[int, int]]:
    """RANGE with n PRECEDING/FOLLOWING: rows whose value lies within n of the current one. A NULL
    current value frames its NULL peers; NULLs lie before (NULLS FIRST) or after every value."""
    _, descending, nulls_first = ordering.order[0]
    direction = -1 if descending else 1
    count = len(order_values)
    null_position = float("-inf") if nulls_first else float("inf")
    positions = [null_position if v[0] is None else direction * v[0] for v in order_values]
    out = []
    start_pointer = 0
    end_pointer = 0
    for i in range(count):
        if order_values[i][0] is None:
            start = 0 if frame.start.side == "unbounded preceding" else peers.start(i)
            end = count if frame.end.side == "unbounded following" else peers.end(i)
            out.append((start, end))
            continue
        current = positions[i]
        if frame.start.offset is not None:
            low = current - frame.start.offset if frame.start.side == "preceding" else current + frame.start.offset
            while start_pointer < count and not positions[start_pointer] >= low:
                start_pointer += 1
            start = start_pointer
        else:
            start = _bound_index("range", frame.start, i, count, peers, True)
        if frame.end.offset is not None:
            high = current - frame.end.offset if frame.end.side == "preceding" else current + frame.end.offset
            while end_pointer < count and positions[end_pointer] <= high:
                end_pointer += 1
            end = end_pointer
        else:
            end = _bound_index("range", frame.end, i, count, peers, False)
        out.append((start, end))
    return out


def _members(frame: Frame, i: int, start: int, end: int, peers: _Peers) -> list[int]:
    if end <= start:
        return []
    exclude = frame.exclude
    if exclude == "no others":
        return list(range(start, end))
    if exclude == "current row":
        return [j for j in range(start, end) if j != i]
    group_start, group_end = peers.start(i), peers.end(i)
    if exclude == "group":
        return [j for j in range(start, end) if not group_start <= j < group_end]
    return [j for j in range(start, end) if j == i or not group_start <= j < group_end]  # ties


def _aggregate_values(call: Call, rows: list[tuple], bounds: list[tuple[int, int]], peers: _Peers,
                      accumulator, budget: list[int]) -> list:
    spec = call.aggregate
    condition = spec.filter.evaluate if spec.filter is not None else None

    def add(state, row):
        if condition is None or condition(row) is True:
            state.add(row)
    out = []
    if call.frame.exclude == "no others" and all(start == 0 for start, _ in bounds):
        # The frame only grows (its end never moves back for a frame anchored at the first row):
        # one accumulator, each row added once.
        state = accumulator(spec)
        added = 0
        for start, end in bounds:
            assert end >= added, "a frame anchored at the partition start moved back"
            while added < end:
                add(state, rows[added])
                added += 1
            out.append(state.result())
        return out
    if call.frame.exclude == "no others" and call.invertible and _moves_forward(bounds):
        return _sliding_values(spec, rows, bounds, accumulator, add)
    previous = None
    result = None
    for i, (start, end) in enumerate(bounds):
        members = _members(call.frame, i, start, end, peers)
        marker = (members[0], members[-1], len(members)) if members else ()
        if marker != previous or call.frame.exclude != "no others":
            budget[0] -= len(members)
            if budget[0] < 0:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"window frames visit more than {limits.WINDOW_FRAME_ROWS_MAX} rows")
            state = accumulator(spec)
            for j in members:
                add(state, rows[j])
            result = state.result()
            previous = marker
        out.append(result)
    return out


def _moves_forward(bounds: list[tuple[int, int]]) -> bool:
    return all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(bounds, bounds[1:]))


def _sliding_values(spec: AggregateSpec, rows: list[tuple], bounds: list[tuple[int, int]], accumulator,
                    add) -> list:
    """A frame whose both ends only move forward, over an invertible aggregate: each row enters
    and leaves the state once. The state holds rows [low, high)."""
    condition = spec.filter.evaluate if spec.filter is not None else None
    argument = spec.argument.evaluate if spec.argument is not None else None
    state = accumulator(spec)
    low = high = 0
    out = []
    for start, end in bounds:
        if start >= high or end <= start:  # nothing to keep: start again from this frame
            state = accumulator(spec)
            low = high = start
        while high < end:
            add(state, rows[high])
            high += 1
        while low < start:
            row = rows[low]
            low += 1
            if condition is not None and condition(row) is not True:
                continue
            if argument is None:
                state.count -= 1
                continue
            value = argument(row)
            if value is None:
                continue
            state.count -= 1
            if spec.name != "count":
                state.total = None if state.count == 0 else state.total - value
        out.append(state.result())
    return out
