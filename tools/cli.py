"""The `quorumdb` command: run a local cluster and look at it.

    quorumdb up [--data-dir DIR] [--base-port N] [--ready-timeout S]
    quorumdb up --regions NAME:primary,NAME:secondary [--wan-ms D[,J[,L]]] [--data-dir DIR] [--base-port N]
    quorumdb up --regions PEER,PEER --witness NAME [--wan-ms D[,J[,L]]] [--data-dir DIR] [--base-port N]
    quorumdb status [--base-port N] [--host H] [--data-dir DIR] [--json]
    quorumdb chaos [--base-port N | --data-dir DIR] ACTION [ARG]
    quorumdb top [--base-port N | --data-dir DIR] [--interval S]
    quorumdb backup status [--base-port N | --data-dir DIR | --from LOC] [--json]
    quorumdb snapshot create|list|delete [NAME] [--base-port N | --data-dir DIR | --from LOC]
    quorumdb clone --source DIR --data-dir NEW [--at-time T] [--base-port N]
    quorumdb backtrack [--base-port N] [--host H] [--data-dir DIR] --to-time T

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
exits 1. While it runs, its supervisor (`tools.supervisor`, on base port + 39)
takes `quorumdb chaos` actions; a node killed that way is reported as such, not
as an unexpected death, and `chaos restart` brings it back. It also serves the web console
(`tools.console`, base port + 55, printed on a line beginning `console: http://`), and with
`--prometheus` runs a Prometheus server scraping every node's /metrics (`tools.prometheus`).

`up --regions` starts a Global Database (quorumdb/regions.py): `DIR/global.toml` names the
regions, each a whole cluster in `DIR/regions/<name>` on its own 60-port block (region i on base
port + 60 i), with its own supervisor; the console watches the first region. Every node of every
region must answer Status, and the primary region must be ready as a single cluster is; a
secondary's compute nodes need not serve reads yet. A later `up --data-dir DIR` starts the
regions the file names (a --regions naming others is a usage error, exit 2). `status` and
`chaos` given such a DIR act per region (`chaos --help`).

`up --regions A,B --witness W` starts an active-active cluster (docs/ACTIVE_ACTIVE.md) the same
way: peers A and B (whole regions, both taking writes) and witness W (3 journal replicas only) on
base + 60 i, one supervisor each, no writer endpoint. Every node must answer Status; each peer's
SQL is probed for a bounded time and reported. `status` then adds each region's kind, whether the
adjudicator leader counts it voted in, its endpoints and latencies, and the leader's region.

`clone` makes a copy-on-write clone of the cluster in DIR as a new cluster in NEW
(tools/dr/clone.py): it prints the time used, what it linked and copied, and how to start it.

`top` shows the console's live view in the terminal (`tools.top`).

`status` asks every node for its Status concurrently, each call with a
deadline, and prints one row per node; a node that does not answer is "down".
Exit status 0 when every node answered, 1 otherwise.

`backtrack` rewinds the running cluster in place to T (ISO 8601 UTC with ms) through a journal
entry (tools/dr/backtrack.py); it refuses a T outside the storage copies' backtrack window.
`status` shows that window: the configured one and the one the copies actually hold.

`chaos` asks the supervisor of a running `quorumdb up` to break something (see
CHAOS_HELP) and prints what it did; exit 0 on success, 1 with a message otherwise.

The commands that talk to a running cluster (status, chaos, top, backtrack, bench, global,
backup status) present the credentials of its data directory (tools/toolcreds.py): the CA, the
admin certificate and a token minted from its secret; `--token`/$QUORUMDB_TOKEN and
`--ca`/$QUORUMDB_CA replace them, `--insecure` talks plaintext to an `up --insecure` cluster.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import pathlib
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Sequence, TextIO

import grpc
from google.protobuf import json_format

from quorumdb import config as config_mod
from tools import format as fmt
from quorumdb import limits, rpc, timefmt
from tools import nodestatus, toolcreds
from quorumdb import regions as regions_mod
from tools import supervisor as supervisor_mod
from quorumdb.pb import common_pb2, supervisor_pb2, supervisor_pb2_grpc

DEFAULT_DATA_DIR = "quorumdb-data"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

LOG_TAIL_LINES = 15  # lines of a failed node's log shown by `up`

# Every node's Status, concurrently (tools/nodestatus.py; `status`, `top` and the tools share it).
STUBS = nodestatus.STUBS
gather_statuses = nodestatus.gather_statuses
fetch_statuses = nodestatus.fetch_statuses


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


def backup_footers(statuses: Sequence[common_pb2.NodeStatus | None]) -> list[str]:
    """The continuous backup as the uploading copy sees it, and every copy that reports an error."""
    storages = [s for s in statuses if s is not None and s.service == "storage" and s.backup]
    lines = [f"backup: {s.name}: {s.backup}" for s in storages if s.backup_uploader]
    lines += [f"backup: {s.name}: {s.backup}" for s in storages if not s.backup_uploader and "error" in s.backup]
    if storages and not any(s.backup_uploader for s in storages):
        lines.append("backup: no storage copy is uploading now")
    return lines


def _detail_value(status: common_pb2.NodeStatus, name: str) -> str | None:
    for word in status.detail.split():
        if word.startswith(name + "="):
            return word[len(name) + 1:]
    return None


def backtrack_window(nodes: Sequence[config_mod.NodeConfig], statuses: Sequence[common_pb2.NodeStatus | None],
                     now_ns: int) -> dict[str, Any] | None:
    """The configured backtrack window and the one the storage copies reached (None: no copy answered)."""
    storage = [s for node, s in zip(nodes, statuses) if node.service == "storage" and s is not None]
    if not storage:
        return None
    start_ts = max(s.backtrack_window_start_ts for s in storage)  # the most caught-up copy's
    configured = _detail_value(storage[0], "backtrack_window_s")
    budget = _detail_value(storage[0], "backtrack_budget_bytes")
    return {"configured_s": float(configured) if configured else None,
            "budget_bytes": int(budget) if budget else None,
            "start_ts": start_ts,
            "reached_s": max(0.0, (now_ns - start_ts) / 1e9) if start_ts else None}


def backtrack_window_line(window: dict[str, Any]) -> str:
    from tools.dr.backtrack import describe_span

    configured = "?" if window["configured_s"] is None else describe_span(window["configured_s"])
    budget = "" if window["budget_bytes"] is None else f", budget {window['budget_bytes'] // (1024 * 1024)} MiB per copy"
    if window["reached_s"] is None:
        reached = "everything since the cluster started"
    else:
        reached = f"{describe_span(window['reached_s'])} (from {timefmt.format_utc(window['start_ts'])})"
    return f"backtrack window: configured {configured}{budget}; reached {reached}"


def status_table(nodes: Sequence[config_mod.NodeConfig], statuses: Sequence[common_pb2.NodeStatus | None],
                 now_ns: int | None = None) -> str:
    up_count = sum(status is not None for status in statuses)
    footers = []
    window = backtrack_window(nodes, statuses, time.time_ns() if now_ns is None else now_ns)
    if window is not None:
        footers.append(backtrack_window_line(window))
    footers += backup_footers(statuses)
    footers.append(f"({up_count} of {len(nodes)} nodes up)")  # the node count stays the last line
    table = fmt.format_table(STATUS_COLUMNS, status_rows(nodes, statuses), fmt.PrintOptions(), footers=footers)
    return table.rstrip("\n") + "\n"  # no psql-style blank line after a tool's table


def status_json(nodes: Sequence[config_mod.NodeConfig], statuses: Sequence[common_pb2.NodeStatus | None],
                cluster: config_mod.ClusterConfig | None = None) -> str:
    """The nodes as JSON objects; with `cluster`, each has its `metrics_url` ("" when metrics are off)."""
    return json.dumps(status_objects(nodes, statuses, cluster), indent=2)


def status_objects(nodes: Sequence[config_mod.NodeConfig], statuses: Sequence[common_pb2.NodeStatus | None],
                   cluster: config_mod.ClusterConfig | None = None) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for node, status in zip(nodes, statuses, strict=True):
        item: dict[str, Any] = {"name": node.name, "az": node.az, "service": node.service,
                                "address": node.address, "up": status is not None}
        if cluster is not None:
            item["metrics_url"] = cluster.metrics_url(node.name) if cluster.metrics else ""
        if status is None:
            item["health"] = "down"
        elif node.service == "storage":
            window = backtrack_window([node], [status], time.time_ns())
            item["backtrack_window_configured_s"] = window["configured_s"]
            item["backtrack_window_reached_s"] = window["reached_s"]
        if status is not None:
            fields = json_format.MessageToDict(status, preserving_proto_field_name=True,
                                               always_print_fields_with_no_presence=True)
            for key, value in fields.items():
                # uint64 fields come out as strings in proto3 JSON; numbers read better here.
                item.setdefault(key, int(value) if isinstance(value, str) and value.isdigit() else value)
        objects.append(item)
    return objects


def _cluster_for_status(args: argparse.Namespace, command: str = "status") -> config_mod.ClusterConfig:
    """The cluster file in --data-dir, or the default layout on --base-port at --host."""
    if args.data_dir is not None:
        path = pathlib.Path(args.data_dir) / config_mod.CONFIG_FILE
        if not path.exists() and regions_mod.is_global(args.data_dir):
            global_cfg = regions_mod.load(args.data_dir)
            what = "an active-active cluster" if global_cfg.active_active else "a Global Database"
            raise SystemExit(f"quorumdb {command}: {args.data_dir} is {what} (regions {', '.join(global_cfg.names)}): "
                             f"give one region's directory, --data-dir {pathlib.Path(args.data_dir) / regions_mod.REGIONS_DIR}/NAME")
        if not path.exists():
            raise SystemExit(f"quorumdb {command}: no cluster file at {path}")
        return config_mod.load(path)
    return config_mod.ClusterConfig(data_dir=pathlib.Path.cwd(), nodes=config_mod.default_nodes(args.base_port, args.host))


def _nodes_for_status(args: argparse.Namespace) -> list[config_mod.NodeConfig]:
    return list(_cluster_for_status(args).nodes)


def command_status(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    if args.data_dir is not None and global_data_dir(pathlib.Path(args.data_dir)):
        return command_status_regions(args, out)
    cluster = _cluster_for_status(args)
    nodes = list(cluster.nodes)
    statuses = fetch_statuses(nodes, limits.STATUS_TIMEOUT_S, credentials=toolcreds.for_args(args, args.data_dir))
    out.write(status_json(nodes, statuses, cluster) + "\n" if args.json else status_table(nodes, statuses))
    out.flush()
    return EXIT_OK if all(status is not None for status in statuses) else EXIT_FAILED


def global_data_dir(data_dir: pathlib.Path) -> bool:
    """A Global Database's directory: a global.toml and no cluster file of its own."""
    return regions_mod.is_global(data_dir) and not (data_dir / config_mod.CONFIG_FILE).exists()


