"""Metrics and EXPLAIN ANALYZE on a real cluster.

One cluster for the module: EXPLAIN ANALYZE's phases add up to its measured total within the
stated tolerance (compute_node/cluster/trace.py); every node's /metrics parses with Prometheus' text
parser and its counters move as a workload runs (commits, 40001 aborts, journal appends, storage
ingestion); a killed leader's role change shows in the standbys' metrics. The last test kills the
leader, so it runs last.
"""
from __future__ import annotations

import re
import time
import urllib.request

import pytest

from compute_node.cluster import trace as trace_mod
from quorumdb import client
from tools import observe
from tools.launcher import Cluster
from tests.util import make_config

pytestmark = pytest.mark.cluster

READY_TIMEOUT_S = 120.0
FAILOVER_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("observability"))
    with Cluster(config) as running:
        running.start()
        running.wait_ready(timeout_s=READY_TIMEOUT_S)
        running.wait_ready(names=[node.name for node in config.computes], healthy=True, timeout_s=READY_TIMEOUT_S)
        with client.connect("127.0.0.1", config.computes[0].port) as connection:
            connection.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT)")
            connection.execute("INSERT INTO kv VALUES ('hot', 0)")
        yield running


def scrape(config, name: str) -> observe.Metrics:
    url = f"http://127.0.0.1:{config.metrics_port(name)}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        return observe.parse_metrics(answer.read().decode())


def scrape_all(config) -> dict[str, observe.Metrics]:
    return {node.name: scrape(config, node.name) for node in config.nodes}


# --- EXPLAIN ANALYZE ---------------------------------------------------------------------------------
TOTAL = re.compile(r"^Total: ([0-9.]+) ms \(the phases above add up to ([0-9.]+) ms\)$")
PHASE = re.compile(r"^  (parse|plan|execute|commit): ([0-9.]+) ms")
MS = re.compile(r": ([0-9.]+) ms")


def explain(connection, sql: str) -> list[str]:
    result = connection.execute(sql)
    assert [column[0] for column in result.columns] == ["QUERY PLAN"], result.columns
    return [row[0] for row in result.rows]


LOADED_MACHINE_SLACK_MS = 5.0


def check_adds_up(lines: list[str]) -> tuple[float, dict[str, float]]:
    """The trace's phases add up to its total within the stated tolerance; (total, phases)."""
    total_ms, accounted_ms = map(float, TOTAL.match(lines[-1]).groups())
    phases = {m.group(1): float(m.group(2)) for m in map(PHASE.match, lines) if m}
    assert sum(phases.values()) == pytest.approx(accounted_ms, abs=0.01), lines
    # The trace's own bound (10 % or 2 ms) holds on a quiet machine; the suite shares 2 cores with
    # 15 node processes, where one scheduling delay between two phases can take a few ms more.
    tolerance_ms = max(trace_mod.EXPLAIN_TOLERANCE * total_ms, trace_mod.EXPLAIN_TOLERANCE_MIN_S * 1000,
                       LOADED_MACHINE_SLACK_MS)
    assert abs(total_ms - accounted_ms) <= tolerance_ms, "\n".join(lines)
    return total_ms, phases


def test_explain_analyze_phases_add_up_to_the_statement_time(cluster):
    config = cluster.config
    with client.connect("127.0.0.1", config.computes[0].port) as connection:
        started = time.perf_counter()
        insert = explain(connection, "EXPLAIN ANALYZE INSERT INTO kv VALUES ('explained', 1)")
        wall_ms = (time.perf_counter() - started) * 1000
        print("\n".join(insert))
        total_ms, phases = check_adds_up(insert)
        assert set(phases) == {"parse", "plan", "execute", "commit"}
        assert total_ms <= wall_ms  # measured inside the client's own measurement of the call
        text = "\n".join(insert)
        assert "storage read 1 (get" in text and "answered by: storage-" in text
        for phase in ("commit queue", "adjudication (conflict check", "journal append + fsync on 2 of 3",
                      "commit-wait", "commit stream to adjudicator-"):
            assert phase in text, f"no {phase!r} in\n{text}"
        adjudicator_ms = float(MS.search(next(l for l in insert if l.startswith("    adjudicator "))).group(1))
        inner = [float(MS.search(l).group(1)) for l in insert if l.startswith("      ") and MS.search(l)
                 and not l.startswith("      storage")]
        assert sum(inner) == pytest.approx(adjudicator_ms, abs=0.01)  # the adjudicator's parts, "other" included
        assert adjudicator_ms <= phases["commit"]

        assert connection.execute("SELECT v FROM kv WHERE k = 'explained'").scalar() == 1  # it really inserted

        select = explain(connection, "EXPLAIN ANALYZE SELECT count(*) FROM kv")
        check_adds_up(select)
        assert any("read-only" in line for line in select) and any("scan page" in line for line in select)

        connection.execute("BEGIN")
        update = explain(connection, "EXPLAIN ANALYZE UPDATE kv SET v = v + 1 WHERE k = 'explained'")
        check_adds_up(update)
        assert any("transaction block is open" in line for line in update)
        commit = explain(connection, "EXPLAIN ANALYZE COMMIT")
        print("\n".join(commit))
        _, phases = check_adds_up(commit)
        assert commit[0] == "Commit" and set(phases) == {"parse", "commit"}
        assert any("journal append + fsync on 2 of 3" in line for line in commit)
        assert connection.execute("SELECT v FROM kv WHERE k = 'explained'").scalar() == 2


