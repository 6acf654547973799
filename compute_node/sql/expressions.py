"""Compiles sqlglot expressions into typed Python evaluators.

Theory of operation
-------------------
`Compiler.compile(node)` walks a sqlglot expression once, resolves column names
against a `Scope`, decides every operator's types the way PostgreSQL does, and
returns a `Compiled`: a closure `evaluate(row) -> value` plus the result's SqlType.
Type errors (42883, 42804, 22P02 for a bad literal) are therefore raised before any
row is read, as PostgreSQL does at parse/plan time. Evaluation implements SQL
three-valued logic: NULL (None) propagates through operators; AND/OR/NOT follow
the SQL truth tables; WHERE keeps a row only when its condition is true.

Scopes: a Scope lists the relations of one FROM clause (each with a visible name and
its columns at an offset of the combined row) and points to the scope of the query
around it. A column found in an enclosing scope is an outer reference: its
evaluator reads the row that scope is evaluating now (`Scope.cell`, set by the
subquery expression just before it runs the subquery), and every scope in between
is marked `uses_outer` (the subquery is correlated and cannot be cached).

Subqueries (scalar, EXISTS, IN) are compiled through `context.compile_subquery`,
which returns a SubPlan whose `run()` is synchronous: its base tables were read
before the statement's rows are evaluated (compute_node/sql/select.py).

Untyped string literals ('12') have type UNKNOWN and are converted to the type of
the other operand at compile time (so `id = '12'` compares integers); untyped NULL
likewise takes the other operand's type.

Aggregates: when the compiler is given an `AggregateCollector`, it compiles the
select list of a grouped query. An expression equal to a GROUP BY expression reads
the group's value; an aggregate call registers a slot whose argument is compiled
against the input row; any other column reference is 42803. The grouped row seen
by such evaluators is group values followed by aggregate values.
"""
from __future__ import annotations

import dataclasses
import datetime
import decimal
import hashlib
import math
import operator
import random
import re
import uuid
from typing import Any, Callable, Sequence

from sqlglot import exp

from compute_node.sql.result import DescribeOnly  # noqa: F401 (also part of this module's interface)
from compute_node.sql import interval as interval_mod
from compute_node.sql import pg_catalog
from compute_node.sql import regex as regex_mod
from compute_node.sql import types
from compute_node.sql.catalog import ROWID_COLUMN, identifier_name
from compute_node.sql.types import Kind, SqlType
from quorumdb import errors
from quorumdb.errors import SqlError

Row = Sequence[Any]
Evaluator = Callable[[Row], Any]
D = decimal.Decimal
CTX = types.DECIMAL_CONTEXT


@dataclasses.dataclass(frozen=True)
class Compiled:
    evaluate: Evaluator
    sql_type: SqlType
    constant: bool = False
    param: "ParamSlot | None" = None  # a $n compiled to describe a statement (see ParamTypes)


class ParamSlot:
    """The type of one $n as the statement's compilation decides it (declared, or inferred from
    where it is used, as PostgreSQL infers a parameter's type)."""

    def __init__(self, number: int, declared: SqlType | None) -> None:
        self.number = number
        self.sql_type = declared

    def infer(self, sql_type: SqlType) -> None:
        if self.sql_type is None and sql_type.kind not in types.UNTYPED_KINDS:
            self.sql_type = sql_type.base


class ParamTypes:
    """The $n of a statement compiled to be described: Describe answers their types and the
    result's columns without running it (compute_node/sql/describe.py)."""

    def __init__(self, declared: Sequence[SqlType | None] = ()) -> None:
        self.slots: dict[int, ParamSlot] = {}
        self._declared = list(declared)

    def slot(self, number: int) -> ParamSlot:
        found = self.slots.get(number)
        if found is None:
            declared = self._declared[number - 1] if number <= len(self._declared) else None
            found = self.slots[number] = ParamSlot(number, declared)
        return found


def _describe_only(row):
    raise DescribeOnly("a parameter's value is needed")


def constant(value: Any, sql_type: SqlType) -> Compiled:
    return Compiled(lambda row: value, sql_type, True)


# --- scopes ----------------------------------------------------------------------------
@dataclasses.dataclass
class Relation:
    name: str                                   # what qualifiers match: the alias, else the table name
    columns: tuple[tuple[str, SqlType], ...]
    offset: int = 0
    hidden: frozenset = frozenset()             # USING columns shown once (by the left relation)
    system: frozenset = frozenset()             # system columns (tableoid): named, never in `*`

    def star_columns(self) -> list[tuple[int, str]]:
        """(position, name) of the columns `*` expands to: not system columns, a table's hidden
        row id (catalog.ROWID_COLUMN) nor select.py's hidden slots of merged FULL JOIN columns."""
        return [(i, name) for i, (name, _) in enumerate(self.columns)
                if name not in self.system and name != ROWID_COLUMN and not name.startswith("\x00")]


class Scope:
    """The columns an expression may name: the relations of one FROM clause, then enclosing scopes."""

    def __init__(self, relations: Sequence[Relation] = (), parent: "Scope | None" = None):
        self.relations = list(relations)
        self.parent = parent
        self.using: dict[str, tuple[int, SqlType]] = {}
        self.cell: list = [()]        # the row this scope is evaluating (for correlated subqueries)
        self.uses_outer = False
        offset = 0
        for relation in self.relations:
            relation.offset = offset
            offset += len(relation.columns)
        self.width = offset

    @staticmethod
    def single(name: str, columns, alias: str | None = None) -> "Scope":
        return Scope([Relation(alias or name, tuple(columns))])

    @property
    def columns(self) -> list[tuple[str, SqlType]]:
        return [column for relation in self.relations for column in relation.columns]

    def find_relation(self, name: str) -> Relation | None:
        return next((r for r in self.relations if r.name == name), None)

    def resolve_local(self, column: exp.Column) -> tuple[int, SqlType] | None:
        """(index, type) of a column of this scope's own relations, None if it is not one of them."""
        name = identifier_name(column.this)
        qualifier = column.args.get("table")
        if qualifier is not None:
            relation = self.find_relation(identifier_name(qualifier))
            if relation is None:
                return None
            for index, (column_name, sql_type) in enumerate(relation.columns):
                if column_name == name:
                    return relation.offset + index, sql_type
            raise SqlError(errors.UNDEFINED_COLUMN, f'column {relation.name}.{name} does not exist')
        if name in self.using:
            return self.using[name]
        found = [(r.offset + i, t) for r in self.relations for i, (n, t) in enumerate(r.columns) if n == name]
        if len(found) > 1:
            raise SqlError(errors.AMBIGUOUS_COLUMN, f'column reference "{name}" is ambiguous')
        return found[0] if found else None

    def resolve(self, column: exp.Column) -> tuple[int, int, SqlType]:
        """(depth, index, type): depth 0 is this scope, 1 the enclosing one, ..."""
        scope: Scope | None = self
        depth = 0
        while scope is not None:
            found = scope.resolve_local(column)
            if found is not None:
                return depth, found[0], found[1]
            scope = scope.parent
            depth += 1
        name = identifier_name(column.this)
        qualifier = column.args.get("table")
        if qualifier is not None:
            raise SqlError(errors.UNDEFINED_TABLE, f'missing FROM-clause entry for table "{identifier_name(qualifier)}"')
        raise SqlError(errors.UNDEFINED_COLUMN, f'column "{name}" does not exist')

    def ancestor(self, depth: int) -> "Scope":
        scope = self
        for _ in range(depth):
            scope.uses_outer = True
            assert scope.parent is not None
            scope = scope.parent
        return scope


EMPTY_SCOPE = Scope()


