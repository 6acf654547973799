"""qsql: a psql-like shell for QuorumDB.

    qsql [-h HOST] [-p PORT] [-c SQL]... [-f FILE]... [-A] [-t] [-x] [-v NAME=VALUE]... [-X]
         [--token T] [--ca FILE] [--data-dir DIR] [--insecure]

Credentials, as psql's password: `--token` (else $QUORUMDB_TOKEN, as $PGPASSWORD) and `--ca`
(else $QUORUMDB_CA), or the cluster's data directory (`--data-dir`, else $QUORUMDB_DATA_DIR,
else ./quorumdb-data), which gives both (quorumdb.credentials.resolve); `--insecure` for a
cluster started with `quorumdb up --insecure`. Without any, qsql says how to give a token.

Theory of operation
-------------------
Input, from the terminal, a file or stdin, goes line by line through a
`StatementSplitter`, which splits it into statements exactly as psql does with
quorumdb.sqllex (the one SQL lexer: quotes, dollar quotes, nested comments,
parentheses) and tells the prompt what is still open (psql's %R: `=`, `-`, `'`,
`"`, `$`, `*`, `(`). A line starting with a backslash is a meta-command (\\q,
\\dt, \\d, \\timing, \\x, \\?, \\r).

Each complete statement goes to the compute node through quorumdb.client; the
result is printed by tools.format exactly as psql prints it, errors go to
stderr as `ERROR:  message` (`ERROR:  SQLSTATE: message` with
`-v VERBOSITY=verbose`), prefixed with `qsql:FILE:LINE: ` when they come from a
script. `-c SQL` sends its whole string at once (like psql, the statements run
in order and stop at the first error).

Exit status: 0 when everything succeeded; 1 when a statement failed (psql
returns 0 for a failing `-f` script without ON_ERROR_STOP; qsql returns 1 so
scripts notice); 2 when the server cannot be reached or the connection is lost;
3 when ON_ERROR_STOP stopped a script, as psql.

\\dt and \\d read the catalog with standard SQL (information_schema.tables and
information_schema.columns / key_column_usage). If the server does not offer
those views, \\d falls back to `SELECT * FROM t LIMIT 0` (column names and types
only) and says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import pathlib
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TextIO

from quorumdb import errors, sqllex
from tools import format as fmt

DATABASE_NAME = "quorumdb"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7100
HISTORY_FILE = "~/.qsql_history"
HISTORY_LINES_MAX = 2_000  # entries kept in the history file
RC_FILE = "~/.qsqlrc"
STATEMENT_BYTES_MAX = 64 * 1024 * 1024  # a statement buffer larger than this is refused (gRPC message bound)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONNECTION = 2
EXIT_SCRIPT_STOPPED = 3

HELP_TEXT = """\
General
  \\q                     quit qsql
  \\? [commands]          show help on backslash commands
Informational
  \\d [NAME]              describe table (columns, indexes, checks), or list tables
  \\dt                    list tables
  \\di                    list indexes
Input/Output
  \\copy ...             perform SQL COPY with data stream to the client host
  \\i FILE                execute commands from file
Formatting
  \\x [on|off]            toggle expanded output (currently {expanded})
  \\timing [on|off]       toggle timing of commands (currently {timing})
Query Buffer
  \\r                     reset (clear) the query buffer
Variables (\\set NAME VALUE, \\unset NAME, qsql -v NAME=VALUE)
  \\set                   list the variables
  VERBOSITY=default|verbose   show the SQLSTATE in error messages
  ON_ERROR_STOP=on            stop a script at the first error (exit status 3)
"""
INCLUDE_DEPTH_MAX = 16  # nested \i files, as a bound on recursion


# --- statement splitting (pure) ---------------------------------------------------------
_PROMPT_MARKERS = {sqllex.OPEN_STRING: "'", sqllex.OPEN_QUOTED_IDENT: '"', sqllex.OPEN_DOLLAR: "$",
                   sqllex.OPEN_COMMENT: "*", sqllex.OPEN_PAREN: "("}


class StatementSplitter:
    """Collects lines; returns each statement they complete (split by sqllex, as psql splits).

    Returned statements have their terminating `;` and surrounding whitespace removed;
    statements with nothing but comments (a lone `;`) are dropped: psql sends them, but the
    server answers nothing for them.
    """

    def __init__(self) -> None:
        self._splitter = sqllex.Splitter()

    @property
    def pending(self) -> str:
        """Text of the unfinished statement, from its first token (empty when there is none)."""
        return self._splitter.pending

    def has_pending(self) -> bool:
        """True when the unfinished statement has something besides blanks and comments."""
        return not self._splitter.pending_is_blank()

    def in_quote(self) -> bool:
        """True inside a string, quoted identifier, dollar quote or comment (where a backslash
        is text, not a meta-command)."""
        return self._splitter.open not in (sqllex.OPEN_NONE, sqllex.OPEN_PAREN)

    def reset(self) -> None:
        self._splitter.reset()

    def prompt_marker(self) -> str:
        """psql's %R: `=` nothing pending, `-` continuing, or the open quote/comment/paren."""
        marker = _PROMPT_MARKERS.get(self._splitter.open)
        if marker is not None:
            return marker
        return "-" if self._splitter.has_pending() else "="

    def feed(self, text: str) -> list[str]:
        """Add text (usually one line with its newline); return the statements it completed."""
        if self._splitter.buffered + len(text) > STATEMENT_BYTES_MAX:
            self.reset()
            raise ValueError(f"statement longer than {STATEMENT_BYTES_MAX} bytes; query buffer reset")
        return [statement[:-1].strip() for statement in self._splitter.feed(text)
                if not sqllex.is_blank(statement[:-1])]


