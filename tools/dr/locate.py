"""Which object store holds a cluster's backup, for the recovery commands.

A command names the backup in one of three ways, and gets back a `Located` (the store's
location, how it was found, and the cluster's storage nodes when there is a cluster to ask):

  * `--base-port N [--host H]`: the running cluster's supervisor (`quorumdb up`, base port + 39)
    says where the cluster's files and backup are (its Nodes reply), and which nodes it runs;
  * `--data-dir DIR`: DIR/cluster.toml (ClusterConfig.backup_location), cluster running or not;
  * `--from DIR|s3://bucket/prefix`: the store itself, no cluster (a lost cluster's backup).

With none of them, the default base port is asked, as `quorumdb status` and `chaos` do.
Nothing here opens the store: a caller that only prints where the backup is need not reach it.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib

import grpc

from quorumdb import config as config_mod
from quorumdb import limits, rpc
from tools import supervisor as supervisor_mod
from tools import toolcreds
from quorumdb.pb import supervisor_pb2, supervisor_pb2_grpc


class LocateError(Exception):
    """The backup cannot be found that way (the message says why and what to try)."""


@dataclasses.dataclass(frozen=True)
class Located:
    location: str  # what objectstore.open_store takes: an absolute directory or s3://bucket/prefix
    found_through: str  # for output: "the supervisor at 127.0.0.1:7139", "DIR/cluster.toml", "--from"
    data_dir: pathlib.Path | None = None  # the cluster's data directory (None: --from)
    storage_nodes: tuple[config_mod.NodeConfig, ...] = ()  # the copies to ask for their backup status


def from_supervisor(base_port: int, host: str = supervisor_mod.HOST,
                    timeout_s: float = limits.CHAOS_CONNECT_TIMEOUT_S, credentials=None) -> Located:
    """`credentials` (tools/toolcreds.py): default, $QUORUMDB_TOKEN/$QUORUMDB_CA or the default data directory's."""
    target = supervisor_mod.address(base_port, host)
    with toolcreds.sync_channel(target, credentials if credentials is not None else toolcreds.source()) as channel:
        try:
            reply = supervisor_pb2_grpc.SupervisorStub(channel).Nodes(supervisor_pb2.NodesRequest(), timeout=timeout_s)
        except grpc.RpcError as error:
            if error.code() in rpc.UNREACHABLE:
                raise LocateError(f"no `quorumdb up` answers at {target} (its supervisor listens on base port + "
                                  f"{supervisor_mod.PORT_OFFSET}): is it running with --base-port {base_port}? "
                                  "Otherwise name the cluster with --data-dir DIR or the backup with --from") from None
            raise LocateError(f"the supervisor at {target}: {error.code().name}: {error.details()}") from None
    if not reply.backup_location:
        raise LocateError(f"the supervisor at {target} does not say where its backup is (a `quorumdb up` older than "
                          "the backup): use --data-dir DIR or --from")
    storages = tuple(_node(n) for n in reply.nodes if n.service == "storage")
    return Located(reply.backup_location, f"the supervisor at {target}",
                   pathlib.Path(reply.data_dir) if reply.data_dir else None, storages)


def _node(supervised: supervisor_pb2.SupervisedNode) -> config_mod.NodeConfig:
    host, _, port = supervised.address.rpartition(":")
    return config_mod.NodeConfig(supervised.name, supervised.service, supervised.az, host, int(port))


def from_data_dir(data_dir: pathlib.Path | str) -> Located:
    path = pathlib.Path(data_dir).resolve() / config_mod.CONFIG_FILE
    if not path.exists():
        raise LocateError(f"no cluster file at {path}: --data-dir names a cluster's data directory "
                          "(use --from for a backup without its cluster)")
    try:
        cluster = config_mod.load(path)
    except (OSError, ValueError) as error:
        raise LocateError(f"cannot read {path}: {error}") from None
    return Located(cluster.backup_location, str(path), cluster.data_dir, tuple(cluster.storages))


def from_location(text: str) -> Located:
    """--from: an s3://bucket[/prefix] URL, or a directory that exists."""
    if text.startswith("s3://"):
        bucket = text[len("s3://"):].split("/", 1)[0]
        if not bucket:
            raise LocateError(f"--from {text!r}: no bucket (use s3://bucket/prefix)")
        return Located(text, "--from")
    if not text.strip():
        raise LocateError("--from needs a directory or s3://bucket/prefix")
    path = pathlib.Path(text).expanduser().resolve()
    if not path.is_dir():
        # A typo must not become an empty store (a snapshot written there would be lost).
        raise LocateError(f"--from {text}: no such directory")
    return Located(str(path), "--from")


def locate(base_port: int | None = None, host: str = supervisor_mod.HOST, data_dir: str | None = None,
           location: str | None = None) -> Located:
    """At most one of base_port, data_dir, location; none: the default base port's supervisor."""
    given = [name for name, value in (("--base-port", base_port), ("--data-dir", data_dir), ("--from", location))
             if value is not None]
    if len(given) > 1:
        raise LocateError(f"{' and '.join(given)} both name a backup: give one")
    if location is not None:
        return from_location(location)
    if data_dir is not None:
        return from_data_dir(data_dir)
    return from_supervisor(config_mod.DEFAULT_BASE_PORT if base_port is None else base_port, host)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `locate_from_args` reads (mutually exclusive but --host)."""
    group = parser.add_argument_group("which backup (one of; default: the cluster on the default base port)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--base-port", type=int, default=None, metavar="N",
                        help=f"a running cluster's base port (default {config_mod.DEFAULT_BASE_PORT}); its "
                             f"supervisor (base + {supervisor_mod.PORT_OFFSET}) says where the backup is")
    choice.add_argument("--data-dir", default=None, metavar="DIR", help="a cluster's data directory: its cluster.toml names the backup")
    choice.add_argument("--from", dest="from_location", default=None, metavar="DIR|s3://bucket/prefix",
                        help="the backup's object store itself")
    group.add_argument("--host", default=supervisor_mod.HOST, help="host of `quorumdb up` (default 127.0.0.1)")


def locate_from_args(args: argparse.Namespace) -> Located:
    return locate(args.base_port, args.host, args.data_dir, args.from_location)
