"""Cluster configuration: which nodes exist, their AZ, address and data directory.

A cluster is described by one TOML file (`cluster.toml`), written by `quorumdb up`
into the cluster's data directory and read by every node and tool. Nothing else
names addresses. The default layout derives every port from one base port:

    compute-az{1,2,3}      base + 0..2    (client API; compute i on base + i)
    journal-az{1,2,3}      base + 10..12
    adjudicator-az{1,2,3}  base + 20..22
    storage-az{1,2,3}-{a,b} base + 30..35
    (PostgreSQL, non-default clusters: compute port + 3; `quorumdb up`'s supervisor: base + 39)
    metrics (HTTP /metrics) base + 40..54: compute-az1..3, journal-az1..3, adjudicator-az1..3,
                           storage-az1-a..storage-az3-b, in that order
    `quorumdb up`'s web console base + 55, its Prometheus server (`up --prometheus`) base + 56
    a Global Database's writer endpoint (tools/haproxy.py), in its first region's block only:
                           PostgreSQL base + 57, client API base + 58

so one cluster uses the 60 ports [base, base + 60) (PORT_BLOCK).

Node data lives in `<data_dir>/nodes/<name>/`, logs in `<data_dir>/logs/<name>.log`.

A node's servers (gRPC, and PostgreSQL on compute nodes) listen on its `host`, unless the
`[cluster]` setting `listen_host` names another interface: `listen_host = "0.0.0.0"` makes
every node listen on all interfaces while the others still reach it at `host:port`. The
docker-compose cluster (docker/cluster.toml) needs that: its hosts are service names, and a
container on several Docker networks has one address on each.
"""
from __future__ import annotations

import dataclasses
import pathlib
import tomllib

AZS = ("az1", "az2", "az3")
SERVICES = ("journal", "adjudicator", "storage", "compute")
CONFIG_FILE = "cluster.toml"
DEFAULT_BASE_PORT = 7100
DEFAULT_PG_PORT = 5433  # the PostgreSQL port of compute-az1 in the default cluster
PG_PORT_OFFSET = 3       # PostgreSQL ports of a non-default cluster: compute port + 3 (free in the block)

# Offsets of each service's first port from the base port (see module docstring).
PORT_OFFSET = {"compute": 0, "journal": 10, "adjudicator": 20, "storage": 30}
# Metrics ports: base + 40 + the node's place in METRICS_ORDER; after the supervisor's
# base + 39, so the older layout is unchanged. The console and Prometheus follow them.
METRICS_PORT_OFFSET = 40
METRICS_ORDER = ("compute", "journal", "adjudicator", "storage")
CONSOLE_PORT_OFFSET = 55
PROMETHEUS_PORT_OFFSET = 56
# The writer endpoint of a Global Database, on 127.0.0.1 in the first region's block.
WRITER_PG_PORT_OFFSET = 57
WRITER_API_PORT_OFFSET = 58
# Ports one cluster uses from its base port: test clusters pick free blocks of this size.
PORT_BLOCK = 60

