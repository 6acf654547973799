"""The replication lag a user reads, from the regions' RegionPoint answers: `quorumdb global
status` (tools/global_cli.py) and a secondary's `SHOW quorumdb.replica_lag` (compute_node).

No process is started: the answers are built as the adjudicators send them. The lag is the
number a user reads before a failover ("how much may I lose?"), so a lag nobody knows must
never read as 0.
"""
from __future__ import annotations

from compute_node.cluster.region_view import RegionView
from compute_node.service import CommitTracker
from quorumdb import config as config_mod
from quorumdb import regions, rpc
from quorumdb.pb import adjudicator_pb2
from tools import global_cli


def states(tmp_path, *points) -> tuple[regions.GlobalConfig, list[global_cli.RegionState]]:
    global_cfg = regions.layout(tmp_path, regions.parse_regions("us:primary,eu:secondary"), 18_000)
    global_cfg.write()
    found = []
    for region, (point, leader) in zip(global_cfg.regions, points):
        cluster = config_mod.ClusterConfig(data_dir=region.data_dir, nodes=config_mod.default_nodes(region.base_port),
                                           region=region.name, global_file=str(global_cfg.path))
        found.append(global_cli.RegionState(region.name, cluster, point, leader,
                                            "" if leader else "no adjudicator leads"))
    return global_cfg, found


def point(role: str, **fields) -> adjudicator_pb2.RegionPointReply:
    return adjudicator_pb2.RegionPointReply(region="eu" if role != "primary" else "us", role=role,
                                            primary_region="us", global_epoch=1, **fields)


def report(tmp_path, secondary: adjudicator_pb2.RegionPointReply | None, leader: str = "adjudicator-az1"):
    global_cfg, found = states(tmp_path, (point("primary", lag_ms=0, is_leader=True), "adjudicator-az1"),
                               (secondary, leader))
    result = global_cli.status_report(global_cfg, found, regions.ControlState())
    return {row["name"]: row for row in result["regions"]}, global_cli.status_text(result)


def test_a_secondary_leaders_lag_is_reported(tmp_path):
    rows, text = report(tmp_path, point("secondary", lag_ms=1234, replicated_ts=5, replicated_index=40,
                                        primary_commit_index=42, is_leader=True))
    assert rows["eu"]["lag_ms"] == 1234 and rows["eu"]["lag_entries"] == 2
    assert rows["us"]["lag_ms"] == 0, "the primary is its own point"
    assert "1234 ms" in text


def test_a_lag_nobody_knows_is_null_and_reads_unknown_never_0(tmp_path):
    # A leader that has not read its replicated point yet, or a standby answering for a region
    # with no leader: the adjudicator leaves lag_ms out.
    rows, text = report(tmp_path, point("secondary", replicated_index=40, primary_commit_index=42))
    assert rows["eu"]["lag_ms"] is None
    assert "unknown" in text.splitlines()[2], text
    rows, text = report(tmp_path, None, leader="")
    assert rows["eu"]["role"] == "unreachable" and rows["eu"]["lag_ms"] is None
    assert "unknown" in text


async def test_a_secondarys_show_replica_lag_says_unknown_when_its_leader_does_not_know(tmp_path):
    global_cfg, found = states(tmp_path, (None, ""), (None, ""))
    channels = rpc.Channels()
    view = RegionView(found[1].cluster, channels)
    backend = type("Backend", (), {"region_view": view})()
    try:
        view._adopt(point("secondary", replicated_ts=5, replicated_index=40, primary_commit_index=42,
                          is_leader=True))
        assert view.point.lag_ms is None
        assert CommitTracker(backend).replica_lag() == "unknown, 2 entries (secondary of us)"
        view._adopt(point("secondary", lag_ms=250, replicated_ts=6, replicated_index=41, primary_commit_index=42,
                          is_leader=True))
        assert CommitTracker(backend).replica_lag() == "250 ms, 1 entries (secondary of us)"
    finally:
        await channels.close()
