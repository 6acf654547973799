"""COPY through the PostgreSQL endpoint with real clients (psycopg's cursor.copy(), psql's \\copy) and
raw protocol messages, over the in-memory backend (tests/pgwire_util.ServerThread).

What must hold: rows arrive exactly as INSERT would store them (types, defaults, NULLs); a bad row
anywhere fails the whole COPY with the right SQLSTATE and `COPY t, line N` in CONTEXT, commits
nothing, and leaves the session usable; a load larger than one transaction's quota is validated
whole and then committed in batches.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess

import psycopg
import pytest

from quorumdb import limits
from tests.pgwire_util import ServerThread, serving
from tests.test_pgwire_server import RawClient, fields, msg

PSQL = shutil.which("psql")


@pytest.fixture
def server():
    with serving() as started:
        yield started


@pytest.fixture
def trusting():
    """For the raw protocol client, which does not authenticate."""
    with serving(trust=True) as started:
        yield started


def connect(server: ServerThread) -> psycopg.Connection:
    return psycopg.connect(server.dsn(), autocommit=True)


def copy_in(conn, sql: str, data: bytes) -> str:
    with conn.cursor() as cursor:
        with cursor.copy(sql) as copy:
            copy.write(data)
        return cursor.statusmessage


def copy_out(conn, sql: str) -> bytes:
    with conn.cursor() as cursor:
        with cursor.copy(sql) as copy:
            return b"".join(bytes(chunk) for chunk in copy)


def test_psycopg_copy_both_directions_with_types_defaults_and_nulls(server):
    with connect(server) as conn:
        conn.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, price NUMERIC(8,2) DEFAULT 9.99, "
                     "ok BOOLEAN, born DATE, ratio DOUBLE PRECISION, blob BYTEA)")
        with conn.cursor() as cursor:
            with cursor.copy("COPY items (id, name, ok, born, ratio, blob) FROM STDIN") as copy:
                copy.write_row((1, "tab\there", True, "2024-02-29", 0.1, b"\x00\xff"))
                copy.write_row((2, None, False, None, -1.5e300, None))
                copy.write_row((3, "back\\slash\nnewline", None, "1999-12-31", None, b""))
            assert cursor.statusmessage == "COPY 3" and cursor.rowcount == 3
        rows = conn.execute("SELECT id, name, price, ok, born::text, ratio, blob FROM items ORDER BY id").fetchall()
        assert [(r[0], r[1], str(r[2]), r[3], r[4], r[5], r[6]) for r in rows] == [
            (1, "tab\there", "9.99", True, "2024-02-29", 0.1, b"\x00\xff"),
            (2, None, "9.99", False, None, -1.5e300, None),
            (3, "back\\slash\nnewline", "9.99", None, "1999-12-31", None, b"")]
        text = copy_out(conn, "COPY items (id, name, ok, blob) TO STDOUT")
        assert text == (b"1\ttab\\there\tt\t\\\\x00ff\n"
                        b"2\t\\N\tf\t\\N\n"
                        b"3\tback\\\\slash\\nnewline\t\\N\t\\\\x\n")
        csv = copy_out(conn, "COPY items (id, name, price) TO STDOUT WITH (FORMAT csv, HEADER)")
        assert csv == b'id,name,price\n1,tab\there,9.99\n2,,9.99\n3,"back\\slash\nnewline",9.99\n'
        query = copy_out(conn, "COPY (SELECT id * 10 AS x, upper(name) FROM items WHERE id <> 2 ORDER BY id DESC) "
                               "TO STDOUT WITH CSV")
        assert query == b'30,"BACK\\SLASH\nNEWLINE"\n10,TAB\tHERE\n'
        # What went out comes back in, into another table: the same rows.
        conn.execute("CREATE TABLE items2 (id BIGINT PRIMARY KEY, name TEXT, price NUMERIC(8,2) DEFAULT 9.99, "
                     "ok BOOLEAN, born DATE, ratio DOUBLE PRECISION, blob BYTEA)")
        assert copy_in(conn, "COPY items2 FROM STDIN (FORMAT csv, HEADER true)",
                       copy_out(conn, "COPY items TO STDOUT (FORMAT csv, HEADER true)")) == "COPY 3"
        assert copy_in(conn, "COPY items2 FROM STDIN", b"") == "COPY 0"
        assert conn.execute("SELECT count(*) FROM (SELECT * FROM items EXCEPT SELECT * FROM items2) AS d").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM items2").fetchone() == (3,)


def test_copy_to_in_the_extended_protocol(trusting):
    server = trusting
    with connect(server) as conn:
        conn.execute("CREATE TABLE ext (id INT PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO ext VALUES (1, 'a'), (2, NULL)")
        client = RawClient(server.port)
        try:
            client.send(msg(b"P", b"\0COPY ext TO STDOUT WITH (FORMAT csv)\0\0\0"),
                        msg(b"B", b"\0\0\0\0\0\0\0\0"), msg(b"D", b"P\0"), msg(b"E", b"\0\0\0\0\0"), msg(b"S", b""))
            got = client.until_ready()
            codes = [code for code, _ in got]
            assert codes == [b"1", b"2", b"n", b"H", b"d", b"c", b"C", b"Z"], got
            assert got[4][1] == b"1,a\n2,\n" and got[6][1] == b"COPY 2\0"
            client.send(msg(b"P", b"\0COPY ext FROM STDIN\0\0\0"), msg(b"B", b"\0\0\0\0\0\0\0\0"),
                        msg(b"E", b"\0\0\0\0\0"), msg(b"S", b""))
            got = client.until_ready()
            error = fields(next(body for code, body in got if code == b"E"))
            assert error["C"] == "0A000" and "simple query" in error["M"]
        finally:
            client.close()


def test_bad_row_at_line_5001_commits_nothing_and_the_session_goes_on(server):
    """6,000 rows (two transactions' worth) with a bad value on line 5,001: nothing is committed."""
    with connect(server) as conn:
        conn.execute("CREATE TABLE big (id INT PRIMARY KEY, n INT NOT NULL, note TEXT)")
        lines = [f"{i}\t{i * 2}\tnote {i}\n" for i in range(1, 6001)]
        lines[5000] = "5001\tnot-a-number\tx\n"
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
            copy_in(conn, "COPY big FROM STDIN", "".join(lines).encode())
        assert caught.value.diag.context == 'COPY big, line 5001, column n: "not-a-number"'
        assert conn.execute("SELECT count(*) FROM big").fetchone() == (0,)
        # The same load, good this time, over the batch path (6,000 rows > TXN_ROWS_MAX).
        lines[5000] = "5001\t10002\tnote 5001\n"
        assert copy_in(conn, "COPY big FROM STDIN", "".join(lines).encode()) == "COPY 6000"
        assert conn.execute("SELECT count(*), sum(n) FROM big").fetchone() == (6000, 6000 * 6001)


@pytest.mark.parametrize("data, sqlstate, context", [
    (b"1\t1\n2\n", "22P04", "COPY c, line 2"),                            # missing column
    (b"1\t1\n2\t2\t2\n", "22P04", "COPY c, line 2"),                      # extra column
    (b"1\t1\n2\t\\N\n", "23502", "COPY c, line 2"),                       # NOT NULL
    (b"1\t1\n2\t-5\n", "23514", "COPY c, line 2"),                        # CHECK
    (b"1\t1\n2\t2\n1\t3\n", "23505", "COPY c, line 3"),                   # duplicate within the data
    (b"7\t1\n100\t2\n", "23505", "COPY c, line 2"),                       # duplicate of a stored row
    (b"3\t1\n4\t7\n", "23505", "COPY c, line 2"),                         # unique index of a stored row
    (b"5\t99999999999\n", "22003", "COPY c, line 1, column v"),          # out of range
])
def test_bad_data_errors_name_the_line(server, data, sqlstate, context):
    with connect(server) as conn:
        conn.execute("CREATE TABLE c (id INT PRIMARY KEY, v INT NOT NULL CHECK (v > 0))")
        conn.execute("CREATE UNIQUE INDEX c_v ON c (v)")
        conn.execute("INSERT INTO c VALUES (100, 7)")
        with pytest.raises(psycopg.Error) as caught:
            copy_in(conn, "COPY c FROM STDIN", data)
        assert caught.value.sqlstate == sqlstate
        assert caught.value.diag.context.startswith(context)
        assert conn.execute("SELECT id, v FROM c").fetchall() == [(100, 7)], "nothing of the failed COPY committed"


def test_copy_in_a_transaction_block_follows_the_block(server):
    with connect(server) as conn:
        conn.execute("CREATE TABLE blk (id INT PRIMARY KEY)")
        with conn.transaction():
            assert copy_in(conn, "COPY blk FROM STDIN", b"1\n2\n") == "COPY 2"
            assert conn.execute("SELECT count(*) FROM blk").fetchone() == (2,), "read your own COPY"
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            copy_in(conn, "COPY blk FROM STDIN", b"3\nx\n")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT id FROM blk ORDER BY id").fetchall() == [(1,), (2,)]


def test_copy_larger_than_the_quota(server, monkeypatch):
    """Autocommit: validated whole, committed in batches (here of 100 keys: rows + index entries);
    inside a block: the block's quota, 54000 with a hint."""
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 100)
    with connect(server) as conn:
        conn.execute("CREATE TABLE q (id INT PRIMARY KEY, v INT)")
        conn.execute("CREATE INDEX q_v ON q (v)")
        data = "".join(f"{i}\t{i % 7}\n" for i in range(1000)).encode()
        assert copy_in(conn, "COPY q FROM STDIN", data) == "COPY 1000"
        assert conn.execute("SELECT count(*), sum(v) FROM q").fetchone() == (1000, sum(i % 7 for i in range(1000)))
        assert conn.execute("SELECT count(*) FROM q WHERE v = 3").fetchone() == (sum(1 for i in range(1000) if i % 7 == 3),)
        conn.execute("CREATE TABLE q2 (id INT PRIMARY KEY)")
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as caught:
            copy_in(conn, "COPY q2 FROM STDIN", "".join(f"{i}\n" for i in range(200)).encode())
        assert "autocommit" in caught.value.diag.message_hint
        conn.execute("ROLLBACK")


