"""The nemesis: a fault schedule derived only from the seed, and the thread that carries it out.

`schedule(seed, duration_s, kinds, node_names)` is pure: the same arguments give the same list
of `Fault`s (offset from the start of the run, kind, target, how long it lasts), so a replay
with the same seed injects the same faults at the same offsets. The first faults are a seeded
permutation of the requested kinds (a short run still exercises each one), the rest are drawn
at random. Faults never overlap: each is healed (nodes restarted, partition removed) before
the next one starts.

Fault kinds:
    kill            SIGKILL one node (any service), restart it after the fault's duration
    kill-leader     SIGKILL whichever adjudicator leads now (asked via Status), restart it later
    kill-az         SIGKILL every node of one AZ, restart them all
    kill-az-plus-one  an AZ plus one storage node of another AZ (the AZ+1 case)
    partition-az    cut one AZ off from the others (quorumdb.netfault), then heal

What happens at run time (which node led, whether netfault exists) is recorded in the history;
only the timing of the clients' operations around the faults differs between replays.
"""
from __future__ import annotations

import dataclasses
import importlib
import random
import threading
from typing import Callable

from quorumdb import config as config_mod
from tools.jepsen import limits
from tools.jepsen.history import Recorder
from tools.launcher import Cluster, node_status

KINDS = ("kill", "kill-leader", "kill-az", "kill-az-plus-one", "partition-az")
DEFAULT_KINDS = KINDS


