"""tools/bench/compare's pgbench side against a real cluster: the custom scripts run through the
PostgreSQL endpoint of all three compute nodes, their per-transaction logs are read back, and the
cluster's node processes are found for CPU accounting. No timed assertions (2 shared cores)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tools.bench import compare_main, pgbench_load, procstat, report
from tests.util import require

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _pgbench():
    require(shutil.which("pgbench"), "pgbench", "bash scripts/install-postgres")

REPO = pathlib.Path(__file__).resolve().parent.parent
ROWS = 300
TIMEOUT_S = 120.0  # python start-up + set-up + 2 s of load, on a loaded 2-core machine


def _quorumdb(*args: str, data_dir=None) -> subprocess.CompletedProcess:
    # data_dir: the cluster's, for the CA and a token (QUORUMDB_DATA_DIR: credentials only).
    env = dict(os.environ, QUORUMDB_DATA_DIR=str(data_dir)) if data_dir is not None else None
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env)


@pytest.fixture(scope="module")
def prepared(shared_cluster):
    config = shared_cluster.config
    base = config.node("compute-az1").port
    done = _quorumdb("bench", "--workload", "point-write", "--clients", "1", "--duration", "0.3", "--warmup", "0",
                     "--rows", str(ROWS), "--base-port", str(base), "--json", data_dir=config.data_dir)
    assert done.returncode == 0, done.stderr
    token = _quorumdb("token", "--user", "admin", "--data-dir", str(config.data_dir))
    assert token.returncode == 0, token.stderr
    endpoints = [("127.0.0.1", config.pg_port(node.name)) for node in config.computes]
    return shared_cluster, endpoints, dict(os.environ, PGPASSWORD=token.stdout.strip()), base


@pytest.mark.parametrize("workload", ["point-write", "point-read"])
def test_pgbench_scripts_run_against_quorumdb(prepared, tmp_path, workload):
    cluster, endpoints, env, base = prepared
    script = tmp_path / f"{workload}.sql"
    script.write_text(pgbench_load.script(workload))
    commands = []
    for (host, port), share in zip(endpoints, pgbench_load.split_clients(4, len(endpoints))):
        target = pgbench_load.Target(host, port, "admin", "postgres", share)
        commands.append(pgbench_load.command(shutil.which("pgbench"), target, ["-f", str(script)], 2, "simple",
                                             str(tmp_path / f"node{len(commands)}"), variables={"rows": ROWS}))
    pids = procstat.cluster_node_pids(cluster.config.config_path)
    assert set(pids) == set(cluster.pids.values())  # all 15 nodes, found by their config file
    counters_before = report.parse_read_counters(_quorumdb("status", "--base-port", str(base), "--json", data_dir=cluster.config.data_dir).stdout)
    figures, problem, before, after = compare_main.measure_pgbench(
        commands, tmp_path, duration_s=1.0, seconds=2, env=env, probe=lambda: procstat.snapshot(pids))
    counters = report.read_counter_delta(
        counters_before, report.parse_read_counters(_quorumdb("status", "--base-port", str(base), "--json", data_dir=cluster.config.data_dir).stdout))
    print(f"\n{workload} via pgbench: {json.dumps(figures)}\nreads: {counters}")
    assert problem is None, problem
    assert figures["processes"] == 3 and figures["errors"] == 0
    assert 0 < figures["ops"] <= figures["transactions_all"] == figures["pgbench_transactions"]
    assert figures["latency_ms_p50"] <= figures["latency_ms_p99"] <= figures["latency_ms_max"]
    assert figures["loadgen_cpu_ms_per_op"] > 0
    assert procstat.delta(before, after).seconds > 0  # the cluster worked
    assert counters["reads_quorum"] > 0 and report.read_mode_problem("quorum", counters) is None


def test_pgbench_failures_are_reported_not_hidden(prepared, tmp_path):
    _, endpoints, env, _ = prepared
    script = tmp_path / "bad.sql"
    script.write_text("SELECT v FROM no_such_table WHERE k = 1;\n")
    target = pgbench_load.Target(*endpoints[0], "admin", "postgres", 1)
    command = pgbench_load.command(shutil.which("pgbench"), target, ["-f", str(script)], 1, "simple",
                                   str(tmp_path / "node0"))
    figures, problem, _, _ = compare_main.measure_pgbench([command], tmp_path, duration_s=1.0, seconds=1, env=env,
                                                          probe=lambda: None)
    print(f"\nproblem: {problem}")
    assert problem is not None and "exited" in problem
    assert figures is None or figures["ops"] == 0
