"""Set-returning functions in FROM: generate_series (pure, no I/O).

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
is refused with 0A000 until intervals exist. One call yields at most
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

INVALID_PARAMETER_VALUE = "22023"

Produce = Callable[[tuple], list[tuple]]


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
            raise SqlError(INVALID_PARAMETER_VALUE, "step size cannot equal zero")
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
            raise SqlError("42725", "function generate_series(unknown, unknown) is not unique")
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

