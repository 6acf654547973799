"""`quorumdb bench` against a real cluster: every workload runs for about a second through the CLI.

No timed assertions: the figures are printed (run with -s to see them), only their sanity is checked.
"""
from __future__ import annotations

import json
import pathlib
import os
import subprocess
import sys

import pytest

from tools.bench import workloads

pytestmark = pytest.mark.cluster

REPO = pathlib.Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 120.0  # python start-up + table setup + 1.5 s of load, on a loaded 2-core machine


def bench(cluster, *args: str) -> subprocess.CompletedProcess:
    port = cluster.config.node("compute-az1").port
    command = [sys.executable, "-m", "tools.cli", "bench", "--base-port", str(port), *args]
    # The cluster's data directory supplies the CA and a token (as QUORUMDB_DATA_DIR, credentials only).
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env=dict(os.environ, QUORUMDB_DATA_DIR=str(cluster.config.data_dir)))


@pytest.mark.parametrize("workload", list(workloads.WORKLOADS))
def test_every_workload_reports_sane_numbers(shared_cluster, workload):
    done = bench(shared_cluster, "--workload", workload, "--clients", "3", "--duration", "1.5", "--warmup", "0.5",
                 "--rows", "300", "--scale", "2", "--seed", "7", "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # exactly one JSON object, no progress on stdout
    report = json.loads(lines[0])
    print(f"\n{workload}: {report['ops']} ops, {report['throughput_tps']:.1f} tps, "
          f"p50 {report['latency_ms_p50']:.1f} ms, p99 {report['latency_ms_p99']:.1f} ms, aborts {report['aborts']}")
    assert report["workload"] == workload and report["clients"] == 3 and report["duration_s"] == 1.5
    assert report["errors"] == 0, report["error_samples"]
    assert report["ops"] > 0 and report["throughput_tps"] > 0
    assert 0 < report["latency_ms_p50"] <= report["latency_ms_p95"] <= report["latency_ms_p99"] \
        <= report["latency_ms_max"]
    assert report["aborts"] >= 0
    assert len(report["endpoints"]) == 3  # --base-port means the cluster's three compute nodes
    # the bench's own CPU over the measured window (tools/bench/compare's load-generator column)
    assert report["warmup_ops"] >= 0
    assert report["client_cpu_s"] >= 0 and report["client_cpu_ms_per_op"] >= 0
    assert "[" not in done.stderr  # --json: no progress lines


def test_human_output_has_progress_and_totals(shared_cluster):
    done = bench(shared_cluster, "--workload", "point-read", "--clients", "2", "--duration", "2.2", "--warmup", "0",
                 "--rows", "300", "--driver", "threads")
    assert done.returncode == 0, done.stderr
    assert "tps" in done.stderr and "p99" in done.stderr  # the live line, once a second
    for word in ("throughput", "p50", "p95", "p99", "max", "aborts", "errors"):
        assert word in done.stdout, done.stdout


def test_setup_is_idempotent_and_the_data_is_there(shared_cluster):
    from quorumdb import client as client_mod
    for _ in range(2):
        done = bench(shared_cluster, "--workload", "bank-contended", "--clients", "2", "--duration", "0.5",
                     "--warmup", "0", "--hot", "5", "--json")
        assert done.returncode == 0, done.stderr
    port = shared_cluster.config.node("compute-az2").port
    with client_mod.connect("127.0.0.1", port) as conn:
        # transfers move money, never create or destroy it
        count, total = conn.execute("SELECT count(*), sum(balance) FROM bench_accounts").rows[0]
    assert count >= 5  # earlier tests in this module may have used more hot accounts
    assert int(total) == count * 1_000_000


def test_unreachable_cluster_fails_fast_with_a_message():
    done = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "--workload", "point-read", "--port", "1",
                           "--duration", "1", "--timeout", "2", "--insecure"],
                          cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 1
    assert "quorumdb bench:" in done.stderr
