"""Differential runner: the same SQL scripts against PostgreSQL and QuorumDB, compared.

Each corpus file (corpus/*.sql) is split into statements with qsql's splitter and
run statement by statement, in a fresh database on both sides (PostgreSQL: a new
database per file; QuorumDB: a new session over a fresh backend, or a cluster after
dropping every table). For each statement the outcome is classified:

  * match        both succeeded with the same command tag and the same rows (as
                 PostgreSQL's text output; compared in order when the statement has
                 a top-level ORDER BY, as sorted lists otherwise), or both failed
                 with the same SQLSTATE;
  * unsupported  QuorumDB refused it with 0A000 (feature not supported): never a
                 wrong answer, counted apart;
  * mismatch     anything else (a different answer, tag or SQLSTATE).
Column names and types are compared too but only reported (informational).

A line `-- skip-quorumdb` before a statement runs it on PostgreSQL only (setup that
QuorumDB cannot express); `-- skip-postgres` the other way round.
"""
from __future__ import annotations

import asyncio
import dataclasses
import pathlib
from typing import Any, Awaitable, Callable, Sequence

import sqlglot
from sqlglot import exp

from tools import format as fmt
from tools.qsql import split_statements

CORPUS_DIR = pathlib.Path(__file__).parent / "corpus"
FEATURE_NOT_SUPPORTED = "0A000"

# PostgreSQL type oids -> the names QuorumDB reports.
PG_TYPES = {
    16: "boolean", 17: "bytea", 20: "bigint", 21: "smallint", 23: "integer", 25: "text", 700: "real",
    701: "double precision", 1042: "character", 1043: "character varying", 1082: "date",
    1114: "timestamp without time zone", 1184: "timestamp with time zone", 1700: "numeric", 2950: "uuid",
    705: "text", 19: "name", 1186: "interval",
    # arrays (array_agg, regexp_match)
    1000: "boolean[]", 1005: "smallint[]", 1007: "integer[]", 1016: "bigint[]", 1009: "text[]", 1021: "real[]",
    1022: "double precision[]", 1231: "numeric[]", 1015: "character varying[]", 1014: "character[]",
    1182: "date[]", 1115: "timestamp without time zone[]", 1185: "timestamp with time zone[]", 2951: "uuid[]",
    1187: "interval[]", 1001: "bytea[]",
}


@dataclasses.dataclass
class Outcome:
    columns: list[tuple[str, str]]
    rows: list[tuple]
    command_tag: str
    sqlstate: str | None
    message: str = ""


@dataclasses.dataclass
class Verdict:
    file: str
    line: int
    sql: str
    kind: str                       # match, unsupported, mismatch
    postgres: Outcome | None
    quorumdb: Outcome | None
    notes: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        def show(outcome: Outcome | None) -> str:
            if outcome is None:
                return "(not run)"
            if outcome.sqlstate:
                return f"ERROR {outcome.sqlstate}: {outcome.message}"
            rows = outcome.rows if len(outcome.rows) <= 8 else outcome.rows[:8] + [("...",)]
            return f"{outcome.command_tag} {outcome.columns} {rows}"
        return (f"{self.file}:{self.line}: {self.kind}: {self.sql}\n"
                f"    postgres: {show(self.postgres)}\n    quorumdb: {show(self.quorumdb)}"
                + "".join(f"\n    note: {n}" for n in self.notes))


@dataclasses.dataclass
class Report:
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for v in self.verdicts if v.kind == kind)

    @property
    def total(self) -> int:
        return len(self.verdicts)

    def summary(self, title: str) -> str:
        total = self.total
        matched = self.count("match")
        unsupported = self.count("unsupported")
        mismatched = self.count("mismatch")
        compared = total - unsupported
        rate = 100.0 * matched / compared if compared else 0.0
        notes = sum(1 for v in self.verdicts if v.notes)
        files = len({v.file for v in self.verdicts})
        return (f"{title}: {total} statements in {files} files: {matched} match, {unsupported} unsupported (0A000), "
                f"{mismatched} mismatch; pass rate {rate:.1f}% of supported statements; "
                f"{notes} with column name/type differences (informational)")


def load_corpus(names: Sequence[str] | None = None) -> list[tuple[str, list[tuple[int, str, str]]]]:
    """[(file name, [(line, statement, flag)])]; flag is '', 'skip-quorumdb' or 'skip-postgres'."""
    files = sorted(CORPUS_DIR.glob("*.sql"))
    if names is not None:
        files = [f for f in files if f.stem in names]
    corpus = []
    for path in files:
        corpus.append((path.stem, split_with_lines(path.read_text())))
    return corpus