class Context:
    """What expressions may need besides their row: the statement's time, randomness, subqueries,
    and, when the statement is only described, its parameters' types."""

    def __init__(self, start_ts_ns: int = 0, rng: random.Random | None = None, compile_subquery=None,
                 params: ParamTypes | None = None, client: pg_catalog.ClientInfo = pg_catalog.DEFAULT_CLIENT):
        self.start_ts_ns = start_ts_ns
        self.rng = rng or random.Random(start_ts_ns)
        self.compile_subquery = compile_subquery
        self.params = params
        self.client = client
        # Catalog functions (pg_get_indexdef, ::regclass, ...) read the snapshot's table
        # definitions: compiling one sets needs_catalog, and the fetch phase fills `catalog`.
        self.needs_catalog = False
        self.catalog: pg_catalog.Snapshot | None = None

    def catalog_snapshot(self) -> pg_catalog.Snapshot:
        assert self.catalog is not None, "a catalog function ran before the fetch phase read the catalog"
        return self.catalog

    @property
    def now(self) -> datetime.datetime:
        return (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
                + datetime.timedelta(microseconds=self.start_ts_ns // 1000))


DEFAULT_CONTEXT = Context()

AGGREGATE_NODES = (exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg, exp.LogicalAnd, exp.LogicalOr, exp.GroupConcat,
                   exp.ArrayAgg)
_AGGREGATE_NAMES = {exp.Count: "count", exp.Sum: "sum", exp.Min: "min", exp.Max: "max", exp.Avg: "avg",
                    exp.LogicalAnd: "bool_and", exp.LogicalOr: "bool_or", exp.GroupConcat: "string_agg",
                    exp.ArrayAgg: "array_agg"}


@dataclasses.dataclass
class AggregateSpec:
    name: str                  # count, sum, min, max, avg, bool_and, bool_or, string_agg, array_agg
    argument: Compiled | None  # None for count(*)
    distinct: bool
    result_type: SqlType
    filter: Compiled | None = None
    separator: Compiled | None = None
    # aggregate(... ORDER BY k [DESC] [NULLS FIRST|LAST], ...): (key, descending, nulls_first)
    order: tuple[tuple[Compiled, bool, bool], ...] = ()


class AggregateCollector:
    """Collects the GROUP BY expressions and aggregate calls of one grouped query."""

    def __init__(self, row_compiler: "Compiler", group_nodes: Sequence[exp.Expression]):
        self.row_compiler = row_compiler
        self.group_nodes = list(group_nodes)
        self.group_compiled = [row_compiler.compile(node) for node in self.group_nodes]
        self.group_compiled = [coerce(c, types.TEXT) if c.sql_type.kind is Kind.UNKNOWN else c
                               for c in self.group_compiled]
        self.group_columns = [self._column_index(node) for node in self.group_nodes]
        self.aggregates: list[AggregateSpec] = []

    def _column_index(self, node: exp.Expression) -> int | None:
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            depth, index, _ = self.row_compiler.scope.resolve(node)
            return index if depth == 0 else None
        return None

    def match_group(self, node: exp.Expression) -> int | None:
        column_index = None
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            column_index = self._column_index(node)
        for position, group_node in enumerate(self.group_nodes):
            if column_index is not None and self.group_columns[position] == column_index:
                return position
            if not isinstance(node, exp.Column) and node == group_node:
                return position
        return None

    def add(self, spec: AggregateSpec) -> int:
        self.aggregates.append(spec)
        return len(self.group_nodes) + len(self.aggregates) - 1


_COMPARISONS = {
    exp.EQ: ("=", operator.eq), exp.NEQ: ("<>", operator.ne),
    exp.LT: ("<", operator.lt), exp.LTE: ("<=", operator.le),
    exp.GT: (">", operator.gt), exp.GTE: (">=", operator.ge),
}
_ARITHMETIC = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%"}
_TIMESTAMP_KINDS = (Kind.TIMESTAMP, Kind.TIMESTAMPTZ)


class Compiler:
    """Compiles expressions over one scope; `clause` names the context in error messages."""

    # Where window function calls and set-returning function calls go (compute_node/sql/
    # window.py, table_functions.py): set only on the compiler of a select list and its ORDER BY;
    # anywhere else such a call is an error.
    windows = None
    set_returning = None

    def __init__(self, scope: Scope, clause: str, aggregates: AggregateCollector | None = None,
                 context: Context | None = None):
        self.scope = scope
        self.clause = clause
        self.aggregates = aggregates
        self.context = context or DEFAULT_CONTEXT

    def child(self, clause: str, aggregates: AggregateCollector | None = None) -> "Compiler":
        return Compiler(self.scope, clause, aggregates, self.context)

    def compile(self, node: exp.Expression) -> Compiled:
        if self.aggregates is not None:
            position = self.aggregates.match_group(node)
            if position is not None:
                return Compiled(lambda row, i=position: row[i], self.aggregates.group_compiled[position].sql_type)
        handler = _HANDLERS.get(type(node))
        if handler is None:
            return self._unsupported(node)
        return handler(self, node)

    def compile_condition(self, node: exp.Expression) -> Compiled:
        """A WHERE/HAVING condition: must be boolean (an unknown literal is read as boolean)."""
        return self.as_boolean(self.compile(node), f"argument of {self.clause}")

    def compile_typed(self, node: exp.Expression) -> Compiled:
        """An expression whose untyped literal becomes text (select lists, VALUES)."""
        compiled = self.compile(node)
        return coerce(compiled, types.TEXT) if compiled.sql_type.kind is Kind.UNKNOWN else compiled

    # --- leaves -----------------------------------------------------------------
    def _paren(self, node: exp.Paren) -> Compiled:
        return self.compile(node.this)

    def _literal(self, node: exp.Literal, negate: bool = False) -> Compiled:
        if node.is_string:
            return constant(node.this, types.UNKNOWN)
        text = node.this
        if re.fullmatch(r"\d+", text):
            value = -int(text) if negate else int(text)
            for sql_type in (types.INTEGER, types.BIGINT):
                low, high = types.INT_RANGES[sql_type.kind]
                if low <= value <= high:
                    return constant(value, sql_type)
            return constant(D(value), types.NUMERIC)
        try:
            value = D(text)
        except decimal.InvalidOperation:
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{text}"') from None
        return constant(-value if negate else value, types.NUMERIC)

    def _parameter(self, node: exp.Parameter) -> Compiled:
        """$n: only while describing (a run binds values into the tree before compiling)."""
        params = self.context.params
        number = node.this
        if params is None or not isinstance(number, exp.Literal) or not str(number.this).isdigit():
            return self._unsupported(node)
        slot = params.slot(int(number.this))
        return Compiled(_describe_only, slot.sql_type or types.UNKNOWN, False, slot)

    def _escape_string(self, node: exp.ByteString) -> Compiled:
        return constant(node.this, types.UNKNOWN)  # E'...': sqlglot already resolved the escapes

    def _boolean(self, node: exp.Boolean) -> Compiled:
        return constant(bool(node.this), types.BOOLEAN)

    def _null(self, node: exp.Null) -> Compiled:
        return constant(None, types.NULL)

    def _column(self, node: exp.Column) -> Compiled:
        if isinstance(node.this, exp.Star):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{node.sql()} is only supported in the select list")
        depth, index, sql_type = self.scope.resolve(node)
        sql_type = sql_type.base
        if depth > 0:
            cell = self.scope.ancestor(depth).cell
            return Compiled(lambda row, i=index, c=cell: c[0][i], sql_type)
        if self.aggregates is not None:
            shown = node.sql(dialect="postgres")
            raise SqlError(errors.GROUPING_ERROR,
                           f'column "{shown}" must appear in the GROUP BY clause or be used in an aggregate function')
        return Compiled(lambda row, i=index: row[i], sql_type)

    # --- arithmetic ---------------------------------------------------------------
    def _neg(self, node: exp.Neg) -> Compiled:
        inner = node.this
        if isinstance(inner, exp.Literal) and not inner.is_string:
            return self._literal(inner, negate=True)
        operand = self.compile(inner)
        if operand.sql_type.kind is Kind.UNKNOWN:
            raise SqlError(errors.AMBIGUOUS_FUNCTION, "operator is not unique: - unknown")
        kind = operand.sql_type.kind
        if kind is Kind.NULL:
            return constant(None, types.INTEGER)
        if kind is Kind.INTERVAL:
            evaluate = operand.evaluate
            return Compiled(lambda row: _none_or(evaluate(row), interval_mod.negate), types.INTERVAL, operand.constant)
        if kind not in types.NUMERIC_KINDS:
            raise _no_operator(f"- {operand.sql_type.display_name}")
        sql_type = operand.sql_type
        evaluate = operand.evaluate
        if kind in types.INT_KINDS:
            return Compiled(lambda row: _none_or(evaluate(row), lambda v: types.check_int_range(-v, sql_type)),
                            sql_type, operand.constant)
        return Compiled(lambda row: _none_or(evaluate(row), operator.neg), sql_type, operand.constant)

    def _arithmetic(self, node: exp.Binary) -> Compiled:
        symbol = _ARITHMETIC[type(node)]
        return self.arithmetic(symbol, self.compile(node.this), self.compile(node.expression))

    def arithmetic(self, symbol: str, left: Compiled, right: Compiled) -> Compiled:
        left, right = self._unify_interval(left, right, symbol)
        left, right = self._unify(left, right, symbol, numeric_default=True)
        left_kind, right_kind = left.sql_type.kind, right.sql_type.kind
        if left_kind is Kind.NULL and right_kind is Kind.NULL:
            return constant(None, types.INTEGER)
        if Kind.INTERVAL in (left_kind, right_kind) or (
                left_kind in _TIMESTAMP_KINDS and right_kind in _TIMESTAMP_KINDS + (Kind.DATE,)) or (
                right_kind in _TIMESTAMP_KINDS and left_kind is Kind.DATE):
            return self._interval_arithmetic(symbol, left, right)
        if Kind.DATE in (left_kind, right_kind):
            return self._date_arithmetic(symbol, left, right)
        if left_kind not in types.NUMERIC_KINDS or right_kind not in types.NUMERIC_KINDS:
            raise _no_operator(f"{left.sql_type.display_name} {symbol} {right.sql_type.display_name}")
        result_type = types.numeric_result(left.sql_type, right.sql_type)
        if result_type.kind in types.FLOAT_KINDS and symbol == "%":
            raise _no_operator(f"{result_type.display_name} % {result_type.display_name}")
        apply = _OPERATIONS[_family(result_type.kind)](symbol, result_type)
        return _binary(left, right, result_type, apply)

    def _unify_interval(self, left: Compiled, right: Compiled, symbol: str) -> tuple[Compiled, Compiled]:
        """An untyped literal meeting an interval, or added to a timestamp, is an interval
        (PostgreSQL's only `timestamp + x` operator takes an interval)."""
        left_kind, right_kind = left.sql_type.kind, right.sql_type.kind
        if symbol in "*/" and Kind.INTERVAL in (left_kind, right_kind) and Kind.NULL in (left_kind, right_kind):
            # interval * NULL: the NULL is the factor (a double), not a second interval
            if left_kind is Kind.NULL:
                return coerce(left, types.DOUBLE), right
            return left, coerce(right, types.DOUBLE)
        if right_kind is Kind.UNKNOWN and (left_kind is Kind.INTERVAL or (
                symbol == "+" and left_kind in _TIMESTAMP_KINDS)):
            return left, coerce(right, types.INTERVAL)
        if left_kind is Kind.UNKNOWN and (right_kind is Kind.INTERVAL or (
                symbol == "+" and right_kind in _TIMESTAMP_KINDS)):
            return coerce(left, types.INTERVAL), right
        return left, right

    def _interval_arithmetic(self, symbol: str, left: Compiled, right: Compiled) -> Compiled:
        """interval ± interval, timestamp(tz)/date ± interval, timestamp - timestamp, interval * / number."""
        left_kind, right_kind = left.sql_type.kind, right.sql_type.kind
        datetimes = types.DATETIME_KINDS
        if left_kind is Kind.NULL:
            left = coerce(left, right.sql_type if symbol in "+-" else types.DOUBLE)
            left_kind = left.sql_type.kind
        if right_kind is Kind.NULL:
            right = coerce(right, left.sql_type if symbol in "+-" else types.DOUBLE)
            right_kind = right.sql_type.kind
        if left_kind is Kind.INTERVAL and right_kind is Kind.INTERVAL and symbol in "+-":
            apply = interval_mod.add if symbol == "+" else interval_mod.subtract
            return _binary(left, right, types.INTERVAL, apply)
        if left_kind in datetimes and right_kind is Kind.INTERVAL and symbol in "+-":
            result = types.TIMESTAMPTZ if left_kind is Kind.TIMESTAMPTZ else types.TIMESTAMP
            sign = 1 if symbol == "+" else -1
            left = _converted(left, result)
            return _binary(left, right, result, lambda a, b: interval_mod.add_to_timestamp(a, b, sign))
        if left_kind is Kind.INTERVAL and right_kind in datetimes and symbol == "+":
            result = types.TIMESTAMPTZ if right_kind is Kind.TIMESTAMPTZ else types.TIMESTAMP
            right = _converted(right, result)
            return _binary(left, right, result, lambda a, b: interval_mod.add_to_timestamp(b, a))
        if left_kind in datetimes and right_kind in datetimes and symbol == "-":
            common = types.datetime_result(left.sql_type, right.sql_type)
            common = types.TIMESTAMP if common.kind is Kind.DATE else common
            return _binary(_converted(left, common), _converted(right, common), types.INTERVAL,
                           interval_mod.between_timestamps)
        if symbol in "*/" and Kind.INTERVAL in (left_kind, right_kind):
            span, factor = (left, right) if left_kind is Kind.INTERVAL else (right, left)
            if factor.sql_type.kind not in types.NUMERIC_KINDS or (symbol == "/" and span is right):
                raise _no_operator(f"{left.sql_type.display_name} {symbol} {right.sql_type.display_name}")
            apply = interval_mod.multiply if symbol == "*" else interval_mod.divide
            return _binary(span, factor, types.INTERVAL, apply)
        raise _no_operator(f"{left.sql_type.display_name} {symbol} {right.sql_type.display_name}")

    def _date_arithmetic(self, symbol: str, left: Compiled, right: Compiled) -> Compiled:
        left_kind, right_kind = left.sql_type.kind, right.sql_type.kind
        if symbol == "-" and left_kind is Kind.DATE and right_kind is Kind.DATE:
            return _binary(left, right, types.INTEGER, lambda a, b: (a - b).days)
        if symbol in "+-" and left_kind is Kind.DATE and right_kind in (Kind.SMALLINT, Kind.INTEGER):
            sign = 1 if symbol == "+" else -1
            return _binary(left, right, types.DATE, lambda a, b: _add_days(a, sign * b))
        if symbol == "+" and right_kind is Kind.DATE and left_kind in (Kind.SMALLINT, Kind.INTEGER):
            return _binary(left, right, types.DATE, lambda a, b: _add_days(b, a))
        raise _no_operator(f"{left.sql_type.display_name} {symbol} {right.sql_type.display_name}")

    def _pow(self, node: exp.Pow) -> Compiled:
        left, right = self._unify(self.compile(node.this), self.compile(node.expression), "^", numeric_default=True)
        for operand in (left, right):
            if operand.sql_type.kind not in types.NUMERIC_KINDS + (Kind.NULL,):
                raise _no_operator(f"{left.sql_type.display_name} ^ {right.sql_type.display_name}")
        if Kind.NUMERIC in (left.sql_type.kind, right.sql_type.kind) and \
                not {left.sql_type.kind, right.sql_type.kind} & set(types.FLOAT_KINDS):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "power of numeric values is not supported; cast to double precision")
        return _binary(left, right, types.DOUBLE, _float_power)

    def _concat(self, node: exp.DPipe) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        kinds = (left.sql_type.kind, right.sql_type.kind)
        if Kind.ARRAY in kinds:
            return _catalog.concat_arrays(left, right)
        if Kind.BYTEA in kinds and all(k in (Kind.BYTEA, Kind.UNKNOWN, Kind.NULL) for k in kinds):
            left, right = coerce(left, types.BYTEA), coerce(right, types.BYTEA)
            return _binary(left, right, types.BYTEA, operator.add)
        text_like = types.TEXT_KINDS + (Kind.UNKNOWN,)
        if kinds[0] not in text_like and kinds[1] not in text_like:
            if Kind.NULL not in kinds:
                raise _no_operator(f"{left.sql_type.display_name} || {right.sql_type.display_name}")
        left_text, right_text = _as_text(left), _as_text(right)
        return _binary(left_text, right_text, types.TEXT, operator.add)

    # --- comparisons -----------------------------------------------------------------
    def _comparison(self, node: exp.Binary) -> Compiled:
        symbol, compare = _COMPARISONS[type(node)]
        quantified = node.expression
        if isinstance(quantified, (exp.Any, exp.All)) or isinstance(node.this, (exp.Any, exp.All)) or (
                isinstance(quantified, exp.Anonymous) and str(quantified.this).lower() == "all"):
            return _catalog.compile_any(self, node, symbol, compare)
        if isinstance(node.this, exp.Tuple) or isinstance(node.expression, exp.Tuple):
            return self._row_comparison(node.this, node.expression, symbol)
        return self.compare(self.compile(node.this), self.compile(node.expression), symbol, compare)

    def compare(self, left: Compiled, right: Compiled, symbol: str, compare) -> Compiled:
        left, right = self.comparable(left, right, symbol)
        return _binary(left, right, types.BOOLEAN, compare)

    def comparable(self, left: Compiled, right: Compiled, symbol: str) -> tuple[Compiled, Compiled]:
        """Both operands converted to comparable Python values of their common type."""
        if Kind.ARRAY in (left.sql_type.kind, right.sql_type.kind):
            return _comparable_arrays(left, right, symbol)
        left, right = self._unify(left, right, symbol)
        common = _comparison_type(left.sql_type, right.sql_type, symbol)
        return _comparison_form(left, common), _comparison_form(right, common)

    def _row_pairs(self, left: exp.Expression, right: exp.Expression, symbol: str) -> list[tuple[Evaluator, Evaluator]]:
        """The element pairs of a row comparison, each in the comparable form of its common type."""
        if not (isinstance(left, exp.Tuple) and isinstance(right, exp.Tuple)):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           "comparing a row with a value that is not a row constructor is not supported")
        if len(left.expressions) != len(right.expressions):
            raise SqlError(errors.SYNTAX_ERROR, "unequal number of entries in row expressions")
        pairs = []
        for left_node, right_node in zip(left.expressions, right.expressions):
            a, b = self.comparable(self.compile(left_node), self.compile(right_node), symbol)
            pairs.append((a.evaluate, b.evaluate))
        return pairs

    def _row_comparison(self, left: exp.Expression, right: exp.Expression, symbol: str) -> Compiled:
        """(a, b) op (c, d) as PostgreSQL: = and <> combine every pair with SQL's AND / OR; the
        orderings compare left to right and stop at the first pair that is unequal or has a
        NULL (which makes the answer NULL)."""
        pairs = self._row_pairs(left, right, symbol)
        if symbol in ("=", "<>"):
            return Compiled(_row_equal(pairs) if symbol == "=" else
                            lambda row, equal=_row_equal(pairs): _none_or(equal(row), operator.not_), types.BOOLEAN)
        compare = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[symbol]
        on_equal = symbol in ("<=", ">=")

        def evaluate(row):
            for left_eval, right_eval in pairs:
                a, b = left_eval(row), right_eval(row)
                if a is None or b is None:
                    return None
                if a != b:
                    return compare(a, b)
            return on_equal
        return Compiled(evaluate, types.BOOLEAN)

    def _row_in(self, node: exp.In) -> Compiled:
        """(a, b) IN ((1, 2), (3, 4)): row equality with each, combined with SQL's OR."""
        tests = [_row_equal(self._row_pairs(node.this, option, "=")) for option in node.expressions]

        def evaluate(row):
            saw_null = False
            for test in tests:
                result = test(row)
                if result is True:
                    return True
                saw_null = saw_null or result is None
            return None if saw_null else False
        return Compiled(evaluate, types.BOOLEAN)

    def _distinct_from(self, node: exp.Binary) -> Compiled:
        negate = isinstance(node, exp.NullSafeEQ)  # IS NOT DISTINCT FROM
        left, right = self.comparable(self.compile(node.this), self.compile(node.expression), "IS DISTINCT FROM")
        left_eval, right_eval = left.evaluate, right.evaluate

        def evaluate(row):
            a, b = left_eval(row), right_eval(row)
            if a is None or b is None:
                distinct = (a is None) != (b is None)
            else:
                distinct = a != b
            return not distinct if negate else distinct
        return Compiled(evaluate, types.BOOLEAN)

    def _in(self, node: exp.In) -> Compiled:
        if node.args.get("unnest") is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "IN UNNEST is not supported")
        if node.args.get("query") is not None:
            if isinstance(node.this, exp.Tuple):
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, "row IN (subquery) is not supported")
            return self._in_subquery(node)
        if isinstance(node.this, exp.Tuple) or any(isinstance(o, exp.Tuple) for o in node.expressions):
            return self._row_in(node)
        subject = self.compile(node.this)
        options = [self.compile(option) for option in node.expressions]
        common = types.common_type([subject.sql_type] + [o.sql_type for o in options], "IN")
        subject = _comparison_form(coerce(subject, common), _comparison_type(common, common, "="))
        options = [_comparison_form(coerce(option, common), _comparison_type(common, common, "="))
                   for option in options]
        subject_eval = subject.evaluate
        if all(option.constant for option in options):
            values = [option.evaluate(()) for option in options]
            has_null = any(value is None for value in values)
            value_set = {_hashable(value) for value in values if value is not None}

            def evaluate(row):
                a = subject_eval(row)
                if a is None:
                    return None
                if _hashable(a) in value_set:
                    return True
                return None if has_null else False
            return Compiled(evaluate, types.BOOLEAN)
        option_evals = [option.evaluate for option in options]

        def evaluate_general(row):
            a = subject_eval(row)
            if a is None:
                return None
            saw_null = False
            for option_eval in option_evals:
                b = option_eval(row)
                if b is None:
                    saw_null = True
                elif a == b:
                    return True
            return None if saw_null else False
        return Compiled(evaluate_general, types.BOOLEAN)

    def _between(self, node: exp.Between) -> Compiled:
        subject = self.compile(node.this)
        low_node, high_node = node.args["low"], node.args["high"]
        low = self.compare(subject, self.compile(low_node), ">=", operator.ge)
        high = self.compare(subject, self.compile(high_node), "<=", operator.le)
        straight = sql_and(low, high)
        if not node.args.get("symmetric"):
            return straight
        low2 = self.compare(subject, self.compile(high_node), ">=", operator.ge)
        high2 = self.compare(subject, self.compile(low_node), "<=", operator.le)
        return _or(straight, sql_and(low2, high2))

    def _escape(self, node: exp.Escape) -> Compiled:
        inner = node.this
        if not isinstance(inner, (exp.Like, exp.ILike, exp.SimilarTo)):
            return self._unsupported(node)
        escape_node = node.expression
        if not (isinstance(escape_node, exp.Literal) and escape_node.is_string):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "a non-constant ESCAPE is not supported")
        if isinstance(inner, exp.SimilarTo):
            return self._similar_to(inner, escape_node.this)
        return self._like(inner, escape=escape_node.this)

    def _similar_to(self, node: exp.SimilarTo, escape: str = "\\") -> Compiled:
        """x SIMILAR TO pattern: the pattern rewritten into an ARE (regex.similar_to_are)."""
        if len(escape) > 1:
            raise SqlError(errors.INVALID_ESCAPE_SEQUENCE, "invalid escape string",
                           hint="Escape string must be empty or one character.")
        subject, pattern = self.compile(node.this), self.compile(node.expression)
        for operand in (subject, pattern):
            if operand.sql_type.kind not in types.TEXT_KINDS + types.UNTYPED_KINDS:
                raise _no_operator(f"{subject.sql_type.display_name} ~ {pattern.sql_type.display_name}")
        return self._regexp("similar to", [node.this, node.expression],
                            lambda p, t: regex_mod.matches(p, t), result_type=types.BOOLEAN,
                            pattern_text=lambda text: regex_mod.similar_to_are(text, escape or None))

    def _like(self, node: exp.Like | exp.ILike, escape: str = "\\") -> Compiled:
        if len(escape) > 1:
            raise SqlError(errors.INVALID_ESCAPE_SEQUENCE, "invalid escape string", hint="Escape string must be empty or one character.")
        subject = self.compile(node.this)
        pattern = self.compile(node.expression)
        name = "~~*" if isinstance(node, exp.ILike) else "~~"
        for operand in (subject, pattern):
            if operand.sql_type.kind not in types.TEXT_KINDS + (Kind.UNKNOWN, Kind.NULL):
                raise _no_operator(f"{subject.sql_type.display_name} {name} {pattern.sql_type.display_name}")
        subject, pattern = _as_text(subject), _as_text(pattern)
        flags = re.IGNORECASE | re.DOTALL if isinstance(node, exp.ILike) else re.DOTALL
        negate = bool(node.args.get("negate"))
        subject_eval, pattern_eval = subject.evaluate, pattern.evaluate
        cache: dict[str, re.Pattern] = {}

        def evaluate(row):
            text = subject_eval(row)
            like = pattern_eval(row)
            if text is None or like is None:
                return None
            compiled = cache.get(like)
            if compiled is None:
                if len(cache) > 64:
                    cache.clear()
                compiled = cache[like] = re.compile(like_to_regex(like, escape), flags)
            matched = compiled.fullmatch(text) is not None
            return not matched if negate else matched
        return Compiled(evaluate, types.BOOLEAN)

    # --- logic -------------------------------------------------------------------------
    def _and_or(self, node: exp.And | exp.Or) -> Compiled:
        word = "AND" if isinstance(node, exp.And) else "OR"
        left = self.as_boolean(self.compile(node.this), f"argument of {word}")
        right = self.as_boolean(self.compile(node.expression), f"argument of {word}")
        return sql_and(left, right) if word == "AND" else _or(left, right)

    def _not(self, node: exp.Not) -> Compiled:
        operand = self.as_boolean(self.compile(node.this), "argument of NOT")
        evaluate = operand.evaluate
        return Compiled(lambda row: _none_or(evaluate(row), operator.not_), types.BOOLEAN)

    def _is(self, node: exp.Is) -> Compiled:
        subject = self.compile(node.this)
        target = node.expression
        negate = bool(node.args.get("negate"))
        evaluate = subject.evaluate
        if isinstance(target, exp.Null):
            return Compiled(lambda row: (evaluate(row) is None) != negate, types.BOOLEAN)
        if isinstance(target, exp.Boolean):
            subject = self.as_boolean(subject, "argument of IS TRUE" if target.this else "argument of IS FALSE")
            evaluate = subject.evaluate
            wanted = bool(target.this)
            return Compiled(lambda row: (evaluate(row) is wanted) != negate, types.BOOLEAN)
        return self._unsupported(node)

    def as_boolean(self, compiled: Compiled, what: str) -> Compiled:
        kind = compiled.sql_type.kind
        if kind is Kind.BOOLEAN:
            return compiled
        if kind is Kind.NULL:
            return constant(None, types.BOOLEAN)
        if kind is Kind.UNKNOWN:
            return coerce(compiled, types.BOOLEAN)
        raise SqlError(errors.DATATYPE_MISMATCH, f"{what} must be type boolean, not type {compiled.sql_type.display_name}")

    # --- conditionals ------------------------------------------------------------------
    def _case(self, node: exp.Case) -> Compiled:
        subject_node = node.this
        subject = self.compile(subject_node) if subject_node is not None else None
        conditions: list[Compiled] = []
        results: list[Compiled] = []
        for branch in node.args.get("ifs") or []:
            if subject is not None:
                conditions.append(self.compare(subject, self.compile(branch.this), "=", operator.eq))
            else:
                conditions.append(self.as_boolean(self.compile(branch.this), "argument of CASE/WHEN"))
            results.append(self.compile(branch.args["true"]))
        default_node = node.args.get("default")
        default = self.compile(default_node) if default_node is not None else constant(None, types.NULL)
        common = types.common_type([r.sql_type for r in results] + [default.sql_type], "CASE")
        results = [coerce(r, common) for r in results]
        default = coerce(default, common)
        pairs = [(c.evaluate, r.evaluate) for c, r in zip(conditions, results)]
        default_eval = default.evaluate

        def evaluate(row):
            for condition_eval, result_eval in pairs:
                if condition_eval(row) is True:
                    return result_eval(row)
            return default_eval(row)
        return Compiled(evaluate, common)

    def _coalesce(self, node: exp.Coalesce) -> Compiled:
        operands = [self.compile(node.this)] + [self.compile(e) for e in node.expressions]
        common = types.common_type([o.sql_type for o in operands], "COALESCE")
        evals = [coerce(o, common).evaluate for o in operands]

        def evaluate(row):
            for operand_eval in evals:
                value = operand_eval(row)
                if value is not None:
                    return value
            return None
        return Compiled(evaluate, common)

    def _nullif(self, node: exp.Nullif) -> Compiled:
        first = self.compile(node.this)
        second = self.compile(node.expression)
        left, right = self.comparable(first, second, "=")
        if first.sql_type.kind in types.UNTYPED_KINDS:
            first = coerce(first, left.sql_type if left.sql_type.kind not in types.UNTYPED_KINDS else types.TEXT)
        first_eval, left_eval, right_eval = first.evaluate, left.evaluate, right.evaluate

        def evaluate(row):
            a = left_eval(row)
            if a is not None and a == right_eval(row):
                return None
            return first_eval(row)
        return Compiled(evaluate, first.sql_type)

    def _greatest_least(self, node: exp.Greatest | exp.Least) -> Compiled:
        name = "GREATEST" if isinstance(node, exp.Greatest) else "LEAST"
        operands = [self.compile(node.this)] + [self.compile(e) for e in node.expressions]
        common = types.common_type([o.sql_type for o in operands], name)
        compare_type = _comparison_type(common, common, "<")
        forms = [_comparison_form(coerce(o, common), compare_type).evaluate for o in operands]
        values = [coerce(o, common).evaluate for o in operands]
        pick = max if name == "GREATEST" else min

        def evaluate(row):
            present = [(form(row), value(row)) for form, value in zip(forms, values)]
            present = [p for p in present if p[0] is not None]
            if not present:
                return None
            return pick(present, key=lambda p: types.sort_key(p[0]))[1]
        return Compiled(evaluate, common)

    # --- subqueries -------------------------------------------------------------------
    def _subplan(self, select: exp.Expression):
        if self.context.compile_subquery is None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"subqueries are not supported in {self.clause}")
        plan = self.context.compile_subquery(select, self.scope)
        if plan.correlated and self.aggregates is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           "correlated subqueries in a grouped query's select list, HAVING or ORDER BY are not supported")
        return plan

    def _run_subplan(self, plan) -> Callable[[Row], list]:
        if not plan.correlated:
            cache: list = []

            def run_once(row):
                if not cache:
                    cache.append(plan.run())
                return cache[0]
            return run_once
        cell = self.scope.cell

        def run(row):
            saved = cell[0]
            cell[0] = row
            try:
                return plan.run()
            finally:
                cell[0] = saved
        return run

    def _scalar_subquery(self, node: exp.Subquery) -> Compiled:
        plan = self._subplan(node.this)
        if len(plan.columns) != 1:
            raise SqlError(errors.SYNTAX_ERROR, "subquery must return only one column")
        run = self._run_subplan(plan)

        def evaluate(row):
            rows = run(row)
            if len(rows) > 1:
                raise SqlError(errors.CARDINALITY_VIOLATION, "more than one row returned by a subquery used as an expression")
            return rows[0][0] if rows else None
        sql_type = plan.columns[0][1]
        return Compiled(evaluate, types.TEXT if sql_type.kind in types.UNTYPED_KINDS else sql_type.base)

    def _exists(self, node: exp.Exists) -> Compiled:
        plan = self._subplan(node.this)
        run = self._run_subplan(plan)
        return Compiled(lambda row: bool(run(row)), types.BOOLEAN)

    def _in_subquery(self, node: exp.In) -> Compiled:
        query = node.args["query"]
        plan = self._subplan(query.this if isinstance(query, exp.Subquery) else query)
        if len(plan.columns) != 1:
            raise SqlError(errors.SYNTAX_ERROR, "subquery has too many columns" if len(plan.columns) > 1
                           else "subquery has too few columns")
        subject = self.compile(node.this)
        inner_type = plan.columns[0][1]
        inner = Compiled(lambda row: row[0], inner_type)
        left, right = self.comparable(subject, inner, "=")
        subject_eval, inner_eval = left.evaluate, right.evaluate
        run = self._run_subplan(plan)

        def evaluate(row):
            rows = run(row)
            if not rows:
                return False
            a = subject_eval(row)
            if a is None:
                return None
            saw_null = False
            for inner_row in rows:
                b = inner_eval(inner_row)
                if b is None:
                    saw_null = True
                elif a == b:
                    return True
            return None if saw_null else False
        return Compiled(evaluate, types.BOOLEAN)

    # --- casts and functions ------------------------------------------------------------
    def _cast(self, node: exp.Cast) -> Compiled:
        to = node.args["to"]
        if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.ARRAY:
            return _catalog.compile_array_cast(self, node.this, to)
        catalog_type = _catalog.cast_target_name(to)
        if catalog_type is not None:
            compiled = _catalog.compile_catalog_cast(self, node.this, catalog_type)
            if compiled is not None:
                return compiled
            to = exp.DataType.build(catalog_type, dialect="postgres")
        if not isinstance(to, exp.DataType):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"type {to.sql(dialect='postgres')} is not supported")
        if isinstance(node.this, exp.IntDiv):
            return self._int_div(node.this)
        target = types.type_from_sqlglot(to)
        operand = self.compile(node.this)
        source = operand.sql_type
        if source.kind is Kind.NULL:
            return constant(None, target)
        if source.kind is Kind.UNKNOWN and operand.param is not None:  # $n::type: $n is of that type
            operand.param.infer(target)
            return Compiled(_describe_only, target)
        if source.kind in types.UNTYPED_KINDS or not _castable(source, target):
            if source.kind is not Kind.UNKNOWN:
                raise SqlError(errors.CANNOT_COERCE, f"cannot cast type {source.display_name} to {target.display_name}")
        if operand.constant:
            return constant(types.cast(operand.evaluate(()), source, target), target)
        evaluate = operand.evaluate
        return Compiled(lambda row: types.cast(evaluate(row), source, target), target)

    def _int_div(self, node: exp.IntDiv) -> Compiled:
        left, right = self._numeric_args("div", [node.this, node.expression], types.NUMERIC)
        return _binary(left, right, types.NUMERIC, lambda a, b: _decimal_div_trunc(a, b))

    def _args(self, nodes: Sequence[exp.Expression | None]) -> list[Compiled]:
        return [self.compile(n) for n in nodes if n is not None]

    def _text_args(self, name: str, nodes, int_positions: Sequence[int] = ()) -> list[Compiled]:
        """Arguments of a string function: text (char trimmed) except the integer positions."""
        compiled = self._args(nodes)
        out = []
        for position, operand in enumerate(compiled):
            kind = operand.sql_type.kind
            if position in int_positions:
                operand = coerce(operand, types.INTEGER)
                if operand.sql_type.kind not in types.INT_KINDS + (Kind.NULL,):
                    raise _no_function(name, compiled)
                operand = _converted(operand, types.INTEGER)
            elif kind in types.TEXT_KINDS + types.UNTYPED_KINDS:
                operand = _as_text(operand)
            else:
                raise _no_function(name, compiled)
            out.append(operand)
        return out

    def _string_function(self, name: str, nodes, apply, result_type: SqlType = types.TEXT,
                         int_positions: Sequence[int] = ()) -> Compiled:
        operands = self._text_args(name, nodes, int_positions)
        evals = [o.evaluate for o in operands]
        all_constant = all(o.constant for o in operands)

        def evaluate(row):
            values = [e(row) for e in evals]
            if any(v is None for v in values):
                return None
            return apply(*values)
        if all_constant:
            return constant(evaluate(()), result_type)
        return Compiled(evaluate, result_type)

    def _lower(self, node) -> Compiled:
        return self._string_function("lower", [node.this], str.lower)

    def _upper(self, node) -> Compiled:
        return self._string_function("upper", [node.this], str.upper)

    def _length(self, node) -> Compiled:
        operand = self.compile(node.this)
        if operand.sql_type.kind is Kind.BYTEA:
            return Compiled(lambda row, e=operand.evaluate: _none_or(e(row), len), types.INTEGER)
        return self._string_function("length", [node.this], len, types.INTEGER)

    def _substring(self, node: exp.Substring) -> Compiled:
        length = node.args.get("length")
        start = node.args.get("start")
        if length is None and start is not None:
            start_type = self.compile(start).sql_type.kind
            if start_type in types.TEXT_KINDS + (Kind.UNKNOWN,):  # substring(text FROM pattern): a regex
                return self._regexp("substring", [node.this, start], regex_mod.substring)
        nodes = [node.this, node.args.get("start"), length]
        return self._string_function("substring", nodes, _substring, int_positions=(1, 2))

    def _strpos(self, node: exp.StrPosition) -> Compiled:
        if node.args.get("position") is not None:
            return self._unsupported(node)
        return self._string_function("strpos", [node.this, node.args["substr"]],
                                     lambda text, sub: text.find(sub) + 1, types.INTEGER)

    def _trim(self, node: exp.Trim) -> Compiled:
        position = str(node.args.get("position") or "BOTH").upper()
        if node.args.get("collation") is not None:
            return self._unsupported(node)
        chars = node.args.get("expression")
        method = {"BOTH": str.strip, "LEADING": str.lstrip, "TRAILING": str.rstrip}[position]
        if chars is None:
            return self._string_function("btrim", [node.this], lambda text: method(text, " "))
        return self._string_function("btrim", [node.this, chars], lambda text, c: method(text, c))

    def _replace(self, node: exp.Replace) -> Compiled:
        return self._string_function("replace", [node.this, node.expression, node.args["replacement"]],
                                     lambda text, old, new: text.replace(old, new) if old else text)

    def _left_right(self, node) -> Compiled:
        is_left = isinstance(node, exp.Left)
        return self._string_function("left" if is_left else "right", [node.this, node.expression],
                                     _left if is_left else _right, int_positions=(1,))

    def _pad(self, node: exp.Pad) -> Compiled:
        is_left = bool(node.args.get("is_left"))
        fill = node.args.get("fill_pattern")
        nodes = [node.this, node.expression] + ([fill] if fill is not None else [])
        return self._string_function("lpad" if is_left else "rpad", nodes,
                                     lambda text, n, f=" ": _pad(text, n, f, is_left), int_positions=(1,))

    def _repeat(self, node) -> Compiled:
        return self._string_function("repeat", [node.this, node.args["times"]],
                                     lambda text, n: text * max(n, 0), int_positions=(1,))

    def _reverse(self, node) -> Compiled:
        return self._string_function("reverse", [node.this], lambda text: text[::-1])

    def _initcap(self, node) -> Compiled:
        if node.args.get("expression") is not None and not (
                isinstance(node.expression, exp.Literal) and node.expression.this.strip() == ""):
            pass
        return self._string_function("initcap", [node.this], _initcap)

    def _split_part(self, node) -> Compiled:
        return self._string_function("split_part", [node.this, node.args["delimiter"], node.args["part_index"]],
                                     _split_part, int_positions=(2,))

    def _starts_with(self, node) -> Compiled:
        return self._string_function("starts_with", [node.this, node.expression],
                                     lambda text, prefix: text.startswith(prefix), types.BOOLEAN)

    def _md5(self, node) -> Compiled:
        return self._string_function("md5", [node.this], lambda text: hashlib.md5(text.encode()).hexdigest())

    def _ascii(self, node) -> Compiled:
        return self._string_function("ascii", [node.this], lambda text: ord(text[0]) if text else 0, types.INTEGER)

    def _chr(self, node) -> Compiled:
        return self._string_function("chr", list(node.expressions), _chr, int_positions=(0,))

    def _concat_function(self, node: exp.Concat | exp.ConcatWs) -> Compiled:
        operands = [_as_text(o) for o in self._args(node.expressions)]
        if isinstance(node, exp.ConcatWs):
            if not operands:
                raise _no_function("concat_ws", [])
            separator, rest = operands[0].evaluate, [o.evaluate for o in operands[1:]]

            def evaluate_ws(row):
                sep = separator(row)
                if sep is None:
                    return None
                return sep.join(v for v in (e(row) for e in rest) if v is not None)
            return Compiled(evaluate_ws, types.TEXT)
        evals = [o.evaluate for o in operands]
        return Compiled(lambda row: "".join(v for v in (e(row) for e in evals) if v is not None), types.TEXT)

    def _octet_length(self, operands: list[Compiled]) -> Compiled:
        operand = operands[0]
        if operand.sql_type.kind is Kind.BYTEA:
            return Compiled(lambda row, e=operand.evaluate: _none_or(e(row), len), types.INTEGER)
        text = _as_text(operand)
        return Compiled(lambda row, e=text.evaluate: _none_or(e(row), lambda v: len(v.encode())), types.INTEGER)

    # numeric functions
    def _numeric_args(self, name: str, nodes, default: SqlType) -> list[Compiled]:
        compiled = self._args(nodes)
        out = []
        for operand in compiled:
            if operand.sql_type.kind is Kind.UNKNOWN:
                operand = coerce(operand, default)
            if operand.sql_type.kind not in types.NUMERIC_KINDS + (Kind.NULL,):
                raise _no_function(name, compiled)
            out.append(operand)
        return out

    def _abs(self, node) -> Compiled:
        (operand,) = self._numeric_args("abs", [node.this], types.DOUBLE)
        sql_type = operand.sql_type if operand.sql_type.kind is not Kind.NULL else types.DOUBLE
        evaluate = operand.evaluate
        if sql_type.kind in types.INT_KINDS:
            return Compiled(lambda row: _none_or(evaluate(row), lambda v: types.check_int_range(abs(v), sql_type)),
                            sql_type)
        return Compiled(lambda row: _none_or(evaluate(row), abs), sql_type)

    def _float_or_numeric(self, name: str, operand: Compiled) -> SqlType:
        """Functions defined for double precision and numeric: integers go to double, as PostgreSQL."""
        kind = operand.sql_type.kind
        return types.NUMERIC if kind is Kind.NUMERIC else types.DOUBLE

    def _round_like(self, node, name: str) -> Compiled:
        decimals = node.args.get("decimals")
        (operand,) = self._numeric_args(name, [node.this], types.DOUBLE)
        if decimals is not None:
            places = coerce(self.compile(decimals), types.INTEGER)
            if places.sql_type.kind not in types.INT_KINDS + (Kind.NULL,):
                raise _no_function(name, [operand, places])
            value = _converted(operand, types.NUMERIC)
            rounding = decimal.ROUND_HALF_UP if name == "round" else decimal.ROUND_DOWN
            return _binary(value, _converted(places, types.INTEGER), types.NUMERIC,
                           lambda v, p: _round_decimal(v, p, rounding))
        target = self._float_or_numeric(name, operand)
        value = _converted(operand, target)
        evaluate = value.evaluate
        if target.kind is Kind.NUMERIC:
            rounding = {"round": decimal.ROUND_HALF_UP, "trunc": decimal.ROUND_DOWN,
                        "ceil": decimal.ROUND_CEILING, "floor": decimal.ROUND_FLOOR}[name]
            return Compiled(lambda row: _none_or(evaluate(row), lambda v: _round_decimal(v, 0, rounding)), target)
        apply = {"round": _float_round, "trunc": _float_trunc, "ceil": _float_ceil, "floor": _float_floor}[name]
        return Compiled(lambda row: _none_or(evaluate(row), apply), target)

    def _round(self, node) -> Compiled:
        return self._round_like(node, "round")

    def _trunc(self, node) -> Compiled:
        return self._round_like(node, "trunc")

    def _ceil(self, node) -> Compiled:
        if node.args.get("decimals") is not None:
            return self._unsupported(node)
        return self._round_like(node, "ceil")

    def _floor(self, node) -> Compiled:
        if node.args.get("decimals") is not None:
            return self._unsupported(node)
        return self._round_like(node, "floor")

    def _mod(self, node: exp.Mod) -> Compiled:
        return self.arithmetic("%", self.compile(node.this), self.compile(node.expression))

    def _sign(self, node) -> Compiled:
        (operand,) = self._numeric_args("sign", [node.this], types.DOUBLE)
        target = self._float_or_numeric("sign", operand)
        evaluate = _converted(operand, target).evaluate
        if target.kind is Kind.NUMERIC:
            return Compiled(lambda row: _none_or(evaluate(row), lambda v: D((v > 0) - (v < 0))), target)
        return Compiled(lambda row: _none_or(evaluate(row), lambda v: float((v > 0) - (v < 0))), target)

    def _float_function(self, name: str, node, apply) -> Compiled:
        (operand,) = self._numeric_args(name, [node.this], types.DOUBLE)
        if operand.sql_type.kind is Kind.NUMERIC:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"{name}(numeric) is not supported; cast the argument to double precision")
        evaluate = _converted(operand, types.DOUBLE).evaluate
        return Compiled(lambda row: _none_or(evaluate(row), apply), types.DOUBLE)

    def _sqrt(self, node) -> Compiled:
        return self._float_function("sqrt", node, _float_sqrt)

    def _cbrt(self, node) -> Compiled:
        return self._float_function("cbrt", node, lambda v: math.copysign(abs(v) ** (1 / 3), v))

    def _exp(self, node) -> Compiled:
        return self._float_function("exp", node, _float_exp)

    def _ln(self, node) -> Compiled:
        return self._float_function("ln", node, _float_ln)

    def _pi(self, node) -> Compiled:
        return constant(math.pi, types.DOUBLE)

    def _random(self, node) -> Compiled:
        rng = self.context.rng
        return Compiled(lambda row: rng.random(), types.DOUBLE)

    def _uuid(self, node) -> Compiled:
        rng = self.context.rng
        return Compiled(lambda row: uuid.UUID(int=rng.getrandbits(128), version=4), types.UUID)

    # date/time
    def _current_timestamp(self, node) -> Compiled:
        if node.args.get("this") is not None:
            return self._unsupported(node)
        return constant(self.context.now, types.TIMESTAMPTZ)

    def _current_date(self, node) -> Compiled:
        return constant(self.context.now.date(), types.DATE)

    def _localtimestamp(self, node) -> Compiled:
        return constant(self.context.now.replace(tzinfo=None), types.TIMESTAMP)

    def _extract(self, node: exp.Extract) -> Compiled:
        field = node.this.name.lower() if isinstance(node.this, (exp.Var, exp.Identifier, exp.Column)) else None
        if isinstance(node.this, exp.Literal):
            field = node.this.this.lower()
        return self._extract_field("extract", field, self.compile(node.expression))

    def _extract_field(self, name: str, field: str | None, operand: Compiled) -> Compiled:
        """EXTRACT (numeric, PostgreSQL 14+) and date_part (double precision) of one field."""
        if operand.sql_type.kind is Kind.UNKNOWN:
            operand = coerce(operand, types.TIMESTAMPTZ)
        kind = operand.sql_type.kind
        if kind not in types.DATETIME_KINDS + (Kind.NULL, Kind.INTERVAL):
            raise _no_function(name, [constant(field, types.TEXT), operand])
        field = interval_mod.unit_field(_FIELD_ALIASES.get(field, field)) if field is not None else field
        if kind is Kind.INTERVAL:
            interval_mod.extract(interval_mod.Interval(0, 0, 0), field)  # an unknown field fails before any row
            apply = lambda v: interval_mod.extract(v, field)  # noqa: E731
        else:
            apply = _extract_function(field, kind)
        evaluate = operand.evaluate
        if name == "date_part":
            if kind is Kind.INTERVAL:
                part = lambda v: interval_mod.part_float(v, field)  # noqa: E731
            elif field in ("epoch", "second", "millisecond") and kind is not Kind.DATE:
                part = lambda v: _timestamp_part_float(v, field)  # noqa: E731
            else:
                part = lambda v: float(apply(v))  # noqa: E731
            return Compiled(lambda row: _none_or(evaluate(row), part), types.DOUBLE)
        return Compiled(lambda row: _none_or(evaluate(row), apply), types.NUMERIC)

    def _date_part(self, node: exp.Anonymous) -> Compiled:
        if len(node.expressions) != 2:
            raise SqlError(errors.UNDEFINED_FUNCTION, "function date_part does not exist")
        field_node = node.expressions[0]
        if not (isinstance(field_node, exp.Literal) and field_node.is_string):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           "date_part with a field that is not a constant is not supported")
        return self._extract_field("date_part", field_node.this.lower(), self.compile(node.expressions[1]))

    def _date_trunc(self, node: exp.TimestampTrunc) -> Compiled:
        unit = interval_mod.unit_field(node.args["unit"].name.lower())
        operand = self.compile(node.this)
        if operand.sql_type.kind is Kind.UNKNOWN:
            operand = coerce(operand, types.TIMESTAMPTZ)
        kind = operand.sql_type.kind
        if kind is Kind.INTERVAL:
            if unit not in _TRUNC_UNITS:
                raise SqlError(errors.INVALID_PARAMETER_VALUE, f'unit "{unit}" not recognized for type interval')
            interval_mod.truncate(interval_mod.Interval(0, 0, 0), unit)  # week: 0A000 as PostgreSQL, before any row
            evaluate = operand.evaluate
            return Compiled(lambda row: _none_or(evaluate(row), lambda v: interval_mod.truncate(v, unit)),
                            types.INTERVAL)
        if kind not in types.DATETIME_KINDS:
            raise _no_function("date_trunc", [constant(unit, types.TEXT), operand])
        result_type = types.TIMESTAMPTZ if kind in (Kind.DATE, Kind.TIMESTAMPTZ) else types.TIMESTAMP
        value = _converted(operand, result_type).evaluate
        if unit not in _TRUNC_UNITS:
            raise SqlError(errors.INVALID_PARAMETER_VALUE, f'unit "{unit}" not recognized for type {result_type.display_name}')
        return Compiled(lambda row: _none_or(value(row), lambda v: _truncate(v, unit)), result_type)

    def _anonymous(self, node: exp.Anonymous) -> Compiled:
        name = str(node.this).lower()
        if name in ("nextval", "currval", "setval", "lastval"):
            return self._sequence_function(name, node.expressions)
        if name == "octet_length" and len(node.expressions) == 1:
            return self._octet_length(self._args(node.expressions))
        if name == "date_part":
            return self._date_part(node)
        if name == "regexp_match" and len(node.expressions) in (2, 3):
            return self._regexp_match(node)
        if name == "generate_subscripts":
            return self._set_returning_function(node)
        if name in ("strpos",) and len(node.expressions) == 2:
            return self._string_function("strpos", node.expressions, lambda t, s: t.find(s) + 1, types.INTEGER)
        compiled = _catalog.compile_function(self, name, node.expressions)
        if compiled is not None:
            return compiled
        raise SqlError(errors.UNDEFINED_FUNCTION if name not in _KNOWN_UNSUPPORTED else errors.FEATURE_NOT_SUPPORTED,
                       f"function {name}({', '.join(self._arg_type_names(node.expressions))}) does not exist"
                       if name not in _KNOWN_UNSUPPORTED else f"function {name}() is not supported",
                       hint="No function matches the given name and argument types. You might need to add explicit "
                            "type casts." if name not in _KNOWN_UNSUPPORTED else "")

    def _sequence_function(self, name: str, nodes) -> Compiled:
        """nextval/currval/setval('name' ...) and lastval() (compute_node/sql/sequences.py)."""
        from compute_node.sql import sequences
        arity = {"nextval": (1,), "currval": (1,), "setval": (2, 3), "lastval": (0,)}[name]
        if len(nodes) not in arity:
            raise SqlError(errors.UNDEFINED_FUNCTION, f"function {name}({', '.join(self._arg_type_names(nodes))}) "
                                                      "does not exist")
        txn = getattr(self.context, "txn", None)
        if txn is None:  # compiled only to validate (a DEFAULT): never evaluated here
            self._args(nodes[1:])
            return Compiled(_describe_only, types.BIGINT)
        statement = sequences.statement_sequences(self.context)
        if name == "lastval":
            return Compiled(lambda row: statement.lastval(), types.BIGINT)
        sequence_name = _sequence_name(nodes[0])
        statement.names.add(sequence_name)
        if name == "nextval":
            statement.nextval_names.add(sequence_name)
            return Compiled(lambda row: statement.nextval(sequence_name), types.BIGINT)
        if name == "currval":
            return Compiled(lambda row: statement.currval(sequence_name), types.BIGINT)
        value = self.compile(nodes[1])
        if value.param is not None:
            value.param.infer(types.BIGINT)
        called = self.as_boolean(self.compile(nodes[2]), "setval") if len(nodes) == 3 else constant(True, types.BOOLEAN)
        if value.sql_type.kind not in types.INT_KINDS and value.sql_type.kind not in types.UNTYPED_KINDS:
            raise SqlError(errors.UNDEFINED_FUNCTION, f"function setval(unknown, {value.sql_type.display_name}) "
                                                      "does not exist")
        if not (value.constant or value.param is not None) or not (called.constant or called.param is not None):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "setval with arguments other than constants or parameters "
                                                         "is not supported")
        call_id = len(statement.setvals)
        as_int = _converted(value, types.BIGINT).evaluate
        statement.setvals.append((sequence_name, lambda: as_int(()), lambda: called.evaluate(())))
        return Compiled(lambda row: statement.setval_result(call_id), types.BIGINT)

    def _arg_type_names(self, nodes) -> list[str]:
        names = []
        for node in nodes:
            try:
                names.append(self.compile(node).sql_type.display_name)
            except SqlError:
                names.append("unknown")
        return names

    # --- aggregates --------------------------------------------------------------------
    def _filter(self, node: exp.Filter) -> Compiled:
        inner = node.this
        if not isinstance(inner, AGGREGATE_NODES):
            raise SqlError(errors.SYNTAX_ERROR, "FILTER specified, but it is not an aggregate function")
        condition_node = node.expression.this if isinstance(node.expression, exp.Where) else node.expression
        return self._aggregate(inner, condition_node)

    def _aggregate(self, node: exp.Expression, filter_node: exp.Expression | None = None) -> Compiled:
        name = _AGGREGATE_NAMES[type(node)]
        if self.aggregates is None:
            raise SqlError(errors.GROUPING_ERROR, f"aggregate functions are not allowed in {self.clause}")
        if node.args.get("expressions") and name in ("min", "max"):
            raise _no_function(name, [])
        if node.args.get("nulls_excluded"):
            return self._unsupported(node)
        argument_node = node.this
        distinct = False
        order_items: list = []
        if isinstance(argument_node, exp.Order):
            order_items = list(argument_node.expressions)
            argument_node = argument_node.this
            if isinstance(argument_node, exp.Distinct):
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{name}(DISTINCT ... ORDER BY ...) is not supported")
        if isinstance(argument_node, exp.Distinct):
            if len(argument_node.expressions) != 1:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{name}(DISTINCT ...) with several arguments is not supported")
            distinct = True
            argument_node = argument_node.expressions[0]
        inner = Compiler(self.scope, "aggregate function calls", None, self.context)
        argument = None
        if isinstance(argument_node, exp.Star):
            if name != "count":
                raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near "*"')
        else:
            argument = self._aggregate_argument(inner, argument_node)
        if name == "array_agg" and isinstance(argument_node, (exp.Literal, exp.Null)) and (
                isinstance(argument_node, exp.Null) or argument_node.is_string):
            raise SqlError(errors.AMBIGUOUS_FUNCTION, "function array_agg(unknown) is not unique")
        separator = None
        if name == "string_agg":
            separator_node = node.args.get("separator")
            if separator_node is None:
                raise _no_function("string_agg", [argument] if argument else [])
            separator = _as_text(self._aggregate_argument(inner, separator_node))
            if argument.sql_type.kind not in types.TEXT_KINDS + types.UNTYPED_KINDS:
                raise _no_function("string_agg", [argument, separator])
            argument = _as_text(argument)
        condition = None
        if filter_node is not None:
            condition = Compiler(self.scope, "FILTER", None, self.context).compile_condition(filter_node)
        order = []
        for item in order_items:
            if not isinstance(item, exp.Ordered) or item.args.get("with_fill") is not None:
                return self._unsupported(item)
            key = self._aggregate_argument(inner, item.this)
            descending = bool(item.args.get("desc"))
            nulls_first = item.args.get("nulls_first")
            order.append((_comparison_form(key, key.sql_type), descending,
                          descending if nulls_first is None else bool(nulls_first)))
        if distinct and name in ("string_agg", "array_agg") and not order:
            # PostgreSQL finds the distinct values by sorting them: they come out in that order.
            order = [(_comparison_form(argument, argument.sql_type), False, False)]
        result_type = _aggregate_type(name, argument)
        if argument is not None and name in ("sum", "avg") and argument.sql_type.kind in types.INT_KINDS:
            argument = _converted(argument, types.NUMERIC) if result_type.kind is Kind.NUMERIC else argument
        if argument is not None and argument.sql_type.kind is Kind.CHAR and name not in ("min", "max", "count",
                                                                                      "array_agg"):
            argument = _as_text(argument)
        position = self.aggregates.add(AggregateSpec(name, argument, distinct, result_type, condition, separator,
                                                     tuple(order)))
        return Compiled(lambda row, i=position: row[i], result_type)

    def _aggregate_argument(self, inner: "Compiler", node: exp.Expression) -> Compiled:
        try:
            argument = inner.compile(node)
        except SqlError as error:
            if error.sqlstate == errors.GROUPING_ERROR and "aggregate functions are not allowed" in error.message:
                raise SqlError(errors.GROUPING_ERROR, "aggregate function calls cannot be nested") from None
            raise
        if argument.sql_type.kind is Kind.UNKNOWN:
            argument = coerce(argument, types.TEXT)
        return argument

    def _interval(self, node: exp.Interval) -> Compiled:
        """INTERVAL '5' DAY (`INTERVAL 'text'` arrives as a cast: compute_node/sql/parser.py)."""
        unit = node.args.get("unit")
        quantity = node.this
        if not (isinstance(unit, exp.Var) and isinstance(quantity, exp.Literal)
                and re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", quantity.this or "")):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f'interval literal "{node.sql(dialect="postgres")}" is not supported')
        return constant(interval_mod.parse_interval(f"{quantity.this} {unit.name.lower()}"), types.INTERVAL)

    # regular expressions (compute_node/sql/regex.py)
    def _regexp(self, name: str, nodes, apply, case_insensitive: bool = False,
                result_type: SqlType = types.TEXT, pattern_text=None) -> Compiled:
        """A function of (text, pattern, *extra text arguments) -> apply(pattern, text, *extra);
        `pattern_text` rewrites the pattern into an ARE first (SIMILAR TO)."""
        operands = self._text_args(name, nodes)
        text_eval, pattern_eval = operands[0].evaluate, operands[1].evaluate
        extra_evals = [o.evaluate for o in operands[2:]]
        rewrite = pattern_text or (lambda text: text)
        if operands[1].constant and operands[1].evaluate(()) is not None:
            regex_mod.compile_pattern(rewrite(operands[1].evaluate(())), case_insensitive)  # 2201B before any row

        def evaluate(row):
            text = text_eval(row)
            pattern = pattern_eval(row)
            values = [e(row) for e in extra_evals]
            if text is None or pattern is None or any(v is None for v in values):
                return None
            return apply(regex_mod.compile_pattern(rewrite(pattern), case_insensitive), text, *values)
        return Compiled(evaluate, result_type)

    def _regexp_like(self, node) -> Compiled:
        if node.args.get("flag") is not None:
            return self._unsupported(node)
        symbol = "~*" if isinstance(node, exp.RegexpILike) else "~"
        subject, pattern = self.compile(node.this), self.compile(node.expression)
        for operand in (subject, pattern):
            if operand.sql_type.kind not in types.TEXT_KINDS + types.UNTYPED_KINDS:
                raise _no_operator(f"{subject.sql_type.display_name} {symbol} {pattern.sql_type.display_name}")
        return self._regexp(symbol, [node.this, node.expression], lambda p, t: regex_mod.matches(p, t),
                            isinstance(node, exp.RegexpILike), types.BOOLEAN)

    def _regexp_match(self, node: exp.Anonymous) -> Compiled:
        """regexp_match(text, pattern [, flags]) -> text[]: the capture groups of the first match
        (the whole match when there are none), NULL when nothing matches."""
        case_insensitive = False
        if len(node.expressions) == 3:
            flags_node = node.expressions[2]
            if not (isinstance(flags_node, exp.Literal) and flags_node.is_string):
                raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                               "regexp_match flags that are not a constant are not supported")
            if "g" in flags_node.this:
                raise SqlError(errors.INVALID_PARAMETER_VALUE, 'regexp_match() does not support the "global" option',
                               hint="Use the regexp_matches function instead.")
            _, case_insensitive = regex_mod.parse_flags(flags_node.this)
        return self._regexp("regexp_match", node.expressions[:2], _first_match, case_insensitive,
                            SqlType(Kind.ARRAY, element=types.TEXT))

    def _regexp_replace(self, node: exp.RegexpReplace) -> Compiled:
        for key in ("position", "occurrence"):
            if node.args.get(key) is not None:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                               "regexp_replace with a start position or occurrence is not supported")
        modifiers = node.args.get("modifiers")
        flags = ""
        if modifiers is not None:
            if not (isinstance(modifiers, exp.Literal) and modifiers.is_string):
                raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                               "regexp_replace flags that are not a constant are not supported")
            flags = modifiers.this
        is_global, case_insensitive = regex_mod.parse_flags(flags)
        return self._regexp("regexp_replace", [node.this, node.expression, node.args["replacement"]],
                            lambda p, t, r: regex_mod.replace(p, t, r, is_global), case_insensitive)

    # --- window functions and set-returning functions (query-level features) ---------------
    def _window(self, node) -> Compiled:
        if self.windows is not None:
            return self.windows.add(self, node)
        if self.clause == "aggregate function calls":
            raise SqlError(errors.GROUPING_ERROR, "aggregate function calls cannot contain window function calls")
        raise SqlError(errors.WINDOWING_ERROR, f"window functions are not allowed in {self.clause}")

    def _window_function_without_over(self, node) -> Compiled:
        name = _window_function_name(node)
        raise SqlError(errors.WRONG_OBJECT_TYPE, f"window function {name} requires an OVER clause")

    def _set_returning_function(self, node) -> Compiled:
        if self.set_returning is not None:
            return self.set_returning.add(self, node)
        if self.clause in ("aggregate function calls", "window function calls"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{self.clause} cannot contain set-returning function calls",
                           hint="You might be able to move the set-returning function into a LATERAL FROM item.")
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"set-returning functions are not allowed in {self.clause}")

    def _unsupported(self, node: exp.Expression) -> Compiled:
        if isinstance(node, (exp.HexString, exp.BitString)):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "bit string constants are not supported")
        if isinstance(node, (exp.Select, exp.Union)):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of subquery is not supported")
        if isinstance(node, exp.Placeholder) or isinstance(node, exp.Parameter):
            number = node.this.this if isinstance(node.this, exp.Literal) else node.sql(dialect="postgres")
            raise SqlError(errors.UNDEFINED_PARAMETER, f"there is no parameter ${number}")
        if isinstance(node, (exp.Explode, exp.ExplodingGenerateSeries)) or (
                isinstance(node, exp.Anonymous) and str(node.this).lower() == "generate_subscripts"):
            name = "unnest" if isinstance(node, exp.Explode) else "generate_series" if isinstance(
                node, exp.ExplodingGenerateSeries) else "generate_subscripts"
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"set-returning function {name}() is supported only as a "
                                                         "whole select-list item or in FROM")
        if isinstance(node, exp.Func):
            name = node.sql_name().lower() if not isinstance(node, exp.Anonymous) else str(node.this).lower()
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"function {name}() is not supported")
        if isinstance(node, exp.Star):
            raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near "*"')
        if isinstance(node, exp.Collate):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "COLLATE is not supported (text compares in C collation)")
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       f'expression "{node.sql(dialect="postgres")}" is not supported')

    # --- type unification -------------------------------------------------------------
    def _unify(self, left: Compiled, right: Compiled, symbol: str, numeric_default: bool = False):
        """Gives untyped literals the type of the other side (both untyped: text, or error for arithmetic)."""
        left_kind, right_kind = left.sql_type.kind, right.sql_type.kind
        if left_kind in types.UNTYPED_KINDS and right_kind not in types.UNTYPED_KINDS:
            target = right.sql_type.base
            if numeric_default and right_kind is Kind.DATE and left_kind is Kind.UNKNOWN:
                target = types.INTEGER if symbol == "+" else types.DATE
            return coerce(left, target), right
        if right_kind in types.UNTYPED_KINDS and left_kind not in types.UNTYPED_KINDS:
            target = left.sql_type.base
            if numeric_default and left_kind is Kind.DATE and right_kind is Kind.UNKNOWN:
                target = types.INTEGER if symbol == "+" else types.DATE
            return left, coerce(right, target)
        if left_kind in types.UNTYPED_KINDS and right_kind in types.UNTYPED_KINDS:
            if numeric_default:
                if Kind.UNKNOWN in (left_kind, right_kind):
                    raise SqlError(errors.AMBIGUOUS_FUNCTION, f"operator is not unique: unknown {symbol} unknown")
                return left, right
            return coerce(left, types.TEXT), coerce(right, types.TEXT)
        return left, right


