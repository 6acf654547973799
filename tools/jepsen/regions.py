"""Jepsen-style runs against an active-active cluster: clients in both peers, whole-region faults.

    python -m tools.jepsen --regions-dir DIR --workload bank --seed 7 --duration 40

runs against a running `quorumdb up --regions A,B --witness W` cluster (DIR is its data
directory): C clients, client i in peer i mod 2 (it moves between its own region's compute
nodes only, so an isolated region's clients keep asking it and must get errors, not stale
rows), and a region nemesis that breaks whole regions through `quorumdb chaos`, the same
commands a user types:

    region-kill        SIGKILL every node of one peer (`chaos region-kill R`), restart it later
    region-partition   cut one peer off from both other regions (`chaos region-partition R`)
    witness-kill       SIGKILL the witness's journal replicas
    witness-partition  cut the witness off
    link-cut           cut only the link between the two peers (`chaos region-link-cut A B`)

Faults never overlap; each is healed (`region-restart`, `region-heal`) before the next, and the
gaps between them count from the previous heal; the run lasts its duration, or longer (bounded)
until every kind of fault asked for has happened once. After
the run every fault is healed, the final reads run and the workload's checker judges the
history (bank: the total and every read; append: G0, G1a-c, lost updates, real-time order).

For each fault the run measures how long commits paused on the side that kept a majority of
regions: seconds from the fault's start to the next write acknowledged to a client of a peer
the fault did not take (`resume_s`).

The schedule is a pure function of the seed (`region_schedule`).
"""
from __future__ import annotations

import dataclasses
import pathlib
import random
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable

from quorumdb import regions as regions_mod
from tools.jepsen import history as history_mod
from tools.jepsen import limits
from tools.jepsen.checker import Verdict
from tools.jepsen.history import OK, Recorder
from tools.jepsen.nemesis import NemesisThread
from tools.jepsen.runner import ClientThread, _retry, final_verdict, note_run_error, stop_clients
from tools.jepsen.workloads import WORKLOADS

REGION_KINDS = ("region-kill", "region-partition", "witness-kill", "witness-partition", "link-cut")
CHAOS_TIMEOUT_S = 120.0
# A region's nodes need a moment after a restart, and its storage catches up from the journal:
# a longer pause between faults than within one AZ.
REGION_FAULT_DOWN_S = (4.0, 7.0)
REGION_FAULT_GAP_S = (3.0, 5.0)
# How much longer than its duration a run may go on so that every kind of fault happens once.
FIRST_PASS_EXTRA_MAX_S = 240.0


@dataclasses.dataclass(frozen=True)
class RegionFault:
    at_s: float
    kind: str
    down_s: float
    regions: tuple[str, ...]  # the region(s) it takes (link-cut: both ends)

    def describe(self) -> str:
        return f"t+{self.at_s:6.2f}s  {self.kind:<17} {','.join(self.regions):<22} for {self.down_s:.2f}s"


def region_schedule(seed: int, duration_s: float, kinds: list[str], peers: list[str],
                    witness: str) -> list[RegionFault]:
    """The faults of a run: a pure function of its arguments (the first ones cover every kind)."""
    unknown = [kind for kind in kinds if kind not in REGION_KINDS]
    if unknown:
        raise ValueError(f"unknown region faults {unknown}; known: {', '.join(REGION_KINDS)}")
    if not kinds:
        return []
    rng = random.Random(f"region-nemesis:{seed}")
    order = list(kinds)
    rng.shuffle(order)
    faults: list[RegionFault] = []
    at = limits.NEMESIS_WARMUP_S + rng.uniform(0, 1)
    while len(faults) < limits.SCHEDULE_FAULTS_MAX:
        kind = order[len(faults)] if len(faults) < len(order) else rng.choice(kinds)
        down = round(rng.uniform(*REGION_FAULT_DOWN_S), 3)
        if at + 1.0 >= duration_s and len(faults) >= len(order):
            break  # every kind once, whatever the duration; then only what fits
        if kind in ("region-kill", "region-partition"):
            targets: tuple[str, ...] = (rng.choice(peers),)
        elif kind == "link-cut":
            targets = tuple(peers)
        else:
            targets = (witness,)
        faults.append(RegionFault(round(at, 3), kind, down, targets))
        at += down + rng.uniform(*REGION_FAULT_GAP_S)
    return faults


def resume_times(faults: list[dict], writes_by_region: dict[str, list[float]]) -> list[float | None]:
    """Per fault: seconds from its start to the next write acknowledged in a peer it did not take.

    A link cut takes neither peer: the next write in either counts (one side keeps the
    witness and the leader, the other must refuse)."""
    times: list[float | None] = []
    for fault in faults:
        untouched = [region for region in writes_by_region if region not in fault["regions"]] \
            if fault["kind"] != "link-cut" else list(writes_by_region)
        after = sorted(t for region in untouched for t in writes_by_region[region] if t > fault["start"])
        times.append(round(after[0] - fault["start"], 3) if after else None)
    return times


