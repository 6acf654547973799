"""One Jepsen-style run: fresh cluster, clients + nemesis for a while, heal, final reads, check.

    python -m tools.jepsen --workload bank --seed 7 --duration 30

Phases (each bounded): start a fresh default cluster on a free block of ports in the output
directory; set up the workload's tables; start C client threads (client i starts on compute
node i mod 3 and moves to the next node when its node fails it) and the nemesis thread; after
`duration` seconds stop the clients (each finishes the operation in flight), heal the network,
restart every node that is down, wait for the cluster to be healthy, run the final reads, check
the history. Every process the run started is stopped by PID in a `finally`.

Determinism: the fault schedule and each client's sequence of operations come from the seed
only (random.Random seeded with strings derived from it). Timing does not: which operations
overlap a fault, which conflict, which outcomes become unknown differ from run to run, so a
replay repeats the schedule and the requests, not necessarily the anomaly.
"""
from __future__ import annotations

import dataclasses
import pathlib
import random
import shutil
import statistics
import tempfile
import threading
import time
from typing import Any, Callable

from quorumdb import client as qclient
from quorumdb import config as config_mod
from quorumdb import errors
from tools.jepsen import history as history_mod
from tools.jepsen import limits, nemesis as nemesis_mod
from tools.jepsen.checker import Verdict
from tools.jepsen.history import FAIL, INFO, OK, Recorder
from tools.jepsen.workloads import WORKLOADS, Definite, Indefinite, Workload
from tools.launcher import Cluster, LaunchError, free_base_port

# Errors worth retrying during setup and the final reads (unavailable, conflict, unknown,
# lost connection, statement timeout); anything else is reported at once.
TRANSIENT_SQLSTATES = frozenset({
    errors.SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, errors.CONNECTION_FAILURE, errors.CANNOT_CONNECT_NOW,
    errors.SERIALIZATION_FAILURE, errors.STATEMENT_COMPLETION_UNKNOWN, errors.QUERY_CANCELED,
})


@dataclasses.dataclass
class Options:
    workload: str
    seed: int
    duration_s: float
    clients: int = 6
    nemesis: list[str] = dataclasses.field(default_factory=lambda: list(nemesis_mod.DEFAULT_KINDS))
    out: pathlib.Path | None = None
    keep: bool = False
    read_mode: str = "quorum"  # the cluster's reads: 3 of 6 copies, or one caught-up copy

    def command(self) -> str:
        kinds = ",".join(self.nemesis) or "none"
        return (f"python -m tools.jepsen --workload {self.workload} --seed {self.seed} "
                f"--duration {self.duration_s:g} --clients {self.clients} --nemesis {kinds} "
                f"--read-mode {self.read_mode}")


@dataclasses.dataclass
class RunResult:
    valid: bool
    verdict: Verdict
    out_dir: pathlib.Path
    history_path: pathlib.Path
    counts: dict[str, int]
    faults: list[dict]
    failover_s: list[float | None]
    summary: str
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return 0 if self.valid else 1




# --- clients -----------------------------------------------------------------------------


