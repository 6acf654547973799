"""pg_dump round trips, both ways, with Debian's own pg_dump and psql (PostgreSQL 15).

QuorumDB -> PostgreSQL: a schema with the features QuorumDB has (primary keys, UNIQUE, CHECK,
DEFAULT, a descending index, serial and identity columns, a table without a primary key,
text with tabs, newlines, quotes and non-ASCII) is made on a real cluster, dumped from its
PostgreSQL endpoint with `pg_dump --no-owner` (the owner is the connected user, a role the
other server need not have), and loaded into a fresh PostgreSQL database with
`psql -v ON_ERROR_STOP=1 -f` (any error fails the load). PostgreSQL -> QuorumDB: the same
schema made in PostgreSQL, dumped the same way and loaded into the cluster. Each direction is checked by running
the same queries on both sides, including what the next serial and identity values are.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import psycopg
import pytest


pytestmark = pytest.mark.cluster

TIMEOUT_S = 300.0

SCHEMA = """
CREATE TABLE {p}accounts (id bigint PRIMARY KEY, owner text NOT NULL UNIQUE,
                          balance numeric(12,2) DEFAULT 0 CHECK (balance >= 0), opened date, active boolean);
CREATE INDEX {p}accounts_opened ON {p}accounts (opened DESC);
CREATE TABLE {p}notes (id serial PRIMARY KEY, body text, at timestamp, score double precision);
CREATE TABLE {p}items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name varchar(20) NOT NULL);
CREATE TABLE {p}events (kind text, n int);
INSERT INTO {p}accounts VALUES (1, 'ann', 10.5, '2024-01-02', true), (2, 'bob', 0, NULL, NULL),
                               (3, 'Zoë "z"', 99.99, '1999-12-31', false);
INSERT INTO {p}notes (body, at, score) VALUES ('hi', '2024-01-01 10:00', 1.5), (E'tab\\there\\nnew line', NULL, NULL),
                                              ('back\\\\slash ''quote''', '2000-02-29 23:59:59.5', -0.25);
