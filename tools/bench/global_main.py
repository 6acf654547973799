"""The Global Database, measured from the outside (docs/REGIONS.md, docs/BENCHMARKS.md).

    python -m tools.bench.global_main [--wan-ms 20] [--load-seconds 20] [--switchovers 3] [--json]

On a fresh `quorumdb up --regions us:primary,eu:secondary --wan-ms W`:
  1. idle CPU: utime + stime of every node process over IDLE_S seconds, as % of one core;
  2. replication lag under load: while `quorumdb bench --workload point-write` commits on the
     primary's compute nodes, the secondary's leader is asked for its lag (RegionPoint) every
     SAMPLE_S; the distribution (p50/p90/p99/max, ms), and the same while idle;
  3. switchover RTO: `quorumdb global switchover` back and forth, each under the same load, the
     RTO the command prints;
  4. failover RTO: `quorumdb chaos region-kill` of the primary under load, then `quorumdb global
     failover --allow-data-loss`: the RTO and the loss it prints.
The machine is shared and noisy: compare figures within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from tools import toolcreds
from tools.bench import procstat
from quorumdb import regions
from tools.launcher import free_base_port
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc

IDLE_S = 30.0
SAMPLE_S = 0.05
READY_TIMEOUT_S = 300.0


def say(text: str) -> None:
    print(f"[global] {text}", file=sys.stderr, flush=True)  # stdout is the result (--json)


def cli(*args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1],
            "mean": round(statistics.fmean(ordered), 1)}


def sample_lag(cluster, seconds: float) -> list[float]:
    """The secondary leader's lag_ms every SAMPLE_S for `seconds`."""
    async def run() -> list[float]:
        channels = toolcreds.Channels(toolcreds.for_cluster(cluster))
        stubs = [adjudicator_pb2_grpc.AdjudicatorStub(channels.get(n.address)) for n in cluster.adjudicators]
        found: list[float] = []
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                for stub in stubs:
                    try:
                        reply = await stub.RegionPoint(adjudicator_pb2.RegionPointRequest(), timeout=1.0)
                    except Exception:  # noqa: BLE001 - a node restarting: try the next
                        continue
                    if reply.is_leader:
                        lag = regions.reported_lag_ms(reply)
                        if lag is not None:  # a new leader may not know it for a moment
                            found.append(float(lag))
                        break
                await asyncio.sleep(SAMPLE_S)
        finally:
            await channels.close()
        return found
    return asyncio.run(run())


def node_pids(data_dir: pathlib.Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"tools.node --config {data_dir}"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def load(ports: list[int], seconds: float, data_dir: pathlib.Path) -> subprocess.Popen:
    """`quorumdb bench` on these ports, with the credentials of the Global Database in data_dir."""
    return subprocess.Popen([sys.executable, "-m", "tools.cli", "bench", "--workload", "point-write",
                             "--clients", "8", "--duration", str(seconds), "--warmup", "0", "--json",
                             "--port", ",".join(map(str, ports))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "QUORUMDB_DATA_DIR": str(data_dir)})


def start_up(data_dir: pathlib.Path, base: int, *flags: str) -> tuple[subprocess.Popen, list[str], threading.Event]:
    """`quorumdb up` in the background (no console): the process, its output so far, and an event
    set once it printed "ready"."""
    up = subprocess.Popen([sys.executable, "-m", "tools.cli", "up", "--data-dir", str(data_dir), "--base-port",
                           str(base), *flags, "--no-console"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in up.stdout:
            lines.append(line)
            if "ready" in line:
                ready.set()
    threading.Thread(target=read, daemon=True).start()
    return up, lines, ready


def stop_up(up: subprocess.Popen, data_dir: pathlib.Path) -> None:
    """Stop `quorumdb up` (SIGTERM, SIGKILL after 120 s), then SIGKILL any node it left behind."""
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(timeout=120)
    except subprocess.TimeoutExpired:
        up.kill()
    for pid in node_pids(data_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wan-ms", default="20")
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--switchovers", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="qdb-global-bench-"))
    base = free_base_port()
    up, lines, ready = start_up(data_dir, base, "--regions", "us:primary,eu:secondary", "--wan-ms", args.wan_ms)
    results: dict = {"wan_ms": args.wan_ms}
    try:
        if not ready.wait(READY_TIMEOUT_S):
            raise SystemExit("quorumdb up did not become ready:\n" + "".join(lines[-40:]))
        cfg = regions.load(data_dir)
        clusters = {r.name: r.cluster() for r in cfg.regions}
        time.sleep(5.0)
        pids = node_pids(data_dir)
        before = procstat.own_seconds(pids)
        idle_lag = sample_lag(clusters["eu"], IDLE_S)
        results["idle_cpu_pct_of_one_core"] = round(100 * (procstat.own_seconds(pids) - before) / IDLE_S, 1)
        results["nodes"] = len(pids)
        results["idle_lag_ms"] = percentiles(idle_lag)
        say(f"idle: {results['idle_cpu_pct_of_one_core']} % of one core for {len(pids)} nodes; lag {results['idle_lag_ms']}")

        bench = load([n.port for n in clusters["us"].computes], args.load_seconds, data_dir)
        time.sleep(2.0)
        loaded_lag = sample_lag(clusters["eu"], max(1.0, args.load_seconds - 4.0))
        output = bench.communicate(timeout=args.load_seconds + 120)[0]
        results["load_lag_ms"] = percentiles(loaded_lag)
        throughput = re.search(r'"throughput_tps": ([0-9.]+)', output)
        results["load_ops_per_s"] = round(float(throughput.group(1)), 1) if throughput else None
        say(f"under load ({results['load_ops_per_s']} ops/s): lag {results['load_lag_ms']}")

        rtos = []
        primary, secondary = "us", "eu"
        for _ in range(args.switchovers):
            bench = load([n.port for n in clusters[primary].computes], 8.0, data_dir)
            time.sleep(2.0)
            done = cli("global", "switchover", "--to", secondary, "--data-dir", str(data_dir))
            bench.communicate(timeout=180)
            match = re.search(r"RTO ([0-9.]+) s", done.stdout)
            if done.returncode != 0 or match is None:
                raise SystemExit(f"switchover failed: {done.stdout}{done.stderr}")
            rtos.append(float(match.group(1)))
            primary, secondary = secondary, primary
            time.sleep(2.0)
        results["switchover_rto_s"] = rtos
        say(f"switchover RTO: {rtos}")

        bench = load([n.port for n in clusters[primary].computes], 10.0, data_dir)
        time.sleep(3.0)
        lag_before = sample_lag(clusters[secondary], 0.5)
        kill = cli("chaos", "region-kill", primary, "--data-dir", str(data_dir))
        done = cli("global", "failover", "--to", secondary, "--allow-data-loss", "--data-dir", str(data_dir))
        bench.kill()
        match = re.search(r"RTO ([0-9.]+) s", done.stdout)
        results["failover"] = {"rto_s": float(match.group(1)) if match else None,
                               "lag_before_ms": lag_before[-1] if lag_before else None,
                               "output": done.stdout.strip(), "kill": kill.stdout.strip()}
        say(f"failover: {done.stdout.strip()} {done.stderr.strip()}")
    finally:
        stop_up(up, data_dir)
    print(json.dumps(results, indent=1) if args.json else json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