def split_statements(sql: str) -> tuple[list[str], str]:
    """All `;`-terminated statements of sql, and the unterminated rest (stripped)."""
    splitter = StatementSplitter()
    statements = splitter.feed(sql)
    return statements, splitter.pending.strip()


def prompt(marker: str, transaction_status: str, database: str = DATABASE_NAME) -> str:
    """psql's default `%/%R%x%# ` for a non-superuser."""
    transaction_marker = {"I": "", "T": "*", "E": "!"}.get(transaction_status, "?")
    return f"{database}{marker}{transaction_marker}> "


# --- the shell -----------------------------------------------------------------------------
class ConnectionLike(Protocol):
    transaction_status: str

    def execute_script(self, sql: str) -> list[Any]: ...

    def close(self) -> None: ...


class MetaOutcome(enum.Enum):
    CONTINUE = "continue"
    QUIT = "quit"
    FAILED = "failed"


@dataclasses.dataclass
class Settings:
    print_options: fmt.PrintOptions = fmt.PrintOptions()
    timing: bool = False
    verbose_errors: bool = False
    on_error_stop: bool = False


def parse_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in ("on", "true", "yes", "1", "t", "y"):
        return True
    if lowered in ("off", "false", "no", "0", "f", "n"):
        return False
    return None


def format_elapsed(elapsed_ms: float) -> str:
    """psql's `Time: 0.258 ms`, with `(mm:ss.fff)` added from one second on."""
    text = f"Time: {elapsed_ms:.3f} ms"
    if elapsed_ms >= 1000.0:
        seconds = elapsed_ms / 1000.0
        minutes, seconds = divmod(seconds, 60.0)
        hours, minutes = divmod(int(minutes), 60)
        clock = f"{minutes:02d}:{seconds:06.3f}" if not hours else f"{hours:02d}:{minutes:02d}:{seconds:06.3f}"
        text += f" ({clock})"
    return text


class ConnectionLost(Exception):
    """The server stopped answering: the session and its open transaction are gone."""


