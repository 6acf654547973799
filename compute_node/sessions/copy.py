"""COPY on a compute node: records from quorumdb/copyformat.py into a table, a table out as text.

Theory of operation
-------------------
COPY FROM gets every record of the input (the caller has read it all: CopyData up to CopyDone,
or one gRPC Copy request) and then:

  1. plans: the table and the columns given (42P01, 42703, 42701), their defaults, the CHECK
     constraints -- with executor.py's own functions, so a value goes through exactly the
     conversion an INSERT of the same text literal would (types.assign of an unknown literal);
  2. builds every row: conversion (22P02, 22003, 22007 ...), defaults for the columns not given,
     NOT NULL (23502) and CHECK (23514). Every error names the line: CONTEXT `COPY t, line 5001,
     column b: "x"`, as PostgreSQL writes it;
  3. checks keys: a primary key or unique value given twice in the data, or already stored at
     the snapshot (23505, naming the line of the row that repeats it);
  4. writes, through `_write_copy_rows` only (the one place a bulk-load path can take over).

Inside a transaction block (or pgwire's implicit transaction) the rows go into that
transaction and follow its quotas (TXN_ROWS_MAX keys, TXN_BYTES_MAX bytes: 54000 beyond),
except into a table the transaction truncated, rewrote or created: there they take the bulk
path (executor.insert_rows; compute_node/sql/bulk.py), which is what `pgbench -i` does
(BEGIN; TRUNCATE ...; COPY ...; COMMIT). Such a COPY streams: the PostgreSQL endpoint hands
`load_in_transaction` one chunk of records at a time as they arrive (Session.copy_streams,
limits.COPY_STREAM_CHUNK_ROWS), each validated and written before the next is read, so no
COPY_ROWS_MAX applies; a bad record in a later chunk fails the block, and with it the rows of
the earlier chunks, which nobody could see before COMMIT. Records keep their own line numbers,
so errors name the right line whatever chunk they are in. Duplicates across chunks are found
as across statements: through the transaction's reads (its private keyspace at the last
flushed batch, merged with what is not flushed yet). Tables without a primary key get their
hidden row ids here; nextval defaults get their values reserved for all rows (of the chunk)
before the rows are built.

In autocommit mode, steps 1-3 run for ALL rows before anything is written, and the rows are
then committed in batches, each within the transaction quotas. Every batch commits with the
start_ts of the snapshot the rows were validated at: the adjudicator then refuses a batch
(40001) if any of its keys (or the table's definition) was committed by someone else after that
snapshot, so a row written concurrently is never overwritten, and no re-check is needed per
batch. A bad row anywhere (line 5,001 of 100,000) therefore commits nothing. What cannot be
promised: a failure that is not bad data -- a concurrent writer's conflict, an unavailable
quorum, the compute node crashing -- after the first batch leaves the earlier batches committed.
The error then says how many rows were committed (and the COPY is not atomic in that case);
the whole COPY must also finish within the transaction age limit (TXN_AGE_MAX_NS), as its
batches share one snapshot.

COPY TO runs `SELECT cols FROM table` (or the query given) as an ordinary statement of the
session, and `render` turns the rows into text or CSV records.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Callable, Iterator, Sequence

from compute_node.sql import pgtypes
from compute_node.sql import executor, sequences, types
from compute_node.sql.catalog import TableDef
from compute_node.sql.select import fetch
from compute_node.sql.transaction import SchemaStale, Transaction
from quorumdb import copyformat, errors, keys, limits
from quorumdb.copyformat import CopyStatement, Record
from quorumdb.errors import SqlError

log = logging.getLogger("compute_node.sessions.copy")


@dataclasses.dataclass
class CopyPlan:
    table: TableDef
    positions: list[int]          # table column of each input field
    defaults: list                # compiled default per table column (None: no default)
    rules: executor.TableRules
    ctx: Any = None               # the statement's QueryContext (sequence values for defaults)
    next_rowid: Callable[[], int] | None = None  # row ids of a table without a primary key

    @property
    def column_names(self) -> list[str]:
        return [self.table.columns[p].name for p in self.positions]


async def plan(txn: Transaction, statement: CopyStatement) -> CopyPlan:
    assert statement.direction == "from" and statement.table is not None
    table = await executor.load_table(txn, statement.table)
    if table is None:
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{statement.table}" does not exist')
    positions = executor.insert_positions(table, statement.columns or [c.name for c in table.visible_columns])
    ctx = executor.new_context(txn)
    defaults = executor._compile_defaults(table, ctx)
    rules = executor.compile_rules(table, ctx)
    await fetch(ctx)
    return CopyPlan(table, positions, defaults, rules, ctx, txn.next_rowid if table.has_rowid else None)


def _context(table: str, line: int, column: str | None = None, value: str | None = None) -> str:
    text = f"COPY {table}, line {line}"
    if column is not None:
        text += f", column {column}"
        if value is not None:
            text += f': "{value}"'
    return text


def located(error: SqlError, table: str, line: int, column: str | None = None, value: str | None = None) -> SqlError:
    """The error with PostgreSQL's CONTEXT of a COPY row (and the line on the error, for callers)."""
    if not error.context:
        error.context = _context(table, line, column, value)
    error.line = line  # type: ignore[attr-defined]
    return error