def chaos_command(data_dir: pathlib.Path, *args: str) -> None:
    """One `quorumdb chaos` command, as a user types it; raises on failure."""
    result = subprocess.run([sys.executable, "-m", "tools.cli", "chaos", "--data-dir", str(data_dir), *args],
                            capture_output=True, text=True, timeout=CHAOS_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"quorumdb chaos {' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")


class RegionNemesis(NemesisThread):
    """Carries out a region schedule in its own thread."""

    def __init__(self, data_dir: pathlib.Path, faults: list[RegionFault], recorder: Recorder,
                 stop: threading.Event, log: Callable[[str], None] = print,
                 chaos: Callable[..., None] | None = None) -> None:
        super().__init__(faults, recorder, stop, log, "region-nemesis")
        self.data_dir = data_dir
        self.chaos = chaos or (lambda *args: chaos_command(data_dir, *args))

    def _run(self) -> None:
        # The schedule's gaps count from the previous fault's heal: restarting a region takes
        # seconds that vary with the machine's load, and absolute times would squeeze faults out.
        healed_at, scheduled_end = 0.0, 0.0
        for fault in self.faults:
            wait_s = healed_at + (fault.at_s - scheduled_end) - self.recorder.now()
            scheduled_end = fault.at_s + fault.down_s
            if wait_s > 0 and self.stop.wait(wait_s):
                return
            if self.stop.is_set():
                return
            try:
                self._inject(fault)
                healed_at = self.recorder.now()
            except Exception as error:
                message = f"fault {fault.kind} failed: {error!r}"
                self.errors.append(message)
                self.log(f"nemesis: {message}")
                self.recorder.record({"type": "fault-error", "kind": fault.kind, "error": repr(error)})

    def _inject(self, fault: RegionFault) -> None:
        if fault.kind in ("region-kill", "witness-kill"):
            self.chaos("region-kill", fault.regions[0])
        elif fault.kind in ("region-partition", "witness-partition"):
            self.chaos("region-partition", fault.regions[0])
        else:
            self.chaos("region-link-cut", *fault.regions)
        start = self.recorder.now()
        self.recorder.record({"type": "fault-start", "kind": fault.kind, "regions": list(fault.regions),
                              "time": round(start, 6)})
        self.log(f"nemesis: t+{start:6.2f}s {fault.kind} {','.join(fault.regions)}")
        self.stop.wait(fault.down_s)
        self._heal(fault)
        end = self.recorder.now()
        self.log(f"nemesis: t+{end:6.2f}s healed {fault.kind} {','.join(fault.regions)}")
        record = {"type": "fault", "kind": fault.kind, "regions": list(fault.regions), "scheduled_s": fault.at_s,
                  "start": round(start, 6), "end": round(end, 6)}
        self.injected.append(record)
        self.recorder.record(record)

    def _heal(self, fault: RegionFault) -> None:
        if fault.kind in ("region-kill", "witness-kill"):
            self.chaos("region-restart", fault.regions[0])
        else:
            self.chaos("region-heal")

    def heal_all(self) -> None:
        """After the run: no partition or cut link left, every killed region running again."""
        self.chaos("region-heal")
        for fault in self.faults:
            if fault.kind in ("region-kill", "witness-kill"):
                self.chaos("region-restart", fault.regions[0])


@dataclasses.dataclass
class RegionRunResult:
    valid: bool
    verdict: Verdict
    counts: dict[str, int]
    counts_by_region: dict[str, dict[str, int]]
    faults: list[dict]
    resume_s: list[float | None]
    summary: str
    notes: list[str]
    history_path: pathlib.Path


def client_addresses(global_cfg: regions_mod.GlobalConfig) -> dict[str, list[tuple[str, int]]]:
    """Each peer's compute nodes' client API addresses."""
    return {name: [(node.host, node.port) for node in global_cfg.region(name).cluster().computes]
            for name in global_cfg.peers}