READ_MODES = ("quorum", "single")  # the [cluster] read_mode values


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    name: str
    service: str  # journal | adjudicator | storage | compute
    az: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    data_dir: pathlib.Path
    nodes: tuple[NodeConfig, ...]
    # ClockBound-style error bound: now() returns [t - e, t + e].
    clock_error_ns: int = 1_000_000
    # How often an idle adjudicator leader heartbeats (closed timestamp).
    heartbeat_ms: int = 10
    # The adjudicator that fences the journal and leads when the cluster starts.
    initial_leader: str = "adjudicator-az1"
    # A standby takes over when it has seen no leader heartbeat for this long (0 = never).
    failover_timeout_ms: int = 500
    # Journal entries per journal segment file: prefix truncation drops whole segments, so this is
    # the granularity of truncation. Fixed when the cluster is created (segment files are named by it).
    journal_segment_entries: int = 10_000
    # A storage node writes a checkpoint of its MVCC state after this many entries since the
    # last one, then drops its local log up to the checkpoint before (bounds log size and restart).
    storage_checkpoint_entries: int = 20_000
    # How compute nodes read storage: "quorum" (3 of 6 copies, newest version wins) or "single"
    # (one copy that is caught up to the read's ts, own AZ first; compute_node/cluster/read_core.py says
    # why that is not stale). A session may override it: SET quorumdb.read_mode = 'single'.
    read_mode: str = "quorum"
    # How long a storage copy may wait for a read's ts to be closed before it refuses (0: the
    # default, limits.STORAGE_READ_WAIT_MS). An active-active cluster sets it shorter (`quorumdb up`):
    # a region cut off from the others hears no closed timestamp and should refuse soon, not wait.
    read_wait_ms: int = 0
    # --- PostgreSQL endpoint (compute_node/pgwire) ---
    # Compute node i listens for PostgreSQL clients on pg_base_port + i. 0: the default, 5433
    # for a cluster on the default base port 7100, else the first compute port + 3 (inside the
    # cluster's 60-port block, so test clusters on free blocks never collide).
    pg_base_port: int = 0
    # No authentication at all on the PostgreSQL endpoint (development only; logged loudly).
    pg_trust: bool = False
    # DSQL's connection limits, per compute node (see quorumdb/limits.py PG_*).
    pg_connection_lifetime_s: float = 3600.0
    pg_connections_max: int = 10_000
    pg_connections_per_s: float = 100.0
    # Where nodes listen: "" (the default) = each node's own host; "0.0.0.0" = all interfaces
    # (containers, see the module docstring). Peers and clients always use host:port.
    listen_host: str = ""
    # --- Metrics (quorumdb/metrics.py, docs/OBSERVABILITY.md) ---
    # Every node serves Prometheus metrics over HTTP at metrics_port(name) (false: none, and no
    # per-call latency is measured: what `quorumdb up --no-metrics` writes, to measure their cost).
    metrics: bool = True
    # Node i of METRICS_ORDER serves /metrics on metrics_base_port + i; 0: the base port + 40.
    metrics_base_port: int = 0
    # --- Storage-layer recovery (docs/DR.md) ---
    # Where storage copies ship their checkpoints and log continuously: a directory (object-store
    # semantics, quorumdb/objectstore.py) or s3://bucket/prefix. "": DATA_DIR/backup.
    backup_dir: str = ""
    # Objects older than this are removed, except what a snapshot pins and the newest base image
    # that the oldest restorable time needs.
    backup_retention_s: float = 86_400.0
    # A new base image is shipped once the log uploaded after the newest one holds this many bytes
    # (and at least the base's own size): what a restore may have to replay, against the bytes
    # the bases cost.
    backup_base_log_bytes: int = 16 * 1024 * 1024
    # How far back `quorumdb backtrack` can rewind: storage keeps superseded versions this long,
    # unless they exceed backtrack_budget_bytes (per storage copy), which then shortens the window.
    backtrack_window_s: float = 86_400.0
    backtrack_budget_bytes: int = 64 * 1024 * 1024
    # --- Global Database (quorumdb/regions.py, docs/REGIONS.md) ---
    # The region this cluster is ("" for a cluster on its own) and the global cluster file that
    # names every region of its Global Database.
    region: str = ""
    global_file: str = ""
    # --- Security (quorumdb/certs.py, quorumdb/authz.py, docs/SECURITY.md) ---
    # false (the default): every channel between nodes is mutual TLS with certificates of the
    # cluster's CA, clients authenticate with tokens over TLS, the PostgreSQL endpoint requires
    # TLS. true (`quorumdb up --insecure`): plaintext and no authentication on gRPC, for
    # development only; every node says so in its log.
    insecure: bool = False
    # The cluster's certs directory (quorumdb/certs.py); "": DATA_DIR/certs. The regions of a
    # Global Database share one CA, so each region's file names the same directory.
    certs_dir: str = ""

    @property
    def certs_path(self) -> pathlib.Path:
        if not self.certs_dir:
            return self.data_dir / "certs"
        path = pathlib.Path(self.certs_dir)
        return path if path.is_absolute() else (self.data_dir / path).resolve()

    def cert_name(self, node_name: str) -> str:
        """The name of a node's certificate: its node name, qualified by its region in a Global
        Database (whose regions have nodes of the same names and share one certs directory)."""
        return f"{self.region}/{node_name}" if self.region else node_name

    @property
    def backup_location(self) -> str:
        """The backup store: s3://bucket/prefix, or an absolute directory path."""
        if not self.backup_dir:
            return str(self.data_dir / "backup")
        if self.backup_dir.startswith("s3://"):
            return self.backup_dir
        path = pathlib.Path(self.backup_dir)
        return str(path if path.is_absolute() else (self.data_dir / path).resolve())

    def node(self, name: str) -> NodeConfig:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r} in the cluster file")

    def by_service(self, service: str) -> list[NodeConfig]:
        assert service in SERVICES, service
        return [n for n in self.nodes if n.service == service]

    @property
    def journals(self) -> list[NodeConfig]:
        return self.by_service("journal")

    @property
    def adjudicators(self) -> list[NodeConfig]:
        return self.by_service("adjudicator")

    @property
    def storages(self) -> list[NodeConfig]:
        return self.by_service("storage")

    @property
    def computes(self) -> list[NodeConfig]:
        return self.by_service("compute")

    def pg_port(self, name: str) -> int:
        """The PostgreSQL port of a compute node (see pg_base_port)."""
        computes = self.computes
        index = [node.name for node in computes].index(name)
        if self.pg_base_port:
            return self.pg_base_port + index
        if computes[0].port == DEFAULT_BASE_PORT + PORT_OFFSET["compute"]:
            return DEFAULT_PG_PORT + index
        return computes[0].port + PG_PORT_OFFSET + index

    @property
    def base_port(self) -> int:
        """The base port the layout derives from: compute-az1's port (the first compute node's);
        a witness region has journal replicas only: journal-az1's port - its offset."""
        if not self.computes:
            return self.journals[0].port - PORT_OFFSET["journal"]
        return self.computes[0].port - PORT_OFFSET["compute"]

    def metrics_port(self, name: str) -> int:
        """The port of a node's HTTP /metrics endpoint (see the module docstring)."""
        ordered = [node.name for service in METRICS_ORDER for node in self.by_service(service)]
        base = self.metrics_base_port or self.base_port + METRICS_PORT_OFFSET
        return base + ordered.index(name)

    def metrics_url(self, name: str) -> str:
        """Where a scraper on the node's network reads its metrics (host as peers reach it)."""
        return f"http://{self.node(name).host}:{self.metrics_port(name)}/metrics"

    def bind_host(self, node: NodeConfig) -> str:
        """The interface a node's servers listen on (see listen_host)."""
        return self.listen_host or node.host

    def listen_address(self, node: NodeConfig) -> str:
        """host:port a node's gRPC server binds: its port on bind_host()."""
        return f"{self.bind_host(node)}:{node.port}"

    def node_data_dir(self, name: str) -> pathlib.Path:
        return self.data_dir / "nodes" / name

    def log_path(self, name: str) -> pathlib.Path:
        return self.data_dir / "logs" / f"{name}.log"

    @property
    def config_path(self) -> pathlib.Path:
        return self.data_dir / CONFIG_FILE

    def to_toml(self) -> str:
        lines = [
            "# QuorumDB cluster file: every node, its AZ and address.",
            "[cluster]",
            f"clock_error_ns = {self.clock_error_ns}",
            f"heartbeat_ms = {self.heartbeat_ms}",
            f'initial_leader = "{self.initial_leader}"',
            f"failover_timeout_ms = {self.failover_timeout_ms}",
            f"journal_segment_entries = {self.journal_segment_entries}",
            f"storage_checkpoint_entries = {self.storage_checkpoint_entries}",
            f'read_mode = "{self.read_mode}"',
            f"read_wait_ms = {self.read_wait_ms}",
            f"pg_base_port = {self.pg_base_port}",
            f"pg_trust = {'true' if self.pg_trust else 'false'}",
            f"pg_connection_lifetime_s = {float(self.pg_connection_lifetime_s)!r}",
            f"pg_connections_max = {self.pg_connections_max}",
            f"pg_connections_per_s = {float(self.pg_connections_per_s)!r}",
            f'listen_host = "{self.listen_host}"',
            f"metrics = {'true' if self.metrics else 'false'}",
            f"metrics_base_port = {self.metrics_base_port}",
            f'backup_dir = "{self.backup_dir}"',
            f"backup_retention_s = {float(self.backup_retention_s)!r}",
            f"backup_base_log_bytes = {self.backup_base_log_bytes}",
            f"backtrack_window_s = {float(self.backtrack_window_s)!r}",
            f"backtrack_budget_bytes = {self.backtrack_budget_bytes}",
            f'region = "{self.region}"',
            f'global_file = "{self.global_file}"',
            f"insecure = {'true' if self.insecure else 'false'}",
            f'certs_dir = "{self.certs_dir}"',
            "",
        ]
        for node in self.nodes:
            lines += [
                "[[nodes]]",
                f'name = "{node.name}"',
                f'service = "{node.service}"',
                f'az = "{node.az}"',
                f'host = "{node.host}"',
                f"port = {node.port}",
                "",
            ]
        return "\n".join(lines)

    def write(self) -> pathlib.Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.to_toml())
        return self.config_path


