"""sqllex splits scripts exactly as real psql does: random scripts, psql's own sends as the oracle.

A tiny PostgreSQL-protocol server inside the test records the text of every simple Query message
psql sends while running a generated script with -f; sqllex's split of the same script, put into
the form psql sends (see `psql_sends`), must be identical, statement for statement. psql is
required: without it the test fails and says how to install it.

The scripts are random sequences of words, numbers, operators, parentheses, `;`, strings of every
kind (with `''`, `\\'`, `;` and other quotes inside), quoted identifiers, dollar quotes and their
near misses, line and nested block comments, spaces and newlines; sometimes two pieces touch
(E'..., a$1, 1a$b$, -- made of two minuses). What psql itself interprets and never sends is left
out: backslash commands and `:name` variables (so no backslash and no colon outside quotes).
Many scripts go into one file, so one psql run checks ~100 at once.

QUORUMDB_LEX_FUZZ_SEED=<n> replays a seed; QUORUMDB_LEX_FUZZ_FILES=<n> runs more files.
"""
from __future__ import annotations

import os
import pathlib
import random
import re
import shutil
import socket
import struct
import subprocess
import threading

import pytest

from quorumdb import sqllex

FILES = int(os.environ.get("QUORUMDB_LEX_FUZZ_FILES", "36"))
SCRIPTS_PER_FILE = 100
PSQL_TIMEOUT_S = 30


