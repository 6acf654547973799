"""One seeded run of a workload on a simulated cluster, checked; and many of them.

A run (`run_seed`), all in virtual time:
 1. start the 15 nodes; create the workload's tables (no faults yet);
 2. `duration_s` of clients (CLIENTS tasks, each one session through the async client, every
    compute node as an endpoint) while the nemesis crashes and restarts nodes and cuts nodes
    or AZs off, and the fault points and the network do their part (world.py);
 3. the clients finish the operation in flight (or it is recorded as unknown); faults stop,
    links heal, crashed nodes restart;
 4. durability: every node crashes at once (each loses what it had not fsynced, a last write
    possibly torn) and restarts;
 5. the final read, retried until the cluster answers, and the workload's checker
    (tools/jepsen/checker.py) over the whole history.

Violations: every anomaly the checker reports (including an acknowledged commit missing
after the crash of every node, and a final read that never succeeds), a node that dies of an
unexpected exception, and a simulation that can no longer move (`Stuck`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from typing import Any

from quorumdb import client as qclient
from tools.jepsen import history
from tools.jepsen import limits as jlimits
from tools.jepsen.workloads import Definite, Indefinite
from tools.sim import broken as broken_mod
from tools.sim import limits as sim_limits
from tools.sim.loop import Stuck
from tools.sim.workloads import WORKLOADS
from tools.sim.world import DOWN_MAX, World

log = logging.getLogger("tools.sim.run")



@dataclasses.dataclass
class SeedResult:
    seed: int
    workload: str
    valid: bool
    violations: dict[str, list[str]]
    violation_count: int
    faults: int
    crashes: int
    ops: int
    trace_hash: str
    events: int
    virtual_s: float
    real_s: float
    stats: dict[str, Any]
    recent: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Recorder:
    """History events in memory, timed in virtual seconds since the clients started."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.origin = world.now()
        self.events: list[dict] = []

    def record(self, event: dict) -> None:
        event = dict(event, time=round(self.world.now() - self.origin, 9), index=len(self.events))
        self.events.append(event)
        self.world.trace.add(f"history {event['type']} p{event.get('process')} {event.get('f')}")

    def invoke(self, process: int, f: str, value: Any) -> None:
        self.record({"type": "invoke", "process": process, "f": f, "value": value})

    def complete(self, kind: str, process: int, f: str, value: Any, error: str = "") -> None:
        event = {"type": kind, "process": process, "f": f, "value": value}
        if error:
            event["error"] = error
        self.record(event)


def run_seed(seed: int, workload: str = "bank", faults: bool = True, duration_s: float = sim_limits.DEFAULT_DURATION_S,
             broken: str | None = None, trace_keep: int = 0) -> SeedResult:
    started = time.perf_counter()
    world = World(seed, faults=faults, trace_keep=trace_keep)
    spec = WORKLOADS[workload]()
    violations: dict[str, list[str]] = {}
    ops: list[history.Op] = []
    stats: dict[str, Any] = {}
    with broken_mod.variant(broken):
        world.start_all()
        try:
            ops, verdict = world.run(_scenario(world, spec, duration_s))
            stats = dict(verdict.stats, read_mode=world.cluster.read_mode)
            if not verdict.valid:
                violations.update({kind: list(found) for kind, found in verdict.anomalies.items()})
                for kind, count in verdict.counts.items():
                    stats[f"anomaly_{kind}"] = count
        except Stuck as error:
            violations["stuck"] = [str(error)]
        finally:
            world.close()
    for error in world.node_errors:
        violations.setdefault("node-error", []).append(error)
    count = sum(len(v) for v in violations.values())
    return SeedResult(seed=seed, workload=workload, valid=not violations, violations=violations,
                      violation_count=count, faults=world.faults_injected, crashes=world.crashes, ops=len(ops),
                      trace_hash=world.trace.digest(), events=world.trace.count,
                      virtual_s=round(world.now() - 1000.0, 3), real_s=round(time.perf_counter() - started, 3),
                      stats=stats, recent=list(world.trace.recent))


async def _connect(world: World, name: str, first: int) -> qclient.AsyncConnection:
    endpoints = [(n.host, n.port) for n in world.cluster.computes]
    endpoints = endpoints[first % len(endpoints):] + endpoints[:first % len(endpoints)]
    # insecure: the simulation's transport has no TLS and its nodes ask for no token.
    return qclient.AsyncConnection(endpoints=endpoints, timeout_s=sim_limits.CLIENT_TIMEOUT_S, client_name=name,
                                   insecure=True)