def run_regions(data_dir: pathlib.Path, workload_name: str, seed: int, duration_s: float, clients: int = 6,
                kinds: list[str] | None = None, out_dir: pathlib.Path | None = None,
                log: Callable[[str], None] = print, chaos: Callable[..., None] | None = None,
                ready: Callable[[], None] | None = None) -> RegionRunResult:
    """One run against the active-active cluster in `data_dir` (see the module docstring).

    `ready()`, when given, is called after the heal and must return once the cluster serves
    again in every region (or raise)."""
    global_cfg = regions_mod.load(data_dir)
    assert global_cfg.active_active, f"{data_dir} is not an active-active cluster"
    assert 2 <= clients <= limits.CLIENTS_MAX
    kinds = list(REGION_KINDS) if kinds is None else kinds
    workload = WORKLOADS[workload_name]()
    peers = global_cfg.peers
    by_region = client_addresses(global_cfg)
    every = [address for name in peers for address in by_region[name]]
    out_dir = pathlib.Path(out_dir or data_dir / f"jepsen-{workload_name}-{seed}")
    out_dir.mkdir(parents=True, exist_ok=True)
    history_path = out_dir / "history.jsonl"
    recorder = Recorder(history_path)
    faults = region_schedule(seed, duration_s, kinds, peers, global_cfg.witness)
    client_region = {i: peers[i % len(peers)] for i in range(clients)}
    recorder.record({"type": "meta", "workload": workload_name, "workload_meta": workload.meta(), "seed": seed,
                     "duration_s": duration_s, "clients": clients, "regions": peers, "witness": global_cfg.witness,
                     "client_region": client_region, "schedule": [dataclasses.asdict(f) for f in faults]})
    log(f"jepsen: active-active {','.join(peers)} + witness {global_cfg.witness}; workload={workload_name} "
        f"seed={seed} duration={duration_s:g}s clients={clients}")
    for fault in faults:
        log(f"  {fault.describe()}")
    notes: list[str] = []
    verdict = Verdict(workload_name)
    nemesis = RegionNemesis(data_dir, faults, recorder, threading.Event(), log, chaos)
    events: list[dict] = []
    try:
        if _retry("setup", lambda c: workload.setup(c) or True, every, limits.FINAL_READ_TIMEOUT_S, log,
                  data_dir) is None:
            raise RuntimeError("workload setup failed")
        stop = nemesis.stop
        threads = [ClientThread(i, clients, workload, by_region[client_region[i]], recorder, stop, seed, log, data_dir)
                   for i in range(clients)]
        recorder.origin = time.monotonic()
        recorder.record({"type": "start"})
        for client in threads:
            client.thread.start()
        nemesis.start()
        stop.wait(duration_s)
        # A run goes on (bounded) until every kind of fault asked for has happened once.
        first_pass = min(len(kinds), len(faults))
        deadline = time.monotonic() + FIRST_PASS_EXTRA_MAX_S
        while len(nemesis.injected) + len(nemesis.errors) < first_pass and time.monotonic() < deadline:
            time.sleep(0.2)
        stop_clients(stop, recorder, threads, notes)
        if not nemesis.join(limits.CLIENT_JOIN_TIMEOUT_S + CHAOS_TIMEOUT_S):
            notes.append("the nemesis did not finish its last fault in time")
        nemesis.heal_all()
        if ready is not None:
            ready()
        events, verdict = final_verdict(workload, recorder, every, log, data_dir)
    except Exception as error:
        note_run_error(error, verdict, notes, log)
        events = events or list(recorder.events)
        try:
            nemesis.heal_all()
        except Exception as heal_error:
            notes.append(f"heal after the run failed: {heal_error!r}")
    notes += nemesis.errors
    ops = history_mod.pair_ops(events)
    counts = {"ok": 0, "fail": 0, "info": 0}
    counts_by_region = {name: {"ok": 0, "fail": 0, "info": 0} for name in peers}
    writes_by_region: dict[str, list[float]] = {name: [] for name in peers}
    for op in ops:
        counts[op.type] += 1
        region = client_region[op.process % clients]
        counts_by_region[region][op.type] += 1
        if op.type == OK and workload.is_write(op) and op.complete_time is not None:
            writes_by_region[region].append(op.complete_time)
    resume = resume_times(nemesis.injected, writes_by_region)
    measured = [t for t in resume if t is not None]
    resume_text = (f"min/median/max {min(measured):.2f}/{statistics.median(measured):.2f}/{max(measured):.2f} s"
                   if measured else "none measured")
    summary = (f"jepsen summary: active-active workload={workload_name} seed={seed} ops={len(ops)} "
               f"ok={counts['ok']} failed={counts['fail']} unknown={counts['info']} "
               + " ".join(f"{name}: ok={c['ok']} failed={c['fail']} unknown={c['info']};"
                          for name, c in counts_by_region.items())
               + f" faults={len(nemesis.injected)} ({', '.join(f['kind'] for f in nemesis.injected) or '-'}); "
               f"commits resumed after each fault: {resume_text}; verdict={'VALID' if verdict.valid else 'INVALID'}")
    recorder.record({"type": "verdict", **verdict.to_json(), "resume_s": resume, "notes": notes})
    recorder.close()
    log(verdict.text())
    for note in notes:
        log(f"note: {note}")
    log(summary)
    return RegionRunResult(verdict.valid and not notes, verdict, counts, counts_by_region, nemesis.injected,
                           resume, summary, notes, history_path)
