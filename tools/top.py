"""`quorumdb top`: the console's live view in a terminal, refreshed every interval.

Polls the cluster as the web console does (tools/observe.py) and redraws one screen: the
leader, commits/s, aborts/s, commit latency p50/p99, reads and hedges per second, then one row
per node (AZ by AZ): role, epoch, health, journal indexes, lag, closed-timestamp lag, CPU and
memory, and what `quorumdb up`'s supervisor says about it (killed, paused) when it answers. Ctrl-C
quits. `--iterations N` stops after N screens (scripts and tests); `--no-clear` prints screens one
after another instead of redrawing.
"""
from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

import grpc

from quorumdb import config as config_mod
from tools import format as fmt
from quorumdb import limits, rpc
from tools import observe
from quorumdb.pb import supervisor_pb2, supervisor_pb2_grpc

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen (ANSI; every terminal emulator knows it)
COLUMNS = [("node", "text"), ("az", "text"), ("role", "text"), ("epoch", "bigint"), ("health", "text"),
           ("commit", "bigint"), ("applied", "bigint"), ("lag", "bigint"), ("closed lag ms", "text"),
           ("cpu %", "text"), ("rss MB", "text")]


def render(view: observe.View, cuts: list[str] | None = None, title: str = "") -> str:
    """One screen of `top` (pure)."""
    up = sum(node.up for node in view.nodes)
    stamp = time.strftime("%H:%M:%S", time.localtime(view.wall))
    lines = [
        f"QuorumDB top {title}  {stamp}  nodes up: {up}/{len(view.nodes)}  "
        f"leader: {view.leader or 'none'}" + (f" (epoch {view.epoch})" if view.leader else ""),
        f"commits/s {observe.fmt(view.commits_per_s)}  aborts/s {observe.fmt(view.aborts_per_s)}  "
        f"errors/s {observe.fmt(view.errors_per_s)}  commit p50 {observe.fmt(view.commit_p50_ms, 2)} ms  "
        f"p99 {observe.fmt(view.commit_p99_ms, 2)} ms  reads/s {observe.fmt(view.reads_per_s)}  "
        f"hedges/s {observe.fmt(view.hedges_per_s)}  journal index {view.commit_index}",
    ]
    if cuts:
        lines.append(f"network: {len(cuts)} cut links")
    rows = []
    for node in observe.nodes_in_order(view):
        health = node.health if node.up else (node.state or "down")
        rows.append((node.name, node.az, node.role if node.up else "", str(node.epoch) if node.up else "", health,
                     str(node.commit_index) if node.up else "", str(node.applied_index) if node.up else "",
                     "" if node.lag_entries is None else str(node.lag_entries),
                     observe.fmt(node.closed_lag_ms, 0), observe.fmt(node.cpu_percent, 0),
                     observe.fmt(node.rss_mb, 0)))
    table = fmt.format_table(COLUMNS, rows, fmt.PrintOptions(), footers=[])
    lines += ["", table.rstrip("\n"), "", "Ctrl-C quits"]
    return "\n".join(lines) + "\n"


async def _supervised(target: str | None, credentials=None) -> tuple[dict[str, str], list[str]]:
    """Node states and cut links from `quorumdb up`'s supervisor, if one answers."""
    if target is None:
        return {}, []
    async with rpc.client_channel(target, credentials) as channel:
        stub = supervisor_pb2_grpc.SupervisorStub(channel)
        try:
            reply = await stub.Nodes(supervisor_pb2.NodesRequest(), timeout=limits.STATUS_TIMEOUT_S)
        except grpc.RpcError:
            return {}, []
    return {node.name: node.state for node in reply.nodes}, list(reply.cut_links)


async def run(cluster: config_mod.ClusterConfig, out: TextIO, interval_s: float, iterations: int | None,
              clear: bool, host: str | None = None, supervisor: str | None = None, credentials=None) -> int:
    observer = observe.Observer(cluster, host, credentials=credentials)
    previous: observe.Snapshot | None = None
    shown = 0
    try:
        while iterations is None or shown < iterations:
            started = time.monotonic()
            snapshot = await observer.poll()
            states, cuts = await _supervised(supervisor, observer.credentials)
            view = observe.summarize(cluster, snapshot, previous, states)
            previous = snapshot
            out.write((CLEAR if clear else "") + render(view, cuts, f"({cluster.data_dir})"))
            out.flush()
            shown += 1
            if iterations is not None and shown >= iterations:
                break
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    finally:
        await observer.close()
    return 0


def main(cluster: config_mod.ClusterConfig, interval_s: float, iterations: int | None, clear: bool,
         host: str | None = None, supervisor: str | None = None, out: TextIO = sys.stdout, credentials=None) -> int:
    """`credentials`: a toolcreds source (default: the cluster's data directory's)."""
    try:
        return asyncio.run(run(cluster, out, interval_s, iterations, clear, host, supervisor, credentials))
    except KeyboardInterrupt:
        return 0
