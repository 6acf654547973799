"""The PostgreSQL endpoint on a real 15-process cluster: every compute node serves it, with token auth."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psycopg
import pytest

from quorumdb import config as config_mod
from tools import cli


def make_token(data_dir, user: str = "admin") -> str:
    done = subprocess.run([sys.executable, "-m", "tools.cli", "token", "--user", user, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


@pytest.mark.cluster
def test_every_compute_node_speaks_postgres(cluster_factory):
    cluster = cluster_factory()
    config = cluster.config
    token = make_token(config.data_dir)
    ports = [config.pg_port(node.name) for node in config.computes]
    print("PostgreSQL ports:", ports)
    with psycopg.connect(host="127.0.0.1", port=ports[0], user="admin", password=token, dbname="postgres",
                         autocommit=True, connect_timeout=10) as first:
        first.execute("CREATE TABLE pgc (id INT PRIMARY KEY, note TEXT)")
        with first.transaction():
            first.cursor().executemany("INSERT INTO pgc VALUES (%s, %s)", [(i, f"n{i}") for i in range(20)])
    for port in ports[1:]:
        with psycopg.connect(host="127.0.0.1", port=port, user="admin", password=token, dbname="postgres",
                             autocommit=True, connect_timeout=10) as other:
            assert other.execute("SELECT count(*) FROM pgc WHERE id >= %s", (10,)).fetchone() == (10,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=ports[2], user="admin", password=token[:-2] + "xx",
                        dbname="postgres", connect_timeout=10)
    psql = shutil.which("psql")
    if psql is not None:
        done = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(ports[1]), "-U", "admin", "-d", "postgres", "-X",
                               "-c", r"\dt", "-c", "SELECT note FROM pgc WHERE id = 3"],
                              capture_output=True, text=True, timeout=60, env=dict(os.environ, PGPASSWORD=token))
        assert done.returncode == 0, done.stderr
        assert " public | pgc  | table | admin" in done.stdout
        assert " n3\n(1 row)" in done.stdout


def test_up_report_prints_the_pg_ports(tmp_path):
    cluster = config_mod.default_cluster(tmp_path)
    report = cli.ready_report(cluster, {}, {})
    assert "psql -h 127.0.0.1 -p 5433 -U admin" in report and "-p 5435" in report
    trusted = cli.apply_pg_options(cluster, type("Args", (), {"pg_port": 6000, "trust": True})())
    assert config_mod.load(trusted.config_path).pg_base_port == 6000
    assert "TRUST MODE" in cli.ready_report(trusted, {}, {})


@pytest.mark.cluster
@pytest.mark.long
def test_psql_copy_of_100000_rows_out_and_back_in(cluster_factory, tmp_path):
    """psql's \\copy, unmodified: 100,000 rows out of a table into a file and into another table in
    autocommit (validated whole, then committed in batches of at most TXN_ROWS_MAX rows); the two
    tables then hold the same rows. A bad row at line 5,001 of a load commits nothing and the
    error names that line; the session goes on."""
    psql = shutil.which("psql")
    assert psql is not None, "psql is not installed: run `bash scripts/install-postgres`"
    cluster = cluster_factory()
    config = cluster.config
    token = make_token(config.data_dir)
    port = config.pg_port(config.computes[0].name)
    rows = 100_000
    with psycopg.connect(host="127.0.0.1", port=port, user="admin", password=token, dbname="postgres",
                         autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE copy_src (id INT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2), "
                     "flag BOOLEAN)")
        conn.execute("CREATE TABLE copy_dst (id INT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2), "
                     "flag BOOLEAN)")
        with conn.cursor() as cursor:
            with cursor.copy("COPY copy_src FROM STDIN") as copy:
                for i in range(rows):
                    copy.write_row((i, f"name, \"{i}\"\t", None if i % 97 == 0 else f"{i}.{i % 100:02d}",
                                    i % 3 == 0))
            assert cursor.statusmessage == f"COPY {rows}"
    out = tmp_path / "copy_src.csv"
    env = dict(os.environ, PGPASSWORD=token)
    base = [psql, "-h", "127.0.0.1", "-p", str(port), "-U", "admin", "-d", "postgres", "-X", "-v", "ON_ERROR_STOP=1"]
    started = time.monotonic()
    done = subprocess.run(base + ["-c", f"\\copy copy_src to '{out}' with (format csv, header)"],
                          capture_output=True, text=True, timeout=300, env=env)
    print(f"\\copy of {rows} rows to a file: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"COPY {rows}"
    assert len(out.read_text().splitlines()) == rows + 1
    started = time.monotonic()
    done = subprocess.run(base + ["-c", f"\\copy copy_dst from '{out}' with (format csv, header)"],
                          capture_output=True, text=True, timeout=300, env=env)
    print(f"\\copy of {rows} rows from the file (validated, then committed in batches): "
          f"{time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"COPY {rows}"
    with psycopg.connect(host="127.0.0.1", port=port, user="admin", password=token, dbname="postgres",
                         autocommit=True, connect_timeout=10) as conn:
        for query in ("SELECT * FROM copy_src EXCEPT SELECT * FROM copy_dst",
                      "SELECT * FROM copy_dst EXCEPT SELECT * FROM copy_src"):
            assert conn.execute(f"SELECT count(*) FROM ({query}) AS d").fetchone() == (0,), query
        expected = (rows, sum(range(rows)), sum(1 for i in range(rows) if i % 3 == 0))
        for table in ("copy_src", "copy_dst"):
            got = conn.execute(f"SELECT count(*), sum(id), sum(CASE WHEN flag THEN 1 ELSE 0 END) FROM {table}").fetchone()
            assert got == expected, table
        # A bad value on line 5,001 of 6,000 rows: more than one transaction's worth, none committed.
        conn.execute("CREATE TABLE copy_bad (id INT PRIMARY KEY, n INT)")
        bad = tmp_path / "bad.txt"
        bad.write_text("".join(f"{i}\t{'oops' if i == 5001 else i}\n" for i in range(1, 6001)))
    done = subprocess.run(base + ["-c", f"\\copy copy_bad from '{bad}'", "-c", "SELECT count(*) FROM copy_bad"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    assert 'ERROR:  invalid input syntax for type integer: "oops"' in done.stderr
    assert 'CONTEXT:  COPY copy_bad, line 5001, column n: "oops"' in done.stderr
    done = subprocess.run(base + ["-c", "SELECT count(*) FROM copy_bad"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0 and " 0\n(1 row)" in done.stdout, (done.stdout, done.stderr)
