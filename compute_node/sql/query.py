"""SELECT compiled into a program: filter, project, group, sort, limit (pure, no I/O).

Theory of operation
-------------------
`compile_select(select, scope)` resolves everything a SELECT needs before a row is
read: the select list (with * expanded), WHERE, GROUP BY/HAVING and aggregates,
ORDER BY (output names and positions first, then expressions over the table's
columns, as PostgreSQL), window functions (window.py: rows wait in the program
until all have arrived, then get their window values), DISTINCT, LIMIT and OFFSET.
The resulting `SelectProgram` consumes source rows (`add_row`) and produces the
result rows (`finish`); the executor feeds it rows from storage and stops early
when `enough()` says the remaining rows cannot change the answer (no ORDER BY,
grouping, window or DISTINCT, and OFFSET + LIMIT rows already matched).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from sqlglot import exp

from compute_node.sql import interval as interval_mod
from compute_node.sql import types
from compute_node.sql.catalog import identifier_name
from compute_node.sql.expressions import (
    EMPTY_SCOPE, AggregateCollector, AggregateSpec, Compiled, Compiler, Context, Scope, coerce_constant,
    contains_aggregate, output_name, _numeric_operation,
)
from compute_node.sql.types import Kind
from compute_node.sql import table_functions
from compute_node.sql.table_functions import SetReturningCollector
from compute_node.sql.window import WindowCollector
from quorumdb import errors, limits
from quorumdb.errors import SqlError

_SELECT_ARGS = {"expressions", "from", "from_", "where", "group", "having", "order", "limit", "offset",
                "distinct", "locks", "kind", "joins", "with", "with_", "windows"}


@dataclasses.dataclass
class OrderItem:
    output_index: int | None      # sort by this output column, or
    compiled: Compiled | None     # by this expression over the source (or grouped) row
    descending: bool
    nulls_first: bool


class SelectProgram:
    def __init__(self):
        self.columns: list[tuple[str, types.SqlType]] = []
        self.outputs: list[Compiled] = []
        self.where: Compiled | None = None
        self.collector: AggregateCollector | None = None
        self.having: Compiled | None = None
        self.order: list[OrderItem] = []
        self.distinct = False
        self.limit: int | None = None
        self.offset = 0
        self.for_update = False
        self.unknown_outputs: set[int] = set()  # outputs that are untyped literals (UNION resolves them)
        self.windows: WindowCollector | None = None
        self.set_returning: SetReturningCollector | None = None
        # Run state.
        self._rows: list[tuple[tuple, tuple, bytes | None]] = []  # (output, sort keys, source key)
        self._groups: dict[tuple, tuple[tuple, list]] = {}
        self._window_input: list[tuple[Sequence[Any], bytes | None]] = []  # rows waiting for their windows

    def reset(self) -> None:
        """Forgets the rows of a previous run (a correlated subquery runs once per outer row)."""
        self._rows = []
        self._groups = {}
        self._window_input = []

    @property
    def grouped(self) -> bool:
        return self.collector is not None

    def matches(self, row: Sequence[Any]) -> bool:
        return self.where is None or self.where.evaluate(row) is True

    @property
    def streamable(self) -> bool:
        """Each output row is final when made (no grouping, windows, ORDER BY, DISTINCT, LIMIT or
        OFFSET), so rows may leave in chunks (`take_rows`) rather than at `finish`."""
        return (self.collector is None and self.windows is None and not self.order and not self.distinct
                and self.limit is None and not self.offset)

    def take_rows(self) -> list[tuple]:
        """The output rows made so far by a streamable program; they are forgotten here."""
        assert self.streamable
        rows = [entry[0] for entry in self._rows]
        self._rows = []
        return rows

    def enough(self) -> bool:
        if self.grouped or self.order or self.distinct or self.limit is None or self.windows is not None:
            return False
        return len(self._rows) >= self.offset + self.limit

    def add_row(self, row: Sequence[Any], key: bytes | None = None) -> None:
        """Feeds one source row (already known to match WHERE)."""
        if self.collector is not None:
            self._accumulate(row)
            return
        if self.windows is not None:
            self._hold_for_windows(row, key)
            return
        if self.set_returning is not None:
            self._emit(row, key)
            return
        output = tuple(compiled.evaluate(row) for compiled in self.outputs)
        self._append(output, row, key)

    def _emit(self, row: Sequence[Any], key: bytes | None) -> None:
        """The output row(s) of one input row: several when the select list calls generate_series."""
        if self.set_returning is None:
            output = tuple(compiled.evaluate(row) for compiled in self.outputs)
            self._append(output, row, key)
            return
        for extended in self.set_returning.expand(tuple(row)):
            output = tuple(compiled.evaluate(extended) for compiled in self.outputs)
            self._append(output, extended, key)

    def _hold_for_windows(self, row: Sequence[Any], key: bytes | None) -> None:
        if len(self._window_input) >= limits.RESULT_ROWS_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                           f"query result exceeds the limit of {limits.RESULT_ROWS_MAX} rows")
        self._window_input.append((row, key))

    def _apply_windows(self) -> None:
        """Window functions see every row that passed WHERE/GROUP BY/HAVING; then the select list."""
        held = self._window_input
        self._window_input = []
        for row in self.windows.apply([tuple(row) for row, _ in held]):
            self._emit(row, None)

    def _append(self, output: tuple, source_row: Sequence[Any], key: bytes | None) -> None:
        sort_keys = tuple(output[item.output_index] if item.output_index is not None
                          else item.compiled.evaluate(source_row) for item in self.order)
        if len(self._rows) >= limits.RESULT_ROWS_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                           f"query result exceeds the limit of {limits.RESULT_ROWS_MAX} rows")
        self._rows.append((output, sort_keys, key))

    def _accumulate(self, row: Sequence[Any]) -> None:
        collector = self.collector
        group_values = tuple(compiled.evaluate(row) for compiled in collector.group_compiled)
        group_key = tuple(_group_key(value) for value in group_values)
        entry = self._groups.get(group_key)
        if entry is None:
            if len(self._groups) >= limits.RESULT_ROWS_MAX:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"query has more than {limits.RESULT_ROWS_MAX} groups")
            entry = (group_values, [_Accumulator(spec) for spec in collector.aggregates])
            self._groups[group_key] = entry
        for accumulator in entry[1]:
            if accumulator.spec.filter is None or accumulator.spec.filter.evaluate(row) is True:
                accumulator.add(row)

    def finish(self) -> tuple[list[tuple], list[bytes]]:
        """The result rows, and the keys of the source rows they came from (for FOR UPDATE)."""
        if self.collector is not None:
            if not self._groups and not self.collector.group_nodes:
                self._groups[()] = ((), [_Accumulator(spec) for spec in self.collector.aggregates])
            for group_values, accumulators in self._groups.values():
                grouped_row = group_values + tuple(a.result() for a in accumulators)
                if self.having is not None and self.having.evaluate(grouped_row) is not True:
                    continue
                if self.windows is not None:
                    self._hold_for_windows(grouped_row, None)
                    continue
                self._emit(grouped_row, None)
        if self.windows is not None:
            self._apply_windows()
        entries = self._rows
        if self.distinct:
            seen = set()
            unique = []
            for entry in entries:
                marker = tuple(_group_key(v) for v in entry[0])
                if marker not in seen:
                    seen.add(marker)
                    unique.append(entry)
            entries = unique
        entries = types.sort_by_keys(entries, [(item.descending, item.nulls_first) for item in self.order], field=1)
        end = None if self.limit is None else self.offset + self.limit
        entries = entries[self.offset:end]
        return [entry[0] for entry in entries], [entry[2] for entry in entries if entry[2] is not None]


def _group_key(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ("NaN",)
    if isinstance(value, list):  # a catalog array: grouped by its elements
        return ("array",) + tuple(_group_key(item) for item in value)
    return value


class _Accumulator:
    def __init__(self, spec: AggregateSpec):
        self.spec = spec
        self.count = 0
        self.total: Any = None
        self.seen: set | None = set() if spec.distinct else None
        self.parts: list[str] = []
        # Input rows of an ordered aggregate, kept until result() sorts them (a group's rows are
        # bounded by the statement's read limit, as the grouping itself is).
        self.pending: list[tuple[tuple, Sequence[Any]]] | None = [] if spec.order else None

    def add(self, row: Sequence[Any]) -> None:
        if self.pending is not None:
            self.pending.append((tuple(key.evaluate(row) for key, _, _ in self.spec.order), row))
            return
        self._add(row)

    def _replay_in_order(self) -> None:
        pending, self.pending = self.pending, None
        pending = types.sort_by_keys(pending, [(descending, nulls_first) for _, descending, nulls_first
                                               in self.spec.order], field=0)
        for _, row in pending:
            self._add(row)

    def _add(self, row: Sequence[Any]) -> None:
        spec = self.spec
        if spec.argument is None:
            self.count += 1
            return
        value = spec.argument.evaluate(row)
        if value is None:
            if spec.name == "array_agg":  # array_agg keeps NULLs (DISTINCT: one)
                if self.seen is not None:
                    if None in self.seen:
                        return
                    self.seen.add(None)
                self.count += 1
                self.parts.append(None)
            return
        if self.seen is not None:
            marker = _group_key(value)
            if marker in self.seen:
                return
            self.seen.add(marker)
        self.count += 1
        name = spec.name
        if name in ("sum", "avg"):
            if self.total is None:
                self.total = value
            elif isinstance(value, interval_mod.Interval):
                self.total = interval_mod.add(self.total, value)
            elif isinstance(value, float):
                self.total = self.total + value
                if spec.result_type.kind is Kind.REAL:
                    self.total = types.to_real(self.total)
            else:
                self.total = _ADD_EXACT(self.total, value) if not isinstance(value, int) else self.total + value
            if name == "sum" and spec.result_type.kind in types.INT_KINDS:
                types.check_int_range(self.total, spec.result_type)
        elif name == "bool_and":
            self.total = value if self.total is None else (self.total and value)
        elif name == "bool_or":
            self.total = value if self.total is None else (self.total or value)
        elif name == "array_agg":
            self.parts.append(value)
        elif name == "string_agg":
            separator = spec.separator.evaluate(row) if spec.separator is not None else ""
            if self.parts:
                self.parts.append(separator or "")
            self.parts.append(value)
        elif name == "min":
            if self.total is None or types.sort_key(value) < types.sort_key(self.total):
                self.total = value
        elif name == "max":
            if self.total is None or types.sort_key(value) > types.sort_key(self.total):
                self.total = value

    def result(self) -> Any:
        if self.pending is not None:
            self._replay_in_order()
        name = self.spec.name
        if name == "count":
            return self.count
        if name == "avg":
            if self.count == 0:
                return None
            if self.spec.result_type.kind is Kind.NUMERIC:
                return _DIVIDE_NUMERIC(self.total, self.count)
            if self.spec.result_type.kind is Kind.INTERVAL:
                return interval_mod.divide(self.total, self.count)
            return float(self.total) / self.count
        if name == "string_agg":
            return "".join(self.parts) if self.parts else None
        if name == "array_agg":
            return types.ArrayValue(self.parts, self.spec.result_type.element) if self.parts else None
        return self.total


_ADD_EXACT = _numeric_operation("+", types.NUMERIC)
_DIVIDE_NUMERIC = _numeric_operation("/", types.NUMERIC)


def compile_select(select: exp.Select, scope: Scope, has_table: bool, context: Context | None = None,
                   star_entries: Sequence[tuple[str, int, str]] | None = None) -> SelectProgram:
    for key, value in select.args.items():
        if key not in _SELECT_ARGS and value not in (None, False, []):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{key.rstrip('_').upper()} in SELECT is not supported")
    program = SelectProgram()
    for clause, word in (("group", "GROUP BY"), ("having", "HAVING")):
        if select.args.get(clause) is not None and _calls_window(select.args[clause]):
            # PostgreSQL rejects these while it reads the clause, before it checks grouping.
            raise SqlError(errors.WINDOWING_ERROR, f"window functions are not allowed in {word}")
    row_compiler = Compiler(scope, "WHERE", None, context)
    select_nodes = _expand_star(select.expressions, scope, has_table, star_entries)
    where_node = select.args.get("where")
    if where_node is not None:
        program.where = row_compiler.compile_condition(where_node.this)
    group = select.args.get("group")
    having_node = select.args.get("having")
    order = select.args.get("order")
    order_nodes = [item.this for item in order.expressions] if order is not None else []
    distinct = select.args.get("distinct")
    if distinct is not None:
        if distinct.args.get("on") is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "SELECT DISTINCT ON is not supported")
        program.distinct = True
    grouped = (group is not None or having_node is not None
               or any(contains_aggregate(node) for node in select_nodes + order_nodes))
    if grouped:
        if group is not None and (group.args.get("rollup") or group.args.get("cube") or group.args.get("grouping_sets")):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "ROLLUP, CUBE and GROUPING SETS are not supported")
        group_nodes = [_resolve_group_node(node, select_nodes) for node in (group.expressions if group else [])]
        program.collector = AggregateCollector(Compiler(scope, "GROUP BY", None, context), group_nodes)
        output_compiler = Compiler(scope, "SELECT", program.collector, context)
    else:
        output_compiler = Compiler(scope, "SELECT", None, context)
    if any(_calls_window(node) for node in select_nodes + order_nodes):
        program.windows = WindowCollector(select.args.get("windows") or [], _Accumulator)
        output_compiler.windows = program.windows
    if any(_calls(node, table_functions.is_set_returning) for node in select_nodes + order_nodes):
        program.set_returning = SetReturningCollector()
        output_compiler.set_returning = program.set_returning
    for node in select_nodes:
        inner = node.this if isinstance(node, exp.Alias) else node
        compiled = output_compiler.compile(inner)
        if compiled.sql_type.kind is Kind.UNKNOWN:
            program.unknown_outputs.add(len(program.outputs))
            compiled = coerce_constant(compiled, types.TEXT)
        program.outputs.append(compiled)
        program.columns.append((output_name(node), compiled.sql_type))
    if having_node is not None:
        having_compiler = Compiler(scope, "HAVING", program.collector, context)
        program.having = having_compiler.compile_condition(having_node.this)
    if order is not None:
        for item in order.expressions:
            program.order.append(_order_item(item, select_nodes, program, output_compiler))
    program.limit = _limit_value(select.args.get("limit"), "LIMIT", context)
    program.offset = _limit_value(select.args.get("offset"), "OFFSET", context) or 0
    locks = select.args.get("locks") or []
    if locks:
        if any(not lock.args.get("update") for lock in locks):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "FOR SHARE is not supported; use FOR UPDATE")
        if grouped or program.distinct:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           "FOR UPDATE is not allowed with aggregate functions, GROUP BY or DISTINCT")
        if program.windows is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "FOR UPDATE is not allowed with window functions")
        if program.set_returning is not None:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           "FOR UPDATE is not allowed with set-returning functions in the target list")
        if not has_table:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "FOR UPDATE requires a table")
        program.for_update = True
    return program


def _calls_window(node: exp.Expression) -> bool:
    """True when `node` calls a window function at this query level (not inside a subquery)."""
    return _calls(node, exp.Window)


def _calls(node: exp.Expression, kind) -> bool:
    """True when `node` holds a `kind` node (a type, or a predicate) at this query level."""
    prune = lambda n: isinstance(n, (exp.Subquery, exp.Select, exp.Exists)) and n is not node  # noqa: E731
    test = kind if not isinstance(kind, type) else (lambda found: isinstance(found, kind))
    return any(test(found) for found in node.walk(prune=prune))


def _expand_star(nodes: Sequence[exp.Expression], scope: Scope, has_table: bool,
                 star_entries: Sequence[tuple[str, int, str]] | None) -> list[exp.Expression]:
    """`*` and `t.*` become qualified column references (USING columns once, first, as PostgreSQL)."""
    expanded: list[exp.Expression] = []
    for node in nodes:
        is_star = isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star))
        if not is_star:
            expanded.append(node)
            continue
        if not has_table:
            raise SqlError(errors.SYNTAX_ERROR, "SELECT * with no tables specified is not valid")
        if isinstance(node, exp.Column):
            qualifier = identifier_name(node.args["table"])
            relation = scope.find_relation(qualifier)
            if relation is None:
                raise SqlError(errors.UNDEFINED_TABLE, f'missing FROM-clause entry for table "{qualifier}"')
            for _, name in relation.star_columns():
                expanded.append(_qualified(relation.name, name))
            continue
        entries = star_entries if star_entries is not None else [
            (name, relation.offset + i, relation.name)
            for relation in scope.relations for i, name in relation.star_columns()]
        for name, position, relation_name in entries:
            relation = scope.find_relation(relation_name)
            column_name = relation.columns[position - relation.offset][0] if relation is not None else name
            if column_name != name:  # a merged column read from its hidden slot, shown under its name
                expanded.append(exp.Alias(this=_qualified(relation_name, column_name),
                                          alias=exp.Identifier(this=name, quoted=True)))
            else:
                expanded.append(_qualified(relation_name, name))
    return expanded


def _qualified(relation_name: str, column_name: str) -> exp.Column:
    return exp.Column(this=exp.Identifier(this=column_name, quoted=True),
                      table=exp.Identifier(this=relation_name, quoted=True))


def _resolve_group_node(node: exp.Expression, select_nodes: Sequence[exp.Expression]) -> exp.Expression:
    """GROUP BY 1 and GROUP BY <output alias> refer to select-list entries, as in PostgreSQL."""
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        position = int(node.this)
        if not 1 <= position <= len(select_nodes):
            raise SqlError(errors.INVALID_COLUMN_REFERENCE, f"GROUP BY position {position} is not in select list")
        chosen = select_nodes[position - 1]
        return chosen.this if isinstance(chosen, exp.Alias) else chosen
    if isinstance(node, exp.Column) and node.args.get("table") is None:
        name = identifier_name(node.this)
        for select_node in select_nodes:
            if isinstance(select_node, exp.Alias) and identifier_name(select_node.args["alias"]) == name:
                return select_node.this
    return node


def _order_item(item: exp.Ordered, select_nodes, program: SelectProgram, compiler: Compiler) -> OrderItem:
    if item.args.get("with_fill") is not None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "WITH FILL is not supported")
    node = item.this
    descending = bool(item.args.get("desc"))
    nulls_first = item.args.get("nulls_first")
    if nulls_first is None:
        nulls_first = descending
    output_index = None
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        position = int(node.this)
        if not 1 <= position <= len(program.outputs):
            raise SqlError(errors.INVALID_COLUMN_REFERENCE, f"ORDER BY position {position} is not in select list")
        output_index = position - 1
    elif isinstance(node, exp.Column) and node.args.get("table") is None and not isinstance(node.this, exp.Star):
        name = identifier_name(node.this)
        named = [i for i, (column_name, _) in enumerate(program.columns) if column_name == name]
        if named:
            output_index = named[0]
    if output_index is None:
        for index, select_node in enumerate(select_nodes):
            if not isinstance(select_node, exp.Alias) and select_node == node:
                output_index = index
                break
    if output_index is not None:
        return OrderItem(output_index, None, descending, bool(nulls_first))
    if program.distinct:
        raise SqlError(errors.INVALID_COLUMN_REFERENCE, "for SELECT DISTINCT, ORDER BY expressions must appear in select list")
    compiled = compiler.compile(node)
    if compiled.sql_type.kind is Kind.UNKNOWN:
        compiled = coerce_constant(compiled, types.TEXT)
    return OrderItem(None, compiled, descending, bool(nulls_first))


def _limit_value(clause: exp.Expression | None, word: str, context=None) -> int | None:
    if clause is None:
        return None
    node = clause.args.get("expression")
    if node is None or (isinstance(node, exp.Var) and node.name.upper() == "ALL"):
        return None
    if any(isinstance(n, (exp.Column, exp.Subquery, exp.Select)) for n in node.walk()):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED if not isinstance(node, exp.Column) else errors.INVALID_COLUMN_REFERENCE,
                       f"argument of {word} must not contain variables" if isinstance(node, exp.Column)
                       else f"subqueries in {word} are not supported")
    compiled = Compiler(EMPTY_SCOPE, word, None, context).compile(node)
    if compiled.param is not None:  # LIMIT $n being described: $n is a bigint, the limit unknown
        compiled.param.infer(types.BIGINT)
        return None
    if compiled.sql_type.kind is Kind.UNKNOWN:
        compiled = coerce_constant(compiled, types.BIGINT)
    if compiled.sql_type.kind not in types.INT_KINDS + (Kind.NULL,):
        raise SqlError(errors.DATATYPE_MISMATCH,
                       f"argument of {word} must be type bigint, not type {compiled.sql_type.display_name}")
    value = compiled.evaluate(())
    if value is None:
        return None
    if value < 0:
        sqlstate = (errors.INVALID_ROW_COUNT_IN_LIMIT_CLAUSE if word == "LIMIT"
                    else errors.INVALID_ROW_COUNT_IN_RESULT_OFFSET_CLAUSE)
        raise SqlError(sqlstate, f"{word} must not be negative")
    return value
