"""`quorumdb up --regions`, `quorumdb chaos region-*` and `quorumdb status` on a Global Database.

Fast tests check the argument handling without starting anything: bad --regions and --wan-ms
values, a --regions that disagrees with the global file, the region cluster files `up` writes,
the supervisor's whole-cluster actions over fake processes, and chaos/status on a global data
directory with nothing running. The cluster test runs `quorumdb up --regions a:primary,b:secondary`
in a subprocess, kills and restarts region b with `quorumdb chaos`, and stops `up` with SIGINT;
every node PID it printed is killed in a finally.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tools import cli
from quorumdb import config as config_mod
from quorumdb import regions as regions_mod
from quorumdb import rpc
from tools import launcher
from tools import supervisor as supervisor_mod
from tools.launcher import PORT_BLOCK, free_base_ports, node_status
from tests.test_chaos import FakeCluster
from tests.test_cli import UpProcess, process_alive, run_cli, wait_all_gone

UP_READY_TIMEOUT_S = 120.0
CHAOS_TIMEOUT_S = 120.0
UP_EXIT_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 30.0


def up_args(data_dir, **options) -> argparse.Namespace:
    """`quorumdb up` arguments as the parser gives them."""
    argv = ["up", "--data-dir", str(data_dir)]
    for option, value in options.items():
        argv += [f"--{option.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return cli.build_parser().parse_args(argv)


# --- arguments, without starting anything ----------------------------------------------------------
@pytest.mark.parametrize("regions, words", [
    ("us-east:primary", "at least two regions"),
    ("a:primary,b:primary", "exactly one region must be the primary"),
    ("a:secondary,b:secondary", "exactly one region must be the primary"),
    ("a:primary,a:secondary", "unique"),
    ("US:primary,b:secondary", "lowercase"),
    ("a:primary,b:leader", "role must be primary or secondary"),
])
def test_bad_regions_are_refused_and_nothing_is_written(tmp_path, regions, words):
    err = io.StringIO()
    code = cli.command_up(up_args(tmp_path / "g", regions=regions), err=err)
    assert code == cli.EXIT_USAGE
    assert words in err.getvalue()
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("wan, words", [
    ("fast", "numbers expected"),
    ("30,5,0.01,9", "DELAY_MS[,JITTER_MS[,LOSS]]"),
    ("-1", "delay and jitter must be"),
    ("30,5,0.9", "loss is a fraction"),
    ("30,,0.1", "DELAY_MS[,JITTER_MS[,LOSS]]"),
])
def test_bad_wan_ms_is_refused_and_nothing_is_written(tmp_path, wan, words):
    err = io.StringIO()
    code = cli.command_up(up_args(tmp_path / "g", regions="a:primary,b:secondary", wan_ms=wan), err=err)
    assert code == cli.EXIT_USAGE
    assert words in err.getvalue()
    assert not (tmp_path / "g").exists()


def test_wan_ms_without_regions_on_a_new_directory_is_refused(tmp_path):
    err = io.StringIO()
    assert cli.command_up(up_args(tmp_path / "g", wan_ms="30"), err=err) == cli.EXIT_USAGE
    assert "--wan-ms needs --regions" in err.getvalue()


def test_first_start_lays_out_the_global_file_and_every_region_cluster_file(tmp_path):
    data_dir = tmp_path / "g"
    global_cfg = cli.prepare_global(data_dir, "us-east:primary,eu-west:secondary", "30,5,0.01", 21_000)
    assert global_cfg.path == data_dir.resolve() / "global.toml" and global_cfg.path.exists()
    loaded = regions_mod.load(data_dir)
    assert [(r.name, r.role, r.base_port) for r in loaded.regions] == [
        ("us-east", "primary", 21_000), ("eu-west", "secondary", 21_000 + PORT_BLOCK)]
    assert (loaded.wan_ms, loaded.wan_jitter_ms, loaded.wan_loss) == (30.0, 5.0, 0.01)

    args = up_args(data_dir, read_mode="single", clock_error_ms="2", no_metrics=True)
    clusters = cli.region_clusters(loaded, args)
    for region, cluster in zip(loaded.regions, clusters, strict=True):
        on_disk = config_mod.load(data_dir / "regions" / region.name / "cluster.toml")
        assert on_disk.region == region.name
        assert on_disk.global_file == str(loaded.path)
        assert on_disk.base_port == region.base_port
        assert on_disk.node("storage-az3-b").port == region.base_port + 35
        assert (on_disk.read_mode, on_disk.clock_error_ns, on_disk.metrics) == ("single", 2_000_000, False)
        assert on_disk.pg_port("compute-az1") == region.base_port + 3  # inside the region's own block
        assert cli.supervisor_address_of(on_disk) == f"127.0.0.1:{region.base_port + 39}"
        assert cluster == on_disk


def test_pg_port_option_gives_each_region_its_own_ports(tmp_path):
    global_cfg = cli.prepare_global(tmp_path / "g", "a:primary,b:secondary,c:secondary", None, 22_000)
    clusters = cli.region_clusters(global_cfg, up_args(tmp_path / "g", pg_port=6000))
    assert [[c.pg_port(n.name) for n in c.computes] for c in clusters] == [
        [6000, 6001, 6002], [6003, 6004, 6005], [6006, 6007, 6008]]
    assert not cli.region_options(up_args(tmp_path / "g"), 0).no_console
    assert cli.region_options(up_args(tmp_path / "g"), 1).no_console  # the console watches the first region


def test_a_later_start_reuses_the_file_and_refuses_other_regions(tmp_path):
    data_dir = tmp_path / "g"
    cli.prepare_global(data_dir, "us-east:primary,eu-west:secondary", None, 23_000)
    again = cli.prepare_global(data_dir, "us-east:primary,eu-west:secondary", None, None)
    assert again.names == ["us-east", "eu-west"]
    assert cli.prepare_global(data_dir, None, None, None).names == ["us-east", "eu-west"]

    for other in ("us-east:primary,ap-south:secondary", "eu-west:primary,us-east:secondary",
                  "us-east:primary,eu-west:secondary,ap-south:secondary"):
        with pytest.raises(regions_mod.RegionsError, match="does not match"):
            cli.prepare_global(data_dir, other, None, None)
        err = io.StringIO()
        assert cli.command_up(up_args(data_dir, regions=other), err=err) == cli.EXIT_USAGE
        assert f"{data_dir.resolve() / 'global.toml'}, which has us-east:primary,eu-west:secondary" in err.getvalue()
    assert regions_mod.load(data_dir).names == ["us-east", "eu-west"]  # untouched

    warned = io.StringIO()
    cli.prepare_global(data_dir, None, "80,10", 29_000, warned)
    assert "--base-port 29000 ignored" in warned.getvalue()
    assert regions_mod.load(data_dir).wan_ms == 80.0  # --wan-ms on a later start replaces the WAN settings
    assert regions_mod.load(data_dir).regions[0].base_port == 23_000


def test_regions_on_a_single_region_directory_are_refused(tmp_path):
    config_mod.default_cluster(tmp_path / "single", base_port=24_000).write()
    err = io.StringIO()
    assert cli.command_up(up_args(tmp_path / "single", regions="a:primary,b:secondary"), err=err) == cli.EXIT_USAGE
    assert "holds a single-region cluster" in err.getvalue()
    assert not (tmp_path / "single" / "global.toml").exists()


def test_up_usage_errors_in_a_subprocess_exit_2_and_start_nothing(tmp_path):
    result = run_cli("up", "--data-dir", str(tmp_path / "g"), "--regions", "a:primary", "--base-port", "25000")
    assert result.returncode == 2, result.stderr
    assert "at least two regions" in result.stderr
    assert "starting" not in result.stdout
    assert not (tmp_path / "g").exists()


def test_current_primary_follows_the_control_state(tmp_path):
    global_cfg = cli.prepare_global(tmp_path / "g", "a:primary,b:secondary", None, 26_000)
    assert cli.current_primary(global_cfg) == "a"
    regions_mod.update_state(global_cfg.data_dir, lambda state: regions_mod.ControlState(global_epoch=2, primary="b"))
    assert cli.current_primary(global_cfg) == "b"


def test_the_writer_endpoint_hook_is_skipped_without_its_module(tmp_path, monkeypatch):
    global_cfg = cli.prepare_global(tmp_path / "g", "a:primary,b:secondary", None, 26_000)
    monkeypatch.setitem(sys.modules, "tools.haproxy", None)  # its import fails as a missing module's does
    err = io.StringIO()
    handle = cli.start_writer_endpoint(global_cfg, err)
    assert handle is None and err.getvalue() == ""

    def failing_import(name, package=None):  # a module that fails to import for another reason
        raise AttributeError("module 'quorumdb.limits' has no attribute 'HAPROXY_X'")

    monkeypatch.setattr("importlib.import_module", failing_import)
    assert cli.start_writer_endpoint(global_cfg, err) is None
    assert "the writer endpoint's module does not import" in err.getvalue()


# --- the supervisor's whole-cluster actions over fake processes ------------------------------------
def test_kill_all_and_restart_all(tmp_path):
    launched = FakeCluster(config_mod.default_cluster(tmp_path / "c", base_port=27_000))
    launched.start()
    said: list[str] = []
    supervisor = supervisor_mod.Supervisor(launched, said.append)
    pids = {name: process.pid for name, process in launched.processes.items()}
    killed = supervisor.kill_all()
    assert killed.message.startswith("killed all 15 running nodes: compute-az3 (pid ")
    assert [name for kind, name in launched.signals if kind == "KILL"][-1] == "journal-az1"  # the journal last
    assert all(supervisor.expected_exit(pid) for pid in pids.values())
    assert {node.state for node in supervisor.nodes()} == {"killed"}
    with pytest.raises(supervisor_mod.SupervisorError, match="no node is running"):
        supervisor.kill_all()
    restarted = supervisor.restart_all()
    assert restarted.message.startswith("restarted journal-az1 (was down, pid ")
    assert {node.state for node in supervisor.nodes()} == {"running"}
    assert said[-1] == f"chaos: {restarted.message}"


# --- chaos and status on a global data directory with nothing running ------------------------------
@pytest.fixture
def global_dir(tmp_path):
    base = free_base_ports(2)
    global_cfg = cli.prepare_global(tmp_path / "g", "a:primary,b:secondary", None, base)
    for cluster in cli.region_clusters(global_cfg, up_args(tmp_path / "g")):
        launcher.ensure_certs(cluster)  # as `quorumdb up` does before it starts a node
    return global_cfg


def chaos(data_dir, *args: str) -> subprocess.CompletedProcess:
    return run_cli("chaos", "--data-dir", str(data_dir), *args)


def test_chaos_region_arguments_are_checked(global_dir, tmp_path):
    data_dir = global_dir.data_dir
    unknown = chaos(data_dir, "region-kill", "c")
    assert unknown.returncode == 2 and "no region named 'c' (regions: a, b)" in unknown.stderr
    missing = chaos(data_dir, "region-restart")
    assert missing.returncode == 2 and "needs a REGION (regions: a, b)" in missing.stderr
    partition = chaos(data_dir, "region-partition", "zz")
    assert partition.returncode == 2 and "no region named 'zz'" in partition.stderr
    heal = chaos(data_dir, "region-heal", "a")
    assert heal.returncode == 2 and "takes no argument" in heal.stderr
    no_ms = chaos(data_dir, "wan")
    assert no_ms.returncode == 2 and "wan needs --ms" in no_ms.stderr
    bad_ms = chaos(data_dir, "wan", "--ms", "30,5,2")
    assert bad_ms.returncode == 2 and "--ms '30,5,2': loss is a fraction" in bad_ms.stderr
    stray_ms = chaos(data_dir, "heal", "--ms", "30")
    assert stray_ms.returncode == 2 and "--ms goes with `wan`" in stray_ms.stderr
    unqualified = chaos(data_dir, "kill", "journal-az1")
    assert unqualified.returncode == 2 and "needs REGION/NODE, e.g. eu-west/storage-az1-a" in unqualified.stderr
    wrong_region = chaos(data_dir, "kill-az", "x/az1")
    assert wrong_region.returncode == 2 and "no region named 'x'" in wrong_region.stderr
    leader = chaos(data_dir, "kill-leader")
    assert leader.returncode == 2 and "kill-leader needs a REGION" in leader.stderr
    # Well formed, but nobody runs the regions: the region's supervisor is named.
    down = chaos(data_dir, "region-kill", "b")
    assert down.returncode == 1
    assert f"no `quorumdb up` answers at 127.0.0.1:{global_dir.region('b').base_port + 39}" in down.stderr
    qualified = chaos(data_dir, "kill", "a/journal-az1")
    assert qualified.returncode == 1 and f"127.0.0.1:{global_dir.region('a').base_port + 39}" in qualified.stderr

    config_mod.default_cluster(tmp_path / "single", base_port=free_base_ports(1)).write()
    not_global = chaos(tmp_path / "single", "region-kill", "a")
    assert not_global.returncode == 2 and "acts on a Global Database" in not_global.stderr


def test_status_of_a_global_directory_has_a_section_per_region(global_dir):
    result = run_cli("status", "--data-dir", str(global_dir.data_dir))
    assert result.returncode == 1  # nothing runs
    assert "region a (initial role primary" in result.stdout and "region b (initial role secondary" in result.stdout
    assert result.stdout.count("(0 of 15 nodes up)") == 2
    assert f"global cluster file: {global_dir.path}" in result.stdout

    result = run_cli("status", "--data-dir", str(global_dir.data_dir), "--json")
    report = json.loads(result.stdout)
    assert [region["name"] for region in report["regions"]] == ["a", "b"]
    for region in report["regions"]:
        assert len(region["nodes"]) == 15
        assert {node["health"] for node in region["nodes"]} == {"down"}
        assert {node["address"] for node in region["nodes"]} == {
            n.address for n in global_dir.region(region["name"]).cluster().nodes}


# --- a real two-region cluster ------------------------------------------------------------------------
def region_pids(up: UpProcess) -> dict[str, dict[str, int]]:
    """Region -> node -> PID, from the tables `up` printed: a title line before each, `region NAME
    (initial role ...` for a primary/secondary pair, `region NAME (peer ...` or `(witness ...` active-active."""
    pids: dict[str, dict[str, int]] = {}
    region = None
    for line in up.output:
        title = re.match(r"^region (\S+) \((initial role|peer|witness)", line)
        if title:
            region = title.group(1)
            pids[region] = {}
            continue
        cells = [cell.strip() for cell in line.split("|")]
        if region is not None and len(cells) == 6 and cells[5].isdigit():
            pids[region][cells[0]] = int(cells[5])
    return pids


def all_answer(cluster: config_mod.ClusterConfig, timeout_s: float = ANSWER_TIMEOUT_S) -> bool:
    """Every node answers Status within timeout_s (asked again while some do not: on this shared
    2-core machine a busy node can miss one 2 s deadline)."""
    deadline = time.monotonic() + timeout_s
    pending = list(cluster.nodes)
    admin = rpc.admin_credentials(cluster)  # `up` (another process) started it: its certs dir and secret
    while pending and time.monotonic() < deadline:
        pending = [node for node in pending if node_status(node, credentials=admin) is None]
    return not pending


def status_until_all_up(data_dir, timeout_s: float = ANSWER_TIMEOUT_S) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + timeout_s
    while True:
        result = run_cli("status", "--data-dir", str(data_dir), "--json")
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(1.0)


def node_processes_of(data_dir, any_process: bool = False) -> list[int]:
    """PIDs of node processes (any_process: of every process but this one) whose command line
    names a file under data_dir."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
        except OSError:
            continue
        if ((any_process and int(entry) != os.getpid()) or "tools.node" in command) and str(data_dir) in command \
                and process_alive(int(entry)):
            found.append(int(entry))
    return found