# --- a recording PostgreSQL-protocol server -------------------------------------------------
class RecordingServer:
    """Accepts psql's connections on 127.0.0.1; records each simple query's exact text."""

    SSL_REQUEST, GSS_REQUEST, PROTOCOL_3 = 80877103, 80877104, 196608

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.queries: list[str] = []
        self.errors: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(PSQL_TIMEOUT_S)
                try:
                    self._session(connection)
                except (OSError, ConnectionError, ValueError) as error:
                    self.errors.append(repr(error))

    @staticmethod
    def _read(connection: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = connection.recv(count - len(data))
            if not chunk:
                raise ConnectionError("client closed the connection")
            data += chunk
        return data

    @staticmethod
    def _message(kind: bytes, body: bytes = b"") -> bytes:
        return kind + struct.pack("!i", len(body) + 4) + body

    def _session(self, connection: socket.socket) -> None:
        while True:   # the startup packet, after any number of refused encryption requests
            length, code = struct.unpack("!ii", self._read(connection, 8))
            self._read(connection, length - 8)
            if code in (self.SSL_REQUEST, self.GSS_REQUEST):
                connection.sendall(b"N")
                continue
            if code != self.PROTOCOL_3:
                raise ValueError(f"unexpected startup code {code}")
            break
        reply = [self._message(b"R", struct.pack("!i", 0))]
        for name, value in (("server_version", "15.18"), ("server_encoding", "UTF8"),
                            ("client_encoding", "UTF8"), ("standard_conforming_strings", "on"),
                            ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"),
                            ("is_superuser", "off"), ("session_authorization", "fuzz")):
            reply.append(self._message(b"S", name.encode() + b"\0" + value.encode() + b"\0"))
        reply.append(self._message(b"K", struct.pack("!ii", 4242, 2424)))
        reply.append(self._message(b"Z", b"I"))
        connection.sendall(b"".join(reply))
        while True:
            kind = self._read(connection, 1)
            (length,) = struct.unpack("!i", self._read(connection, 4))
            body = self._read(connection, length - 4)
            if kind == b"X":
                return
            if kind != b"Q":
                raise ValueError(f"unexpected message {kind!r}")
            self.queries.append(body[:-1].decode("utf-8"))
            connection.sendall(self._message(b"C", b"SELECT 0\0") + self._message(b"Z", b"I"))


def psql_binary() -> str:
    found = shutil.which("psql") or ("/usr/bin/psql" if os.path.exists("/usr/bin/psql") else None)
    if found is None:
        pytest.fail("psql not found: the lexer fuzz test needs real psql as its oracle; "
                    "run `bash scripts/install-postgres`")
    return found


@pytest.fixture(scope="module")
def server():
    recording = RecordingServer()
    try:
        yield recording
    finally:
        recording.stop()


def run_psql(psql: str, server: RecordingServer, script: pathlib.Path) -> list[str]:
    """The queries psql sends for the script, in order."""
    server.queries = []
    env = dict(os.environ, PGCONNECT_TIMEOUT="10", PGSSLMODE="disable", PGGSSENCMODE="disable",
               PGPASSWORD="", PGOPTIONS="", PGAPPNAME="fuzz", LC_ALL="C.UTF-8")
    for name in ("PGSERVICE", "PGSERVICEFILE", "PGCLIENTENCODING", "PSQLRC"):
        env.pop(name, None)
    completed = subprocess.run(
        [psql, "-X", "-q", "-h", "127.0.0.1", "-p", str(server.port), "-U", "fuzz", "-d", "fuzz",
         "-f", str(script)],
        env=env, capture_output=True, timeout=PSQL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert completed.returncode == 0, f"psql failed ({completed.returncode}): {completed.stderr.decode()}"
    assert not server.errors, server.errors
    return list(server.queries)


# --- what psql sends, from sqllex's split -----------------------------------------------------
def psql_sends(script: str) -> list[str]:
    """The queries psql sends for a script file, computed from sqllex.split_script.

    psql reads the file a line at a time (newline removed) and joins the lines of a statement
    with a newline; an empty line is dropped unless it is inside a string, quoted identifier,
    dollar quote or comment. So: the file's last newline is not part of the text, and a newline
    in whitespace followed by another newline (or by the end) disappears. psql sends every
    complete statement, even one that is only `;`, and at the end of the file the rest if any.
    """
    text = script[:-1] if script.endswith("\n") else script
    split = sqllex.split_script(text)
    pieces = split.statements + ([split.rest] if split.rest else [])
    return [_drop_empty_lines(piece) for piece in pieces]


def _drop_empty_lines(piece: str) -> str:
    parts = []
    for token in sqllex.tokens(piece):
        text = piece[token.start:token.end]
        if token.kind == sqllex.SPACE:
            at_end = token.end == len(piece)
            text = re.sub(r"\n(?=\n)", "", text)
            if at_end:
                text = text.rstrip("\n") if "\n" in text else text
        parts.append(text)
    return "".join(parts)


# --- the generator ----------------------------------------------------------------------------
WORDS = ["select", "from", "where", "t", "a", "b1", "foo_bar", "and", "or", "end", "case", "e",
         "E", "U", "u", "B", "x", "N", "n", "as", "in", "not", "values", "insert", "into",
         "ÿé", "日本", "a$b", "a$1", "x$$", "_$"]
OPERATORS = ["+", "-", "*", "/", "<", ">", "=", "<>", "!=", "~", "!", "@", "#", "%", "^", "&",
             "|", "?", ".", "[", "]", "*/", "-/", "/-", "**"]
NUMBERS = ["1", "42", "3.14", ".5", "1e5", "1e", "2.", "0x1F", "1a", "7_", "12e+3"]
SEPARATORS = ["", " ", " ", " ", "\n", "  ", "\t", "\n\n", " \n ", "\f"]
TAGS = ["", "", "q", "tag", "a1", "_x", "é"]


def _quoted_body(rng: random.Random, quote: str, extra: list[str]) -> str:
    pieces = ["x", "abc", " ", ";", "\n", "--", "/*", "*/", "$$", "$q$", "(", ")", "é",
              "\n\n", quote * 2] + extra
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))


# A bare backslash only inside a construct that hides it from psql; the fragments are built so
# that no quote or comment can close early (which would leave a backslash outside, where psql
# would run it as a command).
def _standard_string(rng):
    return rng.choice(["", "", "", "N", "B", "X", "U&"]) + "'" + _quoted_body(rng, "'", ['"', ":x", "\\"]) + "'"