def test_copy_limits_refuse_oversized_input(server, monkeypatch):
    monkeypatch.setattr(limits, "COPY_ROWS_MAX", 50)
    with connect(server) as conn:
        conn.execute("CREATE TABLE lim (id INT PRIMARY KEY)")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="50 rows"):
            copy_in(conn, "COPY lim FROM STDIN", "".join(f"{i}\n" for i in range(51)).encode())
        assert copy_in(conn, "COPY lim FROM STDIN", "".join(f"{i}\n" for i in range(50)).encode()) == "COPY 50"


def test_copy_fail_from_the_client_aborts_cleanly(server):
    with connect(server) as conn:
        conn.execute("CREATE TABLE cf (id INT PRIMARY KEY)")
        # psycopg sends CopyFail when the block raises, then re-raises the block's exception.
        with pytest.raises(RuntimeError, match="changed its mind"):
            with conn.cursor() as cursor:
                with cursor.copy("COPY cf FROM STDIN") as copy:
                    copy.write(b"1\n2\n")
                    raise RuntimeError("the client changed its mind")
        assert conn.execute("SELECT count(*) FROM cf").fetchone() == (0,)
        assert copy_in(conn, "COPY cf FROM STDIN", b"3\n") == "COPY 1"
        conn.execute("BEGIN")
        with pytest.raises(RuntimeError):
            with conn.cursor() as cursor:
                with cursor.copy("COPY cf FROM STDIN") as copy:
                    copy.write(b"4\n")
                    raise RuntimeError("abort inside a block")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR, "CopyFail fails the block"
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT id FROM cf").fetchall() == [(3,)]