class ClientThread:
    """One client: a session on one compute node at a time, one operation at a time."""

    def __init__(self, index: int, clients: int, workload: Workload, addresses: list[tuple[str, int]],
                 recorder: Recorder, stop: threading.Event, seed: int, log: Callable[[str], None],
                 data_dir: pathlib.Path | None = None):
        self.index = index
        self.data_dir = data_dir  # the cluster's: its CA and token secret (quorumdb.credentials)
        self.clients = clients
        self.workload = workload
        self.addresses = addresses
        self.recorder = recorder
        self.stop = stop
        self.log = log
        self.op_rng = random.Random(f"ops:{seed}:{index}")
        self.retry_rng = random.Random(f"retry:{seed}:{index}")
        self.process = index  # a new process id after each unknown outcome, as Jepsen does
        self.node = index % len(addresses)
        self.conn: qclient.Connection | None = None
        self.reconnects = 0
        self.thread = threading.Thread(target=self._run, name=f"client-{index}", daemon=True)

    def _connect(self) -> qclient.Connection | None:
        for _ in range(len(self.addresses)):
            host, port = self.addresses[self.node]
            try:
                return qclient.Connection(host, port, timeout_s=limits.CLIENT_TIMEOUT_S,
                                          client_name=f"jepsen-{self.index}", data_dir=self.data_dir)
            except qclient.DatabaseError:
                self.node = (self.node + 1) % len(self.addresses)
            if self.stop.is_set():
                return None
        self.stop.wait(limits.RECONNECT_PAUSE_S)
        return None

    def _drop(self) -> None:
        """Forget the session and move to the next compute node."""
        conn, self.conn = self.conn, None
        self.node = (self.node + 1) % len(self.addresses)
        self.reconnects += 1
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a dead session is best effort
                pass

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set() and seq < limits.OPS_PER_CLIENT_MAX:
            if self.conn is None:
                self.conn = self._connect()
                if self.conn is None:
                    continue
            f, value = self.workload.next_op(self.op_rng, self.index, seq)
            seq += 1
            self.recorder.invoke(self.process, f, value)
            try:
                result = self.workload.execute(self.conn, f, value, self.retry_rng)
            except Definite as error:
                self.recorder.complete(FAIL, self.process, f, None, str(error))
                if error.broken:
                    self._drop()
            except Indefinite as error:
                self.recorder.complete(INFO, self.process, f, None, str(error))
                self.process += self.clients
                if error.broken:
                    self._drop()
            except Exception as error:  # a client-side surprise: the outcome is unknown
                self.log(f"client {self.index}: unexpected {error!r}")
                self.recorder.complete(INFO, self.process, f, None, f"client error {error!r}")
                self.process += self.clients
                self._drop()
            else:
                self.recorder.complete(OK, self.process, f, result)
        self._drop()


# --- the run ---------------------------------------------------------------------------------


def _connect_any(addresses: list[tuple[str, int]], data_dir: pathlib.Path | None = None) -> qclient.Connection | None:
    for host, port in addresses:
        try:
            return qclient.Connection(host, port, timeout_s=limits.CLIENT_TIMEOUT_S, client_name="jepsen-control",
                                      data_dir=data_dir)
        except qclient.DatabaseError:
            continue
    return None


def _retry(what: str, fn: Callable[[qclient.Connection], Any], addresses, timeout_s: float,
           log: Callable[[str], None], data_dir: pathlib.Path | None = None) -> Any:
    """fn(conn) through any compute node until it succeeds or timeout_s passes (then None)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        conn = _connect_any(addresses, data_dir)
        if conn is not None:
            try:
                return fn(conn)
            except (Definite, Indefinite, qclient.DatabaseError) as error:
                last = str(error)
                sqlstate = getattr(error, "sqlstate", last[:5])
                if sqlstate not in TRANSIENT_SQLSTATES:
                    log(f"{what} failed: {last}")
                    return None
            finally:
                try:
                    conn.close()
                except Exception:
                    pass
        time.sleep(0.5)
    log(f"{what} did not succeed within {timeout_s:.0f} s: {last}")
    return None

def stop_clients(stop: threading.Event, recorder: Recorder, clients: list[ClientThread], notes: list[str]) -> None:
    """End the run's operations: the clients stop (each within CLIENT_JOIN_TIMEOUT_S of the others)
    and those still in an operation are noted; their operations count as unknown."""
    stop.set()
    recorder.record({"type": "stop"})
    deadline = time.monotonic() + limits.CLIENT_JOIN_TIMEOUT_S
    for client in clients:
        client.thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [c.index for c in clients if c.thread.is_alive()]
    if stuck:
        notes.append(f"clients {stuck} still in an operation after {limits.CLIENT_JOIN_TIMEOUT_S:.0f} s "
                     f"(their operations count as unknown)")


def final_verdict(workload, recorder: Recorder, addresses, log: Callable[[str], None],
                  data_dir: pathlib.Path | None) -> tuple[list[dict], Verdict]:
    """After the faults are healed: the history, then the final read (recorded with it), then
    the workload's verdict on both."""
    events = list(recorder.events)
    final = _retry("final read", workload.final_read, addresses, limits.FINAL_READ_TIMEOUT_S, log, data_dir)
    recorder.record({"type": "final", "value": final})
    return events, workload.check(history_mod.pair_ops(events), final)


