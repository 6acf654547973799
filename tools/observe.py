"""The cluster seen from outside: every node's Status and /metrics, polled, and what they say.

Used by the web console (tools/console) and `quorumdb top`. `Observer.poll` asks every node
for its Status (gRPC) and its metrics (HTTP), concurrently, each with a deadline; a node that does
not answer is down (no Status) or shown without figures (no metrics). The rest is pure:
`parse_metrics` reads Prometheus' text format with prometheus_client's parser, `summarize` turns two
consecutive polls into a `View` (rates over the interval between them: commits/s, aborts/s, commit
latency quantiles from the histograms' bucket deltas, per-node CPU), and `changes` says what
happened between two views (a node went down or came back, a new leader, health changed): the
console's event timeline.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from typing import Any, Iterable, Sequence

from quorumdb import config as config_mod
from quorumdb import errors, limits

# A metric sample key: (sample name, sorted label items).
SampleKey = tuple[str, tuple[tuple[str, str], ...]]
Metrics = dict[SampleKey, float]


# The metric families a View is made of (summarize): the console and `top` parse only these, and
# ask each node for only their samples (VIEW_SAMPLES), so that a poll every second costs little.
VIEW_FAMILIES = ("quorumdb_compute_commits", "quorumdb_compute_commit_seconds", "quorumdb_compute_reads",
                 "quorumdb_compute_read_hedges", "process_cpu_seconds", "process_resident_memory_bytes")
VIEW_SAMPLES = ("quorumdb_compute_commits_total", "quorumdb_compute_commit_seconds_bucket",
                "quorumdb_compute_reads_total", "quorumdb_compute_read_hedges_total", "process_cpu_seconds_total",
                "process_resident_memory_bytes")


def parse_metrics(text: str, families: Sequence[str] | None = None) -> Metrics:
    """Every sample of a /metrics text (Prometheus' exposition format) by name and labels; with
    `families`, only theirs (the other lines are dropped before parsing: the parser is the costly part)."""
    from prometheus_client.parser import text_string_to_metric_families

    if families is not None:
        text = "\n".join(line for line in text.splitlines()
                         if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(tuple(families)))
    samples: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def value(metrics: Metrics | None, name: str, **labels: str) -> float | None:
    """One sample's value (None if absent)."""
    if metrics is None:
        return None
    return metrics.get((name, tuple(sorted(labels.items()))))


def total(metrics: Metrics | None, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    if metrics is None:
        return 0.0
    wanted = labels.items()
    return sum(v for (sample, sample_labels), v in metrics.items()
               if sample == name and wanted <= dict(sample_labels).items())


def labelled(metrics: Metrics | None, name: str, label: str) -> str | None:
    """The value of `label` on the first sample of `name` (info-style gauges)."""
    for (sample, labels), _ in (metrics or {}).items():
        if sample == name:
            return dict(labels).get(label)
    return None


def buckets(metrics: Metrics | None, name: str, **labels: str) -> dict[float, float]:
    """A histogram's cumulative buckets {le: count}, summed over the samples matching `labels`."""
    result: dict[float, float] = {}
    wanted = labels.items()
    for (sample, sample_labels), v in (metrics or {}).items():
        if sample != name + "_bucket":
            continue
        label_map = dict(sample_labels)
        le = label_map.pop("le")
        if wanted <= label_map.items():
            bound = math.inf if le == "+Inf" else float(le)
            result[bound] = result.get(bound, 0.0) + v
    return result


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """The q-quantile of the observations made between two readings of a histogram's cumulative
    buckets, interpolated linearly inside its bucket (as Prometheus' histogram_quantile); None
    when nothing was observed. The last finite bound stands for an answer in the +Inf bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not bounds or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound


# --- polling -------------------------------------------------------------------------------------
@dataclasses.dataclass
class NodeSample:
    node: config_mod.NodeConfig
    status: Any | None            # common_pb2.NodeStatus, None when the node did not answer
    metrics: Metrics | None       # None when /metrics did not answer (or the cluster has none)


@dataclasses.dataclass
class Snapshot:
    monotonic: float
    wall: float
    nodes: list[NodeSample]


async def fetch_metrics_text(host: str, port: int, timeout_s: float = limits.METRICS_SCRAPE_TIMEOUT_S,
                             names: Sequence[str] | None = None) -> str | None:
    """GET http://host:port/metrics (only the samples `names`, if given), or None (no answer within
    timeout_s, an error, a refusal)."""
    import urllib.parse

    target = "/metrics" + ("?" + urllib.parse.urlencode([("name[]", name) for name in names]) if names else "")
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                chunks, size = [], 0
                while size <= limits.METRICS_SCRAPE_BYTES_MAX:  # bounded: a node's metrics are ~30 KB
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        return None
    return body.decode("utf-8", errors="replace")


class Observer:
    """Polls one cluster's nodes (reuses its gRPC channels between polls; close() when done)."""

    def __init__(self, cluster: config_mod.ClusterConfig, host: str | None = None,
                 families: Sequence[str] | None = VIEW_FAMILIES, samples: Sequence[str] | None = VIEW_SAMPLES,
                 credentials=None) -> None:
        from tools import toolcreds

        self.cluster = cluster
        self.host = host  # None: each node's own host; else reach every node there (published ports)
        self.families = families  # the metric families parsed from each scrape (None: all)
        self.samples = samples    # the samples asked of each node (None: all)
        # What the node ports are shown (tools/toolcreds.py); by default the cluster's data directory's.
        self._channels = toolcreds.Channels(credentials if credentials is not None else toolcreds.for_cluster(cluster))

    @property
    def credentials(self):
        return self._channels.credentials

    async def _status(self, node: config_mod.NodeConfig):
        import grpc

        from tools.launcher import STUBS
        from quorumdb.pb import common_pb2

        address = f"{self.host}:{node.port}" if self.host else node.address
        stub = STUBS[node.service](self._channels.get(address))
        try:
            return await stub.Status(common_pb2.StatusRequest(), timeout=limits.STATUS_TIMEOUT_S)
        except grpc.RpcError:
            return None

    async def _metrics(self, node: config_mod.NodeConfig) -> Metrics | None:
        if not self.cluster.metrics:
            return None
        text = await fetch_metrics_text(self.host or node.host, self.cluster.metrics_port(node.name),
                                        names=self.samples)
        if text is None:
            return None
        try:
            return parse_metrics(text, self.families)
        except ValueError:
            return None

    async def poll(self) -> Snapshot:
        nodes = list(self.cluster.nodes)
        statuses = await asyncio.gather(*(self._status(node) for node in nodes))
        metrics = await asyncio.gather(*(self._metrics(node) for node in nodes))
        return Snapshot(time.monotonic(), time.time(),
                        [NodeSample(node, status, sample) for node, status, sample in zip(nodes, statuses, metrics)])

    async def close(self) -> None:
        await self._channels.close()


# --- what a poll says --------------------------------------------------------------------------------
@dataclasses.dataclass
class NodeView:
    name: str
    az: str
    service: str
    up: bool
    role: str = ""
    epoch: int = 0
    health: str = "down"
    commit_index: int = 0
    applied_index: int = 0
    lag_entries: int | None = None        # storage and adjudicators: committed entries not applied here
    closed_lag_ms: float | None = None    # how far its closed timestamp is behind the clock
    cpu_percent: float | None = None      # of one core, over the last interval
    rss_mb: float | None = None
    leader: str = ""
    state: str = ""                       # what `quorumdb up`'s supervisor says (killed, paused, ...)
    metrics_url: str = ""


@dataclasses.dataclass
class View:
    wall: float
    interval_s: float | None
    nodes: list[NodeView]
    leader: str = ""
    epoch: int = 0
    commit_index: int = 0                 # the journal's highest commit index
    commits_per_s: float | None = None
    aborts_per_s: float | None = None     # 40001 answers to commits, per second
    errors_per_s: float | None = None     # other failed commits (40003, 57P03) per second
    reads_per_s: float | None = None
    hedges_per_s: float | None = None
    commit_p50_ms: float | None = None
    commit_p99_ms: float | None = None

    def node(self, name: str) -> NodeView | None:
        return next((node for node in self.nodes if node.name == name), None)


COMMITS = "quorumdb_compute_commits_total"
COMMIT_SECONDS = "quorumdb_compute_commit_seconds"


def summarize(cluster: config_mod.ClusterConfig, current: Snapshot, previous: Snapshot | None = None,
              states: dict[str, str] | None = None) -> View:
    """One poll as a View; rates and quantiles over the interval since `previous` (None: no rates)."""
    interval_s = current.monotonic - previous.monotonic if previous is not None else None
    before = {sample.node.name: sample for sample in previous.nodes} if previous is not None else {}
    journal_commit = max((s.status.commit_index for s in current.nodes
                          if s.status is not None and s.node.service == "journal"), default=0)
    nodes = [_node_view(cluster, sample, before.get(sample.node.name), interval_s, journal_commit,
                        (states or {}).get(sample.node.name, "")) for sample in current.nodes]
    leaders = [(n.epoch, n.name) for n in nodes if n.service == "adjudicator" and n.up and n.role == "leader"]
    epoch, leader = max(leaders) if leaders else (0, "")
    view = View(current.wall, interval_s, nodes, leader, epoch, journal_commit)
    if interval_s is None or interval_s <= 0:
        return view
    computes = [(s, before.get(s.node.name)) for s in current.nodes if s.node.service == "compute"]

    def rate(name: str, **labels: str) -> float:
        # Counters restart at 0 with their process: a negative delta counts from 0.
        delta = 0.0
        for sample, old in computes:
            now = total(sample.metrics, name, **labels)
            then = total(old.metrics, name, **labels) if old is not None else 0.0
            delta += now - then if now >= then else now
        return delta / interval_s

    if any(sample.metrics is not None for sample, _ in computes):
        view.commits_per_s = rate(COMMITS, sqlstate=errors.SUCCESSFUL_COMPLETION)
        view.aborts_per_s = rate(COMMITS, sqlstate=errors.SERIALIZATION_FAILURE)
        view.errors_per_s = rate(COMMITS) - view.commits_per_s - view.aborts_per_s
        view.reads_per_s = rate("quorumdb_compute_reads_total")
        view.hedges_per_s = rate("quorumdb_compute_read_hedges_total")
        after_buckets: dict[float, float] = {}
        before_buckets: dict[float, float] = {}
        for sample, old in computes:
            now = buckets(sample.metrics, COMMIT_SECONDS)
            then = buckets(old.metrics, COMMIT_SECONDS) if old is not None else {}
            if any(now.get(bound, 0.0) < count for bound, count in then.items()):
                then = {}  # restarted: everything it holds is new
            for bound, count in now.items():
                after_buckets[bound] = after_buckets.get(bound, 0.0) + count
                before_buckets[bound] = before_buckets.get(bound, 0.0) + then.get(bound, 0.0)
        for q, field in ((0.5, "commit_p50_ms"), (0.99, "commit_p99_ms")):
            seconds = quantile(q, before_buckets, after_buckets)
            setattr(view, field, None if seconds is None else seconds * 1000)
    return view


def _node_view(cluster: config_mod.ClusterConfig, sample: NodeSample, old: NodeSample | None,
               interval_s: float | None, journal_commit: int, state: str) -> NodeView:
    node, status, metrics = sample.node, sample.status, sample.metrics
    url = cluster.metrics_url(node.name) if cluster.metrics else ""
    view = NodeView(node.name, node.az, node.service, status is not None, state=state, metrics_url=url)
    if status is None:
        return view
    view.role, view.epoch, view.health = status.role, status.epoch, status.health or "?"
    view.commit_index, view.applied_index, view.leader = status.commit_index, status.applied_index, status.leader
    if node.service == "storage" and journal_commit:
        view.lag_entries = max(0, journal_commit - status.applied_index)
    elif node.service == "adjudicator" and status.role != "leader":
        view.lag_entries = max(0, status.commit_index - status.applied_index)
    if status.closed_ts:
        view.closed_lag_ms = max(0.0, (time.time() - status.closed_ts / 1e9) * 1000)
    if metrics is not None:
        rss = value(metrics, "process_resident_memory_bytes")
        view.rss_mb = rss / 2**20 if rss is not None else None
        cpu = value(metrics, "process_cpu_seconds_total")
        old_cpu = value(old.metrics, "process_cpu_seconds_total") if old is not None else None
        if cpu is not None and old_cpu is not None and interval_s and cpu >= old_cpu:
            view.cpu_percent = 100 * (cpu - old_cpu) / interval_s
    return view


def changes(previous: View | None, current: View) -> list[tuple[str, str]]:
    """(kind, text) of what changed between two views: the event timeline's entries."""
    if previous is None:
        return []
    events: list[tuple[str, str]] = []
    for node in current.nodes:
        old = previous.node(node.name)
        if old is None:
            continue
        if old.up and not node.up:
            events.append(("down", f"{node.name} stopped answering" + (f" ({node.state})" if node.state else "")))
        elif node.up and not old.up:
            events.append(("up", f"{node.name} answers ({node.role}, health {node.health})"))
        elif node.up and old.health != node.health:
            events.append(("health", f"{node.name}: {node.health}"))
    if current.leader and (current.leader, current.epoch) != (previous.leader, previous.epoch):
        events.append(("leader", f"leader elected: {current.leader} (epoch {current.epoch})"))
    elif previous.leader and not current.leader:
        events.append(("leader", f"no adjudicator leads (was {previous.leader})"))
    return events


def view_json(view: View) -> dict[str, Any]:
    return dataclasses.asdict(view)


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    """A number for a table cell ('' when unknown)."""
    if value is None:
        return ""
    return f"{value:.{digits}f}{unit}"


def nodes_in_order(view: View, services: Sequence[str] = config_mod.SERVICES) -> Iterable[NodeView]:
    return sorted(view.nodes, key=lambda n: (n.az, services.index(n.service), n.name))
