"""Describe a statement without running it: its parameters' types and its result's columns.

Theory of operation
-------------------
PostgreSQL answers Describe (extended protocol) from the statement's plan: the type it inferred
for each $n from where it is used, and the columns a row-returning statement yields. Drivers
use both (asyncpg encodes parameters in binary by the types it is told). QuorumDB gets them the
same way, by compiling the statement, never by running it:

  * the statement (from the node's statement cache, its $n left as they are) is executed over a
    DescribeTransaction, whose reads of the catalog (the schema cache, keys.SYSTEM_PREFIX) work
    and whose reads of rows raise DescribeOnly, as does evaluating any parameter: so the
    executor compiles everything it would compile (names, types, plans) and stops at the first
    row or value it would need;
  * the compiler types each $n: the type the client declared, else the type of what it is
    compared with, assigned to or cast to (expressions.ParamSlot.infer); one still untyped is
    text, as in PostgreSQL for an unconstrained parameter;
  * the executor notes the result columns when the query (or RETURNING) is compiled.

Nothing is written: the transaction is dropped, never committed. Statements that return no rows
and take no parameters (DDL, transaction control) are not compiled at all.
"""
from __future__ import annotations

import dataclasses

from compute_node.sql import executor, types
from compute_node.sql.expressions import ParamTypes
from compute_node.sql.result import DescribeOnly
from compute_node.sql.parser import Explain, TransactionControl
from compute_node.sql.transaction import Transaction
from quorumdb import keys

from sqlglot import exp

_DESCRIBED = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery,
              exp.Insert, exp.Update, exp.Delete)


@dataclasses.dataclass
class Description:
    param_types: list[types.SqlType]               # one per $n, $1 first
    columns: list[tuple[str, str]] | None          # (name, type name); None: returns no rows


class DescribeTransaction(Transaction):
    """Reads the catalog; any read of rows ends the description (DescribeOnly)."""

    async def get_many(self, keys_: list[bytes]) -> dict[bytes, bytes | None]:
        if any(not key.startswith(keys.SYSTEM_PREFIX) for key in keys_):
            raise DescribeOnly("a row would be read")
        return await super().get_many(keys_)

    async def scan(self, start: bytes, end: bytes | None, pushdown: bytes | None = None):
        if not start.startswith(keys.SYSTEM_PREFIX):
            raise DescribeOnly("rows would be read")
        async for item in super().scan(start, end, pushdown):
            yield item


async def describe(txn: DescribeTransaction, statement, param_count: int,
                   declared: list[types.SqlType | None]) -> Description:
    """The description of one parsed statement (its $n not bound); raises SqlError as running
    the statement would for a name or type error."""
    if isinstance(statement, (TransactionControl, Explain)) or not isinstance(statement, _DESCRIBED):
        return Description([types.TEXT] * param_count if param_count else [], None)
    params = ParamTypes(declared)
    txn.param_types = params
    txn.described_columns = None
    try:
        result = await executor.execute(txn, statement)
    except DescribeOnly:
        columns = txn.described_columns
    else:
        columns = list(result.columns) if result.columns else txn.described_columns
    param_types = []
    for number in range(1, param_count + 1):
        slot = params.slots.get(number)
        declared_type = declared[number - 1] if number <= len(declared) else None
        param_types.append((slot.sql_type if slot is not None else None) or declared_type or types.TEXT)
    if isinstance(statement, (exp.Insert, exp.Update, exp.Delete)) and not statement.args.get("returning"):
        columns = None
    return Description(param_types, columns)
