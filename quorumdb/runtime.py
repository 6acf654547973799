"""What a node's code runs on: its network, disk, clocks, off-loop work and fault points.

Every role's shell reaches the outside world through here (and through `quorumdb.rpc`, which
asks here which transport to use), never directly:

    runtime.monotonic()          durations, leases, heartbeats (seconds, never goes back)
    runtime.clock(error_ns)      the ClockBound-style wall clock that timestamps come from
    runtime.disk()               the file interface of the stores (quorumdb/disk.py)
    await runtime.offload(f, *a) blocking disk work, off the event loop
    runtime.buggify("name")      a fault point: True now and then, only in simulation
    runtime.crash_point("name")  the node may crash right here, only in simulation
    runtime.rng()                a new random.Random for the node's own choices
    runtime.new_id()             a fresh unique id (session ids)
    runtime.exit_process(code)   end the node now, without cleanup (a failed disk)
    runtime.simulated()          True inside the deterministic simulation

A node process uses `REAL`: gRPC, the operating system's files, worker threads, the system
clocks, no faults. The deterministic simulation (`tools/sim/`) runs every node of a cluster
in one process and gives each node's tasks its own `Runtime` through a context variable, so the
roles' real code runs on a simulated network, disk and clock under one seed.
"""
from __future__ import annotations

import asyncio
import contextvars
import os
import random
import time
import uuid
from typing import Any, Callable

from quorumdb import disk as disk_mod
from quorumdb.clock import Clock


class Runtime:
    """The real world (a node process): gRPC, files, threads, system clocks, no fault points."""

    simulated = False
    disk: disk_mod.Disk = disk_mod.REAL

    def monotonic(self) -> float:
        return time.monotonic()

    def clock(self, error_ns: int) -> Clock:
        return Clock(error_ns)

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def rng(self) -> random.Random:
        return random.Random()

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def buggify(self, name: str) -> bool:
        return False

    def crash_point(self, name: str) -> None:
        return None

    def exit_process(self, code: int) -> None:
        os._exit(code)

    # The transport: None means gRPC (quorumdb/rpc.py builds it); a simulation returns its own.
    def server(self):
        return None

    def channel(self, address: str):
        return None


REAL = Runtime()
_current: contextvars.ContextVar[Runtime] = contextvars.ContextVar("quorumdb_runtime", default=REAL)


def current() -> Runtime:
    return _current.get()


def use(runtime: Runtime) -> contextvars.Token:
    """Make `runtime` the current one in this context (the simulation does, per node)."""
    return _current.set(runtime)


def simulated() -> bool:
    return _current.get().simulated


def monotonic() -> float:
    return _current.get().monotonic()


def clock(error_ns: int) -> Clock:
    return _current.get().clock(error_ns)


def disk() -> disk_mod.Disk:
    return _current.get().disk


async def offload(fn: Callable[..., Any], *args: Any) -> Any:
    return await _current.get().offload(fn, *args)


def rng() -> random.Random:
    return _current.get().rng()


def new_id() -> str:
    return _current.get().new_id()


def buggify(name: str) -> bool:
    """A fault point (FoundationDB's BUGGIFY): in simulation, True at some runs' points, now and
    then; in a real node, always False. Code takes the unusual but legal path when it is True."""
    return _current.get().buggify(name)


def crash_point(name: str) -> None:
    """In simulation the node may crash right here (the current task never returns); else nothing."""
    _current.get().crash_point(name)


def exit_process(code: int) -> None:
    """End this node at once (a real process exits; a simulated node crashes)."""
    _current.get().exit_process(code)
