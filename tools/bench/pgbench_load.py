"""pgbench as a load generator: QuorumDB's workloads through its PostgreSQL endpoint, with a C client.

Theory of operation: `quorumdb bench` (Python, gRPC) and pgbench (C, libpq, PostgreSQL's wire
protocol) run the *same* SQL: the custom scripts below are built from the statement templates
in tools/bench/workloads.py, with the same table, pad, key range and value range, so a
difference between the two rows is the client and the protocol, not the work.

QuorumDB has three compute nodes and `quorumdb bench --base-port` spreads its clients over all
three; libpq (15) connects to one host, so tools/bench/compare runs one pgbench process per compute
node with its share of the clients (64 = 22 + 21 + 21; 1 = 1 on the first node), all started
together, and merges their figures. PostgreSQL, one node, gets one process.

Every pgbench run writes a per-transaction log (`-l`): one line per transaction with its latency
and completion time. The run lasts 1 s (connections) + warm-up + duration; the figures count only the
transactions that completed in the last `duration` seconds (the warm-up is not counted, as in
`quorumdb bench`), and the percentiles come from the same 1 %-bucket histogram `quorumdb bench`
uses. pgbench's own summary (its tps over the whole run, average latency, retries) is kept too.

40001 (serialization failure): QuorumDB's optimistic concurrency aborts the later of two
conflicting commits. pgbench retries such a transaction when --max-tries > 1 (immediately, as a
whole, with the same variables); it is counted as an abort here, as `quorumdb bench` counts its
retries. Any other error makes pgbench abort that client (and exit 2): reported as a problem.

Everything here is pure except `run_processes`, which starts the pgbench processes (each its own
process group, stopped by its PID after a bounded wait).
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import signal
import subprocess
import time
from typing import Callable, Iterable, Sequence

from tools.bench import runner, stats, workloads

MODES = ("simple", "extended", "prepared")  # pgbench -M; simple by default (see docs/BENCHMARKS.md)
THREADS_MAX = 2  # pgbench -j: threads per pgbench process (this machine has 2 cores)
MAX_TRIES = runner.RETRIES_MAX  # 40001 retries of one transaction, as `quorumdb bench`
PROGRESS_INTERVAL_S = 1  # -P: a progress line a second on stderr (kept in the run's files)
CONNECT_ALLOWANCE_S = 1.0  # extra pgbench seconds before the counted window: see run_seconds
STOP_GRACE_S = 10.0  # after SIGTERM, how long a pgbench process gets before SIGKILL
ERROR_SAMPLES_MAX = 5
SCRIPTED_WORKLOADS = ("point-write", "point-read", "tpcb")
# The scripts both systems run with identical client work on `pgbench -i` tables: pgbench's
# built-in ones, plus a point-upsert that pgbench has no built-in for.
SAME_SCRIPTS = ("tpcb-like", "simple-update", "select-only", "point-upsert")


# --- scripts ------------------------------------------------------------------------------------
def script(workload: str) -> str:
    """The pgbench custom script of one `quorumdb bench` workload. Variables: `rows` (-D rows=N)
    and, for tpcb, `scale` (pgbench -s S)."""
    if workload == "point-write":
        lines = ["\\set k random(1, :rows)",
                 f"\\set v random(0, {workloads.VALUE_MAX})",
                 workloads.POINT_WRITE_SQL.format(k=":k", v=":v") + ";"]
    elif workload == "point-read":
        lines = ["\\set k random(1, :rows)",
                 workloads.POINT_READ_SQL.format(k=":k") + ";"]
    elif workload == "tpcb":
        lines = ["\\set aid random(1, :rows)",
                 "\\set bid random(1, :scale)",
                 f"\\set tid random(1, {workloads.TELLERS_PER_BRANCH} * :scale)",
                 f"\\set delta random(-{workloads.DELTA_MAX}, {workloads.DELTA_MAX})",
                 f"\\set hid random(1, {workloads.HISTORY_ID_MAX - 1})"]
        lines += [template.format(aid=":aid", bid=":bid", tid=":tid", delta=":delta", hid=":hid") + ";"
                  for template in workloads.TPCB_SQL]
    else:
        raise ValueError(f"no pgbench script for workload {workload!r}; one of {', '.join(SCRIPTED_WORKLOADS)}")
    return "\n".join(lines) + "\n"


def point_upsert_script() -> str:
    """An upsert of one random account of `pgbench -i`'s tables (scale from -s)."""
    return "\n".join([
        "\\set aid random(1, 100000 * :scale)",
        "\\set bid (:aid - 1) / 100000 + 1",
        f"\\set delta random(-{workloads.DELTA_MAX}, {workloads.DELTA_MAX})",
        "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (:aid, :bid, :delta, '') "
        "ON CONFLICT (aid) DO UPDATE SET abalance = excluded.abalance;",
    ]) + "\n"


