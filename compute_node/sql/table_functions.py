"""Set-returning functions in FROM and in select lists: generate_series, unnest,
generate_subscripts and (in FROM) pg_options_to_table (pure, no I/O).

Theory of operation
-------------------
A function in FROM is compiled like an expression, in a scope of the FROM items
before it (PostgreSQL makes such a call implicitly LATERAL: `FROM t,
generate_series(1, t.n)` is legal). Compiling returns `produce(left_row) -> rows`,
which the join calls once per row of the items before it (once with `()` when the
function comes first), and the type of the one column it yields.

generate_series(start, stop [, step]) is defined here for integers (integer when
all arguments fit, bigint otherwise) and numeric, as in PostgreSQL; a NULL argument
gives no rows, a zero step is 22023. The timestamp form needs an interval step and
is refused with 0A000. unnest(array) yields the elements (in FROM several arrays
side by side, the shorter padded with NULL); generate_subscripts(array, 1) the
subscripts (int2vector/oidvector count from 0, arrays from 1; arrays have one
dimension, so any other gives no rows); pg_options_to_table(reloptions) each
'name=value' element as (option_name, option_value). One call yields at most
`limits.RESULT_ROWS_MAX` rows (PostgreSQL has no such bound; a runaway series here
would otherwise run out of memory).
"""
from __future__ import annotations

import decimal
from typing import Callable

from sqlglot import exp

from compute_node.sql import types
from compute_node.sql.expressions import Compiled, Compiler, coerce
from compute_node.sql.types import Kind, SqlType
from quorumdb import errors, limits
from quorumdb.errors import SqlError


Produce = Callable[[tuple], list[tuple]]


class SetReturningCollector:
    """generate_series, unnest and generate_subscripts in a select list (PostgreSQL 10+ semantics): each input row (after
    grouping and window functions) yields as many rows as its longest series, the shorter
    series padded with NULLs, and none when every series is empty. Each call is slot
    `base + k` of the extended row its select list is evaluated over."""

    def __init__(self) -> None:
        self.calls: list[Produce] = []
        self.base = 0

    def add(self, compiler: Compiler, node: exp.Expression) -> Compiled:
        parent = node.parent
        while parent is not None and not isinstance(parent, exp.Select):
            if isinstance(parent, (exp.Case, exp.If, exp.Coalesce)):
                word = "COALESCE" if isinstance(parent, exp.Coalesce) else "CASE"
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"set-returning functions are not allowed in {word}",
                               hint="You might be able to move the set-returning function into a LATERAL FROM item.")
            parent = parent.parent
        inner = Compiler(compiler.scope, "arguments of a set-returning function", compiler.aggregates,
                         compiler.context)
        inner.windows = compiler.windows
        produce, sql_type = select_list_function(node, inner)
        self.calls.append(produce)
        slot = len(self.calls) - 1
        return Compiled(lambda row, k=slot, c=self: row[c.base + k], sql_type)

    def expand(self, row: tuple) -> list[tuple]:
        self.base = len(row)
        series = [produce(row) for produce in self.calls]
        length = max(len(s) for s in series)
        return [row + tuple(s[j][0] if j < len(s) else None for s in series) for j in range(length)]


def generate_series(node: exp.ExplodingGenerateSeries, compiler: Compiler) -> tuple[Produce, SqlType]:
    argument_nodes = [node.args.get("start"), node.args.get("end")]
    if node.args.get("step") is not None:
        argument_nodes.append(node.args["step"])
    if node.args.get("is_end_exclusive"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "this form of generate_series is not supported")
    arguments = [compiler.compile(n) for n in argument_nodes]
    sql_type = _series_type(arguments)
    evaluators = [coerce(a, sql_type).evaluate for a in arguments]  # untyped literals parse; ints widen
    one = 1 if sql_type.kind in types.INT_KINDS else decimal.Decimal(1)

    def produce(left: tuple) -> list[tuple]:
        values = [evaluate(left) for evaluate in evaluators]
        if any(v is None for v in values):
            return []
        start, stop = values[0], values[1]
        step = values[2] if len(values) > 2 else one
        if step == 0:
            raise SqlError(errors.INVALID_PARAMETER_VALUE, "step size cannot equal zero")
        rows = []
        value = start
        while (value <= stop) if step > 0 else (value >= stop):
            if len(rows) >= limits.RESULT_ROWS_MAX:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"generate_series yields more than {limits.RESULT_ROWS_MAX} rows")
            rows.append((value,))
            value = value + step
        return rows
    return produce, sql_type


def _series_type(arguments: list[Compiled]) -> SqlType:
    kinds = [a.sql_type.kind for a in arguments]
    typed = [k for k in kinds if k not in types.UNTYPED_KINDS]
    if not typed:
        if Kind.UNKNOWN in kinds:
            raise SqlError(errors.AMBIGUOUS_FUNCTION, "function generate_series(unknown, unknown) is not unique")
        return types.INTEGER
    if any(k in types.DATETIME_KINDS for k in typed):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       "generate_series over timestamps is not supported (it needs an interval step)")
    if all(k in types.INT_KINDS for k in typed):
        return types.BIGINT if Kind.BIGINT in typed else types.INTEGER
    if all(k in types.INT_KINDS + (Kind.NUMERIC,) for k in typed):
        return types.NUMERIC
    signature = ", ".join(a.sql_type.display_name for a in arguments)
    raise SqlError(errors.UNDEFINED_FUNCTION, f"function generate_series({signature}) does not exist",
                   hint="No function matches the given name and argument types. "
                        "You might need to add explicit type casts.")



