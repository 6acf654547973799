"""What clients and tools present to a cluster (quorumdb/credentials.py, rpc.client_channel).

Story: a client finds its token and CA by one rule (arguments, then QUORUMDB_TOKEN / QUORUMDB_CA /
QUORUMDB_DATA_DIR, then ./quorumdb-data) and says plainly how to give a token when it finds none;
an --insecure cluster is talked to in plaintext; a token minted from the data directory verifies
with the cluster's secret. Over TLS (a compute node faked in process with a certificate of a
cluster CA) the client sends `authorization: Bearer <token>` on every call, accepts the node's
certificate of its CA and refuses one of another CA; a refusal by the node becomes 28000, 28P01
or 42501 with the node's message.
"""
from __future__ import annotations

import asyncio
import pathlib
import time

import grpc
import pytest

from quorumdb import certs, client, credentials, errors, regions, rpc, tokens
from quorumdb import config as config_mod
from quorumdb.pb import compute_pb2, compute_pb2_grpc
from tests.util import free_base_port
from tools import qsql, toolcreds

NOW_S = 1_800_000_000.0
CALL_TIMEOUT_S = 10.0


@pytest.fixture(autouse=True)
def no_environment(monkeypatch, tmp_path):
    """Nothing from the developer's environment or working directory leaks into a test."""
    for name in (credentials.TOKEN_ENV, credentials.CA_ENV, credentials.DATA_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def make_cluster(data_dir: pathlib.Path, insecure: bool = False, **settings) -> config_mod.ClusterConfig:
    cluster = config_mod.default_cluster(data_dir, base_port=free_base_port(), insecure=insecure, **settings)
    cluster.write()
    if not insecure:
        certs.ensure(cluster.certs_path, [(cluster.cert_name(n.name), certs.default_hosts(n.name)) for n in cluster.computes])
    return cluster


def secret_of(data_dir: pathlib.Path) -> bytes:
    secret = tokens.load_secret(tokens.secret_dir(data_dir))
    assert secret is not None
    return secret


# --- the rule ------------------------------------------------------------------------------------
def test_for_data_dir_gives_the_ca_the_admin_certificate_and_a_token_that_verifies(tmp_path):
    cluster = make_cluster(tmp_path / "c")
    found = credentials.for_data_dir(cluster.data_dir, user="alice", lifetime_s=900, now_s=NOW_S)
    assert found.tls
    assert found.ca_pem == certs.read_ca(cluster.certs_path)
    assert (found.key_pem, found.cert_pem) == certs.read_pair(cluster.certs_path, certs.ADMIN)
    verdict = tokens.verify(secret_of(cluster.data_dir), "alice", found.token, NOW_S + 60)
    assert verdict.ok, verdict.reason
    assert NOW_S + 900 <= verdict.expiry_s <= NOW_S + 900 + 300
    assert not tokens.verify(secret_of(cluster.data_dir), "bob", found.token, NOW_S + 60).ok


def test_an_insecure_cluster_is_plaintext(tmp_path):
    cluster = make_cluster(tmp_path / "c", insecure=True)
    assert credentials.for_data_dir(cluster.data_dir) is credentials.INSECURE
    assert credentials.resolve(data_dir=cluster.data_dir) == credentials.INSECURE
    assert credentials.resolve(token="qdb1.1.x", data_dir=cluster.data_dir) == credentials.INSECURE
    assert credentials.resolve(insecure=True) == credentials.INSECURE


def test_a_global_database_uses_its_first_regions_file_and_the_global_secret(tmp_path):
    root = (tmp_path / "g").resolve()
    base = free_base_port()
    global_cfg = regions.layout(root, [("us", "primary"), ("eu", "secondary")], base)
    global_cfg.write()
    for region in global_cfg.regions:
        config_mod.default_cluster(region.data_dir, base_port=region.base_port, region=region.name,
                                   global_file=str(global_cfg.path), certs_dir=str(root / "certs")).write()
    certs.ensure(root / "certs", [])
    found = credentials.for_data_dir(root, now_s=NOW_S)
    assert found.ca_pem == certs.read_ca(root / "certs")
    assert tokens.verify(secret_of(root), "admin", found.token, NOW_S).ok
    # a region's directory gives a token of the same (global) secret
    again = credentials.for_data_dir(global_cfg.regions[1].data_dir, now_s=NOW_S)
    assert tokens.verify(secret_of(root), "admin", again.token, NOW_S).ok


def test_precedence_arguments_then_environment_then_data_dir(tmp_path, monkeypatch):
    cluster = make_cluster(tmp_path / "c")
    other_ca = tmp_path / "other-ca"
    certs.ensure(other_ca, [])
    ca_file = str(certs.ca_path(other_ca))

    # the data directory alone supplies everything
    from_dir = credentials.resolve(data_dir=cluster.data_dir)
    assert from_dir.ca_pem == certs.read_ca(cluster.certs_path) and from_dir.token and from_dir.cert_pem

    # the environment replaces the token and the CA, the data directory still gives the certificate
    monkeypatch.setenv(credentials.TOKEN_ENV, "env-token")
    monkeypatch.setenv(credentials.CA_ENV, ca_file)
    from_env = credentials.resolve(data_dir=cluster.data_dir)
    assert from_env.token == "env-token"
    assert from_env.ca_pem == certs.read_ca(other_ca)
    assert from_env.cert_pem == from_dir.cert_pem

    # arguments win over the environment
    assert credentials.resolve(token="arg-token", data_dir=cluster.data_dir).token == "arg-token"
    assert credentials.resolve(token="t", ca=str(certs.ca_path(cluster.certs_path))).ca_pem == from_dir.ca_pem

    # no data directory: the token and the CA of the environment are enough
    alone = credentials.resolve()
    assert (alone.token, alone.ca_pem, alone.cert_pem) == ("env-token", certs.read_ca(other_ca), None)

    # QUORUMDB_DATA_DIR, then the default directory (only when it holds a cluster)
    monkeypatch.delenv(credentials.TOKEN_ENV)
    monkeypatch.delenv(credentials.CA_ENV)
    monkeypatch.setenv(credentials.DATA_DIR_ENV, str(cluster.data_dir))
    assert credentials.resolve().ca_pem == from_dir.ca_pem
    monkeypatch.delenv(credentials.DATA_DIR_ENV)
    assert credentials.resolve(default_data_dir=cluster.data_dir).ca_pem == from_dir.ca_pem
    with pytest.raises(credentials.CredentialsError):
        credentials.resolve(default_data_dir=tmp_path / "not-a-cluster")


def test_missing_token_or_ca_says_how_to_give_them(tmp_path):
    with pytest.raises(credentials.CredentialsError) as raised:
        credentials.resolve()
    message = str(raised.value)
    assert message.startswith("no token supplied")
    for hint in ("--token", "QUORUMDB_TOKEN", "--data-dir", "QUORUMDB_DATA_DIR", "quorumdb token", "--insecure"):
        assert hint in message
    assert "\n" not in message

    with pytest.raises(credentials.CredentialsError, match=r"no cluster CA .*--ca PATH .*QUORUMDB_CA"):
        credentials.resolve(token="t")
    with pytest.raises(credentials.CredentialsError, match=r"cannot read the cluster CA .*missing\.crt \(--ca\)"):
        credentials.resolve(token="t", ca=str(tmp_path / "missing.crt"))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(credentials.CredentialsError, match="not a PEM certificate"):
        credentials.resolve(token="t", ca=str(not_pem))
    with pytest.raises(credentials.CredentialsError, match="no cluster file"):
        credentials.resolve(data_dir=tmp_path / "nothing-here")
    cluster = config_mod.default_cluster(tmp_path / "no-certs", base_port=free_base_port())
    cluster.write()
    with pytest.raises(credentials.CredentialsError, match="no cluster CA"):
        credentials.for_data_dir(cluster.data_dir)


def test_a_source_renews_a_minted_token_before_it_expires(tmp_path, monkeypatch):
    cluster = make_cluster(tmp_path / "c")
    source = credentials.Source(data_dir=cluster.data_dir)
    expiry = credentials.token_expiry(source.current.token)
    assert source.renew_at == expiry - credentials.TOKEN_RENEW_MARGIN_S
    assert not source.due()
    monkeypatch.setattr(credentials.time, "time", lambda: expiry - 60.0)
    assert source.due()
    renewed = source.renew()
    assert credentials.token_expiry(renewed.token) > expiry
    assert tokens.verify(secret_of(cluster.data_dir), "admin", renewed.token, expiry - 60.0).ok
    # a token the caller gave is never renewed
    given = credentials.Source(token="qdb1.5.abc", data_dir=cluster.data_dir)
    assert given.renew_at is not None  # once: renewing finds the same token, and then stops
    given.renew()
    assert given.renew_at is None
    assert credentials.token_expiry("not a token") is None


# --- the client's arguments -------------------------------------------------------------------------
def test_connect_without_credentials_is_28000_saying_how(tmp_path):
    with pytest.raises(client.DatabaseError) as raised:
        client.connect("127.0.0.1", free_base_port(), timeout_s=1.0)
    assert raised.value.sqlstate == errors.INVALID_AUTHORIZATION_SPECIFICATION == "28000"
    assert not isinstance(raised.value, client.OperationalError)  # never retried by run_transaction
    assert "no token supplied" in raised.value.message


def test_connect_insecure_tries_plaintext(tmp_path):
    with pytest.raises(client.OperationalError) as raised:
        client.connect("127.0.0.1", free_base_port(), timeout_s=1.0, insecure=True)
    assert raised.value.sqlstate == errors.SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION


def test_qsql_flags_and_one_line_error(tmp_path, capsys):
    args = qsql.build_parser().parse_args(["--token", "T", "--ca", "ca.crt", "--data-dir", "d", "--insecure"])
    assert qsql.connect_options(args) == {"token": "T", "ca": "ca.crt", "data_dir": "d", "insecure": True}
    args = qsql.build_parser().parse_args([])
    assert qsql.connect_options(args) == {"token": None, "ca": None, "data_dir": None, "insecure": False}

    port = free_base_port()
    assert qsql.main(["-p", str(port), "-X", "-c", "select 1"]) == qsql.EXIT_CONNECTION
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f'port {port} failed: no token supplied: give --token or set QUORUMDB_TOKEN' in err


def test_tools_take_the_data_dir_and_their_flags(tmp_path, monkeypatch):
    cluster = make_cluster(tmp_path / "c")
    import argparse

    parser = argparse.ArgumentParser()
    toolcreds.add_arguments(parser)
    args = parser.parse_args(["--token", "flag-token"])
    source = toolcreds.for_args(args, cluster.data_dir)
    assert source.current.token == "flag-token" and source.current.cert_pem is not None
    assert toolcreds.for_cluster(cluster).current.ca_pem == certs.read_ca(cluster.certs_path)
    with pytest.raises(SystemExit, match="no token supplied"):
        toolcreds.source(tmp_path / "elsewhere")
    assert toolcreds.source(tmp_path / "elsewhere", required=False) is None
    assert toolcreds.for_args(parser.parse_args(["--insecure"])).current == credentials.INSECURE


# --- over TLS, against a compute node faked in process ---------------------------------------------
class FakeCompute(compute_pb2_grpc.ComputeServicer):
    """Records each call's authorization metadata; refuses calls as told."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        self.refuse: tuple[grpc.StatusCode, str] | None = None

    async def OpenSession(self, request, context):
        metadata = dict(context.invocation_metadata())
        self.authorizations.append(metadata.get("authorization"))
        if self.refuse is not None:
            await context.abort(*self.refuse)
        return compute_pb2.OpenSessionReply(session_id="s1")

    async def Execute(self, request, context):
        self.authorizations.append(dict(context.invocation_metadata()).get("authorization"))
        result = compute_pb2.StatementResult(command_tag="SELECT 1")
        return compute_pb2.ExecuteReply(results=[result], transaction_status="I")

    async def CloseSession(self, request, context):
        return compute_pb2.CloseSessionReply()


async def serve_tls(certs_dir: pathlib.Path, name: str = "compute-az1") -> tuple[grpc.aio.Server, FakeCompute, int]:
    certs.ensure(certs_dir, [(name, certs.default_hosts(name))])
    key_pem, cert_pem = certs.read_pair(certs_dir, name)
    server = grpc.aio.server()
    fake = FakeCompute()
    compute_pb2_grpc.add_ComputeServicer_to_server(fake, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    await server.start()
    return server, fake, port


async def test_the_channel_sends_the_token_and_verifies_the_node_against_the_ca(tmp_path):
    cluster = make_cluster(tmp_path / "c")
    server, fake, port = await serve_tls(cluster.certs_path)
    try:
        found = credentials.for_data_dir(cluster.data_dir)
        async with rpc.client_channel(f"127.0.0.1:{port}", found) as channel:
            reply = await compute_pb2_grpc.ComputeStub(channel).OpenSession(
                compute_pb2.OpenSessionRequest(client="t"), timeout=CALL_TIMEOUT_S)
        assert reply.session_id == "s1"
        assert fake.authorizations == [f"Bearer {found.token}"]

        # the node's name, verified as asked (its certificate names it), dialled by IP
        async with rpc.client_channel(f"127.0.0.1:{port}", found, server_name="compute-az1") as channel:
            await compute_pb2_grpc.ComputeStub(channel).OpenSession(compute_pb2.OpenSessionRequest(),
                                                                     timeout=CALL_TIMEOUT_S)
        async with rpc.client_channel(f"127.0.0.1:{port}", found, server_name="storage-az1-a") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await compute_pb2_grpc.ComputeStub(channel).OpenSession(compute_pb2.OpenSessionRequest(),
                                                                         timeout=CALL_TIMEOUT_S)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE

        # the client library: every statement carries the token
        connection = await client.connect_async("127.0.0.1", port, data_dir=cluster.data_dir, timeout_s=CALL_TIMEOUT_S)
        try:
            await connection.execute("SELECT 1")
        finally:
            await connection.close()
        assert fake.authorizations[-2:] == [fake.authorizations[-1]] * 2
        assert fake.authorizations[-1].startswith("Bearer qdb1.")
    finally:
        await server.stop(grace=None)


async def test_a_node_of_another_ca_is_refused(tmp_path):
    cluster = make_cluster(tmp_path / "c")
    server, fake, port = await serve_tls(tmp_path / "another-cluster-certs")
    try:
        async with rpc.client_channel(f"127.0.0.1:{port}", credentials.for_data_dir(cluster.data_dir)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await compute_pb2_grpc.ComputeStub(channel).OpenSession(compute_pb2.OpenSessionRequest(),
                                                                         timeout=CALL_TIMEOUT_S)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert fake.authorizations == []  # no call reached the node: the token never left the client

        def sync_connect():
            return client.connect("127.0.0.1", port, data_dir=cluster.data_dir, timeout_s=CALL_TIMEOUT_S)

        with pytest.raises(client.OperationalError) as refused:
            await asyncio.to_thread(sync_connect)
        assert refused.value.sqlstate == errors.SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION
        assert refused.value.hint.startswith("TLS failed: the node's certificate is not of the CA given")
        assert fake.authorizations == []
    finally:
        await server.stop(grace=None)


@pytest.mark.parametrize("code, token, sqlstate", [
    (grpc.StatusCode.UNAUTHENTICATED, True, "28P01"),
    (grpc.StatusCode.UNAUTHENTICATED, False, "28000"),
    (grpc.StatusCode.PERMISSION_DENIED, True, "42501"),
])
async def test_a_refusal_by_the_node_is_an_authorization_error(tmp_path, code, token, sqlstate):
    cluster = make_cluster(tmp_path / "c")
    server, fake, port = await serve_tls(cluster.certs_path)
    fake.refuse = (code, "token expired 12 s ago")
    found = credentials.for_data_dir(cluster.data_dir)
    if not token:
        found = credentials.ClientCredentials(ca_pem=found.ca_pem)
    try:
        def sync_connect():
            return client.connect("127.0.0.1", port, credentials=found, timeout_s=CALL_TIMEOUT_S)

        with pytest.raises(client.DatabaseError) as raised:
            await asyncio.to_thread(sync_connect)
        assert raised.value.sqlstate == sqlstate
        assert "token expired 12 s ago" in raised.value.message
        assert not isinstance(raised.value, client.OperationalError)
        with pytest.raises(client.DatabaseError) as raised_async:
            await client.connect_async("127.0.0.1", port, credentials=found, timeout_s=CALL_TIMEOUT_S)
        assert raised_async.value.sqlstate == sqlstate
    finally:
        await server.stop(grace=None)


async def test_a_connection_renews_its_token_before_it_expires(tmp_path, monkeypatch):
    cluster = make_cluster(tmp_path / "c")
    server, fake, port = await serve_tls(cluster.certs_path)
    try:
        connection = await client.connect_async("127.0.0.1", port, data_dir=cluster.data_dir, timeout_s=CALL_TIMEOUT_S)
        try:
            first = fake.authorizations[-1]
            expiry = credentials.token_expiry(first.removeprefix("Bearer "))
            later = expiry - 60.0
            monkeypatch.setattr(credentials.time, "time", lambda: later)
            await connection.execute("SELECT 1")
            renewed = fake.authorizations[-1].removeprefix("Bearer ")
            assert renewed != first.removeprefix("Bearer ")
            assert tokens.verify(secret_of(cluster.data_dir), "admin", renewed, later).ok
        finally:
            await connection.close()
    finally:
        await server.stop(grace=None)


def test_tool_channels_and_statuses_go_through_client_channel(tmp_path):
    cluster = make_cluster(tmp_path / "c")

    async def scenario() -> None:
        server, fake, port = await serve_tls(cluster.certs_path)
        try:
            channels = toolcreds.Channels(toolcreds.for_cluster(cluster))
            try:
                stub = compute_pb2_grpc.ComputeStub(channels.get(f"127.0.0.1:{port}"))
                await stub.OpenSession(compute_pb2.OpenSessionRequest(), timeout=CALL_TIMEOUT_S)
                assert channels.get(f"127.0.0.1:{port}") is channels.get(f"127.0.0.1:{port}")
            finally:
                await channels.close()
            assert fake.authorizations[-1].startswith("Bearer qdb1.")
        finally:
            await server.stop(grace=None)

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 60
