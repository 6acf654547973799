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

Statements are split the way psql splits a script (src/fe_utils/psqlscan.l), so qsql, the
PostgreSQL server's simple-query protocol and a script run by psql agree on where each statement
ends: at a `;` outside quotes and comments and outside parentheses, and not inside the
BEGIN ... END body of CREATE FUNCTION/PROCEDURE; whitespace and `--` comments before a
statement's first token are not part of it (psql never sends them; block comments it keeps).
`Splitter` does this incrementally (qsql feeds it a line at a time) and tells what is still open
at the end (psql's prompt shows it); `split_script` and `split_statements` split a whole text.
Whitespace is PostgreSQL's ([ \t\n\r\f]); other characters, and every non-ASCII one, belong to
identifiers or operators exactly as in the server's scanner. Where psql reads differently from
the server, psql's reading is kept (it decides what a script sends): 1e'x' is `1e` then the
standard string 'x' (the server reads 1 and E'x'), and a string is never continued by another
after a newline (psql's scanner never sees the newline between lines).
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

_LETTER = r"A-Za-z_\u0080-\U0010ffff"
# Alternatives in order of how often they occur in SQL, each written so the engine never
# backtracks per character (quoted bodies are unrolled: [^']*(?:''[^']*)*). A word that is really
# the prefix of a string (E'', U&'', B'', X'', N'') steps aside for the string alternatives.
# A number with an exponent marker but no exponent (1e, 2.E+) is one token, as psql reads it:
# the E is not free to start an escape string (1e'\'' is 1e, then the string '\').
_SCANNER = re.compile(
    rf"""(?P<word>(?![eE]'|[uU]&'|[bBxXnN]')[{_LETTER}][{_LETTER}0-9$]*)
    |(?P<space>[ \t\n\r\f]+)
    |(?P<numberfail>(?>(?:\d+(?:\.\d*)?|\.\d+)[eE][+-]?)(?!\d))
    |(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<string>'[^']*(?:''[^']*)*'?)
    |(?P<ident>"[^"]*(?:""[^"]*)*"?)
    |(?P<param>\$\d+)
    |(?P<comment>--[^\n\r]*)
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
         "number": NUMBER, "word": WORD, "semicolon": SEMICOLON, "other": OTHER,
         "numberfail": OTHER}
_BLANK = (SPACE, COMMENT)


class Token(NamedTuple):
    kind: str
    start: int
    end: int   # exclusive


def tokens(sql: str) -> list[Token]:
    """Tokens that cover sql exactly, in order."""
    return [Token(kind, start, end) for kind, start, end in _spans(sql)]


def _spans(sql: str, position: int = 0):
    """(kind, start, end) of every token from position (a token boundary), in order (tokens()
    without the named tuples)."""
    length = len(sql)
    kinds = _KIND
    while position < length:
        for m in _SCANNER.finditer(sql, position):
            group = m.lastgroup
            if group == "block":
                start = m.start()
                position = min(_block_comment_end(sql, start), length)
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
    """Where the block comment opening at position ends; len(sql) + 1 if it is still open."""
    depth, length = 0, len(sql)
    while position < length:
        opening = sql.find("/*", position)
        closing = sql.find("*/", position)
        if closing < 0:
            return length + 1
        if 0 <= opening < closing:
            depth += 1
            position = opening + 2
        else:
            depth -= 1
            position = closing + 2
            if depth == 0:
                return position
    return length + 1


# --- statement splitting, as psql does it --------------------------------------------------
# What is open at the end of a text: the statement cannot be complete before it closes.
OPEN_NONE, OPEN_STRING, OPEN_QUOTED_IDENT, OPEN_DOLLAR, OPEN_COMMENT, OPEN_PAREN = (
    "none", "string", "quoted_identifier", "dollar_quote", "block_comment", "parenthesis")

# psql's heuristic for SQL-standard routine bodies: in a statement that starts CREATE [OR REPLACE]
# FUNCTION|PROCEDURE, BEGIN ... END (and CASE ... END inside it) hide the `;` they contain.
_ROUTINE_WORDS = {"create": "c", "function": "f", "procedure": "p", "or": "o", "replace": "r"}
_STRIP = " \t\n\r\f"
_FRESH = (-1, False, 0, 0, 0, "")


class Split(NamedTuple):
    statements: list[str]   # each complete statement as psql sends it: first token .. its `;`
    rest: str               # the unterminated rest, from its first token ("" when none)
    open: str               # what is open at the end of rest (OPEN_*)


class Splitter:
    """Splits text fed in pieces (lines, or any chunks) into statements, exactly as psql does.

    A statement is the text from its first token (whitespace and `--` comments before it are
    dropped; a block comment counts as a token) through the `;` that ends it. Feeding a text
    in any number of pieces gives the same statements as feeding it whole: each feed rescans
    only the tail, from the last point where appended text cannot change the tokens before it
    (the start of the trailing run of tokens not separated by whitespace); the text before it
    is only kept, so a long statement fed a line at a time costs time linear in its length.
    (A single token left open across many lines, a long string or dollar quote, is rescanned
    from its start at each feed.)
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the pending text (psql's \\r)."""
        self._held: list[str] = []   # the pending text before the tail, never rescanned
        self._held_size = 0
        self._tail = ""              # the pending text from where the next feed rescans
        # The split state at the start of the tail and at the end: the pending statement's first
        # token (its offset in held + tail; -1: none yet), whether it has a token besides
        # comments, parenthesis depth, BEGIN depth, words seen, and the routine words among the
        # first four (psql's CREATE FUNCTION heuristic).
        self._state = _FRESH
        self._state_now = _FRESH
        self._open = OPEN_NONE

    @property
    def pending(self) -> str:
        """The unfinished statement, from its first token ("" when there is none)."""
        start = self._state_now[0]
        return ("".join(self._held) + self._tail)[start:] if start >= 0 else ""

    def has_pending(self) -> bool:
        """True when the unfinished statement has begun (a token, if only a block comment)."""
        return self._state_now[0] >= 0

    def pending_is_blank(self) -> bool:
        """True when the unfinished statement holds nothing but comments."""
        return not self._state_now[1]

    @property
    def buffered(self) -> int:
        """How many characters the splitter holds (the pending statement and blanks before it)."""
        return self._held_size + len(self._tail)

    @property
    def open(self) -> str:
        """What is open at the end of the text fed so far (OPEN_*)."""
        return self._open

    def feed(self, text: str) -> list[str]:
        """Add text; the statements it completed, each as psql sends it (with its `;`)."""
        held = self._held
        buffer, complete = self._scan(text)
        statements = []
        for start, end, _ in complete:
            # Only the first statement can have begun before this feed (start < 0: in held).
            statements.append(buffer[start:end] if start >= 0 else "".join(held)[start:] + buffer[:end])
        return statements

    def _scan(self, text: str, settle: bool = True) -> tuple[str, list[tuple[int, int, bool]]]:
        """Add text; the scanned buffer (tail + text) and, for each completed statement, (start,
        end, has a token besides comments) in it, `;` included (start < 0: in the held text).
        settle=False when nothing will be fed after: the whole rest stays the tail."""
        buffer = self._tail + text
        offset = self._held_size      # a position in buffer + offset = one in held + buffer
        start, meaningful, parens, begins, count, routine = self._state
        body = _routine(routine)
        complete: list[tuple[int, int, bool]] = []
        cut = 0
        resume, resume_state = 0, self._state
        after_space = True
        last = None
        for kind, begin, end in _spans(buffer):
            last = kind, begin, end
            if kind is SPACE:
                if settle:
                    resume, resume_state = begin, (start, meaningful, parens, begins, count, routine)
                    after_space = True
                continue
            if after_space and settle:
                resume, resume_state = begin, (start, meaningful, parens, begins, count, routine)
                after_space = False
            if kind is COMMENT and buffer[begin] == "-":
                continue
            if start < 0:
                start = begin + offset
            if kind is SEMICOLON:
                if parens == 0 and begins == 0:
                    complete.append((start - offset, end, meaningful))
                    start, meaningful, parens, begins, count, routine = _FRESH
                    body = False
                    cut, offset = end, -end   # positions now count from after the `;`
                    after_space = True   # nothing after a `;` can change the tokens before it
                continue
            meaningful = meaningful or kind is not COMMENT
            if kind is OTHER:
                char = buffer[begin]
                if char == "(":
                    parens += 1
                elif char == ")" and parens:
                    parens -= 1
            elif kind is WORD:
                if count < 4:
                    routine += _ROUTINE_WORDS.get(buffer[begin:end].lower(), " ")
                    body = _routine(routine)
                count += 1
                if body and parens == 0:
                    word = buffer[begin:end].lower()
                    if word == "begin" or (word == "case" and begins):
                        begins += 1
                    elif word == "end" and begins:
                        begins -= 1
        if cut > resume:
            resume, resume_state = cut, _FRESH
        if complete:
            self._held = [buffer[cut:resume]] if resume > cut else []
        elif resume:
            self._held.append(buffer[:resume])
        self._held_size = resume + offset
        self._tail = buffer[resume:]
        self._state = resume_state
        self._state_now = (start, meaningful, parens, begins, count, routine)
        self._open = _open_at_end(buffer, last, parens)
        return buffer, complete


def _routine(words: str) -> bool:
    """True when a statement's first words are CREATE [OR REPLACE] FUNCTION|PROCEDURE."""
    return words[:2] in ("cf", "cp") or words in ("corf", "corp")


def _open_at_end(sql: str, last, parens: int) -> str:
    """What the last token leaves open at the end of sql (OPEN_*)."""
    if last is not None and last[2] == len(sql):
        kind, start, end = last
        text = sql[start:end]
        if kind is STRING or kind is OTHER_STRING:
            if text[0] == "$":
                tag = text[:text.index("$", 1) + 1]
                if len(text) < 2 * len(tag) or not text.endswith(tag):
                    return OPEN_DOLLAR
            elif text[0] in "eE":
                body = re.sub(r"\\.", "", text[2:], flags=re.DOTALL)
                if body.endswith("\\") or body.count("'") % 2 == 0:
                    return OPEN_STRING
            elif text.count("'") % 2:
                return OPEN_STRING
        elif kind is IDENT:
            if text.count('"') % 2:
                return OPEN_QUOTED_IDENT
        elif kind is COMMENT and text.startswith("/*"):
            if _block_comment_end(sql, start) > len(sql):
                return OPEN_COMMENT
    return OPEN_PAREN if parens else OPEN_NONE


def split_script(sql: str) -> Split:
    """A whole text split as psql splits a script (see Splitter)."""
    splitter = Splitter()
    statements = splitter.feed(sql)
    return Split(statements, splitter.pending, splitter.open)


def statement_spans(sql: str) -> list[tuple[int, int]]:
    """(start, end) in sql of each statement split as psql does (see Splitter): from its first
    token to just before its `;`; statements with nothing but comments left out; an
    unterminated rest is the last."""
    splitter = Splitter()
    _, complete = splitter._scan(sql, settle=False)
    spans = [(start, end - 1) for start, end, meaningful in complete if meaningful]
    if not splitter.pending_is_blank():
        spans.append((len(sql) - len(splitter.pending), len(sql)))
    return spans


def split_statements(sql: str) -> list[str]:
    """The statements of a script split as psql does (see statement_spans), each without its `;`
    and the whitespace around it."""
    return [sql[start:end].strip(_STRIP) for start, end in statement_spans(sql)]


def is_blank(sql: str) -> bool:
    """True when sql holds nothing but whitespace and comments."""
    return all(kind is SPACE or kind is COMMENT for kind, _, _ in _spans(sql))


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
