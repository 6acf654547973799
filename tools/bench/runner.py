"""Drive a workload with N concurrent clients against running compute nodes; tally and report.

Two drivers share the workload generators: "async" (every client a task on one event loop,
quorumdb.client.AsyncConnection; the default: it drove more load from a 2-core machine, see
docs/BENCHMARKS.md) and "threads" (every client a thread with the sync Connection).

Everything is bounded: the run stops at warmup + duration; a transaction in flight then gets
at most the client's statement timeout + STOP_GRACE_S before it is abandoned; 40001 retries of
one transaction stop at RETRIES_MAX or the deadline; error messages kept are ERROR_SAMPLES_MAX.
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from typing import Any, Callable, TextIO

from quorumdb import client as client_mod
from tools.bench import stats, workloads

SERIALIZATION_FAILURE = client_mod.SERIALIZATION_FAILURE
ERROR_SAMPLES_MAX = 5  # distinct error messages kept for the report
RETRIES_MAX = 1_000  # 40001 retries of one transaction (the deadline usually comes first)
RETRY_BACKOFF_S = (0.001, 0.05)  # jittered exponential backoff between 40001 retries: first, max
ERROR_PAUSE_S = 0.05  # a client pauses after a non-40001 error, so a dead node is not spun on
STOP_GRACE_S = 2.0  # beyond the statement timeout, how long stragglers get after the deadline
CLIENTS_MAX = 4_096  # concurrent clients one bench process runs
DURATION_MAX_S = 24 * 3600.0  # a run (warmup + duration) ends within a day whatever is asked
SETUP_TIMEOUT_S = 60.0  # per statement while creating and loading tables
PROGRESS_INTERVAL_S = 1.0


@dataclasses.dataclass
class Options:
    workload: str
    clients: int = 8
    duration_s: float = 10.0
    warmup_s: float = 1.0
    endpoints: list[tuple[str, int]] = dataclasses.field(default_factory=lambda: [("127.0.0.1", 7100)])
    params: workloads.Params = dataclasses.field(default_factory=workloads.Params)
    seed: int | None = None
    driver: str = "async"
    timeout_s: float = 10.0  # each statement's deadline (the client's timeout_s)
    setup: bool = True
    # SET quorumdb.read_mode on every client session (None: the cluster's read_mode).
    read_mode: str | None = None
    # What each client presents (quorumdb.credentials.resolve: these, else QUORUMDB_TOKEN /
    # QUORUMDB_CA / QUORUMDB_DATA_DIR, else ./quorumdb-data); each connection renews a minted token.
    token: str | None = None
    ca: str | None = None
    data_dir: str | None = None
    insecure: bool = False

    @property
    def credentials(self) -> dict[str, Any]:
        """The connect() arguments that say what to present."""
        return {"token": self.token, "ca": self.ca, "data_dir": self.data_dir, "insecure": self.insecure}

    def validate(self) -> None:
        if not 1 <= self.clients <= CLIENTS_MAX:
            raise ValueError(f"--clients must be 1..{CLIENTS_MAX}")
        if not (0 < self.duration_s and self.duration_s + self.warmup_s <= DURATION_MAX_S):
            raise ValueError(f"--duration must be > 0 and warmup + duration <= {DURATION_MAX_S:.0f} s")
        if self.warmup_s < 0 or self.timeout_s <= 0:
            raise ValueError("--warmup must be >= 0 and --timeout > 0")
        if self.driver not in ("async", "threads"):
            raise ValueError("--driver is async or threads")
        if not self.endpoints:
            raise ValueError("no compute node given")
        if self.read_mode not in (None, "quorum", "single"):
            raise ValueError("--read-mode is quorum or single")

    @property
    def session_sql(self) -> tuple[str, ...]:
        """Statements every client session runs when it opens (its read mode)."""
        return () if self.read_mode is None else (f"SET quorumdb.read_mode = '{self.read_mode}'",)


class Tally:
    """What the clients did: the whole measured run and the current progress window.
    Thread-safe (the threads driver records from many threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = stats.Histogram()
        self.window = stats.Histogram()
        self.ops = 0
        self.aborts = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.warmup_ops = 0
        self._measuring = False  # False during warmup: nothing is counted but warmup_ops
        self.closed = False  # the run is over
        # This process's CPU time (all threads: the event loop, gRPC's own threads) when the
        # measured window opened and closed, so the client's cost per operation can be reported
        # beside the cluster's (tools/bench/compare) without the start-up, set-up and warm-up in it.
        self.cpu_at_start_s: float | None = None
        self.cpu_at_close_s: float | None = None

    @property
    def measuring(self) -> bool:
        return self._measuring

    @measuring.setter
    def measuring(self, value: bool) -> None:
        if value and not self._measuring and self.cpu_at_start_s is None:
            self.cpu_at_start_s = time.process_time()
        self._measuring = value

    def close(self) -> None:
        """The measured window is over: what finishes later is not counted."""
        with self._lock:
            if self._measuring and self.cpu_at_close_s is None:
                self.cpu_at_close_s = time.process_time()
            self._measuring = False
            self.closed = True

    def client_cpu_s(self) -> float | None:
        """CPU seconds this process used during the measured window (None if it never opened)."""
        if self.cpu_at_start_s is None or self.cpu_at_close_s is None:
            return None
        return max(0.0, self.cpu_at_close_s - self.cpu_at_start_s)

    def op(self, latency_s: float) -> None:
        with self._lock:
            if not self.measuring:
                self.warmup_ops += 0 if self.closed else 1
                return
            self.ops += 1
            self.total.record(latency_s * 1e6)
            self.window.record(latency_s * 1e6)

    def abort(self) -> None:
        with self._lock:
            if self.measuring:
                self.aborts += 1

    def error(self, error: BaseException) -> None:
        text = (f"{error.sqlstate}: {error.message}" if isinstance(error, client_mod.DatabaseError)
                else f"{type(error).__name__}: {error}")
        with self._lock:
            if self.measuring:
                self.errors += 1
            if len(self.error_samples) < ERROR_SAMPLES_MAX and text not in self.error_samples:
                self.error_samples.append(text)

    def take_window(self) -> stats.Histogram:
        with self._lock:
            window, self.window = self.window, stats.Histogram()
        return window


def progress_line(elapsed_s: float, measuring: bool, window: stats.Histogram, interval_s: float, tally: Tally) -> str:
    phase = "" if measuring else " (warmup)"
    return (f"[{elapsed_s:6.1f}s{phase}] tps {window.count / interval_s:9.1f}  "
            f"p50 {window.percentile_us(0.5) / 1000:7.2f} ms  p99 {window.percentile_us(0.99) / 1000:7.2f} ms  "
            f"aborts {tally.aborts}  errors {tally.errors}")



def _next_wake(tally: Tally, next_tick: float, measure_at: float, stop_at: float) -> float:
    """When the progress loop (either driver) wakes next: the next progress line, or the end of
    the warm-up while it lasts, else the end of the run."""
    return min(next_tick, measure_at if not tally.measuring else stop_at)


def _progress_step(tally: Tally, now: float, start: float, measure_at: float, next_tick: float,
                   on_progress: Callable[[str], None] | None) -> float:
    """One wake of the progress loop: start measuring when the warm-up ends, or print a progress
    line when one is due. Returns the next progress time."""
    if not tally.measuring and now >= measure_at:
        tally.take_window()  # the warm-up's operations are not counted
        tally.measuring = True
        return now + PROGRESS_INTERVAL_S
    if now >= next_tick:
        if on_progress is not None:
            on_progress(progress_line(now - start, tally.measuring, tally.take_window(), PROGRESS_INTERVAL_S, tally))
        return next_tick + PROGRESS_INTERVAL_S
    return next_tick


def _backoff_s(rng: random.Random, attempt: int) -> float:
    first, most = RETRY_BACKOFF_S
    return rng.uniform(0, min(most, first * 2 ** min(attempt, 20)))


# --- async driver ---------------------------------------------------------------------------
async def _run_steps_async(conn: client_mod.AsyncConnection, steps: workloads.Steps) -> None:
    result = None
    try:
        while True:
            sql = steps.send(result)
            result = await conn.execute(sql)
    except StopIteration:
        return


async def _recover_async(conn: client_mod.AsyncConnection, error: BaseException) -> None:
    """After a failed statement: end the transaction (or the lost session) so the next one starts clean."""
    try:
        if isinstance(error, client_mod.OperationalError):
            async with asyncio.timeout(conn.timeout_s):
                await conn.reconnect()
        elif conn.transaction_status != "I":
            await conn.rollback()
    except (client_mod.DatabaseError, asyncio.TimeoutError):
        pass


async def _client_async(conn, workload: workloads.Workload, rng: random.Random, tally: Tally,
                        stop_at: float) -> None:
    while time.perf_counter() < stop_at:
        plan = workload.plan(rng)
        started = time.perf_counter()
        for attempt in range(RETRIES_MAX):
            try:
                await _run_steps_async(conn, workload.steps(plan))
            except client_mod.DatabaseError as error:
                await _recover_async(conn, error)
                if error.sqlstate == SERIALIZATION_FAILURE:
                    tally.abort()
                    if time.perf_counter() >= stop_at:
                        return
                    await asyncio.sleep(_backoff_s(rng, attempt))
                    continue
                tally.error(error)
                await asyncio.sleep(ERROR_PAUSE_S)
                break
            if time.perf_counter() <= stop_at:
                tally.op(time.perf_counter() - started)
            break


async def _setup_async(options: Options, workload: workloads.Workload) -> None:
    conn = await client_mod.connect_async(endpoints=options.endpoints, timeout_s=SETUP_TIMEOUT_S,
                                          client_name="quorumdb-bench-setup", **options.credentials)
    try:
        await _run_steps_async(conn, workload.setup())
    finally:
        await conn.close()


def _endpoints_for(options: Options, index: int) -> list[tuple[str, int]]:
    """Client `index`'s compute nodes: spread round robin, the others as failover."""
    count = len(options.endpoints)
    return [options.endpoints[(index + i) % count] for i in range(count)]


async def run_async(options: Options, workload: workloads.Workload, tally: Tally,
                    on_progress: Callable[[str], None] | None, seed: int) -> float:
    if options.setup:
        await _setup_async(options, workload)
    conns = await asyncio.gather(*(
        client_mod.connect_async(endpoints=_endpoints_for(options, i), timeout_s=options.timeout_s,
                                 client_name="quorumdb-bench", session_sql=options.session_sql, **options.credentials)
        for i in range(options.clients)
    ), return_exceptions=True)
    opened = [conn for conn in conns if isinstance(conn, client_mod.AsyncConnection)]
    try:
        failures = [conn for conn in conns if not isinstance(conn, client_mod.AsyncConnection)]
        if failures:
            raise failures[0]
        start = time.perf_counter()
        measure_at = start + options.warmup_s
        stop_at = measure_at + options.duration_s
        tally.measuring = options.warmup_s == 0
        tasks = [asyncio.create_task(_client_async(conn, workload, random.Random(seed * 100_003 + i), tally, stop_at))
                 for i, conn in enumerate(opened)]
        next_tick = start + PROGRESS_INTERVAL_S
        while time.perf_counter() < stop_at:
            await asyncio.sleep(max(0.0, _next_wake(tally, next_tick, measure_at, stop_at) - time.perf_counter()))
            next_tick = _progress_step(tally, time.perf_counter(), start, measure_at, next_tick, on_progress)
        tally.close()
        _, pending = await asyncio.wait(tasks, timeout=options.timeout_s + STOP_GRACE_S)
        for task in pending:
            task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                tally.error(task.exception())
        return options.duration_s
    finally:
        await asyncio.wait([asyncio.create_task(conn.close()) for conn in opened] or [asyncio.sleep(0)],
                           timeout=STOP_GRACE_S)


# --- threads driver -------------------------------------------------------------------------
def _run_steps_sync(conn: client_mod.Connection, steps: workloads.Steps) -> None:
    result = None
    try:
        while True:
            result = conn.execute(steps.send(result))
    except StopIteration:
        return


def _recover_sync(conn: client_mod.Connection, error: BaseException) -> None:
    try:
        if isinstance(error, client_mod.OperationalError):
            conn.reconnect()
        elif conn.transaction_status != "I":
            conn.rollback()
    except client_mod.DatabaseError:
        pass


def _client_thread(options: Options, index: int, workload: workloads.Workload, rng: random.Random, tally: Tally,
                   ready: threading.Barrier, go: threading.Event, timing: dict[str, float]) -> None:
    conn = None
    try:
        conn = client_mod.connect(endpoints=_endpoints_for(options, index), timeout_s=options.timeout_s,
                                  client_name="quorumdb-bench", session_sql=options.session_sql, **options.credentials)
    except client_mod.DatabaseError as error:
        tally.error(error)
    try:
        ready.wait(timeout=options.timeout_s + STOP_GRACE_S)
    except threading.BrokenBarrierError:
        pass
    if conn is None or not go.wait(timeout=options.timeout_s + STOP_GRACE_S):
        return
    try:
        stop_at = timing["stop_at"]
        while time.perf_counter() < stop_at:
            plan = workload.plan(rng)
            started = time.perf_counter()
            for attempt in range(RETRIES_MAX):
                try:
                    _run_steps_sync(conn, workload.steps(plan))
                except client_mod.DatabaseError as error:
                    _recover_sync(conn, error)
                    if error.sqlstate == SERIALIZATION_FAILURE:
                        tally.abort()
                        if time.perf_counter() >= stop_at:
                            return
                        time.sleep(_backoff_s(rng, attempt))
                        continue
                    tally.error(error)
                    time.sleep(ERROR_PAUSE_S)
                    break
                if time.perf_counter() <= stop_at:
                    tally.op(time.perf_counter() - started)
                break
    except Exception as error:  # a bug in a client must show in the report, not vanish with its thread
        tally.error(error)
    finally:
        conn.close()


def run_threads(options: Options, workload: workloads.Workload, tally: Tally,
                on_progress: Callable[[str], None] | None, seed: int) -> float:
    if options.setup:
        asyncio.run(_setup_async(options, workload))
    timing: dict[str, float] = {}
    ready = threading.Barrier(options.clients + 1)  # every client has connected (or failed to)
    go = threading.Event()  # timing["stop_at"] is set
    threads = [threading.Thread(target=_client_thread, name=f"bench-{i}", daemon=True,
                                args=(options, i, workload, random.Random(seed * 100_003 + i), tally, ready, go, timing))
               for i in range(options.clients)]
    for thread in threads:
        thread.start()
    try:
        ready.wait(timeout=options.timeout_s + STOP_GRACE_S)
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    measure_at = start + options.warmup_s
    stop_at = measure_at + options.duration_s
    timing["stop_at"] = stop_at  # read by each client after `go`
    go.set()
    tally.measuring = options.warmup_s == 0
    next_tick = start + PROGRESS_INTERVAL_S
    while time.perf_counter() < stop_at:
        time.sleep(max(0.0, _next_wake(tally, next_tick, measure_at, stop_at) - time.perf_counter()))
        next_tick = _progress_step(tally, time.perf_counter(), start, measure_at, next_tick, on_progress)
    tally.close()
    deadline = time.perf_counter() + options.timeout_s + STOP_GRACE_S
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.perf_counter()))
    return options.duration_s


