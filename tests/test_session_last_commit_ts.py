"""SHOW quorumdb.last_commit_ts: the commit_ts of the session's last commit, so a client can record
when each acknowledged commit happened (what a point-in-time restore to T must hold)."""
from __future__ import annotations

from compute_node.service import CommitTracker
from compute_node.sessions.session import Session
from tests.sql_memory_backend import MemoryBackend


async def show(session: Session) -> int:
    [result] = await session.execute("SHOW quorumdb.last_commit_ts")
    return int(result.rows[0][0])


async def test_last_commit_ts_follows_each_commit():
    session = Session(CommitTracker(MemoryBackend()), "s1")
    assert await show(session) == 0
    await session.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await session.execute("INSERT INTO t VALUES (1)")
    first = await show(session)
    assert first > 0
    await session.execute("BEGIN")
    await session.execute("INSERT INTO t VALUES (2)")
    assert await show(session) == first  # not committed yet
    await session.execute("COMMIT")
    second = await show(session)
    assert second > first
    await session.execute("SELECT * FROM t")  # reads commit nothing
    assert await show(session) == second