def test_protocol_after_an_error_data_is_ignored_until_copy_done(trusting):
    server = trusting
    with connect(server) as conn:
        conn.execute("CREATE TABLE raw (id INT PRIMARY KEY, v TEXT)")
    client = RawClient(server.port)
    try:
        client.send(msg(b"Q", b"COPY raw FROM STDIN WITH (FORMAT csv)\0"))
        code, body = client.read()
        assert code == b"G" and body == struct.pack("!bHhh", 0, 2, 0, 0)
        # A bad row in the first message, more data after it, a Flush and a Sync: all read and ignored.
        client.send(msg(b"d", b"1,a\nnope,b\n"), msg(b"d", b"3,c\n"), msg(b"H", b""), msg(b"S", b""),
                    msg(b"d", b"4,d\n"), msg(b"c", b""))
        got = client.until_ready()
        assert [code for code, _ in got] == [b"E", b"Z"]
        error = fields(got[0][1])
        assert (error["C"], error["W"]) == ("22P02", 'COPY raw, line 2, column id: "nope"')
        assert got[1][1] == b"I"
        # CopyFail: 57014 with the client's reason, then ReadyForQuery.
        client.send(msg(b"Q", b"COPY raw FROM STDIN\0"))
        assert client.read()[0] == b"G"
        client.send(msg(b"d", b"1\ta\n"), msg(b"f", b"user pressed ^C\0"))
        got = client.until_ready()
        assert [code for code, _ in got] == [b"E", b"Z"]
        assert (fields(got[0][1])["C"], fields(got[0][1])["M"]) == ("57014", "COPY from stdin failed: user pressed ^C")
        # Errors found before CopyInResponse: no copy starts.
        client.send(msg(b"Q", b"COPY missing FROM STDIN\0"))
        got = client.until_ready()
        assert [code for code, _ in got] == [b"E", b"Z"] and fields(got[0][1])["C"] == "42P01"
        client.send(msg(b"Q", b"COPY raw (nope) FROM STDIN\0"))
        assert fields(client.until_ready()[0][1])["C"] == "42703"
        client.send(msg(b"Q", b"COPY raw FROM '/etc/passwd'\0"))
        assert fields(client.until_ready()[0][1])["C"] == "42501"
        client.send(msg(b"Q", b"COPY raw FROM STDIN; SELECT 1\0"))
        assert fields(client.until_ready()[0][1])["C"] == "0A000"
        # Stray copy messages outside a COPY are ignored, as PostgreSQL ignores them.
        client.send(msg(b"d", b"junk"), msg(b"c", b""), msg(b"Q", b"SELECT count(*) FROM raw\0"))
        got = client.until_ready()
        assert [code for code, _ in got] == [b"T", b"D", b"C", b"Z"] and got[1][1].endswith(b"0")
        # An unexpected message during COPY ends it with 08P01; the connection goes on.
        client.send(msg(b"Q", b"COPY raw FROM STDIN\0"))
        assert client.read()[0] == b"G"
        client.send(msg(b"Q", b"SELECT 1\0"))
        got = client.until_ready()
        assert fields(got[0][1])["C"] == "08P01"
        client.send(msg(b"Q", b"SELECT 1\0"))
        assert [code for code, _ in client.until_ready()] == [b"T", b"D", b"C", b"Z"]
    finally:
        client.close()