class Shell:
    """Runs statements and meta-commands on one connection and prints like psql."""

    def __init__(self, connection: ConnectionLike, settings: Settings | None = None,
                 out: TextIO | None = None, err: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 is_connection_error: Callable[[BaseException], bool] | None = None) -> None:
        self.connection = connection
        self.settings = settings or Settings()
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.clock = clock
        self.is_connection_error = is_connection_error or _is_connection_error
        self.had_error = False
        self.variables: dict[str, str] = {}
        self.include_depth = 0
        # Where `\copy ... from stdin` reads its data: the lines of the script being run (psql
        # reads them from its current input), else qsql's own stdin.
        self._input_lines: Iterator[str] | None = None
        if self.settings.verbose_errors:
            self.variables["VERBOSITY"] = "verbose"
        if self.settings.on_error_stop:
            self.variables["ON_ERROR_STOP"] = "on"

    # --- variables and included files ----------------------------------------------------
    def set_variable(self, arguments: list[str]) -> MetaOutcome:
        if not arguments:
            for name in sorted(self.variables):
                self.out.write(f"{name} = '{self.variables[name]}'\n")
            return MetaOutcome.CONTINUE
        name, value = arguments[0], "".join(arguments[1:])
        self.variables[name] = value
        self._apply_variable(name, value)
        return MetaOutcome.CONTINUE

    def _apply_variable(self, name: str, value: str | None) -> None:
        if name == "ON_ERROR_STOP":
            self.settings.on_error_stop = bool(value is not None and (value == "" or parse_bool(value)))
        elif name == "VERBOSITY":
            self.settings.verbose_errors = value is not None and value.lower() == "verbose"

    def include_file(self, path: str, location: str = "") -> MetaOutcome:
        """\\i FILE: runs the file's lines as if typed here (errors prefixed with its name)."""
        if self.include_depth >= INCLUDE_DEPTH_MAX:
            self.print_notice(f"{path}: too many nested \\i files", location)
            self.had_error = True
            return MetaOutcome.FAILED
        try:
            text = pathlib.Path(os.path.expanduser(path)).read_text()
        except OSError as error:
            self.print_notice(f"{location}{path}: {error.strerror or error}")
            self.had_error = True
            return MetaOutcome.FAILED
        self.include_depth += 1
        had_error, self.had_error = self.had_error, False
        try:
            status = self.run_lines(iter_lines(text), path)
        finally:
            self.include_depth -= 1
        failed = self.had_error
        self.had_error = had_error or failed
        if status == EXIT_SCRIPT_STOPPED:
            return MetaOutcome.FAILED
        return MetaOutcome.FAILED if failed else MetaOutcome.CONTINUE

    # --- printing --------------------------------------------------------------------
    def print_error(self, error: Any, location: str = "") -> None:
        self.had_error = True
        self.err.write(fmt.format_error(
            getattr(error, "sqlstate", "") or "", getattr(error, "message", "") or str(error),
            getattr(error, "detail", "") or "", getattr(error, "hint", "") or "",
            verbose=self.settings.verbose_errors, prefix=location, context=getattr(error, "context", "") or "",
        ))
        self.err.flush()

    def print_notice(self, text: str, location: str = "") -> None:
        self.err.write(f"{location}{text}\n")
        self.err.flush()

    def print_result(self, result: Any) -> None:
        self.out.write(fmt.format_result(result.columns, result.rows, result.command_tag, self.settings.print_options))

    # --- statements ------------------------------------------------------------------
    def run_sql(self, sql: str, location: str = "") -> bool:
        """Send sql (one or more statements); print each result. False if one failed."""
        started = self.clock()
        try:
            results = self.connection.execute_script(sql)
        except Exception as error:  # the client raises DatabaseError subclasses for the world
            if self.is_connection_error(error):
                self.print_error(error, location)
                raise ConnectionLost(str(error)) from error
            self.print_error(error, location)
            return False
        elapsed_ms = (self.clock() - started) * 1000.0
        ok = True
        for result in results:
            error = getattr(result, "error", None)
            if error is not None:
                self.print_error(error, location)
                ok = False
                break
            self.print_result(result)
        if self.settings.timing:
            self.out.write(format_elapsed(elapsed_ms) + "\n")
        self.out.flush()
        return ok

    # --- meta-commands -----------------------------------------------------------------
    def run_meta(self, line: str, location: str = "") -> MetaOutcome:
        words = line.strip().split()
        command, arguments = words[0], words[1:]
        match command:
            case "\\q" | "\\quit":
                return MetaOutcome.QUIT
            case "\\?" | "\\h" | "\\help":
                self.out.write(HELP_TEXT.format(
                    expanded="on" if self.settings.print_options.expanded else "off",
                    timing="on" if self.settings.timing else "off",
                ))
                return MetaOutcome.CONTINUE
            case "\\timing":
                return self._toggle_timing(arguments, location)
            case "\\x":
                return self._toggle_expanded(arguments, location)
            case "\\dt" | "\\dt+":
                return self.list_tables(location)
            case "\\di" | "\\di+":
                return self.list_indexes(location)
            case "\\i" | "\\include":
                if not arguments:
                    self.print_notice("\\i: missing required argument", location)
                    self.had_error = True
                    return MetaOutcome.FAILED
                return self.include_file(" ".join(arguments), location)
            case "\\set":
                return self.set_variable(arguments)
            case "\\copy":
                return self.copy(line.strip()[len(command):], location)
            case "\\unset":
                if arguments:
                    self.variables.pop(arguments[0], None)
                    self._apply_variable(arguments[0], None)
                return MetaOutcome.CONTINUE
            case "\\d" | "\\d+":
                if not arguments:
                    return self.list_tables(location)
                return self.describe_table(_unquote_identifier(arguments[0]), location)
            case _:
                self.print_notice(f"invalid command {command}", location)
                self.print_notice("Try \\? for help.")
                self.had_error = True
                return MetaOutcome.FAILED

    def copy(self, text: str, location: str = "") -> MetaOutcome:
        """\\copy: COPY ... FROM STDIN / TO STDOUT on the server, the data read from or written to a
        file (or qsql's input/output) here, as psql's \\copy (through the gRPC Copy call)."""
        try:
            command = parse_copy_command(text)
        except ValueError as error:
            self.print_notice(f"\\copy: {error}", location)
            self.had_error = True
            return MetaOutcome.FAILED
        data = b""
        try:
            if command.direction == "from":
                data = self._copy_input(command)
        except OSError as error:
            self.print_notice(f"{command.path}: {error.strerror}", location)
            self.had_error = True
            return MetaOutcome.FAILED
        except ValueError as error:
            self.print_notice(f"\\copy: {error}", location)
            self.had_error = True
            return MetaOutcome.FAILED
        try:
            result, output = self.connection.copy(command.sql, data)
        except Exception as error:
            self.print_error(error, location)
            if self.is_connection_error(error):
                raise ConnectionLost(str(error)) from error
            return MetaOutcome.FAILED
        if result.error is not None:
            self.print_error(result.error, location)
            return MetaOutcome.FAILED
        if command.direction == "to":
            try:
                self._copy_output(command, output)
            except OSError as error:
                self.print_notice(f"{command.path}: {error.strerror}", location)
                self.had_error = True
                return MetaOutcome.FAILED
        self.out.write(result.command_tag + "\n")
        self.out.flush()
        return MetaOutcome.CONTINUE

    def _copy_input(self, command: "CopyCommand") -> bytes:
        from quorumdb import limits

        if command.path is not None:
            with open(command.path, "rb") as source:
                data = source.read(limits.COPY_BYTES_MAX + 1)
            if len(data) > limits.COPY_BYTES_MAX:
                raise ValueError(f"{command.path} is larger than {limits.COPY_BYTES_MAX} bytes; split it")
            return data
        lines = self._input_lines if command.stream == "stdin" and self._input_lines is not None else sys.stdin
        pieces, size = [], 0
        for line in lines:
            if line.rstrip("\r\n") == "\\.":
                break
            size += len(line)
            if size > limits.COPY_BYTES_MAX:
                raise ValueError(f"the data is larger than {limits.COPY_BYTES_MAX} bytes; split it")
            pieces.append(line)
        return "".join(pieces).encode("utf-8")

    def _copy_output(self, command: "CopyCommand", output: bytes) -> None:
        if command.path is not None:
            with open(command.path, "wb") as target:
                target.write(output)
            return
        stream = sys.stdout if command.stream == "pstdout" else self.out
        stream.write(output.decode("utf-8"))
        stream.flush()

    def _toggle_timing(self, arguments: list[str], location: str) -> MetaOutcome:
        new_value = self._on_off(arguments, self.settings.timing, "\\timing", location)
        if new_value is None:
            return MetaOutcome.FAILED
        self.settings.timing = new_value
        self.out.write(f"Timing is {'on' if new_value else 'off'}.\n")
        return MetaOutcome.CONTINUE

    def _toggle_expanded(self, arguments: list[str], location: str) -> MetaOutcome:
        options = self.settings.print_options
        new_value = self._on_off(arguments, options.expanded, "\\x", location)
        if new_value is None:
            return MetaOutcome.FAILED
        self.settings.print_options = dataclasses.replace(options, expanded=new_value)
        self.out.write(f"Expanded display is {'on' if new_value else 'off'}.\n")
        return MetaOutcome.CONTINUE

    def _on_off(self, arguments: list[str], current: bool, command: str, location: str) -> bool | None:
        if not arguments:
            return not current
        value = parse_bool(arguments[0])
        if value is None:
            self.print_notice(f'unrecognized value "{arguments[0]}" for "{command}": Boolean expected', location)
            self.had_error = True
        return value

    def _query_quietly(self, sql: str) -> tuple[Any | None, Any | None]:
        """(result, None) or (None, error) for one catalog query, printing nothing."""
        try:
            results = self.connection.execute_script(sql)
        except Exception as error:
            if self.is_connection_error(error):
                self.print_error(error)
                raise ConnectionLost(str(error)) from error
            return None, error
        if not results:
            return None, None
        if getattr(results[0], "error", None) is not None:
            return None, results[0].error
        return results[0], None

    def list_tables(self, location: str = "") -> MetaOutcome:
        result, error = self._query_quietly(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY table_schema, table_name"
        )
        if result is None:
            self.print_error(_catalog_error(error, "\\dt", "information_schema.tables"), location)
            return MetaOutcome.FAILED
        rows = [(str(schema), str(name), "table") for schema, name in result.rows]
        if not rows:
            self.print_notice("Did not find any relations.", location)
            return MetaOutcome.FAILED
        self.out.write(fmt.format_table(
            [("Schema", "text"), ("Name", "text"), ("Type", "text")], rows,
            self.settings.print_options, title="List of relations",
        ))
        return MetaOutcome.CONTINUE

    def list_indexes(self, location: str = "") -> MetaOutcome:
        result, error = self._query_quietly(
            "SELECT schemaname, indexname, tablename FROM pg_indexes ORDER BY schemaname, indexname")
        if result is None:
            self.print_error(_catalog_error(error, "\\di", "pg_indexes"), location)
            return MetaOutcome.FAILED
        rows = [(str(schema), str(name), "index", str(table)) for schema, name, table in result.rows]
        if not rows:
            self.print_notice("Did not find any relations.", location)
            return MetaOutcome.FAILED
        self.out.write(fmt.format_table(
            [("Schema", "text"), ("Name", "text"), ("Type", "text"), ("Table", "text")], rows,
            self.settings.print_options, title="List of relations",
        ))
        return MetaOutcome.CONTINUE

    def _table_footers(self, table: str, literal: str, primary_key: list[str]) -> list[str]:
        """psql's `Indexes:` and `Check constraints:` sections of \\d."""
        indexes, _ = self._query_quietly(
            f"SELECT indexname, indexdef FROM pg_indexes WHERE tablename = {literal} ORDER BY indexname")
        constraints, _ = self._query_quietly(
            "SELECT constraint_name, constraint_type FROM information_schema.table_constraints "
            f"WHERE table_name = {literal}")
        if indexes is not None and len(indexes.columns) != 2:
            indexes = None  # a server without pg_indexes
        if constraints is not None and len(constraints.columns) != 2:
            constraints = None
        kinds = {str(name): str(kind) for name, kind in constraints.rows} if constraints is not None else {}
        lines = []
        if indexes is not None:
            entries = []
            for name, definition in indexes.rows:
                name, definition = str(name), str(definition)
                method = definition[definition.index(" USING ") + 7:] if " USING " in definition else ""
                kind = kinds.get(name)
                if kind == "PRIMARY KEY":
                    label = "PRIMARY KEY, "
                elif kind == "UNIQUE":
                    label = "UNIQUE CONSTRAINT, "
                elif definition.startswith("CREATE UNIQUE"):
                    label = "UNIQUE, "
                else:
                    label = ""
                order = 0 if kind == "PRIMARY KEY" else 1
                entries.append((order, name, f'    "{name}" {label}{method}'))
            lines += [entry[2] for entry in sorted(entries)]
        elif primary_key:
            lines.append(f'    "{table}_pkey" PRIMARY KEY ({", ".join(primary_key)})')
        footers = ["Indexes:"] + lines if lines else []
        checks, _ = self._query_quietly(
            "SELECT c.constraint_name, c.check_clause FROM information_schema.check_constraints c "
            f"JOIN information_schema.table_constraints t ON t.constraint_name = c.constraint_name "
            f"WHERE t.table_name = {literal} AND t.constraint_type = 'CHECK' ORDER BY c.constraint_name")
        if checks is not None and len(checks.columns) == 2 and checks.rows:
            footers.append("Check constraints:")
            footers += [f'    "{name}" CHECK ({clause})' for name, clause in checks.rows]
        return footers

    def describe_table(self, table: str, location: str = "") -> MetaOutcome:
        literal = "'" + table.replace("'", "''") + "'"
        columns_result, error = self._query_quietly(
            "SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, "
            "is_nullable, column_default FROM information_schema.columns "
            f"WHERE table_name = {literal} ORDER BY ordinal_position"
        )
        if columns_result is not None and len(columns_result.columns) == 7:
            if not columns_result.rows:
                self.print_notice(f'Did not find any relation named "{table}".', location)
                return MetaOutcome.FAILED
            primary_key = self._primary_key_columns(literal)
            # psql's \d layout: Column | Type (with its modifiers) | Collation | Nullable | Default
            rows = [
                (str(name), _format_column_type(data_type, length, precision, scale), "",
                 "" if str(nullable).upper() == "YES" else "not null", "" if default is None else str(default))
                for name, data_type, length, precision, scale, nullable, default in columns_result.rows
            ]
            footers = self._table_footers(table, literal, primary_key)
            self.out.write(fmt.format_table(
                [("Column", "text"), ("Type", "text"), ("Collation", "text"), ("Nullable", "text"),
                 ("Default", "text")], rows,
                self.settings.print_options, title=f'Table "public.{table}"', footers=footers,
            ))
            return MetaOutcome.CONTINUE
        # Fallback: the column metadata of an empty result (names and types only).
        probe, probe_error = self._query_quietly(f"SELECT * FROM {_quote_identifier(table)} LIMIT 0")
        if probe is None:
            if probe_error is not None and getattr(probe_error, "sqlstate", "") == errors.UNDEFINED_TABLE:
                self.print_notice(f'Did not find any relation named "{table}".', location)
            else:
                self.print_error(_catalog_error(probe_error, "\\d", "information_schema.columns"), location)
            return MetaOutcome.FAILED
        rows = [(name, type_name, "") for name, type_name in probe.columns]
        self.out.write(fmt.format_table(
            [("Column", "text"), ("Type", "text"), ("Nullable", "text")], rows,
            self.settings.print_options, title=f'Table "{table}"',
            footers=["(nullability and primary key unknown: the server has no information_schema.columns)"],
        ))
        return MetaOutcome.CONTINUE

    def _primary_key_columns(self, table_literal: str) -> list[str]:
        result, _ = self._query_quietly(
            "SELECT column_name FROM information_schema.key_column_usage "
            f"WHERE table_name = {table_literal} ORDER BY ordinal_position"
        )
        return [str(row[0]) for row in result.rows] if result is not None else []

    # --- input loops --------------------------------------------------------------------
    def run_lines(self, lines: Iterable[str], source: str | None) -> int:
        """Run a script (file or piped stdin) line by line; the exit status."""
        splitter = StatementSplitter()
        lines = iter(lines)
        outer_input, self._input_lines = self._input_lines, lines
        try:
            return self._run_lines(lines, source, splitter)
        finally:
            self._input_lines = outer_input

    def _run_lines(self, lines: Iterator[str], source: str | None, splitter: "StatementSplitter") -> int:
        line_number = 0
        quit_requested = False
        for line_number, line in enumerate(lines, start=1):
            outcome = self._process_line(splitter, line, _location(source, line_number))
            if outcome is MetaOutcome.QUIT:
                quit_requested = True
                break
            if outcome is MetaOutcome.FAILED and self.settings.on_error_stop:
                return EXIT_SCRIPT_STOPPED
        if not quit_requested and splitter.has_pending():
            # psql sends an unterminated last statement at the end of its input.
            if not self.run_sql(splitter.pending.strip(), _location(source, line_number)):
                if self.settings.on_error_stop:
                    return EXIT_SCRIPT_STOPPED
        return EXIT_ERROR if self.had_error else EXIT_OK

    def _process_line(self, splitter: StatementSplitter, line: str, location: str) -> MetaOutcome:
        """Feed one input line; run what it completes. FAILED if any part failed."""
        if not splitter.in_quote() and line.lstrip().startswith("\\"):
            command = line.strip()
            if command in ("\\r", "\\reset"):
                splitter.reset()
                self.out.write("Query buffer reset (cleared).\n")
                return MetaOutcome.CONTINUE
            return self.run_meta(command, location)
        try:
            statements = splitter.feed(line if line.endswith("\n") else line + "\n")
        except ValueError as error:
            self.print_notice(f"{location}ERROR:  {error}")
            self.had_error = True
            return MetaOutcome.FAILED
        outcome = MetaOutcome.CONTINUE
        for statement in statements:
            if not self.run_sql(statement, location):
                outcome = MetaOutcome.FAILED
                if self.settings.on_error_stop:
                    break
        return outcome

    def run_command_string(self, text: str) -> int:
        """-c: a meta-command, or SQL sent in one piece (psql sends -c as one query)."""
        if text.lstrip().startswith("\\"):
            outcome = self.run_meta(text.strip())
            return EXIT_ERROR if outcome is MetaOutcome.FAILED else EXIT_OK
        return EXIT_OK if self.run_sql(text) else EXIT_ERROR

    def interactive(self, read_line: Callable[[str], str],
                    reconnect: Callable[[], ConnectionLike] | None = None) -> int:
        """The read-eval-print loop; read_line(prompt) raises EOFError at end of input.

        When the connection is lost, reconnect() (if given) opens a new session, as
        psql's "Attempting reset"; the old session's open transaction is gone.
        """
        splitter = StatementSplitter()
        while True:
            marker = splitter.prompt_marker()
            try:
                line = read_line(prompt(marker, self.connection.transaction_status))
            except EOFError:
                self.out.write("\n")
                return EXIT_OK
            except KeyboardInterrupt:
                # Like psql: Ctrl-C at the prompt clears the query buffer.
                splitter.reset()
                self.out.write("\n")
                continue
            try:
                outcome = self._process_line(splitter, line, "")
            except KeyboardInterrupt:
                self.print_notice("Cancel request sent (the statement may still complete on the server).")
                continue
            except ConnectionLost:
                if reconnect is None:
                    raise
                splitter.reset()
                try:
                    self.connection = reconnect()
                except Exception:
                    self.print_notice("The connection to the server was lost. Attempting reset: Failed.")
                    return EXIT_CONNECTION
                self.print_notice("The connection to the server was lost. Attempting reset: Succeeded.")
                continue
            if outcome is MetaOutcome.QUIT:
                return EXIT_OK


