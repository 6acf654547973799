"""An asyncio event loop on virtual time: the clock jumps to the next timer instead of waiting.

Everything in the simulation runs on one thread in this loop. asyncio runs ready callbacks in
FIFO order and timers in deadline order (ties in the order they were scheduled), so with no
real I/O and no threads the order of events is a function of the program and its seed alone.
When nothing is ready the loop does not sleep: `select(timeout)` moves virtual time to the
earliest timer at once, so a simulated hour of heartbeats, leases and deadlines takes only the
CPU time of the work done in it.

Threads and sockets are refused: `run_in_executor` raises (a thread would run outside virtual
time), and there is no file descriptor to poll. A loop with no ready callback and no timer
left can never move again: `Stuck` is raised rather than waiting forever.
"""
from __future__ import annotations

import asyncio
import selectors

# Virtual monotonic time when a simulation starts (any positive value; not 0, so that code
# comparing against a zero "never" sees time as already running).
START_S = 1_000.0
# Virtual time one turn of the loop with ready callbacks takes (a turn runs many callbacks).
STEP_S = 0.000_01


class Stuck(RuntimeError):
    """Nothing is ready and no timer is pending: the simulated program can never progress."""


class _VirtualSelector(selectors.BaseSelector):
    """Keeps the loop's self-pipe registration; `select` advances virtual time instead of blocking."""

    def __init__(self, loop: "VirtualLoop") -> None:
        self._loop = loop
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj, events, data=None):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def modify(self, fileobj, events, data=None):
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def select(self, timeout=None):
        loop = self._loop
        if timeout is None:
            raise Stuck("no task is ready and no timer is pending")
        if timeout > 0:
            target = loop._now + timeout
            if loop._scheduled:  # land exactly on the earliest deadline (no float drift)
                target = max(target, loop._scheduled[0]._when)
            loop._now = target
        else:
            # Work takes time: without this, a loop that polls "until the deadline" with a zero
            # wait would spin forever at one instant (real time moves while code runs).
            loop._now += STEP_S
        return []

    def get_map(self):
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` is virtual and whose waits take no real time."""

    def __init__(self) -> None:
        self._now = START_S
        super().__init__(_VirtualSelector(self))
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._now

    def run_in_executor(self, executor, func, *args):
        raise RuntimeError(f"threads are not simulated (run_in_executor of {func!r}): use runtime.offload")
