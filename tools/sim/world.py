"""One simulated cluster: every node's real code in one process, under one seed.

`World(seed, faults)` builds the default 15-node cluster (3 journals, 3 adjudicators, 6
storage copies, 3 compute nodes) and runs each node's own `serve(cluster, node, stop)`, the
function a node process runs, as tasks on one `VirtualLoop`. Each node's tasks carry its
`NodeRuntime` in their context (quorumdb/runtime.py), so its gRPC calls go through the
simulated `Network`, its stores write to its simulated `DiskState`, its clock reads virtual
time with the node's own skew, and its fault points ask this world.

Everything random comes from one `random.Random(seed)`, drawn in program order, so a seed
always gives the same run; `Trace` hashes every event to prove it.

Faults (with `faults=True`):
* process crashes at any moment (the nemesis) and at fault points (`runtime.crash_point`),
  restarts after a short while with what the node's disk kept (unsynced writes lost, the
  last one possibly torn); at most `DOWN_MAX` nodes are down at once, so that the cluster can
  make progress between faults (safety never depends on it: any pattern of crashes is legal);
* partitions: a node or a whole AZ cut off for a while;
* network: lost unary requests and replies, duplicated unary requests, broken streams, spikes;
* slow disks; each node's clock skewed anywhere within the configured error bound (often at
  its very edge), drawn again at every restart;
* BUGGIFY: each named fault point is on for some runs (a quarter) and then fires now and then.
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import importlib
import logging
import pathlib
import random
from typing import Any, Callable

from quorumdb import config as config_mod
from quorumdb import runtime
from quorumdb.clock import Clock, Interval
from tools.sim.disk import DiskState, NodeCrashed, SimDisk
from tools.sim.loop import VirtualLoop
from tools.sim.network import Network, SimChannel, SimServer

log = logging.getLogger("tools.sim")

# Simulated wall-clock time at the start of every run (2026-01-01T00:00:00Z, in ns).
EPOCH_NS = 1_767_225_600_000_000_000
DOWN_MAX = 2
SERVICE_MODULES = {"journal": "journal.main", "adjudicator": "adjudicator.main",
                   "storage": "storage_node.main", "compute": "compute_node.main"}
# Fault point activation (FoundationDB's BUGGIFY: a point is enabled for a run with this
# probability, then fires with the second each time it is reached).
BUGGIFY_ENABLED_P = 0.25
BUGGIFY_FIRE_P = 0.05
CRASH_POINT_FIRE_P = 0.002


class Trace:
    """A running hash of every event (and the last few, to show where a run went wrong)."""

    def __init__(self, keep: int = 0) -> None:
        self._hash = hashlib.sha256()
        self.count = 0
        self.keep = keep
        self.recent: list[str] = []
        self.now: Callable[[], float] = lambda: 0.0

    frozen = False

    def add(self, event: str) -> None:
        if self.frozen:
            return
        line = f"{self.now():.9f} {event}"
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.count += 1
        if self.keep:
            self.recent.append(line)
            if len(self.recent) > self.keep:
                del self.recent[: len(self.recent) - self.keep]

    def digest(self) -> str:
        return self._hash.hexdigest()


class SimClock(Clock):
    """A node's wall clock: virtual time plus the node's skew (|skew| <= error bound), so the
    true (virtual) time always lies inside the interval now() returns."""

    def __init__(self, world: "World", skew_ns: int, error_ns: int):
        super().__init__(error_ns)
        self._world = world
        self._skew_ns = max(-error_ns, min(error_ns, skew_ns))

    def now(self) -> Interval:
        t = self._world.wall_ns() + self._skew_ns
        return Interval(t - self.error_ns, t + self.error_ns)


class NodeRuntime(runtime.Runtime):
    """One incarnation of one node (or a client) inside the world."""

    simulated = True

    def __init__(self, world: "World", name: str, incarnation: int, is_node: bool = True):
        self.world = world
        self.name = name
        self.incarnation = incarnation
        self.is_node = is_node
        self.alive = True
        self.tasks: dict[asyncio.Task, None] = {}
        self.skew_ns = 0
        if is_node:
            self.disk = SimDisk(world.disks[name], alive=lambda: self.alive,
                                before_fsync=lambda: self.crash_point("disk.fsync"))

    def monotonic(self) -> float:
        return self.world.loop.time()

    def clock(self, error_ns: int) -> Clock:
        return SimClock(self.world, self.skew_ns, error_ns)

    async def offload(self, fn, *args):
        if not self.alive:
            raise NodeCrashed(self.name)
        await asyncio.sleep(self.world.disk_latency())
        if not self.alive:
            raise NodeCrashed(self.name)
        return fn(*args)

    def rng(self) -> random.Random:
        return random.Random(self.world.rng.getrandbits(64))

    def new_id(self) -> str:
        return f"{self.world.rng.getrandbits(64):016x}"

    def buggify(self, name: str) -> bool:
        return self.world.buggify(name)

    def crash_point(self, name: str) -> None:
        if self.is_node and self.world.crash_point_fires(name, self):
            self.world.crash(self.name, f"fault point {name}")
            raise NodeCrashed(name)

    def exit_process(self, code: int) -> None:
        self.world.crash(self.name, f"exit {code}")
        raise NodeCrashed(f"exit {code}")

    def server(self):
        return SimServer(self.world.network, self)

    def channel(self, address: str):
        return SimChannel(self.world.network, self, address)


class World:
    def __init__(self, seed: int, faults: bool = True, trace_keep: int = 0,
                 settings: dict[str, Any] | None = None) -> None:
        self.seed = seed
        self.faults = faults
        self.rng = random.Random(seed)
        self.loop = VirtualLoop()
        self.loop.set_task_factory(self._task_factory)
        self.trace = Trace(trace_keep)
        self.trace.now = self.loop.time
        self.network = Network(self)
        # Small checkpoint and segment sizes: checkpoints, log drops, journal truncation and peer
        # repair all happen in a short run. The read mode and the clock error bound are the
        # seed's: both read modes must be safe, and with a wide bound skewed clocks disagree by
        # more than a transaction takes (where commit-wait earns its keep).
        cluster_settings = dict(metrics=False, storage_checkpoint_entries=300, journal_segment_entries=100,
                                backtrack_window_s=5.0, read_mode=self.rng.choice(["quorum", "single"]),
                                clock_error_ns=self.rng.choice([1_000_000, 5_000_000, 25_000_000]))
        cluster_settings.update(settings or {})
        self.cluster = config_mod.default_cluster(pathlib.Path("/sim"), **cluster_settings)
        self._by_name = {n.name: n for n in self.cluster.nodes}
        self._by_address = {n.address: n.name for n in self.cluster.nodes}
        self.disks = {n.name: DiskState() for n in self.cluster.nodes}
        self.nodes: dict[str, NodeRuntime] = {}
        self.incarnations = {n.name: 0 for n in self.cluster.nodes}
        self.buggify_enabled: dict[str, bool] = {}
        self.faults_injected = 0
        self.crashes = 0
        self.handler_errors: list[str] = []
        self.node_errors: list[str] = []
        self.slow_disk = False
        self._fault_rates: dict[str, float] = {}
        if faults:  # this run's mix of network faults (on from enable_faults)
            self._fault_rates = dict(unary_drop=self.rng.choice([0.0, 0.001, 0.01]),
                                     unary_duplicate=self.rng.choice([0.0, 0.001, 0.01]),
                                     stream_break=self.rng.choice([0.0, 0.0005, 0.002]),
                                     spike=self.rng.choice([0.0, 0.001, 0.01]))
            self.slow_disk = self.rng.random() < 0.25
        self.allow_crashes = False
        self._heal_handle: asyncio.TimerHandle | None = None
        self._root = NodeRuntime(self, "sim", 0, is_node=False)

    # --- names, time ----------------------------------------------------------------
    def az_of(self, name: str) -> str:
        node = self._by_name.get(name)
        return node.az if node is not None else "client"

    def address_of(self, name: str) -> str:
        return self._by_name[name].address

    def name_at(self, address: str) -> str | None:
        return self._by_address.get(address)

    def wall_ns(self) -> int:
        return EPOCH_NS + int(round(self.loop.time() * 1e9))

    def now(self) -> float:
        return self.loop.time()

    def disk_latency(self) -> float:
        base = 0.0001 + self.rng.random() * 0.0004
        if self.slow_disk and self.rng.random() < 0.05:
            base += self.rng.random() * 0.05
        return base

    # --- tasks ------------------------------------------------------------------------
    def _task_factory(self, loop, coro, context=None):
        task = asyncio.Task(coro, loop=loop, context=context)
        owner = (context.get(runtime._current, None) if context is not None else runtime.current())
        if isinstance(owner, NodeRuntime):
            owner.tasks[task] = None
            task.add_done_callback(lambda t, o=owner: o.tasks.pop(t, None))
        return task

    def spawn(self, coro, rt: NodeRuntime, name: str | None = None) -> asyncio.Task:
        context = contextvars.copy_context()
        context.run(runtime.use, rt)
        return self.loop.create_task(coro, name=name, context=context)

    def client_runtime(self, name: str) -> NodeRuntime:
        return NodeRuntime(self, name, 0, is_node=False)

    # --- nodes ------------------------------------------------------------------------
    def start_node(self, name: str) -> None:
        self.incarnations[name] += 1
        rt = NodeRuntime(self, name, self.incarnations[name])
        if self.faults:  # each incarnation's clock is off by its own amount, within the error bound
            error_ns = self.cluster.clock_error_ns
            rt.skew_ns = self.rng.choice([-error_ns, error_ns, self.rng.randint(-error_ns, error_ns)])
        self.nodes[name] = rt
        self.trace.add(f"start {name} #{rt.incarnation}")
        self.spawn(self._serve(rt), rt, name=f"serve-{name}")

    async def _serve(self, rt: NodeRuntime) -> None:
        node = self._by_name[rt.name]
        module = importlib.import_module(SERVICE_MODULES[node.service])
        try:
            # Never set: a simulated node ends by crashing or with the world (no graceful stop).
            await module.serve(self.cluster, node, asyncio.Event())
        except (NodeCrashed, asyncio.CancelledError):
            pass
        except Exception as error:  # noqa: BLE001 - a node process that dies of an error
            if rt.alive:
                self.node_errors.append(f"{rt.name}: {error!r}")
                self.trace.add(f"node-error {rt.name} {type(error).__name__}")
                self.crash(rt.name, f"died: {error!r}")

    def start_all(self) -> None:
        self.trace.add(f"cluster read_mode={self.cluster.read_mode} clock_error_ns={self.cluster.clock_error_ns}")
        for node in self.cluster.nodes:
            self.start_node(node.name)

    def down(self) -> list[str]:
        return [name for name, rt in self.nodes.items() if not rt.alive]

    def crash(self, name: str, why: str) -> None:
        rt = self.nodes.get(name)
        if rt is None or not rt.alive:
            return
        rt.alive = False
        self.crashes += 1
        self.faults_injected += 1
        lost = self.disks[name].crash(self.rng, tear=self.faults)
        self.trace.add(f"crash {name} #{rt.incarnation} ({why}) lost {lost} bytes")
        self.network.node_crashed(name)
        current = asyncio.current_task(self.loop) if self.loop.is_running() else None
        for task in list(rt.tasks):
            if task is not current:
                task.cancel()
        if self.allow_crashes:  # a supervisor restarts it after a while
            self.loop.call_later(self.rng.uniform(0.05, 2.0), self.restart, name)

    def restart(self, name: str) -> None:
        if self.nodes[name].alive:
            return
        self.start_node(name)

    # --- fault points -----------------------------------------------------------------
    def buggify(self, name: str) -> bool:
        if not self.faults:
            return False
        enabled = self.buggify_enabled.get(name)
        if enabled is None:
            enabled = self.buggify_enabled[name] = self.rng.random() < BUGGIFY_ENABLED_P
        if enabled and self.rng.random() < BUGGIFY_FIRE_P:
            self.faults_injected += 1
            self.trace.add(f"buggify {name}")
            return True
        return False

    def crash_point_fires(self, name: str, rt: NodeRuntime) -> bool:
        if not self.faults or not self.allow_crashes or len(self.down()) >= DOWN_MAX:
            return False
        return self.buggify(name) and self.rng.random() < CRASH_POINT_FIRE_P / BUGGIFY_FIRE_P

    # --- the nemesis's levers -----------------------------------------------------------
    def enable_faults(self) -> None:
        if not self.faults:
            return
        for key, value in self._fault_rates.items():
            setattr(self.network, key, value)
        self.allow_crashes = True
        self.trace.add(f"faults on {sorted(self._fault_rates.items())} slow_disk={self.slow_disk}")

    def quiesce(self) -> None:
        """No more faults: network faults off, links healed, every crashed node restarted."""
        self.allow_crashes = False
        for key in self._fault_rates:
            setattr(self.network, key, 0.0)
        self.heal()
        self.network.paused.clear()
        self.restart_all()
        self.trace.add("quiesce")

    def partition(self, pairs, what: str, heal_after: float) -> None:
        self.faults_injected += 1
        self.trace.add(f"partition {what} for {heal_after:.3f} s")
        for a, b in pairs:
            self.network.cut(a, b)
        if self._heal_handle is not None:
            self._heal_handle.cancel()
        self._heal_handle = self.loop.call_later(heal_after, self.heal)

    def heal(self) -> None:
        if self._heal_handle is not None:
            self._heal_handle.cancel()
            self._heal_handle = None
        if self.network.cuts:
            self.trace.add("heal")
        self.network.heal()

    def crash_all(self, why: str) -> None:
        for name in list(self.nodes):
            self.crash(name, why)

    def restart_all(self) -> None:
        for name in list(self.nodes):
            self.restart(name)

    # --- errors seen ------------------------------------------------------------------
    def handler_error(self, node: str | None, method: str, error: BaseException) -> None:
        self.handler_errors.append(f"{node} {method}: {error!r}"[:300])
        self.trace.add(f"handler-error {node} {method} {type(error).__name__}")

    # --- running ------------------------------------------------------------------------
    def run(self, coro):
        return self.loop.run_until_complete(self.spawn(coro, self._root))

    def close(self) -> None:
        """Cancel every task left and close the loop (bounded: tasks that refuse to end are
        abandoned)."""
        loop = self.loop
        self.trace.frozen = True  # the teardown's order (a set of tasks) is not part of the run
        self.allow_crashes = False
        for rt in self.nodes.values():
            rt.alive = False
        for _ in range(5):
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
