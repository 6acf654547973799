"""Closed timestamps on demand on a real cluster (adjudicator/heartbeat.py).

An idle cluster's leader heartbeats every IDLE_HEARTBEAT_MS; once a compute node serves
transactions it says so on its commit stream and the leader heartbeats every heartbeat_ms.
Counted from the leader's Status detail (`heartbeats=`, `read_demand=`), never timed as a
performance figure: the assertions compare counts with each other, with wide margins.
"""
from __future__ import annotations

import time

import pytest

from quorumdb import client
from tools.launcher import node_status

pytestmark = pytest.mark.cluster

WINDOW_S = 2.0


def leader_detail(cluster) -> dict[str, str]:
    for node in cluster.config.adjudicators:
        status = node_status(node)
        if status is not None and status.role == "leader":
            return dict(item.split("=", 1) for item in status.detail.split())
    raise AssertionError("no adjudicator leads")


def heartbeats_during(cluster, seconds: float, work=None) -> int:
    before = int(leader_detail(cluster)["heartbeats"])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if work is not None:
            work()
        else:
            time.sleep(0.05)
    return int(leader_detail(cluster)["heartbeats"]) - before


def test_leader_heartbeats_fast_only_while_reads_are_active(cluster_factory):
    cluster = cluster_factory()
    compute = cluster.config.node("compute-az2")
    with client.connect(compute.host, compute.port, timeout_s=20) as conn:
        conn.execute("CREATE TABLE hb (k INT PRIMARY KEY, v INT)")
        conn.execute("INSERT INTO hb VALUES (1, 1)")
        time.sleep(1.0)  # the read demand lease (0.25 s) has lapsed
        assert leader_detail(cluster)["read_demand"] == "no"
        idle = heartbeats_during(cluster, WINDOW_S)

        def read():
            (value,), = conn.execute("SELECT v FROM hb WHERE k = 1").rows
            assert value == 1

        busy = heartbeats_during(cluster, WINDOW_S, read)
        assert leader_detail(cluster)["read_demand"] == "yes"
    # Idle: one heartbeat per IDLE_HEARTBEAT_MS (about 20 in 2 s); reading: one per heartbeat_ms
    # when the machine keeps up (about 200). Both bounds leave room for a starved machine.
    assert 2 <= idle <= 60, idle
    assert busy > 2 * idle, (busy, idle)