# --- entry point ----------------------------------------------------------------------------
def run(options: Options, progress: TextIO | None = None) -> dict[str, Any]:
    """Set up, run and summarise one benchmark; `progress` (e.g. sys.stderr) gets a line a second."""
    options.validate()
    system_random = random.SystemRandom()
    workload = workloads.make(options.workload, options.params, salt=system_random.getrandbits(62))
    seed = options.seed if options.seed is not None else system_random.randrange(2 ** 31)
    tally = Tally()

    def on_progress(line: str) -> None:
        if progress is not None:
            progress.write(line + "\n")
            progress.flush()

    if options.driver == "async":
        elapsed_s = asyncio.run(run_async(options, workload, tally, on_progress, seed))
    else:
        elapsed_s = run_threads(options, workload, tally, on_progress, seed)
    report: dict[str, Any] = {
        "workload": options.workload, "clients": options.clients, "duration_s": options.duration_s,
        "warmup_s": options.warmup_s, "driver": options.driver, "seed": seed,
        "read_mode": options.read_mode or "cluster default",
        "endpoints": [f"{host}:{port}" for host, port in options.endpoints],
        "rows": options.params.rows, "scale": options.params.scale, "hot": options.params.hot,
    }
    report.update(stats.summary(tally.total, tally.ops, tally.aborts, tally.errors, elapsed_s))
    report["error_samples"] = list(tally.error_samples)
    # Operations completed during the warm-up (not in `ops`): tools/bench/compare divides the cluster's
    # CPU over the whole run by ops + warmup_ops.
    report["warmup_ops"] = tally.warmup_ops
    client_cpu_s = tally.client_cpu_s()
    report["client_cpu_s"] = client_cpu_s
    report["client_cpu_ms_per_op"] = (None if client_cpu_s is None or tally.ops == 0
                                      else 1000.0 * client_cpu_s / tally.ops)
    return report


def report_text(report: dict[str, Any]) -> str:
    lines = [
        f"workload {report['workload']}: {report['clients']} clients, {report['duration_s']:g} s "
        f"(after {report['warmup_s']:g} s warmup), driver {report['driver']}, seed {report['seed']}, "
        f"read mode {report.get('read_mode', 'cluster default')}",
        f"  ops           {report['ops']}",
        f"  throughput    {report['throughput_tps']:.1f} tps",
        f"  latency ms    p50 {report['latency_ms_p50']:.2f}  p95 {report['latency_ms_p95']:.2f}  "
        f"p99 {report['latency_ms_p99']:.2f}  max {report['latency_ms_max']:.2f}  mean {report['latency_ms_mean']:.2f}",
        f"  aborts        {report['aborts']} (40001, retried as new transactions)",
        f"  errors        {report['errors']}",
    ]
    if report.get("client_cpu_ms_per_op") is not None:
        lines.insert(-2, f"  client CPU    {report['client_cpu_ms_per_op']:.2f} ms per op "
                         "(this process, measured window)")
    lines += [f"    {sample}" for sample in report["error_samples"]]
    return "\n".join(lines) + "\n"