# --- metrics -------------------------------------------------------------------------------------------
def conflict_once(config) -> bool:
    """Two transactions write the same row; the second to commit gets 40001. True if it did."""
    with client.connect("127.0.0.1", config.computes[0].port) as first, \
            client.connect("127.0.0.1", config.computes[1].port) as second:
        first.execute("BEGIN")
        second.execute("BEGIN")
        first.execute("UPDATE kv SET v = v + 1 WHERE k = 'hot'")
        second.execute("UPDATE kv SET v = v + 1 WHERE k = 'hot'")
        first.execute("COMMIT")
        try:
            second.execute("COMMIT")
        except client.DatabaseError as error:
            assert error.sqlstate == "40001", error
            return True
    return False


def test_every_nodes_metrics_parse_and_move_with_a_workload(cluster):
    config = cluster.config
    before = scrape_all(config)
    for name, samples in before.items():
        assert observe.value(samples, "quorumdb_node_info", node=name, service=config.node(name).service,
                             az=config.node(name).az) == 1.0
        assert observe.value(samples, "process_resident_memory_bytes") > 0
    with client.connect("127.0.0.1", config.computes[0].port) as connection:
        for i in range(20):
            connection.execute(f"INSERT INTO kv VALUES ('w{i}', {i})")
    conflicts = sum(conflict_once(config) for _ in range(3))
    assert conflicts == 3
    after = scrape_all(config)

    def grew(name: str, metric: str, **labels) -> float:
        return observe.total(after[name], metric, **labels) - observe.total(before[name], metric, **labels)

    committed = sum(grew(n.name, "quorumdb_compute_commits_total", sqlstate="00000") for n in config.computes)
    aborted = sum(grew(n.name, "quorumdb_compute_commits_total", sqlstate="40001", reason="write_conflict")
                  for n in config.computes)
    assert committed >= 23 and aborted == 3
    leader = "adjudicator-az1"
    assert observe.value(after[leader], "quorumdb_adjudicator_is_leader") == 1.0
    assert grew(leader, "quorumdb_adjudicator_commits_total", outcome="committed") >= 23
    assert grew(leader, "quorumdb_adjudicator_commits_total", outcome="conflict") == 3
    assert grew(leader, "quorumdb_adjudicator_journal_appends_total") >= 1
    assert grew(leader, "quorumdb_adjudicator_group_commit_entries_count") >= 1
    for journal in config.journals:
        assert grew(journal.name, "quorumdb_journal_appended_entries_total") >= 23
        assert grew(journal.name, "quorumdb_grpc_server_handling_seconds_count", grpc_method="AppendStream") >= 1
        assert grew(journal.name, "quorumdb_journal_disk_write_seconds_count") >= 1
    for storage in config.storages:
        assert grew(storage.name, "quorumdb_storage_ingested_entries_total") >= 23
        assert observe.value(after[storage.name], "quorumdb_storage_scl") >= observe.value(
            before[storage.name], "quorumdb_storage_scl") + 23
    reads = sum(grew(n.name, "quorumdb_compute_reads_total") for n in config.computes)
    assert reads >= 20
    assert sum(grew(n.name, "quorumdb_compute_commit_seconds_count") for n in config.computes) >= 26


def test_a_killed_leaders_role_change_shows_in_the_metrics(cluster):
    config = cluster.config
    epochs = {n.name: observe.value(scrape(config, n.name), "quorumdb_adjudicator_epoch") for n in config.adjudicators}
    leader = "adjudicator-az1"
    assert observe.value(scrape(config, leader), "quorumdb_adjudicator_is_leader") == 1.0
    cluster.kill(leader)
    deadline = time.monotonic() + FAILOVER_TIMEOUT_S
    new_leader = None
    while new_leader is None and time.monotonic() < deadline:
        for node in config.adjudicators:
            if node.name == leader:
                continue
            samples = scrape(config, node.name)
            if observe.value(samples, "quorumdb_adjudicator_is_leader") == 1.0:
                new_leader = (node.name, observe.value(samples, "quorumdb_adjudicator_epoch"))
        time.sleep(0.2)
    assert new_leader is not None, f"no standby's metrics said it leads within {FAILOVER_TIMEOUT_S} s"
    name, epoch = new_leader
    assert epoch > epochs[leader]
    with pytest.raises(OSError):
        scrape(config, leader)  # the killed node's endpoint is gone with it
    # The journal learns the new leader from its appends. On a loaded machine a second standby may
    # take over from the first (a spurious failover is allowed; the metrics must follow it): what
    # the journal names must be the standby whose own metrics say it leads now.
    def current_leader() -> str | None:
        for node in config.adjudicators:
            if node.name != leader and observe.value(scrape(config, node.name), "quorumdb_adjudicator_is_leader") == 1.0:
                return node.name
        return None

    named = current = None
    while time.monotonic() < deadline:
        named = observe.labelled(scrape(config, "journal-az2"), "quorumdb_journal_leader_info", "leader")
        current = current_leader()
        if named is not None and named == current:
            break
        time.sleep(0.2)
    assert named == current and named in {n.name for n in config.adjudicators} - {leader}, (named, current, name)