INSERT INTO {p}items (name) VALUES ('x'), ('y');
INSERT INTO {p}events VALUES ('a', 1), ('b', NULL), ('a', 1);
"""

QUERIES = [
    "SELECT * FROM {p}accounts ORDER BY id",
    "SELECT * FROM {p}notes ORDER BY id",
    "SELECT * FROM {p}items ORDER BY id",
    "SELECT kind, n, count(*) FROM {p}events GROUP BY kind, n ORDER BY kind, n NULLS FIRST",
    "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
    "WHERE table_name IN ('{p}accounts', '{p}notes', '{p}items', '{p}events') ORDER BY table_name, ordinal_position",
    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE '{p}%' ORDER BY indexname",
]
# The sequences came through: the next value is above every loaded id. (PostgreSQL's setval is
# exact; QuorumDB's dump says the highest value any node reserved, which may be above the last
# one handed out: gaps, which sequences allow, never a value given twice.)
NEXT_VALUES = [("{p}notes", "body"), ("{p}items", "name")]
# Each must fail the same way on both sides: the constraints came through.
FAILURES = [
    ("INSERT INTO {p}accounts VALUES (1, 'dup', 1, NULL, NULL)", "23505"),
    ("INSERT INTO {p}accounts VALUES (9, 'ann', 1, NULL, NULL)", "23505"),
    ("INSERT INTO {p}accounts VALUES (9, 'neg', -1, NULL, NULL)", "23514"),
    ("INSERT INTO {p}items (id, name) VALUES (50, 'forced')", "428C9"),
]


@pytest.fixture(scope="module")
def quorumdb(shared_cluster):
    config = shared_cluster.config
    token = subprocess.run(["quorumdb", "token", "--user", "admin", "--data-dir", str(config.data_dir)],
                           capture_output=True, text=True, timeout=60)
    assert token.returncode == 0, token.stderr
    return {"host": "127.0.0.1", "port": config.pg_port(config.computes[0].name), "user": "admin",
            "password": token.stdout.strip(), "dbname": "postgres"}


def _postgres_target(postgres, dbname: str) -> dict:
    return {"host": "127.0.0.1", "port": postgres.port, "user": "postgres", "password": "", "dbname": dbname}


def _env(target: dict) -> dict:
    return dict(os.environ, PGHOST=target["host"], PGPORT=str(target["port"]), PGUSER=target["user"],
                PGPASSWORD=target["password"], PGDATABASE=target["dbname"])


def _tool(name: str, target: dict, *args: str) -> subprocess.CompletedProcess:
    path = shutil.which(name)
    assert path is not None, f"{name} is required: bash scripts/install-postgres"
    done = subprocess.run([path, *args], env=_env(target), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{name} {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done


def _connect(target: dict):
    return psycopg.connect(host=target["host"], port=target["port"], user=target["user"],
                           password=target["password"] or None, dbname=target["dbname"], autocommit=True,
                           connect_timeout=30)


def _run_script(target: dict, script: str) -> None:
    with _connect(target) as connection:
        for statement in (s.strip() for s in script.split(";\n")):
            if statement:
                connection.execute(statement)


def _next_values(target: dict, prefix: str) -> list[int]:
    values = []
    with _connect(target) as connection:
        for table, column in NEXT_VALUES:
            table = table.format(p=prefix)
            (highest,) = connection.execute(f"SELECT max(id) FROM {table}").fetchone()
            (new,) = connection.execute(f"INSERT INTO {table} ({column}) VALUES ('next') RETURNING id").fetchone()
            assert new > highest, f"{table}: next id {new} after {highest}"
            values.append(new)
    return values


def _answers(target: dict, prefix: str) -> list:
    answers = []
    with _connect(target) as connection:
        for query in QUERIES:
            answers.append((query, connection.execute(query.format(p=prefix)).fetchall()))
        for statement, _ in FAILURES:
            try:
                connection.execute(statement.format(p=prefix))
                answers.append((statement, "succeeded"))
            except psycopg.Error as error:
                answers.append((statement, error.sqlstate))
    return answers


def _fresh_database(postgres, name: str) -> dict:
    with _connect(_postgres_target(postgres, "postgres")) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return _postgres_target(postgres, name)


def _compare(left: list, right: list) -> None:
    assert len(left) == len(right)
    for (query, mine), (_, theirs) in zip(left, right):
        assert mine == theirs, f"{query}\n  source: {mine}\n  loaded: {theirs}"


def test_pg_dump_of_quorumdb_loads_into_postgresql(quorumdb, postgres, tmp_path):
    _run_script(quorumdb, SCHEMA.format(p="q_"))
    dump = tmp_path / "quorumdb.sql"
    _tool("pg_dump", quorumdb, "--no-owner", "--file", str(dump))
    text = dump.read_text()
    assert "CREATE TABLE public.q_accounts" in text and "COPY public.q_notes" in text
    target = _fresh_database(postgres, "from_quorumdb")
    _tool("psql", target, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(dump))
    _compare(_answers(quorumdb, "q_"), _answers(target, "q_"))
    _next_values(quorumdb, "q_")
    _next_values(target, "q_")


def test_pg_dump_of_postgresql_loads_into_quorumdb(quorumdb, postgres, tmp_path):
    source = _fresh_database(postgres, "to_quorumdb")
    _run_script(source, SCHEMA.format(p="r_"))
    dump = tmp_path / "postgres.sql"
    _tool("pg_dump", source, "--no-owner", "--file", str(dump))
    _tool("psql", quorumdb, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(dump))
    _compare(_answers(source, "r_"), _answers(quorumdb, "r_"))
    assert _next_values(quorumdb, "r_") == _next_values(source, "r_") == [4, 3]  # setval is exact here
    # The restored tables (their primary keys added by rewrites) dump again.
    again = tmp_path / "again.sql"
    _tool("pg_dump", quorumdb, "--no-owner", "--table", "r_*", "--file", str(again))
    assert "ADD CONSTRAINT r_accounts_pkey PRIMARY KEY (id)" in again.read_text()


def test_a_dump_with_unsupported_features_fails_clearly_and_the_session_keeps_working(quorumdb, tmp_path):
    dump = tmp_path / "unsupported.sql"
    dump.write_text("CREATE TABLE u_parent (id int PRIMARY KEY);\n"
                    "CREATE TABLE u_child (id int PRIMARY KEY, parent int);\n"
                    "ALTER TABLE ONLY public.u_child\n"
                    "    ADD CONSTRAINT u_child_parent_fkey FOREIGN KEY (parent) REFERENCES public.u_parent(id);\n"
                    "SELECT 'still here' AS alive;\n")
    path = shutil.which("psql")
    assert path is not None
    done = subprocess.run([path, "-f", str(dump)], env=_env(quorumdb), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert "ERROR:  foreign keys are not supported" in done.stderr, done.stderr
    assert "still here" in done.stdout  # psql went on, and the session with it
    with _connect(quorumdb) as connection:
        assert connection.execute("SELECT count(*) FROM u_child").fetchone() == (0,)
