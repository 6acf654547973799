"""Run one QuorumDB node: `python -m tools.node --config CLUSTER.toml --name NAME [--data-dir DIR]`.

Loads the cluster file, sets up logging, tells `quorumdb.rpc` which node this
process is (so its channels and server obey the cluster's network partitions, see
`quorumdb.netfault`; in a region of a Global Database also which region, so that its calls to
other regions cross the simulated WAN, see `quorumdb.wan`), installs uvloop and runs the
service of that node until SIGTERM/SIGINT, watching the partition (and WAN) rules files meanwhile. The process command
line contains the node's name, so `ps` and `pkill -f journal-az1` find it.

Unless the cluster file says `metrics = false`, the node also serves Prometheus metrics over
HTTP on its metrics port (`quorumdb.metrics`; the cluster's base port + 40.., see
quorumdb/config.py), on the same interface as its gRPC server.

The cluster's data directory is the cluster file's directory unless `--data-dir` names
another one (a container keeps the file read-only in /etc/quorumdb and its data on a
volume: see docker/entrypoint.sh). The node's data is then in `DIR/nodes/<name>/`, and a
compute node's token secret in `DIR/token_secret`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import pathlib
import signal
import sys

from quorumdb import config as config_mod
from quorumdb import limits, regions, rpc

# service -> module with `async def serve(cluster, node, stop: asyncio.Event)`.
SERVICE_MODULES = {
    "journal": "journal.main",
    "adjudicator": "adjudicator.main",
    "storage": "storage_node.main",
    "compute": "compute_node.main",
}


def setup_logging(name: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _run(cluster: config_mod.ClusterConfig, node: config_mod.NodeConfig) -> None:
    module = importlib.import_module(SERVICE_MODULES[node.service])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher_stop = asyncio.Event()
    # One watcher follows the partition rules and, in a region of a Global Database, the WAN rules.
    watcher = asyncio.create_task(rpc.watch_rules(watcher_stop, wan_state=rpc.region_identity()),
                                  name="netfault-rules-watcher")
    deadline = asyncio.create_task(_shutdown_deadline(stop, node.name), name="shutdown-deadline")
    # An insecure cluster says so again and again: a log read an hour later must still show it.
    announcer = (asyncio.create_task(rpc.insecure_announcer(watcher_stop), name="insecure-warning")
                 if cluster.insecure else None)
    metrics_server = await _serve_metrics(cluster, node)
    try:
        await module.serve(cluster, node, stop)
    finally:
        if metrics_server is not None:
            metrics_server.close()
        deadline.cancel()
        watcher_stop.set()
        watcher.cancel()
        if announcer is not None:
            announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


async def _serve_metrics(cluster: config_mod.ClusterConfig, node: config_mod.NodeConfig):
    """The node's /metrics server (None with metrics off, or when its port is taken: the node
    serves its cluster role regardless, and says so in its log)."""
    from quorumdb import metrics

    node_metrics = metrics.current()
    if node_metrics is None:
        return None
    host, port = cluster.bind_host(node), cluster.metrics_port(node.name)
    try:
        server = await metrics.serve_http(host, port, node_metrics)
    except OSError as error:
        logging.getLogger("tools.node").error("no metrics endpoint: cannot listen on %s:%d: %s", host, port, error)
        return None
    logging.getLogger("tools.node").info("metrics on http://%s:%d/metrics", host, port)
    return server


async def _shutdown_deadline(stop: asyncio.Event, name: str) -> None:
    """Bound the shutdown: once stop is set, serve() gets limits.NODE_SHUTDOWN_S to return.

    A node acknowledges nothing before it is fsynced (and the tests SIGKILL nodes at any
    moment), so exiting without finishing a graceful shutdown loses nothing; it only spares
    the launcher its SIGKILL fallback. What was still pending is logged, to be fixed.
    """
    await stop.wait()
    await asyncio.sleep(limits.NODE_SHUTDOWN_S)
    current = asyncio.current_task()
    pending = sorted(t.get_name() + ": " + repr(t.get_coro())[:120] for t in asyncio.all_tasks() if t is not current)
    log = logging.getLogger("tools.node")
    log.warning("%s: graceful shutdown took longer than %.1f s; exiting now. Still pending: %s",
                name, limits.NODE_SHUTDOWN_S, "; ".join(pending[:20]) or "nothing")
    logging.shutdown()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="quorumdb-node", description="Run one QuorumDB node.")
    parser.add_argument("--config", required=True, help="path of the cluster file (cluster.toml)")
    parser.add_argument("--name", required=True, help="node name, e.g. journal-az1")
    parser.add_argument("--data-dir", default=None,
                        help="the cluster's data directory (default: the cluster file's directory)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    cluster = config_mod.load(args.config)
    if args.data_dir is not None:
        cluster = dataclasses.replace(cluster, data_dir=pathlib.Path(args.data_dir).resolve())
    node = cluster.node(args.name)
    setup_logging(node.name, args.log_level)
    cluster.node_data_dir(node.name).mkdir(parents=True, exist_ok=True)
    logging.getLogger("tools.node").info(
        "starting %s (%s, %s) on %s", node.name, node.service, node.az, node.address
    )
    # Before serving: a restarted node obeys existing cuts at once. It also loads the node's TLS
    # identity (or logs the INSECURE warning for an --insecure cluster).
    rpc.set_identity(cluster, node.name)
    if cluster.region:  # a region of a Global Database: its calls to other regions cross the WAN
        rpc.set_region_identity(regions.of_cluster(cluster), cluster.region)
    if cluster.metrics:
        from quorumdb import metrics

        rpc.set_server_histograms(metrics.install(node.name, node.service, node.az).rpc_server)
    rpc.install_uvloop()
    asyncio.run(_run(cluster, node))
    logging.getLogger("tools.node").info("%s stopped", node.name)


if __name__ == "__main__":
    main()
