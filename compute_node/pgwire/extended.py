"""Extended query protocol state of one connection: prepared statements and portals (pure).

Parse stores a statement (its text and declared parameter types); Bind looks it up and turns
each parameter into the SQL literal text it stands for (pgtypes.param_literal), giving a portal:
the statement, its parameters and the result formats. The engine binds the parameters into the
statement it parsed once (compute_node/sql/statements.py); nothing is pasted into the text.
The server shell runs a portal when it is first described or executed and keeps its rows, so
Execute with a row limit hands them out in slices (PortalSuspended between slices).

Errors are SqlErrors with PostgreSQL's codes (26000 unknown statement, 34000 unknown portal,
42P05 / 42P03 duplicates, 08P01 count mismatches); after one, the shell discards messages until
Sync (`skipping`). Portals live until the transaction ends (`end_transaction`), the unnamed
statement and portal until they are replaced. Counts are bounded (limits.PG_*_MAX).

A statement's description (parameter types, result columns) is remembered by its text and
declared parameter types (`remember`), so that a statement parsed again, as drivers do with the
unnamed statement at every execution, starts described; the server re-describes it when the
catalog version it was described at is no longer the node's.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any

from compute_node.sql import pgtypes
from compute_node.pgwire.protocol import Bind, Close, Parse
from quorumdb import errors, limits, sqllex
from quorumdb.errors import SqlError


@dataclasses.dataclass
class PreparedStatement:
    name: str
    sql: str
    param_oids: tuple[int, ...]   # one per parameter; 0 = unspecified
    # Worked out once per statement, not at every Bind/Describe/Execute (the server fills them):
    statements: list[str] = dataclasses.field(default_factory=list)  # sql split at `;` (0 or 1)
    leading_words: list[str] = dataclasses.field(default_factory=list)  # its first two words, upper case
    answered_here: bool | None = None      # SET/SHOW/catalog query: the endpoint answers it, not the engine
    described: Any = None                  # (catalog version, parameter OIDs, columns outcome)

    @property
    def param_count(self) -> int:
        return len(self.param_oids)


@dataclasses.dataclass
class Portal:
    name: str
    statement: PreparedStatement
    params: list[str] | None       # one SQL literal per $n (None: the statement has none)
    result_formats: tuple[int, ...]
    outcome: Any = None            # the shell's result once run
    position: int = 0              # rows already sent
    done: bool = False
    described: Any = None          # the columns a Describe of this portal announced (before it ran)

    def format_of(self, column: int, column_count: int) -> int:
        formats = self.result_formats
        if not formats:
            return 0
        if len(formats) == 1:
            return formats[0]
        if len(formats) != column_count:
            raise SqlError(errors.PROTOCOL_VIOLATION,
                           f"bind message has {len(formats)} result formats but query has {column_count} columns")
        return formats[column]


class ExtendedState:
    def __init__(self, statements_max: int = limits.PG_PREPARED_STATEMENTS_MAX,
                 portals_max: int = limits.PG_PORTALS_MAX, descriptions_max: int = limits.PG_DESCRIPTIONS_MAX):
        self.statements: dict[str, PreparedStatement] = {}
        self.portals: dict[str, Portal] = {}
        self.skipping = False   # an error happened: discard messages until Sync
        self._statements_max = statements_max
        self._portals_max = portals_max
        # (sql, parameter OIDs) -> PreparedStatement.described, least recently used first
        self._descriptions: collections.OrderedDict[tuple[str, tuple[int, ...]], Any] = collections.OrderedDict()
        self._descriptions_max = descriptions_max

    def parse(self, message: Parse) -> PreparedStatement:
        if message.name and message.name in self.statements:
            raise SqlError(errors.DUPLICATE_PREPARED_STATEMENT, f'prepared statement "{message.name}" already exists')
        if len(sqllex.split_statements(message.sql)) > 1:
            raise SqlError(errors.SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement")
        if message.name and len(self.statements) >= self._statements_max:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                           f"too many prepared statements on this connection (at most {self._statements_max})",
                           hint="DEALLOCATE or Close statements you no longer use.")
        used = sqllex.parameter_count(message.sql)
        if used > limits.PG_PARAMETERS_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, f"number of parameters must be between 0 and {limits.PG_PARAMETERS_MAX}")
        oids = tuple(message.param_oids) + (0,) * max(0, used - len(message.param_oids))
        statement = PreparedStatement(message.name, message.sql, oids, sqllex.split_statements(message.sql),
                                      sqllex.leading_words(message.sql, 2))
        key = (message.sql, oids)
        if key in self._descriptions:
            self._descriptions.move_to_end(key)
            statement.described = self._descriptions[key]
        self.statements[message.name] = statement
        return statement

    def remember(self, statement: PreparedStatement) -> None:
        """Keep statement.described for the next Parse of the same text and parameter types."""
        key = (statement.sql, statement.param_oids)
        self._descriptions[key] = statement.described
        self._descriptions.move_to_end(key)
        while len(self._descriptions) > self._descriptions_max:
            self._descriptions.popitem(last=False)

    def statement(self, name: str) -> PreparedStatement:
        statement = self.statements.get(name)
        if statement is None:
            raise SqlError(errors.INVALID_SQL_STATEMENT_NAME,
                           f'prepared statement "{name}" does not exist' if name else "unnamed prepared statement does not exist")
        return statement

    def portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise SqlError(errors.INVALID_CURSOR_NAME, f'portal "{name}" does not exist')
        return portal

    def bind(self, message: Bind) -> Portal:
        statement = self.statement(message.statement)
        if message.portal and message.portal in self.portals:
            raise SqlError(errors.DUPLICATE_CURSOR, f'portal "{message.portal}" already exists')
        if message.portal and len(self.portals) >= self._portals_max:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, f"too many open portals on this connection (at most {self._portals_max})")
        params, formats = message.params, message.param_formats
        if len(formats) not in (0, 1, len(params)):
            raise SqlError(errors.PROTOCOL_VIOLATION,
                           f"bind message has {len(formats)} parameter formats but {len(params)} parameters")
        if len(params) != statement.param_count:
            raise SqlError(errors.PROTOCOL_VIOLATION, f'bind message supplies {len(params)} parameters, but prepared '
                                               f'statement "{statement.name}" requires {statement.param_count}')
        for code in formats + message.result_formats:
            if code not in (0, 1):
                raise SqlError(errors.PROTOCOL_VIOLATION, f"unsupported format code: {code}")
        # A parameter the client left unspecified at Parse has the type Describe announced (what
        # asyncpg encodes binary values as); the declared type wins where there is one.
        described = statement.described[1] if statement.described is not None else ()
        literals = []
        for index, value in enumerate(params):
            format_code = formats[0] if len(formats) == 1 else (formats[index] if formats else 0)
            oid = statement.param_oids[index] or (described[index] if index < len(described) else 0)
            literals.append(pgtypes.param_literal(value, format_code, oid))
        portal = Portal(message.portal, statement, literals if statement.param_count else None,
                        message.result_formats)
        self.portals[message.portal] = portal
        return portal

    def close(self, message: Close) -> None:
        """Closing what does not exist is not an error."""
        if message.kind == "S":
            self.statements.pop(message.name, None)
        else:
            self.portals.pop(message.name, None)

    def deallocate(self, name: str | None) -> None:
        """SQL DEALLOCATE name / DEALLOCATE ALL (None)."""
        if name is None:
            self.statements = {key: value for key, value in self.statements.items() if key == ""}
            return
        if name not in self.statements:
            raise SqlError(errors.INVALID_SQL_STATEMENT_NAME, f'prepared statement "{name}" does not exist')
        del self.statements[name]

    def end_transaction(self) -> None:
        self.portals.clear()