def split_with_lines(text: str) -> list[tuple[int, str, str]]:
    statements = []
    buffer: list[str] = []
    start_line = None
    flag = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not buffer and stripped.startswith("--"):
            if stripped in ("-- skip-quorumdb", "-- skip-postgres"):
                flag = stripped[3:]
            continue
        if not buffer and not stripped:
            continue
        if start_line is None:
            start_line = number
        buffer.append(line)
        complete, rest = split_statements("\n".join(buffer) + "\n")
        if complete:
            for statement in complete:
                statements.append((start_line, statement, flag))
            flag = ""
            buffer = [rest] if rest.strip() else []
            start_line = number if buffer else None
    return statements


def is_ordered(sql: str) -> bool:
    try:
        node = sqlglot.parse_one(sql, read="postgres")
    except Exception:
        return False
    return isinstance(node, (exp.Select, exp.Union, exp.Intersect, exp.Except)) and node.args.get("order") is not None


def quorumdb_outcome(result: Any) -> Outcome:
    if result.error is not None:
        return Outcome([], [], "", result.error.sqlstate, result.error.message)
    rows = [tuple(None if v is None else fmt.format_value(v, result.columns[i][1] if i < len(result.columns) else "")
                  for i, v in enumerate(row)) for row in result.rows]
    return Outcome(list(result.columns), rows, result.command_tag, None)


def postgres_outcome(result) -> Outcome:
    if result.error is not None:
        return Outcome([], [], "", result.sqlstate, result.error.get("M", ""))
    columns = [(name, PG_TYPES.get(oid, f"oid {oid}")) for name, oid in result.columns]
    return Outcome(columns, list(result.rows), result.command_tag, None)


def compare(sql: str, postgres: Outcome, quorumdb: Outcome) -> tuple[str, list[str]]:
    notes: list[str] = []
    if quorumdb.sqlstate == FEATURE_NOT_SUPPORTED:
        return "unsupported", notes
    if postgres.sqlstate or quorumdb.sqlstate:
        return ("match" if postgres.sqlstate == quorumdb.sqlstate else "mismatch"), notes
    if postgres.command_tag != quorumdb.command_tag:
        return "mismatch", notes
    if len(postgres.columns) != len(quorumdb.columns):
        return "mismatch", notes
    pg_rows, q_rows = postgres.rows, quorumdb.rows
    if not is_ordered(sql):
        pg_rows = sorted(pg_rows, key=_row_key)
        q_rows = sorted(q_rows, key=_row_key)
    if pg_rows != q_rows:
        return "mismatch", notes
    pg_names = [n for n, _ in postgres.columns]
    q_names = [n for n, _ in quorumdb.columns]
    if pg_names != q_names:
        notes.append(f"column names differ: postgres {pg_names}, quorumdb {q_names}")
    pg_types = [t for _, t in postgres.columns]
    q_types = [t for _, t in quorumdb.columns]
    if pg_types != q_types:
        notes.append(f"column types differ: postgres {pg_types}, quorumdb {q_types}")
    return "match", notes


def _row_key(row: tuple) -> tuple:
    return tuple((v is None, v or "") for v in row)


QuorumRunner = Callable[[str], Awaitable[Any]]


async def run_file(name: str, statements: list[tuple[int, str, str]], postgres, quorumdb: QuorumRunner,
                   report: Report) -> None:
    """Runs one corpus file; `postgres` is a pgwire connection to a fresh database."""
    for line, sql, flag in statements:
        pg_outcome = None
        q_outcome = None
        if flag != "skip-postgres":
            pg_outcome = postgres_outcome(await asyncio.to_thread(postgres.query, sql))
        if flag != "skip-quorumdb":
            try:
                results = await quorumdb(sql)
                q_outcome = quorumdb_outcome(results[-1])
            except Exception as error:  # a bug: reported as a mismatch, the run goes on
                q_outcome = Outcome([], [], "", "XX000", f"internal error: {type(error).__name__}: {error}")
        if pg_outcome is None or q_outcome is None:
            continue
        kind, notes = compare(sql, pg_outcome, q_outcome)
        report.verdicts.append(Verdict(name, line, sql, kind, pg_outcome, q_outcome, notes))
