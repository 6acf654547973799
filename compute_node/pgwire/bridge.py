"""One PostgreSQL connection's SQL side: the engine Session plus what only the wire needs.

Theory of operation
-------------------
Statements reach the same `compute_node.sessions.session.Session` (and so the same executor, write
buffer and commit path) as the gRPC API. Before a statement goes to the engine, two things that
PostgreSQL clients send and the engine does not know are answered here:

  * SET / RESET / SHOW / DISCARD / DEALLOCATE: run-time settings (settings.py);
  * LOCK ... IN ACCESS SHARE MODE (pg_dump's; a no-op under snapshot isolation, see _lock).

Catalog queries (psql's \\d, drivers' and ORMs' introspection, pg_dump) and session functions
(version(), current_user) are ordinary engine statements over pg_catalog's relations
(compute_node/sql/pg_catalog.py): nothing here looks at their text.

Both respect the transaction state: in a failed block they fail with 25P02 like anything else.
Every statement's result is an `Outcome` the server turns into protocol messages.

A simple Query with several statements and no transaction control runs as one implicit
transaction, as PostgreSQL does: an error rolls back the earlier statements of the message.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

from compute_node.sessions import session as session_mod
from compute_node.pgwire import settings as settings_mod
from quorumdb import sqllex
from compute_node.sql import pg_catalog, types
from quorumdb import errors, limits
from quorumdb.errors import SqlError

IN_FAILED_BLOCK = "current transaction is aborted, commands ignored until end of transaction block"
# First words of what this module answers itself (settings commands, and LOCK; savepoints, cursors
# and transaction control are the engine's: compute_node/sessions/session.py): a statement starting
# otherwise may go to the engine.
_ANSWERED_HERE = frozenset({"SET", "RESET", "SHOW", "DISCARD", "DEALLOCATE", "LOCK"})
# Statement shapes (quorumdb/sqllex.py lift_literals) already found to be engine statements,
# whatever their constants: classified once per node, not at every statement (bounded, LRU).
_ENGINE_SHAPES: "collections.OrderedDict[str, bool]" = collections.OrderedDict()
TRANSACTION_WORDS = frozenset({"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE",
                               "PREPARE"})


@dataclasses.dataclass
class Outcome:
    columns: list[tuple[str, str]]   # (name, type name)
    rows: list[tuple]
    tag: str
    error: SqlError | None = None
    notices: list[SqlError] = dataclasses.field(default_factory=list)
    parameter_changes: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    changed_keys: list[str] = dataclasses.field(default_factory=list)   # SET: the settings it changed
    previous: dict[str, str] = dataclasses.field(default_factory=dict)  # SET: the values before it

    @property
    def returns_rows(self) -> bool:
        return bool(self.columns)

    @staticmethod
    def failed(error: SqlError) -> "Outcome":
        return Outcome([], [], "", error)

    @staticmethod
    def tag_only(tag: str) -> "Outcome":
        return Outcome([], [], tag)


@dataclasses.dataclass
class _SettingsBlock:
    txn: Any                                   # the engine transaction of the block
    start: dict[str, str]                      # the settings when the block began
    local_restore: dict[str, str] = dataclasses.field(default_factory=dict)   # SET LOCAL key -> value before it
    # per savepoint of the block: (values, local_restore) when it was set
    savepoints: list[tuple[dict, dict]] = dataclasses.field(default_factory=list)


def is_transaction_control(statement: str) -> bool:
    words = sqllex.leading_words(statement, 1)
    return bool(words) and words[0] in TRANSACTION_WORDS


class PgSession:
    def __init__(self, session, backend, user: str, database: str, application_name: str,
                 process_id: int, node_name: str, deallocate: Callable[[str | None], None]):
        self.session = session            # compute_node.sessions.session.Session (over a CommitTracker)
        self.backend = backend
        self.user = user
        self.database = database
        self.process_id = process_id
        self.node_name = node_name
        self.settings = settings_mod.Settings(user, application_name)
        session.client = pg_catalog.ClientInfo(user, database, process_id, self.settings)
        self._deallocate = deallocate
        self._read_only_txn: Any = None   # the block SET TRANSACTION READ ONLY made read-only
        self._block: _SettingsBlock | None = None   # settings as the open transaction block found them

    @property
    def transaction_status(self) -> str:
        return self.session.transaction_status

    async def run_script(self, statements: list[str]) -> list[Outcome]:
        """A simple Query's statements, in order, stopping at the first error."""
        implicit = (len(statements) > 1 and self.transaction_status == "I"
                    and not any(is_transaction_control(statement) for statement in statements))
        if implicit:
            await self._control("BEGIN")
        outcomes: list[Outcome] = []
        for statement in statements:
            outcome = await self.run(statement)
            outcomes.append(outcome)
            if outcome.error is not None:
                break
        if implicit:
            if outcomes[-1].error is not None:
                await self._control("ROLLBACK")
            else:
                commit = await self._control("COMMIT")
                if commit.error is not None:
                    outcomes.append(commit)
        return outcomes

    # --- COPY (the server drives the protocol; compute_node/sessions/copy.py does the work) ----------
    async def copy_columns(self, statement) -> Outcome:
        try:
            names = await self.session.copy_columns(statement)
        except SqlError as error:
            return Outcome.failed(error)
        return Outcome([(name, "text") for name in names], [], "")

    async def copy_from(self, statement, records) -> Outcome:
        if self._in_read_only_block():
            self.session.fail_block()
            return Outcome.failed(SqlError(errors.READ_ONLY_SQL_TRANSACTION, "cannot execute COPY FROM in a read-only transaction"))
        result = await self.session.copy_from(statement, records)
        return Outcome([], [], result.command_tag or "", result.error)

    def copy_streams(self, statement) -> bool:
        return self.session.copy_streams(statement)

    async def copy_to(self, statement) -> Outcome:
        """The rows of COPY TO: the table's (or the query's) SELECT, run as a statement."""
        from compute_node.sessions import copy as copy_mod
        outcome = await self._engine(copy_mod.select_sql(statement), None, None)
        if outcome.error is None and not outcome.columns:
            return Outcome.failed(SqlError(errors.FEATURE_NOT_SUPPORTED, "COPY query must return rows"))
        return outcome

    async def control(self, sql: str) -> Outcome:
        """BEGIN / COMMIT / ROLLBACK of an implicit transaction (the server's extended protocol)."""
        return await self._control(sql)

    async def _control(self, sql: str) -> Outcome:
        results = await self.session.execute(sql)
        result = results[-1]
        return self._track_block(Outcome([], [], result.command_tag, result.error), sqllex.words(sql))

    async def run(self, statement: str, params: list[str] | None = None) -> Outcome:
        outcome = await self._run(statement, params)
        return self._track_block(outcome, sqllex.words(statement)[:3])

    # --- settings and transaction blocks --------------------------------------------------------
    def _track_block(self, outcome: Outcome, words: list[str]) -> Outcome:
        """Settings follow the transaction block as in PostgreSQL: at its end SET LOCAL values
        revert (every SET of the block too when it rolled back), and ROLLBACK TO a savepoint
        restores the settings the savepoint saw. The engine's Session owns the block and its
        savepoints; this follows them after each statement (its transaction object, the number
        of savepoints it holds)."""
        txn = self.session.transaction
        block = self._block
        if block is not None and block.txn is not txn:
            committed = outcome.error is None and outcome.tag == "COMMIT"
            restore = dict(block.start)
            if committed:
                restore = dict(self.settings.values)
                restore.update(block.local_restore)
            outcome.parameter_changes += self._restore(restore)
            self._block = block = None
        if txn is None:
            return outcome
        if block is None:
            block = self._block = _SettingsBlock(txn, dict(self.settings.values))
        depth = self.session.savepoint_depth
        rolled_back_to = (outcome.error is None and outcome.tag == "ROLLBACK"
                          and words[:1] in (["ROLLBACK"], ["ABORT"]))
        if rolled_back_to and 0 < depth <= len(block.savepoints):
            values, local_restore = block.savepoints[depth - 1]
            outcome.parameter_changes += self._restore(values)
            block.local_restore = dict(local_restore)
        del block.savepoints[depth:]
        while len(block.savepoints) < depth:
            block.savepoints.append((dict(self.settings.values), dict(block.local_restore)))
        return outcome

    def _restore(self, values: dict[str, str]) -> list[tuple[str, str]]:
        changes = []
        for key, value in values.items():
            if self.settings.values.get(key) != value:
                setting = settings_mod.SETTINGS.get(key)
                if setting is not None and setting.report:
                    changes.append((setting.name, value))
        self.settings.values = dict(values)
        return changes

    async def _run(self, statement: str, params: list[str] | None = None) -> Outcome:
        """One statement; `params` are the SQL literals of its $n parameters (extended protocol).
        The engine binds them into its cached parse; the commands answered here, which read
        values out of the text, get them pasted in."""
        shape = sqllex.lift_literals(statement)
        if shape.key in _ENGINE_SHAPES:  # classified before: straight to the engine, lexed once
            _ENGINE_SHAPES.move_to_end(shape.key)
            return await self._engine(statement, params, shape)
        words = sqllex.words(statement)
        if not words:
            return Outcome.tag_only("")
        first = words[0]
        if params is not None and first in ("SET", "RESET", "SHOW", "DISCARD", "DEALLOCATE", "LOCK"):
            statement, params = sqllex.substitute(statement, params), None
            words = sqllex.words(statement)
            shape = sqllex.lift_literals(statement)
        if first == "LOCK":
            return self._lock(words)
        if first in ("SET", "RESET", "SHOW", "DISCARD", "DEALLOCATE") and not (first == "SET" and "FROM" in words):
            if self.transaction_status == "E":
                return Outcome.failed(SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK))
            try:
                return self._command(first, words, statement)
            except SqlError as error:
                return self._fail_block(error)
        if first not in _ANSWERED_HERE:
            # Not a command answered here, whatever its constants: the
            # next statement of this shape goes to the engine without being classified again.
            _ENGINE_SHAPES[shape.key] = True
            while len(_ENGINE_SHAPES) > limits.STATEMENT_CACHE_SHAPES_MAX:
                _ENGINE_SHAPES.popitem(last=False)
        return await self._engine(statement, params, shape)

    async def _engine(self, statement: str, params: list[str] | None, shape: sqllex.Shape | None) -> Outcome:
        read_only = self._in_read_only_block() and self.transaction_status == "T"
        results = await self.session.execute(statement, params, shape=shape)
        if read_only and self._in_read_only_block() and self.session.transaction.has_writes:
            # Checked after the statement, on what it wrote: whatever its form (INSERT, DDL, a CTE),
            # its writes stay in a block that can no longer commit.
            self.session.fail_block()
            words = sqllex.leading_words(statement, 1)
            return Outcome.failed(SqlError(errors.READ_ONLY_SQL_TRANSACTION,
                                           f"cannot execute {words[0] if words else 'this statement'} "
                                           "in a read-only transaction"))
        outcomes = [Outcome(list(r.columns), list(r.rows), r.command_tag or "", r.error) for r in results]
        failed = [outcome for outcome in outcomes if outcome.error is not None]
        return failed[0] if failed else outcomes[-1] if outcomes else Outcome.tag_only("")

    def _lock(self, words: list[str]) -> Outcome:
        """LOCK [TABLE] name [, ...] IN ACCESS SHARE MODE (what pg_dump takes on every table) is
        accepted in a block and does nothing: it only keeps DDL out while the block reads, and a
        QuorumDB block reads one snapshot and fails its commit (OC001) if a definition it read
        changed. Any stronger mode would have to exclude writers, which OCC does not do: 0A000."""
        if self.transaction_status == "E":
            return Outcome.failed(SqlError(errors.IN_FAILED_SQL_TRANSACTION, IN_FAILED_BLOCK))
        if words[-4:] != ["IN", "ACCESS", "SHARE", "MODE"]:
            return Outcome.failed(SqlError(errors.FEATURE_NOT_SUPPORTED, "LOCK is supported only IN ACCESS SHARE MODE",
                                           hint="Transactions are optimistic: a conflicting write fails at COMMIT."))
        if self.session.transaction is None:
            return Outcome.failed(SqlError(errors.NO_ACTIVE_SQL_TRANSACTION,
                                           "LOCK TABLE can only be used in transaction blocks"))
        return Outcome.tag_only("LOCK TABLE")

    def _fail_block(self, error: SqlError) -> Outcome:
        # PostgreSQL would also fail an open block here; the engine's Session has no hook for
        # that, so a failed SET/SHOW or catalog query leaves the block usable (docs/POSTGRES.md).
        return Outcome.failed(error)

    # --- SET / RESET / SHOW / DISCARD / DEALLOCATE ------------------------------------------
    def _command(self, first: str, words: list[str], statement: str) -> Outcome:
        match first:
            case "SHOW":
                return self._show(words[1:])
            case "SET":
                return self._set(words[1:])
            case "RESET":
                return self._reset(words[1:])
            case "DISCARD":
                return self._discard(words[1:])
            case "DEALLOCATE":
                rest = words[1:]
                if rest and rest[0] == "PREPARE":
                    rest = rest[1:]
                if len(rest) != 1:
                    raise SqlError(errors.SYNTAX_ERROR, "syntax error in DEALLOCATE")
                self._deallocate(None if rest[0] == "ALL" else _unquote_name(rest[0]))
                return Outcome.tag_only("DEALLOCATE ALL" if rest[0] == "ALL" else "DEALLOCATE")
        raise AssertionError(first)

    def _show(self, rest: list[str]) -> Outcome:
        if rest == ["ALL"]:
            return Outcome([("name", "text"), ("setting", "text"), ("description", "text")],
                           [tuple(row) for row in self.settings.show_all()], "SHOW")
        name = " ".join(rest).lower() if rest[:1] in (["TIME"], ["TRANSACTION"], ["SESSION"]) else _name(rest)
        if name == session_mod.READ_MODE_SETTING and hasattr(self.backend, "session_read_mode"):
            # The mode in force: the session's own, else the cluster's (never "unrecognized").
            value = self.backend.session_read_mode or getattr(self.backend, "read_mode", "quorum")
            return Outcome([(name, "text")], [(value,)], "SHOW")
        if name == session_mod.WRITE_FORWARDING_SETTING and hasattr(self.backend, "write_forwarding"):
            return Outcome([(name, "text")], [(self.backend.write_forwarding,)], "SHOW")
        if name == session_mod.REPLICA_LAG_SETTING and hasattr(self.backend, "replica_lag"):
            return Outcome([(name, "text")], [(self.backend.replica_lag(),)], "SHOW")
        value = self.settings.get(name)
        column = settings_mod.SETTINGS.get(settings_mod.ALIASES.get(name, name))
        return Outcome([(column.name if column else name, "text")], [(value,)], "SHOW")

    def _set(self, rest: list[str]) -> Outcome:
        local = rest[:1] == ["LOCAL"]
        if rest[:1] in (["SESSION"], ["LOCAL"]) and rest[1:2] != ["CHARACTERISTICS"] and rest[1:2] != ["AUTHORIZATION"]:
            rest = rest[1:]
        if local and self.session.transaction is None:
            return Outcome([], [], "SET", notices=[SqlError(errors.NO_ACTIVE_SQL_TRANSACTION,
                                                            "SET LOCAL can only be used in transaction blocks")])
        outcome = self._set_value(rest)
        block = self._block
        if block is not None and block.txn is self.session.transaction and outcome.error is None:
            for key in outcome.changed_keys:
                if local:
                    block.local_restore.setdefault(key, outcome.previous[key])
                else:
                    block.local_restore.pop(key, None)  # a plain SET in the block outlives it
        return outcome

    def _set_value(self, rest: list[str]) -> Outcome:
        if rest[:4] == ["SESSION", "CHARACTERISTICS", "AS", "TRANSACTION"]:
            self._transaction_modes(rest[4:], session_default=True)
            return Outcome.tag_only("SET")
        if rest[:1] == ["TRANSACTION"]:
            self._transaction_modes(rest[1:])
            return Outcome.tag_only("SET")
        if rest[:2] == ["TIME", "ZONE"]:
            name, values = "timezone", rest[2:]
        elif rest[:1] == ["NAMES"]:
            name, values = "client_encoding", rest[1:]
        elif rest[:1] in (["ROLE"], ["SESSION"]):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"SET {' '.join(rest[:2])} is not supported")
        else:
            if "TO" in rest:
                split = rest.index("TO")
            elif "=" in rest:
                split = rest.index("=")
            else:
                raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{rest[-1] if rest else "SET"}"')
            name, values = _name(rest[:split]), rest[split + 1:]
        value = None if values in (["DEFAULT"], ["LOCAL"]) else _value(values)
        self._apply_read_mode(name, value)
        before = dict(self.settings.values)
        changes = self.settings.set(name, value)
        outcome = Outcome([], [], "SET", parameter_changes=changes)
        outcome.changed_keys = [key for key in set(before) | set(self.settings.values)
                                if before.get(key) != self.settings.values.get(key)]
        outcome.previous = before
        return outcome

    def _transaction_modes(self, rest: list[str], session_default: bool = False) -> None:
        position = 0
        while position < len(rest):
            if rest[position] == ",":
                position += 1
            elif rest[position:position + 2] == ["ISOLATION", "LEVEL"]:
                level = rest[position + 2:position + 4]
                if level in (["READ", "COMMITTED"], ["READ", "UNCOMMITTED"]):
                    self.settings.set("transaction_isolation", " ".join(level))  # raises 0A000
                if level == ["SERIALIZABLE"]:
                    self.settings.set("transaction_isolation", "serializable")   # raises 0A000
                if level != ["REPEATABLE", "READ"]:
                    raise SqlError(errors.SYNTAX_ERROR, "syntax error in isolation level")
                position += 4
            elif rest[position:position + 2] == ["READ", "WRITE"]:
                position += 2
            elif rest[position:position + 2] == ["READ", "ONLY"]:
                self._set_read_only(session_default)
                position += 2
            elif rest[position:position + 2] in (["NOT", "DEFERRABLE"],):
                position += 2
            else:
                raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{rest[position]}"')

    def _set_read_only(self, session_default: bool) -> None:
        """SET TRANSACTION READ ONLY in a block (pg_dump's): every later statement of the block that
        writes fails with 25006 and fails the block, so nothing it wrote can commit. Outside a
        block it does nothing (PostgreSQL only warns); as a session default it is 0A000."""
        if session_default:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "read-only transactions are supported only through "
                                                         "SET TRANSACTION READ ONLY inside a block")
        txn = self.session.transaction
        if txn is None:
            return
        if txn.has_writes:
            raise SqlError(errors.ACTIVE_SQL_TRANSACTION, "transaction read-write mode must be set before any query")
        self._read_only_txn = txn

    def _in_read_only_block(self) -> bool:
        txn = self.session.transaction
        return txn is not None and txn is self._read_only_txn

    def _reset(self, rest: list[str]) -> Outcome:
        if rest == ["ALL"]:
            self._apply_read_mode(session_mod.READ_MODE_SETTING, None)
            self._apply_read_mode(session_mod.WRITE_FORWARDING_SETTING, None)
            return Outcome([], [], "RESET", parameter_changes=self.settings.reset_all())
        name = "timezone" if rest == ["TIME", "ZONE"] else _name(rest)
        self._apply_read_mode(name, None)
        return Outcome([], [], "RESET", parameter_changes=self.settings.set(name, None))

    def apply_startup_options(self, options: str) -> None:
        """The startup packet's `options` (libpq's PGOPTIONS): `-c name=value` or `--name=value`
        settings, applied as SET would; raises SqlError for a malformed or refused one."""
        for name, value in parse_startup_options(options):
            self._apply_read_mode(name, value)
            self.settings.set(name, value)

    def _apply_read_mode(self, name: str, value: str | None) -> None:
        """quorumdb.read_mode and quorumdb.write_forwarding reach the backend view
        (compute_node/sessions/session.py); other settings are only stored."""
        if name.lower() == session_mod.WRITE_FORWARDING_SETTING and hasattr(self.backend, "write_forwarding"):
            mode = "off" if value is None or value.lower() == "default" else value.lower()
            if mode not in session_mod.WRITE_FORWARDING_MODES:
                raise SqlError(errors.INVALID_PARAMETER_VALUE,
                               f'invalid value for parameter "{session_mod.WRITE_FORWARDING_SETTING}": "{value}"',
                               hint=f"Available values: {', '.join(session_mod.WRITE_FORWARDING_MODES)}.")
            self.backend.write_forwarding = mode
            return
        if name.lower() != session_mod.READ_MODE_SETTING or not hasattr(self.backend, "session_read_mode"):
            return
        mode = None if value is None or value.lower() == "default" else value.lower()
        if mode is not None and mode not in session_mod.READ_MODES:
            raise SqlError(errors.INVALID_PARAMETER_VALUE,
                           f'invalid value for parameter "{session_mod.READ_MODE_SETTING}": "{value}"',
                           hint=f"Available values: {', '.join(session_mod.READ_MODES)}.")
        self.backend.session_read_mode = mode

    def _discard(self, rest: list[str]) -> Outcome:
        if rest == ["ALL"]:
            if self.transaction_status != "I":
                raise SqlError(errors.ACTIVE_SQL_TRANSACTION, "DISCARD ALL cannot run inside a transaction block")
            changes = self.settings.reset_all()
            self._apply_read_mode(session_mod.READ_MODE_SETTING, None)
            self._apply_read_mode(session_mod.WRITE_FORWARDING_SETTING, None)
            self._deallocate(None)
            return Outcome([], [], "DISCARD ALL", parameter_changes=changes)
        if rest in (["PLANS"], ["SEQUENCES"], ["TEMP"], ["TEMPORARY"]):
            return Outcome.tag_only(f"DISCARD {rest[0]}")
        raise SqlError(errors.SYNTAX_ERROR, "syntax error in DISCARD")