# --- helpers used by several compilers ------------------------------------------------------
def coerce(compiled: Compiled, target: SqlType) -> Compiled:
    """Gives an untyped literal (UNKNOWN or NULL) the type `target`; typed expressions of the
    same category are converted to it; anything else passes through unchanged."""
    kind = compiled.sql_type.kind
    if kind is Kind.NULL:
        return constant(None, target)
    if kind is Kind.UNKNOWN and compiled.param is not None:  # a $n being described takes the type
        compiled.param.infer(target if target.kind not in types.UNTYPED_KINDS else types.TEXT)
        return Compiled(_describe_only, compiled.param.sql_type or types.TEXT, False, compiled.param)
    if kind is Kind.UNKNOWN:
        assert compiled.constant
        if target.kind in types.UNTYPED_KINDS:
            return constant(compiled.evaluate(()), types.TEXT)
        text = compiled.evaluate(())
        parse_type = target if target.kind is not Kind.VARCHAR else types.TEXT
        value = types.parse_text_as(text, parse_type if target.kind is not Kind.CHAR else SqlType(Kind.CHAR))
        return constant(value, parse_type.base if target.kind is not Kind.CHAR else SqlType(Kind.CHAR))
    if types.category(kind) == types.category(target.kind) and kind != target.kind:
        return _converted(compiled, target)
    return compiled