def default_nodes(base_port: int = DEFAULT_BASE_PORT, host: str = "127.0.0.1") -> tuple[NodeConfig, ...]:
    nodes: list[NodeConfig] = []
    for i, az in enumerate(AZS):
        nodes.append(NodeConfig(f"journal-{az}", "journal", az, host, base_port + PORT_OFFSET["journal"] + i))
    for i, az in enumerate(AZS):
        nodes.append(
            NodeConfig(f"adjudicator-{az}", "adjudicator", az, host, base_port + PORT_OFFSET["adjudicator"] + i)
        )
    for i, az in enumerate(AZS):
        for j, suffix in enumerate("ab"):
            port = base_port + PORT_OFFSET["storage"] + 2 * i + j
            nodes.append(NodeConfig(f"storage-{az}-{suffix}", "storage", az, host, port))
    for i, az in enumerate(AZS):
        nodes.append(NodeConfig(f"compute-{az}", "compute", az, host, base_port + PORT_OFFSET["compute"] + i))
    return tuple(nodes)


def witness_nodes(base_port: int, host: str = "127.0.0.1") -> tuple[NodeConfig, ...]:
    """A witness region of an active-active cluster: a journal replica in each AZ, nothing else."""
    return tuple(NodeConfig(f"journal-{az}", "journal", az, host, base_port + PORT_OFFSET["journal"] + i)
                 for i, az in enumerate(AZS))


