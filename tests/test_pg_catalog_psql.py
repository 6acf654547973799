"""psql's describe commands on a real cluster print what they print on PostgreSQL 15.

Debian's /usr/bin/psql runs \\d+ t, \\d t, \\d INDEX, \\dt, \\di, \\dn, \\l, \\du against a compute
node's PostgreSQL endpoint and against a scratch PostgreSQL 15 (tests/differential/pgserver.py)
holding the same schema, created by a role with the same name, so owner names match. What may
differ is normalised: sizes (QuorumDB does not track them and reports 0), the database name, and
the databases and roles only PostgreSQL has (template0/1, postgres) -- \\l and \\du compare the
connected database's and user's rows. psql 15 sends its catalog queries, which the engine runs
over pg_catalog's relations (nothing recognises their text).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import pytest

from tests.differential.pgserver import PostgresMissing, PostgresServer
from tests.test_pgwire_cluster import make_token

PSQL = shutil.which("psql")
USER = "admin"
SCHEMA = [
    "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT DEFAULT 3 CHECK (qty > 0), "
    "code TEXT UNIQUE, price NUMERIC(10,2), note TEXT DEFAULT 'n/a', seen TIMESTAMPTZ, flag BOOLEAN DEFAULT true, "
    "label VARCHAR(10) DEFAULT 'x')",
    "CREATE INDEX t_name ON t (name)",
    "CREATE INDEX t_qty_note ON t (qty DESC, note)",
    "CREATE TABLE other_table (k BIGINT PRIMARY KEY, v TEXT)",
    "CREATE TABLE all_types (id BIGINT PRIMARY KEY, s SMALLINT NOT NULL, r REAL, d DOUBLE PRECISION, c CHAR(3), "
    "b BYTEA, u UUID, ts TIMESTAMP, dt DATE, n NUMERIC, vc VARCHAR, UNIQUE (s, c), CHECK (s > 0 AND length(c) < 5), CHECK (id <> 0))",
    "CREATE UNIQUE INDEX all_types_u ON all_types (u DESC)",
    # No primary key: the hidden row id (quorumdb_rowid) shows nowhere, attnums count from 1.
    "CREATE TABLE nopk (a INT NOT NULL, b TEXT DEFAULT 'z', c NUMERIC(5,1))",
    "CREATE INDEX nopk_b ON nopk (b, a)",
]
ROWS = ["INSERT INTO t (id, name, qty, code, price, note, seen, flag) VALUES (1, 'ada', 5, 'x1', 12.50, "
        "'tab\there', '2024-01-02 03:04:05+00', false), (2, 'bob', 3, NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO other_table VALUES (10, 'ten'), (11, 'line\nbreak')"]
EXACT = [r"\d+ t", r"\d t", r"\d t_qty_note", r"\d t_pkey", r"\dt", r"\di", r"\dn", r"\d", r"\d other_table",
         r"\d all_types", r"\d all_types_s_c_key", r"\d+ all_types_u", r"\d+ nopk", r"\d nopk_b"]
# Commands that print sizes: compared unaligned (column widths follow the sizes' lengths).
SIZED = [r"\dt+", r"\di+ t_name", r"\d+ other_table"]
SIZE = re.compile(r"\b\d+ (bytes|kB|MB)\b")


def psql(port: int, database: str, password: str | None, *args: str,
         input_text: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run([PSQL, "-X", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", database, *args],
                          capture_output=True, text=True, timeout=60, env=env, input=input_text)


def normalised(text: str) -> str:
    return SIZE.sub("SIZE", text)


@pytest.fixture
def postgres():
    assert PSQL is not None, "psql is not installed: run `bash scripts/install-postgres`"
    try:
        server = PostgresServer().start()
    except PostgresMissing as error:
        pytest.fail(f"PostgreSQL is required: {error}")
    try:
        admin = server.connect()
        for statement in (f"CREATE ROLE {USER} SUPERUSER CREATEDB CREATEROLE LOGIN", f"CREATE DATABASE qdb OWNER {USER}"):
            assert admin.query(statement).error is None
        admin.close()
        for statement in SCHEMA:
            done = psql(server.port, "qdb", None, "-v", "ON_ERROR_STOP=1", "-c", statement)
            assert done.returncode == 0, done.stderr
        yield server
    finally:
        server.stop()


def pg_dump_text(pg_dump: str, port: int, database: str, password: str | None, *options: str) -> str:
    """pg_dump's output for `database` on 127.0.0.1:`port`, without the lines that differ by
    construction (the dump's random \\restrict key, the version lines)."""
    env = dict(os.environ, PGCONNECT_TIMEOUT="10", **({"PGPASSWORD": password} if password else {}))
    done = subprocess.run([pg_dump, *options, "-h", "127.0.0.1", "-p", str(port), "-U", USER, database],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return "\n".join(line for line in done.stdout.splitlines()
                     if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from")))


@pytest.mark.cluster
@pytest.mark.long  # 30-50 s (every describe command in psql against PostgreSQL's output): the CI's regions-and-long step runs it
def test_psql_describe_commands_match_postgresql(postgres, cluster_factory):
    cluster = cluster_factory()
    token = make_token(cluster.config.data_dir, USER)
    port = cluster.config.pg_port(cluster.config.computes[0].name)
    for statement in SCHEMA:
        done = psql(port, "postgres", token, "-v", "ON_ERROR_STOP=1", "-c", statement)
        assert done.returncode == 0, done.stderr
    differences = []
    for command in EXACT:
        ours = psql(port, "postgres", token, "-c", command)
        theirs = psql(postgres.port, "qdb", None, "-c", command)
        assert theirs.returncode == 0, theirs.stderr
        if ours.returncode != 0 or ours.stderr or normalised(ours.stdout) != normalised(theirs.stdout):
            differences.append(f"{command}\n--- QuorumDB\n{ours.stdout}{ours.stderr}--- PostgreSQL\n{theirs.stdout}")
    for command in SIZED:
        ours = psql(port, "postgres", token, "-A", "-c", command)
        theirs = psql(postgres.port, "qdb", None, "-A", "-c", command)
        if ours.returncode != 0 or ours.stderr or normalised(ours.stdout) != normalised(theirs.stdout):
            differences.append(f"{command}\n--- QuorumDB\n{ours.stdout}{ours.stderr}--- PostgreSQL\n{theirs.stdout}")
    assert not differences, "\n".join(differences)

    # One database and one login role here: compare the connected database's and user's rows.
    ours = psql(port, "postgres", token, "-A", "-c", r"\l").stdout.splitlines()
    theirs = psql(postgres.port, "qdb", None, "-A", "-c", r"\l").stdout.splitlines()
    assert ours[:2] == theirs[:2]  # title and column names
    assert [line.replace("postgres|", "DB|", 1) for line in ours if line.startswith("postgres|")] == [
        line.replace("qdb|", "DB|", 1) for line in theirs if line.startswith("qdb|")]
    ours = psql(port, "postgres", token, "-A", "-c", r"\du").stdout.splitlines()
    theirs = psql(postgres.port, "qdb", None, "-A", "-c", r"\du").stdout.splitlines()
    assert ours[:2] == theirs[:2]
    assert [line for line in ours if line.startswith(f"{USER}|")] == [
        line for line in theirs if line.startswith(f"{USER}|")] == [f"{USER}|Superuser, Create role, Create DB|{{}}"]

    # Sequences over the cluster's storage (their definitions and stored states), before any
    # value was taken: what psql prints, and what a sequence reads as, match PostgreSQL.
    for statement in SEQUENCE_SCHEMA:
        for target in ((port, "postgres", token), (postgres.port, "qdb", None)):
            done = psql(*target, "-v", "ON_ERROR_STOP=1", "-c", statement)
            assert done.returncode == 0, done.stderr
    for command in SEQUENCE_COMMANDS + ["SELECT * FROM serials_id_seq", "SELECT last_value, is_called FROM standalone"]:
        ours = psql(port, "postgres", token, "-c", command)
        theirs = psql(postgres.port, "qdb", None, "-c", command)
        assert theirs.returncode == 0, theirs.stderr
        if ours.returncode != 0 or ours.stderr or ours.stdout != theirs.stdout:
            differences.append(f"{command}\n--- QuorumDB\n{ours.stdout}{ours.stderr}--- PostgreSQL\n{theirs.stdout}")
    assert not differences, "\n".join(differences)


def test_pg_dump_schema_only_matches_postgresql(postgres):
    """pg_dump (--schema-only, and with the data) prints what PostgreSQL 15's dump of the same
    database prints, and its data restores into QuorumDB.

    The endpoint reports 15.0 (pg_dump refuses a newer server major version than its own): its
    SET TRANSACTION ... READ ONLY, LOCK TABLE ... IN ACCESS SHARE MODE and some forty catalog
    queries run in the engine."""
    from tests.pgwire_util import ServerThread
    pg_dump = PSQL.replace("psql", "pg_dump") if PSQL else None
    assert pg_dump and shutil.which(pg_dump), "pg_dump is not installed"
    server = ServerThread()
    try:
        for statement in SCHEMA + ROWS:
            done = psql(server.port, "postgres", server.token(USER), "-v", "ON_ERROR_STOP=1", "-c", statement)
            assert done.returncode == 0, done.stderr
        for statement in ROWS:
            done = psql(postgres.port, "qdb", None, "-v", "ON_ERROR_STOP=1", "-c", statement)
            assert done.returncode == 0, done.stderr

        dump = functools.partial(pg_dump_text, pg_dump)

        ours = dump(server.port, "postgres", server.token(USER), "--schema-only")
        assert ours == dump(postgres.port, "qdb", None, "--schema-only")
        # With the data (COPY ... TO stdout). A whole dump does not restore into QuorumDB (it
        # creates each table first and adds its primary key afterwards, and every QuorumDB table
        # needs its key when created), but its data does, into the same schema.
        ours = dump(server.port, "postgres", server.token(USER))
        assert ours == dump(postgres.port, "qdb", None)
        restored = ServerThread()
        try:
            for statement in SCHEMA:
                done = psql(restored.port, "postgres", restored.token(USER), "-v", "ON_ERROR_STOP=1", "-c", statement)
                assert done.returncode == 0, done.stderr
            data = dump(server.port, "postgres", server.token(USER), "--data-only")
            done = psql(restored.port, "postgres", restored.token(USER), "-v", "ON_ERROR_STOP=1", input_text=data)
            assert done.returncode == 0, done.stderr
            assert dump(restored.port, "postgres", restored.token(USER)) == ours
        finally:
            restored.stop()
    finally:
        server.stop()


# Sequences: a serial, a smallserial, identity columns (ALWAYS, and BY DEFAULT with options) and
# standalone sequences, with values taken from some of them.
SEQUENCE_SCHEMA = [
    "CREATE TABLE serials (id SERIAL PRIMARY KEY, label TEXT)",
    "CREATE TABLE idents (id INT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note TEXT)",
    "CREATE TABLE stepped (id BIGINT GENERATED BY DEFAULT AS IDENTITY (START WITH 10 INCREMENT BY 5) PRIMARY KEY, "
    "small SMALLSERIAL)",
    "CREATE SEQUENCE standalone AS integer START 100 INCREMENT 2 CACHE 10",
    "CREATE SEQUENCE plain_seq",
]
SEQUENCE_ROWS = ["INSERT INTO serials (label) VALUES ('a'), ('b')", "INSERT INTO idents (note) VALUES ('x')",
                 "SELECT nextval('standalone')"]
SEQUENCE_COMMANDS = [r"\ds", r"\d", r"\d standalone", r"\d+ standalone", r"\d plain_seq", r"\d serials_id_seq",
                     r"\d idents_id_seq", r"\d stepped_small_seq", r"\d serials", r"\d idents", r"\d stepped",
                     r"\d+ serials"]
SETVAL = re.compile(r"^SELECT pg_catalog\.setval\('([^']+)', (-?\d+), (true|false)\);$", re.M)


def _setvals_normalised(ours: str, theirs: str) -> tuple[str, str]:
    """Both dumps with each setval's value replaced by N, after checking that they restore the
    same state. PostgreSQL's last_value is the last value its sessions took (cache 1 here); ours
    is the last value any compute node reserved, which may be more (docs/POSTGRES.md): never
    less, and equal while nothing was reserved (is_called false)."""
    our_calls = SETVAL.findall(ours)
    their_calls = SETVAL.findall(theirs)
    assert [(name, called) for name, _, called in our_calls] == [(name, called) for name, _, called in their_calls]
    for (name, our_value, called), (_, their_value, _) in zip(our_calls, their_calls):
        if called == "true":
            assert int(our_value) >= int(their_value), f"{name}: {our_value} < PostgreSQL's {their_value}"
        else:
            assert our_value == their_value, name
    replace = lambda text: SETVAL.sub(lambda m: f"SELECT pg_catalog.setval('{m.group(1)}', N, {m.group(3)});", text)
    return replace(ours), replace(theirs)


def test_sequences_in_psql_and_pg_dump_match_postgresql(postgres):
    """Sequences are relations of kind S with pg_sequence and pg_depend rows: psql's \\ds, \\d seq
    and \\d t and pg_dump print what PostgreSQL 15 prints for the same database (last values
    aside, see _setvals_normalised), and the full dump loads into PostgreSQL, whose sequences
    then continue above the loaded ids."""
    from tests.pgwire_util import ServerThread
    pg_dump = PSQL.replace("psql", "pg_dump")
    admin = postgres.connect()
    for statement in ("CREATE DATABASE seqdb OWNER admin", "CREATE DATABASE restored OWNER admin"):
        assert admin.query(statement).error is None
    admin.close()
    for statement in SEQUENCE_SCHEMA + SEQUENCE_ROWS:
        done = psql(postgres.port, "seqdb", None, "-v", "ON_ERROR_STOP=1", "-c", statement)
        assert done.returncode == 0, done.stderr
    server = ServerThread()
    try:
        token = server.token(USER)
        for statement in SEQUENCE_SCHEMA + SEQUENCE_ROWS:
            done = psql(server.port, "postgres", token, "-v", "ON_ERROR_STOP=1", "-c", statement)
            assert done.returncode == 0, done.stderr
        differences = []
        for command in SEQUENCE_COMMANDS:
            ours = psql(server.port, "postgres", token, "-c", command)
            theirs = psql(postgres.port, "seqdb", None, "-c", command)
            assert theirs.returncode == 0, theirs.stderr
            if ours.returncode != 0 or ours.stderr or ours.stdout != theirs.stdout:
                differences.append(f"{command}\n--- QuorumDB\n{ours.stdout}{ours.stderr}--- PostgreSQL\n{theirs.stdout}")
        assert not differences, "\n".join(differences)
        assert "nextval('serials_id_seq'::regclass)" in psql(server.port, "postgres", token, "-c", r"\d serials").stdout
        assert "generated always as identity" in psql(server.port, "postgres", token, "-c", r"\d idents").stdout

        # What pg_dump reads of each sequence, and psql of one by name.
        ours = psql(server.port, "postgres", token, "-A", "-t", "-c",
                    "SELECT last_value, log_cnt, is_called FROM plain_seq").stdout
        assert ours.strip() == "1|0|f"
        ours = psql(server.port, "postgres", token, "-A", "-t", "-c", "SELECT * FROM public.serials_id_seq s").stdout
        last_value, log_cnt, is_called = ours.strip().split("|")
        assert int(last_value) >= 2 and is_called == "t"

        dump = functools.partial(pg_dump_text, pg_dump)

        ours = dump(server.port, "postgres", token, "--schema-only")
        assert ours == dump(postgres.port, "seqdb", None, "--schema-only")
        assert "CREATE SEQUENCE public.serials_id_seq" in ours and "AS IDENTITY" in ours
        full = dump(server.port, "postgres", token)
        ours, theirs = _setvals_normalised(full, dump(postgres.port, "seqdb", None))
        assert ours == theirs

        # QuorumDB's full dump rebuilds the database in PostgreSQL; the sequences continue above
        # every id QuorumDB handed out.
        done = psql(postgres.port, "restored", None, "-v", "ON_ERROR_STOP=1", input_text=full)
        assert done.returncode == 0, done.stderr
        query = lambda sql: psql(postgres.port, "restored", None, "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c",
                                 sql).stdout.strip()
        assert query("SELECT string_agg(id || label, ',' ORDER BY id) FROM serials") == "1a,2b"
        assert int(query("INSERT INTO serials (label) VALUES ('c') RETURNING id")) == int(last_value) + 1
        assert int(query("INSERT INTO idents (note) VALUES ('y') RETURNING id")) > 1
        assert query("INSERT INTO stepped DEFAULT VALUES RETURNING id, small") == "10|1"
        assert int(query("SELECT nextval('standalone')")) > 100
        assert query("SELECT nextval('plain_seq')") == "1"

        # ... and QuorumDB: every sequence of the restored database reads as the original's, and
        # its serial continues above the loaded ids. (Not compared through a second pg_dump: the
        # restore adds each primary key by rewriting the table, whose new id is too large for a
        # 32-bit oid -- docs/POSTGRES.md, known gaps.)
        restored = ServerThread()
        try:
            restored_token = restored.token(USER)
            done = psql(restored.port, "postgres", restored_token, "-v", "ON_ERROR_STOP=1", input_text=full)
            assert done.returncode == 0, done.stderr
            for name in ("serials_id_seq", "idents_id_seq", "stepped_id_seq", "stepped_small_seq", "standalone",
                         "plain_seq"):
                sql = f"SELECT last_value, is_called FROM {name}"
                original = psql(server.port, "postgres", token, "-A", "-t", "-c", sql)
                assert psql(restored.port, "postgres", restored_token, "-A", "-t", "-c", sql).stdout == \
                    original.stdout, name
            done = psql(restored.port, "postgres", restored_token, "-q", "-A", "-t", "-c",
                        "INSERT INTO serials (label) VALUES ('c') RETURNING id")
            assert int(done.stdout.strip()) == int(last_value) + 1, done.stderr
        finally:
            restored.stop()
    finally:
        server.stop()
