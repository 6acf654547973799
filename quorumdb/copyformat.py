"""COPY's statement, options and data formats (text and CSV), as PostgreSQL defines them (pure).

Theory of operation
-------------------
Nothing here reads a socket, a file or a table: the PostgreSQL endpoint (compute_node/pgwire/
server.py), the gRPC Copy call (compute_node/service.py) and qsql's `\\copy` (tools/qsql.py)
all use the same three pieces, so a file written by one is read back identically by the others.

  parse_statement(sql)  `COPY table [(cols)] FROM STDIN | TO STDOUT [[WITH] options]` and
                        `COPY (query) TO STDOUT ...`, with the option list in both of PostgreSQL's
                        spellings: `WITH (FORMAT csv, HEADER true)` and the pre-9.0 one psql's
                        `\\copy` and old tools send (`WITH CSV HEADER`, `DELIMITER ','`, ...).
                        Options are checked as PostgreSQL's ProcessCopyOptions checks them; an
                        option we parse but do not implement is 0A000 naming it (never ignored).
                        A server-side file or PROGRAM is refused (42501, as PostgreSQL refuses
                        it to a user without file privileges): there are no server files here.
  CopyReader            bytes in (in CopyData-sized pieces, split anywhere, even inside a UTF-8
                        character), records out: (line number, [str | None, ...]). It checks the
                        column count (22P04), decodes UTF-8 (22021), un-escapes text format
                        (\\N, \\t, \\n, \\\\, octal \\ooo, hex \\xhh, an escaped newline), parses CSV
                        quoting (fields may span lines) with FORCE_NOT_NULL / FORCE_NULL, skips
                        or matches the HEADER line, and stops at the end marker `\\.`. Its buffer holds at most one unfinished
                        record, bounded by COPY_LINE_BYTES_MAX.
  encode_row(values)    one record of text or CSV output (what COPY TO sends per row).

Line numbers count records as PostgreSQL's do (the header is line 1), so an error can say
`COPY t, line 5001` exactly as PostgreSQL would for the same input.
"""
from __future__ import annotations

import codecs
import dataclasses
import re
from typing import Iterator

from quorumdb import errors, limits, sqllex
from quorumdb.errors import SqlError


# Options of PostgreSQL (16 and 17) that QuorumDB does not implement: refused by name.
_UNSUPPORTED_OPTIONS = {"default", "on_error", "log_verbosity", "oids"}
_KNOWN_OPTIONS = {"format", "header", "delimiter", "null", "quote", "escape", "freeze", "encoding", "force_quote",
                  "force_not_null", "force_null"}
ALL_COLUMNS = "*"  # FORCE_QUOTE * (and FORCE_NOT_NULL / FORCE_NULL *, as PostgreSQL 17 takes them)
_TEXT_BAD_DELIMITERS = "\\.abcdefghijklmnopqrstuvwxyz0123456789"
_TRUE_WORDS = ("true", "on", "1", "yes")
_FALSE_WORDS = ("false", "off", "0", "no")


@dataclasses.dataclass(frozen=True)
class CopyOptions:
    format: str = "text"          # text | csv
    header: bool | str = False    # False, True or "match" (COPY FROM only)
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'
    freeze: bool = False          # accepted; see docs/POSTGRES.md (rows obey ordinary snapshots)
    # CSV only: columns (names, or ALL_COLUMNS) whose values COPY TO always quotes, whose unquoted
    # NULL string COPY FROM reads as a string, whose quoted NULL string it reads as NULL.
    force_quote: tuple[str, ...] | str = ()
    force_not_null: tuple[str, ...] | str = ()
    force_null: tuple[str, ...] | str = ()

    @property
    def csv(self) -> bool:
        return self.format == "csv"


@dataclasses.dataclass(frozen=True)
class CopyStatement:
    direction: str                 # "from" (client -> table) or "to" (table/query -> client)
    table: str | None              # None for COPY (query) TO
    columns: tuple[str, ...] | None
    query: str | None              # the SELECT of COPY (query) TO STDOUT
    options: CopyOptions

    @property
    def target_name(self) -> str:
        return self.table if self.table is not None else "query"