def _escape_string(rng):
    pieces = ["x", ";", " ", "\n", "''", "\\'", "\\\\", "\\n", '"', "\\;", "$$", "--", "/*", "é"]
    return rng.choice("eE") + "'" + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) + "'"


def _quoted_ident(rng):
    return rng.choice(["", "", "", "U&"]) + '"' + _quoted_body(rng, '"', ["'", ":y", "\\"]) + '"'


def _dollar(rng):
    tag = "$" + rng.choice(TAGS) + "$"
    others = ["'", '"', "$", "$x", "$1$", "$other$", tag[:-1], "$" + tag[1:], "$$" if tag != "$$" else "$a$", "\\"]
    while True:
        body = _quoted_body(rng, "$", others)
        if (body + tag).find(tag) == len(body):
            return tag + body + tag


def _near_miss(rng):
    return rng.choice(["$1", "$2", "a$b", "$ab", "$", "x$1", "$1a", "$a", "$é", "$1$", "a$$", "$_", "1a"])


def _line_comment(rng):
    body = _quoted_body(rng, "-", ["'", '"', "$$", "/*", "\\"]).replace("\n", " ")
    return "--" + body + "\n"


def _closes_at_its_end(comment: str) -> bool:
    """True when the comment opening at 0 closes exactly at the end (scanning as psql does)."""
    depth, position = 0, 0
    while position < len(comment) - 1:
        pair = comment[position:position + 2]
        if pair in ("/*", "*/"):
            depth += 1 if pair == "/*" else -1
            position += 2
            if depth == 0:
                return position == len(comment)
        else:
            position += 1
    return False


def _block_comment(rng, depth=0):
    pieces = ["x", " ", ";", "'", '"', "$$", "\n", "--", "*", "/", "**", "\\", "é", "/x", "x*"]
    while True:
        body = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 5)))
        if depth < 2 and rng.random() < 0.3:
            body += _block_comment(rng, depth + 1) + rng.choice(pieces)
        comment = "/*" + body + "*/"
        if _closes_at_its_end(comment):
            return comment


ROUTINE = "create function f() returns int language sql begin atomic select 1; select case when true then 1 end; end;"

FRAGMENTS = [
    (30, lambda rng: rng.choice(WORDS)),
    (8, lambda rng: rng.choice(NUMBERS)),
    (8, lambda rng: rng.choice(OPERATORS)),
    (10, lambda rng: ";"),
    (6, lambda rng: ","),
    (5, lambda rng: "("),
    (5, lambda rng: ")"),
    (6, _standard_string),
    (4, _escape_string),
    (4, _quoted_ident),
    (5, _dollar),
    (5, _near_miss),
    (3, _line_comment),
    (3, _block_comment),
    (0.3, lambda rng: "; " + ROUTINE),
]
_WEIGHTS = [weight for weight, _ in FRAGMENTS]


def _sticky(char: str) -> bool:
    return char.isalnum() or char in "_$" or ord(char) > 127


def generate_script(rng: random.Random) -> str:
    """One script; its parentheses are balanced or have extra `)` (psql never goes below 0)."""
    parts: list[str] = []
    depth = 0
    for _ in range(rng.randint(1, 25)):
        (_, make), = rng.choices(FRAGMENTS, weights=_WEIGHTS)
        piece = make(rng)
        if piece == "(":
            depth += 1
        elif piece == ")":
            depth -= 1
        if parts and parts[-1] == "" and parts[-2]:
            # Two touching pieces must not make a comment, a quote prefix or one longer name
            # (that could hide a quote's closing or expose a backslash); the near misses cover
            # those on purpose.
            before, after = parts[-2][-1], piece[0]
            if ((_sticky(before) or before == ".") and _sticky(after)) or before in "-/" or after in "-*'\"":
                parts[-1] = " "
        parts.append(piece)
        parts.append(rng.choice(SEPARATORS))
    parts.append(")" * max(0, depth))
    parts.append(rng.choice([";", ";", ";", "", "\n;", " ;\n"]))
    return "".join(parts)