coerce_constant = coerce


def _converted(compiled: Compiled, target: SqlType) -> Compiled:
    source = compiled.sql_type
    if source.kind == target.kind or source.kind is Kind.NULL:
        return Compiled(compiled.evaluate, target if source.kind is Kind.NULL else source, compiled.constant)
    evaluate = compiled.evaluate
    if compiled.constant:
        return constant(types.convert(evaluate(()), source, target), target)
    return Compiled(lambda row: types.convert(evaluate(row), source, target), target)


def _as_text(compiled: Compiled) -> Compiled:
    """A string operand as text (char(n) loses its padding; unknown literals become text)."""
    kind = compiled.sql_type.kind
    if kind in types.UNTYPED_KINDS:
        return coerce(compiled, types.TEXT)
    if kind is Kind.CHAR:
        return _converted(compiled, types.TEXT)
    if kind in types.TEXT_KINDS:
        return compiled
    evaluate, source = compiled.evaluate, compiled.sql_type
    return Compiled(lambda row: _none_or(evaluate(row), lambda v: types.format_value(v, source)), types.TEXT,
                    compiled.constant)


def _castable(source: SqlType, target: SqlType) -> bool:
    src, dst = source.kind, target.kind
    if src == dst or dst in types.TEXT_KINDS or src in types.TEXT_KINDS:
        return True
    if src in types.NUMERIC_KINDS and dst in types.NUMERIC_KINDS:
        return True
    if {src, dst} == {Kind.INTEGER, Kind.BOOLEAN}:
        return True
    return src in types.DATETIME_KINDS and dst in types.DATETIME_KINDS


