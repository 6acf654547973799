"""quorumdb/aio.py: the bounded, cancellation-safe event wait every service loop uses."""
from __future__ import annotations

import asyncio

import pytest

from quorumdb.aio import wait_event


async def test_wait_event_reports_whether_the_event_was_set():
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await asyncio.wait_for(wait_event(event, 5.0), 5.0) is True


async def test_a_cancellation_is_never_dropped_even_as_the_event_fires():
    for _ in range(50):
        event = asyncio.Event()
        waiter = asyncio.create_task(wait_event(event, 5.0))
        await asyncio.sleep(0)
        event.set()
        waiter.cancel()  # at the moment the wait completes: wait_for could swallow this
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 5.0)