def is_copy(sql: str) -> bool:
    """Whether sql is a COPY statement. Asked of every Query and Parse, so it lexes only text that
    starts with COPY or with a comment (the lexer tokenizes the whole statement)."""
    head = sql.lstrip()
    if head[:4].upper() != "COPY" and head[:2] not in ("--", "/*"):
        return False
    return sqllex.leading_words(sql, 1) == ["COPY"]


# --- the statement ------------------------------------------------------------------------
class _Tokens:
    """The significant tokens of a statement (no spaces, comments or a trailing `;`)."""

    def __init__(self, sql: str):
        self.sql = sql
        significant = [t for t in sqllex.tokens(sql) if t.kind not in (sqllex.SPACE, sqllex.COMMENT)]
        while significant and significant[-1].kind == sqllex.SEMICOLON:
            significant.pop()
        self.items = [(t.kind, sql[t.start:t.end]) for t in significant]
        self.spans = [(t.start, t.end) for t in significant]
        self.position = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.position + offset
        return self.items[index] if index < len(self.items) else None

    def word(self, offset: int = 0) -> str:
        item = self.peek(offset)
        return item[1].upper() if item is not None and item[0] == sqllex.WORD else ""

    def take(self) -> tuple[str, str]:
        item = self.peek()
        if item is None:
            raise SqlError(errors.SYNTAX_ERROR, "syntax error at end of input")
        self.position += 1
        return item

    def expect(self, text: str) -> None:
        item = self.take()
        if item[1].upper() != text:
            raise _syntax(item[1])

    def at_end(self) -> bool:
        return self.position >= len(self.items)


def _syntax(near: str) -> SqlError:
    return SqlError(errors.SYNTAX_ERROR, f'syntax error at or near "{near}"')


def _name(item: tuple[str, str]) -> str:
    kind, text = item
    if kind == sqllex.IDENT:
        return text[1:-1].replace('""', '"')
    if kind == sqllex.WORD:
        return text.lower()
    raise _syntax(text)


def _string(item: tuple[str, str]) -> str:
    kind, text = item
    if kind == sqllex.STRING or (kind == sqllex.OTHER_STRING and text[:1] in "eE"):
        return sqllex.string_value(text)
    raise _syntax(text)


def parse_statement(sql: str) -> CopyStatement:
    """A COPY statement; SqlError (42601 syntax, 0A000 unsupported, 42501 server file, 22023
    bad option value) for anything else."""
    tokens = _Tokens(sql)
    tokens.expect("COPY")
    table = query = None
    columns: tuple[str, ...] | None = None
    binary = False
    if tokens.word() == "BINARY":  # pre-7.3 spelling: COPY BINARY t ...
        tokens.take()
        binary = True
    if tokens.peek() is not None and tokens.peek()[1] == "(":
        query = _query_text(tokens)
    else:
        table = _table_name(tokens)
        if tokens.peek() is not None and tokens.peek()[1] == "(":
            columns = tuple(_paren_names(tokens))
    direction_word = tokens.take()[1].upper()
    if direction_word not in ("FROM", "TO"):
        raise _syntax(direction_word)
    direction = direction_word.lower()
    if query is not None and direction == "from":
        raise _syntax("FROM")
    _target(tokens, direction)
    options = _options(tokens)
    if binary:
        options["format"] = options.get("format", "binary")
    if not tokens.at_end():
        if tokens.word() == "WHERE":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "COPY FROM ... WHERE is not supported",
                           hint="Load the rows, then DELETE the unwanted ones, or filter the input.")
        raise _syntax(tokens.peek()[1])
    return CopyStatement(direction, table, columns, query, validate_options(options, direction))


def _query_text(tokens: _Tokens) -> str:
    start_index = tokens.position
    depth = 0
    while True:
        kind, text = tokens.take()
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth == 0:
                break
    start = tokens.spans[start_index][1]
    end = tokens.spans[tokens.position - 1][0]
    inner = tokens.sql[start:end].strip()
    if sqllex.leading_words(inner, 1)[:1] not in (["SELECT"], ["VALUES"], ["TABLE"], ["WITH"]):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "COPY (query) TO supports SELECT, VALUES and TABLE queries only")
    return inner


def _table_name(tokens: _Tokens) -> str:
    name = _name(tokens.take())
    if tokens.peek() is not None and tokens.peek()[1] == ".":
        tokens.take()
        schema, name = name, _name(tokens.take())
        if schema != "public":
            raise SqlError(errors.INVALID_SCHEMA_NAME, f'schema "{schema}" does not exist')
    return name