@dataclasses.dataclass(frozen=True)
class CopyCommand:
    sql: str                 # the COPY sent to the server (FROM STDIN / TO STDOUT)
    direction: str           # "from" or "to"
    path: str | None         # the client-side file, or None for a stream
    stream: str | None       # stdin, pstdin, stdout or pstdout when path is None


def parse_copy_command(text: str) -> CopyCommand:
    """The arguments of `\\copy` (everything after it on the line), as psql reads them:
    `table [(cols)] from {'file' | file | stdin | pstdin} [options]` or
    `{table [(cols)] | (query)} to {'file' | file | stdout | pstdout} [options]`. The options are
    passed to the server as written (both PostgreSQL spellings work). ValueError when malformed."""
    significant = [t for t in sqllex.tokens(text) if t.kind not in (sqllex.SPACE, sqllex.COMMENT)]
    depth = 0
    for index, token in enumerate(significant):
        word = text[token.start:token.end]
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif depth == 0 and index > 0 and token.kind == sqllex.WORD and word.upper() in ("FROM", "TO"):
            break
    else:
        raise ValueError("parse error: expected FROM or TO (\\copy table from 'file' | \\copy table to 'file')")
    direction = word.lower()
    head = text[:token.start].strip()
    rest = text[token.end:].lstrip()
    if not rest:
        raise ValueError(f"parse error at end of line: a file name, {'stdin' if direction == 'from' else 'stdout'} "
                         "or pstdin/pstdout must follow " + direction.upper())
    path = stream = None
    if rest.startswith("'"):
        target = sqllex.tokens(rest)[0]
        literal = rest[:target.end]
        if not literal.endswith("'") or len(literal) < 2:
            raise ValueError("unterminated quoted file name")
        path, options = sqllex.string_value(literal), rest[target.end:]
    else:
        target_word, _, options = rest.partition(" ")
        lowered = target_word.lower()
        if lowered == "program":
            raise ValueError("\\copy ... program is not supported by qsql")
        if lowered in ("stdin", "pstdin", "stdout", "pstdout"):
            if (lowered.endswith("in")) != (direction == "from"):
                raise ValueError(f"{target_word} cannot be used with {direction.upper()}")
            stream = lowered
        else:
            path = target_word
    endpoint = "STDIN" if direction == "from" else "STDOUT"
    sql = f"COPY {head} {direction.upper()} {endpoint} {options.strip()}".rstrip()
    return CopyCommand(sql, direction, os.path.expanduser(path) if path is not None else None, stream)


