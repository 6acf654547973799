"""The tools of an active-active cluster: `quorumdb up --regions A,B --witness W`, `status`, `chaos`,
`bench --region` and `global` (which refuses).

Fast tests check the layout `up` writes, the argument handling, the status report assembled from
NodeStatus messages (a pure function), the bench's choice of endpoints, and chaos/status/global on
an active-active data directory with nothing running. The cluster test starts a real one (33
nodes: 15 + 15 + 3) in a subprocess and checks the tools against it; it asserts nothing about
commits across regions (that is the journal's and adjudicators' business, tested with them).
"""
from __future__ import annotations

import io
import json
import re
import time

import pytest

from tools import cli
from quorumdb import certs
from quorumdb import config as config_mod
from quorumdb import regions as regions_mod
from quorumdb import rpc
from tools import supervisor as supervisor_mod
from quorumdb import wan
from tools.bench import command as bench_command
from tools.launcher import PORT_BLOCK, free_base_ports
from quorumdb.pb import common_pb2
from tests.test_chaos import FakeCluster
from tests.test_cli import UpProcess, process_alive, run_cli, wait_all_gone
from tests.test_regions_up import kill_regions_up, region_pids, stop_regions_up, up_args

UP_READY_TIMEOUT_S = 180.0
CHAOS_TIMEOUT_S = 60.0
UP_EXIT_TIMEOUT_S = 90.0
STATUS_TIMEOUT_S = 60.0


def make_active_active(data_dir, base: int, wan_ms: str | None = "5,25"):
    global_cfg = cli.prepare_global(data_dir, "p1,p2", wan_ms, base, witness="w1")
    clusters = cli.region_clusters(global_cfg, up_args(data_dir))
    return global_cfg, clusters


# --- the layout `up` writes -------------------------------------------------------------------------
def test_up_with_a_witness_lays_out_two_peers_and_a_journal_only_witness(tmp_path):
    global_cfg, clusters = make_active_active(tmp_path / "aa", 21_000)
    loaded = regions_mod.load(tmp_path / "aa")
    assert loaded.active_active and loaded.peers == ["p1", "p2"] and loaded.witness == "w1"
    assert [(r.name, r.role, r.base_port) for r in loaded.regions] == [
        ("p1", "peer", 21_000), ("p2", "peer", 21_060), ("w1", "witness", 21_120)]
    assert (loaded.wan_ms, loaded.wan_jitter_ms, loaded.wan_loss) == (5.0, 25.0, 0.0)
    p1, p2, w1 = clusters
    for cluster, base in ((p1, 21_000), (p2, 21_060)):
        assert len(cluster.nodes) == 15 and cluster.base_port == base
        assert cluster.initial_leader == "p1/adjudicator-az1"
        assert cluster.failover_timeout_ms == 1000 + 8 * 5
        assert cluster.read_wait_ms == 500  # max(500, 16 x 5)
        assert cluster.global_file == str(loaded.path)
        assert cli.supervisor_address_of(cluster) == f"127.0.0.1:{base + 39}"
    assert (p1.region, p2.region, w1.region) == ("p1", "p2", "w1")
    assert [(n.name, n.service, n.port) for n in w1.nodes] == [
        ("journal-az1", "journal", 21_130), ("journal-az2", "journal", 21_131), ("journal-az3", "journal", 21_132)]
    assert w1.initial_leader == "" and w1.failover_timeout_ms == 1040
    assert cli.base_port_of(w1) == 21_120 and w1.base_port == 21_120
    assert cli.supervisor_address_of(w1) == "127.0.0.1:21159"
    assert w1.metrics_port("journal-az3") == 21_120 + 40 + 2
    on_disk = config_mod.load(tmp_path / "aa" / "regions" / "w1" / "cluster.toml")
    assert on_disk == w1
    # the code paths that assume compute nodes take the witness
    options = cli.region_options(up_args(tmp_path / "aa", pg_port=6000), 2)
    assert cli.region_ports_in_use(w1, options) == []
    report = cli.ready_report(w1, {}, {"journal-az1": 123}, cli.supervisor_address_of(w1), final_line=False)
    assert "SQL endpoints" not in report and "PostgreSQL endpoints" not in report and "journal-az1" in report
    assert "metrics: http://127.0.0.1:21160/metrics .. :21162" in report
    from tools import prometheus

    assert prometheus.address(w1) == ("127.0.0.1", 21_176)
    assert prometheus.scrape_config(w1).count("targets:") == 3 and "127.0.0.1:21162" in prometheus.scrape_config(w1)


