"""`quorumdb chaos` and the supervisor inside `quorumdb up`.

Fast tests drive the Supervisor over fake processes (states, expected exits, errors,
which adjudicator `kill-leader` picks) and run `quorumdb chaos` with no cluster. The
end-to-end test runs `quorumdb up` in a subprocess and breaks it with `quorumdb chaos`
subprocesses: kill-leader then a commit through qsql, partition + heal, kill-az +
restart-az, pause + resume; `up` is stopped at the end (and by PID on any failure,
with every node PID it reported).
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time

import grpc
import pytest

from quorumdb import config as config_mod
from quorumdb import netfault
from tools import supervisor as supervisor_mod
from quorumdb.pb import common_pb2
from tests.test_cli import UpProcess, process_alive, run_cli, run_qsql, wait_all_gone
from tests.util import free_base_port

UP_READY_TIMEOUT_S = 180.0
RECOVERY_TIMEOUT_S = 90.0


# --- the supervisor over fake processes ----------------------------------------------------------
class FakeProcess:
    next_pid = 1000

    def __init__(self) -> None:
        FakeProcess.next_pid += 1
        self.pid = FakeProcess.next_pid
        self.returncode = None

    def poll(self):
        return self.returncode


class FakeCluster:
    """The parts of launcher.Cluster the supervisor uses, without processes."""

    def __init__(self, config: config_mod.ClusterConfig) -> None:
        self.config = config
        self.processes: dict[str, FakeProcess] = {}
        self.signals: list[tuple[str, str]] = []

    def names(self):
        from tools.launcher import Cluster
        return Cluster.names(self)

    def start(self, names=None):
        for name in names if names is not None else self.names():
            if name not in self.processes or self.processes[name].returncode is not None:
                self.processes[name] = FakeProcess()

    def kill(self, name):
        self.signals.append(("KILL", name))
        self.processes[name].returncode = -9

    def stop_node(self, name, timeout_s):
        self.signals.append(("TERM", name))
        self.processes[name].returncode = 0

    def pause(self, name):
        self.signals.append(("STOP", name))

    def resume(self, name):
        self.signals.append(("CONT", name))

    def wait_ready(self, names, timeout_s):
        return {}


@pytest.fixture
def supervised(tmp_path):
    config = config_mod.default_cluster(tmp_path / "c", base_port=free_base_port())
    launched = FakeCluster(config)
    launched.start()
    said: list[str] = []
    statuses = {"adjudicator-az1": common_pb2.NodeStatus(role="leader", epoch=3),
                "adjudicator-az2": common_pb2.NodeStatus(role="leader", epoch=5),  # the newer leader
                "adjudicator-az3": None}
    supervisor = supervisor_mod.Supervisor(launched, said.append,
                                           status=lambda node, timeout_s: statuses.get(node.name))
    return supervisor, launched, said, statuses


def states(supervisor) -> dict[str, str]:
    return {node.name: node.state for node in supervisor.nodes()}


def test_node_state_is_what_the_process_and_the_last_action_say():
    assert supervisor_mod.node_state(started=False, alive=False, intent=None) == "stopped"
    assert supervisor_mod.node_state(True, True, None) == "running"
    assert supervisor_mod.node_state(True, True, "paused") == "paused"
    assert supervisor_mod.node_state(True, False, "killed") == "killed"
    assert supervisor_mod.node_state(True, False, "stopped") == "stopped"
    assert supervisor_mod.node_state(True, False, None) == "exited"  # nobody asked: a crash
    assert supervisor_mod.address(7100) == "127.0.0.1:7139"


def test_supervisor_actions_states_and_expected_exits(supervised):
    supervisor, launched, said, _ = supervised
    assert set(states(supervisor).values()) == {"running"}
    victim = launched.processes["journal-az2"]
    result = supervisor.kill("journal-az2")
    assert result.message == f"killed journal-az2 (pid {victim.pid})"
    assert said[-1] == f"chaos: {result.message}"
    assert supervisor.expected_exit(victim.pid)
    assert states(supervisor)["journal-az2"] == "killed"
    crashed = launched.processes["storage-az1-a"]
    crashed.returncode = -11  # died on its own
    assert not supervisor.expected_exit(crashed.pid)
    assert states(supervisor)["storage-az1-a"] == "exited"

    restarted = supervisor.restart("journal-az2")
    assert restarted.message.startswith(f"restarted journal-az2 (was down, pid {launched.processes['journal-az2'].pid})")
    assert states(supervisor)["journal-az2"] == "running"

    supervisor.pause("compute-az1")
    assert states(supervisor)["compute-az1"] == "paused"
    with pytest.raises(supervisor_mod.SupervisorError, match="already paused"):
        supervisor.pause("compute-az1")
    supervisor.resume("compute-az1")
    assert states(supervisor)["compute-az1"] == "running"
    with pytest.raises(supervisor_mod.SupervisorError, match="is not paused"):
        supervisor.resume("compute-az1")
    assert ("STOP", "compute-az1") in launched.signals and ("CONT", "compute-az1") in launched.signals

    supervisor.stop("compute-az2")
    assert states(supervisor)["compute-az2"] == "stopped"
    with pytest.raises(supervisor_mod.SupervisorError) as not_running:
        supervisor.kill("compute-az2")
    assert not_running.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(supervisor_mod.SupervisorError) as unknown:
        supervisor.kill("journal-az9")
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND and "no node named 'journal-az9'" in unknown.value.message


def test_supervisor_az_actions_and_network(supervised):
    supervisor, launched, said, _ = supervised
    killed = supervisor.kill_az("az3")
    az3 = [n.name for n in launched.config.nodes if n.az == "az3"]
    assert killed.message.startswith("killed 5 nodes of az3: ")
    assert {states(supervisor)[name] for name in az3} == {"killed"}
    assert {states(supervisor)[n.name] for n in launched.config.nodes if n.az != "az3"} == {"running"}
    supervisor.restart_az("az3")
    assert {states(supervisor)[name] for name in az3} == {"running"}
    with pytest.raises(supervisor_mod.SupervisorError, match="no AZ named 'az7'"):
        supervisor.restart_az("az7")

    partitioned = supervisor.partition("az1")
    assert partitioned.message.startswith("partitioned az1 from az2, az3: 50 links cut")
    assert len(netfault.current_cuts(launched.config)) == 50
    healed = supervisor.heal()
    assert healed.message.startswith("healed the network: removed 50 cut links")
    assert netfault.current_cuts(launched.config) == set()

    supervisor.close()
    with pytest.raises(supervisor_mod.SupervisorError, match="shutting down"):
        supervisor.restart("journal-az1")


def test_kill_leader_kills_the_highest_epoch_leader(supervised):
    supervisor, launched, _, statuses = supervised
    pid = launched.processes["adjudicator-az2"].pid
    result = supervisor.kill_leader()
    assert result.message == f"killed adjudicator-az2 (pid {pid}, was leader, epoch 5)"
    statuses.clear()
    with pytest.raises(supervisor_mod.SupervisorError, match="no adjudicator says it leads"):
        supervisor.kill_leader()


def test_chaos_without_a_running_up_fails_clearly():
    base = free_base_port()
    # Without a data directory or a token there is nothing to authenticate with: said first.
    result = run_cli("chaos", "--base-port", str(base), "kill-leader")
    assert result.returncode == 1
    assert "no token supplied" in result.stderr and "--token" in result.stderr
    result = run_cli("chaos", "--base-port", str(base), "--insecure", "kill-leader")
    assert result.returncode == 1
    assert f"no `quorumdb up` answers at 127.0.0.1:{base + 39}" in result.stderr
    usage = run_cli("chaos", "--base-port", str(base), "kill")
    assert usage.returncode == 2 and "kill needs a NODE" in usage.stderr
    help_text = run_cli("chaos", "--help")
    assert help_text.returncode == 0
    for action in ("kill NODE", "restart NODE", "pause NODE", "resume NODE", "kill-az AZ", "restart-az AZ",
                   "partition AZ", "heal", "kill-leader"):
        assert action in help_text.stdout


# --- end to end: `quorumdb up` + `quorumdb chaos` in subprocesses ---------------------------------
def chaos(base: int, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", "chaos", "--base-port", str(base), *args],
                          capture_output=True, text=True, timeout=timeout_s)


def chaos_ok(base: int, *args: str) -> str:
    result = chaos(base, *args)
    assert result.returncode == 0, f"chaos {args}: {result.returncode} {result.stdout} {result.stderr}"
    return result.stdout.strip()


def node_states(base: int) -> dict[str, tuple[str, int]]:
    """name -> (state, pid) from `quorumdb chaos nodes`."""
    found = {}
    for line in chaos_ok(base, "nodes").splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 6 and cells[4].isdigit():
            found[cells[0]] = (cells[3], int(cells[4]))
    return found


def until_ok(what: str, attempt, timeout_s: float = RECOVERY_TIMEOUT_S) -> float:
    """Run attempt(i) until it returns True; the seconds it took. Fails with the last output."""
    started = time.monotonic()
    i = 0
    last = None
    while time.monotonic() - started < timeout_s:
        ok, last = attempt(i)
        if ok:
            return time.monotonic() - started
        i += 1
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout_s} s; last: {last}")


def insert_through(port: int, key: int):
    result = run_qsql(port, "-c", f"INSERT INTO kv VALUES ({key}, 'v{key}')")
    return result.returncode == 0, (result.stdout, result.stderr)


@pytest.mark.cluster
@pytest.mark.long  # about a minute (up, every chaos action, stop): the CI's regions-and-long step runs it
def test_up_and_chaos_end_to_end(tmp_path, monkeypatch):
    base = free_base_port()
    # qsql and `quorumdb chaos` find the CA and a token in the data directory, as a user's would.
    monkeypatch.setenv("QUORUMDB_DATA_DIR", str(tmp_path / "data"))
    up = UpProcess(tmp_path / "data", base)
    pids: dict[str, int] = {}
    try:
        up.wait_for("QuorumDB is ready", UP_READY_TIMEOUT_S)
        pids = up.node_pids()
        assert f"supervisor: 127.0.0.1:{base + 39}" in up.text()
        assert {state for state, _ in node_states(base).values()} == {"running"}
        created = run_qsql(base, "-c", "CREATE TABLE kv (k INT PRIMARY KEY, v TEXT)")
        assert created.returncode == 0, created.stderr

        # kill-leader, then a commit through qsql succeeds.
        killed = chaos_ok(base, "kill-leader")
        match = re.fullmatch(r"killed (adjudicator-az\d) \(pid (\d+), was leader, epoch (\d+)\)", killed)
        assert match, killed
        leader = match.group(1)
        took = until_ok("a commit after kill-leader", lambda i: insert_through(base, 100 + i))
        print(f"kill-leader: first commit through qsql {took:.1f} s after the leader was killed")
        up.wait_for(f"node {leader} (pid {match.group(2)}) was killed by SIGKILL, as `quorumdb chaos` asked", 10)
        assert node_states(base)[leader][0] == "killed"
        assert chaos_ok(base, "restart", leader).startswith(f"restarted {leader} (was down, pid ")

        # partition az3: az1 commits; az3's compute refuses; heal: az3 serves every row again.
        assert chaos_ok(base, "partition", "az3").startswith("partitioned az3 from az1, az2: 50 links cut")
        took = until_ok("a commit through az1 during the partition", lambda i: insert_through(base, 200 + i))
        print(f"partition az3: commit through compute-az1 {took:.1f} s after the cut")
        refused = run_qsql(base + 2, "-c", "SELECT count(*) FROM kv")
        assert refused.returncode != 0, refused.stdout
        assert "ERROR" in refused.stderr
        assert "cut links (rules v1): 50" in chaos_ok(base, "nodes")
        assert chaos_ok(base, "heal").startswith("healed the network: removed 50 cut links")
        everything = run_qsql(base, "-A", "-t", "-c", "SELECT count(*) FROM kv").stdout.strip()
        took = until_ok("az3 to serve every row after heal", lambda i: (
            (r := run_qsql(base + 2, "-A", "-t", "-c", "SELECT count(*) FROM kv")).stdout.strip() == everything,
            (r.stdout, r.stderr)))
        print(f"heal: compute-az3 serves all {everything} rows {took:.1f} s after the heal")

        # kill-az + restart-az.
        az2 = {name for name in pids if name.endswith("az2") or "-az2-" in name}
        killed_az = chaos_ok(base, "kill-az", "az2")
        assert killed_az.startswith("killed 5 nodes of az2: "), killed_az
        assert {node_states(base)[name][0] for name in az2} == {"killed"}
        until_ok("a commit through az1 with az2 down", lambda i: insert_through(base, 300 + i))
        assert chaos_ok(base, "restart-az", "az2").startswith("restarted ")
        assert {node_states(base)[name][0] for name in az2} == {"running"}
        everything = run_qsql(base, "-A", "-t", "-c", "SELECT count(*) FROM kv").stdout.strip()
        until_ok("az2 to serve every row after restart-az", lambda i: (
            (r := run_qsql(base + 1, "-A", "-t", "-c", "SELECT count(*) FROM kv")).stdout.strip() == everything,
            (r.stdout, r.stderr)))

        # pause + resume a storage copy: reads and commits go on meanwhile.
        paused_pid = node_states(base)["storage-az1-a"][1]
        assert chaos_ok(base, "pause", "storage-az1-a") == f"paused storage-az1-a (pid {paused_pid}, SIGSTOP)"
        assert node_states(base)["storage-az1-a"][0] == "paused"
        assert process_state(paused_pid) == "T"
        until_ok("a commit with storage-az1-a paused", lambda i: insert_through(base, 400 + i))
        assert chaos_ok(base, "resume", "storage-az1-a") == f"resumed storage-az1-a (pid {paused_pid}, SIGCONT)"
        assert node_states(base)["storage-az1-a"][0] == "running"

        # Clear errors, non-zero exits.
        unknown = chaos(base, "kill", "journal-az9")
        assert unknown.returncode == 1 and "no node named 'journal-az9'" in unknown.stderr
        bad_az = chaos(base, "partition", "az7")
        assert bad_az.returncode == 1 and "no AZ named 'az7'" in bad_az.stderr
        not_paused = chaos(base, "resume", "journal-az1")
        assert not_paused.returncode == 1 and "not paused" in not_paused.stderr

        pids.update({name: pid for name, (_, pid) in node_states(base).items()})
        live = {name: pid for name, pid in pids.items() if process_alive(pid)}
        code = up.terminate_and_wait()
        assert code == 0, up.text()
        assert wait_all_gone(live) == []
        unexpected = [line for line in up.output if "; see " in line and line.startswith("node ")]
        assert unexpected == [], "deaths caused by chaos reported as unexpected:\n" + "\n".join(unexpected)
        assert netfault.current_cuts(config_mod.load(tmp_path / "data" / "cluster.toml")) == set()
    finally:
        pids.update(up.node_pids())
        if up.process.poll() is None:
            # Learn the PIDs of restarted nodes too, then let `up` stop everything it runs.
            with contextlib.suppress(Exception):
                pids.update({name: pid for name, (_, pid) in node_states(base).items()})
            with contextlib.suppress(Exception):
                up.terminate_and_wait()
        up.force_stop(pids)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1].split()[0]