def _paren_names(tokens: _Tokens) -> list[str]:
    tokens.expect("(")
    names = [_name(tokens.take())]
    while tokens.peek() is not None and tokens.peek()[1] == ",":
        tokens.take()
        names.append(_name(tokens.take()))
    tokens.expect(")")
    return names


def _target(tokens: _Tokens, direction: str) -> None:
    word = tokens.word()
    if word in ("STDIN", "STDOUT"):
        tokens.take()
        return
    if word == "PROGRAM":
        raise SqlError(errors.INSUFFICIENT_PRIVILEGE, f"COPY {'FROM' if direction == 'from' else 'TO'} PROGRAM is not "
                       "allowed: QuorumDB runs no programs on its servers",
                       hint="Anyone can COPY to stdout or from stdin. psql's \\copy command also works for anyone.")
    item = tokens.take()
    if item[0] in (sqllex.STRING, sqllex.OTHER_STRING):
        raise SqlError(errors.INSUFFICIENT_PRIVILEGE, f"COPY {'from' if direction == 'from' else 'to'} a file is not "
                       "allowed: QuorumDB's servers have no files for clients",
                       hint="Anyone can COPY to stdout or from stdin. psql's \\copy command also works for anyone.")
    raise _syntax(item[1])


def _options(tokens: _Tokens) -> dict[str, object]:
    """Raw (name -> value) options, new style `[WITH] (name value, ...)` or the old keywords."""
    if tokens.word() == "WITH":
        tokens.take()
    options: dict[str, object] = {}

    def put(name: str, value: object) -> None:
        if name in options:
            raise SqlError(errors.SYNTAX_ERROR, "conflicting or redundant options")
        options[name] = value

    if tokens.peek() is not None and tokens.peek()[1] == "(":
        tokens.take()
        while True:
            item = tokens.take()
            name = _name(item) if item[0] in (sqllex.WORD, sqllex.IDENT) else None
            if name is None:
                raise _syntax(item[1])
            value: object = True
            nxt = tokens.peek()
            if nxt is not None and nxt[1] not in (",", ")"):
                value = _option_value(tokens)
            put(name, value)
            sep = tokens.take()
            if sep[1] == ")":
                break
            if sep[1] != ",":
                raise _syntax(sep[1])
        return options
    while not tokens.at_end() and tokens.word() != "WHERE":
        word = tokens.word()
        if not word:
            raise _syntax(tokens.peek()[1])
        tokens.take()
        if word in ("DELIMITER", "NULL", "QUOTE", "ESCAPE", "ENCODING"):
            if tokens.word() == "AS":
                tokens.take()
            put(word.lower(), _string(tokens.take()))
        elif word == "CSV":
            put("format", "csv")
        elif word == "BINARY":
            put("format", "binary")
        elif word == "HEADER":
            put("header", True)
        elif word == "FREEZE":
            put("freeze", True)
        elif word == "OIDS":
            put("oids", True)
        elif word == "FORCE":
            what = tokens.take()[1].upper()
            if what == "NOT":
                tokens.expect("NULL")
                what = "NOT_NULL"
            if what not in ("QUOTE", "NULL", "NOT_NULL"):
                raise _syntax(what)
            if tokens.peek() is not None and tokens.peek()[1] == "*":
                tokens.take()
                put("force_" + what.lower(), ALL_COLUMNS)
            else:
                names = [_name(tokens.take())]
                while tokens.peek() is not None and tokens.peek()[1] == ",":
                    tokens.take()
                    names.append(_name(tokens.take()))
                put("force_" + what.lower(), tuple(names))
        else:
            raise _syntax(word)
    return options


def _option_value(tokens: _Tokens) -> object:
    kind, text = tokens.peek()
    if text == "*":
        tokens.take()
        return ALL_COLUMNS
    if text == "(":  # a column list: FORCE_QUOTE (a, b)
        return tuple(_paren_names(tokens))
    tokens.take()
    if kind in (sqllex.STRING, sqllex.OTHER_STRING):
        return _string((kind, text))
    if kind == sqllex.NUMBER:
        return text
    if kind in (sqllex.WORD, sqllex.IDENT):
        return _name((kind, text))
    if text in ("+", "-") and tokens.peek() is not None and tokens.peek()[0] == sqllex.NUMBER:
        return text + tokens.take()[1]
    raise _syntax(text)


