"""An active-active cluster, measured from the outside (docs/ACTIVE_ACTIVE.md, docs/BENCHMARKS.md).

    python -m tools.bench.active_active_main [--wan-ms 5,25,75] [--seconds 8] [--clients 4] [--json]

On one fresh `quorumdb up --regions a1,a2 --witness w1`:
  1. idle CPU of all 33 node processes (utime + stime over IDLE_S, % of one core);
  2. for each WAN one-way delay D (`quorumdb chaos wan --ms D`, no jitter): `quorumdb bench
     --region R` in each peer, point-write then point-read, each for --seconds: throughput and
     latency percentiles per region, and which region holds the adjudicator leader (its
     commits pay one round trip less: the quorum is the leader's region plus the nearest other,
     while the other peer first crosses to the leader and back).
The machine is shared and noisy: compare figures within one run.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time

from tools.bench import procstat
from tools.bench.global_main import cli, node_pids, start_up, stop_up
from tools.launcher import free_base_port

IDLE_S = 20.0
READY_TIMEOUT_S = 300.0
VOTED_TIMEOUT_S = 120.0
REGIONS = ("a1", "a2")


def say(text: str) -> None:
    print(f"[active-active] {text}", file=sys.stderr, flush=True)  # stdout is the result (--json)


def status(data_dir: pathlib.Path) -> dict:
    done = cli("status", "--json", "--data-dir", str(data_dir), timeout_s=60)
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else {}


def wait_voted_in(data_dir: pathlib.Path) -> dict:
    deadline = time.monotonic() + VOTED_TIMEOUT_S
    while time.monotonic() < deadline:
        current = status(data_dir)
        if current.get("leader") and all(r.get("voted_in") for r in current.get("regions", [])):
            return current
        time.sleep(0.5)
    raise SystemExit(f"not every region voted in within {VOTED_TIMEOUT_S} s: {status(data_dir)}")


def bench(data_dir: pathlib.Path, region: str, workload: str, seconds: float, clients: int) -> dict:
    done = cli("bench", "--data-dir", str(data_dir), "--region", region, "--workload", workload, "--clients",
               str(clients), "--duration", str(seconds), "--warmup", "1", "--json", timeout_s=seconds + 240)
    if done.returncode != 0:
        raise SystemExit(f"bench --region {region} -w {workload} failed: {done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: round(report[key], 2) for key in ("throughput_tps", "latency_ms_p50", "latency_ms_p95",
                                                   "latency_ms_p99") if key in report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wan-ms", default="5,25,75", help="one-way WAN delays to measure, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    delays = [float(d) for d in args.wan_ms.split(",")]
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="qdb-aa-bench-"))
    up, lines, ready = start_up(data_dir, free_base_port(), "--regions", ",".join(REGIONS), "--witness", "w1",
                                "--wan-ms", f"{delays[0]:g}")
    results: dict = {"clients": args.clients, "seconds": args.seconds, "by_wan_ms": {}}
    try:
        if not ready.wait(READY_TIMEOUT_S):
            raise SystemExit("quorumdb up did not become ready:\n" + "".join(lines[-40:]))
        wait_voted_in(data_dir)
        time.sleep(5.0)
        pids = node_pids(data_dir)
        before = procstat.own_seconds(pids)
        time.sleep(IDLE_S)
        results["idle_cpu_pct_of_one_core"] = round(100 * (procstat.own_seconds(pids) - before) / IDLE_S, 1)
        results["nodes"] = len(pids)
        say(f"idle: {results['idle_cpu_pct_of_one_core']} % of one core for {len(pids)} node processes")
        for delay in delays:
            done = cli("chaos", "--data-dir", str(data_dir), "wan", "--ms", f"{delay:g}")
            if done.returncode != 0:
                raise SystemExit(f"chaos wan --ms {delay:g} failed: {done.stderr}")
            current = wait_voted_in(data_dir)
            row: dict = {"leader_region": current.get("leader_region")}
            for region in REGIONS:
                row[region] = {workload: bench(data_dir, region, workload, args.seconds, args.clients)
                               for workload in ("point-write", "point-read")}
            results["by_wan_ms"][f"{delay:g}"] = row
            say(f"WAN {delay:g} ms: {json.dumps(row)}")
    finally:
        stop_up(up, data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(results, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
