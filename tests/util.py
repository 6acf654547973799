"""Helpers for tests that start real processes on 127.0.0.1."""
from __future__ import annotations

import pathlib
import time

from quorumdb import config as config_mod
from tools.launcher import free_base_port, stop_process  # noqa: F401 - re-exported for tests


def make_config(tmp_path: pathlib.Path, **settings) -> config_mod.ClusterConfig:
    cluster = config_mod.default_cluster(tmp_path / "cluster", base_port=free_base_port(), **settings)
    cluster.write()
    return cluster


def poll_until(predicate, what: str, timeout_s: float, every_s: float = 0.05):
    """predicate()'s first true value, asked every `every_s`; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(every_s)


def require(found: object, what: str, install: str) -> None:
    """Fail (never skip) when a program the suite tests with is missing: a skipped test would hide
    whatever it checks. `make test` (scripts/setup test) installs them all."""
    if not found:
        import pytest

        pytest.fail(f"{what} is not installed: run `{install}` (or `make test`, which installs everything)")


def admin_credentials(cluster: config_mod.ClusterConfig):
    """The tools' credentials for a test cluster (CA, admin certificate, a fresh token), or
    plaintext for an insecure one. The launcher makes the certificates when it starts the nodes."""
    from quorumdb import rpc
    from tools.launcher import ensure_certs

    ensure_certs(cluster)
    return rpc.admin_credentials(cluster)


def admin_channel(cluster: config_mod.ClusterConfig, name: str):
    """An aio channel from the test to node `name` of `cluster`, as the tools make one: TLS with
    the admin certificate and a token (plaintext for an insecure cluster)."""
    from quorumdb import rpc

    return rpc.client_channel(cluster.node(name).address, admin_credentials(cluster))


def admin_sync_channel(cluster: config_mod.ClusterConfig, name: str):
    """A synchronous channel from the test to node `name`: a call the admin certificate may make
    goes out with it, any other (a Commit, as a compute node makes it) with compute-az1's
    certificate, so a test can drive the nodes as their peers do."""
    import grpc

    from quorumdb import authz, rpc

    address = cluster.node(name).address
    admin = rpc.sync_client_channel(address, admin_credentials(cluster))
    if cluster.insecure or not cluster.computes:
        return admin
    peer = rpc.sync_client_channel(address, node_credentials(cluster, cluster.computes[0].name))

    class ByRole(grpc.Channel):
        def _pick(self, method):
            return admin if authz.allowed(authz.ADMIN, method) else peer

        def unary_unary(self, method, *args, **kwargs):
            return self._pick(method).unary_unary(method, *args, **kwargs)

        def unary_stream(self, method, *args, **kwargs):
            return self._pick(method).unary_stream(method, *args, **kwargs)

        def stream_unary(self, method, *args, **kwargs):
            return self._pick(method).stream_unary(method, *args, **kwargs)

        def stream_stream(self, method, *args, **kwargs):
            return self._pick(method).stream_stream(method, *args, **kwargs)

        def subscribe(self, callback, try_to_connect=False):
            admin.subscribe(callback, try_to_connect)

        def unsubscribe(self, callback):
            admin.unsubscribe(callback)

        def close(self):
            admin.close()
            peer.close()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()
            return False

    return ByRole()


def node_credentials(cluster: config_mod.ClusterConfig, name: str):
    """Credentials presenting node `name`'s own certificate: for a test that plays that node
    in-process (a compute backend, an adjudicator's journal writer) against a running cluster,
    where the role decides what it may call. Plaintext for an insecure cluster."""
    from quorumdb import certs
    from quorumdb.credentials import ClientCredentials
    from tools.launcher import ensure_certs

    if cluster.insecure:
        return ClientCredentials()
    ensure_certs(cluster)
    key, cert = certs.read_pair(cluster.certs_path, cluster.cert_name(name))
    return ClientCredentials(ca_pem=certs.read_ca(cluster.certs_path), key_pem=key, cert_pem=cert)
