"""SET / SHOW / RESET quorumdb.read_mode: a session chooses how its reads reach storage; the
choice travels through its backend view (service.CommitTracker) to every read, scans included."""
from __future__ import annotations

import pytest

from compute_node.service import CommitTracker
from compute_node.sessions.session import Session
from quorumdb import errors
from tests.sql_memory_backend import MemoryBackend


class ModeRecordingBackend(MemoryBackend):
    """The in-memory backend, remembering the read_mode each read was asked with."""

    read_mode = "quorum"  # the cluster's, as QuorumBackend.read_mode

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[str | None] = []

    async def get_many(self, keys, ts, read_mode=None):
        self.modes.append(read_mode)
        return await super().get_many(keys, ts)

    async def scan(self, start, end, ts, limit, read_mode=None):
        self.modes.append(read_mode)
        return await super().scan(start, end, ts, limit)


@pytest.fixture
def backend():
    return ModeRecordingBackend()


@pytest.fixture
def session(backend):
    return Session(CommitTracker(backend), "s1")


async def one(session: Session, sql: str):
    [result] = await session.execute(sql)
    return result


async def test_set_show_reset_read_mode(session, backend):
    assert (await one(session, "SHOW quorumdb.read_mode")).rows == [("quorum",)]
    await one(session, "CREATE TABLE kv (k INT PRIMARY KEY, v INT)")
    await one(session, "INSERT INTO kv VALUES (1, 10), (2, 20)")
    backend.modes.clear()
    assert (await one(session, "SELECT v FROM kv WHERE k = 1")).rows == [(10,)]
    assert set(backend.modes) == {None}, "without SET the cluster's mode applies"

    result = await one(session, "SET quorumdb.read_mode = 'single'")
    assert result.error is None and result.command_tag == "SET"
    assert (await one(session, "show QUORUMDB.READ_MODE;")).rows == [("single",)]
    backend.modes.clear()
    assert (await one(session, "SELECT v FROM kv WHERE k = 2")).rows == [(20,)]
    assert (await one(session, "SELECT count(*) FROM kv")).rows == [(2,)]
    assert backend.modes and set(backend.modes) == {"single"}, backend.modes

    assert (await one(session, "RESET quorumdb.read_mode")).command_tag == "RESET"
    backend.modes.clear()
    assert (await one(session, "SELECT v FROM kv WHERE k = 2")).rows == [(20,)]
    assert set(backend.modes) == {None}
    await one(session, "SET quorumdb.read_mode TO single")
    await one(session, "SET quorumdb.read_mode = DEFAULT")
    assert (await one(session, "SHOW quorumdb.read_mode")).rows == [("quorum",)]


async def test_bad_read_mode_is_22023_and_changes_nothing(session):
    await one(session, "SET quorumdb.read_mode = 'single'")
    result = await one(session, "SET quorumdb.read_mode = 'fastest'")
    assert result.error is not None and result.error.sqlstate == "22023"
    assert "quorum, single" in result.error.hint
    assert (await one(session, "SHOW quorumdb.read_mode")).rows == [("single",)]


async def test_read_mode_in_a_failed_block_is_25p02(session):
    await one(session, "BEGIN")
    assert (await one(session, "SELECT * FROM nowhere")).error is not None
    result = await one(session, "SET quorumdb.read_mode = 'single'")
    assert result.error.sqlstate == errors.IN_FAILED_SQL_TRANSACTION
    assert (await one(session, "ROLLBACK")).command_tag == "ROLLBACK"


async def test_backend_without_read_modes_refuses_with_0a000():
    session = Session(MemoryBackend(), "s2")
    result = await one(session, "SET quorumdb.read_mode = 'single'")
    assert result.error.sqlstate == errors.FEATURE_NOT_SUPPORTED


async def test_postgresql_wire_set_reaches_the_backend_view(backend):
    from compute_node.pgwire.bridge import PgSession

    tracker = CommitTracker(backend)
    pg = PgSession(Session(tracker, "pg1"), tracker, "admin", "postgres", "", 1, "compute-az1", lambda name: None)
    assert (await pg.run("SET quorumdb.read_mode = 'single'")).error is None
    assert tracker.session_read_mode == "single"
    assert (await pg.run("SHOW quorumdb.read_mode")).rows == [("single",)]
    bad = await pg.run("SET quorumdb.read_mode TO fastest")
    assert bad.error is not None and bad.error.sqlstate == "22023"
    assert tracker.session_read_mode == "single"
    assert (await pg.run("RESET quorumdb.read_mode")).error is None
    assert tracker.session_read_mode is None
    await pg.run("SET quorumdb.read_mode = single")
    assert (await pg.run("RESET ALL")).error is None
    assert tracker.session_read_mode is None