def _boolean(name: str, value: object) -> bool:
    if value is True:
        return True
    word = str(value).lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise SqlError(errors.SYNTAX_ERROR, f"{name} requires a Boolean value")


def _one_byte(name: str, value: str) -> str:
    if len(value) != 1 or len(value.encode("utf-8")) != 1:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"COPY {name} must be a single one-byte character")
    return value


def validate_options(raw: dict[str, object], direction: str) -> CopyOptions:
    """CopyOptions from raw option values, with PostgreSQL's checks and SQLSTATEs."""
    for name in raw:
        if name in _UNSUPPORTED_OPTIONS:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'COPY option "{name.upper()}" is not supported')
        if name not in _KNOWN_OPTIONS:
            raise SqlError(errors.SYNTAX_ERROR, f'option "{name}" not recognized')
    format_name = str(raw.get("format", "text")).lower()
    if format_name == "binary":
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "COPY FORMAT binary is not supported",
                       hint="Use FORMAT text or FORMAT csv.")
    if format_name not in ("text", "csv"):
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f'COPY format "{format_name}" not recognized')
    csv = format_name == "csv"
    for name in ("delimiter", "null", "quote", "escape", "encoding"):
        if name in raw and not isinstance(raw[name], str):
            raise SqlError(errors.SYNTAX_ERROR, f"{name} requires a parameter")
    header: bool | str = False
    if "header" in raw:
        value = raw["header"]
        if isinstance(value, str) and value.lower() == "match":
            if direction == "to":
                raise SqlError(errors.FEATURE_NOT_SUPPORTED, 'cannot use "match" with HEADER in COPY TO')
            header = "match"
        else:
            header = _boolean("header", value)
    delimiter = _one_byte("delimiter", raw["delimiter"]) if "delimiter" in raw else ("," if csv else "\t")
    null = raw["null"] if "null" in raw else ("" if csv else "\\N")
    if not csv and ("quote" in raw or "escape" in raw):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       f"COPY {'quote' if 'quote' in raw else 'escape'} available only in CSV mode")
    quote = _one_byte("quote", raw["quote"]) if "quote" in raw else '"'
    escape = _one_byte("escape", raw["escape"]) if "escape" in raw else quote
    freeze = _boolean("freeze", raw["freeze"]) if "freeze" in raw else False
    if freeze and direction == "to":
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "COPY FREEZE cannot be used with COPY TO")
    forced = {}
    for name in ("force_quote", "force_not_null", "force_null"):
        if name not in raw:
            continue
        value = raw[name]
        if not isinstance(value, tuple) and value != ALL_COLUMNS:
            raise SqlError(errors.SYNTAX_ERROR, f'argument to option "{name}" must be a list of column names')
        spelled = name.replace("_", " ")
        if not csv:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"COPY {spelled} available only in CSV mode")
        if name == "force_quote" and direction == "from":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "COPY force quote only available using COPY TO")
        if name != "force_quote" and direction == "to":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"COPY {spelled} only available using COPY FROM")
        forced[name] = value
    if "encoding" in raw:
        encoding = re.sub(r"[^a-z0-9]", "", str(raw["encoding"]).lower())
        if encoding not in ("utf8", "unicode"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"COPY ENCODING '{raw['encoding']}' is not supported: data is always UTF8")
    if delimiter in "\r\n":
        raise SqlError(errors.INVALID_PARAMETER_VALUE, "COPY delimiter cannot be newline or carriage return")
    if "\r" in null or "\n" in null:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, "COPY null representation cannot use newline or carriage return")
    if not csv and delimiter in _TEXT_BAD_DELIMITERS:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f'COPY delimiter cannot be "{delimiter}"')
    if csv and delimiter == quote:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, "COPY delimiter and quote must be different")
    if delimiter in null:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, "COPY delimiter must not appear in the NULL specification")
    if csv and quote in null:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, "CSV quote character must not appear in the NULL specification")
    return CopyOptions(format_name, header, delimiter, null, quote, escape, freeze, **forced)