def test_a_custom_layout_still_has_no_base_port():
    nodes = (config_mod.NodeConfig("journal-az1", "journal", "az1", "127.0.0.1", 21_010),
             config_mod.NodeConfig("storage-az1-a", "storage", "az1", "127.0.0.1", 21_030))
    assert cli.base_port_of(config_mod.ClusterConfig(data_dir=config_mod.pathlib.Path("/tmp"), nodes=nodes)) is None


def test_a_later_up_reuses_the_directory_and_refuses_a_mismatch(tmp_path):
    data_dir = tmp_path / "aa"
    make_active_active(data_dir, 22_000)
    assert cli.prepare_global(data_dir, "p1,p2", None, None, witness="w1").witness == "w1"
    assert cli.prepare_global(data_dir, None, None, None).peers == ["p1", "p2"]
    assert cli.prepare_global(data_dir, None, None, None, witness="w1").peers == ["p1", "p2"]
    for regions, witness, words in (("p1,p3", "w1", "does not match"), ("p2,p1", "w1", "does not match"),
                                    ("p1,p2", "w2", "does not match"), ("p1,p2", None, "is an active-active cluster"),
                                    (None, "w9", "does not match")):
        with pytest.raises(regions_mod.RegionsError, match=words):
            cli.prepare_global(data_dir, regions, None, None, witness=witness)
    err = io.StringIO()
    assert cli.command_up(up_args(data_dir, regions="p1,p2"), err=err) == cli.EXIT_USAGE
    assert "give --regions p1,p2 --witness w1" in err.getvalue()
    assert regions_mod.load(data_dir).names == ["p1", "p2", "w1"]  # untouched

    gdb = tmp_path / "gdb"
    cli.prepare_global(gdb, "a:primary,b:secondary", None, 23_000)
    err = io.StringIO()
    assert cli.command_up(up_args(gdb, regions="a,b", witness="w"), err=err) == cli.EXIT_USAGE
    assert "is a Global Database (a:primary,b:secondary), not an active-active cluster" in err.getvalue()
    err = io.StringIO()
    assert cli.command_up(up_args(gdb, witness="w"), err=err) == cli.EXIT_USAGE
    assert "not an active-active cluster" in err.getvalue()


@pytest.mark.parametrize("regions, witness, words", [
    (None, "w1", "--witness needs --regions"),
    ("p1", "w1", "exactly two peer regions and a witness"),
    ("p1,p2,p3", "w1", "exactly two peer regions and a witness"),
    ("p1,p1", "w1", "unique"),
    ("p1,w1", "w1", "unique"),
    ("p1:primary,p2", "w1", "every region is a peer"),
    ("p1,p2", "W1", "lowercase"),
])
def test_bad_active_active_arguments_are_refused_and_nothing_is_written(tmp_path, regions, witness, words):
    err = io.StringIO()
    options = {"witness": witness, **({"regions": regions} if regions else {})}
    assert cli.command_up(up_args(tmp_path / "aa", **options), err=err) == cli.EXIT_USAGE
    assert words in err.getvalue()
    assert not (tmp_path / "aa").exists()


def test_the_read_wait_grows_with_the_wan_and_reaches_the_storage_copies():
    from compute_node.cluster.storage_reader import StorageReader, _wait_ms
    from quorumdb import rpc
    from tools.launcher import active_active_read_wait_ms

    assert active_active_read_wait_ms(5) == 500 and active_active_read_wait_ms(75) == 1200
    cluster = config_mod.default_cluster("/tmp/unused-aa", 21_000, read_wait_ms=700)
    reader = StorageReader(cluster, "az1", rpc.Channels())
    assert reader._wait_cap_ms == 700
    assert _wait_ms(3.0, 700) == 700 and _wait_ms(0.9, 700) == 400 and _wait_ms(0.2, 700) == 1
    assert StorageReader(config_mod.default_cluster("/tmp/unused", 21_000), "az1", rpc.Channels())._wait_cap_ms == 2000


