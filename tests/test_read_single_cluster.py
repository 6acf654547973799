"""read_mode = "single" on a real cluster: reads from one caught-up storage copy are never
stale across compute nodes, also while copies of the reading AZ are paused or killed, and a
point read asks exactly one copy when nothing is slow.

Story: a cluster whose cluster file says read_mode = "single". A writer on compute-az1 commits
v = i; as soon as the commit is acknowledged, a reader on compute-az3 reads the row (a point
read) and the table's sum (a scan) and must see i: the acknowledgement came after commit-wait,
so the reader's start_ts is above the commit, and the one storage copy that answers has applied
every commit up to it (compute_node/cluster/read_core.py). Phases: all copies up; storage-az3-a (the
reader's first choice) SIGSTOPped; storage-az3-b SIGKILLed as well (both own-AZ copies gone);
both back (the resumed/restarted copies are behind at first and must refuse or wait, not
answer stale). Then the compute node's Status counters show one storage RPC per single-mode
read, and three per read for a session that SETs quorumdb.read_mode = 'quorum'.
"""
from __future__ import annotations

import time

import pytest

from quorumdb import client
from tools.launcher import node_status

pytestmark = pytest.mark.cluster

PHASE_READS = 25
PHASE_TIMEOUT_S = 60.0


def read_counters(node) -> dict[str, int]:
    status = node_status(node)
    assert status is not None, f"{node.name} did not answer Status"
    fields = dict(item.split("=", 1) for item in status.detail.split())
    return {key: int(value) for key, value in fields.items() if value.isdigit()} | {"read_mode": fields["read_mode"]}


def write_then_read(writer, reader, value: int, phase: str) -> None:
    writer.execute(f"UPDATE fresh SET v = {value} WHERE k = 1")
    (seen,), = reader.execute("SELECT v FROM fresh WHERE k = 1").rows
    assert seen == value, f"{phase}: stale point read on compute-az3: v = {seen}, acknowledged v = {value}"
    (total,), = reader.execute("SELECT sum(v) FROM fresh").rows
    assert int(total) == value + 100, f"{phase}: stale scan on compute-az3: sum {total}, expected {value + 100}"


def run_phase(writer, reader, first_value: int, phase: str) -> int:
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    for value in range(first_value, first_value + PHASE_READS):
        assert time.monotonic() < deadline, f"{phase}: {PHASE_READS} write/read rounds took over {PHASE_TIMEOUT_S} s"
        write_then_read(writer, reader, value, phase)
    return first_value + PHASE_READS


def test_single_copy_reads_are_never_stale_and_ask_one_copy(cluster_factory):
    cluster = cluster_factory(read_mode="single")
    writer_node, reader_node = cluster.config.node("compute-az1"), cluster.config.node("compute-az3")
    assert read_counters(reader_node)["read_mode"] == "single"
    with client.connect(writer_node.host, writer_node.port, timeout_s=20) as writer, \
            client.connect(reader_node.host, reader_node.port, timeout_s=20) as reader:
        writer.execute("CREATE TABLE fresh (k INT PRIMARY KEY, v BIGINT)")
        writer.execute("INSERT INTO fresh VALUES (1, 0), (2, 100)")
        value = run_phase(writer, reader, 1, "all copies up")

        # One storage RPC per single-mode read when nothing is slow (hedges are the only extra).
        before = read_counters(reader_node)
        for _ in range(40):
            assert reader.execute("SELECT v FROM fresh WHERE k = 2").rows == [(100,)]
        after = read_counters(reader_node)
        reads = after["reads_single"] - before["reads_single"]
        asked = after["copies_asked"] - before["copies_asked"]
        hedges = after["hedges"] - before["hedges"]
        print(f"\nsingle mode: {reads} reads asked {asked} copies ({hedges} hedges)")
        assert reads >= 40
        assert after["reads_quorum"] == before["reads_quorum"]
        assert asked - hedges == reads, "a single-mode read asked more than one copy without a hedge"
        assert hedges <= reads // 4, "most single-mode reads should need no hedge on a healthy cluster"

        # The same session switched to quorum reads asks 3 copies per read.
        reader.execute("SET quorumdb.read_mode = 'quorum'")
        assert reader.execute("SHOW quorumdb.read_mode").rows == [("quorum",)]
        before = read_counters(reader_node)
        for _ in range(10):
            assert reader.execute("SELECT v FROM fresh WHERE k = 2").rows == [(100,)]
        after = read_counters(reader_node)
        delta = {key: after[key] - before[key] for key in ("reads_quorum", "reads_single", "copies_asked", "hedges")}
        print(f"quorum mode: {delta}")
        assert delta["reads_quorum"] >= 10  # a statement reads its row and checks the schema
        assert delta["copies_asked"] - delta["hedges"] == 3 * delta["reads_quorum"] + delta["reads_single"]
        reader.execute("SET quorumdb.read_mode = DEFAULT")

        cluster.pause("storage-az3-a")
        try:
            value = run_phase(writer, reader, value, "storage-az3-a paused")
            cluster.kill("storage-az3-b")
            value = run_phase(writer, reader, value, "storage-az3-a paused, storage-az3-b killed")
        finally:
            cluster.resume("storage-az3-a")
        cluster.restart("storage-az3-b")
        # The two az3 copies come back behind; reads go on (and past their suspicion, 5 s).
        ends = time.monotonic() + 8.0
        while time.monotonic() < ends:
            value = run_phase(writer, reader, value, "az3 copies back, catching up")
        counters = read_counters(reader_node)
        print(f"reader counters at the end: {counters}")
        assert counters["reads_single"] > 0
    cluster.wait_ready(["storage-az3-a", "storage-az3-b"], timeout_s=60, healthy=True)