def parse_startup_options(options: str) -> list[tuple[str, str]]:
    """(name, value) pairs of a PostgreSQL startup `options` string: words split at unescaped
    whitespace (a backslash escapes the next character), each `-c name=value`, `-cname=value`
    or `--name=value`, as the server's command line takes them."""
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for char in options:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(words):
        word = words[position]
        if word == "-c" and position + 1 < len(words):
            setting, position = words[position + 1], position + 2
        elif word.startswith("-c") and len(word) > 2:
            setting, position = word[2:], position + 1
        elif word.startswith("--") and len(word) > 2:
            setting, position = word[2:], position + 1
        else:
            raise SqlError(errors.SYNTAX_ERROR, f'invalid command-line argument for server process: {word}',
                           hint="Startup options take the form -c name=value or --name=value.")
        name, equals, value = setting.partition("=")
        if not equals or not name:
            raise SqlError(errors.SYNTAX_ERROR, f'-c {setting} requires a value')
        pairs.append((name.replace("-", "_").lower(), value))
    return pairs


def _unquote_name(token: str) -> str:
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1].replace('""', '"')
    return token.lower()


def _name(tokens: list[str]) -> str:
    if not tokens:
        raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
    parts = [_unquote_name(token) for token in tokens if token != "."]
    if len(parts) * 2 - 1 != len(tokens) and len(tokens) != 1:
        raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[1]}"')
    return ".".join(parts)


def _value(tokens: list[str]) -> str:
    if not tokens:
        raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
    values: list[str] = []
    current = ""
    for token in tokens:
        if token == ",":
            values.append(current)
            current = ""
        elif token.startswith("'") or token[:2].upper() == "E'":
            body = token[token.index("'") + 1:-1]
            current += body.replace("''", "'")
        elif token.startswith('"'):
            current += token[1:-1].replace('""', '"')
        else:
            current += token.lower() if token.isalpha() else token
    values.append(current)
    return ", ".join(values)
