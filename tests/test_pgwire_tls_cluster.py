"""TLS on the PostgreSQL endpoint of a real cluster (not --insecure): psql and psycopg verify the
compute nodes' certificates against the cluster CA, bind SCRAM to them, and plaintext is refused.

The insecure counterpart is tests/test_pgwire_insecure_cluster.py; the protocol details (rotation,
bytes after SSLRequest, the SCRAM refusals) are checked without a cluster in tests/test_pgwire_tls.py.
"""
from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from quorumdb import certs
from tests.conftest import start_ready
from tests.test_pgwire_cluster import make_token
from tests.util import make_config, require
from tools.launcher import Cluster

PSQL = "/usr/bin/psql"
pytestmark = pytest.mark.cluster


def start_with_certs(directory, **settings) -> Cluster:
    """A cluster whose certificates exist before any node starts (as `quorumdb up` makes them)."""
    config = make_config(directory, **settings)
    if not config.insecure:
        certs.ensure(config.certs_path, [(config.cert_name(node.name), certs.default_hosts(node.name, node.host))
                                         for node in config.nodes])
    return start_ready(config)


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    cluster = start_with_certs(tmp_path_factory.mktemp("tls"))
    try:
        yield cluster
    finally:
        cluster.stop_all()


def dsn(cluster: Cluster, node: int = 0, **extra) -> str:
    config = cluster.config
    parts = {"host": "127.0.0.1", "port": config.pg_port(config.computes[node].name), "user": "admin",
             "dbname": "postgres", "connect_timeout": 10, "password": make_token(config.data_dir)}
    parts.update(extra)
    return " ".join(f"{key}={value}" for key, value in parts.items())


def psql(conninfo: str, *sql: str) -> subprocess.CompletedProcess:
    require(os.path.exists(PSQL), "psql", "bash scripts/install-postgres")
    arguments = [PSQL, conninfo, "-X", "-A", "-t"]
    for statement in sql:
        arguments += ["-c", statement]
    return subprocess.run(arguments, capture_output=True, text=True, timeout=60)


def test_psycopg_verify_full_with_channel_binding_on_every_compute_node(secure):
    ca = certs.ca_path(secure.config.certs_path)
    with psycopg.connect(dsn(secure, 0, sslmode="verify-full", sslrootcert=ca, channel_binding="require"),
                         autocommit=True) as conn:
        assert conn.info.pgconn.ssl_in_use
        conn.execute("CREATE TABLE tls_rows (id INT PRIMARY KEY, note TEXT)")
        conn.execute("INSERT INTO tls_rows VALUES (1, 'sealed')")
    for node in range(1, len(secure.config.computes)):
        with psycopg.connect(dsn(secure, node, sslmode="verify-full", sslrootcert=ca, channel_binding="require"),
                             autocommit=True) as conn:
            assert conn.execute("SELECT note FROM tls_rows WHERE id = 1").fetchone() == ("sealed",)
    with psycopg.connect(dsn(secure, 1, sslmode="require"), autocommit=True) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT count(*) FROM tls_rows").fetchone() == (1,)
    log = secure.config.log_path(secure.config.computes[0].name).read_text(errors="replace")
    assert "(TLS, SCRAM-SHA-256-PLUS)" in log, "channel_binding=require authenticated with the PLUS mechanism"


def test_psql_verify_full_require_and_disable(secure):
    ca = certs.ca_path(secure.config.certs_path)
    done = psql(dsn(secure, 0, sslmode="verify-full", sslrootcert=ca, channel_binding="require"), "SELECT 40 + 2")
    assert done.returncode == 0 and done.stdout.strip() == "42", done
    done = psql(dsn(secure, 2, sslmode="verify-full", sslrootcert=ca, host="localhost"), "SELECT 1")
    assert done.returncode == 0 and done.stdout.strip() == "1", done
    done = psql(dsn(secure, 1, sslmode="require"), "SELECT 2")
    assert done.returncode == 0 and done.stdout.strip() == "2", done
    done = psql(dsn(secure, 0, sslmode="disable"), "SELECT 3")
    assert done.returncode == 2, done
    assert "FATAL:  SSL is required: connect with sslmode=require (the cluster is not --insecure)" in done.stderr
    assert f"sslrootcert={ca}" in done.stderr, done.stderr
    with pytest.raises(psycopg.OperationalError, match="SSL is required"):
        psycopg.connect(dsn(secure, 1, sslmode="disable"))


def test_verify_full_against_another_clusters_ca_fails(secure, tmp_path):
    certs.ensure(tmp_path, [])
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(dsn(secure, 0, sslmode="verify-full", sslrootcert=certs.ca_path(tmp_path)))
    done = psql(dsn(secure, 0, sslmode="verify-full", sslrootcert=certs.ca_path(tmp_path)), "SELECT 1")
    assert done.returncode == 2 and "certificate verify failed" in done.stderr, done


def test_rotated_certificate_is_served_without_a_restart(secure):
    config = secure.config
    name = config.computes[0].name
    pids = dict(secure.pids)
    cert_path, _ = certs.pair_paths(config.certs_path, config.cert_name(name))
    before = cert_path.read_bytes()
    certs.rotate(config.certs_path, config.cert_name(name))
    assert cert_path.read_bytes() != before
    ca = certs.ca_path(config.certs_path)
    with psycopg.connect(dsn(secure, 0, sslmode="verify-full", sslrootcert=ca, channel_binding="require"),
                         autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM tls_rows").fetchone() == (1,)
    assert secure.pids == pids, "no process restarted"
    log = config.log_path(name).read_text(errors="replace")
    assert "certificate" in log and "changed, new connections use it" in log
