"""Metrics, the console, `top`, Prometheus' configuration and EXPLAIN ANALYZE, without a cluster.

The cluster tests are tests/test_observability_cluster.py (metrics moving under a workload, a
role change, EXPLAIN ANALYZE's phases) and tests/test_console_cluster.py (the console in a real
browser, `top` in tmux, Prometheus scraping every node).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import re
import time
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adjudicator.core import TxnRequest
from adjudicator.metrics import CommitTimeline
from compute_node import metrics as compute_metrics
from compute_node.cluster import trace as trace_mod
from compute_node.sessions.session import Session
from quorumdb import errors, metrics, rpc, tokens
from tools import cli, launcher, observe, prometheus, top
from quorumdb import config as config_mod
from tools.console import server as console_server
from quorumdb.pb import adjudicator_pb2, common_pb2
from tests.sql_memory_backend import MemoryBackend
from tests.util import free_base_port

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRIC_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


# --- the port layout ---------------------------------------------------------------------------------
def every_port(cluster: config_mod.ClusterConfig) -> dict[str, int]:
    ports = {node.name: node.port for node in cluster.nodes}
    ports.update({f"{node.name} pg": cluster.pg_port(node.name) for node in cluster.computes})
    ports.update({f"{node.name} metrics": cluster.metrics_port(node.name) for node in cluster.nodes})
    base = cluster.base_port
    ports.update({"supervisor": base + 39, "console": base + config_mod.CONSOLE_PORT_OFFSET,
                  "prometheus": base + config_mod.PROMETHEUS_PORT_OFFSET})
    return ports


def test_metrics_ports_follow_the_layout_collide_with_nothing_and_stay_in_the_block(tmp_path):
    default = config_mod.default_cluster(tmp_path, base_port=7100)
    assert [default.metrics_port(n.name) for n in default.computes] == [7140, 7141, 7142]
    assert default.metrics_port("journal-az1") == 7143 and default.metrics_port("storage-az3-b") == 7154
    assert default.metrics_url("adjudicator-az2") == "http://127.0.0.1:7147/metrics"
    for base in (7100, 23_000):
        cluster = config_mod.default_cluster(tmp_path, base_port=base)
        ports = every_port(cluster)
        assert len(set(ports.values())) == len(ports), "two things on one port"
        in_block = {name: port for name, port in ports.items() if "pg" not in name or base != 7100}
        assert all(base <= port < base + config_mod.PORT_BLOCK for port in in_block.values()), in_block


def test_metrics_settings_round_trip_through_the_cluster_file(tmp_path):
    cluster = dataclasses.replace(config_mod.default_cluster(tmp_path, base_port=7100), metrics=False,
                                  metrics_base_port=9000)
    cluster.write()
    loaded = config_mod.load(cluster.config_path)
    assert loaded.metrics is False and loaded.metrics_port("compute-az1") == 9000
    docker = config_mod.load(ROOT / "docker" / "cluster.toml")  # written before metrics existed: defaults
    assert docker.metrics is True and docker.metrics_url("journal-az1") == "http://journal-az1:7143/metrics"


def test_status_json_lists_each_nodes_metrics_url(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=7100)
    nodes = list(cluster.nodes)
    statuses = [common_pb2.NodeStatus(name=n.name, role="replica", health="ok") if n.service == "journal" else None
                for n in nodes]
    objects = json.loads(cli.status_json(nodes, statuses, cluster))
    assert [o["metrics_url"] for o in objects] == [cluster.metrics_url(n.name) for n in nodes]
    off = json.loads(cli.status_json(nodes, statuses, dataclasses.replace(cluster, metrics=False)))
    assert {o["metrics_url"] for o in off} == {""}


# --- histograms and the exposition --------------------------------------------------------------------
def test_histogram_counts_values_in_le_buckets():
    histogram = metrics.Histogram((0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.002, 0.05, 3.0):
        histogram.observe(value)
    histogram.observe(0.005, count=2)
    assert histogram.cumulative() == [("0.001", 2), ("0.01", 5), ("0.1", 6), ("+Inf", 7)]
    assert histogram.count == 7 and histogram.total == pytest.approx(3.0635)


def exposition_of(node_metrics: metrics.NodeMetrics) -> dict:
    return {family.name: family for family in text_string_to_metric_families(node_metrics.exposition().decode())}


def test_node_metrics_exposition_parses_and_follows_the_naming_conventions():
    node_metrics = metrics.NodeMetrics("journal-az1", "journal", "az1")
    node_metrics.rpc_server.child("quorumdb.Journal", "Status").observe(0.0002)
    node_metrics.histogram("quorumdb_test_seconds", "a test histogram").observe(0.3)
    node_metrics.add_service(lambda: [metrics.counter("quorumdb_test_things", "things", 3),
                                      metrics.gauge("quorumdb_test_index", "an index", 7)])
    families = exposition_of(node_metrics)
    assert families["quorumdb_test_things"].type == "counter"
    assert families["quorumdb_test_things"].samples[0].name == "quorumdb_test_things_total"
    assert families["quorumdb_node_info"].samples[0].labels == {"node": "journal-az1", "service": "journal",
                                                                "az": "az1"}
    server = families["quorumdb_grpc_server_handling_seconds"]
    count = next(s for s in server.samples if s.name.endswith("_count"))
    assert count.labels == {"grpc_service": "quorumdb.Journal", "grpc_method": "Status"} and count.value == 1
    assert "process_cpu_seconds" in families and "process_resident_memory_bytes" in families
    for name, family in families.items():
        assert METRIC_NAME.match(name), name
        if family.type == "histogram" and name.startswith("quorumdb_"):
            assert name.endswith(("_seconds", "_entries", "_requests")), f"{name}: a unit in the name"


def test_a_broken_collector_does_not_break_the_scrape():
    node_metrics = metrics.NodeMetrics("x", "compute", "az1")

    def broken():
        yield metrics.gauge("quorumdb_test_before", "ok", 1)
        raise RuntimeError("boom")

    node_metrics.add_service(broken)
    assert "quorumdb_test_before" in exposition_of(node_metrics)


def test_the_metrics_endpoint_answers_get_metrics_and_refuses_the_rest():
    async def run() -> tuple:
        node_metrics = metrics.NodeMetrics("storage-az1-a", "storage", "az1")
        server = await metrics.serve_http("127.0.0.1", 0, node_metrics)
        port = server.sockets[0].getsockname()[1]
        try:
            text = await observe.fetch_metrics_text("127.0.0.1", port)

            async def raw(request: bytes) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                await writer.drain()
                async with asyncio.timeout(5):
                    data = await reader.read()
                writer.close()
                return data

            missing = await raw(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            post = await raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            garbage = await raw(b"hello\r\n\r\n")
        finally:
            server.close()
            await server.wait_closed()
        return text, missing, post, garbage

    text, missing, post, garbage = asyncio.run(run())
    assert text is not None and "quorumdb_node_info" in text
    assert observe.value(observe.parse_metrics(text), "quorumdb_metrics_scrapes_total") == 1.0  # this one
    assert missing.startswith(b"HTTP/1.1 404") and post.startswith(b"HTTP/1.1 405")
    assert garbage.startswith(b"HTTP/1.1 400")


def test_a_timed_unary_handler_observes_every_call_and_still_refuses_cut_peers(tmp_path):
    import grpc

    from quorumdb import netfault

    cluster = config_mod.default_cluster(tmp_path, base_port=7100)
    state = netfault.PartitionState(cluster, "journal-az1")
    histogram = metrics.Histogram()

    async def behavior(request, context):
        return "answer"

    handler = grpc.unary_unary_rpc_method_handler(behavior)
    timed = rpc.guard_handler(handler, state, histogram).unary_unary

    class Context:
        def __init__(self, peer: str) -> None:
            self.peer = peer

        def invocation_metadata(self):
            return ((netfault.NODE_METADATA_KEY, self.peer),)

        async def abort(self, code, details):
            raise RuntimeError(f"aborted {code.name}: {details}")

    assert asyncio.run(timed("request", Context("compute-az1"))) == "answer"
    state.apply(netfault.NetRules(version=1, cuts=frozenset({netfault.link("journal-az1", "compute-az1")})))
    with pytest.raises(RuntimeError, match="UNAVAILABLE"):
        asyncio.run(timed("request", Context("compute-az1")))
    assert histogram.count == 2
    assert rpc.guard_handler(handler, state).unary_unary is not timed  # no timer: the plain guard


# --- what the console and top compute ------------------------------------------------------------------
def test_quantile_interpolates_inside_the_bucket_of_the_interval():
    before = {0.001: 10.0, 0.002: 10.0, 0.004: 10.0, float("inf"): 10.0}
    after = {0.001: 10.0, 0.002: 60.0, 0.004: 110.0, float("inf"): 110.0}  # 50 in (1, 2] ms, 50 in (2, 4] ms
    assert observe.quantile(0.5, before, after) == pytest.approx(0.002)
    assert observe.quantile(0.75, before, after) == pytest.approx(0.003)
    assert observe.quantile(0.5, after, after) is None


def compute_metrics_text(committed: int, conflicts: int, latencies: list[float], cpu_s: float) -> observe.Metrics:
    node_metrics = metrics.NodeMetrics("compute-az1", "compute", "az1")
    histogram = node_metrics.histogram(observe.COMMIT_SECONDS, "commits")
    for latency in latencies:
        histogram.observe(latency)
    node_metrics.add_service(lambda: [
        metrics.counters("quorumdb_compute_commits", "commits", ("sqlstate", "reason"),
                         {("00000", "committed"): committed, ("40001", "write_conflict"): conflicts}),
        metrics.counter("process_cpu_seconds", "cpu", cpu_s),
    ])
    text = node_metrics.exposition().decode()
    samples = observe.parse_metrics(text)
    # The process collector's own cpu figure would win: keep the one the test chose.
    samples[("process_cpu_seconds_total", ())] = cpu_s
    return samples


def snapshot(cluster, at: float, compute: observe.Metrics | None, leader: str = "adjudicator-az1",
             down: tuple[str, ...] = ()) -> observe.Snapshot:
    samples = []
    for node in cluster.nodes:
        status = None
        if node.name not in down:
            role = {"journal": "replica", "storage": "segment", "compute": "query"}.get(node.service, "standby")
            if node.name == leader:
                role = "leader"
            status = common_pb2.NodeStatus(name=node.name, role=role, epoch=2 if leader != "adjudicator-az1" else 1,
                                           health="ok", commit_index=100, applied_index=97 if "storage" in node.name
                                           else 100)
        samples.append(observe.NodeSample(node, status, compute if node.service == "compute" else None))
    return observe.Snapshot(at, 1_700_000_000 + at, samples)


def test_summarize_turns_two_polls_into_rates_quantiles_and_lag(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=7100)
    first = snapshot(cluster, 10.0, compute_metrics_text(100, 5, [0.002] * 10, 1.0))
    second = snapshot(cluster, 12.0, compute_metrics_text(140, 9, [0.002] * 10 + [0.003] * 40, 1.5))
    view = observe.summarize(cluster, second, first)
    assert view.leader == "adjudicator-az1" and view.epoch == 1
    # three compute nodes, each +40 commits and +4 aborts in 2 s
    assert view.commits_per_s == pytest.approx(60.0) and view.aborts_per_s == pytest.approx(6.0)
    assert 2.0 < view.commit_p50_ms <= 3.0 and 2.9 < view.commit_p99_ms <= 3.0
    storage = view.node("storage-az1-a")
    assert storage.lag_entries == 3 and storage.up
    assert view.node("compute-az1").cpu_percent == pytest.approx(25.0)
    assert observe.summarize(cluster, first).commits_per_s is None  # one poll: no rates


def test_changes_name_a_node_going_down_coming_back_and_a_new_leader(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=7100)
    before = observe.summarize(cluster, snapshot(cluster, 1.0, None))
    after = observe.summarize(cluster, snapshot(cluster, 2.0, None, leader="adjudicator-az2",
                                                down=("adjudicator-az1",)),
                              states={"adjudicator-az1": "killed"})
    events = observe.changes(before, after)
    assert ("down", "adjudicator-az1 stopped answering (killed)") in events
    assert ("leader", "leader elected: adjudicator-az2 (epoch 2)") in events
    back = observe.summarize(cluster, snapshot(cluster, 3.0, None, leader="adjudicator-az2"))
    assert any(kind == "up" and text.startswith("adjudicator-az1 answers") for kind, text in observe.changes(after, back))
    assert observe.changes(None, before) == []


def test_top_renders_one_screen_with_every_node_and_the_cluster_figures(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=7100)
    first = snapshot(cluster, 10.0, compute_metrics_text(100, 5, [0.002] * 10, 1.0))
    second = snapshot(cluster, 11.0, compute_metrics_text(110, 5, [0.002] * 20, 1.1), down=("storage-az2-b",))
    screen = top.render(observe.summarize(cluster, second, first, {"storage-az2-b": "killed"}), ["a-b"])
    assert "nodes up: 14/15" in screen and "leader: adjudicator-az1 (epoch 1)" in screen
    assert "commits/s 30.0" in screen and "network: 1 cut links" in screen
    row = next(line for line in screen.splitlines() if line.startswith(" storage-az2-b"))
    assert "killed" in row
    assert all(node.name in screen for node in cluster.nodes)


# --- Prometheus' configuration --------------------------------------------------------------------------
def test_scrape_config_targets_every_node_with_its_labels(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=7100)
    parsed = yaml.safe_load(prometheus.scrape_config(cluster))
    (job,) = parsed["scrape_configs"]
    targets = {tuple(c["targets"]): c["labels"] for c in job["static_configs"]}
    assert len(targets) == 15
    assert targets[("127.0.0.1:7147",)] == {"node": "adjudicator-az2", "service": "adjudicator", "az": "az2"}
    assert parsed["global"]["scrape_interval"] == "5s"


def test_docker_prometheus_yml_is_the_scrape_config_of_the_docker_cluster():
    docker = config_mod.load(ROOT / "docker" / "cluster.toml")
    assert (ROOT / "docker" / "prometheus.yml").read_text() == prometheus.scrape_config(docker)


# --- the console, without a cluster ----------------------------------------------------------------------
class FakeSupervisor:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def nodes(self):
        return []

    def kill(self, name):
        from tools.supervisor import ActionResult
        self.calls.append(("kill", name))
        return ActionResult(f"killed {name} (pid 1)", (name,))

    def heal(self):
        from tools.supervisor import ActionResult
        self.calls.append(("heal",))
        return ActionResult("healed the network: removed 0 cut links (rules v0)", ())


def request(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def console(tmp_path):
    cluster = config_mod.default_cluster(tmp_path / "data", base_port=free_base_port())
    cluster.write()
    launcher.ensure_certs(cluster)  # as `quorumdb up` does before the console starts
    supervisor = FakeSupervisor()
    running = console_server.Console(cluster, supervisor)
    running.start()
    try:
        yield running, supervisor, cluster
    finally:
        running.close()


def test_console_serves_its_page_and_state_and_nothing_else(console):
    running, _, cluster = console
    status, page = request(running.url)
    assert status == 200 and b"/static/console.js" in page and b"http" not in page.replace(b"http-equiv", b"")
    assert request(running.url + "static/console.js")[0] == 200
    assert request(running.url + "static/console.css")[0] == 200
    assert request(running.url + "static/../server.py")[0] == 404
    assert request(running.url + "static/server.py")[0] == 404
    status, body = request(running.url + "api/state")
    state = json.loads(body)
    assert status == 200 and state["cluster"]["base_port"] == cluster.base_port and state["cluster"]["auth"] == "token"
    assert running.url == f"http://127.0.0.1:{cluster.base_port + 55}/"


def test_console_chaos_needs_a_valid_token_and_a_refusal_changes_nothing(console):
    running, supervisor, cluster = console
    url = running.url + "api/chaos"
    kill = {"action": "kill", "target": "storage-az1-a"}
    secret = tokens.load_or_create_secret(cluster.data_dir)
    token, _ = tokens.issue(secret, "admin", 900, time.time())
    other_cluster, _ = tokens.issue(b"\x01" * 32, "admin", 900, time.time())
    expired, _ = tokens.issue(secret, "admin", 300, time.time() - 3_600)
    refused = [
        request(url, kill),
        request(url, kill, {"Authorization": "Bearer ", "X-QuorumDB-User": "admin"}),
        request(url, kill, {"Authorization": f"Bearer {token}", "X-QuorumDB-User": "mallory"}),
        request(url, kill, {"Authorization": f"Bearer {other_cluster}", "X-QuorumDB-User": "admin"}),
        request(url, kill, {"Authorization": f"Bearer {token}"}),
        request(url, kill, {"Authorization": f"Bearer {expired}", "X-QuorumDB-User": "admin"}),
    ]
    assert [status for status, _ in refused] == [401] * 6
    assert "expired" in json.loads(refused[-1][1])["error"]
    assert "quorumdb token" in json.loads(refused[0][1])["error"]
    assert supervisor.calls == []
    good = {"Authorization": f"Bearer {token}", "X-QuorumDB-User": "admin"}
    assert request(url, {"action": "explode"}, good)[0] == 400
    assert request(url, {"action": "kill"}, good)[0] == 400
    status, body = request(url, kill, good)
    assert status == 200 and json.loads(body)["message"] == "killed storage-az1-a (pid 1)"
    assert supervisor.calls == [("kill", "storage-az1-a")]
    events = json.loads(request(running.url + "api/state")[1])["events"]
    assert any(e["text"] == "console (admin): kill storage-az1-a" for e in events)


def test_console_of_a_cluster_without_its_ca_refuses_to_start_and_says_why(tmp_path):
    cluster = config_mod.default_cluster(tmp_path / "data", base_port=free_base_port())
    cluster.write()  # never `up`: no certificates were made
    with pytest.raises(SystemExit) as refused:
        console_server.Console(cluster, FakeSupervisor())
    assert "no cluster CA" in str(refused.value) and str(cluster.data_dir) in str(refused.value)


def test_console_of_an_insecure_cluster_needs_no_token_and_pg_trust_is_not_enough(tmp_path):
    base = config_mod.default_cluster(tmp_path, base_port=free_base_port())
    answers = []
    for settings in ({"insecure": True}, {"pg_trust": True}):
        cluster = dataclasses.replace(base, **settings)
        cluster.write()
        launcher.ensure_certs(cluster)  # none for the insecure one
        supervisor = FakeSupervisor()
        running = console_server.Console(cluster, supervisor)
        running.start()
        try:
            status, body = request(running.url + "api/chaos", {"action": "heal"})
            auth = json.loads(request(running.url + "api/state")[1])["cluster"]["auth"]
        finally:
            running.close()
        answers.append((status, auth, supervisor.calls))
    # --insecure turns authentication off everywhere; --trust only on the PostgreSQL endpoint.
    assert answers == [(200, "insecure", [("heal",)]), (401, "token", [])]


# --- EXPLAIN ANALYZE ------------------------------------------------------------------------------------
def explain_lines(session: Session, sql: str) -> list[str]:
    (result,) = asyncio.run(session.execute(sql))
    assert result.error is None, result.error
    assert result.columns == [("QUERY PLAN", "text")] and result.command_tag == "EXPLAIN"
    return [row[0] for row in result.rows]


def test_explain_analyze_runs_the_statement_and_shows_its_phases():
    backend = MemoryBackend()
    session = Session(backend, "s")
    asyncio.run(session.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT)"))
    lines = explain_lines(session, "EXPLAIN ANALYZE INSERT INTO kv VALUES ('a', 1)")
    assert lines[0].startswith("Insert on kv")
    assert [line.split(":")[0].strip() for line in lines if line.startswith("  ") and not line.startswith("   ")] == [
        "parse", "plan", "execute", "commit"]
    assert "  commit:" in "\n".join(lines) and ", committed" in "\n".join(lines)
    assert len(backend.commits) == 2  # the CREATE and the INSERT: EXPLAIN ANALYZE really inserts
    assert lines[-1].startswith("Total: ")
    select = explain_lines(session, "EXPLAIN (ANALYZE) SELECT v FROM kv WHERE k = 'a'")
    assert "Point Lookup on kv" in "\n".join(select)
    assert any(line == "  execute: " + line.split("execute: ")[1] and "1 row(s)" in line for line in select
               if "execute:" in line)
    assert any("read-only" in line for line in select)


def test_explain_analyze_commit_commits_the_block_and_shows_its_phases():
    backend = MemoryBackend()
    session = Session(backend, "s")
    asyncio.run(session.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT)"))
    asyncio.run(session.execute("BEGIN"))
    inside = explain_lines(session, "EXPLAIN ANALYZE INSERT INTO kv VALUES ('b', 2)")
    assert any("transaction block is open" in line for line in inside)
    assert len(backend.commits) == 1 and session.transaction_status == "T"
    lines = explain_lines(session, "explain analyze commit;")
    assert lines[0] == "Commit" and any(line.startswith("  commit: ") and "committed" in line for line in lines)
    assert len(backend.commits) == 2 and session.transaction_status == "I"
    assert explain_lines(session, "EXPLAIN ANALYZE COMMIT") == ["Commit (no transaction in progress)"]
    (failed,) = asyncio.run(session.execute("EXPLAIN ANALYZE SELECT * FROM missing"))
    assert failed.error is not None and failed.error.sqlstate == "42P01"


def test_trace_phases_add_up_and_overlapping_reads_count_once():
    trace = trace_mod.StatementTrace("compute-az1", "quorum", started=100.0)
    trace.parse_s, trace.parse_cached = 0.001, True
    trace.plan_s = 0.002
    trace.execute = (100.003, 100.013)
    for start, end in ((100.004, 100.010), (100.005, 100.008)):
        read = trace.start_read("get", 1, None)
        read.started, read.ended = start, end
    trace.commit = trace_mod.CommitTrace(100.013, 100.020, outcome="committed", adjudicator="adjudicator-az1",
                                         sends=1, commit_ts=5, index=9)
    trace.commit.timing = adjudicator_pb2.CommitTiming(queue_ns=100_000, adjudication_ns=50_000,
                                                       journal_append_ns=3_000_000, commit_wait_ns=1_000_000,
                                                       total_ns=4_500_000, batch_commits=3, batch_entries=3,
                                                       leader="adjudicator-az1")
    trace.ended = 100.0205
    assert trace_mod.phases_agree(trace)
    text = "\n".join(trace_mod.render(trace))
    assert "waiting for storage (any read running): 6.000 ms" in text
    assert "on the compute node (compile, evaluate, buffer writes): 4.000 ms" in text
    assert "commit stream to adjudicator-az1 and back" in text and ": 2.500 ms" in text
    assert "journal append + fsync on 2 of 3 replicas (3 entries in the batch): 3.000 ms" in text
    assert "other (replies, task switches): 0.350 ms" in text
    assert text.endswith("Total: 20.500 ms (the phases above add up to 20.000 ms)")
    trace.ended = 100.030
    assert not trace_mod.phases_agree(trace)


def test_commit_timeline_explains_a_commit_by_its_batch():
    now = [0.0]
    timeline = CommitTimeline(clock=lambda: now[0])
    txn = TxnRequest(1, (b"k",), txn_id="t1")
    now[0] = 1.0
    batch = timeline.batch_taken([TxnRequest(1, (b"j",), txn_id="t0"), txn])
    now[0] = 1.0002
    batch.decided = now[0]
    assert timeline.append_started() is batch
    now[0] = 1.0052
    timeline.appended(batch, 2)
    reply = adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.COMMITTED, commit_ts=5, index=7)
    timing = timeline.explain(txn, reply, arrived=0.999, decided_wait=1.0053, replied=1.0073, leader="adjudicator-az1")
    assert (timing.queue_ns, timing.adjudication_ns, timing.journal_append_ns, timing.commit_wait_ns) == (
        1_000_000, 200_000, 5_000_000, 2_000_000)
    assert timing.total_ns == 8_300_000 and timing.batch_commits == 2 and timing.batch_entries == 2
    unknown = timeline.explain(TxnRequest(1, (), txn_id="t9"), reply, 1.0, 1.0, 1.001, "adjudicator-az1")
    assert unknown.total_ns == 1_000_000 and unknown.queue_ns == 0
    timeline.answered([reply, reply], 1.0, 1.01)
    assert timeline.outcomes[adjudicator_pb2.COMMITTED] == 2


def test_commit_outcomes_are_labelled_by_sqlstate_and_reason():
    assert compute_metrics.commit_labels(None) == ("00000", "committed")
    assert compute_metrics.commit_labels(errors.conflict("k")) == ("40001", "write_conflict")
    assert compute_metrics.commit_labels(errors.SqlError("40001", "schema has been updated ... (OC001)")) == (
        "40001", "schema_changed")
    assert compute_metrics.commit_labels(errors.completion_unknown("x")) == ("40003", "completion_unknown")
    assert compute_metrics.commit_labels(errors.SqlError("57P03", "journal unavailable")) == ("57P03", "unavailable")
