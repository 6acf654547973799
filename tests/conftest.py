"""Shared fixtures: real clusters of processes on 127.0.0.1.

`cluster_factory(**settings)` starts the whole default cluster (3 journal,
3 adjudicator, 6 storage, 3 compute) in a temporary directory on a free block of
ports and waits until every node is healthy; every process it started is stopped
at teardown (by PID), and the tail of each node's log is printed if the test failed.
"""
from __future__ import annotations

import contextlib
import pathlib

import pytest

from tools.launcher import Cluster
from tests.differential.pgserver import PostgresMissing, PostgresServer
from tests.util import make_config

READY_TIMEOUT_S = 90.0


def start_cluster(tmp_path: pathlib.Path, **settings) -> Cluster:
    return start_ready(make_config(tmp_path, **settings))


def start_ready(config) -> Cluster:
    """Start the nodes of `config` and wait until every one is healthy; on failure their logs are
    printed and they are stopped."""
    cluster = Cluster(config)
    try:
        cluster.start()
        cluster.wait_ready(timeout_s=READY_TIMEOUT_S, healthy=True)
    except BaseException:
        dump_logs(cluster)
        cluster.stop_all()
        raise
    return cluster


def call_failed(request) -> bool:
    """Whether the test using a fixture failed (its report is kept by pytest_runtest_makereport)."""
    return getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed


@contextlib.contextmanager
def running_nodes(cluster: Cluster, names, request, timeout_s: float, healthy: bool = False):
    """Start `names` of `cluster` and wait until they answer; their logs are printed if that fails
    or the test does; they are stopped on the way out."""
    try:
        cluster.start(names)
        cluster.wait_ready(names, timeout_s=timeout_s, healthy=healthy)
        yield cluster
    except BaseException:
        dump_logs(cluster)
        raise
    finally:
        if call_failed(request):
            dump_logs(cluster)
        cluster.stop_all()


def dump_logs(cluster: Cluster, lines: int = 25) -> None:
    for node in cluster.config.nodes:
        path = cluster.config.log_path(node.name)
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            print(f"----- {node.name} ({path}) -----")
            print("\n".join(tail))


def pytest_collection_modifyitems(config, items):
    """Tests marked `compose` (Docker, tests/compose), `regions` (clusters of several regions:
    active-active, 33 node processes, and the Global Database, 30) or `long` (the slowest single
    tests, half a minute or more) run only when `-m` names the marker (the default suite stays
    within its 20 minutes).

    So `python -m pytest` and `python -m pytest -m "not cluster"` never start Docker or a cluster
    of several regions; `python -m pytest -m compose tests/compose` and `python -m pytest -m
    regions` (as .ci/run does, each as a step of its own) do.
    """
    expression = config.option.markexpr or ""
    separate = [marker for marker in ("compose", "regions", "long") if marker not in expression]
    if not separate:
        return
    dropped = [item for item in items if any(item.get_closest_marker(m) is not None for m in separate)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def cluster_factory(tmp_path, request):
    started: list[Cluster] = []

    def factory(**settings) -> Cluster:
        cluster = start_cluster(tmp_path / f"c{len(started)}", **settings)
        started.append(cluster)
        return cluster

    yield factory
    failed = call_failed(request)
    for cluster in started:
        if failed:
            dump_logs(cluster)
        cluster.stop_all()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """One healthy cluster shared by the tests of a module that do not break it."""
    cluster = start_cluster(tmp_path_factory.mktemp("shared"))
    yield cluster
    cluster.stop_all()


@pytest.fixture(scope="module")
def postgres():
    """A scratch PostgreSQL 15 (tests/differential/pgserver.py) for a module's comparisons. Without
    the server binaries the tests FAIL (bash scripts/install-postgres), never skip."""
    try:
        server = PostgresServer().start()
    except PostgresMissing as error:
        pytest.fail(f"PostgreSQL is required for this comparison: {error}")
    try:
        yield server
    finally:
        server.stop()
