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

Untyped string literals ('12') have type UNKNOWN and are converted to the type of
the other operand at compile time (so `id = '12'` compares integers); untyped NULL
likewise takes the other operand's type.

Aggregates: when the compiler is given an `AggregateCollector`, it compiles the
select list of a grouped query. An expression equal to a GROUP BY expression reads
the group's value; an aggregate call (count/sum/min/max/avg) registers a slot whose
argument is compiled against the input row; any other column reference is 42803.
The grouped row seen by such evaluators is group values followed by aggregate values.
"""
from __future__ import annotations

import dataclasses
import math
import operator
import re
from typing import Any, Callable, Sequence

from sqlglot import exp

from compute_node.sql import types
from compute_node.sql.catalog import identifier_name
from compute_node.sql.types import Kind, SqlType
from quorumdb import errors
from quorumdb.errors import SqlError

Row = Sequence[Any]
Evaluator = Callable[[Row], Any]


@dataclasses.dataclass(frozen=True)
class Compiled:
    evaluate: Evaluator
    sql_type: SqlType
    constant: bool = False


def constant(value: Any, sql_type: SqlType) -> Compiled:
    return Compiled(lambda row: value, sql_type, True)


@dataclasses.dataclass(frozen=True)
class Scope:
    """The columns an expression may name: one table (or none, for SELECT without FROM)."""
    table_name: str | None
    alias: str | None
    columns: tuple[tuple[str, SqlType], ...]

    def resolve(self, column: exp.Column) -> tuple[int, SqlType]:
        name = identifier_name(column.this)
        qualifier = column.args.get("table")
        if qualifier is not None:
            qualifier_name = identifier_name(qualifier)
            visible = self.alias if self.alias is not None else self.table_name
            if qualifier_name != visible:
                raise SqlError(errors.UNDEFINED_TABLE, f'missing FROM-clause entry for table "{qualifier_name}"')
        for index, (column_name, sql_type) in enumerate(self.columns):
            if column_name == name:
                return index, sql_type
        shown = f"{identifier_name(qualifier)}.{name}" if qualifier is not None else name
        raise SqlError(errors.UNDEFINED_COLUMN, f'column "{shown}" does not exist')


EMPTY_SCOPE = Scope(None, None, ())

AGGREGATE_NODES = (exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg)


@dataclasses.dataclass
class AggregateSpec:
    name: str               # count, sum, min, max, avg
    argument: Compiled | None  # None for count(*)
    distinct: bool
    result_type: SqlType


class AggregateCollector:
    """Collects the GROUP BY expressions and aggregate calls of one grouped query."""

    def __init__(self, row_compiler: "Compiler", group_nodes: Sequence[exp.Expression]):
        self.row_compiler = row_compiler
        self.group_nodes = list(group_nodes)
        self.group_compiled = [row_compiler.compile(node) for node in self.group_nodes]
        self.group_columns = [self._column_index(node) for node in self.group_nodes]
        self.aggregates: list[AggregateSpec] = []

    def _column_index(self, node: exp.Expression) -> int | None:
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            return self.row_compiler.scope.resolve(node)[0]
        return None

    def match_group(self, node: exp.Expression) -> int | None:
        column_index = self._column_index(node) if isinstance(node, exp.Column) else None
        for position, group_node in enumerate(self.group_nodes):
            if column_index is not None and self.group_columns[position] == column_index:
                return position
            if column_index is None and not isinstance(node, exp.Column) and node == group_node:
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
_INT_WIDTH = {Kind.SMALLINT: 0, Kind.INTEGER: 1, Kind.BIGINT: 2}


class Compiler:
    """Compiles expressions over one scope; `clause` names the context in error messages."""

    def __init__(self, scope: Scope, clause: str, aggregates: AggregateCollector | None = None):
        self.scope = scope
        self.clause = clause
        self.aggregates = aggregates

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
        compiled = self.compile(node)
        return self._as_boolean(compiled, f"argument of {self.clause}")

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
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"numeric constant {value} is not supported (type numeric is not implemented)")
        try:
            value = float(text)
        except ValueError:
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{text}"') from None
        return constant(-value if negate else value, types.DOUBLE)

    def _escape_string(self, node: exp.ByteString) -> Compiled:
        return constant(node.this, types.UNKNOWN)  # E'...': sqlglot already resolved the escapes

    def _boolean(self, node: exp.Boolean) -> Compiled:
        return constant(bool(node.this), types.BOOLEAN)

    def _null(self, node: exp.Null) -> Compiled:
        return constant(None, types.NULL)

    def _column(self, node: exp.Column) -> Compiled:
        if isinstance(node.this, exp.Star):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{node.sql()} is only supported in the select list")
        if self.aggregates is not None:
            self.scope.resolve(node)  # 42703 before 42803, as PostgreSQL
            shown = node.sql(dialect="postgres")
            raise SqlError(errors.GROUPING_ERROR,
                           f'column "{shown}" must appear in the GROUP BY clause or be used in an aggregate function')
        index, sql_type = self.scope.resolve(node)
        return Compiled(lambda row, i=index: row[i], sql_type)

    # --- arithmetic ---------------------------------------------------------------
    def _neg(self, node: exp.Neg) -> Compiled:
        inner = node.this
        if isinstance(inner, exp.Literal) and not inner.is_string:
            return self._literal(inner, negate=True)
        operand = self.compile(inner)
        if operand.sql_type.kind is Kind.UNKNOWN:
            operand = coerce_constant(operand, types.DOUBLE)
        kind = operand.sql_type.kind
        if kind is Kind.NULL:
            return constant(None, types.INTEGER)
        if kind not in types.NUMERIC_KINDS:
            raise _no_operator(f"- {operand.sql_type.display_name}")
        sql_type = operand.sql_type
        evaluate = operand.evaluate
        if kind is Kind.DOUBLE:
            return Compiled(lambda row: _none_or(evaluate(row), operator.neg), sql_type)
        return Compiled(lambda row: _none_or(evaluate(row), lambda v: types.check_int_range(-v, sql_type)), sql_type)

    def _arithmetic(self, node: exp.Binary) -> Compiled:
        symbol = _ARITHMETIC[type(node)]
        left, right = self._unify(self.compile(node.this), self.compile(node.expression), symbol, numeric_default=True)
        if left.sql_type.kind is Kind.NULL and right.sql_type.kind is Kind.NULL:
            return constant(None, types.INTEGER)
        left_kind, right_kind = left.sql_type.kind, right.sql_type.kind
        if left_kind not in types.NUMERIC_KINDS or right_kind not in types.NUMERIC_KINDS:
            raise _no_operator(f"{left.sql_type.display_name} {symbol} {right.sql_type.display_name}")
        if Kind.DOUBLE in (left_kind, right_kind):
            if symbol == "%":
                raise _no_operator("double precision % double precision")
            result_type = types.DOUBLE
            apply = _double_operation(symbol)
        else:
            result_type = max(left.sql_type, right.sql_type, key=lambda t: _INT_WIDTH[t.kind])
            result_type = SqlType(result_type.kind)
            apply = _int_operation(symbol, result_type)
        left_eval, right_eval = left.evaluate, right.evaluate

        def evaluate(row):
            a = left_eval(row)
            if a is None:
                return None
            b = right_eval(row)
            if b is None:
                return None
            return apply(a, b)
        return Compiled(evaluate, result_type, left.constant and right.constant)

    def _concat(self, node: exp.DPipe) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        text_like = types.TEXT_KINDS + (Kind.UNKNOWN,)
        if left.sql_type.kind not in text_like and right.sql_type.kind not in text_like:
            if Kind.NULL not in (left.sql_type.kind, right.sql_type.kind):
                raise _no_operator(f"{left.sql_type.display_name} || {right.sql_type.display_name}")
        left_eval, right_eval = left.evaluate, right.evaluate

        def evaluate(row):
            a = left_eval(row)
            b = right_eval(row)
            if a is None or b is None:
                return None
            return types.format_value(a) + types.format_value(b)
        return Compiled(evaluate, types.TEXT)

    # --- comparisons -----------------------------------------------------------------
    def _comparison(self, node: exp.Binary) -> Compiled:
        symbol, compare = _COMPARISONS[type(node)]
        return self.compare(self.compile(node.this), self.compile(node.expression), symbol, compare)

    def compare(self, left: Compiled, right: Compiled, symbol: str, compare) -> Compiled:
        left, right = self._unify(left, right, symbol)
        key = _comparison_key(left.sql_type, right.sql_type, symbol)
        left_eval, right_eval = left.evaluate, right.evaluate

        def evaluate(row):
            a = left_eval(row)
            if a is None:
                return None
            b = right_eval(row)
            if b is None:
                return None
            return compare(key(a), key(b))
        return Compiled(evaluate, types.BOOLEAN)

    def _distinct_from(self, node: exp.Binary) -> Compiled:
        negate = isinstance(node, exp.NullSafeEQ)  # IS NOT DISTINCT FROM
        left, right = self._unify(self.compile(node.this), self.compile(node.expression), "IS DISTINCT FROM")
        key = _comparison_key(left.sql_type, right.sql_type, "IS DISTINCT FROM")
        left_eval, right_eval = left.evaluate, right.evaluate

        def evaluate(row):
            a, b = left_eval(row), right_eval(row)
            if a is None or b is None:
                distinct = (a is None) != (b is None)
            else:
                distinct = key(a) != key(b)
            return not distinct if negate else distinct
        return Compiled(evaluate, types.BOOLEAN)

    def _in(self, node: exp.In) -> Compiled:
        if node.args.get("query") is not None or node.args.get("unnest") is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "subqueries are not supported")
        subject = self.compile(node.this)
        options = [self.compile(option) for option in node.expressions]
        common = _common_type([subject] + options, "IN")
        subject = coerce_constant(subject, common)
        options = [coerce_constant(option, common) for option in options]
        key = _comparison_key(common, common, "=")
        subject_eval = subject.evaluate
        if all(option.constant for option in options):
            values = [option.evaluate(()) for option in options]
            has_null = any(value is None for value in values)
            value_keys = {key(value) for value in values if value is not None}

            def evaluate(row):
                a = subject_eval(row)
                if a is None:
                    return None
                if key(a) in value_keys:
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
                elif key(a) == key(b):
                    return True
            return None if saw_null else False
        return Compiled(evaluate_general, types.BOOLEAN)

    def _between(self, node: exp.Between) -> Compiled:
        if node.args.get("symmetric"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "BETWEEN SYMMETRIC is not supported")
        subject = self.compile(node.this)
        low = self.compare(subject, self.compile(node.args["low"]), ">=", operator.ge)
        high = self.compare(subject, self.compile(node.args["high"]), "<=", operator.le)
        return _and(low, high)

    def _like(self, node: exp.Like | exp.ILike) -> Compiled:
        if node.args.get("escape") is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "LIKE ... ESCAPE is not supported")
        subject = self.compile(node.this)
        pattern = self.compile(node.expression)
        name = "~~*" if isinstance(node, exp.ILike) else "~~"
        for operand in (subject, pattern):
            if operand.sql_type.kind not in types.TEXT_KINDS + (Kind.UNKNOWN, Kind.NULL):
                raise _no_operator(f"{subject.sql_type.display_name} {name} {pattern.sql_type.display_name}")
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
                compiled = cache[like] = re.compile(_like_to_regex(like), flags)
            matched = compiled.fullmatch(text) is not None
            return not matched if negate else matched
        return Compiled(evaluate, types.BOOLEAN)

    # --- logic -------------------------------------------------------------------------
    def _and_or(self, node: exp.And | exp.Or) -> Compiled:
        word = "AND" if isinstance(node, exp.And) else "OR"
        left = self._as_boolean(self.compile(node.this), f"argument of {word}")
        right = self._as_boolean(self.compile(node.expression), f"argument of {word}")
        return _and(left, right) if word == "AND" else _or(left, right)

    def _not(self, node: exp.Not) -> Compiled:
        operand = self._as_boolean(self.compile(node.this), "argument of NOT")
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
            subject = self._as_boolean(subject, "argument of IS")
            evaluate = subject.evaluate
            wanted = bool(target.this)
            return Compiled(lambda row: (evaluate(row) is wanted) != negate, types.BOOLEAN)
        return self._unsupported(node)

    def _as_boolean(self, compiled: Compiled, what: str) -> Compiled:
        kind = compiled.sql_type.kind
        if kind is Kind.BOOLEAN:
            return compiled
        if kind is Kind.NULL:
            return constant(None, types.BOOLEAN)
        if kind is Kind.UNKNOWN:
            return coerce_constant(compiled, types.BOOLEAN)
        raise SqlError(errors.DATATYPE_MISMATCH, f"{what} must be type boolean, not type {compiled.sql_type.display_name}")

    # --- functions -----------------------------------------------------------------------
    def _cast(self, node: exp.Cast) -> Compiled:
        target = types.type_from_sqlglot(node.args["to"])
        operand = self.compile(node.this)
        source = operand.sql_type
        if source.kind is Kind.NULL:
            return constant(None, target)
        if operand.constant:
            return constant(types.cast(operand.evaluate(()), source, target), target)
        evaluate = operand.evaluate
        return Compiled(lambda row: types.cast(evaluate(row), source, target), target)

    def _text_function(self, node: exp.Func, name: str, apply, result_type: SqlType) -> Compiled:
        operand = self.compile(node.this)
        if operand.sql_type.kind not in types.TEXT_KINDS + (Kind.UNKNOWN, Kind.NULL):
            raise _no_function(name, [operand])
        evaluate = operand.evaluate
        return Compiled(lambda row: _none_or(evaluate(row), apply), result_type)

    def _lower(self, node) -> Compiled:
        return self._text_function(node, "lower", str.lower, types.TEXT)

    def _upper(self, node) -> Compiled:
        return self._text_function(node, "upper", str.upper, types.TEXT)

    def _length(self, node) -> Compiled:
        return self._text_function(node, "length", len, types.INTEGER)

    def _abs(self, node) -> Compiled:
        operand = self.compile(node.this)
        if operand.sql_type.kind is Kind.UNKNOWN:
            operand = coerce_constant(operand, types.DOUBLE)
        kind = operand.sql_type.kind
        if kind is Kind.NULL:
            return constant(None, types.DOUBLE)
        if kind not in types.NUMERIC_KINDS:
            raise _no_function("abs", [operand])
        sql_type = operand.sql_type
        evaluate = operand.evaluate
        if kind is Kind.DOUBLE:
            return Compiled(lambda row: _none_or(evaluate(row), abs), sql_type)
        return Compiled(lambda row: _none_or(evaluate(row), lambda v: types.check_int_range(abs(v), sql_type)), sql_type)

    def _coalesce(self, node: exp.Coalesce) -> Compiled:
        operands = [self.compile(node.this)] + [self.compile(e) for e in node.expressions]
        common = _common_type(operands, "COALESCE")
        operands = [coerce_constant(o, common) for o in operands]
        evals = [o.evaluate for o in operands]

        def evaluate(row):
            for operand_eval in evals:
                value = operand_eval(row)
                if value is not None:
                    return value
            return None
        return Compiled(evaluate, common)

    def _aggregate(self, node: exp.Expression) -> Compiled:
        name = type(node).__name__.lower()
        if self.aggregates is None:
            raise SqlError(errors.GROUPING_ERROR, f"aggregate functions are not allowed in {self.clause}")
        argument_node = node.this
        distinct = False
        if isinstance(argument_node, exp.Distinct):
            if len(argument_node.expressions) != 1:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{name}(DISTINCT ...) with several arguments is not supported")
            distinct = True
            argument_node = argument_node.expressions[0]
        argument = None
        if isinstance(argument_node, exp.Star):
            if name != "count":
                raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "*"')
        else:
            inner = Compiler(self.scope, "aggregate function calls", None)
            try:
                argument = inner.compile(argument_node)
            except SqlError as error:
                if error.sqlstate == errors.GROUPING_ERROR:
                    raise SqlError(errors.GROUPING_ERROR, "aggregate function calls cannot be nested") from None
                raise
            if argument.sql_type.kind is Kind.UNKNOWN:
                argument = coerce_constant(argument, types.TEXT)
        result_type = _aggregate_type(name, argument)
        position = self.aggregates.add(AggregateSpec(name, argument, distinct, result_type))
        return Compiled(lambda row, i=position: row[i], result_type)

    def _unsupported(self, node: exp.Expression) -> Compiled:
        if isinstance(node, (exp.Subquery, exp.Select, exp.Exists, exp.Union)):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "subqueries are not supported")
        if isinstance(node, exp.Anonymous):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"function {node.name.lower()}() is not supported")
        if isinstance(node, exp.Func):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"function {node.sql_name().lower()}() is not supported")
        if isinstance(node, exp.Star):
            raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near "*"')
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       f'expression "{node.sql(dialect="postgres")}" is not supported')

    # --- type unification -------------------------------------------------------------
    def _unify(self, left: Compiled, right: Compiled, symbol: str, numeric_default: bool = False):
        """Gives untyped literals the type of the other side (both untyped: text, or error for arithmetic)."""
        untyped = (Kind.UNKNOWN, Kind.NULL)
        left_kind, right_kind = left.sql_type.kind, right.sql_type.kind
        if left_kind in untyped and right_kind not in untyped:
            return coerce_constant(left, right.sql_type), right
        if right_kind in untyped and left_kind not in untyped:
            return left, coerce_constant(right, left.sql_type)
        if left_kind in untyped and right_kind in untyped:
            if numeric_default:
                if Kind.UNKNOWN in (left_kind, right_kind):
                    raise SqlError("42725", f"operator is not unique: unknown {symbol} unknown")
                return left, right
            return coerce_constant(left, types.TEXT), coerce_constant(right, types.TEXT)
        return left, right


def coerce_constant(compiled: Compiled, target: SqlType) -> Compiled:
    """Gives an untyped literal (UNKNOWN or NULL) the type `target`; typed expressions pass through."""
    kind = compiled.sql_type.kind
    if kind is Kind.NULL:
        return constant(None, target)
    if kind is Kind.UNKNOWN:
        assert compiled.constant
        if target.kind in (Kind.UNKNOWN, Kind.NULL):
            return constant(compiled.evaluate(()), types.TEXT)
        value = types.parse_text_as(compiled.evaluate(()), SqlType(target.kind) if target.kind is Kind.VARCHAR else target)
        return constant(value, SqlType(Kind.TEXT) if target.kind is Kind.VARCHAR else target)
    return compiled


def _category(kind: Kind) -> str:
    if kind in types.NUMERIC_KINDS:
        return "numeric"
    if kind in types.TEXT_KINDS:
        return "text"
    if kind is Kind.BOOLEAN:
        return "boolean"
    return kind.value


def _comparison_key(left: SqlType, right: SqlType, symbol: str):
    if _category(left.kind) != _category(right.kind):
        raise _no_operator(f"{left.display_name} {symbol} {right.display_name}")
    if Kind.DOUBLE in (left.kind, right.kind):
        return lambda value: types.sort_key(float(value))
    return _identity


def _identity(value):
    return value


def _common_type(operands: Sequence[Compiled], construct: str) -> SqlType:
    typed = [o.sql_type for o in operands if o.sql_type.kind not in (Kind.UNKNOWN, Kind.NULL)]
    if not typed:
        return types.TEXT
    categories = {_category(t.kind) for t in typed}
    if len(categories) > 1:
        names = sorted({t.display_name for t in typed})
        raise SqlError(errors.DATATYPE_MISMATCH, f"{construct} types {names[0]} and {names[1]} cannot be matched")
    if categories == {"numeric"}:
        if any(t.kind is Kind.DOUBLE for t in typed):
            return types.DOUBLE
        return SqlType(max(typed, key=lambda t: _INT_WIDTH[t.kind]).kind)
    if categories == {"text"}:
        return types.TEXT
    return typed[0]


def _aggregate_type(name: str, argument: Compiled | None) -> SqlType:
    if name == "count":
        return types.BIGINT
    assert argument is not None
    kind = argument.sql_type.kind
    if kind is Kind.NULL:
        return types.BIGINT if name == "sum" else types.DOUBLE if name == "avg" else types.TEXT
    if name == "sum":
        if kind in types.INT_KINDS:
            return types.BIGINT
        if kind is Kind.DOUBLE:
            return types.DOUBLE
        raise _no_function(name, [argument])
    if name == "avg":
        if kind in types.NUMERIC_KINDS:
            return types.DOUBLE
        raise _no_function(name, [argument])
    if kind is Kind.VARCHAR:
        return types.TEXT
    return argument.sql_type


def _and(left: Compiled, right: Compiled) -> Compiled:
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


def _none_or(value, apply):
    return None if value is None else apply(value)


def _int_operation(symbol: str, result_type: SqlType):
    check = types.check_int_range

    def add(a, b):
        return check(a + b, result_type)

    def sub(a, b):
        return check(a - b, result_type)

    def mul(a, b):
        return check(a * b, result_type)

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
    return {"+": add, "-": sub, "*": mul, "/": div, "%": mod}[symbol]


def _double_operation(symbol: str):
    def checked(a, b, result):
        if math.isinf(result) and not math.isinf(a) and not math.isinf(b):
            raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow")
        return result

    def add(a, b):
        return checked(a, b, float(a) + float(b))

    def sub(a, b):
        return checked(a, b, float(a) - float(b))

    def mul(a, b):
        return checked(a, b, float(a) * float(b))

    def div(a, b):
        if b == 0:
            raise SqlError(errors.DIVISION_BY_ZERO, "division by zero")
        return checked(a, b, float(a) / float(b))
    return {"+": add, "-": sub, "*": mul, "/": div}[symbol]


def _like_to_regex(pattern: str) -> str:
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
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


_HANDLERS: dict[type, Callable[[Compiler, Any], Compiled]] = {
    exp.Paren: Compiler._paren,
    exp.Literal: Compiler._literal,
    exp.Boolean: Compiler._boolean,
    exp.ByteString: Compiler._escape_string,
    exp.Null: Compiler._null,
    exp.Column: Compiler._column,
    exp.Neg: Compiler._neg,
    exp.DPipe: Compiler._concat,
    exp.NullSafeEQ: Compiler._distinct_from,
    exp.NullSafeNEQ: Compiler._distinct_from,
    exp.In: Compiler._in,
    exp.Between: Compiler._between,
    exp.Like: Compiler._like,
    exp.ILike: Compiler._like,
    exp.And: Compiler._and_or,
    exp.Or: Compiler._and_or,
    exp.Not: Compiler._not,
    exp.Is: Compiler._is,
    exp.Cast: Compiler._cast,
    exp.Lower: Compiler._lower,
    exp.Upper: Compiler._upper,
    exp.Length: Compiler._length,
    exp.Abs: Compiler._abs,
    exp.Coalesce: Compiler._coalesce,
}
for _node_type in _COMPARISONS:
    _HANDLERS[_node_type] = Compiler._comparison
for _node_type in _ARITHMETIC:
    _HANDLERS[_node_type] = Compiler._arithmetic
for _node_type in AGGREGATE_NODES:
    _HANDLERS[_node_type] = Compiler._aggregate


def contains_aggregate(node: exp.Expression | None) -> bool:
    return node is not None and any(isinstance(n, AGGREGATE_NODES) for n in node.walk())


def output_name(node: exp.Expression) -> str:
    """The column name PostgreSQL gives an output expression."""
    if isinstance(node, exp.Alias):
        return identifier_name(node.args["alias"])
    if isinstance(node, exp.Paren):
        return output_name(node.this)
    if isinstance(node, exp.Column):
        return identifier_name(node.this)
    if isinstance(node, exp.Cast):
        inner = output_name(node.this)
        if inner != "?column?":
            return inner
        return types.type_from_sqlglot(node.args["to"]).kind.name.lower().replace("double", "float8")
    if isinstance(node, AGGREGATE_NODES):
        return type(node).__name__.lower()
    if isinstance(node, (exp.Lower, exp.Upper, exp.Length, exp.Abs, exp.Coalesce)):
        return type(node).__name__.lower()
    if isinstance(node, exp.Boolean):
        return "bool"
    return "?column?"
