"""`quorumdb status` and `quorumdb up`, run as the user runs them: separate processes.

The end-to-end test starts `quorumdb up` in a subprocess on a free block of ports,
waits for its `ready` line, runs `qsql -c`, stops it with SIGTERM and checks that
every node process it printed is gone and that it exited 0; then starts it again
on the same data directory and finds the committed rows.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tools import cli
from quorumdb import config as config_mod
from tools.launcher import Cluster
from tests.util import free_base_port, make_config

UP_READY_TIMEOUT_S = 180.0
UP_EXIT_TIMEOUT_S = 40.0
QSQL_TIMEOUT_S = 60.0


def _env(data_dir) -> dict[str, str] | None:
    """The environment of a tool run against the cluster of `data_dir`: its CA and a token come
    from there (QUORUMDB_DATA_DIR, as a user exports it; credentials only)."""
    return None if data_dir is None else dict(os.environ, QUORUMDB_DATA_DIR=str(data_dir))


def run_cli(*args: str, timeout_s: float = 30.0, data_dir=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, env=_env(data_dir))


def run_qsql(port: int, *args: str, data_dir=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.qsql", "-p", str(port), "-X", *args],
                          capture_output=True, text=True, timeout=QSQL_TIMEOUT_S, env=_env(data_dir))


# --- no cluster needed ----------------------------------------------------------------------
def test_status_with_nothing_running_shows_every_node_down():
    base = free_base_port()
    # --insecure: no credentials to find here, and nothing answers either way
    result = run_cli("status", "--base-port", str(base), "--insecure")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].split("|")[0].strip() == "name"
    assert len([line for line in lines if line.rstrip().endswith("| down")]) == 15
    assert lines[-1] == "(0 of 15 nodes up)"

    result = run_cli("status", "--base-port", str(base), "--json", "--insecure")
    assert result.returncode == 1
    nodes = json.loads(result.stdout)
    assert len(nodes) == 15
    assert {node["name"] for node in nodes} == {n.name for n in config_mod.default_nodes(base)}
    assert all(node["up"] is False and node["health"] == "down" for node in nodes)
    assert {node["address"] for node in nodes if node["name"] == "compute-az1"} == {f"127.0.0.1:{base}"}


def test_up_writes_then_reuses_the_cluster_file(tmp_path):
    err = io.StringIO()
    created = cli.load_or_create_cluster(tmp_path / "data", 27300, err)
    assert (tmp_path / "data" / "cluster.toml").exists()
    assert cli.base_port_of(created) == 27300
    again = cli.load_or_create_cluster(tmp_path / "data", 27400, err)
    assert again.nodes == created.nodes  # the existing file wins
    assert "--base-port 27400 ignored" in err.getvalue()
    assert "27300" in err.getvalue()
    quiet = io.StringIO()
    cli.load_or_create_cluster(tmp_path / "data", None, quiet)
    assert quiet.getvalue() == ""


def test_up_refuses_ports_in_use(tmp_path):
    cluster = config_mod.default_cluster(tmp_path / "data", base_port=free_base_port())
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", cluster.node("storage-az2-a").port))
        listener.listen()
        busy = cli.ports_in_use(cluster)
    assert [node.name for node in busy] == ["storage-az2-a"]


# --- with processes ----------------------------------------------------------------------------
@pytest.mark.cluster
def test_status_reports_running_journals_and_down_nodes(tmp_path):
    config = make_config(tmp_path)
    journals = [node.name for node in config.journals]
    with Cluster(config) as cluster:
        cluster.start(journals)
        cluster.wait_ready(journals, timeout_s=60.0)
        base = cli.base_port_of(config)
        result = run_cli("status", "--base-port", str(base), "--json", data_dir=config.data_dir)
        table = run_cli("status", "--data-dir", str(config.data_dir))
    assert result.returncode == 1, result.stderr
    nodes = {node["name"]: node for node in json.loads(result.stdout)}
    for name in journals:
        assert nodes[name]["up"] is True
        assert nodes[name]["service"] == "journal"
        assert nodes[name]["health"] != "down"
    assert all(not node["up"] for name, node in nodes.items() if name not in journals)
    assert table.returncode == 1
    assert table.stdout.splitlines()[-1] == "(3 of 15 nodes up)"
    journal_line = next(line for line in table.stdout.splitlines() if line.startswith(" journal-az1 "))
    assert "| down" not in journal_line


class UpProcess:
    """`quorumdb up` in a subprocess, its output collected by a reader thread."""

    def __init__(self, data_dir: pathlib.Path, base_port: int, *options: str) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "up", "--data-dir", str(data_dir), "--base-port", str(base_port),
             *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, word: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {word!r} from quorumdb up within {timeout_s} s:\n" + self.text()) from None
            if line is None:
                raise AssertionError(f"quorumdb up exited ({self.process.poll()}) before {word!r}:\n" + self.text())
            self.output.append(line)
            if word in line:
                return

    def text(self) -> str:
        return "\n".join(self.output)

    def node_pids(self) -> dict[str, int]:
        """Node name -> PID, from the table `up` printed."""
        pids = {}
        for line in self.output:
            cells = [cell.strip() for cell in line.split("|")]
            if len(cells) == 6 and cells[5].isdigit():
                pids[cells[0]] = int(cells[5])
        return pids

    def terminate_and_wait(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=UP_EXIT_TIMEOUT_S)
        self.reader.join(timeout=5.0)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        return code

    def force_stop(self, pids: dict[str, int]) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10.0)
        for pid in pids.values():
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_all_gone(pids: dict[str, int], timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [name for name, pid in pids.items() if process_alive(pid)]
        if not alive:
            return []
        time.sleep(0.1)
    return [name for name, pid in pids.items() if process_alive(pid)]


def run_up_session(data_dir: pathlib.Path, base_port: int, check) -> str:
    """Start `quorumdb up`, wait for ready, run check(port), SIGTERM it; its output."""
    up = UpProcess(data_dir, base_port)
    pids: dict[str, int] = {}
    try:
        up.wait_for("QuorumDB is ready", UP_READY_TIMEOUT_S)
        pids = up.node_pids()
        assert len(pids) == 15, up.text()
        assert all(process_alive(pid) for pid in pids.values())
        check()
        code = up.terminate_and_wait()
        assert code == 0, up.text()
        left = wait_all_gone(pids)
        assert left == [], f"node processes still running after quorumdb up exited: {left}"
        assert "stopped" in up.output[-1], up.text()
        return up.text()
    finally:
        up.force_stop(pids)


@pytest.mark.cluster
@pytest.mark.long  # about 30 s (up, rows, Ctrl-C, up again; the CI's quickstart step runs `make up` too): the CI's regions-and-long step runs it
def test_up_end_to_end_then_restart_keeps_rows(tmp_path):
    data_dir = tmp_path / "data"
    base = free_base_port()

    def first_run() -> None:
        created = run_qsql(base, "-c", "CREATE TABLE pets (id int PRIMARY KEY, name text)", data_dir=data_dir)
        assert (created.returncode, created.stdout, created.stderr) == (0, "CREATE TABLE\n", "")
        inserted = run_qsql(base, "-c", "INSERT INTO pets VALUES (1, 'cat'), (2, NULL), (3, 'dog')", data_dir=data_dir)
        assert (inserted.returncode, inserted.stdout) == (0, "INSERT 0 3\n"), inserted.stderr
        # Through another compute node (another AZ): the commit is visible there at once.
        selected = run_qsql(base + 1, "-c", "SELECT id, name FROM pets ORDER BY id", data_dir=data_dir)
        assert selected.stdout == " id | name \n----+------\n  1 | cat\n  2 | \n  3 | dog\n(3 rows)\n\n"
        failed = run_qsql(base, "-v", "VERBOSITY=verbose", "-c", "SELECT * FROM no_such_table", data_dir=data_dir)
        assert failed.returncode == 1
        assert failed.stderr.startswith("ERROR:  42P01: ")
        script = tmp_path / "script.sql"
        script.write_text("SELECT count(*) AS pets FROM pets;\nSELECT * FROM nope;\nSELECT 2;\n")
        stopped = run_qsql(base, "-v", "ON_ERROR_STOP=1", "-f", str(script), data_dir=data_dir)
        assert stopped.returncode == 3
        assert stopped.stdout == " pets \n------\n    3\n(1 row)\n\n"
        assert stopped.stderr == f'qsql:{script}:2: ERROR:  relation "nope" does not exist\n'
        status = run_cli("status", "--base-port", str(base), data_dir=data_dir)
        assert status.returncode == 0, status.stdout
        assert status.stdout.splitlines()[-1] == "(15 of 15 nodes up)"

    output = run_up_session(data_dir, base, first_run)
    assert f"qsql -h 127.0.0.1 -p {base}" in output
    assert f"logs: {data_dir.resolve() / 'logs'}" in output
    leader_lines = [line for line in output.splitlines() if line.startswith(" adjudicator-") and "| leader" in line]
    assert len(leader_lines) == 1, output
    assert " | down " not in output, "every node answered before `up` said it was ready"

    def second_run() -> None:
        selected = run_qsql(base, "-A", "-t", "-c", "SELECT id, name FROM pets ORDER BY id", data_dir=data_dir)
        assert (selected.returncode, selected.stdout) == (0, "1|cat\n2|\n3|dog\n"), selected.stderr

    # A different --base-port is ignored with a warning: the cluster file decides.
    output = run_up_session_with_port(data_dir, base + 200, base, second_run)
    assert f"--base-port {base + 200} ignored" in output


def run_up_session_with_port(data_dir: pathlib.Path, asked_port: int, real_port: int, check) -> str:
    assert asked_port != real_port
    return run_up_session(data_dir, asked_port, check)


def test_up_writes_the_clock_error_bound_into_the_cluster_file(tmp_path):
    cluster = make_config(tmp_path)
    cluster.write()
    args = cli.build_parser().parse_args(["up", "--data-dir", str(tmp_path), "--clock-error-ms", "0.25"])
    changed = cli.apply_pg_options(cluster, args)
    assert changed.clock_error_ns == 250_000
    assert config_mod.load(changed.write()).clock_error_ns == 250_000
    kept = cli.apply_pg_options(changed, cli.build_parser().parse_args(["up", "--data-dir", str(tmp_path)]))
    assert kept.clock_error_ns == 250_000, "without the flag the cluster file's bound stays"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["up", "--clock-error-ms", "-1"])