UNTERMINATED = ["'abc; x", "E'ab\\'; ", '"ab; c', "$$ a; b", "$t$ x $$ ;", "/* a; /* b */ ;",
                "(select 1; 2", "'", "E'\\", "$$", "/*", "select 1 -- c;", "'a''", "select 2",
                "U&'x", "B'0", "/* x */"]


def generate_file(rng: random.Random) -> str:
    scripts = [generate_script(rng) for _ in range(SCRIPTS_PER_FILE)]
    text = "\n".join(scripts)
    if rng.random() < 0.5:   # an unterminated construct can only come last: it swallows the rest
        text += rng.choice(["", " ", "\n"]) + rng.choice(UNTERMINATED)
    return text + "\n"


# --- the tests -------------------------------------------------------------------------------
def _first_difference(expected: list[str], got: list[str]) -> str:
    for index, (mine, theirs) in enumerate(zip(expected, got)):
        if mine != theirs:
            return f"query {index}: sqllex {mine!r}\n          psql   {theirs!r}"
    return f"sqllex gives {len(expected)} queries, psql sends {len(got)}"


def _random_chunks(rng: random.Random, text: str) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, len(text) // 3)))
    return [text[start:end] for start, end in zip([0] + cuts, cuts + [len(text)])]


def test_sqllex_splits_random_scripts_as_psql_does(server, tmp_path):
    psql = psql_binary()
    seed = int(os.environ.get("QUORUMDB_LEX_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"lexer fuzz seed {seed} (replay: QUORUMDB_LEX_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    for number in range(FILES):
        script = generate_file(rng)
        path = tmp_path / f"script{number}.sql"
        path.write_text(script, encoding="utf-8")
        got = run_psql(psql, server, path)
        expected = psql_sends(script)
        whole = sqllex.split_script(script)
        for pieces in (script.splitlines(keepends=True), _random_chunks(rng, script)):
            splitter = sqllex.Splitter()
            fed = [statement for piece in pieces for statement in splitter.feed(piece)]
            assert (fed, splitter.pending, splitter.open) == tuple(whole), \
                f"seed {seed}, file {number}: fed in pieces, the split differs"
        if got != expected:
            report = tmp_path / "failing-script.sql"
            report.write_text(script, encoding="utf-8")
            pytest.fail(f"seed {seed}, file {number}: sqllex and psql split differently; script kept "
                        f"in {report}\n{_first_difference(expected, got)}")


@pytest.mark.parametrize("script", [
    "select 1;\n\n  select 2 ;  -- tail; \n\n/* lead */ select (3;\n\n4);\nselect 'a\n\nb';;\n",
    "-- only a comment; \n   \n",
    "select $$a;\n\n$$, E'x\\';', \"q;\"\"\" from t; create function f() begin atomic select 1; end;\nx\n\n",
    "select 1a$b$;$b$; select $1a$$;$$;\n",
    "select 'abc\n\n",
    "select 1; /* c */\n",
    "select 1e'\\'; select 2;\n",              # psql reads 1e as one token: no E'' string here
    "select \U0001F600$c$;$c$; select 3;\n",   # every non-ASCII character is an identifier character
    "select a\u00a0$b$;$b$; select 4;\n",      # ... even a no-break space
    "-- c\rselect 1;\n",                        # a line comment ends at a carriage return
    "E'''\\';' ; a$$$; x$$;$$;\n",              # '' then \' in an escape string; $ inside names
])
def test_psql_sends_what_sqllex_predicts(server, tmp_path, script):
    """Hand-written cases that pin the form psql sends (first token .. `;`, empty lines dropped)."""
    path = tmp_path / "case.sql"
    path.write_text(script, encoding="utf-8")
    assert run_psql(psql_binary(), server, path) == psql_sends(script)
