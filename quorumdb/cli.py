"""The `quorumdb` command: run a local cluster and look at it.

    quorumdb up [--data-dir DIR] [--base-port N] [--ready-timeout S]
    quorumdb status [--base-port N] [--host H] [--data-dir DIR] [--json]

`up` runs the whole cluster (3 journal, 3 adjudicator, 6 storage, 3 compute
nodes) as separate processes on 127.0.0.1. The data directory defaults to
`./quorumdb-data` (or $QUORUMDB_DATA_DIR); its `cluster.toml` is written on the
first run and reused afterwards, so a restart on the same directory finds every
committed row again (a `--base-port` that disagrees with the existing file is
ignored with a warning). It waits, within a bound, until every node answers
Status, every compute node reports health "ok" and `SELECT 1` works through
compute-az1, prints the nodes and endpoints and a line with `ready`, then
watches its nodes (reporting any that exit) until Ctrl-C or SIGTERM, when it
stops them (SIGTERM, then SIGKILL after a bounded wait) and exits 0. If the
cluster does not become ready it stops what it started, points at the logs and
exits 1.

`status` asks every node for its Status concurrently, each call with a
deadline, and prints one row per node; a node that does not answer is "down".
Exit status 0 when every node answered, 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import socket
import sys
import time
from typing import Any, Sequence, TextIO

import grpc
from google.protobuf import json_format

from quorumdb import config as config_mod
from quorumdb import format as fmt
from quorumdb import limits, rpc
from quorumdb.pb import adjudicator_pb2_grpc, common_pb2, compute_pb2_grpc, journal_pb2_grpc, storage_pb2_grpc

DEFAULT_DATA_DIR = "quorumdb-data"
EXIT_OK = 0
EXIT_FAILED = 1

STUBS = {
    "journal": journal_pb2_grpc.JournalStub,
    "adjudicator": adjudicator_pb2_grpc.AdjudicatorStub,
    "storage": storage_pb2_grpc.StorageStub,
    "compute": compute_pb2_grpc.ComputeStub,
}
LOG_TAIL_LINES = 15  # lines of a failed node's log shown by `up`


# --- status --------------------------------------------------------------------------------
async def _one_status(channels: rpc.Channels, node: config_mod.NodeConfig,
                      timeout_s: float) -> common_pb2.NodeStatus | None:
    stub = STUBS[node.service](channels.get(node.address))
    try:
        return await stub.Status(common_pb2.StatusRequest(), timeout=timeout_s)
    except grpc.RpcError:
        return None


async def gather_statuses(nodes: Sequence[config_mod.NodeConfig],
                          timeout_s: float = limits.STATUS_TIMEOUT_S) -> list[common_pb2.NodeStatus | None]:
    """Every node's Status, asked concurrently; None for a node that did not answer in time."""
    channels = rpc.Channels()
    try:
        return list(await asyncio.gather(*(_one_status(channels, node, timeout_s) for node in nodes)))
    finally:
        await channels.close()


def fetch_statuses(nodes: Sequence[config_mod.NodeConfig],
                   timeout_s: float = limits.STATUS_TIMEOUT_S) -> list[common_pb2.NodeStatus | None]:
    return asyncio.run(gather_statuses(nodes, timeout_s))


STATUS_COLUMNS = [
    ("name", "text"), ("az", "text"), ("service", "text"), ("role", "text"), ("epoch", "bigint"),
    ("commit", "bigint"), ("applied", "bigint"), ("scl", "bigint"), ("health", "text"),
]


def status_rows(nodes: Sequence[config_mod.NodeConfig],
                statuses: Sequence[common_pb2.NodeStatus | None]) -> list[tuple[str, ...]]:
    rows = []
    for node, status in zip(nodes, statuses, strict=True):
        if status is None:
            rows.append((node.name, node.az, node.service, "", "", "", "", "", "down"))
            continue
        rows.append((
            node.name, node.az, node.service, status.role, str(status.epoch), str(status.commit_index),
            str(status.applied_index), str(status.scl), status.health or "?",
        ))
    return rows


def status_table(nodes: Sequence[config_mod.NodeConfig], statuses: Sequence[common_pb2.NodeStatus | None]) -> str:
    up_count = sum(status is not None for status in statuses)
    footer = f"({up_count} of {len(nodes)} nodes up)"
    table = fmt.format_table(STATUS_COLUMNS, status_rows(nodes, statuses), fmt.PrintOptions(), footers=[footer])
    return table.rstrip("\n") + "\n"  # no psql-style blank line after a tool's table


def status_json(nodes: Sequence[config_mod.NodeConfig], statuses: Sequence[common_pb2.NodeStatus | None]) -> str:
    objects: list[dict[str, Any]] = []
    for node, status in zip(nodes, statuses, strict=True):
        item: dict[str, Any] = {"name": node.name, "az": node.az, "service": node.service,
                                "address": node.address, "up": status is not None}
        if status is None:
            item["health"] = "down"
        else:
            fields = json_format.MessageToDict(status, preserving_proto_field_name=True,
                                               always_print_fields_with_no_presence=True)
            for key, value in fields.items():
                # uint64 fields come out as strings in proto3 JSON; numbers read better here.
                item.setdefault(key, int(value) if isinstance(value, str) and value.isdigit() else value)
        objects.append(item)
    return json.dumps(objects, indent=2)


