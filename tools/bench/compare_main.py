"""`tools/bench/compare`: QuorumDB beside etcd and PostgreSQL on this machine, in one run.

Order: etcd (3 members, puts through the v3 JSON gateway, 1 and 64 clients), then PostgreSQL
(pgbench tpcb-like and simple-update with 8 clients at scale 8, select-only and point-upsert with 64),
then QuorumDB: one fresh
default cluster per read mode (`quorumdb up`, reads 3-of-6; then `quorumdb up --read-mode single`).
On each: the tables are made, the idle cluster's CPU is measured, then every run twice, once with
`quorumdb bench` (Python, gRPC) and once with pgbench through the PostgreSQL endpoint (C, libpq),
the same SQL: point-write 1 and 64, point-read 1 and 64, and on the default cluster tpcb 8.
Then, on the default cluster, pgbench's own scripts with identical client work on both systems:
`pgbench -i -s <tpcb scale>` through the PostgreSQL endpoint (unmodified, timed), then tpcb-like
8, simple-update 8, select-only 64 and a point-upsert script 64, exactly as PostgreSQL ran them
(pgbench's vacuum step on, on both); `quorumdb bench` stays for what pgbench cannot express.
One system runs at a time, so each has the whole machine; each is stopped (SIGTERM by PID) before
the next starts.

CPU: around every run, utime + stime of every node process of the cluster (tools/bench/procstat.py),
divided by every operation the run completed (warm-up included, as its CPU is): the cluster's
CPU per operation, idle cost included (the idle cost is reported on its own). The load
generator's own CPU is recorded beside it.
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
import shutil
import tempfile
import time
from typing import Any, Callable

from tools.bench import etcd_load, peers, pgbench_load, procstat, report
from tools.bench.peers import say
from tools.bench import workloads

DEFAULT_DURATION_S = 30.0
QUICK_DURATION_S = 3.0
BENCH_SLACK_S = 180.0  # a `quorumdb bench` run may take its duration plus start-up and shutdown
PGBENCH_SLACK_S = 120.0  # pgbench: connection set-up (SCRAM for 64 clients) and its own vacuum
PGBENCH_INIT_TIMEOUT_S = 900.0  # `pgbench -i -s 8`: 800,000 rows, seconds on a quiet machine
DEFAULT_TPCB_SCALE = report.TPCB_CLIENTS  # pgbench's advice: scale >= clients
ROWS = workloads.Params.rows  # bench_kv rows and QuorumDB's pgbench_accounts (both clients use the same)
IDLE_SETTLE_S = 2.0  # after set-up, before the idle measurement: the leader's read-demand lease lapses
IDLE_MEASURE_S = 8.0
BUSY_LOAD_AVERAGE = 1.0  # 1-minute load above this before a run: something else is using the 2 cores
QDB_USER = "admin"
QDB_DATABASE = "postgres"


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

    def record(self, system: str, name: str, command: str, figures: dict[str, Any] | None,
               problem: str | None = None) -> None:
        self.commands.append({"system": system, "figure": f"{system}.{name}", "command": command,
                              "figures": figures, "problem": problem})
        if figures is not None:
            self.figures.setdefault(system, {})[name] = figures
        if problem:
            self.problems.append(f"{system}.{name}: {problem}")
            say(f"{system} {name}: FAILED: {problem}")
        else:
            say(f"{system} {name}: {brief(figures)}")


def brief(figures: dict[str, Any] | None) -> str:
    """The few figures worth a progress line (the whole set goes to --out)."""
    if not figures:
        return "no figures"
    keys = ("throughput_tps", "latency_ms_p50", "latency_ms_p99", "aborts", "errors", "cluster_cpu_ms_per_op",
            "server_cpu_ms_per_op", "loadgen_cpu_ms_per_op", "reads_single_share", "cluster_cores")
    shown = {key: (round(figures[key], 3) if isinstance(figures[key], float) else figures[key])
             for key in keys if figures.get(key) is not None}
    return json.dumps(shown)


def with_cpu(figures: dict[str, Any], key: str, cpu_s: float | None, operations: int | None) -> None:
    figures[key.replace("_ms_per_op", "_s")] = None if cpu_s is None else round(cpu_s, 3)
    per_op = procstat.per_op_ms(cpu_s, operations)
    figures[key] = None if per_op is None else round(per_op, 4)


# --- etcd -----------------------------------------------------------------------------------------
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
            description = (f"tools/bench/etcd_load.py: {clients} client(s), HTTP/1.1 keep-alive POST /v3/kv/put "
                           f"(base64 key of {etcd_load.KEY_SPACE} keys, {etcd_load.VALUE_BYTES}-byte value) to "
                           f"{', '.join(f'{h}:{p}' for h, p in endpoints)}, warm-up {warmup_s:g} s, {duration_s:g} s")
            say(f"etcd put, {clients} clients, {duration_s:g} s")
            pids = cluster.pids
            before = procstat.snapshot(pids)
            figures = etcd_load.measure_puts(endpoints, clients, duration_s, warmup_s)
            used = procstat.delta(before, procstat.snapshot(pids), group=lambda name: "etcd")
            with_cpu(figures, "server_cpu_ms_per_op", used.seconds, figures.get("completed_all"))
            problem = None if figures["completed"] else f"no put completed ({figures.get('first_error')})"
            recorder.record("etcd", f"put_{clients}", description, figures, problem)
    finally:
        cluster.stop()
        say("etcd stopped")


# --- pgbench, for PostgreSQL and QuorumDB alike -----------------------------------------------------
def measure_pgbench(commands: list[list[str]], run_dir: pathlib.Path, duration_s: float, seconds: int,
                    env: dict[str, str] | None, probe: Callable[[], Any], settle_s: float = 0.0
                    ) -> tuple[dict[str, Any] | None, str | None, Any, Any]:
    """Run the pgbench processes of one figure side by side and merge what they measured.
    `probe()` reads the server's CPU counters; it is called just before the run and `settle_s`
    after it. Returns (figures, problem, probe before, probe after)."""
    cpu_before = probe()
    children_before = procstat.reaped_children_cpu_s()
    started = time.monotonic()
    finished = pgbench_load.run_processes(commands, run_dir, timeout_s=seconds + PGBENCH_SLACK_S, env=env)
    wall_s = time.monotonic() - started
    loadgen_cpu_s = procstat.reaped_children_cpu_s() - children_before
    time.sleep(settle_s)
    cpu_after = probe()
    summaries, problems, samples = [], [], []
    for index, done in enumerate(finished):
        samples += [sample for sample in pgbench_load.error_samples(done.stderr) if sample not in samples]
        if done.returncode is None:
            problems.append(f"pgbench process {index} did not finish within {seconds + PGBENCH_SLACK_S:.0f} s")
        elif done.returncode != 0:
            problems.append(f"pgbench process {index} exited {done.returncode}")
        try:
            summaries.append(report.parse_pgbench(done.stdout))
        except ValueError as error:
            problems.append(f"pgbench process {index}: {error}")
    paths = [path for index in range(len(commands)) for path in pgbench_load.log_files(run_dir, f"node{index}")]
    try:
        figures = pgbench_load.summarize_log(pgbench_load.read_log_lines(paths), duration_s)
    except (OSError, ValueError) as error:
        return None, f"per-transaction log: {error}; " + "; ".join(problems + samples[:3]), cpu_before, cpu_after
    figures.update(pgbench_load.merge_summaries(summaries))
    figures["scale"] = next((summary.get("scale") for summary in summaries if summary.get("scale")), None)
    figures["processes"] = len(commands)
    figures["wall_s"] = round(wall_s, 3)
    figures["error_samples"] = samples[:pgbench_load.ERROR_SAMPLES_MAX]
    with_cpu(figures, "loadgen_cpu_ms_per_op", loadgen_cpu_s, figures["transactions_all"])
    if figures["ops"] == 0 and not problems:
        problems.append("no transaction completed")
    span = figures.get("log_span_s")
    # The window is the log's last duration_s seconds: a log shorter than that (connections slower
    # than the allowance, a pgbench that stopped early) would undercount, so it is reported.
    if span is not None and figures["ops"] and span < 0.95 * duration_s:
        problems.append(f"the per-transaction log covers only {span:.1f} s of {duration_s:g} s")
    return figures, "; ".join(problems + samples[:3]) if problems else None, cpu_before, cpu_after


# --- PostgreSQL -----------------------------------------------------------------------------------
def run_postgres(work_dir: pathlib.Path, duration_s: float, warmup_s: float, scale: int, pgbench_mode: str,
                 recorder: Recorder, versions: dict) -> None:
    bin_dir = peers.ensure_postgres()
    pg_dir = work_dir / "postgres"
    pg_dir.mkdir()
    postgres = peers.Postgres(pg_dir, bin_dir)
    versions["postgres"] = report.parse_postgres_version(postgres.version())
    seconds = pgbench_load.run_seconds(duration_s, warmup_s)
    try:
        say(f"starting PostgreSQL {versions['postgres']} on 127.0.0.1:{postgres.port} ({pg_dir})")
        postgres.start()
        init = postgres.pgbench_command(["-i", "-s", str(scale), "-q"])
        say(shlex.join(init))
        peers.run(init, timeout_s=PGBENCH_INIT_TIMEOUT_S, cwd=pg_dir)
        recorder.commands.append({"system": "postgres", "figure": None, "command": shlex.join(init)})

        def server_cpu_s() -> float | None:
            """The postmaster and its backends (reaped or alive), in CPU seconds."""
            postmaster = postgres.postmaster_pid()
            ticks = None if postmaster is None else procstat.tree_ticks(postmaster)
            return None if ticks is None else ticks / procstat.CLOCK_TICKS_PER_S

        for name, script, clients in report.SAME_SCRIPT_RUNS:
            run_dir = postgres.owned_dir(pg_dir / "runs" / name)
            workload_args, needs_scale = pgbench_load.same_script_args(script, postgres.owned_dir(pg_dir / "scripts"))
            target = pgbench_load.Target("127.0.0.1", postgres.port, "postgres", "postgres", clients)
            # pgbench's own vacuum before the run stays on, on both systems.
            command = postgres.as_user + pgbench_load.command(postgres.pgbench, target, workload_args, seconds,
                                                              pgbench_mode, str(run_dir / "node0"), vacuum=True,
                                                              scale=scale if needs_scale else None)
            say(shlex.join(command))
            # 0.3 s after pgbench exits: its backends have exited and been reaped into the postmaster's
            # cutime/cstime, so none is half-counted.
            figures, problem, before, after = measure_pgbench([command], run_dir, duration_s, seconds, None,
                                                              server_cpu_s, settle_s=0.3)
            if figures is not None:
                cpu_s = None if before is None or after is None else after - before
                with_cpu(figures, "server_cpu_ms_per_op", cpu_s, figures["transactions_all"])
                figures["scale"] = figures.get("scale") or scale
            recorder.record("postgres", name, shlex.join(command), figures, problem)
    finally:
        postgres.stop()
        say("PostgreSQL stopped")


# --- QuorumDB -------------------------------------------------------------------------------------
class QuorumDBSession:
    """One cluster (one read mode) and the runs made on it."""

    def __init__(self, cluster: peers.QuorumDBCluster, mode: str, prefix: list[str], args: argparse.Namespace,
                 warmup_s: float, recorder: Recorder, scripts: dict[str, pathlib.Path]):
        self.cluster = cluster
        self.mode = mode
        self.prefix = prefix
        self.args = args
        self.warmup_s = warmup_s
        self.recorder = recorder
        self.scripts = scripts
        self.counters = None
        self.env = None
        self.pg_endpoints: list[tuple[str, int]] = []

    def node_pids(self) -> dict[int, str]:
        return procstat.cluster_node_pids(self.cluster.config_path)

    def prepare(self, with_tpcb: bool) -> None:
        self.pg_endpoints = self.cluster.pg_endpoints()
        self.env = dict(os.environ, PGPASSWORD=self.cluster.token())
        setups = [self.cluster.bench_command(self.prefix, "point-write", 1, 1, warmup_s=0, rows=ROWS)]
        if with_tpcb:
            setups.append(self.cluster.bench_command(self.prefix, "tpcb", 1, 0.5, warmup_s=0, rows=ROWS,
                                                     scale=self.args.tpcb_scale))
        for command in setups:  # make and load the tables (rows 1..N); the measured runs use --no-setup
            say(shlex.join(command))
            completed = peers.run(command, timeout_s=BENCH_SLACK_S, check=False, cwd=peers.REPO_ROOT)
            self.recorder.commands.append({"system": "quorumdb", "figure": None, "command": shlex.join(command)})
            if completed.returncode != 0:
                raise RuntimeError(f"set-up failed: {shlex.join(command)}: {completed.stderr[-800:]}")

    def measure_idle(self) -> None:
        time.sleep(IDLE_SETTLE_S)
        pids = self.node_pids()
        before = procstat.snapshot(pids)
        started = time.monotonic()
        time.sleep(IDLE_MEASURE_S)
        wall_s = time.monotonic() - started
        used = procstat.delta(before, procstat.snapshot(pids))
        figures = {"wall_s": round(wall_s, 3), "cluster_cpu_s": round(used.seconds, 3),
                   "cluster_cores": round(used.seconds / wall_s, 4), "nodes": len(pids),
                   "cores_by_service": {name: round(seconds / wall_s, 4) for name, seconds in used.by_group.items()}}
        problem = None if len(pids) == 15 else f"found {len(pids)} node processes, expected 15"
        self.recorder.record("quorumdb", f"idle_{self.mode}",
                             f"sleep {IDLE_MEASURE_S:g} after set-up and {IDLE_SETTLE_S:g} s settling; "
                             "utime+stime of every node process", figures, problem)

    def read_counters(self) -> dict[str, int] | None:
        return report.parse_read_counters(self.cluster.status_json())

    def _finish(self, name: str, command: str, figures: dict[str, Any] | None, problem: str | None,
                cpu: procstat.CpuDelta, wall_s: float, operations: int | None, workload: str, clients: int,
                client: str) -> None:
        counters = self.read_counters()
        if figures is not None:
            figures.update(report.read_counter_delta(self.counters, counters))
            figures["read_mode"] = self.mode
            figures["client"] = client
            figures["workload"] = workload
            figures["clients"] = clients
            figures["cluster_wall_s"] = round(wall_s, 3)
            figures["cluster_cores"] = round(cpu.seconds / wall_s, 4) if wall_s > 0 else None
            figures["cluster_cpu_by_service_s"] = {key: round(value, 3) for key, value in cpu.by_group.items()}
            with_cpu(figures, "cluster_cpu_ms_per_op", cpu.seconds, operations)
            if cpu.vanished or cpu.appeared:
                figures["cluster_cpu_note"] = f"{cpu.vanished} node(s) exited, {cpu.appeared} appeared during the run"
            mode_problem = report.read_mode_problem(self.mode, figures)
            if mode_problem:
                problem = f"{problem}; {mode_problem}" if problem else mode_problem
        self.counters = counters
        self.recorder.record("quorumdb", name, command, figures, problem)

    def run_bench(self, workload: str, clients: int) -> None:
        name = report.qdb_row("bench", self.mode, workload, clients)
        scale = self.args.tpcb_scale if workload == "tpcb" else None
        command = self.cluster.bench_command(self.prefix, workload, clients, self.args.duration, warmup_s=self.warmup_s,
                                             read_mode=self.mode, rows=ROWS, scale=scale, setup=False)
        say(shlex.join(command))
        pids = self.node_pids()
        before = procstat.snapshot(pids)
        children_before = procstat.reaped_children_cpu_s()
        started = time.monotonic()
        figures, problem = None, None
        try:
            completed = peers.run(command, timeout_s=self.args.duration + self.warmup_s + BENCH_SLACK_S, check=False,
                                  cwd=peers.REPO_ROOT)
        except subprocess.TimeoutExpired:
            completed, problem = None, "timed out"
        wall_s = time.monotonic() - started
        cpu = procstat.delta(before, procstat.snapshot({**pids, **self.node_pids()}))
        loadgen_s = procstat.reaped_children_cpu_s() - children_before
        operations = None
        if completed is not None:
            try:
                figures = report.parse_bench_json(completed.stdout)
            except ValueError as error:
                problem = f"{error}; exit {completed.returncode}: {completed.stderr[-800:]}"
        if figures is not None:
            operations = (figures.get("ops") or 0) + (figures.get("warmup_ops") or 0)
            figures["loadgen_process_cpu_s"] = round(loadgen_s, 3)  # the whole process: start-up, connect, warm-up
            # The bench's own figure covers the measured window only; without it (an older bench),
            # the whole process's CPU over every operation it made.
            own = figures.get("client_cpu_ms_per_op")
            figures["loadgen_cpu_ms_per_op"] = (round(own, 4) if own is not None
                                                else procstat.per_op_ms(loadgen_s, operations))
            if figures.get("errors"):
                problem = f"{figures['errors']} errors: {figures.get('error_samples')}"
        self._finish(name, shlex.join(command), figures, problem, cpu, wall_s, operations, workload, clients, "bench")

    def load_pgbench_tables(self, scale: int) -> bool:
        """`pgbench -i -s scale` through the first compute node's endpoint, unmodified (drop,
        create, COPY in one transaction after TRUNCATE, vacuum, primary keys), timed."""
        host, port = self.pg_endpoints[0]
        command = [shutil.which("pgbench") or "pgbench", "-i", "-s", str(scale), "-q",
                   "-h", host, "-p", str(port), "-U", QDB_USER, QDB_DATABASE]
        say(shlex.join(command))
        started = time.monotonic()
        try:
            completed = peers.run(command, timeout_s=PGBENCH_INIT_TIMEOUT_S, check=False, env=self.env)
        except subprocess.TimeoutExpired:
            completed = None
        wall_s = round(time.monotonic() - started, 1)
        problem = None
        if completed is None:
            problem = f"pgbench -i did not finish within {PGBENCH_INIT_TIMEOUT_S:g} s"
        elif completed.returncode != 0:
            problem = f"pgbench -i exited {completed.returncode}: {completed.stderr[-800:]}"
        self.recorder.record("quorumdb", f"pgbench_init_{self.mode}", shlex.join(command),
                             {"wall_s": wall_s, "scale": scale, "rows": 100_000 * scale}, problem)
        return problem is None

    def run_same_scripts(self, work_dir: pathlib.Path) -> None:
        """pgbench's scripts on `pgbench -i` tables, exactly as PostgreSQL ran them."""
        if shutil.which("pgbench") is None:
            self.recorder.problems.append("quorumdb: pgbench not found")
            return
        if not self.load_pgbench_tables(self.args.tpcb_scale):
            return
        for name, script, clients in report.SAME_SCRIPT_RUNS:
            workload_args, needs_scale = pgbench_load.same_script_args(script, work_dir / "same-scripts")
            self.run_pgbench(script, clients, work_dir, name=report.same_row(self.mode, name),
                             workload_args=workload_args, scale=self.args.tpcb_scale if needs_scale else None,
                             vacuum=True, recorded_scale=self.args.tpcb_scale)

    def run_pgbench(self, workload: str, clients: int, work_dir: pathlib.Path, name: str | None = None,
                    workload_args: list[str] | None = None, scale: int | None = None, vacuum: bool = False,
                    recorded_scale: int | None = None) -> None:
        """One pgbench run spread over the three endpoints: a `quorumdb bench` workload's script
        (default), or `workload_args` (a built-in) under the figure `name`."""
        name = name or report.qdb_row("pgbench", self.mode, workload, clients)
        if workload_args is None:
            workload_args = ["-f", str(self.scripts[workload])]
            scale = self.args.tpcb_scale if workload == "tpcb" else None
        run_dir = work_dir / "runs" / name
        run_dir.mkdir(parents=True)
        seconds = pgbench_load.run_seconds(self.args.duration, self.warmup_s)
        pgbench = shutil.which("pgbench")
        if pgbench is None:
            self.recorder.record("quorumdb", name, "pgbench", None, "pgbench not found")
            return
        shares = pgbench_load.split_clients(clients, len(self.pg_endpoints))
        commands = []
        for index, ((host, port), share) in enumerate(zip(self.pg_endpoints, shares)):
            if share == 0:
                continue
            target = pgbench_load.Target(host, port, QDB_USER, QDB_DATABASE, share)
            commands.append(pgbench_load.command(
                pgbench, target, workload_args, seconds, self.args.pgbench_mode,
                str(run_dir / f"node{len(commands)}"), variables={"rows": ROWS}, scale=scale, vacuum=vacuum))
        text = " & ".join(shlex.join(command) for command in commands)
        say(text)
        pids = self.node_pids()
        started = time.monotonic()
        figures, problem, before, after = measure_pgbench(
            commands, run_dir, self.args.duration, seconds, self.env,
            lambda: procstat.snapshot({**pids, **self.node_pids()}))  # a node restarted meanwhile counts too
        wall_s = time.monotonic() - started
        cpu = procstat.delta(before, after)
        operations = None
        if figures is not None:
            figures["pgbench_mode"] = self.args.pgbench_mode
            figures["script"] = (self.scripts[workload].read_text() if workload in self.scripts
                                 else " ".join(workload_args))
            if recorded_scale is not None:
                figures["scale"] = figures.get("scale") or recorded_scale
            operations = figures["transactions_all"]
        self._finish(name, text, figures, problem, cpu, wall_s, operations, workload, clients, "pgbench")


