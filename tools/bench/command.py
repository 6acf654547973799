"""`quorumdb bench`: the command-line face of tools.bench.runner (see docs/BENCHMARKS.md)."""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Sequence, TextIO

from quorumdb import client as client_mod
from quorumdb import config as config_mod
from tools import toolcreds
from tools.bench import runner, workloads

COMPUTE_NODES = 3  # --base-port N means the default cluster's compute nodes N, N+1, N+2

HELP = """Workloads (each creates and loads its tables idempotently before it runs):
""" + "\n".join(f"  {name:15} {cls.description}" for name, cls in workloads.WORKLOADS.items()) + """

Examples:
  quorumdb bench --workload point-write --clients 64 --duration 10
  quorumdb bench --workload tpcb --clients 8 --base-port 7100 --json
  quorumdb bench --data-dir aa --region us-east-2 --workload point-write   # one region's compute nodes

--data-dir DIR takes the compute nodes from DIR's cluster file; for a Global Database or an
active-active cluster (DIR/global.toml), those of --region R only (default: the primary now, or
the first peer; the region used is said on stderr).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", "-w", required=True, choices=list(workloads.WORKLOADS), metavar="W",
                        help="one of: " + ", ".join(workloads.WORKLOADS))
    parser.add_argument("--clients", "-c", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="compute node host (default 127.0.0.1)")
    parser.add_argument("--port", "-p", action="append", default=None,
                        help="compute node port; repeat or comma-separate to spread clients (default 7100)")
    parser.add_argument("--base-port", type=int, default=None,
                        help="use the 3 compute nodes of the cluster with this base port (N, N+1, N+2)")
    parser.add_argument("--data-dir", default=None,
                        help="use the compute nodes of the cluster in DIR (its cluster.toml; a Global Database or "
                             "an active-active cluster: those of one region, see --region)")
    parser.add_argument("--region", default=None, metavar="R",
                        help="with --data-dir of several regions: run against region R's compute nodes only")
    parser.add_argument("--rows", type=int, default=workloads.Params.rows,
                        help=f"rows of the data set (bench_kv, pgbench_accounts; default {workloads.Params.rows})")
    parser.add_argument("--scale", type=int, default=workloads.Params.scale,
                        help="tpcb branches (tellers = 10 per branch; default 1, as pgbench -s 1)")
    parser.add_argument("--hot", type=int, default=workloads.Params.hot,
                        help=f"bank-contended: accounts transfers choose from (default {workloads.Params.hot})")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--driver", choices=["async", "threads"], default="async",
                        help="async tasks (default) or one thread per client with the sync client")
    parser.add_argument("--timeout", type=float, default=10.0, help="each statement's deadline in s (default 10)")
    parser.add_argument("--no-setup", action="store_true", help="skip creating and loading the tables")
    parser.add_argument("--read-mode", choices=["quorum", "single"], default=None,
                        help="SET quorumdb.read_mode on every client session (default: the cluster's read_mode)")
    parser.add_argument("--json", action="store_true", help="no progress; print one JSON object on stdout")
    toolcreds.add_arguments(parser)


def endpoints_of(args: argparse.Namespace) -> list[tuple[str, int]]:
    ports: list[int] = []
    if args.base_port is not None:
        first = args.base_port + config_mod.PORT_OFFSET["compute"]
        ports += range(first, first + COMPUTE_NODES)
    for item in args.port or []:
        ports += [int(part) for part in str(item).split(",") if part.strip()]
    if not ports:
        ports = [config_mod.DEFAULT_BASE_PORT + config_mod.PORT_OFFSET["compute"]]
    return [(args.host, port) for port in dict.fromkeys(ports)]


class RegionChoiceError(ValueError):
    """A --region that names no region with compute nodes (the message lists the ones there are)."""


def region_endpoints(regions: Sequence[tuple[str, str, Sequence[tuple[str, int]]]], wanted: str | None,
                     default: str | None = None) -> tuple[str, list[tuple[str, int]]]:
    """(region, its compute nodes' client API endpoints) for `--region wanted`.

    regions: (name, role, compute endpoints) in the global file's order. Without `wanted`: the
    region `default` names (a Global Database's primary now), else the first that has compute
    nodes. A witness (no compute nodes) or an unknown name is a RegionChoiceError naming the
    regions a workload can run against."""
    usable = [(name, role, list(endpoints)) for name, role, endpoints in regions if endpoints]
    listed = ", ".join(f"{name} ({role})" for name, role, _ in usable)
    if wanted is None:
        chosen = next((item for item in usable if item[0] == default), usable[0] if usable else None)
        if chosen is None:
            raise RegionChoiceError("no region has compute nodes")
        return chosen[0], chosen[2]
    for name, role, endpoints in regions:
        if name == wanted and not endpoints:
            raise RegionChoiceError(f"region {wanted} is a {role} with no compute nodes (journal replicas only); "
                                    f"regions with compute nodes: {listed}")
    for name, _, endpoints in usable:
        if name == wanted:
            return name, endpoints
    raise RegionChoiceError(f"no region named {wanted!r} (regions: {listed})")


def data_dir_endpoints(data_dir: pathlib.Path, region: str | None,
                       err: TextIO) -> list[tuple[str, int]]:
    """The compute nodes a --data-dir names: its cluster file's, or one region's of a Global
    Database or an active-active cluster (saying on err which one, when --region was not given)."""
    from quorumdb import regions as regions_mod

    if (data_dir / config_mod.CONFIG_FILE).exists():
        if region is not None:
            raise RegionChoiceError(f"{data_dir} is a cluster of one region: --region does not apply")
        cluster = config_mod.load(data_dir / config_mod.CONFIG_FILE)
        return [(node.host, node.port) for node in cluster.computes]
    if not regions_mod.is_global(data_dir):
        raise RegionChoiceError(f"{data_dir} holds no cluster ({config_mod.CONFIG_FILE} or {regions_mod.GLOBAL_FILE})")
    global_cfg = regions_mod.load(data_dir)
    listing = []
    for item in global_cfg.regions:
        cluster = item.cluster()
        listing.append((item.name, item.role, [(node.host, node.port) for node in cluster.computes]))
    default = None
    if not global_cfg.active_active:
        try:
            default = regions_mod.read_state(global_cfg.data_dir).primary or global_cfg.initial_primary
        except (regions_mod.RegionsError, ValueError):
            default = global_cfg.initial_primary
    name, endpoints = region_endpoints(listing, region, default)
    if region is None:
        err.write(f"quorumdb bench: region {name} ({global_cfg.region(name).role}) of {', '.join(global_cfg.names)}; "
                  f"choose one with --region\n")
    return endpoints


def command(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        if getattr(args, "region", None) is not None and getattr(args, "data_dir", None) is None:
            raise ValueError("--region needs --data-dir (the directory of the Global Database or active-active "
                             "cluster; found none in the default ./quorumdb-data or $QUORUMDB_DATA_DIR)")
        if getattr(args, "data_dir", None) is not None:
            if args.port or args.base_port is not None:
                raise ValueError("--data-dir chooses the compute nodes: leave out --port and --base-port")
            endpoints = data_dir_endpoints(pathlib.Path(args.data_dir).resolve(), args.region, err)
        else:
            endpoints = endpoints_of(args)
        # Found once here, so that missing credentials are one line, not an error per client.
        toolcreds.for_args(args, args.data_dir)
        options = runner.Options(
            workload=args.workload, clients=args.clients, duration_s=args.duration, warmup_s=args.warmup,
            endpoints=endpoints, seed=args.seed, driver=args.driver, timeout_s=args.timeout,
            setup=not args.no_setup, read_mode=args.read_mode,
            params=workloads.Params(rows=args.rows, scale=args.scale, hot=args.hot),
            token=getattr(args, "token", None), ca=getattr(args, "ca", None),
            data_dir=str(pathlib.Path(args.data_dir).resolve()) if getattr(args, "data_dir", None) else None,
            insecure=getattr(args, "insecure", False),
        )
        report = runner.run(options, progress=None if args.json else err)
    except ValueError as error:
        err.write(f"quorumdb bench: {error}\n")
        return 2
    except client_mod.DatabaseError as error:
        err.write(f"quorumdb bench: {error}\n")
        return 1
    out.write(json.dumps(report) + "\n" if args.json else runner.report_text(report))
    out.flush()
    return 0
