"""A cluster with TLS on (the default): who the nodes let in.

One cluster for the module. Journal, adjudicator and storage nodes refuse a caller without a
certificate of the cluster's CA at the handshake, and refuse a peer's certificate for a call that
role never makes (PERMISSION_DENIED); compute nodes and the supervisor want a valid token of this
cluster. A storage node's certificate rotated while it runs: a new connection sees the new one.
"""
from __future__ import annotations

import hashlib
import pathlib
import socket
import ssl
import time
import uuid

import grpc
import pytest

from quorumdb import certs, rpc, tokens
from quorumdb import config as config_mod
from quorumdb.clock import Clock
from quorumdb.credentials import ClientCredentials
from quorumdb.pb import (adjudicator_pb2, adjudicator_pb2_grpc, common_pb2, compute_pb2, compute_pb2_grpc,
                         journal_pb2, journal_pb2_grpc, storage_pb2, storage_pb2_grpc, supervisor_pb2,
                         supervisor_pb2_grpc)
from tests.util import admin_credentials, make_config, node_credentials
from tools import supervisor as supervisor_mod
from tools.launcher import STUBS, Cluster

pytestmark = pytest.mark.cluster

READY_TIMEOUT_S = 90.0
CALL_TIMEOUT_S = 5.0
DEADLINE_S = 60.0
MTLS_NODES = ("journal-az1", "adjudicator-az1", "storage-az1-a")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    launched = Cluster(make_config(tmp_path_factory.mktemp("tls")))
    assert not launched.config.insecure
    supervisor_server = None
    try:
        launched.start()
        launched.wait_ready(timeout_s=READY_TIMEOUT_S, healthy=True)
        supervisor = supervisor_mod.Supervisor(launched, lambda text: None)
        supervisor_server = supervisor_mod.serve(supervisor, supervisor_mod.address(base_port(launched.config)))
        yield launched
    finally:
        if supervisor_server is not None:
            supervisor_server.stop(grace=None)
        launched.stop_all()


def base_port(config) -> int:
    return config.node("journal-az1").port - config_mod.PORT_OFFSET["journal"]


def status(config, name: str, credentials: ClientCredentials | None, server_name: str | None = None):
    node = config.node(name)
    with rpc.sync_client_channel(node.address, credentials, server_name) as channel:
        return STUBS[node.service](channel).Status(common_pb2.StatusRequest(), timeout=CALL_TIMEOUT_S)


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def other_cluster_admin(tmp_path: pathlib.Path, config) -> ClientCredentials:
    """The admin certificate of another cluster's CA, trusting this cluster's CA (so only the
    server's verification of the client can fail)."""
    other = tmp_path / "other-certs"
    certs.ensure(other, [])
    key, cert = certs.read_pair(other, certs.ADMIN)
    return ClientCredentials(ca_pem=certs.read_ca(config.certs_path), key_pem=key, cert_pem=cert)


def test_no_certificate_or_another_cluster_s_is_refused_by_every_node_role(cluster, tmp_path):
    config = cluster.config
    ca_only = ClientCredentials(ca_pem=certs.read_ca(config.certs_path))
    foreign = other_cluster_admin(tmp_path, config)
    for name in MTLS_NODES:
        for credentials in (ca_only, foreign, None):  # None: plaintext at a TLS port
            error = refused(lambda: status(config, name, credentials))
            assert error.code() == grpc.StatusCode.UNAVAILABLE, (name, error)
        assert status(config, name, admin_credentials(config)).health == "ok"