def note_run_error(error: Exception, verdict: Verdict, notes: list[str], log: Callable[[str], None]) -> None:
    """A run that broke off: the verdict fails with the error, which the notes and the log say."""
    notes.append(f"run error: {error!r}")
    log(f"jepsen: run error: {error!r}")
    verdict.add("run-error", repr(error))



def _setup(workload: Workload, conn: qclient.Connection) -> bool:
    workload.setup(conn)
    return True


def run(options: Options, log: Callable[[str], None] = print) -> RunResult:
    assert 1 <= options.clients <= limits.CLIENTS_MAX, "clients out of range"
    assert 0 < options.duration_s <= limits.DURATION_MAX_S, "duration out of range"
    workload = WORKLOADS[options.workload]()
    temporary = options.out is None
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"qdb-jepsen-{options.workload}-{options.seed}-")) \
        if temporary else pathlib.Path(options.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = out_dir / "cluster"
    if data_dir.exists():
        shutil.rmtree(data_dir)  # every run starts from a fresh cluster
    cfg = config_mod.default_cluster(data_dir, base_port=free_base_port(), read_mode=options.read_mode)
    faults = nemesis_mod.schedule(options.seed, options.duration_s, options.nemesis, [n.name for n in cfg.nodes])
    history_path = out_dir / "history.jsonl"
    recorder = Recorder(history_path)
    notes: list[str] = []
    log(f"jepsen: workload={options.workload} seed={options.seed} duration={options.duration_s:g}s "
        f"clients={options.clients} nemesis={','.join(options.nemesis) or 'none'} read_mode={options.read_mode}")
    log(f"jepsen: output {out_dir}")
    log(f"jepsen: fault schedule ({len(faults)} faults, from seed {options.seed}):")
    for fault in faults:
        log(f"  {fault.describe()}")
    recorder.record({"type": "meta", "workload": options.workload, "workload_meta": workload.meta(),
                     "seed": options.seed, "duration_s": options.duration_s, "clients": options.clients,
                     "nemesis": options.nemesis, "schedule": [dataclasses.asdict(f) for f in faults],
                     "command": options.command(), "base_port": cfg.nodes[0].port})
    cluster = Cluster(cfg)
    nemesis = None
    verdict = Verdict(options.workload)
    events: list[dict] = []
    try:
        cfg.write()
        started = time.monotonic()
        cluster.start()
        cluster.wait_ready(timeout_s=limits.CLUSTER_READY_TIMEOUT_S, healthy=True)
        log(f"jepsen: cluster ready in {time.monotonic() - started:.1f} s")
        addresses = [(n.host, n.port) for n in cfg.computes]
        if _retry("setup", lambda c: _setup(workload, c), addresses, limits.FINAL_READ_TIMEOUT_S, log,
                  data_dir) is None:
            raise RuntimeError("workload setup failed")

        stop = threading.Event()
        clients = [ClientThread(i, options.clients, workload, addresses, recorder, stop, options.seed, log, data_dir)
                   for i in range(options.clients)]
        nemesis = nemesis_mod.Nemesis(cluster, faults, recorder, stop, log)
        recorder.origin = time.monotonic()
        recorder.record({"type": "start"})
        for client in clients:
            client.thread.start()
        nemesis.start()
        stop.wait(options.duration_s)
        log(f"jepsen: t+{recorder.now():.2f}s duration over; stopping clients")
        stop_clients(stop, recorder, clients, notes)
        if not nemesis.join(limits.CLIENT_JOIN_TIMEOUT_S):
            notes.append("the nemesis did not finish its last fault in time")

        # Heal and recover.
        nemesis.heal_all()
        cluster.start()
        recovery_started = time.monotonic()
        try:
            cluster.wait_ready(timeout_s=limits.RECOVERY_TIMEOUT_S, healthy=True)
            log(f"jepsen: every node healthy {time.monotonic() - recovery_started:.1f} s after the heal")
        except LaunchError as error:
            notes.append(f"recovery: {error}")
            log(f"jepsen: recovery incomplete: {error}")
        events, verdict = final_verdict(workload, recorder, addresses, log, data_dir)
    except Exception as error:
        note_run_error(error, verdict, notes, log)
        events = events or list(recorder.events)
    finally:
        cluster.stop_all()
        if nemesis is not None:
            try:
                nemesis.heal_all()
            except Exception as error:
                notes.append(f"heal after the run failed: {error!r}")
    if nemesis is not None and nemesis.errors:
        notes += nemesis.errors
    return _finish(options, workload, verdict, events, recorder, out_dir, history_path, temporary, notes, log)


def _finish(options, workload, verdict, events, recorder, out_dir, history_path, temporary, notes, log) -> RunResult:
    ops = history_mod.pair_ops(events)
    counts = {"ok": 0, "fail": 0, "info": 0}
    for op in ops:
        counts[op.type] += 1
    injected = [e for e in history_mod.faults(events) if not e.get("skipped")]
    skipped = [e for e in history_mod.faults(events) if e.get("skipped")]
    writes = [op.complete_time for op in ops if op.type == OK and workload.is_write(op)]
    failover = nemesis_mod.failover_times(injected, writes)
    recorder.record({"type": "verdict", **verdict.to_json(), "failover_s": failover, "notes": notes})
    recorder.close()
    log(verdict.text())
    for note in notes:
        log(f"note: {note}")
    kinds: dict[str, int] = {}
    for fault in injected:
        kinds[fault["kind"]] = kinds.get(fault["kind"], 0) + 1
    measured = [t for t in failover if t is not None]
    failover_text = "none measured"
    if measured:
        failover_text = (f"min/median/max {min(measured):.2f}/{statistics.median(measured):.2f}/"
                         f"{max(measured):.2f} s over {len(measured)}")
    if len(measured) < len(failover):
        failover_text += f" ({len(failover) - len(measured)} leader losses with no commit after)"
    gap_text = ""
    ordered = sorted(writes)
    if len(ordered) >= 2:
        gap, at = max((b - a, a) for a, b in zip(ordered, ordered[1:]))
        gap_text = f"; longest gap between acknowledged commits {gap:.2f} s (from t+{at:.2f}s)"
    summary = (f"jepsen summary: workload={options.workload} seed={options.seed} "
               f"ops={len(ops)} ok={counts['ok']} failed={counts['fail']} unknown={counts['info']} "
               f"faults={len(injected)} ({', '.join(f'{k}={v}' for k, v in sorted(kinds.items())) or '-'}"
               f"{f'; skipped {len(skipped)}' if skipped else ''}) "
               f"failover: {failover_text}{gap_text}; verdict={'VALID' if verdict.valid else 'INVALID'}")
    log(summary)
    if verdict.valid:
        if not options.keep:
            shutil.rmtree(out_dir if temporary else out_dir / "cluster", ignore_errors=True)
    else:
        log(f"jepsen: FAILED seed={options.seed}; history {history_path}; node logs {out_dir / 'cluster' / 'logs'}")
        log(f"jepsen: replay (same faults and requests; timing differs): {options.command()}")
    return RunResult(verdict.valid, verdict, out_dir, history_path, counts, injected, failover, summary, notes)


def check_file(path: pathlib.Path, log: Callable[[str], None] = print) -> Verdict:
    """Re-run the checker on a stored history."""
    events = history_mod.load(path)
    meta = next(e for e in events if e.get("type") == "meta")
    final_events = [e for e in events if e.get("type") == "final"]
    workload = WORKLOADS[meta["workload"]](**meta.get("workload_meta", {}))
    final = final_events[-1]["value"] if final_events else None
    verdict = workload.check(history_mod.pair_ops(events), final)
    log(verdict.text())
    return verdict
