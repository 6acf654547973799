"""`bench/compare`: QuorumDB beside etcd and PostgreSQL on this machine, in one run.

Order: etcd (3 members, puts through the v3 JSON gateway, 1 and 64 clients), then PostgreSQL
(pgbench TPC-B with 8 clients and select-only with 64), then QuorumDB's default cluster
(`quorumdb bench`: point-write 1 and 64, tpcb 8, point-read 64). One system runs at a time, so
each has the whole machine; each is stopped (SIGTERM by PID) before the next starts.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import etcd_load, peers, report
from bench.peers import say

DEFAULT_DURATION_S = 30.0
QUICK_DURATION_S = 3.0
BENCH_SLACK_S = 180.0  # a `quorumdb bench` run may take its duration plus set-up (tables, rows) and shutdown
PGBENCH_SCALE = 1
BUSY_LOAD_AVERAGE = 1.0  # 1-minute load above this before a run: something else is using the 2 cores


def machine_info() -> dict[str, Any]:
    memory_kib = 0
    cpu_model = None
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": round(memory_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def load_average() -> float | None:
    """Other work on the machine skews every figure: recorded at the start and after each system."""
    try:
        return float(pathlib.Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def quorumdb_version() -> str | None:
    try:
        sha = peers.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=peers.REPO_ROOT, timeout_s=10).stdout.strip()
        dirty = peers.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=peers.REPO_ROOT,
                          timeout_s=10).stdout.strip()
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None
    return sha + ("+uncommitted changes" if dirty else "")


class Recorder:
    """The figures and the exact commands that produced them."""

    def __init__(self) -> None:
        self.figures: dict[str, dict[str, Any]] = {}
        self.commands: list[dict[str, Any]] = []
        self.problems: list[str] = []

    def record(self, system: str, name: str, command: str, figures: dict[str, Any] | None, problem: str | None = None) -> None:
        self.commands.append({"system": system, "figure": f"{system}.{name}", "command": command,
                              "figures": figures, "problem": problem})
        if figures is not None:
            self.figures.setdefault(system, {})[name] = figures
        if problem:
            self.problems.append(f"{system}.{name}: {problem}")
            say(f"{system} {name}: FAILED: {problem}")
        else:
            say(f"{system} {name}: {json.dumps(figures)}")


def run_etcd(work_dir: pathlib.Path, duration_s: float, warmup_s: float, recorder: Recorder, versions: dict) -> None:
    peers.ensure_etcd()
    versions["etcd"] = report.parse_etcd_version(peers.run(["etcd", "--version"]).stdout)
    cluster = peers.EtcdCluster(work_dir / "etcd")
    (work_dir / "etcd").mkdir()
    try:
        say(f"starting etcd: 3 members, client ports {cluster.client_ports}")
        cluster.start()
        for command in cluster.commands:
            recorder.commands.append({"system": "etcd", "figure": None, "command": shlex.join(command)})
        for clients in (1, 64):
            endpoints = cluster.endpoints if clients > 1 else cluster.endpoints[:1]
            description = (f"bench/etcd_load.py: {clients} client(s), HTTP/1.1 keep-alive POST /v3/kv/put "
                           f"(base64 key of {etcd_load.KEY_SPACE} keys, {etcd_load.VALUE_BYTES}-byte value) to "
                           f"{', '.join(f'{h}:{p}' for h, p in endpoints)}, warm-up {warmup_s:g} s, {duration_s:g} s")
            say(f"etcd put, {clients} clients, {duration_s:g} s")
            figures = etcd_load.measure_puts(endpoints, clients, duration_s, warmup_s)
            problem = None if figures["completed"] else f"no put completed ({figures.get('first_error')})"
            recorder.record("etcd", f"put_{clients}", description, figures, problem)
    finally:
        cluster.stop()
        say("etcd stopped")


def run_pgbench(postgres: peers.Postgres, name: str, arguments: list[str], timeout_s: float, recorder: Recorder) -> None:
    command = postgres.pgbench_command(arguments)
    say(f"{shlex.join(command)}")
    completed = peers.run(command, timeout_s=timeout_s, check=False, cwd=postgres.work_dir)
    try:
        figures = report.parse_pgbench(completed.stdout)
        problem = None
    except ValueError as error:
        figures, problem = None, f"{error}; exit {completed.returncode}: {completed.stderr[-500:]}"
    recorder.record("postgres", name, shlex.join(command), figures, problem)


def run_postgres(work_dir: pathlib.Path, duration_s: float, recorder: Recorder, versions: dict) -> None:
    bin_dir = peers.ensure_postgres()
    pg_dir = work_dir / "postgres"
    pg_dir.mkdir()
    postgres = peers.Postgres(pg_dir, bin_dir)
    versions["postgres"] = report.parse_postgres_version(postgres.version())
    seconds = str(max(1, round(duration_s)))
    try:
        say(f"starting PostgreSQL {versions['postgres']} on 127.0.0.1:{postgres.port} ({pg_dir})")
        postgres.start()
        init = postgres.pgbench_command(["-i", "-s", str(PGBENCH_SCALE), "-q"])
        peers.run(init, timeout_s=peers.COMMAND_TIMEOUT_S, cwd=pg_dir)
        recorder.commands.append({"system": "postgres", "figure": None, "command": shlex.join(init)})
        pgbench_timeout = duration_s + 120
        run_pgbench(postgres, "tpcb_8", ["-c", "8", "-j", "2", "-T", seconds], pgbench_timeout, recorder)
        run_pgbench(postgres, "select_only_64", ["-S", "-c", "64", "-j", "2", "-T", seconds], pgbench_timeout,
                    recorder)
    finally:
        postgres.stop()
        say("PostgreSQL stopped")


QUORUMDB_RUNS = (("point_write_1", "point-write", 1), ("point_write_64", "point-write", 64),
                 ("tpcb_8", "tpcb", 8), ("point_read_64", "point-read", 64))


def run_quorumdb(work_dir: pathlib.Path, duration_s: float, recorder: Recorder) -> None:
    prefix = peers.quorumdb_bench_prefix()
    if prefix is None:
        for name, _, _ in QUORUMDB_RUNS:
            recorder.record("quorumdb", name, "quorumdb bench", None, "`quorumdb bench` does not exist yet")
        return
    if prefix[-1] != "bench":
        say("`quorumdb bench` is not a CLI subcommand yet: running quorumdb/bench/command.py directly")
    from quorumdb.launcher import free_base_port  # the same helper the tests use: a whole free block

    cluster = peers.QuorumDBCluster(work_dir, free_base_port())
    try:
        say(f"starting QuorumDB: {shlex.join(cluster.command)}")
        cluster.start()
        recorder.commands.append({"system": "quorumdb", "figure": None, "command": shlex.join(cluster.command)})
        for name, workload, clients in QUORUMDB_RUNS:
            command = cluster.bench_command(prefix, workload, clients, duration_s)
            say(shlex.join(command))
            try:
                completed = peers.run(command, timeout_s=duration_s + BENCH_SLACK_S, check=False, cwd=peers.REPO_ROOT)
            except subprocess.TimeoutExpired:
                recorder.record("quorumdb", name, shlex.join(command), None, "timed out")
                continue
            try:
                figures = report.parse_bench_json(completed.stdout)
                problem = None
            except ValueError as error:
                figures, problem = None, f"{error}; exit {completed.returncode}: {completed.stderr[-800:]}"
            recorder.record("quorumdb", name, shlex.join(command), figures, problem)
    finally:
        cluster.stop()
        say("QuorumDB stopped")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/compare",
        description="Measure QuorumDB, a 3-member etcd cluster and PostgreSQL (pgbench) on this machine, in one run, "
                    "and print the ratios. Installs etcd-server/etcd-client and postgresql/postgresql-contrib with "
                    "apt-get when missing.")
    parser.add_argument("--duration", type=float, default=None,
                        help=f"seconds per measured run (default {DEFAULT_DURATION_S:g}; {QUICK_DURATION_S:g} with --quick)")
    parser.add_argument("--out", default=None, help="write figures, machine, versions and commands to FILE (JSON)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_DURATION_S:g} s per run, no warm-up")
    parser.add_argument("--only", default="etcd,postgres,quorumdb",
                        help="comma-separated systems to measure (default all three)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S
    if args.duration <= 0:
        parser.error("--duration must be positive")
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - {"etcd", "postgres", "quorumdb"}
    if unknown:
        parser.error(f"--only: unknown systems {sorted(unknown)}")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM unwinds like Ctrl-C: every `finally` stops its processes
    warmup_s = 0.0 if args.quick else min(2.0, args.duration / 5)
    recorder = Recorder()
    versions: dict[str, Any] = {"etcd": None, "postgres": None, "quorumdb": quorumdb_version()}
    started = time.monotonic()
    load_averages: dict[str, float | None] = {"start": load_average()}
    if (load_averages["start"] or 0.0) > BUSY_LOAD_AVERAGE:
        say(f"WARNING: load average {load_averages['start']} before starting: other work on this machine will "
            "skew every figure (recorded in the output)")
    with tempfile.TemporaryDirectory(prefix="quorumdb-compare-") as temp:
        work_dir = pathlib.Path(temp)
        os.chmod(work_dir, 0o755)
        steps = {"etcd": lambda: run_etcd(work_dir, args.duration, warmup_s, recorder, versions),
                 "postgres": lambda: run_postgres(work_dir, args.duration, recorder, versions),
                 "quorumdb": lambda: run_quorumdb(work_dir, args.duration, recorder)}
        for system in ("etcd", "postgres", "quorumdb"):
            if system not in args.only:
                continue
            try:
                steps[system]()
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                recorder.problems.append(f"{system}: {error}")
                say(f"{system}: FAILED: {error}")
            load_averages[f"after_{system}"] = load_average()
    ratios = report.compute_ratios(recorder.figures)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["bench/compare", *(argv if argv is not None else sys.argv[1:])]),
        "duration_s": args.duration, "warmup_s": warmup_s,
        "machine": machine_info(), "versions": versions,
        "figures": recorder.figures, "ratios": ratios,
        "commands": recorder.commands, "problems": recorder.problems,
        "load_average_1m": load_averages, "wall_time_s": round(time.monotonic() - started, 1),
    }
    markdown = report.markdown_report(result)
    print()
    print(markdown)
    if recorder.problems:
        print("problems:\n" + "\n".join(f"  - {problem}" for problem in recorder.problems))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        say(f"wrote {args.out}")
    return 1 if recorder.problems else 0