def same_script_args(script: str, script_dir: pathlib.Path) -> tuple[list[str], bool]:
    """pgbench's workload arguments for one of SAME_SCRIPTS, and whether it needs -s (a custom
    script learns the scale only from -s; the built-ins count pgbench_branches)."""
    if script not in SAME_SCRIPTS:
        raise ValueError(f"no pgbench script {script!r}; one of {', '.join(SAME_SCRIPTS)}")
    if script != "point-upsert":
        return ["-b", script], False
    path = script_dir / "point-upsert.sql"
    if not path.exists():
        script_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(point_upsert_script())
    return ["-f", str(path)], True


def split_clients(clients: int, nodes: int) -> list[int]:
    """Clients per node, as even as possible, the first nodes taking the remainder (as
    `quorumdb bench` spreads clients round robin)."""
    assert clients >= 1 and nodes >= 1
    return [clients // nodes + (1 if index < clients % nodes else 0) for index in range(nodes)]


def run_seconds(duration_s: float, warmup_s: float) -> int:
    """pgbench -T in whole seconds: connection allowance + warm-up + duration, rounded up.

    pgbench's -T clock starts before its clients connect (64 SCRAM logins take a good part of a
    second on a loaded machine), while `quorumdb bench` connects first and then starts its
    clock. The allowance keeps connection set-up out of the counted window (the last
    `duration_s` seconds of the log) even without a warm-up (--quick)."""
    return max(1, math.ceil(CONNECT_ALLOWANCE_S + warmup_s + duration_s - 1e-9))


@dataclasses.dataclass(frozen=True)
class Target:
    """One pgbench process: where it connects and how many clients it runs."""
    host: str
    port: int
    user: str
    dbname: str
    clients: int


def command(pgbench: str, target: Target, workload_args: Sequence[str], seconds: int, mode: str,
            log_prefix: str, variables: dict[str, int | str] | None = None, scale: int | None = None,
            vacuum: bool = False) -> list[str]:
    """The pgbench command line of one process. `workload_args` is ["-f", script] or a builtin
    (["-b", "tpcb-like"], ["-S"]); `vacuum` False adds -n (QuorumDB has no VACUUM)."""
    if mode not in MODES:
        raise ValueError(f"pgbench mode is one of {', '.join(MODES)}")
    arguments = [pgbench]
    if not vacuum:
        arguments.append("-n")
    arguments += list(workload_args)
    arguments += ["-c", str(target.clients), "-j", str(min(THREADS_MAX, target.clients)), "-T", str(seconds),
                  "-P", str(PROGRESS_INTERVAL_S), "-M", mode, "--max-tries", str(MAX_TRIES),
                  "-l", "--log-prefix", log_prefix]
    for name, value in (variables or {}).items():
        arguments += ["-D", f"{name}={value}"]
    if scale is not None:
        arguments += ["-s", str(scale)]
    arguments += ["-h", target.host, "-p", str(target.port), "-U", target.user, target.dbname]
    return arguments


# --- the per-transaction log --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Transaction:
    end_us: int  # when it completed (Unix epoch, microseconds)
    latency_us: int | None  # None: failed (or skipped)
    retries: int


def parse_log_line(line: str) -> Transaction | None:
    """One line of pgbench's per-transaction log (pgbench 15):
    `client_id transaction_no time script_no time_epoch time_us [schedule_lag] [retries]`.
    `time` is the latency in microseconds, or `failed`/`skipped`. tools/bench/compare never uses
    --rate, so a 7th field is `retries` (present because --max-tries > 1). Blank lines give None;
    anything else malformed raises ValueError."""
    fields = line.split()
    if not fields:
        return None
    if len(fields) < 6:
        raise ValueError(f"short pgbench log line {line!r}")
    try:
        epoch_s, epoch_us = int(fields[4]), int(fields[5])
        retries = int(fields[-1]) if len(fields) >= 7 else 0
        latency = None if fields[2] in ("failed", "skipped") else int(fields[2])
    except ValueError:
        raise ValueError(f"bad pgbench log line {line!r}") from None
    return Transaction(end_us=epoch_s * 1_000_000 + epoch_us, latency_us=latency, retries=retries)


def _transactions(lines: Iterable[str]) -> Iterable[Transaction]:
    for line in lines:
        transaction = parse_log_line(line)
        if transaction is not None:
            yield transaction


def summarize_log(read_lines: Callable[[], Iterable[str]], duration_s: float) -> dict:
    """Figures of the transactions that completed in the last `duration_s` seconds of the log.

    `read_lines()` is called twice (the window's end, the latest completion, is known only after
    a first pass), so memory stays bounded however many lines there are. Shape as
    `quorumdb bench --json`: ops, throughput_tps, latency_ms_* , aborts (40001 retries), errors
    (failed transactions); plus `transactions_all` (every successful transaction, warm-up
    included: what CPU per operation divides by) and `log_span_s` (first to last completion)."""
    assert duration_s > 0
    first_end = last_end = None
    transactions_all = 0
    for transaction in _transactions(read_lines()):
        first_end = transaction.end_us if first_end is None else min(first_end, transaction.end_us)
        last_end = transaction.end_us if last_end is None else max(last_end, transaction.end_us)
        transactions_all += transaction.latency_us is not None
    histogram = stats.Histogram()
    ops = aborts = errors = 0
    if last_end is not None:
        window_start = last_end - duration_s * 1_000_000
        for transaction in _transactions(read_lines()):
            if transaction.end_us <= window_start:
                continue
            aborts += transaction.retries
            if transaction.latency_us is None:
                errors += 1
            else:
                ops += 1
                histogram.record(float(transaction.latency_us))
    figures = stats.summary(histogram, ops, aborts, errors, duration_s)
    if ops == 0:
        for key in ("latency_ms_mean", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_max"):
            figures[key] = None  # no transaction: no latency, rather than a 0 that reads as "fast"
    figures["transactions_all"] = transactions_all
    figures["log_span_s"] = None if last_end is None else round((last_end - first_end) / 1e6, 3)
    return figures


def log_files(directory: pathlib.Path, prefix: str) -> list[pathlib.Path]:
    """pgbench writes `<prefix>.<pid>` (thread 0) and `<prefix>.<pid>.<n>` (thread n)."""
    return sorted(path for path in directory.glob(f"{prefix}.*") if path.is_file())


def read_log_lines(paths: Sequence[pathlib.Path]) -> Callable[[], Iterable[str]]:
    def lines() -> Iterable[str]:
        for path in paths:
            with open(path, encoding="ascii", errors="replace") as handle:
                yield from handle
    return lines


def error_samples(stderr: str) -> list[str]:
    """The distinct error lines of pgbench's stderr (not its progress lines)."""
    samples: list[str] = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("progress:") or not line:
            continue
        if "error" in line.lower() or "aborted" in line or "FATAL" in line:
            if line not in samples:
                samples.append(line)
            if len(samples) >= ERROR_SAMPLES_MAX:
                break
    return samples


def merge_summaries(summaries: Sequence[dict]) -> dict:
    """pgbench's own summary figures of several processes run side by side: tps and transaction
    counts add up; the average latency is weighted by transactions."""
    result: dict = {"pgbench_tps": 0.0, "pgbench_transactions": 0, "pgbench_retries": 0, "pgbench_failed": 0}
    weighted = 0.0
    for summary in summaries:
        result["pgbench_tps"] += summary.get("throughput_tps") or 0.0
        transactions = summary.get("transactions") or 0
        result["pgbench_transactions"] += transactions
        result["pgbench_retries"] += summary.get("retries") or 0
        result["pgbench_failed"] += summary.get("errors") or 0
        weighted += (summary.get("latency_ms_avg") or 0.0) * transactions
    result["pgbench_tps"] = round(result["pgbench_tps"], 3)
    result["pgbench_latency_ms_avg"] = (round(weighted / result["pgbench_transactions"], 3)
                                        if result["pgbench_transactions"] else None)
    return result


# --- running ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Finished:
    command: list[str]
    returncode: int | None  # None: it had to be killed
    stdout: str
    stderr: str


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group we created for it (by its PID), then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


def run_processes(commands: Sequence[list[str]], out_dir: pathlib.Path, timeout_s: float,
                  env: dict[str, str] | None = None, cwd: pathlib.Path | None = None) -> list[Finished]:
    """Start every command at once (each in its own process group, stdout/stderr to files in
    out_dir), wait for all within timeout_s, stop the ones still running. Returns them in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started: list[tuple[list[str], subprocess.Popen, pathlib.Path, pathlib.Path]] = []
    try:
        for index, argv in enumerate(commands):
            stdout_path, stderr_path = out_dir / f"p{index}.out", out_dir / f"p{index}.err"
            with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
                process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
                                           cwd=cwd, start_new_session=True)
            started.append((argv, process, stdout_path, stderr_path))
        deadline = time.monotonic() + timeout_s
        for _, process, _, _ in started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        killed = set()
        for _, process, _, _ in started:
            if process.poll() is None:
                killed.add(process.pid)
                _stop_group(process)
    return [Finished(argv, None if process.pid in killed else process.returncode,
                     stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace"))
            for argv, process, stdout_path, stderr_path in started]
