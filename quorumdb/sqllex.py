"""The one SQL lexer: PostgreSQL's token boundaries, for everything that must not parse (pure).

Used wherever SQL text is cut or classified before (or instead of) the parser: splitting a script
at `;`, counting and substituting `$n` parameters, the leading words that classify a statement
(BEGIN, SET, ...), and lifting literals out of a statement so that statements differing only in
their constants share one parse (compute_node/sql/statements.py).

It knows what hides a `;`, a `$1` or a literal from the parser: standard strings ('it''s', where
a backslash is an ordinary character: standard_conforming_strings is on), escape strings
(E'it\\'s'), bit/hex/national/Unicode strings (B'', X'', N'', U&''), quoted identifiers
("a;b"), dollar quotes ($$...$$, $tag$...$tag$), line comments (-- ...) and nested block
comments (/* /* */ */), and identifiers that contain `$` (a$1 is one name). An unterminated
string or comment runs to the end of the text; the SQL parser reports it.

One compiled regular expression does the scanning (a Python loop per token, not per
character); nested comments and dollar quotes, which a regular expression cannot close, are
finished by hand.
"""
from __future__ import annotations

import datetime
import decimal
import math
import re
from typing import NamedTuple

# Token kinds.
SPACE, COMMENT, STRING, OTHER_STRING, IDENT, PARAM, NUMBER, WORD, SEMICOLON, OTHER = (
    "space", "comment", "string", "other_string", "ident", "param", "number", "word", "semicolon", "other")