def stop_regions_up(up, pids: dict[str, dict[str, int]], data_dir, exit_timeout_s: float) -> None:
    """Ctrl-C to `up --regions`: it exits 0 and every region's nodes (`pids`, by region) are gone."""
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=exit_timeout_s) == 0
    every = {f"{region}/{name}": pid for region, nodes in pids.items() for name, pid in nodes.items()}
    assert not wait_all_gone(every, timeout_s=10.0)
    assert node_processes_of(data_dir) == []


def kill_regions_up(up, pids: dict[str, dict[str, int]], data_dir) -> None:
    """After a test, whatever happened: `up` and every node it started are killed."""
    if up.process.poll() is None:
        up.process.kill()
        up.process.wait(timeout=10.0)
    for nodes in pids.values():
        for pid in nodes.values():
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
    for pid in node_processes_of(data_dir, any_process=True):  # HAProxy too, when `up` died before it
        os.kill(pid, signal.SIGKILL)


@pytest.mark.cluster
@pytest.mark.long  # about 30 s (two regions, 30 processes): the CI's regions-and-long step runs it
def test_up_two_regions_kill_and_restart_a_region_then_stop(tmp_path):
    base = free_base_ports(2)
    data_dir = tmp_path / "gdb"
    up = UpProcess(data_dir, base, "--regions", "a:primary,b:secondary", "--no-console")
    pids: dict[str, dict[str, int]] = {}
    try:
        up.wait_for("ready", UP_READY_TIMEOUT_S)
        assert "Global Database is ready: 2 regions" in up.output[-1]
        pids = region_pids(up)
        assert sorted(pids) == ["a", "b"] and all(len(nodes) == 15 for nodes in pids.values()), up.text()
        global_cfg = regions_mod.load(data_dir)
        assert f"global cluster file: {global_cfg.path}" in up.text()
        clusters = {region.name: region.cluster() for region in global_cfg.regions}
        assert clusters["b"].base_port == base + PORT_BLOCK
        assert all(all_answer(cluster) for cluster in clusters.values())

        killed = run_cli("chaos", "--data-dir", str(data_dir), "region-kill", "b", timeout_s=CHAOS_TIMEOUT_S)
        assert killed.returncode == 0, killed.stderr
        assert killed.stdout.startswith("region b: killed all 15 running nodes")
        assert not wait_all_gone(pids["b"], timeout_s=10.0)
        assert all(node_status(node, credentials=rpc.admin_credentials(clusters["b"])) is None for node in clusters["b"].nodes)
        assert all(process_alive(pid) for pid in pids["a"].values())
        assert all_answer(clusters["a"])

        restarted = run_cli("chaos", "--data-dir", str(data_dir), "region-restart", "b", timeout_s=CHAOS_TIMEOUT_S)
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout.startswith("region b: restarted journal-az1 (was down, pid ")
        new_pids = {name: int(pid) for name, pid in re.findall(r"(\S+) \(was down, pid (\d+)\)", restarted.stdout)}
        assert len(new_pids) == 15
        pids["b"] = new_pids
        assert all_answer(clusters["b"]) and all_answer(clusters["a"])

        status = status_until_all_up(data_dir)
        assert status.returncode == 0, status.stdout
        assert [r["name"] for r in json.loads(status.stdout)["regions"]] == ["a", "b"]

        stop_regions_up(up, pids, data_dir, UP_EXIT_TIMEOUT_S)
    finally:
        kill_regions_up(up, pids, data_dir)