def test_the_failover_timeout_grows_with_the_wan():
    from tools.launcher import active_active_failover_timeout_ms

    assert active_active_failover_timeout_ms(0) == 1000
    assert active_active_failover_timeout_ms(25) == 1200
    assert active_active_failover_timeout_ms(75.5) == 1604


def test_the_ready_lines_name_regions_witness_wan_endpoints_and_chaos(tmp_path):
    global_cfg, clusters = make_active_active(tmp_path / "aa", 24_000)
    lines = "\n".join(cli.active_active_ready_lines(global_cfg, clusters, {"p1": None, "p2": "SELECT 1 fails"}, 33))
    assert "regions: p1 (peer), p2 (peer), w1 (witness: journal replicas only)" in lines
    assert "WAN between regions: 5 ms one way, jitter up to 25 ms" in lines
    assert "both peers take reads and writes (no writer endpoint" in lines
    assert "peer p1: client API 127.0.0.1:24000, 127.0.0.1:24001, 127.0.0.1:24002; PostgreSQL 127.0.0.1:24003" in lines
    assert "peer p2: client API 127.0.0.1:24060" in lines and "NOT serving SQL yet" in lines
    assert "witness w1: journal replicas 127.0.0.1:24130, 127.0.0.1:24131, 127.0.0.1:24132" in lines
    assert "region-link-cut p1 p2" in lines and "bench --data-dir" in lines
    assert lines.splitlines()[-1].startswith("QuorumDB active-active cluster is ready: 3 regions (peers p1, p2; "
                                             "witness w1), 33 nodes up")


# --- status: the report from NodeStatus messages --------------------------------------------------
def _statuses(cluster, **by_name):
    return [by_name.get(node.name.replace("-", "_")) for node in cluster.nodes]


def test_the_status_report_is_assembled_from_the_nodes_statuses(tmp_path):
    global_cfg, (p1, p2, w1) = make_active_active(tmp_path / "aa", 25_000)
    leader = common_pb2.NodeStatus(
        name="adjudicator-az2", service="adjudicator", role="leader", epoch=7, leader="p2/adjudicator-az2",
        region="p2", regions=[common_pb2.RegionVote(name="p1", voted_in=True, match_index=90, kind="peer"),
                              common_pb2.RegionVote(name="p2", voted_in=True, match_index=90, kind="peer"),
                              common_pb2.RegionVote(name="w1", voted_in=False, match_index=40, kind="witness")])
    stale = common_pb2.NodeStatus(name="adjudicator-az1", service="adjudicator", role="leader", epoch=6)
    compute = lambda commit, read: common_pb2.NodeStatus(service="compute", role="query", commit_p50_ms=commit,
                                                          read_p50_ms=read, health="ok")
    sections = [
        (global_cfg.region("p1"), p1, _statuses(p1, adjudicator_az1=stale, compute_az1=compute(12.0, 1.0),
                                                compute_az2=compute(0.0, 0.0), compute_az3=compute(14.0, 3.0))),
        (global_cfg.region("p2"), p2, _statuses(p2, adjudicator_az2=leader, compute_az1=compute(30.0, 2.0))),
        (global_cfg.region("w1"), w1, _statuses(w1, journal_az1=common_pb2.NodeStatus(service="journal"))),
    ]
    report = cli.active_active_report(global_cfg, sections, wan.WanRules(3, 5.0, 25.0, 0.0, frozenset(),
                                                                         frozenset({("p1", "p2")})))
    assert (report["leader"], report["leader_region"], report["leader_epoch"]) == ("p2/adjudicator-az2", "p2", 7)
    assert report["witness"] == "w1" and report["peers"] == ["p1", "p2"]
    assert report["wan_ms"] == 5.0 and report["wan_jitter_ms"] == 25.0 and report["cut_links"] == [["p1", "p2"]]
    by_name = {region["name"]: region for region in report["regions"]}
    assert [region["name"] for region in report["regions"]] == ["p1", "p2", "w1"]
    assert [region["kind"] for region in report["regions"]] == ["peer", "peer", "witness"]
    assert [region["voted_in"] for region in report["regions"]] == [True, True, False]
    assert by_name["p1"]["endpoints"] == ["127.0.0.1:25000", "127.0.0.1:25001", "127.0.0.1:25002"]
    assert by_name["p1"]["pg_endpoints"] == ["127.0.0.1:25003", "127.0.0.1:25004", "127.0.0.1:25005"]
    assert by_name["w1"]["endpoints"] == [] and by_name["w1"]["pg_endpoints"] == []
    assert by_name["p1"]["commit_p50_ms"] == 13.0 and by_name["p1"]["read_p50_ms"] == 2.0  # zeros left out
    assert by_name["p2"]["commit_p50_ms"] == 30.0
    assert by_name["w1"]["commit_p50_ms"] is None and by_name["w1"]["read_p50_ms"] is None
    assert len(by_name["w1"]["nodes"]) == 3 and by_name["w1"]["nodes"][0]["up"] is True
    assert by_name["w1"]["nodes"][1]["health"] == "down" and by_name["w1"]["nodes_up"] == 1
    assert len(by_name["p1"]["nodes"]) == 15
    json.dumps(report)  # it is all JSON

    text = cli.active_active_text(report, sections)
    assert "region p1 (peer, base port 25000): voted in; commit p50 13.0 ms, read p50 2.0 ms" in text
    assert "region w1 (witness: journal replicas only, base port 25120): VOTED OUT" in text
    assert "leader: p2/adjudicator-az2 (region p2, epoch 7)" in text
    assert "links cut: p1 - p2" in text and text.count("nodes up)") == 3