def build_rows(copy_plan: CopyPlan, records: Sequence[Record]) -> list[list]:
    """Table rows of the records, converted and checked as INSERT would; SqlError names the line."""
    table = copy_plan.table
    positions = copy_plan.positions
    columns = table.columns
    defaults = copy_plan.defaults
    given = set(positions)
    missing_defaults = [(p, d) for p, d in enumerate(defaults) if p not in given and d is not None]
    rowid_position = table.rowid_position
    rows = []
    for line, fields in records:
        row: list[Any] = [None] * len(columns)
        if rowid_position is not None:
            row[rowid_position] = copy_plan.next_rowid()
        for position, text in zip(positions, fields):
            if text is None:
                continue
            column = columns[position]
            try:
                row[position] = types.assign(text, types.UNKNOWN, column.sql_type, column.name)
            except SqlError as error:
                raise located(error, table.name, line, column.name, text) from None
        try:
            for position, default in missing_defaults:
                column = columns[position]
                row[position] = types.assign(default.evaluate(()), default.sql_type, column.sql_type, column.name)
            copy_plan.rules.validate(row)
        except SqlError as error:
            raise located(error, table.name, line) from None
        rows.append(row)
    return rows


def _unique_probes(table: TableDef, row: Sequence[Any]) -> list[tuple[Any, bytes]]:
    probes = []
    for index in table.indexes:
        if index.unique:
            values = tuple(row[p] for p in table.index_positions(index))
            if all(v is not None for v in values):
                probes.append((index, index.prefix + keys.encode_key_tuple(values)))
    return probes


def check_duplicates(table: TableDef, rows: Sequence[Sequence[Any]], lines: Sequence[int]) -> list[bytes]:
    """23505 at the first row whose primary key or unique value an earlier row of the data has;
    returns the row keys (the writes need them again)."""
    seen: set[bytes] = set()
    row_keys = []
    unique_indexes = any(index.unique for index in table.indexes)
    for row, line in zip(rows, lines):
        key = table.row_key(row)
        if key in seen:
            raise located(executor._duplicate_key(table, row, None), table.name, line)
        seen.add(key)
        row_keys.append(key)
        if unique_indexes:
            for index, probe in _unique_probes(table, row):
                if probe in seen:
                    raise located(executor._duplicate_key(table, row, index), table.name, line)
                seen.add(probe)
    return row_keys


async def check_existing(txn: Transaction, table: TableDef, rows: Sequence[Sequence[Any]], row_keys: Sequence[bytes],
                         lines: Sequence[int]) -> None:
    """23505 for the first row (in input order) whose key or unique value is already stored."""
    # Row ids this transaction drew for a keyspace only it writes are new by construction
    # (compute_node/sql/bulk.py): only their unique values need a look.
    probe_row_keys = not (table.has_rowid and executor.is_bulk_target(txn, table))
    probes: list[tuple[int, Any, bytes]] = []
    for number, (row, key) in enumerate(zip(rows, row_keys)):
        if probe_row_keys:
            probes.append((number, None, key))
        for index, probe in _unique_probes(table, row):
            probes.append((number, index, probe))
    first: tuple[int, Any] | None = None
    for start in range(0, len(probes), limits.COPY_PROBE_KEYS):
        chunk = probes[start:start + limits.COPY_PROBE_KEYS]
        found = await txn.get_many([probe for _, _, probe in chunk])
        for number, index, probe in chunk:
            if found.get(probe) is not None and (first is None or number < first[0]):
                first = (number, index)
        if first is not None:
            break  # probes are in row order: no later chunk holds an earlier row
    if first is not None:
        number, index = first
        raise located(executor._duplicate_key(table, rows[number], index), table.name, lines[number])


def row_footprint(table: TableDef, row: Sequence[Any], key: bytes) -> tuple[int, int]:
    """(keys, bytes) the row adds to a transaction's write set (the quotas' units)."""
    size = len(key) + len(table.encode_row(row))
    entries = table.index_entries(row)
    size += sum(len(k) + len(v) for k, v in entries.items())
    return 1 + len(entries), size