@dataclasses.dataclass(frozen=True)
class Fault:
    at_s: float  # offset from the start of the clients
    kind: str
    down_s: float  # how long until it is healed
    node: str = ""  # kill: the node; kill-az-plus-one: the extra storage node
    az: str = ""  # kill-az, kill-az-plus-one, partition-az

    def describe(self) -> str:
        target = " ".join(t for t in (self.az, self.node) if t)
        return f"t+{self.at_s:6.2f}s  {self.kind:<17} {target:<22} for {self.down_s:.2f}s"


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if kinds == ["none"]:
        return []
    if kinds == ["all"]:
        return list(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown nemesis kinds {unknown}; known: {', '.join(KINDS)}, all, none")
    return kinds


def schedule(seed: int, duration_s: float, kinds: list[str], node_names: list[str],
             azs: tuple[str, ...] = config_mod.AZS) -> list[Fault]:
    """The faults of a run: a pure function of its arguments."""
    rng = random.Random(f"nemesis:{seed}")
    if not kinds:
        return []
    storage = sorted(n for n in node_names if n.startswith("storage-"))
    order = list(kinds)
    rng.shuffle(order)
    faults: list[Fault] = []
    at = limits.NEMESIS_WARMUP_S + rng.uniform(0, 1)
    while len(faults) < limits.SCHEDULE_FAULTS_MAX:
        kind = order[len(faults)] if len(faults) < len(order) else rng.choice(kinds)
        down = round(rng.uniform(limits.FAULT_DOWN_MIN_S, limits.FAULT_DOWN_MAX_S), 3)
        az = rng.choice(azs)
        node = ""
        if kind == "kill":
            node = rng.choice(sorted(node_names))
        elif kind == "kill-az-plus-one":
            node = rng.choice([n for n in storage if not n.startswith(f"storage-{az}-")])
        if at + 1.0 >= duration_s:  # a fault needs a moment of the run to be seen at all
            break
        if kind in ("kill", "kill-leader"):
            az = ""
        faults.append(Fault(round(at, 3), kind, down, node, az))
        at += down + rng.uniform(limits.FAULT_GAP_MIN_S, limits.FAULT_GAP_MAX_S)
    return faults


def find_leader(cluster_config: config_mod.ClusterConfig) -> str | None:
    """The adjudicator that reports role "leader" with the highest epoch, or None."""
    best: tuple[int, str] | None = None
    for node in cluster_config.adjudicators:
        status = node_status(node, timeout_s=limits.LEADER_LOOKUP_TIMEOUT_S)
        if status is not None and status.role == "leader":
            if best is None or status.epoch > best[0]:
                best = (status.epoch, node.name)
    return best[1] if best else None


def load_netfault():
    """quorumdb.netfault, or None when it is not there (partition faults are then skipped)."""
    try:
        module = importlib.import_module("quorumdb.netfault")
    except Exception:  # absent, or half-written by a concurrent change: skip partitions
        return None
    needed = ("isolate_az", "heal")
    return module if all(callable(getattr(module, name, None)) for name in needed) else None


class NemesisThread:
    """A fault schedule carried out in its own thread (`_run`), stopped by `stop`; what it
    injected and the errors it met are read after join()."""

    def __init__(self, faults: list, recorder: Recorder, stop: threading.Event,
                 log: Callable[[str], None], thread_name: str) -> None:
        self.faults = faults
        self.recorder = recorder
        self.stop = stop
        self.log = log
        self.injected: list[dict] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


class Nemesis(NemesisThread):
    """Carries out a schedule against a running Cluster, in its own thread."""

    def __init__(self, cluster: Cluster, faults: list[Fault], recorder: Recorder,
                 stop: threading.Event, log: Callable[[str], None] = print):
        super().__init__(faults, recorder, stop, log, "nemesis")
        self.cluster = cluster
        self.netfault = load_netfault()
        self.partitioned = False

    def _run(self) -> None:
        for fault in self.faults:
            wait_s = fault.at_s - self.recorder.now()
            if wait_s > 0 and self.stop.wait(wait_s):
                return
            if self.stop.is_set():
                return
            try:
                self._inject(fault)
            except Exception as error:  # a broken fault must not end the run silently
                message = f"fault {fault.kind} failed: {error!r}"
                self.errors.append(message)
                self.log(f"nemesis: {message}")
                self.recorder.record({"type": "fault-error", "kind": fault.kind, "error": repr(error)})

    def _inject(self, fault: Fault) -> None:
        cfg = self.cluster.config
        leader = find_leader(cfg)
        event = {"type": "fault", "kind": fault.kind, "scheduled_s": fault.at_s, "leader_before": leader}
        if fault.kind == "partition-az" and self.netfault is None:
            self.log(f"nemesis: skipping {fault.kind} {fault.az}: quorumdb.netfault is not available")
            self.recorder.record({**event, "skipped": "quorumdb.netfault is not available"})
            return
        nodes: list[str] = []
        if fault.kind == "kill":
            nodes = [fault.node]
        elif fault.kind == "kill-leader":
            if leader is None:
                self.log("nemesis: skipping kill-leader: no adjudicator reports role leader")
                self.recorder.record({**event, "skipped": "no leader found"})
                return
            nodes = [leader]
        elif fault.kind in ("kill-az", "kill-az-plus-one"):
            nodes = [n.name for n in cfg.nodes if n.az == fault.az]
            if fault.node:
                nodes.append(fault.node)
        leader_az = cfg.node(leader).az if leader else None
        took_leader = leader in nodes or (fault.kind == "partition-az" and leader_az == fault.az)
        # The fault starts once it is in force: every SIGKILL delivered, or the partition rules
        # written and (netfault's settle wait) applied by every live node. A commit acknowledged
        # before that is not a failover.
        if fault.kind == "partition-az":
            self.partitioned = True
            _call(self.netfault.isolate_az, cfg, fault.az)
        else:
            for name in nodes:
                self.cluster.kill(name)
        start = self.recorder.now()
        self.recorder.record({"type": "fault-start", "kind": fault.kind, "nodes": nodes, "az": fault.az,
                              "time": round(start, 6)})
        self.log(f"nemesis: t+{start:6.2f}s {fault.kind} {fault.az} {' '.join(nodes)}"
                 + (" (the adjudicator leader)" if took_leader else ""))
        self.stop.wait(fault.down_s)  # a run that ends mid-fault heals at once
        if fault.kind == "partition-az":
            _call(self.netfault.heal, cfg)
            self.partitioned = False
        else:
            self.cluster.start(nodes)
        end = self.recorder.now()
        self.log(f"nemesis: t+{end:6.2f}s healed {fault.kind} {fault.az} {' '.join(nodes)}")
        record = {**event, "nodes": nodes, "az": fault.az, "start": round(start, 6), "end": round(end, 6),
                  "took_leader": took_leader}
        self.injected.append(record)
        self.recorder.record(record)

    def heal_all(self) -> None:
        """After the run: remove any partition (even one a failed heal left behind)."""
        if self.netfault is not None and (self.partitioned or any(f.kind == "partition-az" for f in self.faults)):
            _call(self.netfault.heal, self.cluster.config)
            self.partitioned = False


def _call(fn, *args):
    """Call a netfault function, whether it is plain or a coroutine function."""
    result = fn(*args)
    if hasattr(result, "__await__"):
        import asyncio
        return asyncio.run(result)
    return result


def failover_times(faults: list[dict], write_completions: list[float]) -> list[float | None]:
    """For each fault that took the leader: seconds from its start to the next acknowledged commit.

    write_completions: completion times of acknowledged writing operations, any order.
    None for a fault after which no commit was acknowledged during the run.
    """
    ordered = sorted(write_completions)
    times: list[float | None] = []
    for fault in faults:
        if not fault.get("took_leader"):
            continue
        after = [t for t in ordered if t > fault["start"]]
        times.append(round(after[0] - fault["start"], 3) if after else None)
    return times