def test_the_status_report_without_a_leader_or_its_votes_says_unknown(tmp_path):
    global_cfg, clusters = make_active_active(tmp_path / "aa", 26_000)
    nobody = [(region, cluster, [None] * len(cluster.nodes)) for region, cluster in zip(global_cfg.regions, clusters)]
    report = cli.active_active_report(global_cfg, nobody)
    assert report["leader"] is None and report["leader_region"] is None
    assert [region["voted_in"] for region in report["regions"]] == [None, None, None]
    assert report["wan_ms"] == 5.0 and report["cut_links"] == []  # the global file's settings
    assert "vote unknown" in cli.active_active_text(report, nobody)
    assert "leader: no adjudicator answered as leader" in cli.active_active_text(report, nobody)
    # A leader of a build that fills no votes yet, with a plain name: qualified by the region it answered from.
    plain = common_pb2.NodeStatus(name="adjudicator-az1", service="adjudicator", role="leader", epoch=2)
    p1 = clusters[0]
    sections = [(global_cfg.region("p1"), p1, _statuses(p1, adjudicator_az1=plain))] + nobody[1:]
    report = cli.active_active_report(global_cfg, sections)
    assert report["leader"] == "p1/adjudicator-az1" and report["leader_region"] == "p1"
    # A leader whose `leader` field already names another adjudicator is still named by itself.
    moving = common_pb2.NodeStatus(name="adjudicator-az1", service="adjudicator", role="leader", epoch=2,
                                   leader="p2/adjudicator-az3")
    sections = [(global_cfg.region("p1"), p1, _statuses(p1, adjudicator_az1=moving))] + nobody[1:]
    assert cli.active_active_report(global_cfg, sections)["leader"] == "p1/adjudicator-az1"
    assert [region["voted_in"] for region in report["regions"]] == [None, None, None]


def test_median_positive():
    assert cli.median_positive([]) is None and cli.median_positive([0.0, 0.0]) is None
    assert cli.median_positive([3.0, 0.0, 1.0, 2.0]) == 2.0
    assert cli.median_positive([4.0, 1.0]) == 2.5


# --- bench --region -----------------------------------------------------------------------------------
def test_bench_chooses_one_regions_compute_nodes():
    listing = [("p1", "peer", [("h", 1), ("h", 2)]), ("p2", "peer", [("h", 61)]), ("w1", "witness", [])]
    assert bench_command.region_endpoints(listing, "p2") == ("p2", [("h", 61)])
    assert bench_command.region_endpoints(listing, None) == ("p1", [("h", 1), ("h", 2)])
    assert bench_command.region_endpoints(listing, None, default="p2") == ("p2", [("h", 61)])
    with pytest.raises(bench_command.RegionChoiceError, match=r"no region named 'zz' \(regions: p1 \(peer\), p2 \(peer\)\)"):
        bench_command.region_endpoints(listing, "zz")
    with pytest.raises(bench_command.RegionChoiceError, match="w1 is a witness with no compute nodes"):
        bench_command.region_endpoints(listing, "w1")


