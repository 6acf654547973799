"""journal/service.py `_disk`: a cancelled request still finishes its disk write under the lock.

The core changes in memory before the write; if a cancelled RPC released the lock while its
write still ran in a thread, the next request's write would race it (a journal replica crashed
with 'appended entries must be consecutive' after a leader failover in CI).
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from journal.service import JournalService


async def test_a_cancelled_disk_write_finishes_before_the_lock_is_released():
    service = JournalService.__new__(JournalService)  # only _disk and the lock are exercised
    service._lock = asyncio.Lock()
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow_write(name: str) -> None:
        started.set()
        assert release.wait(5), "the test did not release the write"
        finished.append(name)

    async def request() -> None:
        async with service._lock:
            await service._disk(slow_write, "first")

    first = asyncio.create_task(request())
    assert await asyncio.to_thread(started.wait, 5)
    first.cancel()  # the RPC goes away mid-write
    await asyncio.sleep(0.05)
    assert service._lock.locked(), "the lock was released while the write still ran"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, 5)
    assert finished == ["first"]
    assert not service._lock.locked()