def forced_positions(options: CopyOptions, option: str, columns: list[str]) -> frozenset[int]:
    """Positions among `columns` that the FORCE_* option `option` names; 42P10 for a column the
    COPY does not reference (checked before any data moves)."""
    value = getattr(options, option)
    if value == ALL_COLUMNS:
        return frozenset(range(len(columns)))
    positions = set()
    for name in value:
        if name not in columns:
            raise SqlError(errors.INVALID_COLUMN_REFERENCE, f'{option.upper()} column "{name}" not referenced by COPY')
        positions.add(columns.index(name))
    return frozenset(positions)


# --- reading ------------------------------------------------------------------------------
Record = tuple[int, list]   # (line number, fields: str or None)

_TEXT_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_TEXT_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.)|$)", re.DOTALL)


def copy_error(sqlstate: str, message: str, hint: str = "") -> SqlError:
    return SqlError(sqlstate, message, hint=hint)


class CopyReader:
    """Incremental reader of COPY FROM data: feed() bytes, get records; finish() at CopyDone.

    `columns` are the names of the columns being loaded (their count is checked on every
    record; HEADER MATCH compares them). Errors are SqlError with the record's line number in
    `line` (the caller words the CONTEXT).
    """

    def __init__(self, options: CopyOptions, columns: list[str]):
        self.options = options
        self.columns = columns
        self.line = 0                       # records read so far (the header counts)
        self.ended = False                  # the end marker \. was read
        self._force_not_null = forced_positions(options, "force_not_null", columns)
        self._force_null = forced_positions(options, "force_null", columns)
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._pending = ""
        self._crlf: bool | None = None      # text format: line ending of the first line
        delimiter = re.escape(options.delimiter)
        self._text_split = re.compile(rf"\\.|{delimiter}", re.DOTALL)
        special = re.escape(options.delimiter + options.quote + options.escape) + r"\r\n"
        self._csv_plain = re.compile(rf"[^{special}]*")
        quoted_special = re.escape(options.quote + options.escape)
        self._csv_quoted = re.compile(rf"[^{quoted_special}]*")

    def feed(self, data: bytes) -> list[Record]:
        if self.ended:
            return []  # after \. the rest is ignored, as PostgreSQL ignores it
        try:
            self._pending += self._decoder.decode(data)
        except UnicodeDecodeError as error:
            raise self._at_line(SqlError(errors.CHARACTER_NOT_IN_REPERTOIRE, _bad_utf8(error)), self.line + 1) from None
        records = self._records(final=False)
        if len(self._pending) > limits.COPY_LINE_BYTES_MAX:
            raise self._at_line(SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                                         f"COPY line is longer than {limits.COPY_LINE_BYTES_MAX} bytes"),
                                self.line + 1)
        return records

    def finish(self) -> list[Record]:
        if self.ended:
            return []
        try:
            self._pending += self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise self._at_line(SqlError(errors.CHARACTER_NOT_IN_REPERTOIRE, _bad_utf8(error)), self.line + 1) from None
        return self._records(final=True)

    @staticmethod
    def _at_line(error: SqlError, line: int) -> SqlError:
        error.line = line  # type: ignore[attr-defined]
        return error

    def _records(self, final: bool) -> list[Record]:
        out: list[Record] = []
        if self.options.csv:
            self._csv_records(final, out)
        else:
            self._text_records(final, out)
        return out

    # text format ----------------------------------------------------------------------
    def _text_records(self, final: bool, out: list[Record]) -> None:
        text = self._pending
        start = 0
        length = len(text)
        while start < length and not self.ended:
            end = text.find("\n", start)
            while end > start and _escaped_at(text, end, start):
                end = text.find("\n", end + 1)  # a backslash before the newline: it is data
            if end < 0:
                if not final:
                    break
                end = length
                line_text = text[start:]
                start = length
            else:
                line_text = text[start:end]
                if self._crlf is None:
                    self._crlf = line_text.endswith("\r") and not _escaped_at(text, end - 1, start)
                if self._crlf:
                    if not line_text.endswith("\r"):
                        raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT, "literal newline found in data",
                                                       'Use "\\n" to represent newline.'), self.line + 1)
                    line_text = line_text[:-1]
                start = end + 1
            self.line += 1
            self._text_line(line_text, out)
        self._pending = text[start:] if not self.ended else ""

    def _text_line(self, line: str, out: list[Record]) -> None:
        if line == "\\.":
            self.ended = True
            self.line -= 1
            return
        if "\\" in line:
            fields_raw = self._split_escaped(line)
        else:
            if "\r" in line:
                raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT, "literal carriage return found in data",
                                               'Use "\\r" to represent carriage return.'), self.line)
            fields_raw = line.split(self.options.delimiter)
        if self._header_line(fields_raw, out):
            return
        null = self.options.null
        fields = [None if raw == null else (_unescape(raw, self.line) if "\\" in raw else raw) for raw in fields_raw]
        self._check_width(fields)
        out.append((self.line, fields))

    def _split_escaped(self, line: str) -> list[str]:
        fields, field_start = [], 0
        for match in self._text_split.finditer(line):
            token = match.group()
            if token == self.options.delimiter:
                fields.append(line[field_start:match.start()])
                field_start = match.end()
            elif token == "\\.":
                raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT, "end-of-copy marker corrupt"), self.line)
        fields.append(line[field_start:])
        if any("\r" in _without_escapes(field) for field in fields):
            raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT, "literal carriage return found in data",
                                           'Use "\\r" to represent carriage return.'), self.line)
        return fields

    # CSV format -----------------------------------------------------------------------
    def _csv_records(self, final: bool, out: list[Record]) -> None:
        text = self._pending
        position = 0
        while position < len(text) and not self.ended:
            parsed = self._csv_record(text, position, final)
            if parsed is None:
                break
            fields, quoted, position = parsed
            self.line += 1
            if len(fields) == 1 and not quoted[0] and fields[0] == "\\.":
                self.ended = True
                self.line -= 1
                break
            if self._header_line(fields, out):
                continue
            null = self.options.null
            if self._force_not_null or self._force_null:
                values = [None if value == null and ((not was_quoted and position not in self._force_not_null)
                                                     or position in self._force_null) else value
                          for position, (value, was_quoted) in enumerate(zip(fields, quoted))]
            else:
                values = [None if (not was_quoted and value == null) else value
                          for value, was_quoted in zip(fields, quoted)]
            self._check_width(values)
            out.append((self.line, values))
        self._pending = text[position:] if not self.ended else ""

    def _csv_record(self, text: str, position: int, final: bool):
        """(fields, quoted flags, position after the record) or None when the record is incomplete."""
        options = self.options
        delimiter, quote, escape = options.delimiter, options.quote, options.escape
        fields: list[str] = []
        quoted_flags: list[bool] = []
        length = len(text)
        while True:
            parts: list[str] = []
            quoted = False
            while True:
                match = self._csv_plain.match(text, position)
                parts.append(match.group())
                position = match.end()
                if position >= length:
                    if not final:
                        return None
                    fields.append("".join(parts))
                    quoted_flags.append(quoted)
                    return fields, quoted_flags, position
                char = text[position]
                if char == quote:
                    quoted = True
                    position += 1
                    while True:
                        match = self._csv_quoted.match(text, position)
                        parts.append(match.group())
                        position = match.end()
                        if position >= length:
                            if not final:
                                return None
                            raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT, "unterminated CSV quoted field"),
                                                self.line + 1)
                        char = text[position]
                        if char == escape and escape != quote:
                            if position + 1 >= length:
                                if not final:
                                    return None
                                raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT, "unterminated CSV quoted field"),
                                                    self.line + 1)
                            following = text[position + 1]
                            if following in (quote, escape):
                                parts.append(following)
                                position += 2
                            else:  # an escape before anything else is itself
                                parts.append(char)
                                position += 1
                            continue
                        # the quote: doubled it is data (when it is also the escape), else it closes
                        if escape == quote:
                            if position + 1 >= length and not final:
                                return None  # the next piece decides
                            if position + 1 < length and text[position + 1] == quote:
                                parts.append(quote)
                                position += 2
                                continue
                        position += 1
                        break
                    continue
                if char == escape:  # outside quotes the escape is an ordinary character
                    parts.append(char)
                    position += 1
                    continue
                fields.append("".join(parts))
                quoted_flags.append(quoted)
                if char == delimiter:
                    position += 1
                    break
                # end of the record: \n, \r\n or \r
                if char == "\r":
                    if position + 1 >= length and not final:
                        return None
                    position += 2 if position + 1 < length and text[position + 1] == "\n" else 1
                else:
                    position += 1
                return fields, quoted_flags, position

    # shared -----------------------------------------------------------------------------
    def _header_line(self, fields: list, out: list[Record]) -> bool:
        if self.line != 1 or not self.options.header:
            return False
        if self.options.header == "match":
            if len(fields) != len(self.columns):
                raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT,
                                               f"wrong number of fields in header line: got {len(fields)}, "
                                               f"expected {len(self.columns)}"), self.line)
            for number, (got, expected) in enumerate(zip(fields, self.columns), start=1):
                if got != expected:
                    raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT,
                                                   f'column name mismatch in header line field {number}: got '
                                                   f'"{got}", expected "{expected}"'), self.line)
        return True

    def _check_width(self, fields: list) -> None:
        if len(fields) > len(self.columns):
            raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT, "extra data after last expected column"), self.line)
        if len(fields) < len(self.columns):
            raise self._at_line(copy_error(errors.BAD_COPY_FILE_FORMAT,
                                           f'missing data for column "{self.columns[len(fields)]}"'), self.line)