def write_scripts(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for workload in pgbench_load.SCRIPTED_WORKLOADS:
        path = directory / f"{workload}.sql"
        path.write_text(pgbench_load.script(workload))
        paths[workload] = path
    return paths


def run_quorumdb(work_dir: pathlib.Path, args: argparse.Namespace, warmup_s: float, recorder: Recorder) -> None:
    prefix, why_not = peers.quorumdb_bench_prefix()
    if prefix is None:
        recorder.record("quorumdb", "bench", "quorumdb bench --help", None, why_not)
        return
    from tools.launcher import free_base_port  # the same helper the tests use: a whole free block

    scripts = write_scripts(work_dir / "pgbench-scripts")
    for mode in args.read_modes:
        # The default cluster reads 3-of-6; the other is started with `--read-mode single`, so that
        # both clients (pgbench cannot SET per connection: docs/BENCHMARKS.md) read one copy.
        cluster = peers.QuorumDBCluster(work_dir, free_base_port(), read_mode=None if mode == "quorum" else mode,
                                        name=f"qdb-{mode}")
        runs = [(workload, clients) for workload, clients, modes in report.QDB_RUNS if mode in modes]
        try:
            say(f"starting QuorumDB ({mode} reads): {shlex.join(cluster.command)}")
            cluster.start()
            recorder.commands.append({"system": "quorumdb", "figure": None, "command": shlex.join(cluster.command)})
            session = QuorumDBSession(cluster, mode, prefix, args, warmup_s, recorder, scripts)
            session.prepare(with_tpcb=any(workload == "tpcb" for workload, _ in runs))
            session.measure_idle()
            session.counters = session.read_counters()
            for workload, clients in runs:
                session.run_bench(workload, clients)
                session.run_pgbench(workload, clients, work_dir / f"qdb-{mode}-runs")
            if mode in report.SAME_SCRIPT_MODES:
                session.run_same_scripts(work_dir / f"qdb-{mode}-same")
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            recorder.problems.append(f"quorumdb ({mode}): {error}")
            say(f"quorumdb ({mode}): FAILED: {error}")
        finally:
            cluster.stop()
            say(f"QuorumDB ({mode} reads) stopped")


# --- the command ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tools/bench/compare",
        description="Measure QuorumDB (with `quorumdb bench` and with pgbench through its PostgreSQL endpoint, "
                    "quorum and single-copy reads), a 3-member etcd cluster and PostgreSQL (pgbench) on this "
                    "machine, in one run, and print the figures and the targets. Installs etcd-server/etcd-client "
                    "and postgresql/postgresql-contrib with apt-get when missing.")
    parser.add_argument("--duration", type=float, default=None,
                        help=f"seconds per measured run (default {DEFAULT_DURATION_S:g}; "
                             f"{QUICK_DURATION_S:g} with --quick)")
    parser.add_argument("--out", default=None, help="write figures, machine, versions and commands to FILE (JSON)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_DURATION_S:g} s per run, no warm-up")
    parser.add_argument("--only", default="etcd,postgres,quorumdb",
                        help="comma-separated systems to measure (default all three)")
    parser.add_argument("--pgbench-mode", choices=pgbench_load.MODES, default="simple",
                        help="pgbench's protocol (-M), for QuorumDB and PostgreSQL alike (default simple)")
    parser.add_argument("--read-modes", default=",".join(report.READ_MODES),
                        help="QuorumDB read modes to measure, one cluster each (default quorum,single)")
    parser.add_argument("--tpcb-scale", type=int, default=DEFAULT_TPCB_SCALE,
                        help=f"TPC-B branches for both systems (default {DEFAULT_TPCB_SCALE}; at least the "
                             f"{report.TPCB_CLIENTS} clients)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S
    if args.duration <= 0:
        parser.error("--duration must be positive")
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - {"etcd", "postgres", "quorumdb"}
    if unknown:
        parser.error(f"--only: unknown systems {sorted(unknown)}")
    args.read_modes = [name.strip() for name in args.read_modes.split(",") if name.strip()]
    if not args.read_modes or set(args.read_modes) - set(report.READ_MODES):
        parser.error(f"--read-modes: a comma-separated subset of {', '.join(report.READ_MODES)}")
    args.read_modes = [mode for mode in report.READ_MODES if mode in args.read_modes]  # the default cluster first
    if args.tpcb_scale < report.TPCB_CLIENTS:
        parser.error(f"--tpcb-scale must be at least the {report.TPCB_CLIENTS} TPC-B clients")
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
                 "postgres": lambda: run_postgres(work_dir, args.duration, warmup_s, args.tpcb_scale,
                                                  args.pgbench_mode, recorder, versions),
                 "quorumdb": lambda: run_quorumdb(work_dir, args, warmup_s, recorder)}
        for system in ("etcd", "postgres", "quorumdb"):
            if system not in args.only:
                continue
            try:
                steps[system]()
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                recorder.problems.append(f"{system}: {error}")
                say(f"{system}: FAILED: {error}")
            load_averages[f"after_{system}"] = load_average()
    modes = args.read_modes
    ratios = report.compute_ratios(recorder.figures, modes=modes)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["tools/bench/compare", *(argv if argv is not None else sys.argv[1:])]),
        "duration_s": args.duration, "warmup_s": warmup_s, "pgbench_mode": args.pgbench_mode,
        "read_modes": modes, "tpcb_scale": args.tpcb_scale, "rows": ROWS,
        "machine": machine_info(), "versions": versions,
        "figures": recorder.figures, "ratios": ratios, "same_scripts": report.same_script_ratios(recorder.figures),
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
