"""An --insecure cluster's PostgreSQL endpoint keeps plaintext: SSLRequest is answered 'N' and
sslmode=disable connects (the secure default is tests/test_pgwire_tls_cluster.py)."""
from __future__ import annotations

import socket
import struct

import psycopg
import pytest

from compute_node.pgwire import protocol
from tests.test_pgwire_tls_cluster import dsn, psql, start_with_certs

pytestmark = pytest.mark.cluster


def test_insecure_cluster_speaks_plaintext(tmp_path):
    cluster = start_with_certs(tmp_path, insecure=True)
    try:
        port = cluster.config.pg_port(cluster.config.computes[0].name)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(struct.pack("!II", 8, protocol.SSL_REQUEST_CODE))
            assert sock.recv(1) == b"N"
        with psycopg.connect(dsn(cluster, 0, sslmode="disable"), autocommit=True) as conn:
            assert not conn.info.pgconn.ssl_in_use
            assert conn.execute("SELECT 1").fetchone() == (1,)
        done = psql(dsn(cluster, 1, sslmode="disable"), "SELECT 2")
        assert done.returncode == 0 and done.stdout.strip() == "2", done
        with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
            psycopg.connect(dsn(cluster, 2, sslmode="require"))
        log = cluster.config.log_path(cluster.config.computes[0].name).read_text(errors="replace")
        assert "INSECURE, plaintext only" in log
    finally:
        cluster.stop_all()