def test_a_peer_certificate_reaches_only_its_role_s_calls(cluster):
    config = cluster.config
    address = config.node("journal-az1").address
    compute = node_credentials(config, "compute-az1")
    storage = node_credentials(config, "storage-az1-a")
    with rpc.sync_client_channel(address, compute) as channel:
        journal = journal_pb2_grpc.JournalStub(channel)
        for call, request in ((journal.Append, journal_pb2.AppendRequest()),
                              (journal.Fence, journal_pb2.FenceRequest())):
            error = refused(lambda: call(request, timeout=CALL_TIMEOUT_S))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
            assert "compute" in error.details()
        assert journal.Status(common_pb2.StatusRequest(), timeout=CALL_TIMEOUT_S).health == "ok"
    with rpc.sync_client_channel(address, storage) as channel:
        error = refused(lambda: journal_pb2_grpc.JournalStub(channel).Fence(journal_pb2.FenceRequest(),
                                                                            timeout=CALL_TIMEOUT_S))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "storage" in error.details()
    with rpc.sync_client_channel(config.node("adjudicator-az1").address, storage) as channel:
        error = refused(lambda: adjudicator_pb2_grpc.AdjudicatorStub(channel).Commit(
            adjudicator_pb2.CommitRequest(txn_id="x"), timeout=CALL_TIMEOUT_S))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "storage" in error.details()


def test_the_admin_certificate_reads_status_everywhere(cluster):
    config = cluster.config
    credentials = admin_credentials(config)
    for node in config.nodes:
        assert status(config, node.name, credentials).health == "ok", node.name
    # Verified by name, as nodes verify each other.
    assert status(config, "storage-az2-a", credentials, server_name="storage-az2-a").health == "ok"


def compute_call(config, credentials: ClientCredentials):
    with rpc.sync_client_channel(config.node("compute-az1").address, credentials) as channel:
        stub = compute_pb2_grpc.ComputeStub(channel)
        reply = stub.OpenSession(compute_pb2.OpenSessionRequest(client="tls-test"), timeout=CALL_TIMEOUT_S)
        stub.CloseSession(compute_pb2.CloseSessionRequest(session_id=reply.session_id), timeout=CALL_TIMEOUT_S)
        return reply


def bad_tokens(config) -> dict[str | None, str]:
    """token -> why it is refused: none, expired, forged, and one of another cluster's secret."""
    secret = tokens.load_secret(tokens.secret_dir(config.data_dir))
    assert secret is not None
    now = time.time()
    expired = tokens.token_for(secret, "admin", int(now) - 60)
    forged = f"qdb1.{int(now) + 600}.{'A' * 43}"
    foreign, _ = tokens.issue(bytes(32), "admin", 900, now)
    return {None: "no token", expired: "token expired", forged: "invalid token", foreign: "invalid token"}