def _nodes_for_status(args: argparse.Namespace) -> list[config_mod.NodeConfig]:
    if args.data_dir is not None:
        path = pathlib.Path(args.data_dir) / config_mod.CONFIG_FILE
        if not path.exists():
            raise SystemExit(f"quorumdb status: no cluster file at {path}")
        return list(config_mod.load(path).nodes)
    return list(config_mod.default_nodes(args.base_port, args.host))


def command_status(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    nodes = _nodes_for_status(args)
    statuses = fetch_statuses(nodes, limits.STATUS_TIMEOUT_S)
    out.write(status_json(nodes, statuses) + "\n" if args.json else status_table(nodes, statuses))
    out.flush()
    return EXIT_OK if all(status is not None for status in statuses) else EXIT_FAILED


# --- up --------------------------------------------------------------------------------------
class ShutdownRequested(Exception):
    """SIGINT or SIGTERM arrived: stop the cluster and exit 0."""


class NotReady(Exception):
    """The cluster did not become ready in time (the message says what and where to look)."""


def base_port_of(cluster: config_mod.ClusterConfig) -> int | None:
    """The base port of a cluster file written with the default layout (None if it is custom)."""
    try:
        compute = cluster.node("compute-az1")
    except KeyError:
        return None
    return compute.port - config_mod.PORT_OFFSET["compute"]


def load_or_create_cluster(data_dir: pathlib.Path, base_port: int | None,
                           err: TextIO = sys.stderr) -> config_mod.ClusterConfig:
    path = data_dir / config_mod.CONFIG_FILE
    if path.exists():
        cluster = config_mod.load(path)
        existing = base_port_of(cluster)
        if base_port is not None and existing is not None and existing != base_port:
            err.write(
                f"warning: --base-port {base_port} ignored: {path} uses base port {existing} "
                f"(use another --data-dir for a new cluster)\n"
            )
        return cluster
    cluster = config_mod.default_cluster(data_dir, base_port=base_port or config_mod.DEFAULT_BASE_PORT)
    cluster.write()
    return cluster


def ports_in_use(cluster: config_mod.ClusterConfig) -> list[config_mod.NodeConfig]:
    busy = []
    for node in cluster.nodes:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((node.host, node.port))
            except OSError:
                busy.append(node)
    return busy


def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "    (no log yet)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def probe_select_one(node: config_mod.NodeConfig, timeout_s: float) -> str | None:
    """None if `SELECT 1` works through the node, else why not."""
    from quorumdb import client

    try:
        with client.connect(node.host, node.port, timeout_s=timeout_s) as connection:
            value = connection.execute("SELECT 1").scalar()
    except client.DatabaseError as error:
        return f"{error.sqlstate}: {error.message}"
    if value != 1:
        return f"SELECT 1 returned {value!r}"
    return None


def wait_until_ready(launched: Any, deadline: float) -> dict[str, common_pb2.NodeStatus]:
    """Every node answers, compute nodes are healthy, SELECT 1 works; raise NotReady otherwise."""
    from quorumdb.launcher import LaunchError

    cluster: config_mod.ClusterConfig = launched.config
    compute_names = [node.name for node in cluster.computes]
    try:
        launched.wait_ready(timeout_s=max(1.0, deadline - time.monotonic()))
        launched.wait_ready(names=compute_names, timeout_s=max(1.0, deadline - time.monotonic()), healthy=True)
    except LaunchError as error:
        raise NotReady(str(error)) from None
    first_compute = cluster.computes[0]
    while True:
        problem = probe_select_one(first_compute, limits.UP_PROBE_STATEMENT_TIMEOUT_S)
        if problem is None:
            break
        if time.monotonic() > deadline:
            raise NotReady(f"SELECT 1 through {first_compute.name} keeps failing: {problem} "
                           f"(log: {cluster.log_path(first_compute.name)})")
        time.sleep(0.2)
    statuses = fetch_statuses(cluster.nodes)
    return {node.name: status for node, status in zip(cluster.nodes, statuses) if status is not None}


def ready_report(cluster: config_mod.ClusterConfig, statuses: dict[str, common_pb2.NodeStatus],
                 pids: dict[str, int]) -> str:
    rows = []
    for node in cluster.nodes:
        status = statuses.get(node.name)
        rows.append((node.name, node.az, node.service, status.role if status else "down", node.address,
                     str(pids.get(node.name, ""))))
    table = fmt.format_table(
        [("node", "text"), ("az", "text"), ("service", "text"), ("role", "text"), ("address", "text"),
         ("pid", "integer")],
        rows, fmt.PrintOptions(), footers=[f"({len(rows)} nodes)"],
    )
    lines = [table.rstrip("\n"), "", "SQL endpoints (compute nodes):"]
    for node in cluster.computes:
        lines.append(f"  {node.name:<14} {node.address:<18} qsql -h {node.host} -p {node.port}")
    lines += [
        "",
        f"data: {cluster.data_dir}   logs: {cluster.data_dir / 'logs'}",
        f"QuorumDB is ready: {len(cluster.nodes)} nodes up. Press Ctrl-C to stop.",
    ]
    return "\n".join(lines) + "\n"


def _install_shutdown_handlers() -> dict[int, Any]:
    def request_shutdown(signum: int, frame: Any) -> None:
        # Further signals are ignored: the shutdown below must not be interrupted half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise ShutdownRequested(signal.Signals(signum).name)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, request_shutdown)
    return previous


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def monitor(launched: Any, out: TextIO) -> None:
    """Report nodes that exit, until a shutdown signal interrupts (runs forever otherwise)."""
    reported: set[str] = set()
    while True:
        for name, code in sorted(launched.exited().items()):
            if name not in reported:
                reported.add(name)
                _say(out, f"node {name} {describe_exit(code)}; see {launched.config.log_path(name)} "
                          f"(the cluster keeps running; restart `quorumdb up` to bring it back)")
        time.sleep(limits.UP_MONITOR_INTERVAL_S)


def command_up(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from quorumdb.launcher import Cluster

    data_dir = pathlib.Path(args.data_dir).resolve()
    cluster_config = load_or_create_cluster(data_dir, args.base_port, err)
    busy = ports_in_use(cluster_config)
    if busy:
        names = ", ".join(f"{node.name} ({node.address})" for node in busy)
        err.write(f"quorumdb up: ports in use: {names}. Is a cluster already running? Try `quorumdb status"
                  f" --data-dir {data_dir}`.\n")
        return EXIT_FAILED
    launched = Cluster(cluster_config)
    previous_handlers = _install_shutdown_handlers()
    try:
        try:
            _say(out, f"starting {len(cluster_config.nodes)} nodes from {cluster_config.config_path}")
            _say(out, f"logs: {data_dir / 'logs'}/<node>.log")
            launched.start()
            deadline = time.monotonic() + args.ready_timeout
            statuses = wait_until_ready(launched, deadline)
            out.write(ready_report(cluster_config, statuses, launched.pids))
            out.flush()
            monitor(launched, out)
        except NotReady as error:
            err.write(f"quorumdb up: the cluster did not become ready: {error}\n")
            for node in cluster_config.nodes:
                if not launched.is_running(node.name):
                    err.write(f"  {node.name} is not running; last lines of {cluster_config.log_path(node.name)}:\n"
                              f"{log_tail(cluster_config.log_path(node.name))}\n")
            err.write(f"  all logs: {data_dir / 'logs'}\nstopping the nodes it started\n")
            err.flush()
            _stop(launched, out)
            return EXIT_FAILED
    except ShutdownRequested as signal_name:
        _say(out, f"{signal_name}: stopping {len(launched.pids)} nodes")
        _stop(launched, out)
        _say(out, "stopped")
        return EXIT_OK
    except BaseException:
        _stop(launched, out)
        raise
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    return EXIT_OK


def _stop(launched: Any, out: TextIO) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    launched.stop_all(timeout_s=limits.UP_STOP_TIMEOUT_S)
    still_running = launched.pids
    assert not still_running, f"nodes still running after stop_all: {still_running}"


# --- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quorumdb", description="Run and inspect a local QuorumDB cluster.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start a local cluster and keep it running until Ctrl-C")
    up.add_argument("--data-dir", default=os.environ.get("QUORUMDB_DATA_DIR", DEFAULT_DATA_DIR),
                    help=f"cluster data directory (default ./{DEFAULT_DATA_DIR} or $QUORUMDB_DATA_DIR)")
    up.add_argument("--base-port", type=int, default=None,
                    help=f"first port of the 40-port block (default {config_mod.DEFAULT_BASE_PORT}; "
                         "only used when the data directory has no cluster.toml yet)")
    up.add_argument("--ready-timeout", type=float, default=limits.UP_READY_TIMEOUT_S,
                    help=f"seconds to wait for the cluster to be ready (default {limits.UP_READY_TIMEOUT_S:.0f})")

    status = commands.add_parser("status", help="show every node's role, progress and health")
    status.add_argument("--base-port", type=int, default=config_mod.DEFAULT_BASE_PORT,
                        help=f"base port of the cluster (default {config_mod.DEFAULT_BASE_PORT})")
    status.add_argument("--host", default="127.0.0.1", help="host of every node (default 127.0.0.1)")
    status.add_argument("--data-dir", default=None, help="read the nodes from DIR/cluster.toml instead")
    status.add_argument("--json", action="store_true", help="print a JSON list of node objects")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    match args.command:
        case "up":
            return command_up(args)
        case "status":
            return command_status(args)
    raise AssertionError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