async def _setup(world: World, spec) -> None:
    conn = await _connect(world, "sim-setup", 0)
    done = 0
    deadline = world.now() + sim_limits.SETUP_TIMEOUT_S
    while done < len(spec.setup_sql):
        try:
            await conn.execute(spec.setup_sql[done])
            done += 1
        except qclient.DatabaseError as error:
            if world.now() > deadline:
                raise RuntimeError(f"setup did not finish: {error}") from None
            await asyncio.sleep(0.2)
    await conn.close()


async def _client(world: World, spec, recorder: Recorder, process: int, end: float) -> None:
    rng = random.Random(world.rng.getrandbits(64))
    conn = await _connect(world, f"sim-client-{process}", process)
    seq = 0
    while world.now() < end:
        f, value = spec.next_op(rng, process, seq)
        seq += 1
        recorder.invoke(process, f, value)
        broken = False
        try:
            result = await spec.execute(conn, f, value, rng)
            recorder.complete(history.OK, process, f, result)
        except Definite as error:
            recorder.complete(history.FAIL, process, f, value, str(error))
            broken = error.broken
        except Indefinite as error:
            recorder.complete(history.INFO, process, f, value, str(error))
            broken = error.broken
        if broken:
            try:
                await conn.reconnect()
            except qclient.DatabaseError:
                await asyncio.sleep(jlimits.RECONNECT_PAUSE_S)


async def _nemesis(world: World, end: float) -> None:
    rng = random.Random(world.rng.getrandbits(64))
    names = [n.name for n in world.cluster.nodes]
    azs = sorted({n.az for n in world.cluster.nodes})
    while True:
        await asyncio.sleep(rng.expovariate(1 / sim_limits.NEMESIS_MEAN_GAP_S))
        if world.now() >= end:
            return
        roll = rng.random()
        # A third of the node faults hit the adjudicator leader (the one appending to the
        # journal): its failover is where most of the protocol is.
        leader = world.network.last_appender
        victim = leader if leader is not None and rng.random() < 0.33 else rng.choice(names)
        if roll < 0.4:
            if len(world.down()) < DOWN_MAX and world.nodes[victim].alive:
                world.crash(victim, "nemesis")
        elif roll < 0.55:
            world.network.pause(victim, rng.uniform(0.2, 2.0))
        elif roll < 0.85:
            if rng.random() < 0.7:
                pairs = [(victim, other) for other in names if other != victim]
                what = victim
            else:
                az = rng.choice(azs)
                inside = [n.name for n in world.cluster.nodes if n.az == az]
                pairs = [(a, b) for a in inside for b in names if b not in inside]
                what = az
            world.partition(pairs, what, heal_after=rng.uniform(0.1, 2.0))
        else:
            world.network.spike_for(rng.uniform(0.1, 1.0))


async def _final_read(world: World, spec) -> Any:
    conn = await _connect(world, "final-read", 0)
    deadline = world.now() + sim_limits.FINAL_READ_TIMEOUT_S
    while True:
        try:
            return await spec.final_read(conn)
        except Definite:
            if world.now() > deadline:
                return None
            await asyncio.sleep(0.5)
            try:
                await conn.reconnect()
            except qclient.DatabaseError:
                pass


async def _scenario(world: World, spec, duration_s: float):
    await _setup(world, spec)
    world.enable_faults()
    recorder = Recorder(world)
    end = world.now() + duration_s
    clients = [world.spawn(_client(world, spec, recorder, i, end), world.client_runtime(f"client-{i}"))
               for i in range(sim_limits.CLIENTS)]
    nemesis = asyncio.ensure_future(_nemesis(world, end)) if world.faults else None
    done, pending = await asyncio.wait(clients, timeout=duration_s + sim_limits.CLIENT_TIMEOUT_S * 4)
    for task in pending:  # an operation still in flight stays without completion: unknown
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    if nemesis is not None:
        nemesis.cancel()
        await asyncio.gather(nemesis, return_exceptions=True)
    world.quiesce()
    await asyncio.sleep(1.0)
    world.crash_all("durability check: every node crashes at once")
    await asyncio.sleep(0.1)
    world.restart_all()
    final = await _final_read(world, spec)
    ops = history.pair_ops(recorder.events)
    verdict = spec.check(ops, final)
    world.trace.add(f"verdict {json.dumps(verdict.to_json(), sort_keys=True, default=str)}")
    return ops, verdict
