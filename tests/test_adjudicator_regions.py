"""Adjudicators and the journal writer of an active-active cluster, wired on a layout on disk.

No process is started: the adjudicator nodes run with the fake journal of
tests/test_adjudicator_service.py, the writer is only built (its replicas, quorum and streams).
"""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from adjudicator import election
from adjudicator.service import AdjudicatorNode
from journal.writer import JournalWriter
from journal.writer_core import RegionVote
from quorumdb import config as config_mod
from quorumdb import members, regions, rpc
from quorumdb.clock import Clock
from tests.test_adjudicator_service import FakeFollower, FakeJournal, FakeWriter

PEERS = "us-east-1,us-east-2"
WITNESS = "us-west-2"


def active_active_layout(tmp_path) -> dict[str, config_mod.ClusterConfig]:
    pairs = regions.parse_active_active(PEERS, WITNESS)
    global_cfg = regions.layout(tmp_path, pairs, 17_000)
    global_cfg.write()
    clusters = {}
    for region in global_cfg.regions:
        nodes = (config_mod.witness_nodes(region.base_port) if region.role == "witness"
                 else config_mod.default_nodes(region.base_port))
        cluster = config_mod.ClusterConfig(
            data_dir=region.data_dir, nodes=nodes, region=region.name, global_file=str(global_cfg.path),
            initial_leader="us-east-1/adjudicator-az1", failover_timeout_ms=0, clock_error_ns=100_000)
        cluster.write()
        clusters[region.name] = config_mod.load(cluster.config_path)
    return clusters


async def test_the_writer_of_an_active_active_cluster_works_with_nine_qualified_replicas(tmp_path):
    clusters = active_active_layout(tmp_path)
    channels = rpc.Channels()
    writer = JournalWriter(clusters["us-east-2"], "us-east-2/adjudicator-az1", channels, Clock(100_000))
    assert len(writer.replicas) == 9 and writer.replicas[0] == "us-east-2/journal-az1", "own region first"
    assert writer.quorum.multi_region and writer.region == "us-east-2"
    # Own-region streams wait the simulated AZ distance by node name; remote ones the WAN's.
    assert writer._streams["us-east-2/journal-az2"].target == "journal-az2"
    assert writer._streams["us-west-2/journal-az2"].target == "us-west-2/journal-az2"
    # Losing a whole region leaves a quorum; a region and one more replica elsewhere do not.
    writer._unreachable = {f"us-east-1/journal-az{i}" for i in (1, 2, 3)}
    assert writer.majority_reachable
    writer._unreachable.add("us-west-2/journal-az1")
    assert writer.majority_reachable, "the witness keeps a majority of its replicas"
    writer._unreachable.add("us-west-2/journal-az3")
    assert not writer.majority_reachable
    assert writer.region_votes() == [], "no votes before take-over"
    await channels.close()


async def test_a_single_region_writer_is_unchanged(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=17_500)
    channels = rpc.Channels()
    writer = JournalWriter(cluster, "adjudicator-az1", channels, Clock(100_000))
    assert writer.replicas == ["journal-az1", "journal-az2", "journal-az3"] and not writer.quorum.multi_region
    writer._unreachable = {"journal-az1"}
    assert writer.majority_reachable
    writer._unreachable.add("journal-az3")
    assert not writer.majority_reachable
    await channels.close()


class RegionFakeWriter(FakeWriter):
    def region_votes(self):
        return [RegionVote("us-east-1", True, 7, 3.5, "peer"), RegionVote("us-east-2", True, 7, 80.0, "peer"),
                RegionVote("us-west-2", False, 2, float("inf"), "witness")]


class Group:
    """The 6 adjudicators of both peers on one fake journal (a quorum answers every probe)."""

    def __init__(self, clusters):
        self.journal = FakeJournal()
        self.nodes: dict[str, AdjudicatorNode] = {}
        self.clock = Clock(100_000)
        self.names: list[str] = []
        for region in PEERS.split(","):
            cluster = clusters[region]
            for node in cluster.adjudicators:
                name = members.qualify(region, node.name)
                self.nodes[name] = AdjudicatorNode(
                    cluster, node, self.clock, rpc.Channels(),
                    writer_factory=lambda cluster, name, channels, clock: RegionFakeWriter(self.journal, name, clock),
                    follower_factory=lambda cluster, subscriber, az, channels: FakeFollower(self.journal),
                    journal_probe=self.probe)
        self.quorum = members.journal_quorum(clusters["us-east-1"])

    async def probe(self) -> list[election.ReplicaView]:
        j = self.journal
        return [election.ReplicaView(name, j.promised_epoch, j.leader, j.closed_ts, len(j.entries))
                for name in self.quorum.replicas]


