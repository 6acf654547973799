"""quorumdb/aio.py: the bounded, cancellation-safe event wait every service loop uses."""
from __future__ import annotations

import ast
import asyncio
import pathlib

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


PRODUCT = ("journal", "adjudicator", "storage_node", "compute_node", "quorumdb", "tools")


def _wait_for_calls(source: str) -> list[int]:
    """Line numbers of `asyncio.wait_for(...)` calls and of `wait_for` imported from asyncio."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "wait_for"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "asyncio"):
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "asyncio" and any(a.name == "wait_for" for a in node.names):
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_wait_for_however_it_is_written():
    assert _wait_for_calls("import asyncio\nasync def f(x):\n    await asyncio.wait_for(x, 1)\n") == [3]
    assert _wait_for_calls("from asyncio import wait_for, sleep\n") == [1]
    # a Condition's wait_for(predicate) is another method
    assert _wait_for_calls("async def f(c):\n    await c.wait_for(lambda: True)\n") == []


def test_no_product_code_uses_asyncio_wait_for():
    """In Python 3.11 wait_for may return the inner result and drop a cancellation that arrives as
    the inner await completes; a loop around it then never ends and whoever awaits the cancelled
    task hangs (a node that never stops; a test's fake journal follower hung a whole CI run this
    way). The product bounds a wait with `asyncio.timeout` or `aio.wait_event` instead."""
    root = pathlib.Path(__file__).resolve().parent.parent
    found = [f"{path.relative_to(root)}:{line}"
             for package in PRODUCT for path in sorted((root / package).rglob("*.py"))
             for line in _wait_for_calls(path.read_text(encoding="utf-8"))]
    assert found == [], f"asyncio.wait_for in the product (use asyncio.timeout): {found}"
