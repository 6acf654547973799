"""The PostgreSQL endpoint on a real 15-process cluster: every compute node serves it, with token auth."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import psycopg
import pytest

from quorumdb import cli, config as config_mod


def make_token(data_dir, user: str = "admin") -> str:
    done = subprocess.run([sys.executable, "-m", "quorumdb.cli", "token", "--user", user, "--data-dir", str(data_dir)],
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
