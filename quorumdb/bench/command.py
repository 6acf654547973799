"""`quorumdb bench`: the command-line face of quorumdb.bench.runner (see docs/BENCHMARKS.md)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from quorumdb import client as client_mod
from quorumdb import config as config_mod
from quorumdb.bench import runner, workloads

COMPUTE_NODES = 3  # --base-port N means the default cluster's compute nodes N, N+1, N+2

HELP = """Workloads (each creates and loads its tables idempotently before it runs):
""" + "\n".join(f"  {name:15} {cls.description}" for name, cls in workloads.WORKLOADS.items()) + """

Examples:
  quorumdb bench --workload point-write --clients 64 --duration 10
  quorumdb bench --workload tpcb --clients 8 --base-port 7100 --json
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


def command(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        options = runner.Options(
            workload=args.workload, clients=args.clients, duration_s=args.duration, warmup_s=args.warmup,
            endpoints=endpoints_of(args), seed=args.seed, driver=args.driver, timeout_s=args.timeout,
            setup=not args.no_setup, read_mode=args.read_mode,
            params=workloads.Params(rows=args.rows, scale=args.scale, hot=args.hot),
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
