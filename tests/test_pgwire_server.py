"""The PostgreSQL endpoint with real clients (psycopg 3, pg8000, SQLAlchemy, psql) over the in-memory backend.

No cluster here: tests/pgwire_util.ServerThread runs the real server shell and engine Session over
tests/sql_memory_backend.py; tests/test_pgwire_cluster.py does the same against real processes.
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from compute_node.pgwire import protocol
from tests.pgwire_util import SECRET, ServerThread, serving

PSQL = shutil.which("psql")
# psql comes with Debian's postgresql package (scripts/install-postgres, run by .ci/run).
# A missing psql is a failure, not a skip: these tests are the issue's proof that psql works.
needs_psql = pytest.mark.usefixtures("require_psql")


@pytest.fixture
def require_psql():
    assert PSQL is not None, "psql is not installed: run `bash scripts/install-postgres`"


@pytest.fixture
def server():
    with serving() as started:
        yield started


@pytest.fixture
def make_server():
    started = []

    def make(**config):
        started.append(ServerThread(**config))
        return started[-1]

    yield make
    for one in started:
        one.stop()


def connect(server: ServerThread, **extra) -> psycopg.Connection:
    return psycopg.connect(server.dsn(**extra), autocommit=True)


# --- a raw protocol client, to see exactly what the server sends ------------------------------------
class RawClient:
    def __init__(self, port: int, user: str = "admin"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        body = struct.pack("!I", protocol.PROTOCOL_3_0) + b"user\0" + user.encode() + b"\0\0"
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        self.startup = self.until_ready()

    def send(self, *messages: bytes) -> None:
        self.sock.sendall(b"".join(messages))

    def read(self) -> tuple[bytes, bytes]:
        header = self._exact(5)
        return header[:1], self._exact(struct.unpack("!I", header[1:])[0] - 4)

    def _exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        messages = []
        while True:
            message = self.read()
            messages.append(message)
            if message[0] in (b"Z",):
                return messages
            if message[0] == b"E" and b"SFATAL" in message[1]:
                return messages

    def close(self) -> None:
        self.sock.close()


def msg(code: bytes, body: bytes) -> bytes:
    return code + struct.pack("!I", len(body) + 4) + body


def fields(body: bytes) -> dict[str, str]:
    return {part[:1].decode(): part[1:].decode() for part in body.split(b"\0") if part}


# --- psycopg ---------------------------------------------------------------------------------------
def test_psycopg_parameters_types_and_errors(server):
    with connect(server) as conn:
        assert conn.info.server_version >= 150000
        assert conn.info.parameter_status("standard_conforming_strings") == "on"
        conn.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, price DOUBLE PRECISION, ok BOOLEAN)")
        hostile = "it's'; DROP TABLE items; -- \\ $1 $$"
        conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s)", (1, hostile, 2.5, True))
        conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s)", (-2, None, None, False))
        cursor = conn.execute("SELECT id, name, price, ok FROM items WHERE id = %s", (1,))
        assert cursor.fetchall() == [(1, hostile, 2.5, True)]
        assert [column.type_code for column in cursor.description] == [20, 25, 701, 16]
        assert conn.execute("SELECT name FROM items WHERE id = %s", (-2,)).fetchone() == (None,)
        binary = conn.cursor(binary=True)
        assert binary.execute("SELECT id, price, ok FROM items ORDER BY id").fetchall() == [(-2, None, False), (1, 2.5, True)]
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (2,), "the table survived"
        with pytest.raises(psycopg.errors.UndefinedTable) as caught:
            conn.execute("SELECT * FROM missing")
        assert caught.value.sqlstate == "42P01"
        assert caught.value.diag.severity_nonlocalized == "ERROR"
        assert 'relation "missing" does not exist' in caught.value.diag.message_primary
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            conn.execute("INSERT INTO items VALUES (%s, 'x', 1, true)", (1,))
        assert caught.value.diag.message_detail == "Key (id)=(1) already exists."
        assert conn.execute("SELECT 1").fetchone() == (1,), "the session goes on"


def test_psycopg_transactions_and_status(server):
    with psycopg.connect(server.dsn()) as conn:  # autocommit off: psycopg sends BEGIN
        conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INT)")
        conn.commit()
        conn.execute("INSERT INTO kv VALUES ('a', 1)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM kv").fetchone() == (0,)
        conn.execute("INSERT INTO kv VALUES ('a', 1)")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM nope")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        with conn.transaction():
            conn.execute("INSERT INTO kv VALUES ('b', 2)")
        assert conn.execute("SELECT k, v FROM kv ORDER BY k").fetchall() == [("b", 2)]
        conn.commit()


def test_psycopg_executemany_and_isolation_level(server):
    with psycopg.connect(server.dsn()) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute("CREATE TABLE n (i INT PRIMARY KEY, sq BIGINT)")
        conn.commit()
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO n VALUES (%s, %s)", [(i, i * i) for i in range(50)])
        conn.commit()
        assert conn.execute("SELECT count(*), sum(sq) FROM n").fetchone() == (50, sum(i * i for i in range(50)))
        conn.commit()
        assert conn.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        conn.rollback()
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("SELECT 1")


def test_retry_loop_on_serialization_failure(server):
    with connect(server) as setup:
        setup.execute("CREATE TABLE acct (id INT PRIMARY KEY, balance BIGINT)")
        setup.execute("INSERT INTO acct VALUES (1, 100)")
    first, second = psycopg.connect(server.dsn()), psycopg.connect(server.dsn())
    conflicts = 0
    try:
        (balance,) = first.execute("SELECT balance FROM acct WHERE id = 1").fetchone()
        second.execute("UPDATE acct SET balance = balance + 1 WHERE id = 1")
        second.commit()                                   # the first committer wins
        for attempt in range(5):
            try:
                if attempt:
                    (balance,) = first.execute("SELECT balance FROM acct WHERE id = 1").fetchone()
                first.execute("UPDATE acct SET balance = %s WHERE id = 1", (balance - 10,))
                first.commit()
                break
            except psycopg.errors.SerializationFailure as error:
                assert error.sqlstate == "40001"
                conflicts += 1
                first.rollback()
        else:
            raise AssertionError("never committed")
    finally:
        first.close()
        second.close()
    assert conflicts == 1
    with connect(server) as check:
        assert check.execute("SELECT balance FROM acct WHERE id = 1").fetchone() == (91,)


def test_simple_query_with_several_statements_is_one_transaction(server):
    with connect(server) as conn:
        conn.execute("CREATE TABLE s (id INT PRIMARY KEY)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO s VALUES (1); INSERT INTO s VALUES (2); INSERT INTO s VALUES (1)", prepare=False)
        assert conn.execute("SELECT count(*) FROM s").fetchone() == (0,), "rolled back as one implicit transaction"
        conn.execute("INSERT INTO s VALUES (1); INSERT INTO s VALUES (2)", prepare=False)
        assert conn.execute("SELECT count(*) FROM s").fetchone() == (2,)


def test_session_functions_and_settings(server):
    with connect(server, application_name="tests") as conn:
        version, = conn.execute("SELECT version()").fetchone()
        assert version.startswith("PostgreSQL 15")
        assert conn.execute("select current_database(), current_user, current_schema()").fetchone() == \
            ("postgres", "admin", "public")
        assert conn.execute("SHOW application_name").fetchone() == ("tests",)
        conn.execute("SET application_name = 'other'")
        assert conn.info.parameter_status("application_name") == "other"
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("other",)
        conn.execute("SET TIME ZONE 'UTC'")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SET TIME ZONE 'Europe/Paris'")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("COMMIT")


@needs_psql
def test_the_exact_pg_dump_statement_is_an_insert_over_both_protocols(server):
    """Statements are classified on tokens and parse trees, never on text: the literal's "pg_"
    makes this no catalog query, over psql's simple protocol and psycopg's extended one."""
    statement = "INSERT INTO notes (body) VALUES ('copied from pg_dump output')"
    done = _psql(server, "-v", "ON_ERROR_STOP=1", "-c", "CREATE TABLE notes (body TEXT PRIMARY KEY)", "-c", statement)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "CREATE TABLE\nINSERT 0 1\n"
    with connect(server) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):  # the same row again: a real INSERT ran
            conn.execute(statement)
        conn.execute(statement.replace("copied", "pasted"), prepare=True)
        assert conn.execute("SELECT body FROM notes ORDER BY body").fetchall() == [
            ("copied from pg_dump output",), ("pasted from pg_dump output",)]


def test_a_string_literal_that_mentions_the_catalog_is_data(server):
    """Catalog queries are recognised by the words outside literals: this INSERT is an INSERT."""
    with connect(server) as conn:
        conn.execute("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (id, body) VALUES (1, 'copied from pg_dump output')")
        conn.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (2, "see pg_class and version()"))
        assert conn.execute("SELECT body FROM notes ORDER BY id").fetchall() == [
            ("copied from pg_dump output",), ("see pg_class and version()",)]


def test_startup_options_set_the_read_mode_like_pgoptions(server):
    """libpq's PGOPTIONS / options='-c name=value' apply at connection start, as SET would; SHOW
    of the read mode answers the mode in force even before any SET."""
    with connect(server) as conn:
        assert conn.execute("SHOW quorumdb.read_mode").fetchone() == ("quorum",)
    with connect(server, options="'-c quorumdb.read_mode=single -c application_name=opt'") as conn:
        assert conn.execute("SHOW quorumdb.read_mode").fetchone() == ("single",)
        assert conn.execute("SHOW application_name").fetchone() == ("opt",)
        conn.execute("RESET quorumdb.read_mode")
        assert conn.execute("SHOW quorumdb.read_mode").fetchone() == ("quorum",)
    with pytest.raises(psycopg.OperationalError, match="quorumdb.read_mode"):
        connect(server, options="'-c quorumdb.read_mode=sometimes'")
    with pytest.raises(psycopg.OperationalError, match="invalid command-line argument"):
        connect(server, options="-x")


# --- the protocol at the byte level ----------------------------------------------------------------
def test_extended_protocol_row_limits_describe_and_error_recovery(make_server):
    server = make_server(trust=True)
    client = RawClient(server.port)
    assert [code for code, _ in client.startup][:1] == [b"R"]
    statuses = {fields(body).get("", "") for code, body in client.startup if code == b"S"}
    assert client.startup[-1] == (b"Z", b"I")
    assert any(code == b"K" for code, _ in client.startup)
    client.send(msg(b"Q", b"CREATE TABLE r (i INT PRIMARY KEY); INSERT INTO r VALUES (1),(2),(3),(4),(5)\0"))
    assert client.until_ready()[-1] == (b"Z", b"I")
    client.send(msg(b"P", b"q\0SELECT i FROM r WHERE i >= $1 ORDER BY i\0" + struct.pack("!HI", 1, 23)),
                msg(b"D", b"Sq\0"),
                msg(b"B", b"\0q\0" + struct.pack("!HhH", 1, 1, 1) + struct.pack("!i", 4) + struct.pack("!i", 2)
                    + struct.pack("!Hh", 1, 1)),
                msg(b"E", b"\0" + struct.pack("!i", 2)),
                msg(b"E", b"\0" + struct.pack("!i", 2)),
                msg(b"S", b""))
    replies = client.until_ready()
    codes = [code for code, _ in replies]
    assert codes == [b"1", b"t", b"T", b"2", b"D", b"D", b"s", b"D", b"D", b"C", b"Z"], codes
    rows = [struct.unpack("!i", body[6:10])[0] for code, body in replies if code == b"D"]
    assert rows == [2, 3, 4, 5], "binary int4 rows in two slices of two"
    assert replies[-2][1] == b"SELECT 2\0"
    # an error discards everything up to Sync, then the connection works again
    client.send(msg(b"P", b"\0SELEC nonsense\0" + struct.pack("!H", 0)),
                msg(b"B", b"\0\0" + struct.pack("!HHH", 0, 0, 0)),
                msg(b"E", b"\0" + struct.pack("!i", 0)),
                msg(b"S", b""))
    replies = client.until_ready()
    codes = [code for code, _ in replies]
    assert codes in ([b"1", b"2", b"E", b"Z"], [b"E", b"Z"]), codes
    error = fields(next(body for code, body in replies if code == b"E"))
    assert error["C"] == "42601" and error["S"] == "ERROR" and error["V"] == "ERROR"
    client.send(msg(b"Q", b"SELECT count(*) FROM r\0"))
    replies = client.until_ready()
    assert [code for code, _ in replies] == [b"T", b"D", b"C", b"Z"]
    client.send(msg(b"Q", b"\0"))
    assert [code for code, _ in client.until_ready()] == [b"I", b"Z"]
    client.close()


def test_describe_answers_inferred_parameter_types_without_running(make_server):
    """Describe of a prepared statement compiles it: the parameters' types are inferred from where
    they are used (what asyncpg relies on to send typed, binary values), the result's columns
    come from the plan, and nothing runs: no row is read or written."""
    server = make_server(trust=True)
    client = RawClient(server.port)
    client.send(msg(b"Q", b"CREATE TABLE d (id INT PRIMARY KEY, name TEXT, at TIMESTAMP)\0"))
    assert client.until_ready()[-1] == (b"Z", b"I")
    backend = server.backend
    gets, scans, commits = backend.get_calls, backend.scan_calls, len(backend.commits)

    def describe(sql: bytes, declared: tuple[int, ...] = ()):
        client.send(msg(b"P", b"s\0" + sql + b"\0" + struct.pack("!H", len(declared))
                        + b"".join(struct.pack("!I", oid) for oid in declared)),
                    msg(b"D", b"Ss\0"), msg(b"C", b"Ss\0"), msg(b"S", b""))
        replies = client.until_ready()
        by_code = {code: body for code, body in replies}
        assert b"E" not in by_code, fields(by_code[b"E"])
        count = struct.unpack("!H", by_code[b"t"][:2])[0]
        oids = list(struct.unpack(f"!{count}I", by_code[b"t"][2:2 + 4 * count]))
        if b"n" in by_code:
            return oids, None
        body = by_code[b"T"]
        names, position = [], 2
        for _ in range(struct.unpack("!H", body[:2])[0]):
            end = body.index(b"\0", position)
            names.append(body[position:end].decode())
            position = end + 1 + 18
        return oids, names

    assert describe(b"INSERT INTO d VALUES ($1, $2, $3)") == ([23, 25, 1114], None)
    assert describe(b"SELECT name, at FROM d WHERE id = $1") == ([23], ["name", "at"])
    assert describe(b"UPDATE d SET at = $1 WHERE name = $2 RETURNING id") == ([1114, 25], ["id"])
    assert describe(b"SELECT $1::bigint + 1 AS n, $2") == ([20, 25], ["n", "?column?"])
    assert describe(b"SELECT id FROM d WHERE id = $1", (20,)) == ([20], ["id"]), "a declared type is kept"
    assert describe(b"BEGIN") == ([], None)
    assert (backend.scan_calls, len(backend.commits)) == (scans, commits), "Describe read or wrote rows"
    assert backend.get_calls - gets <= 6, "only schema-version checks may read"
    client.send(msg(b"P", b"\0SELECT nosuch FROM d\0" + struct.pack("!H", 0)), msg(b"D", b"S\0"), msg(b"S", b""))
    replies = client.until_ready()
    error = fields(next(body for code, body in replies if code == b"E"))
    assert error["C"] == "42703", error
    client.close()


def test_a_prepared_statement_is_described_once_not_at_every_execution(make_server):
    """libpq describes the portal at every execution of a prepared statement: the description
    is kept with the statement, so each execution reads storage once (its row), not twice."""
    server = make_server(trust=True)
    client = RawClient(server.port)
    client.send(msg(b"Q", b"CREATE TABLE p (id INT PRIMARY KEY, name TEXT); INSERT INTO p VALUES (1, 'one')\0"))
    assert client.until_ready()[-1] == (b"Z", b"I")
    client.send(msg(b"P", b"q\0SELECT name FROM p WHERE id = $1\0" + struct.pack("!H", 0)), msg(b"S", b""))
    assert [code for code, _ in client.until_ready()] == [b"1", b"Z"]
    backend = server.backend
    gets = backend.get_calls
    for _ in range(5):
        client.send(msg(b"B", b"\0q\0" + struct.pack("!HH", 0, 1) + struct.pack("!i", 1) + b"1" + struct.pack("!H", 0)),
                    msg(b"D", b"P\0"), msg(b"E", b"\0" + struct.pack("!i", 0)), msg(b"S", b""))
        replies = client.until_ready()
        assert [code for code, _ in replies] == [b"2", b"T", b"D", b"C", b"Z"], replies
    assert backend.get_calls - gets <= 6, f"{backend.get_calls - gets} storage reads for 5 executions"
    client.close()


def test_the_unnamed_statement_parsed_again_is_not_described_again(make_server):
    """Drivers (pgbench -M extended, psycopg, JDBC) send Parse/Bind/Describe/Execute/Sync with
    the unnamed statement at every execution: a description is remembered by text and parameter
    types, so each execution reads storage once (its row); a schema change describes it again."""
    server = make_server(trust=True)
    client = RawClient(server.port)
    client.send(msg(b"Q", b"CREATE TABLE u (id INT PRIMARY KEY, name TEXT); INSERT INTO u VALUES (1, 'one')\0"))
    assert client.until_ready()[-1] == (b"Z", b"I")
    backend = server.backend

    def execute_unnamed(sql: bytes) -> list:
        client.send(msg(b"P", b"\0" + sql + b"\0" + struct.pack("!H", 0)),
                    msg(b"B", b"\0\0" + struct.pack("!HH", 0, 1) + struct.pack("!i", 1) + b"1" + struct.pack("!H", 0)),
                    msg(b"D", b"P\0"), msg(b"E", b"\0" + struct.pack("!i", 0)), msg(b"S", b""))
        return client.until_ready()

    query = b"SELECT * FROM u WHERE id = $1"
    replies = execute_unnamed(query)  # the first one is described
    assert [code for code, _ in replies] == [b"1", b"2", b"T", b"D", b"C", b"Z"], replies
    gets = backend.get_calls
    for _ in range(5):
        replies = execute_unnamed(query)
        assert [code for code, _ in replies] == [b"1", b"2", b"T", b"D", b"C", b"Z"], replies
    assert backend.get_calls - gets <= 6, f"{backend.get_calls - gets} storage reads for 5 executions"
    client.send(msg(b"Q", b"ALTER TABLE u ADD COLUMN extra INT\0"))
    assert client.until_ready()[-1] == (b"Z", b"I")
    replies = execute_unnamed(query)
    description = next(body for code, body in replies if code == b"T")
    assert struct.unpack("!H", description[:2])[0] == 3, "described again: the new column is announced"
    assert [code for code, _ in replies] == [b"1", b"2", b"T", b"D", b"C", b"Z"], replies
    client.close()


def test_hostile_input_closes_only_that_connection(make_server):
    server = make_server(trust=True, message_bytes_max=1024 * 1024)
    with connect(server) as survivor:
        survivor.execute("CREATE TABLE h (i INT PRIMARY KEY)")
        seed = random.randrange(1 << 30)
        print(f"socket fuzz seed {seed}")
        rng = random.Random(seed)
        closed_with_error = 0
        for round_number in range(60):
            client = RawClient(server.port)
            kind = round_number % 4
            if kind == 0:
                payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
            elif kind == 1:
                payload = b"Q" + struct.pack("!i", 64 * 1024 * 1024)          # huge message
            elif kind == 2:
                payload = msg(b"B", b"\0\0" + struct.pack("!HHH", 0, 1, 0))[:-1] + b"\xff" * 20  # lies about sizes
            else:
                payload = b"Q" + struct.pack("!i", 2)                          # length below 4
            client.send(payload)
            client.sock.settimeout(5)
            try:
                while True:
                    code, body = client.read()
                    if code == b"E" and fields(body).get("C") in ("08P01", "22021"):
                        closed_with_error += 1
            except (ConnectionError, socket.timeout, OSError):
                pass
            client.close()
            assert survivor.execute("INSERT INTO h VALUES (%s)", (round_number,)).rowcount == 1
        assert closed_with_error >= 30
        assert survivor.execute("SELECT count(*) FROM h").fetchone() == (60,)
    wait_for(lambda: server.call(lambda: len(server.server.connections)) == 0, "connections closed")


def wait_for(condition, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- auth ----------------------------------------------------------------------------------------------
def test_token_authentication(server):
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("admin",)
    from quorumdb import tokens
    wrong_user = server.dsn("bob", password=server.token("admin"))
    other_cluster, _ = tokens.issue(bytes(32), "admin", 900, time.time())  # another cluster's secret
    for dsn in (server.dsn(password="qdb1.1.forged"), wrong_user, server.dsn(password="x"),
                server.dsn(password=other_cluster)):
        with pytest.raises(psycopg.OperationalError) as caught:
            psycopg.connect(dsn)
        assert "password authentication failed" in str(caught.value)
    expired = tokens.token_for(SECRET, "admin", (int(time.time()) // 300) * 300)
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(server.dsn(password=expired))
    assert "expired" in str(caught.value)


def test_pg8000_second_driver(server):
    import pg8000.native as pg8000
    conn = pg8000.Connection("admin", host="127.0.0.1", port=server.port, password=server.token(), database="postgres")
    try:
        conn.run("CREATE TABLE p8 (id INT PRIMARY KEY, label VARCHAR(20))")
        conn.run("INSERT INTO p8 VALUES (:id, :label)", id=1, label="o'clock")
        conn.run("START TRANSACTION")
        conn.run("INSERT INTO p8 VALUES (2, 'two')")
        conn.run("ROLLBACK")
        assert conn.run("SELECT id, label FROM p8 ORDER BY id") == [[1, "o'clock"]]
        with pytest.raises(pg8000.DatabaseError) as caught:
            conn.run("SELECT * FROM p9")
        assert caught.value.args[0]["C"] == "42P01"
    finally:
        conn.close()


def test_sqlalchemy_core(server):
    import sqlalchemy
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://admin:{server.token()}@127.0.0.1:{server.port}/postgres")
    metadata = sqlalchemy.MetaData()
    users = sqlalchemy.Table(
        "users", metadata,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True, autoincrement=False),
        sqlalchemy.Column("name", sqlalchemy.String(50), nullable=False),
        sqlalchemy.Column("score", sqlalchemy.Float),
        sqlalchemy.Index("users_by_name", "name"))
    try:
        metadata.create_all(engine)
        metadata.create_all(engine)  # checkfirst: the table is found through pg_catalog, not created twice
        with engine.begin() as conn:
            conn.execute(users.insert(), [{"id": 1, "name": "ada", "score": 9.5}, {"id": 2, "name": "bob", "score": None}])
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.select(users.c.name, users.c.score).where(users.c.id >= 1)
                                .order_by(users.c.id)).all()
        assert [tuple(row) for row in rows] == [("ada", 9.5), ("bob", None)]
        inspector = sqlalchemy.inspect(engine)
        assert inspector.get_table_names() == ["users"]
        columns = inspector.get_columns("users")
        assert [(c["name"], c["nullable"]) for c in columns] == [("id", False), ("name", False), ("score", True)]
        assert inspector.get_pk_constraint("users")["constrained_columns"] == ["id"]
        indexes = inspector.get_indexes("users")
        assert [(i["name"], i["column_names"], i["unique"]) for i in indexes] == [("users_by_name", ["name"], False)]
        assert inspector.get_foreign_keys("users") == []
        reflected = sqlalchemy.Table("users", sqlalchemy.MetaData(), autoload_with=engine)
        assert list(reflected.c.keys()) == ["id", "name", "score"]
        assert [index.name for index in reflected.indexes] == ["users_by_name"]
        metadata.drop_all(engine)
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


# --- cancel, timeouts, limits ----------------------------------------------------------------------
def _slow_scans(server: ServerThread, delay_s: float) -> None:
    backend = server.backend
    original = type(backend).scan

    async def slow_scan(self, *args, **kwargs):
        await asyncio.sleep(delay_s)
        return await original(self, *args, **kwargs)

    server.call(lambda: setattr(backend, "scan", slow_scan.__get__(backend)))


def test_cancel_request_cancels_the_running_statement(server):
    with connect(server) as conn:
        conn.execute("CREATE TABLE slow (i INT PRIMARY KEY)")
        _slow_scans(server, 5.0)
        outcome = {}

        def run():
            started = time.monotonic()
            try:
                conn.execute("SELECT * FROM slow")
            except psycopg.Error as error:
                outcome["error"] = error
            outcome["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 5
        while not server.call(lambda: any(c.running is not None for c in server.server.connections.values())):
            assert time.monotonic() < deadline, "the statement never started"
            time.sleep(0.02)
        conn.cancel_safe(timeout=5)
        thread.join(timeout=10)
        assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome
        print(f"statement cancelled after {outcome['seconds']:.3f} s (it would have taken 5 s)")
        _slow_scans(server, 0.0)
        assert conn.execute("SELECT 1").fetchone() == (1,), "the connection goes on"


def test_statement_timeout_setting(server):
    with connect(server) as conn:
        conn.execute("CREATE TABLE slow2 (i INT PRIMARY KEY)")
        _slow_scans(server, 2.0)
        conn.execute("SET statement_timeout = '200ms'")
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT * FROM slow2")


def test_connection_lifetime(make_server):
    server = make_server(trust=True, lifetime_s=1.0)
    with connect(server) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        time.sleep(1.3)
        with pytest.raises(psycopg.OperationalError) as caught:
            conn.execute("SELECT 1")
        assert "lifetime" in str(caught.value)


def test_connection_cap_and_rate(make_server):
    server = make_server(trust=True, connections_max=2)
    first, second = connect(server), connect(server)
    with pytest.raises(psycopg.OperationalError) as caught:
        connect(server)
    assert "too many clients" in str(caught.value)
    first.close()
    wait_for(lambda: server.call(lambda: server.server.admission.open) <= 1, "the closed connection released")
    connect(server).close()
    second.close()
    limited = make_server(trust=True, connections_per_s=0.5, connections_burst=1)
    connect(limited).close()
    with pytest.raises(psycopg.OperationalError) as caught:
        connect(limited)
    assert "too many new connections" in str(caught.value)


# --- psql ---------------------------------------------------------------------------------------------
def _psql(server: ServerThread, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGPASSWORD=server.token(), PGCONNECT_TIMEOUT="10")
    return subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(server.port), "-U", "admin", "-d", "postgres",
                           "-X", *args], capture_output=True, text=True, timeout=60, env=env, input=input_text)


@needs_psql
def test_psql_commands_scripts_and_describe(server, tmp_path):
    script = tmp_path / "setup.sql"
    script.write_text("CREATE TABLE accounts (id INT PRIMARY KEY, owner VARCHAR(20) NOT NULL, balance BIGINT);\n"
                      "INSERT INTO accounts VALUES (1, 'ada', 100), (2, 'bob', NULL);\n"
                      "SELECT owner, balance FROM accounts ORDER BY id;\n")
    done = _psql(server, "-v", "ON_ERROR_STOP=1", "-f", str(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("CREATE TABLE\nINSERT 0 2\n owner | balance \n-------+---------\n ada   |     100\n"
                           " bob   |        \n(2 rows)\n\n")
    done = _psql(server, "-c", "SELECT count(*) FROM accounts", "-A", "-t")
    assert (done.returncode, done.stdout) == (0, "2\n")
    done = _psql(server, "-c", r"\dt")
    assert done.stdout == ("         List of relations\n Schema |   Name   | Type  | Owner \n"
                           "--------+----------+-------+-------\n public | accounts | table | admin\n(1 row)\n\n")
    done = _psql(server, "-c", r"\d accounts")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        '                     Table "public.accounts"\n'
        " Column  |         Type          | Collation | Nullable | Default \n"
        "---------+-----------------------+-----------+----------+---------\n"
        " id      | integer               |           | not null | \n"
        " owner   | character varying(20) |           | not null | \n"
        " balance | bigint                |           |          | \n"
        "Indexes:\n"
        '    "accounts_pkey" PRIMARY KEY, btree (id)\n\n')
    done = _psql(server, "-c", r"\di")
    assert " accounts_pkey | index | admin | accounts" in done.stdout
    done = _psql(server, "-c", r"\d nothing")
    assert 'Did not find any relation named "nothing"' in done.stderr
    done = _psql(server, "-v", "ON_ERROR_STOP=1", "-c", "SELECT * FROM nothing")
    assert done.returncode == 1 and 'ERROR:  relation "nothing" does not exist' in done.stderr
    done = _psql(server, "-v", "VERBOSITY=verbose", "-c", "SELECT 1/0")
    assert "ERROR:  22012" in done.stderr


def test_catalog_queries_run_in_the_engine_and_what_it_lacks_is_named(server):
    """pg_class is a relation the engine reads: any query over it runs. A catalog relation or
    function QuorumDB does not have fails naming it (never an empty answer); the session goes on."""
    import psycopg
    with psycopg.connect(host="127.0.0.1", port=server.port, user="admin", password=server.token(),
                         dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE TABLE cat_probe (id INT PRIMARY KEY)")
        count = conn.execute("SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                             " WHERE n.nspname = 'public'").fetchone()[0]
        assert count == 2  # cat_probe and its primary-key index
        with pytest.raises(psycopg.errors.UndefinedTable) as caught:
            conn.execute("SELECT count(*) FROM pg_catalog.pg_stat_activity")
        assert "pg_stat_activity" in str(caught.value)
        with pytest.raises(psycopg.errors.UndefinedFunction) as caught:
            conn.execute("SELECT pg_catalog.pg_stat_get_numscans(c.oid) FROM pg_class c")
        assert "pg_stat_get_numscans" in str(caught.value)
        policies = conn.execute("SELECT pol.polname FROM pg_catalog.pg_policy pol WHERE pol.polrelid = 16385")
        assert policies.fetchall() == []
        assert conn.execute("SELECT 1").fetchall() == [(1,)]  # the session goes on


@needs_psql
def test_floats_reach_psql_in_postgresqls_text_form(server):
    """float8out/float4out text: shortest exact digits, exponent from 1e15 (double) / 1e6 (real).

    Expected strings are what PostgreSQL 15 prints for these values (the same oracle as
    tests/test_format.py)."""
    done = _psql(server, "-A", "-t", "-c",
                 "SELECT 1e15::float8, 1234567890123456::float8, 0.1::float8, 0.1::real, 1234567::real, 2.5::real")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1e+15|1.234567890123456e+15|0.1|0.1|1.234567e+06|2.5\n"


def test_executes_before_one_sync_are_one_implicit_transaction(server):
    """PostgreSQL's extended protocol: without BEGIN, everything up to Sync is one transaction,
    committed at Sync, and rolled back whole when any message before Sync fails."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE pipe (k INT PRIMARY KEY, v INT)")
        with conn.pipeline():  # several Parse/Bind/Execute, one Sync
            conn.execute("INSERT INTO pipe VALUES (%s, %s)", (1, 10))
            conn.execute("INSERT INTO pipe VALUES (%s, %s)", (2, 20))
        assert conn.execute("SELECT count(*) FROM pipe").fetchone() == (2,)
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.pipeline():
                conn.execute("INSERT INTO pipe VALUES (%s, %s)", (3, 30))
                conn.execute("INSERT INTO pipe VALUES (%s, %s)", (1, 99))  # duplicate key
                conn.execute("INSERT INTO pipe VALUES (%s, %s)", (4, 40))  # skipped
        # Nothing of the failed batch stayed: not row 3 before the error, not row 4 after it.
        assert conn.execute("SELECT k, v FROM pipe ORDER BY k").fetchall() == [(1, 10), (2, 20)]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with conn.cursor() as cursor:  # executemany in autocommit: also one implicit transaction
            with pytest.raises(psycopg.errors.UniqueViolation):
                cursor.executemany("INSERT INTO pipe VALUES (%s, %s)", [(5, 50), (6, 60), (2, 0)])
        assert conn.execute("SELECT count(*) FROM pipe").fetchone() == (2,)


def test_explicit_begin_inside_a_pipeline_keeps_the_transaction_open(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE pipe2 (k INT PRIMARY KEY)")
        with conn.pipeline():
            conn.execute("INSERT INTO pipe2 VALUES (1)")
            conn.execute("BEGIN")  # the implicit block becomes an explicit one
            conn.execute("INSERT INTO pipe2 VALUES (2)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM pipe2").fetchone() == (0,)  # row 1 was in it too
