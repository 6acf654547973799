"""SQL text -> statements: sqlglot (PostgreSQL dialect) plus transaction control.

The whole string is tokenized and split at `;` first, and every statement is parsed
before any runs, so a syntax error anywhere runs nothing (as PostgreSQL's simple
query protocol). Transaction control (BEGIN, START TRANSACTION, COMMIT, END,
ROLLBACK, ABORT) is recognised from its words here because sqlglot does not parse
all of its spellings. Statements outside the supported surface are 0A000; text that
is not a statement at all is 42601, with PostgreSQL's `syntax error at or near "x"`.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import re

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from quorumdb import errors, limits, sqllex
from quorumdb.errors import SqlError

# sqlglot logs a warning when it falls back to an opaque Command; we report those as 0A000.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

class _Parser(Postgres.Parser):
    """sqlglot's PostgreSQL parser with two readings changed to keep what the text says:

    * `INTERVAL '1 day 02:03:00'` becomes CAST('1 day 02:03:00' AS INTERVAL): sqlglot splits the
      string into a number and a unit and drops what does not fit (the time here), and the
      literal keeps its position in the text (the statement cache lifts it like any string);
    * `date_part('field', x)` stays a call to date_part (sqlglot makes it EXTRACT, whose result
      type differs: numeric, not double precision).
    """

    FUNCTION_PARSERS = {**Postgres.Parser.FUNCTION_PARSERS}
    FUNCTION_PARSERS.pop("DATE_PART", None)

    def _parse_interval(self, require_interval: bool = True, parse_function_unit: bool = True):
        if (self._curr is not None and self._curr.token_type == TokenType.INTERVAL and self._next is not None
                and self._next.token_type == TokenType.STRING):
            after = self._tokens[self._index + 2] if self._index + 2 < len(self._tokens) else None
            if after is None or after.text.upper() not in self.dialect.VALID_INTERVAL_UNITS:
                self._advance()
                literal = self._parse_primary()
                return self.expression(exp.Cast(this=literal, to=exp.DataType.build("interval")))
        return super()._parse_interval(require_interval, parse_function_unit)


class Dialect(Postgres):
    """The dialect every QuorumDB statement is parsed with (see _Parser)."""
    Parser = _Parser


SUPPORTED_STATEMENTS = (exp.Select, exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter,
                        exp.Union, exp.Intersect, exp.Except, exp.Values, exp.TruncateTable)

# First words of PostgreSQL commands we do not implement: 0A000, not a syntax error.
_COMMAND_WORDS = {
    "ALTER", "TRUNCATE", "SET", "SHOW", "RESET", "GRANT", "REVOKE", "COPY", "EXPLAIN", "VACUUM", "ANALYZE",
    "ANALYSE", "LOCK", "PREPARE", "EXECUTE", "DEALLOCATE", "DO", "CALL", "COMMENT", "DISCARD", "LISTEN",
    "NOTIFY", "UNLISTEN", "VALUES", "WITH", "TABLE", "MERGE", "REINDEX", "CLUSTER", "CHECKPOINT", "DECLARE",
    "FETCH", "CLOSE", "MOVE", "REFRESH", "SECURITY", "IMPORT", "LOAD", "SAVEPOINT", "RELEASE", "PREPARE",
    "CREATE", "DROP", "INSERT", "UPDATE", "DELETE", "SELECT",
}


class TransactionAction(enum.Enum):
    BEGIN = "BEGIN"
    COMMIT = "COMMIT"
    ROLLBACK = "ROLLBACK"


@dataclasses.dataclass(frozen=True)
class TransactionControl:
    action: TransactionAction
    tag: str = ""  # the command tag PostgreSQL answers (START TRANSACTION for that spelling)

    @property
    def command_tag(self) -> str:
        return self.tag or self.action.value


@dataclasses.dataclass(frozen=True)
class Explain:
    """EXPLAIN [ANALYZE] statement: the executor prints the plan it would run."""
    statement: exp.Expression
    analyze: bool = False


@dataclasses.dataclass(frozen=True)
class Savepoint:
    """SAVEPOINT name, RELEASE [SAVEPOINT] name, ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name."""
    action: str   # SAVEPOINT, RELEASE or ROLLBACK TO
    name: str


@dataclasses.dataclass(frozen=True)
class DeclareCursor:
    """DECLARE name [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR query (the session runs the query)."""
    name: str
    statement: exp.Expression
    hold: bool = False


@dataclasses.dataclass(frozen=True)
class FetchCursor:
    """FETCH / MOVE [NEXT | FORWARD [n | ALL] | n | ALL] [FROM | IN] name; count None = ALL."""
    name: str
    count: int | None
    move: bool = False


@dataclasses.dataclass(frozen=True)
class CloseCursor:
    name: str | None   # None: CLOSE ALL


@dataclasses.dataclass(frozen=True)
class Utility:
    """VACUUM / ANALYZE (accepted, nothing to do: storage reclaims versions itself and the
    planner keeps no statistics) and DROP SEQUENCE, which sqlglot does not parse with a list."""
    command: str                       # 'VACUUM', 'ANALYZE', 'DROP SEQUENCE', 'CREATE SEQUENCE'
    names: tuple[str, ...]
    if_exists: bool = False            # DROP ... IF EXISTS; CREATE SEQUENCE IF NOT EXISTS
    options: tuple = ()                # CREATE SEQUENCE: (option, int value or type name) pairs


Statement = (TransactionControl | Explain | Savepoint | DeclareCursor | FetchCursor | CloseCursor | Utility
             | exp.Expression)


def parse_script(sql: str) -> list[Statement]:
    return [statement for statement, _ in parse_script_spans(sql)]


def parse_script_spans(sql: str) -> list[tuple[Statement, int]]:
    """Each statement with the offset of its text in `sql` (positions in its tree are relative to it).

    The script is cut where psql would cut it (quorumdb.sqllex, the one SQL lexer), so every client
    and protocol agrees on where a statement ends; sqlglot tokenizes each statement for its parser."""
    statements: list[tuple[Statement, int]] = []
    for start, end in sqllex.statement_spans(sql):
        piece = sql[start:end]
        try:
            tokens = sqlglot.tokenize(piece, read="postgres")
        except TokenError as error:
            raise SqlError(errors.SYNTAX_ERROR, f"syntax error: {_first_line(str(error))}") from None
        if any(token.token_type == TokenType.SEMICOLON for token in tokens):
            # A `;` psql does not split at (inside parentheses or a routine body): PostgreSQL's
            # grammar has no place for it either.
            raise SqlError(errors.SYNTAX_ERROR, 'syntax error at or near ";"')
        if tokens:
            text = piece[tokens[0].start:tokens[-1].end + 1]
            statements.append((_parse_statement(text, tokens), start + tokens[0].start))
    return statements


def _parse_statement(text: str, tokens: list) -> Statement:
    words = [token.text.upper() for token in tokens]
    control = _transaction_control(words)
    if isinstance(control, Savepoint):
        return _parse_rollback_to(text)
    if control is not None:
        return control
    if words[0] in ("SAVEPOINT", "RELEASE"):
        return _parse_savepoint(text)
    if words[0] == "DECLARE":
        return _parse_declare(text)
    if words[0] in ("FETCH", "MOVE"):
        return _parse_fetch(text)
    if words[0] == "CLOSE":
        return _parse_close(text)
    if words[0] == "EXPLAIN":
        return _parse_explain(text, tokens, words)
    if words[0] == "CREATE" and "SEQUENCE" in words[1:3]:
        # sqlglot drops AS type and OWNED BY and reads NO CYCLE as CYCLE: parsed here instead
        return _parse_create_sequence(tokens, words)
    if words[0] in ("VACUUM", "ANALYZE", "ANALYSE") or words[:2] == ["DROP", "SEQUENCE"]:
        # sqlglot's tokenizer swallows the rest of a command it does not know as one string
        rest_text = text[tokens[0].end + 1 - tokens[0].start:]
        try:
            tokens = tokens[:1] + sqlglot.tokenize(rest_text, read="postgres")
        except TokenError as error:
            raise SqlError(errors.SYNTAX_ERROR, f"syntax error: {_first_line(str(error))}") from None
        return _parse_utility(tokens, [token.text.upper() for token in tokens])
    if words[0] == "ALTER":
        # What pg_dump writes that sqlglot reads only as an opaque Command.
        utility = _parse_alter_utility(tokens, words)
        if utility is not None:
            return utility
    if len(text) > limits.STATEMENT_BYTES_MAX:
        raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                       f"statement of {len(text)} bytes exceeds the limit of {limits.STATEMENT_BYTES_MAX} bytes")
    if words[:3] == ["CREATE", "INDEX", "ASYNC"] or words[:4] == ["CREATE", "UNIQUE", "INDEX", "ASYNC"]:
        async_token = tokens[words.index("ASYNC")]  # DSQL's asynchronous index build: built synchronously here
        text = text[:async_token.start - tokens[0].start] + text[async_token.end + 1 - tokens[0].start:]
    overriding = None
    if words[0] == "INSERT" and "OVERRIDING" in words:
        # INSERT ... OVERRIDING {SYSTEM | USER} VALUE (sqlglot does not parse it): cut it out and
        # hand the choice to the executor on the tree.
        at = words.index("OVERRIDING")
        if words[at + 1:at + 3] not in (["SYSTEM", "VALUE"], ["USER", "VALUE"]):
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[at].text}"')
        overriding = words[at + 1].lower()
        base = tokens[0].start
        text = text[:tokens[at].start - base] + text[tokens[at + 2].end + 1 - base:]
    if words[0] not in _COMMAND_WORDS and words[0] != "(":
        raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[0].text}"')
    try:
        statement = sqlglot.parse_one(text, read=Dialect)
    except ParseError as error:
        detail = error.errors[0] if error.errors else {}
        near = detail.get("highlight") or ""
        if near:
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{near}"') from None
        raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input") from None
    except TokenError as error:
        raise SqlError(errors.SYNTAX_ERROR, f"syntax error: {_first_line(str(error))}") from None
    if isinstance(statement, exp.Subquery) and isinstance(statement.this, (exp.Select, exp.Union)):
        return statement
    if overriding is not None and isinstance(statement, exp.Insert):
        statement.set("overriding", overriding)
    if isinstance(statement, SUPPORTED_STATEMENTS):
        return statement
    if words[0] == "COPY":  # its data travels beside the statement, so it has calls of its own
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "COPY is not supported as an ordinary statement",
                       hint="Send COPY ... FROM STDIN / TO STDOUT through the PostgreSQL endpoint (psql's \\copy, "
                            "psycopg's cursor.copy()), the gRPC Copy call (client.copy()) or qsql's \\copy.")
    if words[0] in _COMMAND_WORDS:
        shown = " ".join(words[:2]) if words[0] in ("CREATE", "DROP", "ALTER") and len(words) > 1 else words[0]
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{shown} is not supported")
    raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[0].text}"')


_WORD = re.compile(r'\s*(?:"(?P<quoted>(?:[^"]|"")*)"|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)'
                   r'|(?P<number>[+-]?\d+)|(?P<other>\S))')


@dataclasses.dataclass(frozen=True)
class _Word:
    text: str       # upper case for keywords, as written for a quoted name
    name: str       # what the word names as an identifier
    start: int      # offset in the statement's text
    quoted: bool = False


def _words_of(text: str) -> list[_Word]:
    """The words of a cursor or savepoint command (sqlglot keeps their arguments as one string)."""
    words = []
    position = 0
    while position < len(text) and text[position:].strip():
        match = _WORD.match(text, position)
        if match is None:
            break
        if match.group("quoted") is not None:
            name = match.group("quoted").replace('""', '"')
            words.append(_Word(name, name, match.start("quoted") - 1, True))
        else:
            raw = match.group(match.lastgroup)
            words.append(_Word(raw.upper(), raw.lower(), match.start(match.lastgroup)))
        position = match.end()
    return words


def _name(word: _Word) -> str:
    if not word.quoted and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", word.name):
        raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{word.name}"')
    return word.name


def _near(words: list[_Word], index: int) -> SqlError:
    if index < len(words):
        return SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{words[index].name}"')
    return SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")


def _parse_savepoint(text: str) -> Savepoint:
    words = _words_of(text)
    rest = words[1:]
    if words[0].text == "RELEASE" and len(rest) > 1 and rest[0].text == "SAVEPOINT" and not rest[0].quoted:
        rest = rest[1:]
    if len(rest) != 1:
        raise _near(rest, 1)
    return Savepoint(words[0].text, _name(rest[0]))


def _parse_rollback_to(text: str) -> Savepoint:
    words = _words_of(text)
    rest = [w for w in words[1:] if w.quoted or w.text not in ("WORK", "TRANSACTION")]
    assert rest and rest[0].text == "TO"
    rest = rest[1:]
    if rest and rest[0].text == "SAVEPOINT" and not rest[0].quoted and len(rest) > 1:
        rest = rest[1:]
    if len(rest) != 1:
        raise _near(rest, 1)
    return Savepoint("ROLLBACK TO", _name(rest[0]))


def _parse_close(text: str) -> CloseCursor:
    words = _words_of(text)
    if len(words) == 2 and words[1].text == "ALL" and not words[1].quoted:
        return CloseCursor(None)
    if len(words) != 2:
        raise _near(words, 2)
    return CloseCursor(_name(words[1]))


def _parse_declare(text: str) -> DeclareCursor:
    words = _words_of(text)
    if len(words) < 2:
        raise _near(words, 1)
    name = _name(words[1])
    keys = [w.text if not w.quoted else "" for w in words]
    position = 2
    while position < len(words) and keys[position] in ("BINARY", "ASENSITIVE", "INSENSITIVE", "NO", "SCROLL"):
        if keys[position] == "SCROLL":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "SCROLL cursors are not supported (cursors only move forward)")
        if keys[position] == "BINARY":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "BINARY cursors are not supported")
        if keys[position] == "NO" and keys[position + 1:position + 2] != ["SCROLL"]:
            raise _near(words, position + 1)
        position += 2 if keys[position] == "NO" else 1
    if keys[position:position + 1] != ["CURSOR"]:
        raise _near(words, position)
    position += 1
    hold = keys[position:position + 2] == ["WITH", "HOLD"]
    if hold or keys[position:position + 2] == ["WITHOUT", "HOLD"]:
        position += 2
    if keys[position:position + 1] != ["FOR"] or position + 1 >= len(words):
        raise _near(words, position if keys[position:position + 1] != ["FOR"] else position + 1)
    query_text = text[words[position + 1].start:]
    try:
        query_tokens = sqlglot.tokenize(query_text, read="postgres")
    except TokenError as error:
        raise SqlError(errors.SYNTAX_ERROR, f"syntax error: {_first_line(str(error))}") from None
    query = _parse_statement(query_text, query_tokens)
    if not isinstance(query, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery)):
        raise _near(words, position + 1)
    return DeclareCursor(name, query, hold)


def _parse_fetch(text: str) -> FetchCursor:
    words = _words_of(text)
    move = words[0].text == "MOVE"
    rest = words[1:]
    keys = [w.text if not w.quoted else "" for w in rest]
    count: int | None = 1
    if keys and (keys[0] in ("NEXT", "FORWARD", "ALL") or _is_count(keys[0])):
        first = keys[0]
        rest, keys = rest[1:], keys[1:]
        if first == "ALL":
            count = None
        elif first == "FORWARD" and keys and keys[0] == "ALL":
            count = None
            rest, keys = rest[1:], keys[1:]
        elif first == "FORWARD" and keys and _is_count(keys[0]):
            count = int(keys[0])
            rest, keys = rest[1:], keys[1:]
        elif _is_count(first):
            count = int(first)
    elif keys and keys[0] in ("PRIOR", "FIRST", "LAST", "ABSOLUTE", "RELATIVE", "BACKWARD"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"FETCH {keys[0]} is not supported (cursors only move forward)")
    if keys and keys[0] in ("FROM", "IN"):
        rest = rest[1:]
    if len(rest) != 1:
        raise _near(rest, 1)
    if count is not None and count < 0:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       "FETCH with a negative count is not supported (cursors only move forward)")
    return FetchCursor(_name(rest[0]), count, move)


def _is_count(word: str) -> bool:
    return bool(re.fullmatch(r"[+-]?\d{1,18}", word))


_VACUUM_OPTIONS = {"FULL", "FREEZE", "VERBOSE", "ANALYZE", "ANALYSE"}


def _parse_utility(tokens: list, words: list[str]) -> Utility:
    """VACUUM [options] [names], ANALYZE [VERBOSE] [names], DROP SEQUENCE [IF EXISTS] names
    [CASCADE | RESTRICT]. Names are identifiers separated by commas (a column list after a
    table name is refused: per-column statistics mean nothing here either)."""
    if words[0] == "DROP":
        command, position = "DROP SEQUENCE", 2
    else:
        command, position = ("VACUUM" if words[0] == "VACUUM" else "ANALYZE"), 1
    if_exists = False
    if command == "DROP SEQUENCE" and words[position:position + 2] == ["IF", "EXISTS"]:
        if_exists, position = True, position + 2
    if command != "DROP SEQUENCE":
        if position < len(words) and words[position] == "(":
            if ")" not in words[position:]:
                raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
            position = words.index(")", position) + 1
        while position < len(words) and words[position] in _VACUUM_OPTIONS:
            position += 1
    if command == "DROP SEQUENCE" and words[-1:] and words[-1] in ("CASCADE", "RESTRICT"):
        tokens, words = tokens[:-1], words[:-1]
    names: list[str] = []
    expect_name = True
    for token, word in zip(tokens[position:], words[position:]):
        if expect_name and token.token_type in (TokenType.VAR, TokenType.IDENTIFIER) or \
                expect_name and word.isidentifier():
            quoted = token.token_type == TokenType.IDENTIFIER
            names.append(token.text if quoted else token.text.lower())
            expect_name = False
        elif not expect_name and word == ",":
            expect_name = True
        elif not expect_name and word == "." and names and names[-1] == "public":
            names.pop()
            expect_name = True
        else:
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{token.text}"')
    if expect_name and (names or command == "DROP SEQUENCE"):
        raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
    return Utility(command, tuple(names), if_exists)


_SEQUENCE_TYPES = {"SMALLINT": "smallint", "INT2": "smallint", "INTEGER": "integer", "INT": "integer",
                   "INT4": "integer", "BIGINT": "bigint", "INT8": "bigint"}


def _parse_create_sequence(tokens: list, words: list[str]) -> Utility:
    """CREATE SEQUENCE [IF NOT EXISTS] name [AS type] [INCREMENT [BY] n] [MINVALUE n | NO MINVALUE]
    [MAXVALUE n | NO MAXVALUE] [START [WITH] n] [CACHE n] [[NO] CYCLE] [OWNED BY NONE]; CYCLE,
    OWNED BY a column, TEMP and UNLOGGED are 0A000."""
    if words[1] != "SEQUENCE":
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"CREATE {words[1]} SEQUENCE is not supported")
    position = 2
    if_not_exists = words[2:5] == ["IF", "NOT", "EXISTS"]
    if if_not_exists:
        position = 5
    if position >= len(words):
        raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
    name_token = tokens[position]
    if name_token.token_type not in (TokenType.VAR, TokenType.IDENTIFIER) and not words[position].isidentifier():
        raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{name_token.text}"')
    name = name_token.text if name_token.token_type == TokenType.IDENTIFIER else name_token.text.lower()
    position += 1
    if words[position:position + 1] == ["."]:
        if name != "public" or position + 1 >= len(words):
            raise SqlError(errors.INVALID_SCHEMA_NAME, f'schema "{name}" does not exist')
        name_token = tokens[position + 1]
        name = name_token.text if name_token.token_type == TokenType.IDENTIFIER else name_token.text.lower()
        position += 2
    options = _sequence_options(tokens, words, position, identity=False)
    return Utility("CREATE SEQUENCE", (name,), if_not_exists, tuple(options))


def _parse_explain(text: str, tokens: list, words: list[str]) -> Explain:
    rest_text = text[tokens[0].end + 1 - tokens[0].start:]
    try:
        tokens = tokens[:1] + sqlglot.tokenize(rest_text, read="postgres")
    except TokenError as error:
        raise SqlError(errors.SYNTAX_ERROR, f"syntax error: {_first_line(str(error))}") from None
    offset = tokens[0].end + 1 - tokens[0].start
    words = [token.text.upper() for token in tokens]
    text = text[:offset] + rest_text
    position = 1
    analyze = False
    if position < len(words) and words[position] == "(":
        close = words.index(")", position) if ")" in words[position:] else len(words)
        options = [w for w in words[position + 1:close] if w not in (",",)]
        analyze = "ANALYZE" in options
        unknown = [w for w in options if w not in ("ANALYZE", "VERBOSE", "COSTS", "TRUE", "FALSE", "ON", "OFF")]
        if unknown:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"EXPLAIN option {unknown[0]} is not supported")
        position = close + 1
    while position < len(words) and words[position] in ("ANALYZE", "ANALYSE", "VERBOSE"):
        analyze = analyze or words[position] != "VERBOSE"
        position += 1
    if position >= len(words):
        raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
    rest = tokens[position:]
    inner = _parse_statement(rest_text[rest[0].start:], rest)
    if isinstance(inner, (TransactionControl, Explain)):
        raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{rest[0].text}"')
    return Explain(inner, analyze)


_BEGIN_WORDS = {"BEGIN", "START"}
_COMMIT_WORDS = {"COMMIT", "END"}
_ROLLBACK_WORDS = {"ROLLBACK", "ABORT"}
# Transaction modes DSQL accepts: its only isolation level is REPEATABLE READ (snapshot isolation).
_ACCEPTED_MODES = [["ISOLATION", "LEVEL", "REPEATABLE", "READ"], ["READ", "WRITE"]]


def _transaction_control(words: list[str]) -> TransactionControl | None:
    first = words[0]
    if first == "START":
        if len(words) < 2 or words[1] != "TRANSACTION":
            return None
        rest = words[2:]
    elif first in _BEGIN_WORDS | _COMMIT_WORDS | _ROLLBACK_WORDS:
        rest = words[1:]
        if rest and rest[0] in ("WORK", "TRANSACTION"):
            rest = rest[1:]
    else:
        return None
    if first in _BEGIN_WORDS:
        _check_modes(rest)
        return TransactionControl(TransactionAction.BEGIN, "START TRANSACTION" if first == "START" else "")
    if rest and rest[0] == "TO" and first in _ROLLBACK_WORDS:
        return Savepoint("ROLLBACK TO", "")  # named by _parse_rollback_to (sqlglot's tokens lose case)
    if rest:
        if rest[0] in ("TO", "AND"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{first} {' '.join(rest[:2])} is not supported")
        raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{rest[0]}"')
    if first in _COMMIT_WORDS:
        return TransactionControl(TransactionAction.COMMIT)
    return TransactionControl(TransactionAction.ROLLBACK)


def _check_modes(rest: list[str]) -> None:
    position = 0
    while position < len(rest):
        if rest[position] == ",":
            position += 1
            continue
        for mode in _ACCEPTED_MODES:
            if rest[position:position + len(mode)] == mode:
                position += len(mode)
                break
        else:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"transaction mode {' '.join(rest[position:])} is not supported "
                           "(transactions are REPEATABLE READ, snapshot isolation)")


def _name_at(tokens: list, words: list[str], position: int) -> tuple[str, int]:
    """An object name at `position`, optionally qualified by schema public: (name, next position)."""
    def one(at: int) -> str:
        if at >= len(tokens):
            raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
        token = tokens[at]
        if token.token_type == TokenType.IDENTIFIER:
            return token.text
        if not words[at].replace("_", "a").replace("$", "a").isalnum() or words[at][0].isdigit():
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{token.text}"')
        return token.text.lower()
    name = one(position)
    if words[position + 1:position + 2] == ["."]:
        if name != "public":
            raise SqlError(errors.INVALID_SCHEMA_NAME, f'schema "{name}" does not exist')
        return one(position + 2), position + 3
    return name, position + 1


def _parse_alter_utility(tokens: list, words: list[str]) -> Utility | None:
    """ALTER TABLE|SEQUENCE|INDEX [IF EXISTS] [ONLY] name OWNER TO role; ALTER SEQUENCE [IF EXISTS]
    name OWNED BY {NONE | table.column}; ALTER TABLE [ONLY] name ALTER [COLUMN] column ADD
    GENERATED {ALWAYS | BY DEFAULT} AS IDENTITY [(sequence options)]. None: not one of these."""
    if len(words) < 4 or words[1] not in ("TABLE", "SEQUENCE", "INDEX"):
        return None
    position = 2
    if_exists = words[2:4] == ["IF", "EXISTS"]
    if if_exists:
        position = 4
    if words[position:position + 1] == ["ONLY"] and words[1] == "TABLE":
        position += 1
    if words[-2:] == ["OWNER", "TO"]:
        raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
    if words[-3:-1] == ["OWNER", "TO"]:
        name, after = _name_at(tokens, words, position)
        if after != len(words) - 3:
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[after].text}"')
        role_token = tokens[-1]
        role = role_token.text if role_token.token_type == TokenType.IDENTIFIER else role_token.text.lower()
        return Utility("OWNER TO", (name,), if_exists, (("kind", words[1].lower()), ("role", role)))
    if words[1] == "SEQUENCE" and words[-3:-1] != ["OWNER", "TO"] and "OWNED" in words:
        name, after = _name_at(tokens, words, position)
        if words[after:after + 2] != ["OWNED", "BY"]:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "ALTER SEQUENCE with other options than OWNED BY is not supported")
        after += 2
        if words[after:] == ["NONE"]:
            return Utility("ALTER SEQUENCE OWNED BY", (name,), if_exists, (("owner", None),))
        parts = []
        while after < len(words):
            token = tokens[after]
            parts.append(token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower())
            after += 1
            if after < len(words):
                if words[after] != ".":
                    raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[after].text}"')
                after += 1
        if parts[:1] == ["public"] and len(parts) == 3:
            parts = parts[1:]
        if len(parts) != 2:
            raise SqlError(errors.SYNTAX_ERROR, "OWNED BY names a column as table.column")
        return Utility("ALTER SEQUENCE OWNED BY", (name,), if_exists, (("owner", tuple(parts)),))
    if words[1] == "TABLE" and "IDENTITY" in words and "GENERATED" in words:
        table, after = _name_at(tokens, words, position)
        if words[after:after + 1] != ["ALTER"]:
            return None
        after += 1
        if words[after:after + 1] == ["COLUMN"]:
            after += 1
        column, after = _name_at(tokens, words, after)
        if words[after:after + 3] == ["ADD", "GENERATED", "ALWAYS"]:
            identity, after = "always", after + 3
        elif words[after:after + 4] == ["ADD", "GENERATED", "BY", "DEFAULT"]:
            identity, after = "by default", after + 4
        else:
            return None
        if words[after:after + 2] != ["AS", "IDENTITY"]:
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[min(after, len(tokens) - 1)].text}"')
        after += 2
        options: list[tuple[str, object]] = [("column", column), ("identity", identity)]
        if after < len(words):
            if words[after] != "(" or words[-1] != ")":
                raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[after].text}"')
            options += _sequence_options(tokens[after + 1:-1], words[after + 1:-1], 0, identity=True)
        return Utility("ADD IDENTITY", (table,), if_exists, tuple(options))
    return None


def _sequence_options(tokens: list, words: list[str], position: int, identity: bool) -> list[tuple[str, object]]:
    """Sequence options from `position` to the end: [AS type] [INCREMENT [BY] n] [MINVALUE n | NO
    MINVALUE] [MAXVALUE n | NO MAXVALUE] [START [WITH] n] [CACHE n] [NO CYCLE]; for CREATE SEQUENCE
    also OWNED BY NONE, for an identity column (`identity`) also SEQUENCE NAME n. CYCLE and OWNED
    BY a column are 0A000."""
    options: list[tuple[str, object]] = []
    what = "identity sequences with" if identity else "CREATE SEQUENCE ..."

    def number(at: int) -> tuple[int, int]:
        sign = 1
        if at < len(words) and words[at] in ("-", "+"):
            sign = -1 if words[at] == "-" else 1
            at += 1
        if at >= len(words) or not words[at].isdigit():
            near = tokens[at].text if at < len(tokens) else None
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{near}"' if near
                           else "syntax error at end of input")
        return sign * int(words[at]), at + 1

    while position < len(words):
        word = words[position]
        if identity and words[position:position + 2] == ["SEQUENCE", "NAME"]:
            name, position = _name_at(tokens, words, position + 2)
            options.append(("sequence name", name))
        elif word == "AS" and position + 1 < len(words) and words[position + 1] in _SEQUENCE_TYPES:
            options.append(("as", _SEQUENCE_TYPES[words[position + 1]]))
            position += 2
        elif word in ("INCREMENT", "START", "MINVALUE", "MAXVALUE", "CACHE"):
            position += 1
            if word == "INCREMENT" and words[position:position + 1] == ["BY"]:
                position += 1
            if word == "START" and words[position:position + 1] == ["WITH"]:
                position += 1
            value, position = number(position)
            options.append((word.lower(), value))
        elif word == "NO" and words[position + 1:position + 2] in (["MINVALUE"], ["MAXVALUE"], ["CYCLE"]):
            position += 2
        elif word == "CYCLE":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{what} CYCLE {'are' if identity else 'is'} not supported")
        elif not identity and word == "OWNED" and words[position + 1:position + 3] == ["BY", "NONE"]:
            position += 3
        elif not identity and word == "OWNED":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "CREATE SEQUENCE ... OWNED BY a column is not supported")
        else:
            raise SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{tokens[position].text}"')
    seen = [key for key, _ in options]
    if len(seen) != len(set(seen)):
        raise SqlError(errors.SYNTAX_ERROR, "conflicting or redundant options")
    return options


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text