def _comparison_type(left: SqlType, right: SqlType, symbol: str) -> SqlType:
    left_category, right_category = types.category(left.kind), types.category(right.kind)
    if left_category != right_category:
        raise _no_operator(f"{left.display_name} {symbol} {right.display_name}")
    if left_category == "numeric":
        return types.numeric_result(left, right)
    if left_category == "datetime":
        return types.datetime_result(left, right)
    if left_category == "string":
        return left if left.kind is Kind.CHAR and right.kind is Kind.CHAR else types.TEXT
    return left


def _comparable_arrays(left: Compiled, right: Compiled, symbol: str) -> tuple[Compiled, Compiled]:
    """Arrays compare as PostgreSQL's array operators do: element by element, a NULL element
    equal to another NULL and greater than any value, a shorter array that is a prefix of the
    other smaller. An untyped literal ('{1,2}') is read as the other side's array type."""
    array_type = left.sql_type if left.sql_type.kind is Kind.ARRAY else right.sql_type
    if left.sql_type.kind in types.UNTYPED_KINDS:
        left = coerce(left, array_type)
    if right.sql_type.kind in types.UNTYPED_KINDS:
        right = coerce(right, array_type)
    if left.sql_type.kind is not Kind.ARRAY or right.sql_type.kind is not Kind.ARRAY or \
            types.category(left.sql_type.element.kind) != types.category(right.sql_type.element.kind):
        raise _no_operator(f"{left.sql_type.display_name} {symbol} {right.sql_type.display_name}")

    def form(compiled: Compiled) -> Compiled:
        evaluate = compiled.evaluate

        def key(row):
            values = evaluate(row)
            if values is None:
                return None
            return types.sort_key(values)
        return Compiled(key, compiled.sql_type, compiled.constant)
    return form(left), form(right)