def _location(source: str | None, line_number: int) -> str:
    return f"qsql:{source}:{line_number}: " if source else ""


def _catalog_error(error: Any, command: str, view: str) -> Any:
    message = getattr(error, "message", "") or str(error or "no result")
    return _SimpleError(
        getattr(error, "sqlstate", "") or errors.FEATURE_NOT_SUPPORTED,
        f"{command} needs {view}, which this server does not answer: {message}",
    )


@dataclasses.dataclass
class _SimpleError:
    sqlstate: str
    message: str
    detail: str = ""
    hint: str = ""


def _unquote_identifier(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text.lower()


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_connection_error(error: BaseException) -> bool:
    try:
        from quorumdb import client
    except ImportError:  # pragma: no cover - the client ships with this package
        return False
    operational = getattr(client, "OperationalError", None)
    return operational is not None and isinstance(error, operational)


# --- command line ---------------------------------------------------------------------------
class _AppendAction(argparse.Action):
    """-c and -f keep their order on the command line, as psql runs them."""

    def __call__(self, parser, namespace, values, option_string=None):
        actions = list(getattr(namespace, "actions", None) or [])
        actions.append((self.dest, values))
        namespace.actions = actions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsql", description="QuorumDB interactive SQL shell (psql-like).",
                                     add_help=False)
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-h", "--host", default=os.environ.get("QSQL_HOST", DEFAULT_HOST),
                        help=f"compute node host (default {DEFAULT_HOST}, or $QSQL_HOST)")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("QSQL_PORT", DEFAULT_PORT)),
                        help=f"compute node port (default {DEFAULT_PORT}, or $QSQL_PORT)")
    parser.add_argument("-c", "--command", dest="command", action=_AppendAction,
                        help="run one command string (SQL or a backslash command) and exit")
    parser.add_argument("-f", "--file", dest="file", action=_AppendAction,
                        help="run the commands of a file ('-' for stdin) and exit")
    parser.add_argument("-A", "--no-align", action="store_true", help="unaligned output")
    parser.add_argument("-t", "--tuples-only", action="store_true", help="print rows only")
    parser.add_argument("-x", "--expanded", action="store_true", help="expanded output")
    parser.add_argument("-F", "--field-separator", default="|", help="field separator for unaligned output")
    parser.add_argument("-v", "--set", "--variable", dest="variables", action="append", default=[],
                        metavar="NAME=VALUE", help="set a variable: VERBOSITY=verbose, ON_ERROR_STOP=1")
    parser.add_argument("-X", "--no-psqlrc", action="store_true", help=f"do not read {RC_FILE}")
    parser.add_argument("-d", "--dbname", default=DATABASE_NAME, help="accepted for psql compatibility")
    parser.add_argument("-U", "--username", default="", help="accepted for psql compatibility")
    parser.add_argument("--token", default=None,
                        help="auth token (default $QUORUMDB_TOKEN, else one minted from the data directory)")
    parser.add_argument("--ca", default=None, metavar="FILE",
                        help="the cluster's CA certificate (default $QUORUMDB_CA, else DATA_DIR/certs/ca.crt)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="the cluster's data directory: its CA and token secret (default $QUORUMDB_DATA_DIR, "
                             "else ./quorumdb-data)")
    parser.add_argument("--insecure", action="store_true",
                        help="plaintext, no token: a cluster started with `quorumdb up --insecure`")
    return parser


