"""asyncio helpers shared by the services.

`wait_event` is how every loop that a task cancellation must stop (a leader's loop, journal
followers, stream handlers, background pollers) waits for an event with a bound. It uses
`asyncio.timeout`, never `asyncio.wait_for`: in Python 3.11, wait_for returns the inner result
and drops a cancellation that arrives as the inner await completes, and the loop then never
ends (seen as a journal follower that kept following after its task was cancelled, under load:
a hung test).
"""
from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passed; True if it is set. Cancellation-safe."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel `task` (if any) and wait until it has ended, whatever it ends with."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait_clock_past(clock, ts: int) -> None:
    """Return once clock.now().earliest > ts (a commit-wait): every later now().latest, on any
    node whose clock keeps its error bound, is then above ts."""
    for _ in range(1_000):  # each sleep covers the whole remaining gap; a few rounds at most
        delay_s = clock.wait_until_past_s(ts)
        if delay_s <= 0:
            return
        await asyncio.sleep(delay_s)
    raise AssertionError(f"the clock did not pass {ts}")