def _comparison_form(compiled: Compiled, common: SqlType) -> Compiled:
    """The operand as values that compare (==, <) as PostgreSQL compares them in type `common`."""
    converted = _converted(compiled, common) if compiled.sql_type.kind != common.kind else compiled
    kind = common.kind
    evaluate = converted.evaluate
    if kind is Kind.CHAR:
        return Compiled(lambda row: _none_or(evaluate(row), lambda v: v.rstrip(" ")), common, converted.constant)
    if kind in types.FLOAT_KINDS:
        return Compiled(lambda row: _none_or(evaluate(row), _float_key), common, converted.constant)
    return converted


class _FloatKey(float):
    """A float where NaN equals NaN and sorts above every number (PostgreSQL's float ordering)."""
    __slots__ = ()

    def _key(self):
        return (1, 0.0) if math.isnan(self) else (0, float(self))

    def __eq__(self, other):
        return self._key() == _FloatKey(other)._key()

    def __ne__(self, other):
        return not self == other

    def __lt__(self, other):
        return self._key() < _FloatKey(other)._key()

    def __le__(self, other):
        return self._key() <= _FloatKey(other)._key()

    def __gt__(self, other):
        return self._key() > _FloatKey(other)._key()

    def __ge__(self, other):
        return self._key() >= _FloatKey(other)._key()

    def __hash__(self):
        return hash(self._key())


def _float_key(value: float) -> float:
    return _FloatKey(value) if math.isnan(value) else value + 0.0


def _hashable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ("NaN",)
    if isinstance(value, list):  # a catalog array (indkey, array_agg): grouped and hashed by its elements
        return ("array",) + tuple(_hashable(item) for item in value)
    return value


_group_key_value = _hashable


def _binary(left: Compiled, right: Compiled, result_type: SqlType, apply) -> Compiled:
    left_eval, right_eval = left.evaluate, right.evaluate

    def evaluate(row):
        a = left_eval(row)
        if a is None:
            return None
        b = right_eval(row)
        if b is None:
            return None
        return apply(a, b)
    if left.constant and right.constant:
        return constant(evaluate(()), result_type)
    return Compiled(evaluate, result_type)


def _family(kind: Kind) -> str:
    if kind in types.INT_KINDS:
        return "int"
    if kind is Kind.NUMERIC:
        return "numeric"
    return "float"


def _int_operation(symbol: str, result_type: SqlType):
    check = types.check_int_range

    def div(a, b):
        if b == 0:
            raise SqlError(errors.DIVISION_BY_ZERO, "division by zero")
        quotient = abs(a) // abs(b)
        return check(quotient if (a >= 0) == (b >= 0) else -quotient, result_type)

    def mod(a, b):
        if b == 0:
            raise SqlError(errors.DIVISION_BY_ZERO, "division by zero")
        remainder = abs(a) % abs(b)
        return remainder if a >= 0 else -remainder
    return {"+": lambda a, b: check(a + b, result_type), "-": lambda a, b: check(a - b, result_type),
            "*": lambda a, b: check(a * b, result_type), "/": div, "%": mod}[symbol]


