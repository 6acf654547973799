"""TLS on the PostgreSQL endpoint, with real clients against the in-process server (no cluster).

The server (tests/pgwire_util.ServerThread) gets a certificate from a CA made here with
quorumdb/certs.py, as a compute node of a cluster that is not --insecure: SSLRequest is answered
'S', plaintext startups are refused, SCRAM-SHA-256-PLUS binds the exchange to the certificate, and
a rotated certificate is served to new connections. tests/test_pgwire_tls_cluster.py does the same
against real processes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import socket
import ssl
import struct
import subprocess

import psycopg
import pytest

from compute_node.pgwire import protocol
from compute_node.pgwire.tls import for_node
from quorumdb import certs
from tests.pgwire_util import ServerThread
from tests.util import require

NODE = "compute1"
PSQL = "/usr/bin/psql"


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("certs")
    certs.ensure(directory, [(NODE, certs.default_hosts(NODE))])
    return directory


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("other")
    certs.ensure(directory, [])
    return certs.ca_path(directory)


@pytest.fixture
def server(certs_dir):
    started = ServerThread(tls=for_node(certs_dir, NODE), ca_path=str(certs.ca_path(certs_dir)))
    yield started
    started.stop()


def verified(server: ServerThread, certs_dir: pathlib.Path, **extra) -> str:
    return server.dsn(sslmode="verify-full", sslrootcert=certs.ca_path(certs_dir), **extra)


def ssl_request() -> bytes:
    return struct.pack("!II", 8, protocol.SSL_REQUEST_CODE)


def startup(user: str = "admin") -> bytes:
    body = struct.pack("!I", protocol.PROTOCOL_3_0) + b"user\0" + user.encode() + b"\0database\0postgres\0\0"
    return struct.pack("!I", len(body) + 4) + body


def read_message(sock) -> tuple[bytes, bytes]:
    def exact(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data
    header = exact(5)
    return header[:1], exact(struct.unpack("!I", header[1:])[0] - 4)


def error_fields(body: bytes) -> dict[str, str]:
    return {part[:1].decode(): part[1:].decode() for part in body.split(b"\0") if part}


def served_certificate(port: int) -> bytes:
    """The DER certificate the endpoint presents to a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(ssl_request())
        assert sock.recv(1) == b"S"
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(sock) as wrapped:
            return wrapped.getpeercert(binary_form=True)


def test_psycopg_verify_full_with_channel_binding(server, certs_dir):
    with psycopg.connect(verified(server, certs_dir, channel_binding="require"), autocommit=True) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
    with psycopg.connect(server.dsn(sslmode="require"), autocommit=True) as conn:  # encrypted, not verified
        assert conn.info.pgconn.ssl_in_use
    with psycopg.connect(server.dsn(), autocommit=True) as conn:  # libpq's default sslmode=prefer
        assert conn.info.pgconn.ssl_in_use