def connect_options(args: argparse.Namespace) -> dict[str, Any]:
    """What the connection presents (quorumdb.credentials.resolve reads the environment for the rest)."""
    return {"token": args.token, "ca": args.ca, "data_dir": args.data_dir, "insecure": args.insecure}


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings(print_options=fmt.PrintOptions(
        aligned=not args.no_align, tuples_only=args.tuples_only, expanded=args.expanded,
        field_separator=args.field_separator,
    ))
    for assignment in args.variables:
        name, _, value = assignment.partition("=")
        match name.upper():
            case "VERBOSITY":
                settings.verbose_errors = value.lower() == "verbose"
            case "ON_ERROR_STOP":
                settings.on_error_stop = bool(parse_bool(value or "on"))
            case _:
                pass  # psql accepts any variable; unknown ones have no effect here
    return settings


def _readline_input(history_path: pathlib.Path) -> Callable[[str], str]:
    try:
        import readline
    except ImportError:  # pragma: no cover - e.g. a Python built without readline
        return input
    readline.set_history_length(HISTORY_LINES_MAX)
    try:
        readline.read_history_file(history_path)
    except OSError:
        pass
    import atexit

    def save_history() -> None:
        try:
            readline.write_history_file(history_path)
        except OSError:
            pass

    atexit.register(save_history)
    return input


