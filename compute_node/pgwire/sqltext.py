"""A PostgreSQL lexer just good enough to split statements and find `$n` parameters (pure).

It knows what hides a `;` or a `$1` from the parser: standard strings ('it''s', where a
backslash is an ordinary character: standard_conforming_strings is on), escape strings
(E'it\\'s'), quoted identifiers ("a;b"), dollar quotes ($$...$$, $tag$...$tag$), line comments
(-- ...) and nested block comments (/* /* */ */), and identifiers that contain `$` (a$1 is one
name). An unterminated string or comment runs to the end of the text; the SQL parser reports it.
"""
from __future__ import annotations

import dataclasses
import re

_IDENT_START = re.compile(r"[A-Za-z_\u0080-\uffff]")
_IDENT_REST = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_PARAM = re.compile(r"\$(\d+)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


@dataclasses.dataclass(frozen=True)
class Token:
    kind: str   # word | param | string | ident | semicolon | comment | space | other
    start: int
    end: int


def tokens(sql: str):
    """Yields tokens that cover sql exactly, in order."""
    position, length = 0, len(sql)
    while position < length:
        ch = sql[position]
        start = position
        if ch in " \t\r\n\f\v":
            while position < length and sql[position] in " \t\r\n\f\v":
                position += 1
            yield Token("space", start, position)
        elif ch == "-" and sql.startswith("--", position):
            end = sql.find("\n", position)
            position = length if end < 0 else end + 1
            yield Token("comment", start, position)
        elif ch == "/" and sql.startswith("/*", position):
            position = _block_comment_end(sql, position)
            yield Token("comment", start, position)
        elif ch == "'":
            position = _quoted_end(sql, position + 1, "'", backslash=False)
            yield Token("string", start, position)
        elif ch in "eE" and sql.startswith("'", position + 1):
            position = _quoted_end(sql, position + 2, "'", backslash=True)
            yield Token("string", start, position)
        elif ch in "bBxXnN" and sql.startswith("'", position + 1):
            position = _quoted_end(sql, position + 2, "'", backslash=False)
            yield Token("string", start, position)
        elif ch in "uU" and sql.startswith("&'", position + 1):
            position = _quoted_end(sql, position + 3, "'", backslash=False)
            yield Token("string", start, position)
        elif ch == '"':
            position = _quoted_end(sql, position + 1, '"', backslash=False)
            yield Token("ident", start, position)
        elif ch == "$":
            param = _PARAM.match(sql, position)
            tag = _DOLLAR_TAG.match(sql, position)
            if param is not None:
                position = param.end()
                yield Token("param", start, position)
            elif tag is not None:
                close = sql.find(tag.group(0), tag.end())
                position = length if close < 0 else close + len(tag.group(0))
                yield Token("string", start, position)
            else:
                position += 1
                yield Token("other", start, position)
        elif ch == ";":
            position += 1
            yield Token("semicolon", start, position)
        elif _IDENT_START.match(ch):
            position = _IDENT_REST.match(sql, position + 1).end()
            yield Token("word", start, position)
        elif ch.isdigit():
            while position < length and (sql[position].isalnum() or sql[position] in "._"):
                position += 1
            yield Token("other", start, position)
        else:
            position += 1
            yield Token("other", start, position)


def _quoted_end(sql: str, position: int, quote: str, backslash: bool) -> int:
    length = len(sql)
    while position < length:
        ch = sql[position]
        if backslash and ch == "\\":
            position += 2
            continue
        if ch == quote:
            if sql.startswith(quote, position + 1):
                position += 2
                continue
            return position + 1
        position += 1
    return length


def _block_comment_end(sql: str, position: int) -> int:
    depth, length = 0, len(sql)
    while position < length:
        if sql.startswith("/*", position):
            depth += 1
            position += 2
        elif sql.startswith("*/", position):
            depth -= 1
            position += 2
            if depth == 0:
                return position
        else:
            position += 1
    return length


def split_statements(sql: str) -> list[str]:
    """The statements of a script, each without its `;`; empty ones (only blanks/comments) dropped."""
    statements: list[str] = []
    begin = 0
    meaningful = False
    for token in tokens(sql):
        if token.kind == "semicolon":
            if meaningful:
                statements.append(sql[begin:token.start].strip())
            begin, meaningful = token.end, False
        elif token.kind not in ("space", "comment"):
            meaningful = True
    if meaningful:
        statements.append(sql[begin:].strip())
    return statements


def parameter_count(sql: str) -> int:
    """The highest $n the statement uses (0 for none)."""
    highest = 0
    for token in tokens(sql):
        if token.kind == "param":
            highest = max(highest, int(sql[token.start + 1:token.end]))
    return highest


def substitute(sql: str, literals: list[str]) -> str:
    """sql with every $n replaced by literals[n - 1] (the caller checked the count)."""
    parts: list[str] = []
    last = 0
    for token in tokens(sql):
        if token.kind == "param":
            number = int(sql[token.start + 1:token.end])
            assert 1 <= number <= len(literals), f"${number} has no value"
            parts.append(sql[last:token.start])
            parts.append(literals[number - 1])
            last = token.end
    parts.append(sql[last:])
    return "".join(parts)


def leading_words(sql: str, count: int = 4) -> list[str]:
    """The first `count` bare words of a statement, upper-cased (comments skipped)."""
    words: list[str] = []
    for token in tokens(sql):
        if token.kind in ("space", "comment"):
            continue
        if token.kind != "word":
            break
        words.append(sql[token.start:token.end].upper())
        if len(words) == count:
            break
    return words


def words(sql: str) -> list[str]:
    """Every token of a statement that is not blank or a comment, words upper-cased."""
    found = []
    for token in tokens(sql):
        if token.kind in ("space", "comment"):
            continue
        text = sql[token.start:token.end]
        found.append(text.upper() if token.kind == "word" else text)
    return found