def region_title(region: regions_mod.RegionConfig) -> str:
    if region.role == "witness":
        return f"region {region.name} (witness: journal replicas only, base port {region.base_port})"
    if region.role == "peer":
        return f"region {region.name} (peer: takes reads and writes, base port {region.base_port})"
    return f"region {region.name} (initial role {region.role}, base port {region.base_port})"


def command_status_regions(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """One section per region (its title, then the single-cluster table); --json: {"regions": [...]}."""
    global_cfg = regions_mod.load(args.data_dir)
    clusters = [region.cluster() for region in global_cfg.regions]
    nodes = [node for cluster in clusters for node in cluster.nodes]
    statuses = fetch_statuses(nodes, limits.STATUS_TIMEOUT_S,  # every region's nodes at once
                              credentials=toolcreds.for_args(args, args.data_dir))
    sections = []
    start = 0
    for region, cluster in zip(global_cfg.regions, clusters, strict=True):
        sections.append((region, cluster, statuses[start:start + len(cluster.nodes)]))
        start += len(cluster.nodes)
    if global_cfg.active_active:
        report = active_active_report(global_cfg, sections, current_wan_rules(global_cfg))
        out.write(json.dumps(report, indent=2) + "\n" if args.json else active_active_text(report, sections))
        out.flush()
        return EXIT_OK if all(status is not None for status in statuses) else EXIT_FAILED
    if args.json:
        report = {"global_file": str(global_cfg.path), "regions": [
            {"name": region.name, "initial_role": region.role, "base_port": region.base_port,
             "nodes": status_objects(cluster.nodes, region_statuses, cluster)}
            for region, cluster, region_statuses in sections]}
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        texts = [f"{region_title(region)}\n{status_table(cluster.nodes, region_statuses)}"
                 for region, cluster, region_statuses in sections]
        out.write("\n".join(texts) + f"global cluster file: {global_cfg.path}\n")
    out.flush()
    return EXIT_OK if all(status is not None for status in statuses) else EXIT_FAILED


# --- status of an active-active cluster -----------------------------------------------------------
def median_positive(values: Sequence[float]) -> float | None:
    """The median of the values > 0 (a compute node with no commit yet reports 0); None without any."""
    positive = sorted(value for value in values if value > 0)
    if not positive:
        return None
    middle = len(positive) // 2
    return positive[middle] if len(positive) % 2 else (positive[middle - 1] + positive[middle]) / 2


def adjudicator_leader(sections: Sequence[tuple[Any, config_mod.ClusterConfig,
                                                Sequence[common_pb2.NodeStatus | None]]]
                       ) -> tuple[str, str, common_pb2.NodeStatus] | None:
    """(qualified name, region, Status) of the adjudicator that says it leads, the highest epoch if
    more than one still says so (an old leader that has not heard of its successor yet); None if
    no adjudicator that answered leads."""
    from quorumdb import members

    leaders = []
    for region, cluster, statuses in sections:
        for node, status in zip(cluster.nodes, statuses, strict=True):
            if node.service != "adjudicator" or status is None or status.role != "leader":
                continue
            # The leader's own words: its Status names it qualified once the adjudicators are
            # members of one group (in `name`, or in `leader`, the leader it knows: itself); a
            # plain name is qualified with the region it answered from.
            plain = members.split(status.name or node.name)[1]
            said = next((name for name in (status.name, status.leader)
                         if "/" in name and members.split(name)[1] == plain), "")
            name = said or members.qualify(region.name, plain)
            leaders.append((status.epoch, name, status))
    if not leaders:
        return None
    epoch, name, status = max(leaders, key=lambda item: (item[0], item[1]))
    return name, members.split(name)[0], status


def active_active_report(global_cfg: regions_mod.GlobalConfig,
                         sections: Sequence[tuple[regions_mod.RegionConfig, config_mod.ClusterConfig,
                                                  Sequence[common_pb2.NodeStatus | None]]],
                         rules: Any = None) -> dict[str, Any]:
    """`status --json` of an active-active cluster, from the nodes' Status replies (None: no answer).

    A pure function of its arguments (except the storage rows' window age, which status_objects
    measures against the clock). voted_in comes from the adjudicator leader's view (its
    NodeStatus.regions); null when no leader answered or it reports no view of that region.
    Latencies are the median of the region's compute nodes' reported medians, null when none has
    one. `rules`: the current WAN rules (quorumdb.wan.WanRules), else the global file's settings."""
    leader = adjudicator_leader(sections)
    votes = {vote.name: vote for vote in leader[2].regions} if leader is not None else {}
    regions_out = []
    for region, cluster, statuses in sections:
        computes = [(node, status) for node, status in zip(cluster.nodes, statuses, strict=True)
                    if node.service == "compute"]
        vote = votes.get(region.name)
        answered = [status for _, status in computes if status is not None]
        regions_out.append({
            "name": region.name,
            "kind": region.role,  # peer | witness
            "base_port": region.base_port,
            "voted_in": vote.voted_in if vote is not None else None,
            "match_index": vote.match_index if vote is not None else None,
            "endpoints": [node.address for node, _ in computes],
            "pg_endpoints": [f"{node.host}:{cluster.pg_port(node.name)}" for node, _ in computes],
            "commit_p50_ms": median_positive([status.commit_p50_ms for status in answered]),
            "read_p50_ms": median_positive([status.read_p50_ms for status in answered]),
            "nodes_up": sum(status is not None for status in statuses),
            "nodes": status_objects(cluster.nodes, statuses, cluster),
        })
    if rules is None:
        delay, jitter, loss, partitioned, cut = (global_cfg.wan_ms, global_cfg.wan_jitter_ms, global_cfg.wan_loss,
                                                 [], [])
    else:
        delay, jitter, loss = rules.delay_ms, rules.jitter_ms, rules.loss
        partitioned = sorted(rules.partitioned)
        cut = [list(pair) for pair in sorted(getattr(rules, "cut_links", ()))]
    return {
        "kind": "active-active",
        "global_file": str(global_cfg.path),
        "leader": leader[0] if leader is not None else None,
        "leader_region": leader[1] if leader is not None else None,
        "leader_epoch": leader[2].epoch if leader is not None else None,
        "peers": global_cfg.peers,
        "witness": global_cfg.witness,
        "wan_ms": delay,
        "wan_jitter_ms": jitter,
        "wan_loss": loss,
        "partitioned": partitioned,
        "cut_links": cut,
        "regions": regions_out,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def active_active_region_line(region: dict[str, Any]) -> str:
    vote = {True: "voted in", False: "VOTED OUT", None: "vote unknown (no leader view)"}[region["voted_in"]]
    kind = "peer" if region["kind"] == "peer" else "witness: journal replicas only"
    line = f"region {region['name']} ({kind}, base port {region['base_port']}): {vote}"
    if region["kind"] == "peer":
        line += f"; commit p50 {_ms(region['commit_p50_ms'])}, read p50 {_ms(region['read_p50_ms'])}"
    return line


def active_active_text(report: dict[str, Any], sections: Sequence[tuple[Any, config_mod.ClusterConfig,
                                                                       Sequence[common_pb2.NodeStatus | None]]]) -> str:
    """The text of `status` on an active-active cluster: one section per region, then the leader,
    the witness and the WAN."""
    texts = [f"{active_active_region_line(region)}\n{status_table(cluster.nodes, statuses)}"
             for region, (_, cluster, statuses) in zip(report["regions"], sections, strict=True)]
    if report["leader"] is None:
        leader = "leader: no adjudicator answered as leader (an election may be under way)"
    else:
        leader = f"leader: {report['leader']} (region {report['leader_region']}, epoch {report['leader_epoch']})"
    cut = ", ".join(f"{a} - {b}" for a, b in report["cut_links"]) or "none"
    wan = (f"WAN: {report['wan_ms']:g} ms one way, jitter {report['wan_jitter_ms']:g} ms, loss {report['wan_loss']:g}; "
           f"partitioned: {', '.join(report['partitioned']) or 'none'}; links cut: {cut}")
    return ("\n".join(texts) + f"{leader}\npeers: {', '.join(report['peers'])}   witness: {report['witness']}\n"
            f"{wan}\nactive-active cluster file: {report['global_file']}\n")


def current_wan_rules(global_cfg: regions_mod.GlobalConfig) -> Any:
    """The WAN rules now in force (None if they cannot be read: the global file's settings are shown)."""
    try:
        from quorumdb import wan

        return wan.read_rules(global_cfg)
    except Exception:  # noqa: BLE001 - status shows the nodes whatever the rules file holds
        return None


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
        # A witness region of an active-active cluster has journal replicas only (config.witness_nodes).
        if cluster.computes or cluster.adjudicators or cluster.storages:
            return None
        try:
            return cluster.node("journal-az1").port - config_mod.PORT_OFFSET["journal"]
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


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def ports_in_use(cluster: config_mod.ClusterConfig) -> list[config_mod.NodeConfig]:
    return [node for node in cluster.nodes if not port_free(node.host, node.port)]


def supervisor_address_of(cluster: config_mod.ClusterConfig) -> str | None:
    """Where `up`'s supervisor listens: base port + 39 (None for a cluster file with a custom layout)."""
    base = base_port_of(cluster)
    return supervisor_mod.address(base) if base is not None else None


def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "    (no log yet)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def probe_select_one(node: config_mod.NodeConfig, timeout_s: float, data_dir: pathlib.Path | str | None = None) -> str | None:
    """None if `SELECT 1` works through the node (with the credentials of the cluster in
    data_dir), else why not."""
    from quorumdb import client

    try:
        with client.connect(node.host, node.port, timeout_s=timeout_s, data_dir=data_dir) as connection:
            value = connection.execute("SELECT 1").scalar()
    except client.DatabaseError as error:
        return f"{error.sqlstate}: {error.message}"
    if value != 1:
        return f"SELECT 1 returned {value!r}"
    return None


def wait_until_ready(launched: Any, deadline: float) -> dict[str, common_pb2.NodeStatus]:
    """Every node answers, compute nodes are healthy, SELECT 1 works; raise NotReady otherwise."""
    from tools.launcher import LaunchError

    cluster: config_mod.ClusterConfig = launched.config
    compute_names = [node.name for node in cluster.computes]
    try:
        launched.wait_ready(timeout_s=max(1.0, deadline - time.monotonic()))
        launched.wait_ready(names=compute_names, timeout_s=max(1.0, deadline - time.monotonic()), healthy=True)
    except LaunchError as error:
        raise NotReady(str(error)) from None
    first_compute = cluster.computes[0]
    while True:
        problem = probe_select_one(first_compute, limits.UP_PROBE_STATEMENT_TIMEOUT_S, cluster.data_dir)
        if problem is None:
            break
        if time.monotonic() > deadline:
            raise NotReady(f"SELECT 1 through {first_compute.name} keeps failing: {problem} "
                           f"(log: {cluster.log_path(first_compute.name)})")
        time.sleep(0.2)
    # Synchronous calls, in threads: the web console's watcher already runs a grpc.aio event loop in
    # this process, and grpc.aio calls from a second loop in another thread can stall (nodes then
    # showed as "down" in the table below although they were up).
    from tools.launcher import node_status

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(cluster.nodes)) as pool:
        statuses = list(pool.map(node_status, cluster.nodes))
    return {node.name: status for node, status in zip(cluster.nodes, statuses) if status is not None}


def ready_report(cluster: config_mod.ClusterConfig, statuses: dict[str, common_pb2.NodeStatus],
                 pids: dict[str, int], supervisor_address: str | None = None, console_url: str | None = None,
                 prometheus_line: str | None = None, final_line: bool = True) -> str:
    """The nodes, endpoints and tools of a started cluster; with final_line, the `ready` line last
    (a region of a Global Database leaves it out: `up --regions` prints one after every region)."""
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
    lines = [table.rstrip("\n")]
    if cluster.computes:  # a witness region has journal replicas only: no SQL endpoint
        # qsql finds the CA and makes its token in ./quorumdb-data; another directory must be named.
        default_dir = pathlib.Path(os.environ.get("QUORUMDB_DATA_DIR", DEFAULT_DATA_DIR)).resolve()
        named = "" if pathlib.Path(cluster.data_dir).resolve() == default_dir else f" --data-dir {cluster.data_dir}"
        lines += ["", "SQL endpoints (compute nodes):"]
        for node in cluster.computes:
            lines.append(f"  {node.name:<14} {node.address:<18} qsql -h {node.host} -p {node.port}{named}")
        lines += ["", "PostgreSQL endpoints (psql, psycopg, SQLAlchemy; password: `quorumdb token --user admin`"
                      + (", TRUST MODE: no authentication" if cluster.pg_trust else "") + "):"]
        for node in cluster.computes:
            lines.append(f"  {node.name:<14} {node.host}:{cluster.pg_port(node.name):<12} "
                         f"psql -h {node.host} -p {cluster.pg_port(node.name)} -U admin -d postgres")
    lines += [
        "",
        f"data: {cluster.data_dir}   logs: {cluster.data_dir / 'logs'}",
    ]
    if supervisor_address is not None:
        base = base_port_of(cluster)
        lines.append(f"supervisor: {supervisor_address}   break things with `quorumdb chaos --base-port {base} ACTION`")
    if cluster.metrics:
        ports = [cluster.metrics_port(node.name) for node in cluster.nodes]
        lines.append(f"metrics: http://{cluster.nodes[0].host}:{min(ports)}/metrics .. :{max(ports)} (one port per "
                     f"node, Prometheus text format; `quorumdb status --json` lists each node's metrics_url)")
    if console_url is not None:
        lines.append(f"console: {console_url}   live picture, charts, events and chaos buttons "
                     f"(token: `quorumdb token --user admin`); in a terminal: `quorumdb top --data-dir {cluster.data_dir}`")
    if prometheus_line is not None:
        lines.append(prometheus_line)
    if final_line:
        lines.append(f"QuorumDB is ready: {len(cluster.nodes)} nodes up. Press Ctrl-C to stop.")
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


def monitor(launched: Any, say: Callable[[str], None], supervisor: Any = None) -> None:
    """Report nodes that exit, until a shutdown signal interrupts (runs forever otherwise).

    Each process is reported once (by PID: a restarted node that dies again is reported
    again); an exit the supervisor caused is reported as asked for, not as a surprise.
    """
    reported: set[int] = set()
    while True:
        report_exits(launched, say, supervisor, reported)
        time.sleep(limits.UP_MONITOR_INTERVAL_S)


def report_exits(launched: Any, say: Callable[[str], None], supervisor: Any, reported: set[int],
                 region: str | None = None) -> None:
    """One pass of `monitor`: say what exited since the last pass (PIDs in `reported` are skipped).
    A node of a region is named REGION/NODE, as `quorumdb chaos --data-dir` takes it."""
    for name, pid, code in sorted(launched.exits()):
        if pid in reported:
            continue
        reported.add(pid)
        shown = f"{region}/{name}" if region else name
        restart = f"quorumdb chaos --data-dir {launched.config.data_dir.parent.parent} restart {shown}" if region \
            else f"quorumdb chaos restart {name}"
        if supervisor is not None and supervisor.expected_exit(pid):
            say(f"node {shown} (pid {pid}) {describe_exit(code)}, as `quorumdb chaos` asked "
                f"(`{restart}` brings it back)")
        else:
            say(f"node {shown} (pid {pid}) {describe_exit(code)}; see {launched.config.log_path(name)} "
                f"(the cluster keeps running; `{restart}` or restarting `quorumdb up` brings it back)")


def command_up(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from tools.launcher import Cluster

    data_dir = pathlib.Path(args.data_dir).resolve()
    if getattr(args, "regions", None) is not None or getattr(args, "wan_ms", None) is not None \
            or getattr(args, "witness", None) is not None or regions_mod.is_global(data_dir):
        return command_up_regions(args, out, err)
    cluster_config = load_or_create_cluster(data_dir, args.base_port, err)
    cluster_config = apply_pg_options(cluster_config, args)
    cluster_config = apply_metrics_option(cluster_config, args)
    cluster_config = apply_insecure_option(cluster_config, args)
    busy = [f"{node.name} ({node.address})" for node in ports_in_use(cluster_config)]
    supervisor_address = supervisor_address_of(cluster_config)
    if supervisor_address is not None and not port_free(*_host_port(supervisor_address)):
        busy.append(f"supervisor ({supervisor_address})")
    busy += observability_ports_in_use(cluster_config, args)
    if busy:
        err.write(f"quorumdb up: ports in use: {', '.join(busy)}. Is a cluster already running? Try `quorumdb status"
                  f" --data-dir {data_dir}`.\n")
        return EXIT_FAILED
    launched = Cluster(cluster_config)
    output_lock = threading.Lock()
    extras = Observability()  # the web console and Prometheus, stopped with the nodes

    def say(text: str) -> None:
        with output_lock:
            _say(out, text)
        if extras.console is not None:  # `up`'s lines (chaos actions, exits) go to the console's timeline too
            extras.console.state.event("chaos" if text.startswith("chaos:") else "log", text)

    supervisor = supervisor_mod.Supervisor(launched, say)
    supervisor_server = None
    previous_handlers = _install_shutdown_handlers()
    try:
        try:
            _say(out, f"starting {len(cluster_config.nodes)} nodes from {cluster_config.config_path}")
            if cluster_config.insecure:
                _say(out, f"WARNING: {rpc.INSECURE_WARNING}")
            _say(out, f"logs: {data_dir / 'logs'}/<node>.log")
            launched.start()
            if supervisor_address is not None:
                supervisor_server = supervisor_mod.serve(supervisor, supervisor_address)
            else:
                err.write("warning: the cluster file has a custom layout: no supervisor (quorumdb chaos)\n")
            extras.start(cluster_config, args, supervisor if supervisor_address is not None else None, err)
            deadline = time.monotonic() + args.ready_timeout
            statuses = wait_until_ready(launched, deadline)
            with output_lock:
                out.write(ready_report(cluster_config, statuses, launched.pids, supervisor_address,
                                       extras.console_url, extras.prometheus_line))
                out.flush()
            monitor(launched, say, supervisor)
        except NotReady as error:
            err.write(f"quorumdb up: the cluster did not become ready: {error}\n")
            for node in cluster_config.nodes:
                if not launched.is_running(node.name):
                    err.write(f"  {node.name} is not running; last lines of {cluster_config.log_path(node.name)}:\n"
                              f"{log_tail(cluster_config.log_path(node.name))}\n")
            err.write(f"  all logs: {data_dir / 'logs'}\nstopping the nodes it started\n")
            err.flush()
            _stop(launched, supervisor, supervisor_server, extras)
            return EXIT_FAILED
    except ShutdownRequested as signal_name:
        say(f"{signal_name}: stopping {len(launched.pids)} nodes")
        _stop(launched, supervisor, supervisor_server, extras)
        say("stopped")
        return EXIT_OK
    except BaseException:
        _stop(launched, supervisor, supervisor_server, extras)
        raise
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    return EXIT_OK


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _stop(launched: Any, supervisor: Any = None, supervisor_server: Any = None, extras: Any = None) -> None:
    """Stop one cluster as `_stop_regions` stops every region's."""
    _stop_regions(launched, [supervisor] if supervisor is not None else [],
                  [supervisor_server] if supervisor_server is not None else [], extras, [])


# --- up --regions: a Global Database on one machine ------------------------------------------
def regions_mismatch(global_cfg: regions_mod.GlobalConfig, pairs: list[tuple[str, str]] | None,
                     witness: str | None = None) -> str | None:
    """Why `--regions` (and `--witness`) disagree with an existing global file (None: they agree,
    or were not given)."""
    existing_text = ",".join(f"{region.name}:{region.role}" for region in global_cfg.regions)
    if global_cfg.active_active and (pairs is not None or witness is not None):
        if witness is None:
            return (f"{global_cfg.path} is an active-active cluster (peers {', '.join(global_cfg.peers)}, witness "
                    f"{global_cfg.witness}): give --regions {','.join(global_cfg.peers)} --witness "
                    f"{global_cfg.witness}, or leave out --regions to start it")
        wanted = [(name, role) for name, role in pairs] if pairs is not None else None
        have = [(region.name, region.role) for region in global_cfg.regions]
        if (wanted is not None and wanted != have) or witness != global_cfg.witness:
            asked = (f"--regions {','.join(n for n, r in wanted if r == 'peer')} " if wanted else "") + f"--witness {witness}"
            return (f"{asked} does not match {global_cfg.path}, which has peers {', '.join(global_cfg.peers)} and "
                    f"witness {global_cfg.witness}. Leave out --regions and --witness to start the existing "
                    f"regions, or use another --data-dir for a new cluster")
        return None
    if witness is not None:
        return (f"{global_cfg.path} is a Global Database ({existing_text}), not an active-active cluster: leave out "
                f"--witness to start it, or use another --data-dir for an active-active cluster")
    if pairs is None:
        return None
    wanted = ",".join(f"{name}:{role}" for name, role in pairs)
    existing = ",".join(f"{region.name}:{region.role}" for region in global_cfg.regions)
    if wanted == existing:
        return None
    return (f"--regions {wanted} does not match {global_cfg.path}, which has {existing} (roles are the ones the "
            f"regions started with; `quorumdb global` changes who is primary). Leave out --regions to start "
            f"the existing regions, or use another --data-dir for a new Global Database")


def prepare_global(data_dir: pathlib.Path, regions_text: str | None, wan_text: str | None, base_port: int | None,
                   err: TextIO = sys.stderr, witness: str | None = None) -> regions_mod.GlobalConfig:
    """The Global Database (or, with `witness`, the active-active cluster) in data_dir: the existing
    global file (checked against --regions and --witness, its WAN settings replaced by --wan-ms), or
    a new one laid out and written (an active-active cluster: the peers, then the witness, on
    base + 60 i). Raises RegionsError, having written nothing, for an argument that is not valid or
    does not match."""
    if witness is not None:
        if regions_text is None and not regions_mod.is_global(data_dir):
            raise regions_mod.RegionsError("--witness needs --regions with the two peer regions "
                                           "(e.g. --regions us-east-1,us-east-2 --witness us-west-2)")
        pairs = regions_mod.parse_active_active(regions_text, witness) if regions_text is not None else None
    else:
        pairs = regions_mod.parse_regions(regions_text) if regions_text is not None else None
    wan = regions_mod.parse_wan(wan_text) if wan_text is not None else None
    if (data_dir / config_mod.CONFIG_FILE).exists():
        raise regions_mod.RegionsError(f"{data_dir} holds a single-region cluster ({config_mod.CONFIG_FILE}); "
                                       f"use another --data-dir for a Global Database or an active-active cluster")
    if not regions_mod.is_global(data_dir):
        if pairs is None:
            raise regions_mod.RegionsError(f"{data_dir} has no {regions_mod.GLOBAL_FILE}: --wan-ms needs --regions "
                                           f"(e.g. --regions us-east:primary,eu-west:secondary)")
        global_cfg = regions_mod.layout(data_dir, pairs, base_port or config_mod.DEFAULT_BASE_PORT, wan or (0.0, 0.0, 0.0))
        global_cfg.write()
        return global_cfg
    global_cfg = regions_mod.load(data_dir)
    problem = regions_mismatch(global_cfg, pairs, witness)
    if problem is not None:
        raise regions_mod.RegionsError(problem)
    first = global_cfg.regions[0].base_port
    if base_port is not None and base_port != first:
        err.write(f"warning: --base-port {base_port} ignored: {global_cfg.path} puts the first region on {first} "
                  f"(use another --data-dir for a new Global Database)\n")
    if wan is not None and wan != (global_cfg.wan_ms, global_cfg.wan_jitter_ms, global_cfg.wan_loss):
        import dataclasses

        global_cfg = dataclasses.replace(global_cfg, wan_ms=wan[0], wan_jitter_ms=wan[1], wan_loss=wan[2])
        global_cfg.write()
    return global_cfg


def region_options(args: argparse.Namespace, index: int) -> argparse.Namespace:
    """`up`'s options as region `index` applies them: --pg-port P puts region i's compute nodes on
    P + 3i.. (so the regions' PostgreSQL ports follow one another); the web console and Prometheus
    watch the first region only."""
    options = argparse.Namespace(**vars(args))
    if getattr(args, "pg_port", None) is not None:
        options.pg_port = args.pg_port + index * len(config_mod.AZS)
    if index > 0:
        options.no_console = True
        options.prometheus = False
    return options


def region_clusters(global_cfg: regions_mod.GlobalConfig, args: argparse.Namespace) -> list[config_mod.ClusterConfig]:
    """Every region's cluster file: reused, or written on first start; `up`'s options applied to each."""
    from tools.launcher import region_cluster_config

    clusters = []
    for index, region in enumerate(global_cfg.regions):
        if region.cluster_file.exists():
            cluster = config_mod.load(region.cluster_file)
        else:
            cluster = region_cluster_config(global_cfg, region)
            cluster.write()
        options = region_options(args, index)
        cluster = apply_pg_options(cluster, options)
        cluster = apply_metrics_option(cluster, options)
        cluster = apply_insecure_option(cluster, args)
        clusters.append(cluster)
    return clusters


def region_ports_in_use(cluster: config_mod.ClusterConfig, options: argparse.Namespace) -> list[str]:
    busy = [f"{node.name} ({node.address})" for node in ports_in_use(cluster)]
    supervisor_address = supervisor_address_of(cluster)
    if supervisor_address is not None and not port_free(*_host_port(supervisor_address)):
        busy.append(f"supervisor ({supervisor_address})")
    return busy + observability_ports_in_use(cluster, options)


def current_primary(global_cfg: regions_mod.GlobalConfig) -> str:
    """The region `up` expects to serve writes: the control state's (after a failover), else the
    global file's initial primary."""
    try:
        return regions_mod.read_state(global_cfg.data_dir).primary or global_cfg.initial_primary
    except (regions_mod.RegionsError, ValueError):
        return global_cfg.initial_primary


def wait_until_regions_ready(launched: Any, primary: str, deadline: float) -> dict[str, dict[str, common_pb2.NodeStatus]]:
    """Every node of every region answers Status; the primary region is ready as a single cluster is
    (healthy compute nodes, SELECT 1). A secondary's compute nodes need not serve reads yet: what
    they serve depends on replication, which `quorumdb global status` reports."""
    from tools.launcher import LaunchError

    statuses = {}
    for name, cluster in launched.clusters.items():
        if name == primary:
            statuses[name] = wait_until_ready(cluster, deadline)
            continue
        try:
            statuses[name] = cluster.wait_ready(timeout_s=max(1.0, deadline - time.monotonic()))
        except LaunchError as error:
            raise NotReady(f"region {name}: {error}") from None
    return statuses


# How long `up` keeps probing an active-active peer's SQL after every node answers: a peer serves
# once the adjudicators of both peers agree on one leader, which may take a few WAN round trips.
AA_SQL_READY_TIMEOUT_S = 30.0


def wait_until_active_active_ready(launched: Any, global_cfg: regions_mod.GlobalConfig, deadline: float
                                   ) -> tuple[dict[str, dict[str, common_pb2.NodeStatus]], dict[str, str | None]]:
    """Every node of every region answers Status (else NotReady); then each peer is probed as a
    single cluster is (healthy compute nodes, SELECT 1) within a bounded time. A peer that does not
    serve SQL yet is reported, not fatal: both peers take writes only while the adjudicators of both
    have one leader, and `quorumdb status` shows who is voted in. Returns the statuses and, per
    peer, None (serves SQL) or why not."""
    from tools.launcher import LaunchError

    statuses = {}
    for name, cluster in launched.clusters.items():
        try:
            statuses[name] = cluster.wait_ready(timeout_s=max(1.0, deadline - time.monotonic()))
        except LaunchError as error:
            raise NotReady(f"region {name}: {error}") from None
    sql_deadline = min(deadline, time.monotonic() + AA_SQL_READY_TIMEOUT_S)

    def probe(name: str) -> tuple[str, dict[str, common_pb2.NodeStatus] | None, str | None]:
        try:
            return name, wait_until_ready(launched.clusters[name], sql_deadline), None
        except NotReady as error:
            return name, None, str(error)

    problems: dict[str, str | None] = {}
    # Both peers at once: each gets the whole bound (one after the other, the second got what was left).
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(global_cfg.peers)) as pool:
        for name, ready, problem in pool.map(probe, global_cfg.peers):
            problems[name] = problem
            if ready is not None:
                statuses[name] = ready
    return statuses, problems


def active_active_ready_lines(global_cfg: regions_mod.GlobalConfig, clusters: Sequence[config_mod.ClusterConfig],
                              problems: dict[str, str | None], node_count: int) -> list[str]:
    wan = (f"WAN between regions: {global_cfg.wan_ms:g} ms one way, jitter up to {global_cfg.wan_jitter_ms:g} ms, "
           f"loss {global_cfg.wan_loss:g}")
    peers, witness = global_cfg.peers, global_cfg.witness
    lines = [f"active-active cluster file: {global_cfg.path}",
             f"regions: {peers[0]} (peer), {peers[1]} (peer), {witness} (witness: journal replicas only); a commit is "
             f"durable in 2 of the 3 regions",
             wan,
             "writes: both peers take reads and writes (no writer endpoint: there is no primary to follow)"]
    for region, cluster in zip(global_cfg.regions, clusters, strict=True):
        if region.role == "witness":
            lines.append(f"witness {region.name}: journal replicas "
                         f"{', '.join(node.address for node in cluster.journals)}")
            continue
        problem = problems.get(region.name)
        serving = "serves SQL" if problem is None else "NOT serving SQL yet (why: above; `quorumdb status` shows the votes)"
        lines.append(f"peer {region.name}: client API {', '.join(node.address for node in cluster.computes)}; "
                     f"PostgreSQL {', '.join(f'{node.host}:{cluster.pg_port(node.name)}' for node in cluster.computes)}; "
                     f"{serving}")
    data_dir = global_cfg.data_dir
    lines += [f"status: `quorumdb status --data-dir {data_dir}` (who is voted in, the leader's region, latency per region)",
              f"break things: `quorumdb chaos --data-dir {data_dir} region-kill {peers[1]}` (region-restart, "
              f"region-partition {witness}, region-link-cut {peers[0]} {peers[1]}, region-heal, wan --ms N)",
              f"benchmark one region: `quorumdb bench --data-dir {data_dir} --region {peers[1]} --workload point-write`",
              f"QuorumDB active-active cluster is ready: 3 regions (peers {', '.join(peers)}; witness {witness}), "
              f"{node_count} nodes up. Press Ctrl-C to stop."]
    return lines


def start_writer_endpoint(global_cfg: regions_mod.GlobalConfig, err: TextIO) -> Any:
    """The writer endpoint that follows the primary (tools/haproxy.py), or None when this build
    has none or it did not start (the regions still serve on their own endpoints)."""
    import importlib

    try:
        haproxy = importlib.import_module("tools.haproxy")
    except Exception as error:  # noqa: BLE001 - an optional component must not stop the regions
        if not (isinstance(error, ModuleNotFoundError) and error.name == "tools.haproxy"):
            err.write(f"warning: the writer endpoint's module does not import ({error!r}): not started\n")
        return None
    try:
        return haproxy.start(global_cfg)
    except Exception as error:  # noqa: BLE001 - an optional component; the database runs without it
        err.write(f"warning: the writer endpoint did not start: {error}\n")
        return None


def writer_endpoint_line(handle: Any) -> str | None:
    if handle is None:
        return None
    shown = getattr(handle, "line", None) or getattr(handle, "address", None)
    return f"writer endpoint: {shown}" if shown else "writer endpoint: started (tools.haproxy)"


def regions_ready_lines(global_cfg: regions_mod.GlobalConfig, primary: str, node_count: int,
                        writer_line: str | None) -> list[str]:
    wan = (f"WAN between regions: {global_cfg.wan_ms:g} ms one way, jitter {global_cfg.wan_jitter_ms:g} ms, "
           f"loss {global_cfg.wan_loss:g}")
    lines = [f"global cluster file: {global_cfg.path}", wan]
    if writer_line is not None:
        lines.append(writer_line)
    lines += [f"break a region: `quorumdb chaos --data-dir {global_cfg.data_dir} region-kill "
              f"{global_cfg.names[-1]}` (or region-restart, region-partition, region-heal, wan --ms N)",
              f"QuorumDB Global Database is ready: {len(global_cfg.regions)} regions "
              f"({', '.join(global_cfg.names)}; primary {primary}), {node_count} nodes up. Press Ctrl-C to stop."]
    return lines


def command_up_regions(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`up` for a Global Database or an active-active cluster: one launcher Cluster and one
    supervisor per region; the web console (and Prometheus) for the first region only. An
    active-active cluster has no writer endpoint: both peers take writes."""
    from tools.launcher import Cluster, Regions

    data_dir = pathlib.Path(args.data_dir).resolve()
    try:
        global_cfg = prepare_global(data_dir, getattr(args, "regions", None), getattr(args, "wan_ms", None),
                                    args.base_port, err, getattr(args, "witness", None))
    except regions_mod.RegionsError as error:
        err.write(f"quorumdb up: {error}\n")
        return EXIT_USAGE
    clusters = region_clusters(global_cfg, args)
    busy = [f"{region.name}: {what}" for index, (region, cluster) in enumerate(zip(global_cfg.regions, clusters))
            for what in region_ports_in_use(cluster, region_options(args, index))]
    if busy:
        err.write(f"quorumdb up: ports in use: {', '.join(busy)}. Is a cluster already running? Try `quorumdb status"
                  f" --data-dir {data_dir}`.\n")
        return EXIT_FAILED
    if any(cluster.insecure for cluster in clusters):
        _say(out, f"WARNING: {rpc.INSECURE_WARNING}")
    launched = Regions({region.name: Cluster(cluster) for region, cluster in zip(global_cfg.regions, clusters)})
    primary = "" if global_cfg.active_active else current_primary(global_cfg)
    output_lock = threading.Lock()
    extras = Observability()

    def say(text: str) -> None:
        with output_lock:
            _say(out, text)
        if extras.console is not None:
            extras.console.state.event("chaos" if text.startswith("chaos:") else "log", text)

    def region_say(region: str) -> Callable[[str], None]:
        return lambda text: say(f"chaos: {region}: {text.removeprefix('chaos: ')}" if text.startswith("chaos: ")
                                else f"{region}: {text}")

    supervisors = {name: supervisor_mod.Supervisor(cluster, region_say(name)) for name, cluster in launched.clusters.items()}
    servers: list[Any] = []
    writer: list[Any] = []  # the writer endpoint's handle, once started
    previous_handlers = _install_shutdown_handlers()

    def stop() -> None:
        _stop_regions(launched, supervisors.values(), servers, extras, writer)

    try:
        try:
            node_count = sum(len(cluster.nodes) for cluster in clusters)
            _say(out, f"starting {node_count} nodes of {len(clusters)} regions from {global_cfg.path}")
            _say(out, f"logs: {data_dir / regions_mod.REGIONS_DIR}/<region>/logs/<node>.log")
            launched.start()
            for name, cluster in zip(global_cfg.names, clusters):
                servers.append(supervisor_mod.serve(supervisors[name], supervisor_address_of(cluster)))
            extras.start(clusters[0], args, supervisors[global_cfg.names[0]], err)
            deadline = time.monotonic() + args.ready_timeout
            problems: dict[str, str | None] = {}
            handle = None
            if global_cfg.active_active:
                statuses, problems = wait_until_active_active_ready(launched, global_cfg, deadline)
                for name, problem in problems.items():
                    if problem is not None:
                        err.write(f"warning: peer {name} does not serve SQL yet: {problem}\n")
            else:
                statuses = wait_until_regions_ready(launched, primary, deadline)
                handle = start_writer_endpoint(global_cfg, err)
                if handle is not None:
                    writer.append(handle)
            with output_lock:
                for index, (region, cluster) in enumerate(zip(global_cfg.regions, clusters)):
                    first = index == 0
                    now = ", primary now" if region.name == primary and not global_cfg.active_active else ""
                    out.write(f"\n{region_title(region)}{now}\n")
                    out.write(ready_report(cluster, statuses[region.name], launched.clusters[region.name].pids,
                                           supervisor_address_of(cluster), extras.console_url if first else None,
                                           extras.prometheus_line if first else None, final_line=False))
                if global_cfg.active_active:
                    ready_lines = active_active_ready_lines(global_cfg, clusters, problems, node_count)
                else:
                    ready_lines = regions_ready_lines(global_cfg, primary, node_count, writer_endpoint_line(handle))
                out.write("\n" + "\n".join(ready_lines) + "\n")
                out.flush()
            reported: set[int] = set()
            while True:
                for name, cluster in launched.clusters.items():
                    report_exits(cluster, say, supervisors[name], reported, region=name)
                time.sleep(limits.UP_MONITOR_INTERVAL_S)
        except NotReady as error:
            what = "active-active cluster" if global_cfg.active_active else "Global Database"
            err.write(f"quorumdb up: the {what} did not become ready: {error}\n")
            for name, cluster in launched.clusters.items():
                for node in cluster.config.nodes:
                    if not cluster.is_running(node.name):
                        path = cluster.config.log_path(node.name)
                        err.write(f"  {name}/{node.name} is not running; last lines of {path}:\n{log_tail(path)}\n")
            err.write(f"  all logs: {data_dir / regions_mod.REGIONS_DIR}/<region>/logs\nstopping the nodes it started\n")
            err.flush()
            stop()
            return EXIT_FAILED
    except ShutdownRequested as signal_name:
        say(f"{signal_name}: stopping {len(launched.pids)} nodes of {len(launched.clusters)} regions")
        stop()
        say("stopped")
        return EXIT_OK
    except BaseException:
        stop()
        raise
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    return EXIT_OK


def _stop_regions(launched: Any, supervisors: Any, servers: list[Any], extras: Any, writer: list[Any]) -> None:
    """Stop `up`: signals ignored, no chaos action after this starts, the writer endpoint and the
    console first, then every region's nodes (all of them, whatever failed before)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for supervisor in supervisors:
        supervisor.close()  # no chaos action starts a node after this
    for server in servers:
        server.stop(grace=1.0)
    for handle, what in [(handle, "the writer endpoint") for handle in writer] + [(extras, "the console or Prometheus")]:
        if handle is None:
            continue
        try:
            handle.stop()
        except Exception as error:  # noqa: BLE001 - the nodes below are stopped regardless
            sys.stderr.write(f"quorumdb up: stopping {what} failed: {error!r}\n")
    launched.stop_all(timeout_s=limits.UP_STOP_TIMEOUT_S)
    still_running = launched.pids
    assert not still_running, f"nodes still running after stop_all: {still_running}"


# --- the web console, Prometheus and top -----------------------------------------------
def observability_ports_in_use(cluster: config_mod.ClusterConfig, args: argparse.Namespace) -> list[str]:
    """The console's, Prometheus' and the nodes' metrics ports `up` would use that are taken."""
    from tools import prometheus
    from tools.console import server as console_server

    if base_port_of(cluster) is None:
        return []  # a custom layout: no console or Prometheus (see Observability.start)
    busy = []
    if cluster.metrics:
        busy += [f"{node.name} metrics ({node.host}:{cluster.metrics_port(node.name)})" for node in cluster.nodes
                 if not port_free(node.host, cluster.metrics_port(node.name))]
    if not getattr(args, "no_console", False) and not port_free(*console_server.address(cluster)):
        busy.append("console ({}:{})".format(*console_server.address(cluster)))
    if getattr(args, "prometheus", False) and not port_free(*prometheus.address(cluster)):
        busy.append("prometheus ({}:{})".format(*prometheus.address(cluster)))
    return busy


class Observability:
    """What `up` runs beside its nodes to watch them: the web console, and Prometheus if asked."""

    def __init__(self) -> None:
        self.console = None
        self.prometheus = None
        self.console_url: str | None = None
        self.prometheus_line: str | None = None

    def start(self, cluster: config_mod.ClusterConfig, args: argparse.Namespace, supervisor: Any,
              err: TextIO) -> None:
        from tools import prometheus

        if base_port_of(cluster) is None:
            err.write("warning: the cluster file has a custom layout: no web console or Prometheus\n")
            return
        if not getattr(args, "no_console", False):
            from tools.console import server as console_server

            self.console = console_server.Console(cluster, supervisor)
            self.console.start()
            self.console_url = self.console.url
        if getattr(args, "prometheus", False):
            binary = prometheus.find_binary()
            if not cluster.metrics:
                self.prometheus_line = "prometheus: not started: the cluster has metrics off (--no-metrics)"
            elif binary is None:
                self.prometheus_line = f"prometheus: not started: no `prometheus` binary; {prometheus.INSTALL_HINT}"
            else:
                self.prometheus = prometheus.start(cluster, binary)
                host, port = prometheus.address(cluster)
                self.prometheus_line = (f"prometheus: http://{host}:{port}/ (pid {self.prometheus.pid}; scrape "
                                        f"configuration {prometheus.directory(cluster) / 'prometheus.yml'})")

    def stop(self) -> None:
        from tools import prometheus

        if self.console is not None:
            self.console.close()
            self.console = None
        if self.prometheus is not None:
            prometheus.stop(self.prometheus)
            self.prometheus = None


def apply_metrics_option(cluster: config_mod.ClusterConfig, args: argparse.Namespace) -> config_mod.ClusterConfig:
    """`up --no-metrics` / `--metrics` written into the cluster file (the nodes read it)."""
    import dataclasses

    wanted = getattr(args, "metrics", None)
    if wanted is None or wanted == cluster.metrics:
        return cluster
    cluster = dataclasses.replace(cluster, metrics=wanted)
    cluster.write()
    return cluster


def apply_insecure_option(cluster: config_mod.ClusterConfig, args: argparse.Namespace) -> config_mod.ClusterConfig:
    """`up --insecure` written into the cluster file: plaintext and no authentication, for
    development (the nodes read it, and say so in their logs)."""
    import dataclasses

    if not getattr(args, "insecure", False) or cluster.insecure:
        return cluster
    cluster = dataclasses.replace(cluster, insecure=True)
    cluster.write()
    return cluster


def command_top(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from tools import top

    cluster = _cluster_for_status(args, "top")
    base = base_port_of(cluster)
    supervisor = supervisor_mod.address(base, args.host) if base is not None else None
    return top.main(cluster, args.interval, args.iterations, not args.no_clear,
                    host=args.host if args.data_dir is None else None, supervisor=supervisor, out=out,
                    credentials=toolcreds.for_args(args, args.data_dir))


# --- chaos -------------------------------------------------------------------------------------
CHAOS_HELP = """\
Break a running `quorumdb up` cluster on purpose and watch it cope. The actions go to
the supervisor inside `quorumdb up` (127.0.0.1:<base port + 39>), which prints them too.

actions:
  kill NODE         SIGKILL one node (a crash); `up` reports it and keeps running
  restart NODE      SIGKILL it if it runs, start it again, wait until it answers
  pause NODE        SIGSTOP: the process freezes with its connections open
  resume NODE       SIGCONT a paused node
  stop NODE         SIGTERM: a clean shutdown
  kill-az AZ        SIGKILL every node of an AZ (az1, az2, az3)
  restart-az AZ     start every node of an AZ again (killing those still running)
  partition AZ      cut every network link between the AZ's nodes and the other AZs
                    (nodes keep running; clients like qsql still reach every node)
  heal              remove every network cut
  kill-leader       SIGKILL whichever adjudicator leads now
  nodes             list the nodes, their PIDs and states, and the cut links

a Global Database (`quorumdb up --regions ...`; give its directory with --data-dir, default
$QUORUMDB_DATA_DIR or ./quorumdb-data):
  region-kill R     SIGKILL every node of region R at once (through R's supervisor)
  region-restart R  start every node of R again (killing those still running), wait until they answer
  region-partition R  cut every link between region R and the other regions (quorumdb.wan)
  region-link-cut A B  cut only the link between regions A and B, both ways (their other links stay)
  region-heal       remove every cut between regions (partitions and cut links)
  wan --ms DELAY[,JITTER[,LOSS]]  set the delay (ms), jitter (ms) and loss (0..0.5) between regions
  The node and AZ actions above name a region's node or AZ as REGION/NODE or REGION/AZ
  (kill eu-west/storage-az1-a, kill-az us-east/az2); kill-leader takes a REGION; heal and
  nodes act on every region, or on one given as REGION.

examples:
  quorumdb chaos kill-leader            # a standby takes over; commits resume
  quorumdb chaos partition az3          # az1 + az2 go on; az3's compute node refuses
  quorumdb chaos heal
  quorumdb chaos --base-port 7200 kill storage-az2-a
  quorumdb chaos --data-dir gdb region-kill eu-west
  quorumdb chaos --data-dir gdb kill eu-west/journal-az1
  quorumdb chaos --data-dir gdb wan --ms 80,10

an active-active cluster (`quorumdb up --regions A,B --witness W ...`) takes the same actions: the
witness too (region-kill W, region-partition W, REGION/NODE of its journal replicas), and
  quorumdb chaos --data-dir aa region-link-cut us-east-1 us-east-2   # the peers lose each other only
  quorumdb chaos --data-dir aa kill-leader      # the one adjudicator leader, whichever peer it is in

Exit status: 0 when the action was done, 1 otherwise (unknown node or AZ, node not
running, no `quorumdb up` on that base port), 2 for a usage error (an unknown region,
a bad --ms, a region action without a Global Database).
"""
# action -> (argument it takes or None, supervisor RPC)
CHAOS_ACTIONS: dict[str, tuple[str | None, str]] = {
    "kill": ("NODE", "Kill"),
    "restart": ("NODE", "Restart"),
    "pause": ("NODE", "Pause"),
    "resume": ("NODE", "Resume"),
    "stop": ("NODE", "Stop"),
    "kill-az": ("AZ", "KillAz"),
    "restart-az": ("AZ", "RestartAz"),
    "partition": ("AZ", "Partition"),
    "heal": (None, "Heal"),
    "kill-leader": (None, "KillLeader"),
    "nodes": (None, "Nodes"),
}
# Actions on whole regions of a Global Database: action -> (argument, supervisor RPC of the region,
# or None for the network actions, which quorumdb.wan does across every region).
REGION_ACTIONS: dict[str, tuple[str | None, str | None]] = {
    "region-kill": ("REGION", "KillAll"),
    "region-restart": ("REGION", "RestartAll"),
    "region-partition": ("REGION", None),
    "region-link-cut": ("REGION REGION", None),
    "region-heal": (None, None),
    "wan": (None, None),
}
CHAOS_CUTS_SHOWN = 8  # cut links `chaos nodes` lists by name (an AZ partition cuts 50)


def chaos_request(action: str, argument: str | None) -> Any:
    kind, _ = CHAOS_ACTIONS.get(action, (None, None))
    match kind:
        case "NODE":
            return supervisor_pb2.NodeActionRequest(name=argument)
        case "AZ":
            return supervisor_pb2.AzActionRequest(az=argument)
    match action:
        case "heal":
            return supervisor_pb2.HealRequest()
        case "kill-leader":
            return supervisor_pb2.KillLeaderRequest()
        case "nodes":
            return supervisor_pb2.NodesRequest()
        case "region-kill" | "region-restart":
            return supervisor_pb2.AllActionRequest()
    raise AssertionError(action)


def supervised_nodes_table(reply: supervisor_pb2.NodesReply) -> str:
    rows = [(n.name, n.az, n.service, n.state, str(n.pid or ""), n.address) for n in reply.nodes]
    table = fmt.format_table(
        [("node", "text"), ("az", "text"), ("service", "text"), ("state", "text"), ("pid", "integer"),
         ("address", "text")],
        rows, fmt.PrintOptions(), footers=[f"({len(rows)} nodes)"],
    ).rstrip("\n")
    shown = list(reply.cut_links[:CHAOS_CUTS_SHOWN])
    if len(reply.cut_links) > len(shown):
        shown.append(f"... and {len(reply.cut_links) - len(shown)} more")
    cuts = f"{len(reply.cut_links)}: " + ", ".join(shown) if reply.cut_links else "none"
    return f"{table}\ncut links (rules v{reply.rules_version}): {cuts}\n"


def _chaos_target(args: argparse.Namespace) -> str:
    if args.data_dir is not None:
        path = pathlib.Path(args.data_dir) / config_mod.CONFIG_FILE
        if not path.exists():
            raise SystemExit(f"quorumdb chaos: no cluster file at {path}")
        target = supervisor_address_of(config_mod.load(path))
        if target is None:
            raise SystemExit(f"quorumdb chaos: {path} has a custom layout: `quorumdb up` runs no supervisor for it")
        return target
    return supervisor_mod.address(args.base_port, args.host)


def command_backtrack(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from tools.dr import backtrack as backtrack_mod

    cluster = _cluster_for_status(args, "backtrack")
    try:
        return asyncio.run(backtrack_mod.backtrack(cluster, args.to_time, out,
                                                   credentials=toolcreds.for_args(args, args.data_dir)))
    except backtrack_mod.BacktrackError as error:
        err.write(f"quorumdb backtrack: {error}\n")
        err.flush()
        return EXIT_FAILED


def command_chaos(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if getattr(args, "ms", None) is not None and args.action != "wan":
        err.write(f"quorumdb chaos: --ms goes with `wan`, not {args.action}\n")
        return EXIT_USAGE
    if getattr(args, "second", None) is not None and args.action != "region-link-cut":
        err.write(f"quorumdb chaos: {args.action} takes at most one argument (got {args.argument!r} and "
                  f"{args.second!r})\n")
        return EXIT_USAGE
    if args.action in REGION_ACTIONS:
        return command_chaos_region(args, out, err)
    kind, _ = CHAOS_ACTIONS[args.action]
    if args.data_dir is not None and global_data_dir(pathlib.Path(args.data_dir)):
        return command_chaos_global(args, out, err)
    if kind is not None and not args.argument:
        err.write(f"quorumdb chaos: {args.action} needs a {kind} (see quorumdb chaos --help)\n")
        return EXIT_USAGE
    if kind is None and args.argument:
        err.write(f"quorumdb chaos: {args.action} takes no argument (got {args.argument!r})\n")
        return EXIT_USAGE
    return chaos_call(_chaos_target(args), args.action, args.argument, out, err,
                      credentials=toolcreds.for_args(args, args.data_dir))


def chaos_call(target: str, action: str, argument: str | None, out: TextIO, err: TextIO, label: str = "", *,
               credentials: toolcreds.credentials_mod.Source) -> int:
    """One action on the supervisor at `target`; its message printed (after `label`, a region's)."""
    method = {**CHAOS_ACTIONS, **REGION_ACTIONS}[action][1]
    with toolcreds.sync_channel(target, credentials) as channel:
        stub = supervisor_pb2_grpc.SupervisorStub(channel)
        try:
            nodes = stub.Nodes(supervisor_pb2.NodesRequest(), timeout=limits.CHAOS_CONNECT_TIMEOUT_S)
        except grpc.RpcError as error:
            if error.code() in rpc.UNREACHABLE:
                err.write(f"quorumdb chaos: {label}no `quorumdb up` answers at {target} (its supervisor listens on base "
                          f"port + {supervisor_mod.PORT_OFFSET}); is it running with that --base-port?\n")
            else:
                err.write(f"quorumdb chaos: {label}{target}: {error.code().name}: {error.details()}\n")
            return EXIT_FAILED
        if action == "nodes":
            out.write(label + supervised_nodes_table(nodes))
            out.flush()
            return EXIT_OK
        try:
            reply = getattr(stub, method)(chaos_request(action, argument), timeout=limits.CHAOS_RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            err.write(f"quorumdb chaos {action}: {label}{error.details() or error.code().name}\n")
            return EXIT_FAILED
    out.write(label + reply.message + "\n")
    out.flush()
    return EXIT_OK


class ChaosUsage(Exception):
    """A chaos argument that is not valid for a Global Database (the message says why; exit 2)."""


def global_for_chaos(args: argparse.Namespace) -> regions_mod.GlobalConfig:
    """The Global Database chaos acts on: --data-dir, else $QUORUMDB_DATA_DIR or ./quorumdb-data."""
    data_dir = pathlib.Path(args.data_dir or os.environ.get("QUORUMDB_DATA_DIR", DEFAULT_DATA_DIR))
    if not regions_mod.is_global(data_dir):
        raise ChaosUsage(f"{args.action} acts on a Global Database: {data_dir} has no {regions_mod.GLOBAL_FILE} "
                         f"(start one with `quorumdb up --regions ...`, and give its --data-dir)")
    return regions_mod.load(data_dir)


def chaos_region(global_cfg: regions_mod.GlobalConfig, name: str | None, action: str) -> regions_mod.RegionConfig:
    if not name:
        raise ChaosUsage(f"{action} needs a REGION (regions: {', '.join(global_cfg.names)})")
    try:
        return global_cfg.region(name)
    except KeyError:
        raise ChaosUsage(f"no region named {name!r} (regions: {', '.join(global_cfg.names)})") from None


def split_qualified(global_cfg: regions_mod.GlobalConfig, argument: str | None, action: str,
                    kind: str) -> tuple[regions_mod.RegionConfig, str]:
    """`REGION/NODE` (or `REGION/AZ`) -> (the region, NODE)."""
    region_name, slash, name = (argument or "").partition("/")
    if not slash or not name:
        example = "eu-west/storage-az1-a" if kind == "NODE" else "eu-west/az2"
        raise ChaosUsage(f"{action} in a Global Database needs REGION/{kind}, e.g. {example} "
                         f"(regions: {', '.join(global_cfg.names)})")
    return chaos_region(global_cfg, region_name, action), name


def region_supervisor(region: regions_mod.RegionConfig) -> str:
    return supervisor_mod.address(region.base_port)


def command_chaos_global(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """A node, AZ or cluster action on one region (REGION/NODE, REGION/AZ, REGION), or on every region."""
    kind, _ = CHAOS_ACTIONS[args.action]
    try:
        global_cfg = global_for_chaos(args)
        if kind is not None:
            region, name = split_qualified(global_cfg, args.argument, args.action, kind)
            return chaos_call(region_supervisor(region), args.action, name, out, err, f"{region.name}: ",
                              credentials=toolcreds.for_args(args, global_cfg.data_dir))
        if args.action == "kill-leader" and not args.argument and global_cfg.active_active:
            return chaos_kill_active_active_leader(global_cfg, out, err, toolcreds.for_args(args, global_cfg.data_dir))
        if args.action == "kill-leader":
            region = chaos_region(global_cfg, args.argument, args.action)
            return chaos_call(region_supervisor(region), args.action, None, out, err, f"{region.name}: ",
                              credentials=toolcreds.for_args(args, global_cfg.data_dir))
        chosen = [chaos_region(global_cfg, args.argument, args.action)] if args.argument else list(global_cfg.regions)
    except ChaosUsage as error:
        err.write(f"quorumdb chaos: {error}\n")
        return EXIT_USAGE
    credentials = toolcreds.for_args(args, global_cfg.data_dir)
    codes = [chaos_call(region_supervisor(region), args.action, None, out, err, f"{region.name}: ",
                        credentials=credentials) for region in chosen]
    return max(codes)


def chaos_kill_active_active_leader(global_cfg: regions_mod.GlobalConfig, out: TextIO, err: TextIO,
                                    credentials: toolcreds.credentials_mod.Source) -> int:
    """`kill-leader` with no REGION in an active-active cluster: the one adjudicator leader of both
    peers, wherever it is (found as `status` finds it), killed through its region's supervisor."""
    from quorumdb import members

    peers = [global_cfg.region(name) for name in global_cfg.peers]
    clusters = [region.cluster() for region in peers]
    adjudicators = [node for cluster in clusters for node in cluster.adjudicators]
    statuses = iter(fetch_statuses(adjudicators, limits.STATUS_TIMEOUT_S, credentials=credentials))
    sections = [(region, cluster, [next(statuses) if node.service == "adjudicator" else None for node in cluster.nodes])
                for region, cluster in zip(peers, clusters, strict=True)]
    leader = adjudicator_leader(sections)
    if leader is None:
        err.write("quorumdb chaos kill-leader: no adjudicator of the peers says it leads (an election may be under "
                  "way); try again, or name a REGION\n")
        return EXIT_FAILED
    region_name, node_name = members.split(leader[0])
    region = global_cfg.region(region_name or leader[1])
    return chaos_call(region_supervisor(region), "kill", node_name, out, err,
                      f"{region.name}: leader {leader[0]} (epoch {leader[2].epoch}): ", credentials=credentials)


def command_chaos_region(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """region-kill / region-restart through the region's supervisor; region-partition, region-heal
    and wan through quorumdb.wan, which changes the links between regions for every node."""
    kind, method = REGION_ACTIONS[args.action]
    try:
        if kind is None and args.argument:
            raise ChaosUsage(f"{args.action} takes no argument (got {args.argument!r})")
        wan = None
        if args.action == "wan":
            if args.ms is None:
                raise ChaosUsage("wan needs --ms DELAY[,JITTER[,LOSS]], e.g. wan --ms 30,5,0.01")
            try:
                wan = regions_mod.parse_wan(args.ms)
            except regions_mod.RegionsError as error:
                raise ChaosUsage(str(error).replace("--wan-ms", "--ms", 1)) from None
        global_cfg = global_for_chaos(args)
        region = chaos_region(global_cfg, args.argument, args.action) if kind is not None else None
        other = None
        if args.action == "region-link-cut":
            if not getattr(args, "second", None):
                raise ChaosUsage(f"region-link-cut needs two regions, A B (regions: {', '.join(global_cfg.names)})")
            other = chaos_region(global_cfg, args.second, args.action)
            if other.name == region.name:
                raise ChaosUsage(f"region-link-cut needs two different regions, not {region.name} twice")
    except ChaosUsage as error:
        err.write(f"quorumdb chaos: {error}\n")
        return EXIT_USAGE
    if method is not None:
        return chaos_call(region_supervisor(region), args.action, None, out, err, f"region {region.name}: ",
                          credentials=toolcreds.for_args(args, global_cfg.data_dir))
    import importlib

    try:
        wan_mod = importlib.import_module("quorumdb.wan")
    except Exception as error:  # noqa: BLE001 - said and exit 1, as any failed action
        missing = isinstance(error, ModuleNotFoundError) and error.name == "quorumdb.wan"
        err.write(f"quorumdb chaos {args.action}: "
                  + ("this build has no quorumdb.wan (the links between regions)\n" if missing
                     else f"quorumdb.wan does not import: {error!r}\n"))
        return EXIT_FAILED
    others = [name for name in global_cfg.names if region is None or name != region.name]
    try:
        match args.action:
            case "region-partition":
                result = wan_mod.partition_region(global_cfg, region.name)
                summary = f"partitioned region {region.name} from {', '.join(others)}: every link between them cut"
            case "region-link-cut":
                result = wan_mod.cut_link(global_cfg, region.name, other.name)
                rest = [name for name in global_cfg.names if name not in (region.name, other.name)]
                summary = (f"cut the link between regions {region.name} and {other.name}, both ways "
                           f"(rules v{result.version}); their links to {', '.join(rest) or 'other regions'} stay up")
            case "region-heal":
                result = wan_mod.heal_regions(global_cfg)
                summary = f"healed the links between regions {', '.join(global_cfg.names)}"
            case "wan":
                result = wan_mod.set_wan(global_cfg, *wan)
                summary = (f"WAN between regions now {wan[0]:g} ms one way, jitter {wan[1]:g} ms, loss {wan[2]:g}")
            case _:
                raise AssertionError(args.action)
    except (OSError, ValueError, KeyError) as error:
        err.write(f"quorumdb chaos {args.action}: {error}\n")
        return EXIT_FAILED
    # quorumdb.wan may say more (rules version, links cut); its own words win when it has some.
    out.write((result if isinstance(result, str) and result else summary) + "\n")
    out.flush()
    return EXIT_OK


# --- token --------------------------------------------------------------------------
def command_token(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from quorumdb import tokens

    out, err = out or sys.stdout, err or sys.stderr

    try:
        lifetime_s = tokens.parse_duration(args.expires)
        secret = tokens.load_or_create_secret(tokens.secret_dir(pathlib.Path(args.data_dir).resolve()))
        token, _ = tokens.issue(secret, args.user, lifetime_s, time.time())
    except (tokens.TokenError, OSError) as error:
        err.write(f"quorumdb token: {error}\n")
        return EXIT_FAILED
    out.write(token + "\n")
    return EXIT_OK


def apply_pg_options(cluster: config_mod.ClusterConfig, args: argparse.Namespace) -> config_mod.ClusterConfig:
    """`up --pg-port/--trust`, `--read-mode`, `--clock-error-ms` and the recovery settings
    (`--backup-dir`, `--backup-retention`, `--backtrack-window`) written into the cluster file."""
    import dataclasses

    changes: dict[str, Any] = {}
    if getattr(args, "pg_port", None) is not None and args.pg_port != cluster.pg_base_port:
        changes["pg_base_port"] = args.pg_port
    if getattr(args, "trust", False) != cluster.pg_trust:
        changes["pg_trust"] = bool(getattr(args, "trust", False))
    if getattr(args, "read_mode", None) is not None and args.read_mode != cluster.read_mode:
        changes["read_mode"] = args.read_mode
    clock_error_ms = getattr(args, "clock_error_ms", None)
    if clock_error_ms is not None and round(clock_error_ms * 1_000_000) != cluster.clock_error_ns:
        changes["clock_error_ns"] = round(clock_error_ms * 1_000_000)
    for option, setting in (("backup_dir", "backup_dir"), ("backup_retention", "backup_retention_s"),
                            ("backtrack_window", "backtrack_window_s")):
        value = getattr(args, option, None)
        if value is not None and value != getattr(cluster, setting):
            changes[setting] = value
    if not changes:
        return cluster
    cluster = dataclasses.replace(cluster, **changes)
    cluster.write()
    return cluster


def _duration_s(text: str) -> float:
    from quorumdb import tokens

    try:
        seconds = tokens.parse_duration(text)
    except tokens.TokenError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be longer than 0 s")
    return float(seconds)


def _backup_dir(text: str) -> str:
    """A directory, or s3://bucket/prefix checked for a valid bucket name and key prefix."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory or s3://bucket/prefix")
    if text.startswith("s3://"):
        from quorumdb.s3store import parse_url

        try:
            parse_url(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _clock_error_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value <= limits.CLOCK_ERROR_MS_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {limits.CLOCK_ERROR_MS_MAX:g} ms")
    return value


# --- clone -----------------------------------------------------------------------------------
def command_clone(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from tools.dr import clone as clone_mod

    try:
        report = clone_mod.clone(args.source, args.data_dir, at_time=args.at_time, base_port=args.base_port)
    except clone_mod.CloneError as error:
        print(f"quorumdb clone: {error}", file=err)
        return EXIT_FAILED
    for line in report.lines():
        print(line, file=out)
    return EXIT_OK


# --- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quorumdb", description="Run and inspect a local QuorumDB cluster.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start a local cluster and keep it running until Ctrl-C")
    up.add_argument("--data-dir", default=os.environ.get("QUORUMDB_DATA_DIR", DEFAULT_DATA_DIR),
                    help=f"cluster data directory (default ./{DEFAULT_DATA_DIR} or $QUORUMDB_DATA_DIR)")
    up.add_argument("--base-port", type=int, default=None,
                    help=f"first port of the 60-port block (default {config_mod.DEFAULT_BASE_PORT}; "
                         "only used when the data directory has no cluster.toml yet)")
    # a Global Database (quorumdb/regions.py, docs/REGIONS.md)
    up.add_argument("--regions", default=None, metavar="NAME:ROLE,...",
                    help="start a Global Database: one whole cluster per region, e.g. us-east:primary,eu-west:secondary "
                         "(region i on base port + 60 i; DATA_DIR/global.toml is written on the first start, then "
                         "reused: a later `up --data-dir DATA_DIR` starts every region, --regions optional)")
    up.add_argument("--witness", default=None, metavar="NAME",
                    help="start an active-active cluster instead (docs/ACTIVE_ACTIVE.md): --regions names the two "
                         "peer regions, which both take reads and writes, and NAME the witness region, which holds "
                         "journal replicas only; a commit is durable in 2 of the 3 regions")
    up.add_argument("--wan-ms", default=None, metavar="DELAY[,JITTER[,LOSS]]",
                    help="delay (ms, one way), jitter (ms) and loss (fraction 0..0.5) of every message between "
                         "regions, e.g. 30,5,0.01; written into global.toml (default: keep it, 0 when new)")
    up.add_argument("--insecure", action="store_true",
                    help="plaintext gRPC and no authentication (no certificates, no tokens): for development "
                         "only; written into the cluster file, and every node warns about it in its log")
    up.add_argument("--ready-timeout", type=float, default=limits.UP_READY_TIMEOUT_S,
                    help=f"seconds to wait for the cluster to be ready (default {limits.UP_READY_TIMEOUT_S:.0f})")
    # PostgreSQL endpoint options (see docs/POSTGRES.md)
    up.add_argument("--pg-port", type=int, default=None,
                    help=f"PostgreSQL port of compute-az1; compute i on PG_PORT + i (default "
                         f"{config_mod.DEFAULT_PG_PORT} for the default base port)")
    up.add_argument("--trust", action="store_true",
                    help="no authentication on the PostgreSQL endpoint (development only)")
    up.add_argument("--read-mode", choices=list(config_mod.READ_MODES), default=None,
                    help="how compute nodes read storage: quorum (3 of 6 copies) or single (one caught-up "
                         "copy); written into cluster.toml (default: keep its read_mode, quorum when new)")
    up.add_argument("--clock-error-ms", type=_clock_error_ms, default=None, metavar="MS",
                    help="the clock error bound e: now() is [t - e, t + e], and a commit is acknowledged only "
                         "once now().earliest passes its commit_ts (commit-wait, about 2e); written into "
                         "cluster.toml (default: keep its clock_error_ns, 1 ms when new)")

    # metrics, the web console, Prometheus (docs/OBSERVABILITY.md)
    up.add_argument("--prometheus", action="store_true",
                    help="also run Prometheus (Debian's `prometheus`, if installed) scraping every node, on "
                         "base port + 56, its data in DIR/prometheus")
    up.add_argument("--no-metrics", dest="metrics", action="store_false", default=None,
                    help="nodes serve no /metrics and time nothing (written into cluster.toml; "
                         "--metrics turns them back on)")
    up.add_argument("--metrics", dest="metrics", action="store_true", help=argparse.SUPPRESS)
    up.add_argument("--no-console", action="store_true", help="do not serve the web console")

    # storage-layer recovery (docs/DR.md)
    up.add_argument("--backup-dir", type=_backup_dir, default=None, metavar="DIR|s3://bucket/prefix",
                    help="where storage ships its continuous backup: a directory or an S3 bucket and prefix "
                         "(default: DATA_DIR/backup); written into cluster.toml. For S3 the storage nodes "
                         "inherit this command's environment: AWS credentials, AWS_REGION, and "
                         "AWS_ENDPOINT_URL or QUORUMDB_S3_ENDPOINT for an S3-compatible server")
    up.add_argument("--backup-retention", type=_duration_s, default=None, metavar="DURATION",
                    help="keep restorable history this long: 30m, 12h, 1d, 1w (default 1d); written into cluster.toml")
    up.add_argument("--backtrack-window", type=_duration_s, default=None, metavar="DURATION",
                    help="how far back `quorumdb backtrack` can rewind (default 24h, shortened when the versions "
                         "it keeps exceed the per-copy byte budget); written into cluster.toml")

    status = commands.add_parser("status", help="show every node's role, progress and health")
    status.add_argument("--base-port", type=int, default=config_mod.DEFAULT_BASE_PORT,
                        help=f"base port of the cluster (default {config_mod.DEFAULT_BASE_PORT})")
    status.add_argument("--host", default="127.0.0.1", help="host of every node (default 127.0.0.1)")
    status.add_argument("--data-dir", default=None,
                        help="read the nodes from DIR/cluster.toml instead (a Global Database's DIR, with "
                             "global.toml: one section per region)")
    status.add_argument("--json", action="store_true",
                        help='print a JSON list of node objects (a Global Database: {"regions": [{"name", "nodes"}]}; '
                             'an active-active cluster: also each region\'s kind, voted_in, endpoints, pg_endpoints, '
                             'latencies, and the leader)')
    toolcreds.add_arguments(status)

    # `quorumdb token` prints a PostgreSQL password (see docs/POSTGRES.md)
    token = commands.add_parser("token", help="print a short-lived auth token: the password for psql/psycopg")
    token.add_argument("--user", required=True, help="the PostgreSQL user name the token is for")
    token.add_argument("--expires", default="15m", help="lifetime: 30s, 15m, 2h, 1d, 1w (default 15m, max 1w)")
    token.add_argument("--data-dir", default=os.environ.get("QUORUMDB_DATA_DIR", DEFAULT_DATA_DIR),
                       help="the cluster's data directory, which holds the signing secret")

    chaos = commands.add_parser(
        "chaos", help="kill, pause, restart or partition nodes of a running `quorumdb up`",
        description=CHAOS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="quorumdb chaos [--base-port N | --data-dir DIR] ACTION [NODE|AZ|REGION|REGION/NODE] [REGION_B] "
              "[--ms D,J,L]",
    )
    chaos.add_argument("--base-port", type=int, default=config_mod.DEFAULT_BASE_PORT,
                       help=f"base port of the cluster (default {config_mod.DEFAULT_BASE_PORT}); the supervisor "
                            f"is on base + {supervisor_mod.PORT_OFFSET}")
    chaos.add_argument("--host", default="127.0.0.1", help="host of `quorumdb up` (default 127.0.0.1)")
    chaos.add_argument("--data-dir", default=None,
                       help="find the base port in DIR/cluster.toml instead (a Global Database: DIR/global.toml)")
    chaos.add_argument("action", choices=sorted([*CHAOS_ACTIONS, *REGION_ACTIONS]), metavar="ACTION",
                       help="one of: " + ", ".join([*CHAOS_ACTIONS, *REGION_ACTIONS]))
    chaos.add_argument("argument", nargs="?", default=None, metavar="NODE|AZ|REGION",
                       help="the node (e.g. journal-az2) or AZ (az1..az3) the action applies to; in a Global "
                            "Database REGION/NODE or REGION/AZ, or the REGION of a region action")
    chaos.add_argument("second", nargs="?", default=None, metavar="REGION_B",
                       help="for region-link-cut A B: the other end of the link")
    chaos.add_argument("--ms", default=None, metavar="DELAY[,JITTER[,LOSS]]",
                       help="for `wan`: delay (ms, one way), jitter (ms) and loss (0..0.5) between regions")
    toolcreds.add_arguments(chaos)

    # `quorumdb top` (tools/top.py)
    backtrack = commands.add_parser(
        "backtrack", help="rewind the running cluster in place to a time within the backtrack window")
    backtrack.add_argument("--base-port", type=int, default=config_mod.DEFAULT_BASE_PORT,
                           help=f"base port of the running cluster (default {config_mod.DEFAULT_BASE_PORT})")
    backtrack.add_argument("--host", default="127.0.0.1", help="host of every node (default 127.0.0.1)")
    backtrack.add_argument("--data-dir", default=None, help="read the nodes from DIR/cluster.toml instead")
    backtrack.add_argument("--to-time", required=True, metavar="T",
                           help="ISO 8601 UTC time with milliseconds, e.g. 2026-12-01T13:40:00.250Z")
    toolcreds.add_arguments(backtrack)

    top = commands.add_parser("top", help="a live view of the cluster in the terminal, refreshed every second")
    top.add_argument("--base-port", type=int, default=config_mod.DEFAULT_BASE_PORT,
                     help=f"base port of the cluster (default {config_mod.DEFAULT_BASE_PORT})")
    top.add_argument("--host", default="127.0.0.1", help="host of every node (default 127.0.0.1)")
    top.add_argument("--data-dir", default=None, help="read the nodes from DIR/cluster.toml instead")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between screens (default 1)")
    top.add_argument("--iterations", type=int, default=None, help="stop after N screens (default: until Ctrl-C)")
    top.add_argument("--no-clear", action="store_true", help="print screens one after another, no redraw")
    toolcreds.add_arguments(top)

    # `quorumdb clone` (tools/dr/clone.py, docs/DR.md)
    clone = commands.add_parser(
        "clone", help="a copy-on-write clone of a (running) cluster, as a new cluster beside it",
        description="Hard-link the source's newest checkpoint at or before the time into a new data "
                    "directory, copy the log entries after it up to the time, seed a fresh journal. "
                    "Start the clone with `quorumdb up --data-dir NEW`.")
    clone.add_argument("--source", required=True, metavar="DIR", help="the source cluster's data directory")
    clone.add_argument("--data-dir", required=True, metavar="NEW", help="the clone's data directory (new or empty)")
    clone.add_argument("--at-time", default=None, metavar="T",
                       help="clone the state at this ISO 8601 UTC time, e.g. 2026-12-01T13:40:00.250Z "
                            "(default: now; for a source that is not running, its latest stored commit)")
    clone.add_argument("--base-port", type=int, default=None,
                       help="first port of the clone's 60-port block (default: the block after the source's)")

    # `quorumdb bench` (tools/bench, docs/BENCHMARKS.md)
    from tools.bench import command as bench_command
    bench = commands.add_parser("bench", help="run a benchmark workload against a running cluster",
                                description=bench_command.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_command.add_arguments(bench)

    # `quorumdb sim` (tools/sim, docs/SIMULATION.md): only its arguments are imported here
    from tools.sim import cli as sim_cli
    sim = commands.add_parser("sim", help="run seeds of the deterministic simulation of the whole cluster",
                              description=sim_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sim_cli.add_arguments(sim)

    # `quorumdb backup status`, `quorumdb snapshot create|list|delete` (tools/dr/backup_cli.py, docs/DR.md)
    from tools.dr import backup_cli
    backup_cli.add_parsers(commands)
    from tools import global_cli  # `quorumdb global ...` (docs/REGIONS.md)
    global_cli.add_parser(commands, DEFAULT_DATA_DIR)
    from tools import certs_cli  # `quorumdb certs list|rotate` (docs/SECURITY.md)
    certs_cli.add_parser(commands, DEFAULT_DATA_DIR)
    # `quorumdb restore` (tools/dr/restore.py, docs/DR.md)
    from tools.dr import restore as restore_command
    restore = commands.add_parser("restore", help="restore a backup to a point in time into a new cluster",
                                  description=restore_command.HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    restore_command.add_arguments(restore)
    return parser


# Flags that say which cluster to talk to: without any of them, status, chaos and bench look in
# the default data directory, where `quorumdb up` put a cluster of several regions.
_CLUSTER_FLAGS = ("--data-dir", "--base-port", "--port", "-p", "--host")


def adopt_default_regions_dir(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """`quorumdb up --regions ...` with the default data directory, then `quorumdb status` (or
    chaos, or bench) with no flag naming a cluster: use that directory, as `up` told the user, not
    the default single cluster's ports (which are only the first region's)."""
    if args.command not in ("status", "chaos", "bench") or getattr(args, "data_dir", None) is not None:
        return
    if any(arg == flag or arg.startswith(flag + "=") for arg in argv for flag in _CLUSTER_FLAGS):
        return
    default = pathlib.Path(os.environ.get("QUORUMDB_DATA_DIR", DEFAULT_DATA_DIR))
    if global_data_dir(default):
        args.data_dir = str(default)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    adopt_default_regions_dir(args, argv)
    match args.command:
        case "up":
            return command_up(args)
        case "status":
            return command_status(args)
        case "token":
            return command_token(args)
        case "chaos":
            return command_chaos(args)
        case "top":
            return command_top(args)
        case "backtrack":
            return command_backtrack(args)
        case "bench":
            from tools.bench import command as bench_command
            return bench_command.command(args)
        case "backup" | "snapshot":
            from tools.dr import backup_cli
            return backup_cli.command(args)
        case "global":
            from tools import global_cli
            return global_cli.command(args)
        case "certs":
            from tools import certs_cli
            return certs_cli.command(args)
        case "clone":
            return command_clone(args)
        case "sim":
            from tools.sim import cli as sim_cli
            return sim_cli.command(args)
        case "restore":
            from tools.dr import restore as restore_command
            return restore_command.command(args)
    raise AssertionError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