def is_set_returning(node: exp.Expression) -> bool:
    """True for a call of a set-returning function the select list accepts."""
    return isinstance(node, (exp.ExplodingGenerateSeries, exp.Explode)) or (
        isinstance(node, exp.Anonymous) and str(node.this).lower() == "generate_subscripts")


def select_list_function(node: exp.Expression, compiler: Compiler) -> tuple[Produce, SqlType]:
    if isinstance(node, exp.ExplodingGenerateSeries):
        return generate_series(node, compiler)
    if isinstance(node, exp.Explode):
        produce, column_types = unnest([node.this], compiler)
        return produce, column_types[0]
    return generate_subscripts(node, compiler)


def from_function_name(node: exp.Expression) -> str | None:
    """The name of a function FROM accepts, None for any other."""
    if isinstance(node, exp.ExplodingGenerateSeries):
        return "generate_series"
    if isinstance(node, (exp.Explode, exp.Unnest)):
        return "unnest"
    if isinstance(node, exp.Anonymous) and str(node.this).lower() in ("generate_subscripts", "pg_options_to_table"):
        return str(node.this).lower()
    return None


def from_function(node: exp.Expression, compiler: Compiler) -> tuple[Produce, list[SqlType]]:
    """A function in FROM: `produce(left row) -> rows` and the types of its columns."""
    if isinstance(node, exp.ExplodingGenerateSeries):
        produce, sql_type = generate_series(node, compiler)
        return produce, [sql_type]
    if isinstance(node, exp.Explode):
        return unnest([node.this], compiler)
    if isinstance(node, exp.Unnest):
        return unnest(list(node.expressions), compiler)
    if str(node.this).lower() == "pg_options_to_table":
        return options_table(node, compiler)
    produce, sql_type = generate_subscripts(node, compiler)
    return produce, [sql_type]


def _array_arguments(name: str, nodes: list[exp.Expression], compiler: Compiler) -> list[Compiled]:
    arguments = [compiler.compile(n) for n in nodes]
    for argument in arguments:
        if argument.sql_type.kind not in (Kind.ARRAY, Kind.NULL):
            raise SqlError(errors.UNDEFINED_FUNCTION,
                           f"function {name}({', '.join(a.sql_type.display_name for a in arguments)}) does not exist",
                           hint="No function matches the given name and argument types. "
                                "You might need to add explicit type casts.")
    return arguments


def unnest(nodes: list[exp.Expression], compiler: Compiler) -> tuple[Produce, list[SqlType]]:
    from compute_node.sql import catalog_functions
    arguments = _array_arguments("unnest", nodes, compiler)
    evaluators = [a.evaluate for a in arguments]

    def produce(left: tuple) -> list[tuple]:
        arrays = [evaluate(left) or [] for evaluate in evaluators]
        count = max((len(values) for values in arrays), default=0)
        if count > limits.RESULT_ROWS_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, f"unnest yields more than {limits.RESULT_ROWS_MAX} rows")
        return [tuple(values[i] if i < len(values) else None for values in arrays) for i in range(count)]
    return produce, [catalog_functions.array_element_type(a.sql_type) for a in arguments]


def generate_subscripts(node: exp.Anonymous, compiler: Compiler) -> tuple[Produce, SqlType]:
    if len(node.expressions) != 2:
        raise SqlError(errors.UNDEFINED_FUNCTION, "function generate_subscripts with these arguments does not exist")
    array = _array_arguments("generate_subscripts", node.expressions[:1], compiler)[0]
    dimension = coerce(compiler.compile(node.expressions[1]), types.INTEGER)
    if dimension.sql_type.kind not in types.INT_KINDS + (Kind.NULL,):
        raise SqlError(errors.UNDEFINED_FUNCTION, f"function generate_subscripts({array.sql_type.display_name}, "
                                                  f"{dimension.sql_type.display_name}) does not exist")
    first = 0 if array.sql_type.pg_alias in ("int2vector", "oidvector") else 1
    array_eval, dimension_eval = array.evaluate, dimension.evaluate

    def produce(left: tuple) -> list[tuple]:
        values, wanted = array_eval(left), dimension_eval(left)
        if values is None or wanted is None or int(wanted) != 1:
            return []
        return [(first + i,) for i in range(len(values))]
    return produce, types.INTEGER


def options_table(node: exp.Anonymous, compiler: Compiler) -> tuple[Produce, list[SqlType]]:
    if len(node.expressions) != 1:
        raise SqlError(errors.UNDEFINED_FUNCTION, "function pg_options_to_table with these arguments does not exist")
    array = _array_arguments("pg_options_to_table", node.expressions, compiler)[0]
    evaluate = array.evaluate

    def produce(left: tuple) -> list[tuple]:
        return [tuple(option.partition("=")[::2]) for option in evaluate(left) or [] if option is not None]
    return produce, [types.TEXT, types.TEXT]