def test_compute_nodes_want_a_valid_token_of_this_cluster(cluster):
    config = cluster.config
    ca = certs.read_ca(config.certs_path)
    secret = tokens.load_secret(tokens.secret_dir(config.data_dir))
    now = time.time()
    for token, why in bad_tokens(config).items():
        error = refused(lambda: compute_call(config, ClientCredentials(ca_pem=ca, token=token)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and why in error.details(), (token, error)
    # The admin certificate is no token: a compute port does not verify client certificates.
    key, cert = certs.read_pair(config.certs_path, certs.ADMIN)
    error = refused(lambda: compute_call(config, ClientCredentials(ca_pem=ca, key_pem=key, cert_pem=cert)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    valid, _ = tokens.issue(secret, "admin", 900, now)
    assert compute_call(config, ClientCredentials(ca_pem=ca, token=valid)).session_id
    # Plaintext at the TLS port: no answer.
    assert refused(lambda: compute_call(config, None)).code() == grpc.StatusCode.UNAVAILABLE


def test_the_supervisor_wants_a_valid_token_of_this_cluster(cluster):
    config = cluster.config
    address = supervisor_mod.address(base_port(config))
    ca = certs.read_ca(config.certs_path)
    for token, why in bad_tokens(config).items():
        with rpc.sync_client_channel(address, ClientCredentials(ca_pem=ca, token=token)) as channel:
            error = refused(lambda: supervisor_pb2_grpc.SupervisorStub(channel).Nodes(supervisor_pb2.NodesRequest(),
                                                                                      timeout=CALL_TIMEOUT_S))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and why in error.details(), (token, error)
    with rpc.sync_client_channel(address, admin_credentials(config)) as channel:
        reply = supervisor_pb2_grpc.SupervisorStub(channel).Nodes(supervisor_pb2.NodesRequest(), timeout=CALL_TIMEOUT_S)
    assert {node.name for node in reply.nodes} == {node.name for node in config.nodes}


def served_fingerprint(config, name: str) -> str:
    """The SHA-256 of the certificate node `name` serves a new connection with (a TLS handshake
    with the admin certificate, as gRPC makes it)."""
    context = ssl.create_default_context(cafile=str(certs.ca_path(config.certs_path)))
    cert_path, key_path = certs.pair_paths(config.certs_path, certs.ADMIN)
    context.load_cert_chain(str(cert_path), str(key_path))
    context.set_alpn_protocols(["h2"])
    node = config.node(name)
    with socket.create_connection((node.host, node.port), timeout=CALL_TIMEOUT_S) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def commit(config, key: bytes, value: bytes) -> int:
    """Commit one write through the leader as a compute node does; its commit ts."""
    clock = Clock(config.clock_error_ns)
    leader = config.initial_leader
    names = [n.name for n in config.adjudicators]
    request = adjudicator_pb2.CommitRequest(writes=[common_pb2.Write(key=key, value=value)], txn_id=uuid.uuid4().hex)
    deadline = time.monotonic() + DEADLINE_S
    last = ""
    while time.monotonic() < deadline:
        request.start_ts = clock.now().latest
        with rpc.sync_client_channel(config.node(leader).address, node_credentials(config, "compute-az1")) as channel:
            try:
                reply = adjudicator_pb2_grpc.AdjudicatorStub(channel).Commit(request, timeout=10)
            except grpc.RpcError as error:
                last = f"{leader}: {error.code()} {error.details()}"
                leader = names[(names.index(leader) + 1) % len(names)]
                time.sleep(0.2)
                continue
        if reply.outcome == adjudicator_pb2.COMMITTED:
            return reply.commit_ts
        last = f"{leader}: {adjudicator_pb2.CommitOutcome.Name(reply.outcome)} {reply.message}"
        assert reply.outcome != adjudicator_pb2.UNKNOWN, last
        if reply.outcome == adjudicator_pb2.NOT_LEADER and reply.leader_hint:
            leader = reply.leader_hint
        time.sleep(0.2)
    pytest.fail(f"no commit within {DEADLINE_S} s: {last}")


def read(config, name: str, key: bytes, ts: int) -> bytes:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        with rpc.sync_client_channel(config.node(name).address, admin_credentials(config)) as channel:
            try:
                reply = storage_pb2_grpc.StorageStub(channel).Get(
                    storage_pb2.GetRequest(keys=[key], ts=ts, wait_ms=2_000), timeout=3)
                return reply.versions[0].value
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                        or time.monotonic() > deadline:
                    raise
        time.sleep(0.1)


def test_rotating_a_storage_certificate_while_it_runs(cluster):
    config = cluster.config
    name = "storage-az1-a"
    before = certs.info_of(certs.pair_paths(config.certs_path, name)[0])
    assert served_fingerprint(config, name) == before.fingerprint
    assert read(config, name, b"tls/rotate", commit(config, b"tls/rotate", b"before")) == b"before"
    pid = cluster.pids[name]
    after = certs.rotate(config.certs_path, name)
    assert after.fingerprint != before.fingerprint
    assert served_fingerprint(config, name) == after.fingerprint  # a new connection: the new certificate
    assert cluster.pids[name] == pid  # the same process: nothing restarted
    assert read(config, name, b"tls/rotate", commit(config, b"tls/rotate", b"after")) == b"after"
    assert status(config, name, admin_credentials(config), server_name=name).health == "ok"