def _numeric_operation(symbol: str, result_type: SqlType):
    def to_decimal(value):
        return D(value) if isinstance(value, int) else value

    def div(a, b):
        a, b = to_decimal(a), to_decimal(b)
        if b.is_zero():
            raise SqlError(errors.DIVISION_BY_ZERO, "division by zero")
        scale = _division_scale(a, b)
        return CTX.divide(a, b).quantize(D(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP, context=CTX)

    def mod(a, b):
        a, b = to_decimal(a), to_decimal(b)
        if b.is_zero():
            raise SqlError(errors.DIVISION_BY_ZERO, "division by zero")
        return CTX.remainder(a, b)
    return {"+": lambda a, b: CTX.add(to_decimal(a), to_decimal(b)),
            "-": lambda a, b: CTX.subtract(to_decimal(a), to_decimal(b)),
            "*": lambda a, b: CTX.multiply(to_decimal(a), to_decimal(b)), "/": div, "%": mod}[symbol]


def _display_scale(value: D) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _base10000(value: D) -> tuple[int, int]:
    """(weight, first digit) of |value| in PostgreSQL's base-10000 numeric representation."""
    if value.is_zero():
        return 0, 0
    magnitude = abs(value)
    weight = magnitude.adjusted() // 4
    first = int(magnitude.scaleb(-4 * weight, context=CTX).to_integral_value(rounding=decimal.ROUND_FLOOR))
    return weight, first


def _division_scale(a: D, b: D) -> int:
    """PostgreSQL's select_div_scale: at least 16 significant digits, no less than either input's scale."""
    weight1, first1 = _base10000(a)
    weight2, first2 = _base10000(b)
    quotient_weight = weight1 - weight2
    if first1 <= first2:
        quotient_weight -= 1
    scale = 16 - quotient_weight * 4
    scale = max(scale, _display_scale(a), _display_scale(b), 0)
    return min(scale, 1000)


def _decimal_div_trunc(a, b) -> D:
    a = D(a) if isinstance(a, int) else a
    b = D(b) if isinstance(b, int) else b
    if b.is_zero():
        raise SqlError(errors.DIVISION_BY_ZERO, "division by zero")
    return CTX.divide_int(a, b)


def _float_operation(symbol: str, result_type: SqlType):
    is_real = result_type.kind is Kind.REAL

    def checked(a, b, result):
        if is_real:
            result = types.to_real(result)
        if math.isinf(result) and not math.isinf(a) and not math.isinf(b):
            raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow")
        if result == 0 and symbol in "*/" and a != 0 and not math.isinf(b):
            raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: underflow")
        return result

    def div(a, b):
        a, b = float(a), float(b)
        if b == 0:
            raise SqlError(errors.DIVISION_BY_ZERO, "division by zero")
        return checked(a, b, a / b)
    return {"+": lambda a, b: checked(float(a), float(b), float(a) + float(b)),
            "-": lambda a, b: checked(float(a), float(b), float(a) - float(b)),
            "*": lambda a, b: checked(float(a), float(b), float(a) * float(b)), "/": div}[symbol]


_OPERATIONS = {"int": _int_operation, "numeric": _numeric_operation, "float": _float_operation}


def _float_power(a, b) -> float:
    a, b = float(a), float(b)
    if a == 0 and b < 0:
        raise SqlError(errors.INVALID_ARGUMENT_FOR_POWER_FUNCTION, "zero raised to a negative power is undefined")
    if a < 0 and not b.is_integer():
        raise SqlError(errors.INVALID_ARGUMENT_FOR_POWER_FUNCTION, "a negative number raised to a non-integer power yields a complex result")
    try:
        result = math.pow(a, b)
    except OverflowError:
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow") from None
    return result


def _float_sqrt(value: float) -> float:
    if value < 0:
        raise SqlError(errors.INVALID_ARGUMENT_FOR_POWER_FUNCTION, "cannot take square root of a negative number")
    return math.sqrt(value)


def _float_exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow") from None


def _float_ln(value: float) -> float:
    if value == 0:
        raise SqlError(errors.INVALID_ARGUMENT_FOR_LOGARITHM, "cannot take logarithm of zero")
    if value < 0:
        raise SqlError(errors.INVALID_ARGUMENT_FOR_LOGARITHM, "cannot take logarithm of a negative number")
    return math.log(value)


def _float_round(value: float) -> float:
    if math.isnan(value) or math.isinf(value):
        return value
    return float(round(value))  # rint(): half to even


def _float_trunc(value: float) -> float:
    return value if math.isnan(value) or math.isinf(value) else float(math.trunc(value))


def _float_ceil(value: float) -> float:
    return value if math.isnan(value) or math.isinf(value) else float(math.ceil(value))


def _float_floor(value: float) -> float:
    return value if math.isnan(value) or math.isinf(value) else float(math.floor(value))


def _round_decimal(value: D, places: int, rounding: str) -> D:
    if places < -1000 or places > 1000:
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "value overflows numeric format")
    quantum = D(1).scaleb(-places)
    result = value.quantize(quantum, rounding=rounding, context=CTX)
    if places < 0:
        result = result.quantize(D(1), context=CTX)
    return result


def _add_days(day: datetime.date, days: int) -> datetime.date:
    try:
        return day + datetime.timedelta(days=days)
    except OverflowError:
        raise SqlError(errors.DATETIME_FIELD_OVERFLOW, "date out of range") from None


def _substring(text: str, start: int, length: int | None = None) -> str:
    if length is not None and length < 0:
        raise SqlError(errors.SUBSTRING_ERROR, "negative substring length not allowed")
    begin = start - 1
    end = None if length is None else begin + length
    begin = max(begin, 0)
    if end is not None and end <= begin:
        return ""
    return text[begin:end]


def _left(text: str, n: int) -> str:
    return text[:n] if n >= 0 else text[:max(len(text) + n, 0)]


def _right(text: str, n: int) -> str:
    if n >= 0:
        return text[len(text) - n:] if n else ""
    return text[-n:]


def _pad(text: str, length: int, fill: str, is_left: bool) -> str:
    if length <= 0:
        return ""
    if len(text) >= length or not fill:
        return text[:length]
    needed = length - len(text)
    padding = (fill * (needed // len(fill) + 1))[:needed]
    return padding + text if is_left else text + padding


def _initcap(text: str) -> str:
    out = []
    previous_alnum = False
    for char in text:
        out.append(char.lower() if previous_alnum else char.upper())
        previous_alnum = char.isalnum()
    return "".join(out)


def _split_part(text: str, delimiter: str, index: int) -> str:
    if index == 0:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, "field position must not be zero")
    parts = text.split(delimiter) if delimiter else [text]
    if index < 0:
        index = len(parts) + index + 1
        if index <= 0:
            return ""
    return parts[index - 1] if index <= len(parts) else ""


def _chr(code: int) -> str:
    if code == 0:
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, "null character not permitted")
    if code < 0 or code > 0x10FFFF:
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, "requested character too large for encoding: %d" % code)
    return chr(code)


_FIELD_ALIASES = {"years": "year", "months": "month", "mon": "month", "days": "day", "hours": "hour",
                  "minutes": "minute", "seconds": "second", "epochs": "epoch"}
_TRUNC_UNITS = ("millennium", "century", "decade", "year", "quarter", "month", "week", "day", "hour", "minute",
                "second", "millisecond", "microsecond")


def _truncate(value: datetime.datetime, unit: str) -> datetime.datetime:
    if unit in ("millennium", "century", "decade"):
        if unit == "decade":
            year = value.year // 10 * 10
        else:  # centuries and millennia start at year 1 (2001-01-01 begins the 21st century)
            step = 100 if unit == "century" else 1000
            year = (value.year - 1) // step * step + 1
        try:
            return value.replace(year=year, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        except ValueError:
            raise SqlError(errors.DATETIME_FIELD_OVERFLOW, "timestamp out of range") from None
    if unit == "millisecond":
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if unit == "microsecond":
        return value
    if unit == "year":
        return value.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "quarter":
        return value.replace(month=(value.month - 1) // 3 * 3 + 1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "month":
        return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "week":
        start = value - datetime.timedelta(days=value.weekday())
        return start.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return value.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    if unit == "minute":
        return value.replace(second=0, microsecond=0)
    return value.replace(microsecond=0)


def _extract_function(field: str | None, kind: Kind):
    is_date = kind is Kind.DATE
    epoch_utc = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1)
    simple = {
        "year": lambda v: v.year, "month": lambda v: v.month, "day": lambda v: v.day,
        "quarter": lambda v: (v.month - 1) // 3 + 1, "dow": lambda v: v.isoweekday() % 7,
        "isodow": lambda v: v.isoweekday(), "doy": lambda v: v.timetuple().tm_yday,
        "week": lambda v: v.isocalendar()[1], "decade": lambda v: v.year // 10,
        "century": lambda v: (v.year + 99) // 100, "millennium": lambda v: (v.year + 999) // 1000,
        "isoyear": lambda v: v.isocalendar()[0],
    }
    if field in simple:
        getter = simple[field]
        return lambda v: D(getter(v))
    if is_date:
        if field == "epoch":
            return lambda v: D((v - datetime.date(1970, 1, 1)).days * 86400)
        if field in _TIME_FIELDS:  # PostgreSQL knows these but not for a date: 0A000 there too
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'unit "{field}" not supported for type date')
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f'unit "{field}" not recognized for type date')
    if field == "hour":
        return lambda v: D(v.hour)
    if field == "minute":
        return lambda v: D(v.minute)
    if field == "second":
        return lambda v: (D(v.second * 1_000_000 + v.microsecond) / D(1_000_000)).quantize(D("0.000001"))
    if field == "millisecond":
        return lambda v: (D(v.second * 1_000_000 + v.microsecond) / D(1000)).quantize(D("0.001"))
    if field == "microsecond":
        return lambda v: D(v.second * 1_000_000 + v.microsecond)
    if field == "epoch":
        def epoch_seconds(v):
            delta = v - (epoch_utc if v.tzinfo is not None else epoch)
            micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
            return (D(micros) / D(1_000_000)).quantize(D("0.000001"))
        return epoch_seconds
    if field in ("julian", "timezone", "timezone_hour", "timezone_minute"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'EXTRACT field "{field}" is not supported')
    type_name = "timestamp with time zone" if kind is Kind.TIMESTAMPTZ else "timestamp without time zone"
    raise SqlError(errors.INVALID_PARAMETER_VALUE, f'unit "{field}" not recognized for type {type_name}')


def _timestamp_part_float(value: datetime.datetime, field: str) -> float:
    """date_part's double precision epoch / second / millisecond, in PostgreSQL's float arithmetic."""
    if field == "epoch":
        epoch = datetime.datetime(1970, 1, 1, tzinfo=value.tzinfo)
        delta = value - epoch
        return ((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) / 1000000.0
    if field == "second":
        return value.second + value.microsecond / 1000000.0
    return value.second * 1000.0 + value.microsecond / 1000.0


_TIME_FIELDS = ("hour", "minute", "second", "millisecond", "microsecond", "julian", "timezone", "timezone_hour",
                "timezone_minute")


def _aggregate_type(name: str, argument: Compiled | None) -> SqlType:
    if name == "count":
        return types.BIGINT
    assert argument is not None
    kind = argument.sql_type.kind
    if name in ("bool_and", "bool_or"):
        if kind not in (Kind.BOOLEAN, Kind.NULL, Kind.UNKNOWN):
            raise _no_function(name, [argument])
        return types.BOOLEAN
    if name == "string_agg":
        return types.TEXT
    if name == "array_agg":
        if kind is Kind.ARRAY:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "array_agg of arrays is not supported")
        element = types.TEXT if kind in types.UNTYPED_KINDS else argument.sql_type.base
        return SqlType(Kind.ARRAY, element=element)
    if kind is Kind.NULL:
        if name in ("sum", "avg"):
            raise SqlError(errors.AMBIGUOUS_FUNCTION, f"function {name}(unknown) is not unique")
        return types.TEXT
    if name in ("sum", "avg") and kind is Kind.INTERVAL:
        return types.INTERVAL
    if name == "sum":
        if kind in (Kind.SMALLINT, Kind.INTEGER):
            return types.BIGINT
        if kind in (Kind.BIGINT, Kind.NUMERIC):
            return types.NUMERIC
        if kind in types.FLOAT_KINDS:
            return SqlType(kind)
        raise _no_function(name, [argument])
    if name == "avg":
        if kind in types.INT_KINDS or kind is Kind.NUMERIC:
            return types.NUMERIC
        if kind in types.FLOAT_KINDS:
            return types.DOUBLE
        raise _no_function(name, [argument])
    if kind in (Kind.VARCHAR, Kind.TEXT):
        return types.TEXT
    if kind in (Kind.UUID,):
        raise _no_function(name, [argument])
    return argument.sql_type.base


def sql_and(left: Compiled, right: Compiled) -> Compiled:
    """SQL's three-valued AND of two compiled booleans (also used by select.py's join conditions)."""
    left_eval, right_eval = left.evaluate, right.evaluate

    def evaluate(row):
        a = left_eval(row)
        if a is False:
            return False
        b = right_eval(row)
        if b is False:
            return False
        if a is None or b is None:
            return None
        return True
    return Compiled(evaluate, types.BOOLEAN)


def _or(left: Compiled, right: Compiled) -> Compiled:
    left_eval, right_eval = left.evaluate, right.evaluate

    def evaluate(row):
        a = left_eval(row)
        if a is True:
            return True
        b = right_eval(row)
        if b is True:
            return True
        if a is None or b is None:
            return None
        return False
    return Compiled(evaluate, types.BOOLEAN)


def _first_match(pattern, text: str):
    found = regex_mod.search(pattern, text)
    if found is None:
        return None
    parts = found.groups() if pattern.groups else (found.group(0),)
    return types.ArrayValue(parts, types.TEXT)