def split_batches(table: TableDef, rows: Sequence[Sequence[Any]], row_keys: Sequence[bytes],
                  keys_max: int, bytes_max: int) -> list[range]:
    """Consecutive row ranges, each within keys_max keys and bytes_max bytes of writes."""
    batches: list[range] = []
    start = 0
    batch_keys = batch_bytes = 0
    for number, (row, key) in enumerate(zip(rows, row_keys)):
        row_keys_count, row_bytes = row_footprint(table, row, key)
        if number > start and (batch_keys + row_keys_count > keys_max or batch_bytes + row_bytes > bytes_max):
            batches.append(range(start, number))
            start, batch_keys, batch_bytes = number, 0, 0
        batch_keys += row_keys_count
        batch_bytes += row_bytes
    if start < len(rows):
        batches.append(range(start, len(rows)))
    return batches


async def _write_copy_rows(txn: Transaction, table: TableDef, rows: Sequence[Sequence[Any]]) -> None:
    """Every row a COPY writes goes through here (and nowhere else). Into a table this transaction
    truncated, rewrote or created, executor.insert_rows takes the bulk path (rows committed ahead
    in batches within the quotas: compute_node/sql/bulk.py); otherwise the executor's own row
    writer (the row and its index entries into the write buffer, quotas checked per key)."""
    if executor.is_bulk_target(txn, table) or table.name in txn.created_tables:
        await executor.insert_rows(txn, table, rows, validated=True)
        return
    for row in rows:
        executor.write_row(txn, table, row, None, None)


async def validate(txn: Transaction, statement: CopyStatement, records: Sequence[Record]):
    """(plan, rows, row keys, lines) of records checked against txn's snapshot; SchemaStale when
    the node's cached table definition was not that of the snapshot (the caller plans again)."""
    copy_plan = await plan(txn, statement)
    await sequences.prepare_defaults(copy_plan.ctx, copy_plan.table, copy_plan.positions, len(records))
    rows = build_rows(copy_plan, records)
    lines = [line for line, _ in records]
    row_keys = check_duplicates(copy_plan.table, rows, lines)
    await check_existing(txn, copy_plan.table, rows, row_keys, lines)
    await txn.check_schema_version()
    return copy_plan, rows, row_keys, lines


async def load_in_transaction(txn: Transaction, statement: CopyStatement, records: Sequence[Record]) -> int:
    copy_plan, rows, _, _ = await validate(txn, statement, records)
    try:
        await _write_copy_rows(txn, copy_plan.table, rows)
    except SqlError as error:
        if error.sqlstate == errors.PROGRAM_LIMIT_EXCEEDED:
            error.hint = ("Inside a transaction block a COPY obeys the transaction's quotas; run it in autocommit "
                          "mode (outside BEGIN ... COMMIT) to have it validated whole and committed in batches.")
        raise
    return len(rows)


async def load_autocommit(new_transaction: Callable[[int | None], Transaction], now_ts: Callable[[], int],
                          statement: CopyStatement, records: Sequence[Record]) -> int:
    """Validate every record, then commit the rows in batches within the transaction quotas (see
    the module docstring for what a failure after the first batch leaves behind)."""
    txn = new_transaction(None)
    try:
        copy_plan, rows, row_keys, lines = await validate(txn, statement, records)
    except SchemaStale:
        txn = new_transaction(None)  # the definitions are read at this snapshot now
        copy_plan, rows, row_keys, lines = await validate(txn, statement, records)
    table = copy_plan.table
    batches = split_batches(table, rows, row_keys, limits.TXN_ROWS_MAX, limits.TXN_BYTES_MAX)
    committed = 0
    for number, batch in enumerate(batches):
        batch_txn = txn if number == 0 else new_transaction(txn.start_ts)
        if number > 0:
            # The definition and its lock come from the validating snapshot: a concurrent ALTER
            # or DROP of the table after it makes this batch's commit fail (OC001).
            batch_txn.schema_version = txn.schema_version
            batch_txn.tables = dict(txn.tables)
            batch_txn.schema_reads = dict(txn.schema_reads)
            batch_txn.lock_keys = set(txn.schema_reads)
        try:
            if now_ts() - txn.start_ts > limits.TXN_AGE_MAX_NS:
                raise SqlError(errors.SERIALIZATION_FAILURE,
                               f"COPY exceeded the transaction age limit of "
                               f"{limits.TXN_AGE_MAX_NS // 1_000_000_000} seconds",
                               hint="Load fewer rows per COPY.")
            await _write_copy_rows(batch_txn, table, [rows[i] for i in batch])
            await batch_txn.commit()
        except SqlError as error:
            if committed:
                error.message += (f" (COPY {table.name} had already committed {committed} of its {len(rows)} "
                                  f"rows in {number} batches; they stay committed)")
                error.detail = (error.detail + "\n" if error.detail else "") + (
                    f"Rows of lines {lines[0]} to {lines[batch.start - 1]} are committed; the rest are not.")
            raise
        except asyncio.CancelledError:
            # A statement timeout or cancel request: its error (57014, or 40003 during a commit)
            # is worded by the caller and cannot carry the count, so the count goes to the log.
            if committed:
                log.warning("COPY %s cancelled after %d of its %d rows were committed (lines %d to %d)",
                            table.name, committed, len(rows), lines[0], lines[batch.start - 1])
            raise
        committed += len(batch)
    return committed