def _connect(host: str, port: int, options: dict[str, Any] | None = None) -> Any:
    from quorumdb import client

    return client.connect(host, port, **(options or {}))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    try:
        connection = _connect(args.host, args.port, connect_options(args))
    except Exception as error:
        sys.stderr.write(
            f'qsql: error: connection to server at "{args.host}", port {args.port} failed: '
            f"{getattr(error, 'message', '') or error}\n"
        )
        return EXIT_CONNECTION
    shell = Shell(connection, settings)
    try:
        return _run(shell, args)
    except ConnectionLost:
        sys.stderr.write("qsql: the connection to the server was lost\n")
        return EXIT_CONNECTION
    finally:
        try:
            shell.connection.close()
        except Exception:  # closing a dead connection must not hide the exit status
            pass


def _run(shell: Shell, args: argparse.Namespace) -> int:
    actions = getattr(args, "actions", None) or []
    if actions:
        status = EXIT_OK
        for kind, value in actions:
            if kind == "command":
                status = shell.run_command_string(value)
            elif value == "-":
                status = shell.run_lines(sys.stdin, "<stdin>")
            else:
                try:
                    with open(value, encoding="utf-8") as script:
                        status = shell.run_lines(script, value)
                except OSError as error:
                    sys.stderr.write(f"qsql: {value}: {error.strerror}\n")
                    return EXIT_ERROR
            if status != EXIT_OK and shell.settings.on_error_stop:
                return status
        return EXIT_ERROR if shell.had_error else status
    if not sys.stdin.isatty():
        return shell.run_lines(sys.stdin, "<stdin>")
    if not args.no_psqlrc:
        rc_path = pathlib.Path(RC_FILE).expanduser()
        if rc_path.is_file():
            with rc_path.open(encoding="utf-8") as rc_lines:
                shell.run_lines(rc_lines, str(rc_path))
            shell.had_error = False
    sys.stdout.write(f'qsql (QuorumDB) connected to {args.host}:{args.port}. Type "\\?" for help, "\\q" to quit.\n\n')
    read_line = _readline_input(pathlib.Path(HISTORY_FILE).expanduser())
    return shell.interactive(read_line, reconnect=lambda: _connect(args.host, args.port, connect_options(args)))


def iter_lines(text: str) -> Iterator[str]:
    """The lines of text with their newlines (for tests and -c style scripts)."""
    return iter(text.splitlines(keepends=True))


if __name__ == "__main__":
    sys.exit(main())


def _format_column_type(data_type, length, precision, scale) -> str:
    """A column's type as psql's \\d prints it (format_type): modifiers included."""
    name = str(data_type)
    if name in ("character varying", "character") and length is not None:
        return f"{name}({length})"
    if name == "numeric" and precision is not None:
        return f"numeric({precision},{scale or 0})"
    return name
