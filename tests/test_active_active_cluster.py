"""An active-active cluster against real processes in three regions (docs/ACTIVE_ACTIVE.md).

One `quorumdb up --regions a1,a2 --witness w1 --wan-ms 10` (15 + 15 + 3 node processes, one
supervisor per region) serves every test of this module, in order: the status, synchronous
commits read at once in the other peer, an isolated peer that refuses while the other serves,
a whole region SIGKILLed right after an acknowledgement, then the Jepsen-style bank and
list-append runs with clients in both peers under whole-region faults. Marked `regions`: a
step of its own in .ci/run (`python -m pytest -m regions`), not in the default suite.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import time

import pytest

import quorumdb
from quorumdb import config as config_mod
from quorumdb import regions
from quorumdb.client import DatabaseError
from tools.jepsen.regions import run_regions
from tests.test_cli import UpProcess, run_cli
from tests.test_global_cluster import _port_free, up_regions
from tests.util import free_base_port

pytestmark = [pytest.mark.cluster, pytest.mark.regions]

UP_READY_TIMEOUT_S = 300.0
WAN_MS = 10
RTT_S = 2 * WAN_MS / 1000
VOTED_IN_TIMEOUT_S = 120.0
# Commits must resume on the surviving peer within this (the leader's failover across regions
# plus a client's retry); the measured figures are printed and in docs/ACTIVE_ACTIVE.md.
RESUME_BOUND_S = 30.0


def _free_triple_block() -> int:
    for _ in range(80):
        base = free_base_port()
        if all(_port_free(base + config_mod.PORT_BLOCK + i) for i in range(2 * config_mod.PORT_BLOCK)):
            return base
    raise RuntimeError("no three free port blocks")


class ActiveActive:
    def __init__(self, data_dir, up: UpProcess) -> None:
        self.data_dir = data_dir
        self.up = up
        self.cfg = regions.load(data_dir)

    def cli(self, *args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess:
        return run_cli(*args, "--data-dir", str(self.data_dir), timeout_s=timeout_s)

    def chaos(self, *args: str) -> None:
        result = self.cli("chaos", *args)
        assert result.returncode == 0, result.stderr + result.stdout

    def status(self) -> dict:
        result = self.cli("status", "--json", timeout_s=60.0)
        return json.loads(result.stdout)

    def connect(self, region: str, i: int = 0):
        node = self.cfg.region(region).cluster().computes[i]
        return quorumdb.connect(node.host, node.port, data_dir=self.data_dir)

    def wait_voted_in(self, names: list[str], timeout_s: float = VOTED_IN_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout_s
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.status()
            votes = {r["name"]: r["voted_in"] for r in status["regions"]}
            if status.get("leader") and all(votes.get(name) for name in names):
                return status
            time.sleep(0.5)
        raise AssertionError(f"regions {names} not all voted in within {timeout_s} s: {status}")

    def leader_region(self) -> str:
        return self.wait_voted_in([])["leader_region"]


@pytest.fixture(scope="module")
def aa(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("active")
    base = _free_triple_block()
    with up_regions(data_dir, base, "--regions", "a1,a2", "--witness", "w1", "--wan-ms", str(WAN_MS),
                    ready_timeout_s=UP_READY_TIMEOUT_S) as up:
        db = ActiveActive(data_dir, up)
        db.wait_voted_in(["a1", "a2", "w1"])
        yield db


def _rows(result) -> list[list[str]]:
    return [[str(value) for value in row] for row in result.rows]


def _until_ok(fn, timeout_s: float):
    """fn() until it stops raising DatabaseError; returns (result, seconds waited)."""
    started = time.monotonic()
    while True:
        try:
            return fn(), time.monotonic() - started
        except DatabaseError:
            if time.monotonic() - started > timeout_s:
                raise
            time.sleep(0.1)


def test_status_names_the_regions_the_witness_the_votes_and_the_leader(aa):
    status = aa.status()
    assert [(r["name"], r["kind"]) for r in status["regions"]] == [("a1", "peer"), ("a2", "peer"), ("w1", "witness")]
    assert all(r["voted_in"] for r in status["regions"])
    for region in status["regions"][:2]:
        assert len(region["endpoints"]) == 3 and len(region["pg_endpoints"]) == 3
    assert status["regions"][2]["endpoints"] == [] and status["regions"][2]["pg_endpoints"] == []
    assert status["leader_region"] in ("a1", "a2")
    assert status["leader"].startswith(status["leader_region"] + "/adjudicator-")


def test_commits_in_either_peer_are_synchronous_and_read_at_once_in_the_other(aa):
    one, two = aa.connect("a1"), aa.connect("a2")
    one.execute("CREATE TABLE kv (k INT PRIMARY KEY, v INT NOT NULL)")
    leader = aa.leader_region()
    other = "a2" if leader == "a1" else "a1"
    latencies: dict[str, list[float]] = {"a1": [], "a2": []}
    for i in range(30):
        writer, reader, region = (one, two, "a1") if i % 2 == 0 else (two, one, "a2")
        started = time.monotonic()
        writer.execute(f"INSERT INTO kv VALUES ({i}, {i * 7})")
        elapsed = time.monotonic() - started
        latencies[region].append(elapsed)
        # Synchronous: the commit was durable in a second region before the answer, so it
        # took at least one round trip between regions; one from the peer without the leader
        # also crossed to the leader and its answer crossed back: at least two. These are lower
        # bounds the simulated WAN enforces (every message waits at least its delay), so a busy
        # machine cannot break them; how much more the extra hop costs is a benchmark's figure
        # (docs/ACTIVE_ACTIVE.md), not a test's: under load the medians of 15 commits each
        # differ by more than a round trip either way.
        hops = 2 if region == other else 1
        assert elapsed >= hops * RTT_S, (
            f"commit {i} in {region} (leader in {leader}) acknowledged after {elapsed * 1000:.1f} ms, "
            f"under {hops} WAN round trip(s) of {RTT_S * 1000:.0f} ms")
        # Never stale: a transaction that starts after the acknowledgement, in the other peer,
        # sees the row (its read waits for the local copies to cover its start).
        assert _rows(reader.execute(f"SELECT v FROM kv WHERE k = {i}")) == [[str(i * 7)]]
    print(f"commit latency (WAN {WAN_MS} ms one way, leader in {leader}): "
          + ", ".join(f"{r} median {statistics.median(v) * 1000:.1f} ms" for r, v in latencies.items()))
    # The bounds above assumed the leader stood still: on a healthy cluster it must.
    assert aa.leader_region() == leader, "the leader moved to another region during 30 commits on a healthy cluster"
    one.close()
    two.close()


def test_an_isolated_peer_refuses_while_the_other_keeps_serving(aa):
    leader = aa.leader_region()
    isolated = leader  # the hard case: the leader's own region is cut off
    survivor = "a2" if isolated == "a1" else "a1"
    setup = aa.connect(survivor)
    _until_ok(lambda: setup.execute("CREATE TABLE iso (k INT PRIMARY KEY, v INT NOT NULL)"), 30)
    _until_ok(lambda: setup.execute("INSERT INTO iso VALUES (1, 1)"), 30)
    setup.close()
    aa.chaos("region-partition", isolated)
    try:
        survivor_conn = aa.connect(survivor)
        _, resumed_s = _until_ok(lambda: survivor_conn.execute("UPDATE iso SET v = 2 WHERE k = 1"), RESUME_BOUND_S)
        print(f"commits resumed in {survivor} {resumed_s:.2f} s after {isolated} (the leader's region) was cut off")
        assert _rows(survivor_conn.execute("SELECT v FROM iso WHERE k = 1")) == [["2"]]
        survivor_conn.close()
        # The isolated region cannot know v = 2: it must answer with an error, never v = 1.
        cut_off = aa.connect(isolated)
        for sql in ("SELECT v FROM iso WHERE k = 1", "UPDATE iso SET v = 3 WHERE k = 1"):
            with pytest.raises(DatabaseError) as refused:
                cut_off.execute(sql)
            assert refused.value.sqlstate in ("57P03", "40003", "57014"), refused.value
        cut_off.close()
        status = aa.status()
        votes = {r["name"]: r["voted_in"] for r in status["regions"]}
        assert votes[isolated] is False and votes[survivor] is True, status
        assert status["leader_region"] == survivor
    finally:
        aa.chaos("region-heal")
    aa.wait_voted_in(["a1", "a2", "w1"])
    back = aa.connect(isolated)
    rows, _ = _until_ok(lambda: _rows(back.execute("SELECT v FROM iso WHERE k = 1")), 60)
    assert rows == [["2"]]
    back.close()


@pytest.mark.parametrize("where", ["leader", "other"])
def test_a_region_killed_right_after_an_ack_leaves_the_commit_in_the_other(aa, where):
    leader = aa.leader_region()
    victim = leader if where == "leader" else ("a2" if leader == "a1" else "a1")
    survivor = "a2" if victim == "a1" else "a1"
    conn = aa.connect(victim)
    _until_ok(lambda: conn.execute(f"CREATE TABLE IF NOT EXISTS acked_{where} (k INT PRIMARY KEY)"), 30)
    conn.execute(f"INSERT INTO acked_{where} VALUES (42)")
    aa.chaos("region-kill", victim)  # at once after the acknowledgement
    try:
        other = aa.connect(survivor)
        rows, waited = _until_ok(lambda: _rows(other.execute(f"SELECT k FROM acked_{where}")), RESUME_BOUND_S)
        assert rows == [["42"]], rows
        print(f"{victim} ({where}) killed right after the ack: {survivor} served the commit after {waited:.2f} s")
        other.close()
    finally:
        aa.chaos("region-restart", victim)
    aa.wait_voted_in(["a1", "a2", "w1"])


@pytest.mark.parametrize("workload", ["bank", "append"])
def test_jepsen_with_clients_in_both_peers_under_region_faults(aa, workload):
    result = run_regions(aa.data_dir, workload, seed=7, duration_s=30, clients=6,
                         ready=lambda: aa.wait_voted_in(["a1", "a2", "w1"]))  # run_regions prints the summary
    assert result.valid, f"{result.verdict.text()}\nnotes: {result.notes}\nhistory: {result.history_path}"
    kinds = {fault["kind"] for fault in result.faults}
    assert kinds == {"region-kill", "region-partition", "witness-kill", "witness-partition", "link-cut"}, kinds
    for region, counts in result.counts_by_region.items():
        assert counts["ok"] > 0, f"no operation succeeded in {region}: {result.summary}"
    measured = [t for t in result.resume_s if t is not None]
    assert len(measured) == len(result.faults), f"commits did not resume after every fault: {result.resume_s}"
    assert max(measured) < RESUME_BOUND_S, result.resume_s
