"""Prometheus metrics of one node process (docs/OBSERVABILITY.md lists every metric).

Theory of operation
-------------------
Almost everything worth watching already exists as a counter or a field of a node's service
(what `Status` reports, and more). So each node registers one custom collector
(`NodeMetrics.set_service`, a function of its service's state) that turns those fields into metric
families *at scrape time*: a scrape costs the node a millisecond or two every few seconds, and
the hot paths pay nothing for it.

Latency distributions cannot be read afterwards, so they are observed where they happen, once per
RPC, stream message, read or commit, into `Histogram`: a bisect over fixed bucket bounds and two
additions, no lock. That is safe because every observation and every scrape runs on the node's
one event loop: the /metrics endpoint (`serve_http`) is an asyncio server on that loop, not
prometheus_client's threaded one. prometheus_client provides the metric families, the process
collector (CPU seconds, resident memory, open files: read from /proc at scrape time) and the text
exposition format. `GET /metrics?name[]=a&name[]=b` answers only those samples (as Prometheus'
own endpoint does): the console polls every node every second and needs a handful.

The same server answers `GET /role` on compute nodes, the health check of the writer endpoint
(tools/haproxy.py): `200 writer` when the node's region accepts commits, `503 <role>`
otherwise (reader, fenced, ... : compute_node/cluster/region_view.py). The compute node registers the
callback (`NodeMetrics.set_role`); other nodes have none and answer 404.

A node process has one `NodeMetrics` (`install`, called by tools.node when the cluster file
says `metrics = true`, the default); `current()` gives it to the service that wants to register
its collector or a histogram. With metrics off, `current()` is None and nothing is measured.

Names follow Prometheus' conventions: `quorumdb_<component>_<what>_<unit>`, `_total` for
counters, base units (seconds, bytes). Journal indexes are plain numbers (`_index`).
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import urllib.parse
from typing import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from quorumdb import limits

log = logging.getLogger("quorumdb.metrics")

# Bucket upper bounds in seconds: dense from 0.1 ms to 10 ms, where this machine's commits and
# reads live, so the console's p50/p99 (interpolated in a bucket) are close to the truth.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.0002, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# Batch sizes (entries per journal append, requests per commit-stream message).
SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Histogram:
    """Counts of observations per bucket, for one event loop (no lock: see the module docstring)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        assert list(bounds) == sorted(set(bounds)), "bucket bounds strictly increase"
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        # bisect_left: the first bound >= value, so a value equal to a bound counts in it (le).
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' buckets: (le, observations <= le), ending with +Inf."""
        buckets = []
        running = 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            buckets.append((_float_text(bound), running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return buckets


class HistogramSet:
    """Histograms of one metric by label values, made on first use (at most HISTOGRAM_CHILDREN_MAX)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.bounds = tuple(bounds)
        self._children: dict[tuple[str, ...], Histogram] = {}
        self._overflow = Histogram(self.bounds)  # label values past the bound share one histogram

    def child(self, *values: str) -> Histogram:
        assert len(values) == len(self.labels), (values, self.labels)
        histogram = self._children.get(values)
        if histogram is None:
            if len(self._children) >= limits.METRICS_HISTOGRAM_CHILDREN_MAX:
                return self._overflow
            histogram = self._children[values] = Histogram(self.bounds)
        return histogram

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, histogram in sorted(self._children.items()):
            family.add_metric(list(values), histogram.cumulative(), histogram.total)
        return family


def _float_text(value: float) -> str:
    return repr(float(value))


# --- building metric families (used by the services' collectors) ---------------------------------
def gauge(name: str, documentation: str, value: float | None = None,
          labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    if labels:
        family = GaugeMetricFamily(name, documentation, labels=list(labels))
        family.add_metric(list(labels.values()), value)
        return family
    return GaugeMetricFamily(name, documentation, value=value)


def gauges(name: str, documentation: str, label: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """`name` without `_total`: prometheus_client adds it in the exposition."""
    assert not name.endswith("_total"), name
    return CounterMetricFamily(name, documentation, value=value)


def counters(name: str, documentation: str, labels: Sequence[str],
             values: dict[tuple[str, ...], float]) -> CounterMetricFamily:
    assert not name.endswith("_total"), name
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


# --- one node process ----------------------------------------------------------------------------
ServiceCollect = Callable[[], Iterable[Metric]]
# (accepts commits, role name) of a compute node, asked on every GET /role.
RoleProbe = Callable[[], tuple[bool, str]]


class NodeMetrics:
    """The metrics of one node process: its registry and what the node registers in it."""

    def __init__(self, name: str, service: str, az: str) -> None:
        self.name = name
        self.service = service
        self.az = az
        # support_collectors_without_names: this object (no describe()) also answers restricted scrapes.
        self.registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.rpc_server = HistogramSet(
            "quorumdb_grpc_server_handling_seconds",
            "Time to handle one unary RPC, or one message of a bidirectional stream, on this node's server",
            ("grpc_service", "grpc_method"))
        self.rpc_client = HistogramSet(
            "quorumdb_grpc_client_handling_seconds",
            "Time from sending one request (unary, or an op on a stream) to its answer, as this node sees it",
            ("grpc_service", "grpc_method"))
        self._services: list[ServiceCollect] = []
        self._histograms: list[HistogramSet] = [self.rpc_server, self.rpc_client]
        self.scrapes = 0
        self.role: RoleProbe | None = None  # compute nodes only: what /role answers
        self.registry.register(self)

    def set_role(self, probe: RoleProbe) -> None:
        """Answer GET /role from `probe` (a compute node; without one, /role is 404)."""
        self.role = probe

    def add_service(self, collect: ServiceCollect) -> None:
        """Register a function that yields the node's own metric families at scrape time."""
        self._services.append(collect)

    def histogram_set(self, name: str, documentation: str, labels: Sequence[str] = (),
                      bounds: Sequence[float] = LATENCY_BUCKETS_S) -> HistogramSet:
        histograms = HistogramSet(name, documentation, labels, bounds)
        self._histograms.append(histograms)
        return histograms

    def histogram(self, name: str, documentation: str, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> Histogram:
        """A histogram without labels."""
        return self.histogram_set(name, documentation, (), bounds).child()

    # the prometheus_client Collector protocol
    def collect(self) -> Iterable[Metric]:
        yield gauge("quorumdb_node_info", "This node: its name, service and AZ (always 1)", 1,
                    {"node": self.name, "service": self.service, "az": self.az})
        yield counter("quorumdb_metrics_scrapes", "Scrapes of this node's /metrics", self.scrapes)
        for histograms in self._histograms:
            yield histograms.family()
        for collect in self._services:
            try:
                yield from collect()
            except Exception:  # noqa: BLE001 - a broken collector must not break the scrape
                log.exception("a metrics collector failed")

    def exposition(self, names: Iterable[str] | None = None) -> bytes:
        """The text format of every metric, or only of the samples named (Prometheus' `name[]`)."""
        self.scrapes += 1
        if names:
            return generate_latest(self.registry.restricted_registry(list(names)))
        return generate_latest(self.registry)


_current: NodeMetrics | None = None


def install(name: str, service: str, az: str) -> NodeMetrics:
    """Make this process's NodeMetrics (tools.node, before the service starts)."""
    global _current
    _current = NodeMetrics(name, service, az)
    return _current


def current() -> NodeMetrics | None:
    """This node process's metrics; None outside a node or when the cluster has metrics off."""
    return _current


def clear() -> None:
    global _current
    _current = None


# --- the /metrics endpoint ---------------------------------------------------------------------------
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                503: "Service Unavailable"}


async def serve_http(host: str, port: int, metrics: NodeMetrics) -> asyncio.AbstractServer:
    """An HTTP/1.1 server on the running loop answering `GET /metrics` (the caller closes it).

    One request per connection; the request head is read with a deadline and a size bound, and at
    most METRICS_HTTP_CONNECTIONS_MAX connections are served at once (more are closed at once)."""
    busy = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busy
        if busy >= limits.METRICS_HTTP_CONNECTIONS_MAX:
            writer.close()
            return
        busy += 1
        try:
            status, content_type, body = await _answer(reader, metrics)
            head = (f"HTTP/1.1 {status} {_STATUS_TEXT[status]}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            async with asyncio.timeout(limits.METRICS_HTTP_TIMEOUT_S):
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the scraper went away or was too slow: nothing to answer
        finally:
            busy -= 1
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=limits.METRICS_HTTP_REQUEST_BYTES_MAX)


async def _answer(reader: asyncio.StreamReader, metrics: NodeMetrics) -> tuple[int, str, bytes]:
    async with asyncio.timeout(limits.METRICS_HTTP_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3:
        return 400, "text/plain; charset=utf-8", b"bad request\n"
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        return 405, "text/plain; charset=utf-8", b"only GET\n"
    path, _, query = target.partition("?")
    if path == "/metrics":
        # `?name[]=x&name[]=y`: only those samples (the console asks for the few it shows).
        body = metrics.exposition(urllib.parse.parse_qs(query).get("name[]"))
        return 200, CONTENT_TYPE_LATEST, b"" if method == "HEAD" else body
    if path == "/role" and metrics.role is not None:
        status, body = role_reply(*metrics.role())
        return status, "text/plain; charset=utf-8", b"" if method == "HEAD" else body
    if path == "/":
        text = f"QuorumDB {metrics.service} node {metrics.name} ({metrics.az}): metrics at /metrics\n"
        return 200, "text/plain; charset=utf-8", text.encode()
    return 404, "text/plain; charset=utf-8", b"not found: try /metrics\n"


def role_reply(accepts_commits: bool, role: str) -> tuple[int, bytes]:
    """GET /role: 200 `writer` when the node's region accepts commits, else 503 and the role
    (a health checker needs only the status; a person reads the body). A role not known yet (no
    adjudicator has answered) is `unknown`: never a writer."""
    if accepts_commits:
        return 200, b"writer\n"
    return 503, f"{_role_name(role)}\n".encode()


def _role_name(role: str) -> str:
    if role == "secondary":
        return "reader"
    return role or "unknown"