async def test_the_initial_leader_is_the_first_peers_and_names_itself_qualified(tmp_path):
    clusters = active_active_layout(tmp_path)
    group = Group(clusters)
    for node in group.nodes.values():
        assert node.region_agent is None, "the Global Database's agent stays off in an active-active cluster"
    leader = group.nodes["us-east-1/adjudicator-az1"]
    other = group.nodes["us-east-2/adjudicator-az1"]
    assert leader.own_name == "us-east-1/adjudicator-az1" and other.own_name == "us-east-2/adjudicator-az1"
    assert leader.journal_quorum.multi_region
    for node in group.nodes.values():
        await node.start()
    try:
        async with asyncio.timeout(10):
            while leader.term is None:
                await asyncio.sleep(0.01)
        assert other.term is None, "the other peer's adjudicator-az1 is not the initial leader"
        assert group.journal.leader == "us-east-1/adjudicator-az1", "the leader entry carries the qualified name"
        status = leader.status()
        assert status.region == "us-east-1" and status.leader == "us-east-1/adjudicator-az1"
        assert other.status().region == "us-east-2" and not other.status().regions, "votes come from the leader"
        votes = {vote.name: vote for vote in status.regions}
        assert votes["us-east-1"].voted_in and votes["us-east-1"].kind == "peer" and votes["us-east-1"].match_index == 7
        assert not votes["us-west-2"].voted_in and votes["us-west-2"].kind == "witness"
        assert votes["us-west-2"].ack_age_ms == 1e12, "never acknowledged: a finite, huge age on the wire"
        assert other.not_leader_reply().message.startswith("us-east-2/adjudicator-az1 is not the leader")
    finally:
        for node in group.nodes.values():
            await node.close()


async def test_probe_timeout_grows_with_the_failover_timeout_of_an_active_active_cluster(tmp_path):
    clusters = active_active_layout(tmp_path)
    cluster = config_mod.load(clusters["us-east-2"].config_path)
    slow = dataclasses.replace(cluster, failover_timeout_ms=1000 + 8 * 75)
    node = AdjudicatorNode(slow, slow.adjudicators[0], Clock(100_000), rpc.Channels(),
                           writer_factory=lambda *a: None, follower_factory=lambda *a: None,
                           journal_probe=lambda: None)
    assert node._probe_timeout_s == pytest.approx(0.4), "a WAN round trip of 150 ms + jitter fits twice"


async def test_the_writer_votes_regions_in_by_recent_acks_and_the_commit_index_a_second_ago(tmp_path):
    from journal.writer_core import ReplicaTail, WriterCore
    from quorumdb import runtime
    clusters = active_active_layout(tmp_path)
    cluster = dataclasses.replace(clusters["us-east-1"], failover_timeout_ms=1000)
    channels = rpc.Channels()
    writer = JournalWriter(cluster, "us-east-1/adjudicator-az1", channels, Clock(100_000))
    best = ReplicaTail("us-east-1/journal-az1", 50, 1, 50, 1)
    writer._core = WriterCore(writer.replicas, writer.leader_name, 2, best, 50, quorum=writer.quorum,
                              region="us-east-1", peer_regions=["us-east-1", "us-east-2"])
    now = runtime.monotonic()
    writer._commit_history.extend([(now - 5.0, 40), (now - 1.5, 45), (now - 0.2, 50)])
    for name in writer.replicas:
        writer._core.progress[name].match_index = 50
        writer._acked_at[name] = now - 0.1
    for name in ("us-east-2/journal-az1", "us-east-2/journal-az2"):
        writer._core.progress[name].match_index = 44  # behind what was committed a second ago (45)
    for name in ("us-west-2/journal-az1", "us-west-2/journal-az3"):
        writer._acked_at[name] = now - 3.0  # silent for longer than the failover timeout
    votes = {vote.name: vote for vote in writer.region_votes()}
    assert votes["us-east-1"].voted_in and votes["us-east-1"].kind == "peer"
    assert not votes["us-east-2"].voted_in and votes["us-east-2"].match_index == 44
    assert not votes["us-west-2"].voted_in and votes["us-west-2"].kind == "witness"
    assert votes["us-west-2"].ack_age_ms >= 3000
    await channels.close()