def _row_equal(pairs: list[tuple[Evaluator, Evaluator]]) -> Evaluator:
    def evaluate(row):
        saw_null = False
        for left_eval, right_eval in pairs:
            a, b = left_eval(row), right_eval(row)
            if a is None or b is None:
                saw_null = True
            elif a != b:
                return False
        return None if saw_null else True
    return evaluate


def _none_or(value, apply):
    return None if value is None else apply(value)


def like_to_regex(pattern: str, escape: str = "\\") -> str:
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if escape and char == escape:
            if index + 1 >= len(pattern):
                raise SqlError(errors.INVALID_ESCAPE_SEQUENCE, "LIKE pattern must not end with escape character")
            out.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        if char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _no_operator(signature: str) -> SqlError:
    return SqlError(errors.UNDEFINED_FUNCTION, f"operator does not exist: {signature}",
                    hint="No operator matches the given name and argument types. You might need to add explicit type casts.")


def _no_function(name: str, operands: Sequence[Compiled]) -> SqlError:
    signature = ", ".join(o.sql_type.display_name for o in operands)
    return SqlError(errors.UNDEFINED_FUNCTION, f"function {name}({signature}) does not exist",
                    hint="No function matches the given name and argument types. You might need to add explicit type casts.")


def _sequence_name(node: exp.Expression) -> str:
    """The sequence a nextval-like call names: a string constant, optionally ::regclass."""
    if isinstance(node, exp.Cast) and node.args.get("to") is not None and \
            node.args["to"].sql(dialect="postgres").lower() == "regclass":
        node = node.this
    if not (isinstance(node, exp.Literal) and node.is_string):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "sequence functions take the sequence name as a constant string")
    text = node.this
    if text.startswith('"') and text.endswith('"') and len(text) > 1:
        return text[1:-1]
    name = text.lower()
    return name[len("public."):] if name.startswith("public.") else name


_KNOWN_UNSUPPORTED = {
    "age", "every", "gcd", "lcm", "to_timestamp", "to_date", "to_number",
    "array_length", "unnest", "generate_series", "row_number", "rank",
    "dense_rank", "lag", "lead", "jsonb_build_object", "regexp_matches", "pg_sleep",
    "regexp_split_to_array", "regexp_split_to_table",
    "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday", "make_date",
}

_HANDLERS: dict[type, Callable[[Compiler, Any], Compiled]] = {
    exp.Paren: Compiler._paren,
    exp.Literal: Compiler._literal,
    exp.Parameter: Compiler._parameter,
    exp.Boolean: Compiler._boolean,
    exp.ByteString: Compiler._escape_string,
    exp.RawString: Compiler._escape_string,
    exp.National: Compiler._escape_string,
    exp.Null: Compiler._null,
    exp.Column: Compiler._column,
    exp.Neg: Compiler._neg,
    exp.DPipe: Compiler._concat,
    exp.Pow: Compiler._pow,
    exp.NullSafeEQ: Compiler._distinct_from,
    exp.NullSafeNEQ: Compiler._distinct_from,
    exp.In: Compiler._in,
    exp.Between: Compiler._between,
    exp.Like: Compiler._like,
    exp.ILike: Compiler._like,
    exp.Escape: Compiler._escape,
    exp.And: Compiler._and_or,
    exp.Or: Compiler._and_or,
    exp.Not: Compiler._not,
    exp.Is: Compiler._is,
    exp.Cast: Compiler._cast,
    exp.Case: Compiler._case,
    exp.Coalesce: Compiler._coalesce,
    exp.Nullif: Compiler._nullif,
    exp.Greatest: Compiler._greatest_least,
    exp.Least: Compiler._greatest_least,
    exp.Subquery: Compiler._scalar_subquery,
    exp.Exists: Compiler._exists,
    exp.Lower: Compiler._lower,
    exp.Upper: Compiler._upper,
    exp.Length: Compiler._length,
    exp.Substring: Compiler._substring,
    exp.StrPosition: Compiler._strpos,
    exp.Trim: Compiler._trim,
    exp.Replace: Compiler._replace,
    exp.Left: Compiler._left_right,
    exp.Right: Compiler._left_right,
    exp.Pad: Compiler._pad,
    exp.Repeat: Compiler._repeat,
    exp.Reverse: Compiler._reverse,
    exp.Initcap: Compiler._initcap,
    exp.SplitPart: Compiler._split_part,
    exp.StartsWith: Compiler._starts_with,
    exp.MD5: Compiler._md5,
    exp.Ascii: Compiler._ascii,
    exp.Chr: Compiler._chr,
    exp.Concat: Compiler._concat_function,
    exp.ConcatWs: Compiler._concat_function,
    exp.Abs: Compiler._abs,
    exp.Round: Compiler._round,
    exp.Trunc: Compiler._trunc,
    exp.Ceil: Compiler._ceil,
    exp.Floor: Compiler._floor,
    exp.Mod: Compiler._mod,
    exp.Sign: Compiler._sign,
    exp.Sqrt: Compiler._sqrt,
    exp.Cbrt: Compiler._cbrt,
    exp.Exp: Compiler._exp,
    exp.Ln: Compiler._ln,
    exp.Pi: Compiler._pi,
    exp.Rand: Compiler._random,
    exp.Uuid: Compiler._uuid,
    exp.CurrentTimestamp: Compiler._current_timestamp,
    exp.CurrentDate: Compiler._current_date,
    exp.Localtimestamp: Compiler._localtimestamp,
    exp.Extract: Compiler._extract,
    exp.TimestampTrunc: Compiler._date_trunc,
    exp.Anonymous: Compiler._anonymous,
    exp.Filter: Compiler._filter,
    exp.Window: Compiler._window,
    exp.Interval: Compiler._interval,
    exp.RegexpLike: Compiler._regexp_like,
    exp.RegexpILike: Compiler._regexp_like,
    exp.RegexpReplace: Compiler._regexp_replace,
    exp.SimilarTo: Compiler._similar_to,
}
# The catalog's functions, casts and operators live in compute_node/sql/_catalog.py,
# which builds on this module's Compiled and helpers; it installs itself here when it is imported
# (compute_node/sql/__init__.py imports it), so this module does not import it back.
_catalog: Any = None


def install_catalog(module: Any) -> None:
    global _catalog
    _catalog = module
    _HANDLERS.update({
        exp.Dot: module.compile_dot,
        exp.Operator: module.compile_operator,
        exp.Collate: module.compile_collate,
        exp.Array: module.compile_array,
        exp.ArrayToString: module.compile_array_to_string,
        exp.Bracket: module.compile_subscript,
        exp.ArrayRemove: lambda compiler, node: module.compile_function(
            compiler, "array_remove", [node.this, node.expression]),
        exp.ArraySize: lambda compiler, node: module.compile_array_bound(
            compiler, "array_length", [node.this, node.expression] if node.expression is not None else [node.this]),
        exp.BitwiseAnd: module.compile_bitwise,
        exp.BitwiseOr: module.compile_bitwise,
        exp.BitwiseXor: module.compile_bitwise,
    })
    for node_type in (exp.CurrentVersion, exp.CurrentUser, exp.SessionUser, exp.CurrentSchema, exp.CurrentDatabase,
                      exp.CurrentCatalog, exp.CurrentSchemas):
        _HANDLERS[node_type] = module.compile_session_node


_WINDOW_FUNCTIONS = {exp.RowNumber: "row_number", exp.Rank: "rank", exp.DenseRank: "dense_rank",
                     exp.PercentRank: "percent_rank", exp.CumeDist: "cume_dist", exp.Ntile: "ntile",
                     exp.Lag: "lag", exp.Lead: "lead", exp.FirstValue: "first_value",
                     exp.LastValue: "last_value", exp.NthValue: "nth_value"}


def _window_function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Window):
        return _simple_name(node.this)
    return _WINDOW_FUNCTIONS[type(node)]


for _node_type in _WINDOW_FUNCTIONS:
    _HANDLERS[_node_type] = Compiler._window_function_without_over
_HANDLERS[exp.ExplodingGenerateSeries] = Compiler._set_returning_function
_HANDLERS[exp.Explode] = Compiler._set_returning_function
for _node_type in _COMPARISONS:
    _HANDLERS[_node_type] = Compiler._comparison
for _node_type in _ARITHMETIC:
    if _node_type is not exp.Mod:
        _HANDLERS[_node_type] = Compiler._arithmetic
for _node_type in AGGREGATE_NODES:
    _HANDLERS[_node_type] = Compiler._aggregate


def contains_aggregate(node: exp.Expression | None) -> bool:
    """True when `node` calls an aggregate at this query level (not inside a subquery)."""
    if node is None:
        return False
    for found in node.walk(prune=lambda n: isinstance(n, (exp.Subquery, exp.Select, exp.Exists)) and n is not node):
        if isinstance(found, AGGREGATE_NODES) and not _windowed(found):
            return True
        if isinstance(found, exp.Dot) and isinstance(found.expression, exp.Anonymous) \
                and str(found.expression.this).lower() in _AGGREGATE_NAMES.values():
            return True  # pg_catalog.array_agg(...): sqlglot leaves a qualified aggregate anonymous
    return False


def _windowed(node: exp.Expression) -> bool:
    """True for the aggregate a window applies (`sum(x) OVER ...`): not an aggregate of the query."""
    parent = node.parent
    if isinstance(parent, exp.Filter) and parent.this is node:
        node, parent = parent, parent.parent
    return isinstance(parent, exp.Window) and parent.this is node


_FUNCTION_NAMES = {
    exp.Lower: "lower", exp.Upper: "upper", exp.Length: "length", exp.Abs: "abs", exp.Coalesce: "coalesce",
    exp.Nullif: "nullif", exp.Greatest: "greatest", exp.Least: "least",
    exp.Substring: "substring", exp.StrPosition: "strpos", exp.Trim: "btrim", exp.Replace: "replace",
    exp.Concat: "concat", exp.ConcatWs: "concat_ws", exp.Left: "left", exp.Right: "right",
    exp.Repeat: "repeat", exp.Reverse: "reverse", exp.Initcap: "initcap", exp.SplitPart: "split_part",
    exp.StartsWith: "starts_with", exp.MD5: "md5", exp.Ascii: "ascii", exp.Chr: "chr", exp.Round: "round",
    exp.Trunc: "trunc", exp.Ceil: "ceil", exp.Floor: "floor", exp.Sign: "sign",
    exp.Sqrt: "sqrt", exp.Cbrt: "cbrt", exp.Exp: "exp", exp.Ln: "ln", exp.Pi: "pi", exp.Rand: "random",
    exp.Uuid: "gen_random_uuid", exp.CurrentTimestamp: "now", exp.CurrentDate: "current_date",
    exp.Localtimestamp: "localtimestamp", exp.Extract: "extract", exp.TimestampTrunc: "date_trunc",
    exp.Pow: "power", exp.Exists: "exists", exp.CurrentVersion: "version", exp.CurrentUser: "current_user",
    exp.SessionUser: "session_user", exp.CurrentSchema: "current_schema", exp.CurrentDatabase: "current_database",
    exp.CurrentCatalog: "current_catalog", exp.CurrentSchemas: "current_schemas", exp.Array: "array",
    exp.ArrayToString: "array_to_string", exp.ArraySize: "array_length", exp.Explode: "unnest",
    exp.ExplodingGenerateSeries: "generate_series", exp.RegexpReplace: "regexp_replace", exp.Interval: "interval",
}


def output_name(node: exp.Expression) -> str:
    """The column name PostgreSQL gives an output expression (its FigureColname)."""
    return _figure_name(node)[0]


def _figure_name(node: exp.Expression) -> tuple[str, int]:
    """(name, strength): 2 for names from columns and functions, 1 for weak ones (casts, CASE)."""
    if isinstance(node, exp.Alias):
        return identifier_name(node.args["alias"]), 2
    if isinstance(node, exp.Paren):
        return _figure_name(node.this)
    if isinstance(node, exp.Column):
        return identifier_name(node.this), 2
    if isinstance(node, exp.Cast):
        if isinstance(node.this, exp.IntDiv):
            return "div", 2
        inner, strength = _figure_name(node.this)
        if strength > 1:
            return inner, strength
        catalog_type = _catalog.cast_target_name(node.args["to"])
        if catalog_type is not None:
            return catalog_type.strip('"'), 1
        try:
            return types.CAST_COLUMN_NAMES[types.type_from_sqlglot(node.args["to"]).kind], 1
        except SqlError:
            return "?column?", 0
    if isinstance(node, exp.Case):
        return "case", 1
    name = _simple_name(node)
    return name, (0 if name == "?column?" else 2)


def _simple_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Window):
        return _simple_name(node.this)
    if type(node) in _WINDOW_FUNCTIONS:
        return _WINDOW_FUNCTIONS[type(node)]
    if isinstance(node, exp.ExplodingGenerateSeries):
        return "generate_series"
    if isinstance(node, exp.Filter):
        return output_name(node.this)
    if isinstance(node, exp.Bracket):  # (f(x))[1] is named after f, as PostgreSQL's FigureColname
        return output_name(node.this)
    if isinstance(node, AGGREGATE_NODES):
        return _AGGREGATE_NAMES[type(node)]
    if isinstance(node, exp.Pad):
        return "lpad" if node.args.get("is_left") else "rpad"
    if isinstance(node, exp.Trim):
        position = str(node.args.get("position") or "").upper()
        return {"LEADING": "ltrim", "TRAILING": "rtrim"}.get(position, "btrim")
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select) and node.this.expressions:
        return output_name(node.this.expressions[0])
    if type(node) in _FUNCTION_NAMES:
        return _FUNCTION_NAMES[type(node)]
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
        return _simple_name(node.expression)
    return "?column?"