def _escaped_at(text: str, position: int, start: int) -> bool:
    """Whether text[position] follows an odd run of backslashes (that begins at or after start)."""
    count = 0
    index = position - 1
    while index >= start and text[index] == "\\":
        count += 1
        index -= 1
    return count % 2 == 1


def _without_escapes(field: str) -> str:
    return _TEXT_ESCAPE.sub("", field)


def _unescape(raw: str, line: int) -> str:
    surrogates = False

    def replace(match: re.Match) -> str:
        nonlocal surrogates
        octal, hexa, other = match.groups()
        if octal is not None or hexa is not None:
            value = (int(octal, 8) if octal is not None else int(hexa, 16)) & 0xFF
            if value == 0:
                error = SqlError(errors.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8": 0x00')
                error.line = line  # type: ignore[attr-defined]
                raise error
            if value >= 0x80:
                surrogates = True
                return chr(0xDC00 + value)  # a raw byte, decoded with its neighbours below
            return chr(value)
        if other is None:
            return "\\"  # a backslash at the very end of the data stands for itself
        return _TEXT_ESCAPES.get(other, other)

    value = _TEXT_ESCAPE.sub(replace, raw)
    if surrogates:
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeDecodeError as decode_error:
            error = SqlError(errors.CHARACTER_NOT_IN_REPERTOIRE, _bad_utf8(decode_error))
            error.line = line  # type: ignore[attr-defined]
            raise error from None
    return value


def _bad_utf8(error: UnicodeDecodeError) -> str:
    sequence = error.object[error.start:error.end]
    return 'invalid byte sequence for encoding "UTF8": ' + " ".join(f"0x{byte:02x}" for byte in sequence)


# --- writing ------------------------------------------------------------------------------
_TEXT_OUT = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def encode_row(values: list, options: CopyOptions, force_quote: frozenset[int] = frozenset()) -> str:
    """One record (with its newline) of COPY TO output; values are str (their text output) or
    None; CSV values at the positions in force_quote are quoted whatever they hold."""
    if options.csv:
        return options.delimiter.join(_csv_field(value, options, position in force_quote)
                                      for position, value in enumerate(values)) + "\n"
    return options.delimiter.join(options.null if value is None else _text_field(value, options.delimiter)
                                  for value in values) + "\n"


def header_row(names: list[str], options: CopyOptions) -> str:
    return encode_row(list(names), options)


def _text_field(value: str, delimiter: str) -> str:
    if not any(char in value for char in "\\\b\f\n\r\t\v" + delimiter):
        return value
    return "".join(_TEXT_OUT.get(char, "\\" + char if char == delimiter else char) for char in value)


def _csv_field(value: str | None, options: CopyOptions, forced: bool = False) -> str:
    if value is None:
        return options.null
    quote, escape = options.quote, options.escape
    needs_quotes = (forced or value == options.null or value == "\\." or any(char in value for char in
                    (options.delimiter, quote, escape, "\n", "\r")))
    if not needs_quotes:
        return value
    body = "".join(escape + char if char in (quote, escape) else char for char in value)
    return quote + body + quote


def iter_records(reader: CopyReader, chunks) -> Iterator[Record]:
    """All records of an iterable of byte chunks (tests and qsql)."""
    for chunk in chunks:
        yield from reader.feed(chunk)
    yield from reader.finish()
