"""Scan pushdown through real storage processes: a selective SELECT over a few thousand
rows returns the same rows with and without pushdown, and the copies send far fewer
bytes (counted in the compute side's StorageReader)."""
from __future__ import annotations

import pytest

from compute_node.cluster.backend import QuorumBackend
from compute_node.service import CommitTracker
from compute_node.sessions.session import Session
from quorumdb import rpc
from tests.util import node_credentials

pytestmark = pytest.mark.cluster


async def _execute(session: Session, sql: str):
    results = await session.execute(sql)
    for result in results:
        assert result.error is None, (sql, result.error)
    return results[-1].rows


async def test_selective_select_moves_fewer_bytes(shared_cluster):
    channels = rpc.Channels(credentials=node_credentials(shared_cluster.config, shared_cluster.config.computes[0].name))
    try:
        backend = QuorumBackend(shared_cluster.config, shared_cluster.config.computes[0], channels)
        # Through the compute service's per-session wrapper, as a real session reads.
        session = Session(CommitTracker(backend), "pushdown-cluster")
        await _execute(session, "CREATE TABLE pd (id INT PRIMARY KEY, grp BIGINT, name TEXT, pad TEXT)")
        for first in range(0, 4000, 1000):
            await _execute(session, "INSERT INTO pd VALUES " + ", ".join(
                f"({i}, {i % 250}, 'name-{i}', '{'x' * 80}')" for i in range(first, first + 1000)))
        queries = ["SELECT id, name FROM pd WHERE grp = 17 ORDER BY id",
                   "SELECT count(*) FROM pd WHERE grp >= 240 AND name <> 'name-3999'",
                   "SELECT id FROM pd WHERE id >= 1000 AND (grp = 3 OR grp IS NULL) ORDER BY id"]
        for sql in queries:
            reader = backend.storage
            before = reader.scan_bytes_received, reader.scan_rows_received
            pushed = await _execute(session, sql)
            pushed_cost = reader.scan_bytes_received - before[0], reader.scan_rows_received - before[1]
            backend.scan_filtered = None  # this instance scans without pushdown
            try:
                before = reader.scan_bytes_received, reader.scan_rows_received
                plain = await _execute(session, sql)
                plain_cost = reader.scan_bytes_received - before[0], reader.scan_rows_received - before[1]
            finally:
                del backend.scan_filtered
            print(f"{sql}: bytes {plain_cost[0]} -> {pushed_cost[0]}, rows {plain_cost[1]} -> {pushed_cost[1]}")
            assert pushed == plain
            assert pushed_cost[0] * 10 < plain_cost[0]
        assert [r[0] for r in await _execute(session, queries[0])][:3] == [17, 267, 517]
        assert (await _execute(session, queries[1])) == [(160 - 1,)]
        plan = "\n".join(r[0] for r in await _execute(session, "EXPLAIN " + queries[0]))
        assert "Storage Filter: (grp = 17)" in plan and "Storage Columns: id, grp, name" in plan
    finally:
        await channels.close()