def test_bench_with_a_data_dir_uses_the_region_it_names_and_says_which(tmp_path):
    make_active_active(tmp_path / "aa", 27_000)
    err = io.StringIO()
    assert bench_command.data_dir_endpoints(tmp_path / "aa", "p2", err) == [
        ("127.0.0.1", 27_060), ("127.0.0.1", 27_061), ("127.0.0.1", 27_062)]
    assert err.getvalue() == ""
    assert bench_command.data_dir_endpoints(tmp_path / "aa", None, err)[0] == ("127.0.0.1", 27_000)
    assert "region p1 (peer) of p1, p2, w1; choose one with --region" in err.getvalue()

    gdb = tmp_path / "gdb"
    global_cfg = cli.prepare_global(gdb, "a:primary,b:secondary", None, 28_000)
    cli.region_clusters(global_cfg, up_args(gdb))
    err = io.StringIO()
    assert bench_command.data_dir_endpoints(gdb, "b", err)[0] == ("127.0.0.1", 28_060)
    regions_mod.update_state(global_cfg.data_dir, lambda state: regions_mod.ControlState(global_epoch=2, primary="b"))
    assert bench_command.data_dir_endpoints(gdb, None, err)[0] == ("127.0.0.1", 28_060)  # the primary now
    assert "region b (secondary)" in err.getvalue()

    for argv, words in ((["--data-dir", str(tmp_path / "aa"), "--region", "mars"], "no region named 'mars'"),
                        (["--data-dir", str(tmp_path / "aa"), "--region", "w1"], "witness with no compute nodes"),
                        (["--region", "p1"], "--region needs --data-dir"),
                        (["--data-dir", str(tmp_path / "aa"), "--port", "7100"], "leave out --port")):
        args = cli.build_parser().parse_args(["bench", "--workload", "point-write", *argv])
        err = io.StringIO()
        assert bench_command.command(args, io.StringIO(), err) == 2
        assert words in err.getvalue()


# --- chaos, status and global on an active-active directory with nothing running -----------------------
@pytest.fixture
def aa_dir(tmp_path):
    global_cfg, clusters = make_active_active(tmp_path / "aa", free_base_ports(3), "2")
    for cluster in clusters:  # as `up` makes them: the tools find the CA and the admin certificate
        certs.ensure(cluster.certs_path, [])
    return global_cfg


def test_chaos_on_an_active_active_directory(aa_dir):
    data_dir = str(aa_dir.data_dir)
    missing = run_cli("chaos", "--data-dir", data_dir, "region-link-cut", "p1")
    assert missing.returncode == 2 and "needs two regions, A B (regions: p1, p2, w1)" in missing.stderr
    same = run_cli("chaos", "--data-dir", data_dir, "region-link-cut", "p1", "p1")
    assert same.returncode == 2 and "two different regions" in same.stderr
    unknown = run_cli("chaos", "--data-dir", data_dir, "region-link-cut", "p1", "mars")
    assert unknown.returncode == 2 and "no region named 'mars'" in unknown.stderr
    stray = run_cli("chaos", "--data-dir", data_dir, "region-partition", "p1", "p2")
    assert stray.returncode == 2 and "takes at most one argument" in stray.stderr

    cut = run_cli("chaos", "--data-dir", data_dir, "region-link-cut", "p2", "p1")
    assert cut.returncode == 0, cut.stderr
    assert "cut the link between regions p2 and p1, both ways" in cut.stdout and "w1 stay up" in cut.stdout
    rules = wan.read_rules(aa_dir)
    assert rules.cut_links == {("p1", "p2")} and rules.is_cut("p1", "p2") and not rules.is_cut("p1", "w1")
    healed = run_cli("chaos", "--data-dir", data_dir, "region-heal")
    assert healed.returncode == 0, healed.stderr
    assert wan.read_rules(aa_dir).cut_links == frozenset()

    leader = run_cli("chaos", "--data-dir", data_dir, "kill-leader")
    assert leader.returncode == 1 and "no adjudicator of the peers says it leads" in leader.stderr

    # Actions that need the supervisors name the witness's like any region's.
    down = run_cli("chaos", "--data-dir", data_dir, "region-kill", "w1")
    assert down.returncode == 1 and f"127.0.0.1:{aa_dir.region('w1').base_port + 39}" in down.stderr
    node = run_cli("chaos", "--data-dir", data_dir, "kill", "w1/journal-az2")
    assert node.returncode == 1 and f"127.0.0.1:{aa_dir.region('w1').base_port + 39}" in node.stderr