def test_plaintext_is_refused_with_what_to_do(server, certs_dir):
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(server.dsn(sslmode="disable"))
    assert "SSL is required: connect with sslmode=require (the cluster is not --insecure)" in str(caught.value)
    require(os.path.exists(PSQL), "psql", "bash scripts/install-postgres")
    done = subprocess.run([PSQL, server.dsn(sslmode="disable"), "-X", "-c", "SELECT 1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "FATAL:  SSL is required: connect with sslmode=require" in done.stderr
    assert "no encryption" in done.stderr and str(certs.ca_path(certs_dir)) in done.stderr, done.stderr
    done = subprocess.run([PSQL, verified(server, certs_dir, channel_binding="require"), "-X", "-A", "-t",
                           "-c", "SELECT 40 + 2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "42", done


def test_verify_full_against_another_ca_fails(server, other_ca):
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(server.dsn(sslmode="verify-full", sslrootcert=other_ca))


def test_pg8000_and_asyncpg_over_tls(server, certs_dir, caplog):
    """Two drivers that do not use libpq: pg8000 (scramp: SCRAM-SHA-256-PLUS when it can bind) and
    asyncpg (plain SCRAM over TLS, flag n), both verifying the server with the CA."""
    import asyncpg
    import pg8000.native

    caplog.set_level(logging.INFO, logger="compute_node.pgwire")
    context = ssl.create_default_context(cafile=str(certs.ca_path(certs_dir)))
    conn = pg8000.native.Connection("admin", host="127.0.0.1", port=server.port, password=server.token(),
                                    database="postgres", ssl_context=context, timeout=10)
    try:
        assert conn.run("SELECT 2 * 21") == [[42]]
    finally:
        conn.close()
    assert "(TLS, SCRAM-SHA-256-PLUS)" in caplog.text, "pg8000 binds when it can"
    caplog.clear()

    async def run():
        connection = await asyncpg.connect(host="127.0.0.1", port=server.port, user="admin",
                                           password=server.token(), database="postgres", ssl=context, timeout=10)
        try:
            return await connection.fetchval("SELECT 6 * 7")
        finally:
            await connection.close()
    assert asyncio.run(run()) == 42
    assert "(TLS, SCRAM-SHA-256)" in caplog.text, "asyncpg does not bind: plain SCRAM, flag n, accepted over TLS"


def test_ssl_request_handshake_and_unencrypted_bytes_after_it(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(struct.pack("!II", 8, protocol.GSSENC_REQUEST_CODE))
        assert sock.recv(1) == b"N", "no GSSAPI encryption"
        sock.sendall(ssl_request())
        assert sock.recv(1) == b"S"
    # A startup sent right behind SSLRequest, before the answer, would be read as if it had come
    # through TLS: refused in plaintext, nothing is answered 'S'.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(ssl_request() + startup())
        kind, body = read_message(sock)
        assert kind == b"E" and "unencrypted data after SSL request" in error_fields(body)["M"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(startup())
        kind, body = read_message(sock)
        fields = error_fields(body)
        assert kind == b"E" and fields["S"] == "FATAL" and fields["C"] == "28000", fields


def test_rotated_certificate_serves_new_connections(tmp_path):
    certs.ensure(tmp_path, [(NODE, certs.default_hosts(NODE))])
    server = ServerThread(tls=for_node(tmp_path, NODE))
    try:
        before = served_certificate(server.port)
        kept = psycopg.connect(verified(server, tmp_path, channel_binding="require"), autocommit=True)
        try:
            certs.rotate(tmp_path, NODE)
            after = served_certificate(server.port)
            assert after != before
            assert after == ssl.PEM_cert_to_DER_cert(certs.pair_paths(tmp_path, NODE)[0].read_text())
            assert kept.execute("SELECT 1").fetchone() == (1,), "an established connection keeps its TLS session"
        finally:
            kept.close()
        # The channel binding follows the certificate now presented.
        with psycopg.connect(verified(server, tmp_path, channel_binding="require"), autocommit=True) as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        server.stop()


def test_missing_certificate_refuses_and_names_the_file(tmp_path):
    source = for_node(tmp_path / "nowhere", NODE)
    server = ServerThread(tls=source)
    try:
        with pytest.raises(psycopg.OperationalError) as caught:
            psycopg.connect(server.dsn(sslmode="prefer"))
        assert "SSL is required, but this node cannot serve it" in str(caught.value)
        assert str(source.cert_path) in str(caught.value)
    finally:
        server.stop()


def test_insecure_endpoint_keeps_plaintext():
    server = ServerThread()  # no certificate: an --insecure cluster's endpoint
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(ssl_request())
            assert sock.recv(1) == b"N"
        with psycopg.connect(server.dsn(sslmode="disable"), autocommit=True) as conn:
            assert not conn.info.pgconn.ssl_in_use
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.dsn(sslmode="require"))
    finally:
        server.stop()
