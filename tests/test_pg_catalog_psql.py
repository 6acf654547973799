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


@pytest.mark.cluster
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

        def dump(port: int, database: str, password: str | None, *options: str) -> str:
            env = dict(os.environ, PGCONNECT_TIMEOUT="10", **({"PGPASSWORD": password} if password else {}))
            done = subprocess.run([pg_dump, *options, "-h", "127.0.0.1", "-p", str(port), "-U", USER, database],
                                  capture_output=True, text=True, timeout=120, env=env)
            assert done.returncode == 0, done.stderr
            # the dump's random \restrict key and the version lines differ by construction
            return "\n".join(line for line in done.stdout.splitlines()
                             if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from")))

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