def test_status_and_global_on_an_active_active_directory(aa_dir):
    result = run_cli("status", "--data-dir", str(aa_dir.data_dir), "--json")
    assert result.returncode == 1  # nothing runs
    report = json.loads(result.stdout)
    assert [(r["name"], r["kind"]) for r in report["regions"]] == [("p1", "peer"), ("p2", "peer"), ("w1", "witness")]
    assert [len(r["nodes"]) for r in report["regions"]] == [15, 15, 3]
    assert report["leader"] is None and report["witness"] == "w1" and report["wan_ms"] == 2.0
    base = aa_dir.regions[0].base_port
    assert report["regions"][1]["pg_endpoints"] == [f"127.0.0.1:{base + 63 + i}" for i in range(3)]
    text = run_cli("status", "--data-dir", str(aa_dir.data_dir))
    assert "region w1 (witness: journal replicas only" in text.stdout and "(0 of 3 nodes up)" in text.stdout

    refused = run_cli("global", "status", "--data-dir", str(aa_dir.data_dir))
    assert refused.returncode == 2
    assert ("this is an active-active cluster (two peers and a witness): every peer takes writes; there is no "
            "primary to switch over") in refused.stderr
    assert run_cli("global", "switchover", "--to", "p2", "--data-dir", str(aa_dir.data_dir)).returncode == 2


def test_kill_leader_on_a_witness_says_it_has_no_adjudicators(tmp_path):
    _, (_, _, witness) = make_active_active(tmp_path / "aa", 29_000)
    launched = FakeCluster(witness)
    launched.start()
    supervisor = supervisor_mod.Supervisor(launched, lambda text: None)
    with pytest.raises(supervisor_mod.SupervisorError, match="no adjudicators"):
        supervisor.kill_leader()
    assert supervisor.kill_all().message.startswith("killed all 3 running nodes")