def test_psql_backslash_copy_round_trip(server, tmp_path):
    assert PSQL is not None, "psql is not installed: run `bash scripts/install-postgres`"
    with connect(server) as conn:
        conn.execute("CREATE TABLE src (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION)")
        conn.execute("CREATE TABLE dst (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION)")
        with conn.cursor() as cursor:
            with cursor.copy("COPY src FROM STDIN") as copy:
                for i in range(500):
                    copy.write_row((i, None if i % 50 == 0 else f"name, \"{i}\"\t\\", i / 3))
    out = tmp_path / "src.csv"
    env = dict(os.environ, PGPASSWORD=server.token("admin"))
    base = [PSQL, "-h", "127.0.0.1", "-p", str(server.port), "-U", "admin", "-d", "postgres", "-X", "-v",
            "ON_ERROR_STOP=1"]
    done = subprocess.run(base + ["-c", f"\\copy src to '{out}' with (format csv, header)"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "COPY 500"
    assert out.read_text().startswith("id,name,score\n0,,0\n1,\"name, \"\"1\"\"\t\\\",0.3333333333333333\n")
    done = subprocess.run(base + ["-c", f"\\copy dst from '{out}' csv header"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "COPY 500"
    with connect(server) as conn:
        for query in ("SELECT * FROM src EXCEPT SELECT * FROM dst", "SELECT * FROM dst EXCEPT SELECT * FROM src"):
            assert conn.execute(f"SELECT count(*) FROM ({query}) AS d").fetchone() == (0,)
    # A bad file: psql reports PostgreSQL's error with its CONTEXT line.
    out.write_text("id,name,score\n1,a,1\n2,b,zero\n")
    done = subprocess.run(base + ["-c", f"\\copy dst from '{out}' csv header"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0
    assert 'invalid input syntax for type double precision: "zero"' in done.stderr
    assert 'CONTEXT:  COPY dst, line 3, column score: "zero"' in done.stderr


def test_a_batch_after_the_first_failing_says_what_stayed_committed(server, monkeypatch):
    """A concurrent writer commits a key of the second batch after the rows were validated: that
    batch fails with 40001 (its commit uses the validation snapshot, so it cannot overwrite the
    other row), the first batch stays committed, and the error says so."""
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 100)
    backend = server.backend
    real_commit = backend.commit
    calls = []

    async def commit_with_a_concurrent_writer(start_ts, writes, lock_keys, txn_id):
        calls.append(txn_id)
        if len(calls) == 3:  # CREATE TABLE, the first batch, then: someone else writes a key of this batch
            key, row = writes[0]  # the same row id 101, as another session's INSERT would write it
            backend.versions.setdefault(key, []).append((backend.now_ts(), row))
        return await real_commit(start_ts, writes, lock_keys, txn_id)

    monkeypatch.setattr(backend, "commit", commit_with_a_concurrent_writer)
    with connect(server) as conn:
        conn.execute("CREATE TABLE w (id INT PRIMARY KEY)")
        with pytest.raises(psycopg.errors.SerializationFailure) as caught:
            copy_in(conn, "COPY w FROM STDIN", "".join(f"{i}\n" for i in range(1, 251)).encode())
        assert "had already committed 100 of its 250 rows in 1 batches" in str(caught.value)
        assert "Rows of lines 1 to 100 are committed" in caught.value.diag.message_detail
        monkeypatch.setattr(backend, "commit", real_commit)
        # The first batch (1..100) and the other writer's row 101; nothing of the failed batch.
        assert conn.execute("SELECT count(*), min(id), max(id) FROM w").fetchone() == (101, 1, 101)


def test_copy_protocol_messages_decode_and_encode():
    from compute_node.pgwire import protocol

    frontend = protocol.Frontend(1 << 20, 10_000)
    frontend.phase = protocol.Phase.READY
    frontend.receive_data(msg(b"d", b"1\tx\n") + msg(b"c", b"") + msg(b"f", b"why\0"))
    assert frontend.next_message() == protocol.CopyData(b"1\tx\n")
    assert frontend.next_message() == protocol.CopyDone()
    assert frontend.next_message() == protocol.CopyFail("why")
    frontend.receive_data(msg(b"c", b"x"))
    with pytest.raises(protocol.ProtocolViolation):
        frontend.next_message()
    assert protocol.copy_in_response(3) == b"G" + struct.pack("!IbHhhh", 13, 0, 3, 0, 0, 0)
    assert protocol.copy_out_response(0) == b"H" + struct.pack("!IbH", 7, 0, 0)
    assert protocol.copy_data(b"ab") == b"d" + struct.pack("!I", 6) + b"ab"
    assert protocol.copy_done() == b"c\0\0\0\4"
    error = protocol.error_response("22P02", "bad", context="COPY t, line 5001")
    assert fields(error[5:])["W"] == "COPY t, line 5001"


def test_psql_runs_a_pg_dump_style_script(server, tmp_path):
    """pg_dump's plain format loads data with `COPY public.t (cols) FROM stdin;` followed by the
    rows and `\\.` in the script itself; psql sends them as CopyData."""
    assert PSQL is not None, "psql is not installed: run `bash scripts/install-postgres`"
    script = tmp_path / "dump.sql"
    script.write_text(
        "CREATE TABLE public.dumped (id integer PRIMARY KEY, note text, at timestamp);\n"
        "COPY public.dumped (id, note, at) FROM stdin;\n"
        "1\tfirst\t2024-05-01 10:00:00\n"
        "2\t\\N\t\\N\n"
        "3\ttab\\there\t2024-05-03 12:30:00.5\n"
        "\\.\n"
        "SELECT count(*) AS loaded FROM dumped;\n")
    env = dict(os.environ, PGPASSWORD=server.token("admin"))
    done = subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(server.port), "-U", "admin", "-d", "postgres", "-X",
                           "-v", "ON_ERROR_STOP=1", "-f", str(script)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "COPY 3" in done.stdout and "      3\n(1 row)" in done.stdout
    with connect(server) as conn:
        rows = conn.execute("SELECT id, note, at::text FROM dumped ORDER BY id").fetchall()
    assert rows == [(1, "first", "2024-05-01 10:00:00"), (2, None, None), (3, "tab\there", "2024-05-03 12:30:00.5")]


def test_cancel_request_during_copy_in(trusting):
    """psql sends a CancelRequest on ^C while it streams a file: the COPY fails with 57014 at the
    next message, the rest of the data is ignored, nothing is committed."""
    server = trusting
    with connect(server) as conn:
        conn.execute("CREATE TABLE cancelled (id INT PRIMARY KEY)")
    client = RawClient(server.port)
    try:
        key = next(body for code, body in client.startup if code == b"K")
        client.send(msg(b"Q", b"COPY cancelled FROM STDIN\0"))
        assert client.read()[0] == b"G"
        client.send(msg(b"d", b"1\n2\n"))
        canceller = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        canceller.sendall(struct.pack("!II", 16, 80877102) + key)
        assert canceller.recv(1) == b""  # the server closes a cancel connection without answering
        canceller.close()
        client.send(msg(b"d", b"3\n"), msg(b"c", b""))
        got = client.until_ready()
        assert [code for code, _ in got] == [b"E", b"Z"]
        error = fields(got[0][1])
        assert (error["C"], error["M"]) == ("57014", "canceling statement due to user request")
    finally:
        client.close()
    with connect(server) as conn:
        assert conn.execute("SELECT count(*) FROM cancelled").fetchone() == (0,)


def test_csv_force_options(server):
    with connect(server) as conn:
        conn.execute("CREATE TABLE fq (id INT PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO fq VALUES (1, 'a'), (2, NULL)")
        assert copy_out(conn, "COPY fq TO STDOUT (FORMAT csv, FORCE_QUOTE (v))") == b'1,"a"\n2,\n'
        assert copy_out(conn, "COPY fq TO STDOUT WITH CSV FORCE QUOTE *") == b'"1","a"\n"2",\n'
        with pytest.raises(psycopg.errors.InvalidColumnReference, match='"zz" not referenced by COPY'):
            copy_out(conn, "COPY fq TO STDOUT (FORMAT csv, FORCE_QUOTE (zz))")
        assert copy_in(conn, "COPY fq FROM STDIN (FORMAT csv, FORCE_NOT_NULL (v))", b"3,\n") == "COPY 1"
        assert copy_in(conn, "COPY fq FROM STDIN (FORMAT csv, FORCE_NULL (v))", b'4,""\n') == "COPY 1"
        with pytest.raises(psycopg.errors.InvalidColumnReference):
            copy_in(conn, "COPY fq (id) FROM STDIN (FORMAT csv, FORCE_NULL (v))", b"5\n")
        assert conn.execute("SELECT id, v FROM fq WHERE id > 2 ORDER BY id").fetchall() == [(3, ""), (4, None)]


def test_copy_in_a_block_into_a_truncated_table_streams_past_the_row_limit(server, monkeypatch):
    """pgbench -i's shape (BEGIN; TRUNCATE; COPY; COMMIT): the rows are loaded a chunk at a time onto
    the bulk path, so COPY_ROWS_MAX does not apply; here 2,500 rows pass a limit of 300 in chunks of
    200, flushed in batches of 100 keys, and nothing shows before COMMIT."""
    monkeypatch.setattr(limits, "COPY_ROWS_MAX", 300)
    monkeypatch.setattr(limits, "COPY_STREAM_CHUNK_ROWS", 200)
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 100)
    with connect(server) as conn, connect(server) as other:
        conn.execute("CREATE TABLE acc (aid INT NOT NULL, bid INT, abalance INT, filler CHAR(84))")
        conn.execute("INSERT INTO acc VALUES (0, 0, 0, 'old')")
        conn.execute("BEGIN")
        conn.execute("TRUNCATE acc")
        data = "".join(f"{i}\t{(i - 1) // 1000 + 1}\t0\t\n" for i in range(1, 2501)).encode()
        assert copy_in(conn, "COPY acc FROM STDIN", data) == "COPY 2500"
        assert conn.execute("SELECT count(*), sum(aid) FROM acc").fetchone() == (2500, 2500 * 2501 // 2)
        assert other.execute("SELECT aid FROM acc").fetchall() == [(0,)], "nothing visible before COMMIT"
        conn.execute("COMMIT")
        assert other.execute("SELECT count(*), sum(aid), max(bid) FROM acc").fetchone() == (2500, 2500 * 2501 // 2, 3)


def test_a_bad_row_late_in_a_streaming_copy_aborts_the_whole_block(server, monkeypatch):
    """Chunks before the bad row were already written (flushed ahead) when line 2,345 fails: the
    error names that line, the block fails, and ROLLBACK (or COMMIT) leaves the table as it was."""
    monkeypatch.setattr(limits, "COPY_ROWS_MAX", 300)
    monkeypatch.setattr(limits, "COPY_STREAM_CHUNK_ROWS", 200)
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 100)
    with connect(server) as conn:
        conn.execute("CREATE TABLE acc2 (aid INT NOT NULL, bid INT)")
        conn.execute("INSERT INTO acc2 VALUES (7, 7)")
        lines = [f"{i}\t{i}\n" for i in range(1, 3001)]
        lines[2344] = "2345\tlots\n"
        for ending in ("ROLLBACK", "COMMIT"):
            conn.execute("BEGIN")
            conn.execute("TRUNCATE acc2")
            with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
                copy_in(conn, "COPY acc2 FROM STDIN", "".join(lines).encode())
            assert caught.value.diag.context == 'COPY acc2, line 2345, column bid: "lots"'
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            conn.execute(ending)
            assert conn.execute("SELECT aid, bid FROM acc2").fetchall() == [(7, 7)]
        # A NOT NULL violation late in the stream names its line too, and the session goes on.
        lines[2344] = "\\N\t1\n"
        conn.execute("BEGIN")
        conn.execute("TRUNCATE acc2")
        with pytest.raises(psycopg.errors.NotNullViolation) as caught:
            copy_in(conn, "COPY acc2 FROM STDIN", "".join(lines).encode())
        assert caught.value.diag.context == "COPY acc2, line 2345"
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM acc2").fetchone() == (1,)


def test_a_streaming_copy_into_a_table_created_in_the_block(server, monkeypatch):
    """A table CREATEd in the block streams too (it moves to a private keyspace once it outgrows
    the quota); a primary-key duplicate across chunks is still 23505 at its line."""
    monkeypatch.setattr(limits, "COPY_ROWS_MAX", 300)
    monkeypatch.setattr(limits, "COPY_STREAM_CHUNK_ROWS", 200)
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 100)
    with connect(server) as conn:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE made (id INT PRIMARY KEY, v TEXT)")
        data = "".join(f"{i}\tv{i}\n" for i in range(1000)).encode()
        assert copy_in(conn, "COPY made FROM STDIN", data) == "COPY 1000"
        conn.execute("COMMIT")
        assert conn.execute("SELECT count(*) FROM made").fetchone() == (1000,)
        conn.execute("BEGIN")
        conn.execute("TRUNCATE made")
        lines = [f"{i}\tv{i}\n" for i in range(1000)]
        lines[950] = "17\tagain\n"
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            copy_in(conn, "COPY made FROM STDIN", "".join(lines).encode())
        assert caught.value.diag.context == "COPY made, line 951"
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM made").fetchone() == (1000,)
