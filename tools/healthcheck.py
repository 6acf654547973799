"""A container's health check: `python -m tools.healthcheck [--config FILE] [--name NODE]`.

Asks the node running in this container for its Status (gRPC, on 127.0.0.1 at the node's port,
with a deadline) and exits 0 when it answers with health "ok", 1 otherwise, printing one line
(Docker keeps it: `docker inspect --format '{{json .State.Health}}' CONTAINER`). The node and
the cluster file come from the options or, as in the image, from $QUORUMDB_NODE and
$QUORUMDB_CONFIG (see docker/entrypoint.sh).

It imports only grpc, the common protobuf messages and what reads the certificates, so one check
costs little CPU: fifteen containers run it every interval on the same machine.

Unless the cluster is `--insecure` the check speaks TLS, as every client must: it verifies the
node against the cluster's CA and presents the node's own certificate from the certs directory the cluster file names (the compose
deployment mounts it at /etc/quorumdb/certs), and a token minted from the cluster's secret when
the container holds it (a compute node's Status wants a token).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys

import grpc

from quorumdb import config as config_mod
from quorumdb import limits
from quorumdb.pb import common_pb2

DEFAULT_CONFIG = "/etc/quorumdb/cluster.toml"
# gRPC service of each kind of node (proto/<service>.proto; package quorumdb).
GRPC_SERVICES = {"journal": "Journal", "adjudicator": "Adjudicator", "storage": "Storage", "compute": "Compute"}


def check(node: config_mod.NodeConfig, host: str = "127.0.0.1",
          timeout_s: float = limits.STATUS_TIMEOUT_S, cluster: config_mod.ClusterConfig | None = None) -> tuple[bool, str]:
    """(healthy, one line saying why) for the node listening on host:node.port.

    With `cluster` (a secure one), the check calls over TLS presenting the node's own certificate
    (and a token, for a compute node), as its peers do; without, plaintext."""
    method = f"/quorumdb.{GRPC_SERVICES[node.service]}/Status"
    credentials = None
    if cluster is not None and not cluster.insecure:
        from quorumdb import rpc

        credentials = rpc.node_credentials(cluster, node.name)
    with _channel(f"{host}:{node.port}", credentials) as channel:
        status_call = channel.unary_unary(method, request_serializer=common_pb2.StatusRequest.SerializeToString,
                                          response_deserializer=common_pb2.NodeStatus.FromString)
        try:
            status = status_call(common_pb2.StatusRequest(), timeout=timeout_s)
        except grpc.RpcError as error:
            return False, f"{node.name}: no Status answer: {error.code().name} {error.details() or ''}".rstrip()
    line = (f"{node.name}: {status.role} epoch {status.epoch} commit {status.commit_index} scl {status.scl}: "
            f"{status.health}")
    return status.health == "ok", line


def _channel(address: str, credentials) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(address)
    from quorumdb import rpc

    return rpc.sync_client_channel(address, credentials)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.healthcheck",
                                     description="Exit 0 if this container's node answers Status with health ok.")
    parser.add_argument("--config", default=os.environ.get("QUORUMDB_CONFIG", DEFAULT_CONFIG))
    parser.add_argument("--name", default=os.environ.get("QUORUMDB_NODE"))
    parser.add_argument("--host", default="127.0.0.1", help="where the node listens (default 127.0.0.1)")
    # The image's entrypoint passes --data-dir $QUORUMDB_DATA to the node (docker/entrypoint.sh):
    # the check must look where the node keeps its token secret, or a compute node refuses it.
    parser.add_argument("--data-dir", default=os.environ.get("QUORUMDB_DATA") or os.environ.get("QUORUMDB_DATA_DIR"),
                        help="the node's data directory, as its --data-dir (default: $QUORUMDB_DATA, as the "
                             "image's entrypoint uses, else $QUORUMDB_DATA_DIR, else the cluster file's)")
    parser.add_argument("--timeout", type=float, default=limits.STATUS_TIMEOUT_S, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.name:
        parser.error("no node: pass --name or set QUORUMDB_NODE")
    cluster = config_mod.load(args.config)
    if args.data_dir:  # where the node keeps its data (and, by default, the certs and token secret)
        cluster = dataclasses.replace(cluster, data_dir=pathlib.Path(args.data_dir).resolve())
    node = cluster.node(args.name)
    healthy, line = check(node, args.host, args.timeout, cluster)
    print(line)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