# --- a real active-active cluster ------------------------------------------------------------------
@pytest.mark.cluster
@pytest.mark.regions  # 33 processes: the CI step of its own (python -m pytest -m regions)
def test_up_an_active_active_cluster_and_use_its_tools(tmp_path):
    base = free_base_ports(3)
    data_dir = tmp_path / "aa"
    up = UpProcess(data_dir, base, "--regions", "a1,a2", "--witness", "w1", "--wan-ms", "2", "--no-console",
                   "--ready-timeout", "150")
    pids: dict[str, dict[str, int]] = {}
    try:
        up.wait_for("active-active cluster is ready", UP_READY_TIMEOUT_S)
        assert "3 regions (peers a1, a2; witness w1), 33 nodes up" in up.output[-1], up.text()
        pids = region_pids(up)
        assert {region: len(nodes) for region, nodes in pids.items()} == {"a1": 15, "a2": 15, "w1": 3}, up.text()
        assert all(process_alive(pid) for nodes in pids.values() for pid in nodes.values())
        assert "no writer endpoint" in up.text() and "region-link-cut a1 a2" in up.text()

        deadline = time.monotonic() + STATUS_TIMEOUT_S
        while True:
            status = run_cli("status", "--data-dir", str(data_dir), "--json")
            if status.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert [(r["name"], r["kind"]) for r in report["regions"]] == [("a1", "peer"), ("a2", "peer"), ("w1", "witness")]
        assert report["witness"] == "w1" and report["wan_ms"] == 2.0
        for index, region in enumerate(report["regions"][:2]):
            block = base + index * PORT_BLOCK
            assert region["endpoints"] == [f"127.0.0.1:{block + i}" for i in range(3)]
            assert region["pg_endpoints"] == [f"127.0.0.1:{block + 3 + i}" for i in range(3)]
        assert report["regions"][2]["endpoints"] == [] and report["regions"][2]["pg_endpoints"] == []
        assert [r["nodes_up"] for r in report["regions"]] == [15, 15, 3]

        global_cfg = regions_mod.load(data_dir)
        rules_file = wan.rules_path(global_cfg)
        cut = run_cli("chaos", "--data-dir", str(data_dir), "region-link-cut", "a1", "a2", timeout_s=CHAOS_TIMEOUT_S)
        assert cut.returncode == 0, cut.stderr
        assert json.loads(rules_file.read_text())["cut_links"] == [["a1", "a2"]]
        cut_status = json.loads(run_cli("status", "--data-dir", str(data_dir), "--json").stdout)
        assert cut_status["cut_links"] == [["a1", "a2"]]
        healed = run_cli("chaos", "--data-dir", str(data_dir), "region-heal", timeout_s=CHAOS_TIMEOUT_S)
        assert healed.returncode == 0, healed.stderr
        assert "cut_links" not in json.loads(rules_file.read_text())

        killed = run_cli("chaos", "--data-dir", str(data_dir), "region-kill", "w1", timeout_s=CHAOS_TIMEOUT_S)
        assert killed.returncode == 0, killed.stderr
        assert killed.stdout.startswith("region w1: killed all 3 running nodes")
        assert not wait_all_gone(pids["w1"], timeout_s=10.0)
        restarted = run_cli("chaos", "--data-dir", str(data_dir), "region-restart", "w1", timeout_s=CHAOS_TIMEOUT_S)
        assert restarted.returncode == 0, restarted.stderr
        pids["w1"] = {name: int(pid) for name, pid in re.findall(r"(\S+) \(was down, pid (\d+)\)", restarted.stdout)}
        assert len(pids["w1"]) == 3

        stop_regions_up(up, pids, data_dir, UP_EXIT_TIMEOUT_S)
    finally:
        kill_regions_up(up, pids, data_dir)


def test_status_chaos_and_bench_find_the_regions_in_the_default_data_dir(tmp_path, monkeypatch):
    """`quorumdb up --regions A,B --witness W` in the default directory, then `quorumdb status`
    (or chaos, or bench --region R) with no flag naming a cluster: the regions, not base port 7100."""
    make_active_active(tmp_path / "quorumdb-data", 21_000)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QUORUMDB_DATA_DIR", raising=False)
    parser = cli.build_parser()
    for argv in (["status", "--json"], ["chaos", "region-heal"], ["bench", "--region", "p2", "-w", "point-write"]):
        args = parser.parse_args(argv)
        cli.adopt_default_regions_dir(args, argv)
        assert args.data_dir == "quorumdb-data", argv
    for argv in (["status", "--base-port", "7100"], ["chaos", "--data-dir", "other", "region-heal"],
                 ["bench", "-p", "7100", "-w", "point-write"], ["token", "--user", "admin"]):
        args = parser.parse_args(argv)
        before = getattr(args, "data_dir", None)
        cli.adopt_default_regions_dir(args, argv)
        assert getattr(args, "data_dir", None) == before, argv
    # A single cluster in the default directory keeps today's behaviour (its ports).
    other = tmp_path / "single"
    other.mkdir()
    monkeypatch.chdir(other)
    config_mod.default_cluster(other / "quorumdb-data", 21_300).write()
    args = parser.parse_args(["status"])
    cli.adopt_default_regions_dir(args, ["status"])
    assert args.data_dir is None


def test_a_witness_knows_the_roles_of_the_other_regions_nodes(aa_dir):
    # A witness region's cluster file names its journal replicas only; the adjudicators that append
    # to them are the peers' nodes. Without their roles every append was UNAUTHENTICATED and the
    # witness never voted in.
    witness = next(region for region in aa_dir.regions if region.name == "w1").cluster()
    assert {node.service for node in witness.nodes} == {"journal"}
    services = rpc.services_of(witness)
    assert services["adjudicator-az1"] == "adjudicator" and services["journal-az2"] == "journal"
    assert rpc.cert_role("p1/adjudicator-az1", services) == "adjudicator"
    assert rpc.cert_role("p2/compute-az3", services) == "compute"