_LETTER = r"A-Za-z_\u0080-\uffff"
# Alternatives in order of how often they occur in SQL, each written so the engine never
# backtracks per character (quoted bodies are unrolled: [^']*(?:''[^']*)*). A word that is really
# the prefix of a string (E'', U&'', B'', X'', N'') steps aside for the string alternatives.
_SCANNER = re.compile(
    rf"""(?P<word>(?![eE]'|[uU]&'|[bBxXnN]')[{_LETTER}][{_LETTER}0-9$]*)
    |(?P<space>\s+)
    |(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<string>'[^']*(?:''[^']*)*'?)
    |(?P<ident>"[^"]*(?:""[^"]*)*"?)
    |(?P<param>\$\d+)
    |(?P<comment>--[^\n]*\n?)
    |(?P<block>/\*)
    |(?P<dollar>\$(?:[{_LETTER}][{_LETTER}0-9]*)?\$)
    |(?P<semicolon>;)
    |(?P<estring>[eE]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*(?:'|\\?\Z))
    |(?P<ustring>[uU]&'[^']*(?:''[^']*)*'?)
    |(?P<xstring>[bBxXnN]'[^']*(?:''[^']*)*'?)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_KIND = {"space": SPACE, "comment": COMMENT, "block": COMMENT, "estring": OTHER_STRING, "ustring": OTHER_STRING,
         "xstring": OTHER_STRING, "string": STRING, "ident": IDENT, "param": PARAM, "dollar": OTHER_STRING,
         "number": NUMBER, "word": WORD, "semicolon": SEMICOLON, "other": OTHER}
_BLANK = (SPACE, COMMENT)


class Token(NamedTuple):
    kind: str
    start: int
    end: int   # exclusive


def tokens(sql: str) -> list[Token]:
    """Tokens that cover sql exactly, in order."""
    return [Token(kind, start, end) for kind, start, end in _spans(sql)]


def _spans(sql: str):
    """(kind, start, end) of every token, in order (tokens() without the named tuples)."""
    position, length = 0, len(sql)
    kinds = _KIND
    while position < length:
        for m in _SCANNER.finditer(sql, position):
            group = m.lastgroup
            if group == "block":
                start = m.start()
                position = _block_comment_end(sql, start)
            elif group == "dollar":
                start, end = m.span()
                close = sql.find(m.group(0), end)
                position = length if close < 0 else close + len(m.group(0))
            else:
                yield kinds[group], m.start(), m.end()
                continue
            # A nested comment or a dollar quote ends where no regular expression can tell:
            # take it whole and scan on after it.
            yield kinds[group], start, position
            break
        else:
            break


def _block_comment_end(sql: str, position: int) -> int:
    depth, length = 0, len(sql)
    while position < length:
        opening = sql.find("/*", position)
        closing = sql.find("*/", position)
        if closing < 0:
            return length
        if 0 <= opening < closing:
            depth += 1
            position = opening + 2
        else:
            depth -= 1
            position = closing + 2
            if depth == 0:
                return position
    return length


def split_statements(sql: str) -> list[str]:
    """The statements of a script, each without its `;`; empty ones (only blanks/comments) dropped."""
    statements: list[str] = []
    begin = 0
    meaningful = False
    for token in tokens(sql):
        if token.kind == SEMICOLON:
            if meaningful:
                statements.append(sql[begin:token.start].strip())
            begin, meaningful = token.end, False
        elif token.kind not in _BLANK:
            meaningful = True
    if meaningful:
        statements.append(sql[begin:].strip())
    return statements


def parameter_count(sql: str) -> int:
    """The highest $n the statement uses (0 for none)."""
    highest = 0
    for token in tokens(sql):
        if token.kind == PARAM:
            highest = max(highest, int(sql[token.start + 1:token.end]))
    return highest


def substitute(sql: str, literals: list[str]) -> str:
    """sql with every $n replaced by literals[n - 1] (the caller checked the count)."""
    parts: list[str] = []
    last = 0
    for token in tokens(sql):
        if token.kind == PARAM:
            number = int(sql[token.start + 1:token.end])
            assert 1 <= number <= len(literals), f"${number} has no value"
            parts.append(sql[last:token.start])
            parts.append(literals[number - 1])
            last = token.end
    parts.append(sql[last:])
    return "".join(parts)


def leading_words(sql: str, count: int = 4) -> list[str]:
    """The first `count` bare words of a statement, upper-cased (comments skipped)."""
    found: list[str] = []
    for token in tokens(sql):
        if token.kind in _BLANK:
            continue
        if token.kind != WORD:
            break
        found.append(sql[token.start:token.end].upper())
        if len(found) == count:
            break
    return found


def words(sql: str) -> list[str]:
    """Every token of a statement that is not blank or a comment, words upper-cased."""
    found = []
    for token in tokens(sql):
        if token.kind in _BLANK:
            continue
        text = sql[token.start:token.end]
        found.append(text.upper() if token.kind == WORD else text)
    return found


# --- literal lifting -------------------------------------------------------------------------
# What stands for a lifted literal in a shape: a character no SQL text contains outside strings
# and comments (which are kept verbatim), so two shapes are equal only if their texts are equal
# around the literals.
NUMBER_MARK = "\x00n"
STRING_MARK = "\x00s"


class Shape(NamedTuple):
    """A script with its numbers and standard strings taken out (see lift_literals)."""
    key: str                           # the text with each lifted literal replaced by its mark
    literals: tuple[Token, ...]        # the lifted literal tokens, in order (offsets into the text)


def lift_literals(sql: str) -> Shape:
    """The script's shape: statements that differ only in their numeric and standard string
    literals have the same key. Other tokens (escape and dollar strings, identifiers, comments,
    whitespace) stay in the key as they are."""
    parts: list[str] = []
    literals: list[Token] = []
    last = 0
    for kind, start, end in _spans(sql):
        if kind is NUMBER or kind is STRING:
            parts.append(sql[last:start])
            parts.append(NUMBER_MARK if kind is NUMBER else STRING_MARK)
            literals.append(Token(kind, start, end))
            last = end
    if not literals:
        return Shape(sql, ())
    parts.append(sql[last:])
    return Shape("".join(parts), tuple(literals))


def string_value(text: str) -> str:
    """The value of a standard string token: its quotes removed, '' read as '."""
    body = text[1:-1] if len(text) >= 2 and text.endswith("'") else text[1:]
    return body.replace("''", "'")


# --- values as SQL literals --------------------------------------------------------------------
def quote_literal(value) -> str:
    """The SQL literal standing for a Python value (the client's and the gRPC API's parameters):
    None -> NULL; bool -> TRUE/FALSE; int, float, Decimal -> a number (NaN/Infinity as
    'NaN'::float8 ...); str -> an untyped string literal (NUL refused: ValueError); bytes ->
    bytea; date/time/datetime -> '<isoformat>'. Other types: TypeError."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return _signed(repr(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "'NaN'::float8"
        if math.isinf(value):
            return "'Infinity'::float8" if value > 0 else "'-Infinity'::float8"
        return _signed(repr(value))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return "'NaN'::numeric" if value.is_nan() else f"'{value}'::numeric"
        return _signed(str(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("a SQL string cannot contain a NUL character")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "'\\x" + bytes(value).hex() + "'::bytea"
    if isinstance(value, datetime.datetime):  # before date: datetime is a date subclass
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"'{value.isoformat()}'"
    raise TypeError(f"cannot pass a {type(value).__name__} as a SQL parameter")


def _signed(text: str) -> str:
    # A space before a minus: `x-$1` with -5 must read `x- -5`, not the comment `x--5`.
    return " " + text if text.startswith("-") else text