def default_cluster(data_dir: pathlib.Path | str, base_port: int = DEFAULT_BASE_PORT, **settings) -> ClusterConfig:
    return ClusterConfig(data_dir=pathlib.Path(data_dir).resolve(), nodes=default_nodes(base_port), **settings)


def load(path: pathlib.Path | str) -> ClusterConfig:
    """Read a cluster file. The cluster's data directory is the file's directory."""
    path = pathlib.Path(path).resolve()
    with path.open("rb") as f:
        raw = tomllib.load(f)
    settings = raw.get("cluster", {})
    nodes = tuple(
        NodeConfig(n["name"], n["service"], n["az"], n.get("host", "127.0.0.1"), int(n["port"]))
        for n in raw.get("nodes", [])
    )
    for node in nodes:
        if node.service not in SERVICES:
            raise ValueError(f"{path}: node {node.name}: unknown service {node.service!r}")
    known = {f.name for f in dataclasses.fields(ClusterConfig)} - {"data_dir", "nodes"}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"{path}: unknown [cluster] settings: {sorted(unknown)}")
    if settings.get("read_mode", "quorum") not in READ_MODES:
        raise ValueError(f"{path}: read_mode must be one of {', '.join(READ_MODES)}, not {settings['read_mode']!r}")
    return ClusterConfig(data_dir=path.parent, nodes=nodes, **settings)