# --- COPY TO ---------------------------------------------------------------------------------
def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def select_sql(statement: CopyStatement) -> str:
    """The query whose rows COPY TO sends."""
    if statement.query is not None:
        return statement.query
    columns = ", ".join(_quote_identifier(c) for c in statement.columns) if statement.columns else "*"
    return f"SELECT {columns} FROM {_quote_identifier(statement.table)}"


def output_force_quote(columns: Sequence[tuple[str, str]], options: copyformat.CopyOptions) -> frozenset[int]:
    """Positions FORCE_QUOTE names among the output columns (42P10 for another name): callers ask
    before they start the output, so the error comes instead of CopyOutResponse."""
    return copyformat.forced_positions(options, "force_quote", [name for name, _ in columns])


def render(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]], options: copyformat.CopyOptions,
           chunk_chars: int) -> Iterator[str]:
    """COPY TO output: the header (if asked) and one record per row, in chunks of about
    chunk_chars characters (whole records). Values are written as PostgreSQL prints them
    (pgtypes.encode_text, as a text-format DataRow carries them)."""
    force_quote = output_force_quote(columns, options)
    oids = []
    for index, (_, type_name) in enumerate(columns):
        sample = next((row[index] for row in rows if row[index] is not None), None)
        oids.append(pgtypes.oid_of(type_name, sample))
    pieces: list[str] = []
    size = 0
    if options.header:
        pieces.append(copyformat.header_row([name for name, _ in columns], options))
    for row in rows:
        values = [None if value is None else
                  (value if isinstance(value, str) else pgtypes.encode_text(value, oid).decode("utf-8"))
                  for value, oid in zip(row, oids)]
        record = copyformat.encode_row(values, options, force_quote)
        pieces.append(record)
        size += len(record)
        if size >= chunk_chars:
            yield "".join(pieces)
            pieces, size = [], 0
    if pieces:
        yield "".join(pieces)


# --- one whole COPY (the gRPC Copy call: input and output in one message) ----------------------
async def run_whole(session, sql: str, data: bytes):
    """(StatementResult, output bytes) of one COPY whose input, if any, is all of `data`.

    The same steps as the PostgreSQL endpoint's CopyIn/CopyOut exchange, without the exchange:
    tools/qsql.py's \\copy sends a file's content here, or writes what comes back to one."""
    from compute_node.sql.result import StatementResult

    try:
        statement = copyformat.parse_statement(sql)
    except SqlError as error:
        session.copy_failed()
        return StatementResult.failed(error), b""
    if statement.direction == "to":
        result = (await session.execute(select_sql(statement)))[-1]
        if result.error is not None:
            return result, b""
        try:
            output_force_quote(result.columns, statement.options)
        except SqlError as error:
            return StatementResult.failed(error), b""
        output = "".join(render(result.columns, result.rows, statement.options, limits.COPY_OUT_CHUNK_BYTES))
        encoded = output.encode("utf-8")
        if len(encoded) > limits.COPY_BYTES_MAX:
            return StatementResult.failed(SqlError(
                errors.PROGRAM_LIMIT_EXCEEDED, f"COPY output exceeds the limit of {limits.COPY_BYTES_MAX} bytes",
                hint="Copy fewer rows at a time (COPY (SELECT ... WHERE ...) TO STDOUT).")), b""
        return StatementResult.tag(f"COPY {len(result.rows)}"), encoded
    if len(data) > limits.COPY_BYTES_MAX:
        session.copy_failed()
        return StatementResult.failed(SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                                               f"COPY input exceeds the limit of {limits.COPY_BYTES_MAX} bytes",
                                               hint="Split the input into several COPY commands.")), b""
    try:
        names = await session.copy_columns(statement)
    except SqlError as error:
        return StatementResult.failed(error), b""
    try:
        reader = copyformat.CopyReader(statement.options, names)
        records = reader.feed(data) + reader.finish()
        if len(records) > limits.COPY_ROWS_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, f"COPY input exceeds the limit of {limits.COPY_ROWS_MAX} rows",
                           hint="Split the input into several COPY commands.")
    except SqlError as error:
        line = getattr(error, "line", None)
        if line is not None:
            located(error, statement.table, line)
        session.copy_failed()
        return StatementResult.failed(error), b""
    return await session.copy_from(statement, records), b""
