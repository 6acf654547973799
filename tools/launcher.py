"""Start, stop, kill and restart the nodes of a cluster as separate OS processes.

Used by `quorumdb up` and by the tests. Each node runs as
    python -m tools.node --config <data_dir>/cluster.toml --name <node>
in its own process group (so a Ctrl-C at the terminal reaches only the launcher,
which then stops the nodes in order), with stdout and stderr appended to
`<data_dir>/logs/<node>.log`.

Unless the cluster is `insecure`, `Cluster.start` first makes the cluster's CA and every node's
certificate (`ensure_certs`, kept if they exist) and remembers the cluster (`rpc.remember_cluster`),
so that this process's own calls to its nodes (`node_status`, `rpc.Channels()`) present the
tools' admin certificate and a token.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from typing import Iterable

import grpc

from quorumdb import certs, rpc
from quorumdb import config as config_mod
from quorumdb import limits
from quorumdb.config import ClusterConfig, NodeConfig
from quorumdb.pb import adjudicator_pb2_grpc, common_pb2, compute_pb2_grpc, journal_pb2_grpc, storage_pb2_grpc

STUBS = {
    "journal": journal_pb2_grpc.JournalStub,
    "adjudicator": adjudicator_pb2_grpc.AdjudicatorStub,
    "storage": storage_pb2_grpc.StorageStub,
    "compute": compute_pb2_grpc.ComputeStub,
}
# Start order: the journal first (everything follows it), compute last.
START_ORDER = ("journal", "adjudicator", "storage", "compute")


def node_status(node: NodeConfig, timeout_s: float = limits.STATUS_TIMEOUT_S,
                credentials=None) -> common_pb2.NodeStatus | None:
    """The node's Status, or None if it does not answer within timeout_s.

    `credentials` (quorumdb.credentials.ClientCredentials): default, the admin credentials of the
    cluster this process started (`rpc.remember_cluster`), else plaintext."""
    if credentials is None:
        credentials = rpc.known_credentials(node.address)
    with rpc.sync_client_channel(node.address, credentials) as channel:
        stub = STUBS[node.service](channel)
        try:
            return stub.Status(common_pb2.StatusRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return None


def ensure_certs(config: ClusterConfig) -> list[str]:
    """The cluster's CA and a certificate per node (and the tools' one, which the supervisor also
    serves with), made if missing, before any node starts; nothing for an insecure cluster.
    Returns what it created."""
    if config.insecure:
        return []
    return certs.ensure(config.certs_path, [(config.cert_name(n.name), node_cert_hosts(config, n)) for n in config.nodes])


def node_cert_hosts(config: ClusterConfig, node: NodeConfig) -> list[str]:
    """A node certificate's names: its certificate name ("<region>/<node>" in a Global Database,
    what other regions verify), its node name (what its own region verifies, and its host name in
    the compose deployment), its host, localhost and 127.0.0.1."""
    hosts = certs.default_hosts(config.cert_name(node.name), node.host)
    return list(dict.fromkeys([hosts[0], node.name, *hosts[1:]]))


# Ports one cluster uses from its base port (see quorumdb/config.py: +39 is the supervisor,
# +40..54 the nodes' metrics, +55 the web console, +56 Prometheus).
PORT_BLOCK = config_mod.PORT_BLOCK


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(attempts: int = 200) -> int:
    """A base port whose whole block [base, base + PORT_BLOCK) is free now, away from 7100 and ephemeral ports.

    For test and harness clusters; not seeded (ports are not part of a replay)."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20_000, 30_000, PORT_BLOCK)
        if all(_port_free(base + i) for i in range(PORT_BLOCK)):
            return base
    raise RuntimeError("no free block of ports found")


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM to a process this one started (by its PID), SIGKILL if it has not exited within
    `timeout_s`; nothing if it has already exited."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


class LaunchError(RuntimeError):
    pass


class Cluster:
    """The processes of one cluster. Every process it starts, it can stop by PID."""

    def __init__(self, config: ClusterConfig, python: str = sys.executable, log_level: str = "INFO"):
        self.config = config
        self.python = python
        self.log_level = log_level
        self.processes: dict[str, subprocess.Popen] = {}

    # --- lifecycle -------------------------------------------------------------
    def names(self, services: Iterable[str] | None = None) -> list[str]:
        services = tuple(services) if services is not None else START_ORDER
        return [n.name for s in START_ORDER if s in services for n in self.config.by_service(s)]

    def start(self, names: Iterable[str] | None = None) -> None:
        if not self.config.config_path.exists():
            self.config.write()
        ensure_certs(self.config)
        rpc.remember_cluster(self.config)
        for name in names if names is not None else self.names():
            if not self.is_running(name):
                self._spawn(name)

    def _spawn(self, name: str) -> None:
        self.config.node(name)  # KeyError for an unknown name
        log_path = self.config.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_path, "ab") as log:
            self.processes[name] = subprocess.Popen(
                [self.python, "-m", "tools.node", "--config", str(self.config.config_path),
                 "--name", name, "--log-level", self.log_level],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )

    def is_running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items() if p.poll() is None}

    def exits(self) -> list[tuple[str, int, int]]:
        """(name, pid, exit code) of every current process that has exited (one per name: the latest)."""
        processes = list(self.processes.items())  # a snapshot: a supervisor thread may restart nodes
        return [(name, p.pid, p.returncode) for name, p in processes if p.poll() is not None]

    def exited(self) -> dict[str, int]:
        """Nodes that were started and have exited, with their exit codes."""
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def kill(self, name: str) -> None:
        """SIGKILL: the node gets no chance to clean up (a crash)."""
        process = self.processes.get(name)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def stop_node(self, name: str, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within timeout_s."""
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        try:
            os.kill(process.pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
        except ProcessLookupError:
            pass
        stop_process(process, timeout_s)

    def restart(self, name: str, kill: bool = True) -> None:
        if kill:
            self.kill(name)
        else:
            self.stop_node(name)
        self._spawn(name)

    def pause(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGCONT)

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Stop every node this Cluster started, compute first and the journal last.

        Each tier gets SIGTERM and up to timeout_s to exit, then SIGKILL, so the
        nodes still running never spend their shutdown reconnecting to stopped ones.
        """
        rpc.forget_cluster(self.config)
        order = {name: START_ORDER.index(self.config.node(name).service) for name in self.processes}
        for tier in reversed(range(len(START_ORDER))):
            running = [p for name, p in self.processes.items() if order[name] == tier and p.poll() is None]
            for process in running:
                try:
                    os.kill(process.pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
                    process.terminate()
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout_s
            for process in running:
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    # --- readiness -------------------------------------------------------------
    def wait_ready(self, names: Iterable[str] | None = None, timeout_s: float = 60.0,
                   healthy: bool = False) -> dict[str, common_pb2.NodeStatus]:
        """Wait until every named node answers Status (and, with healthy=True, reports health "ok").

        Raises LaunchError naming the nodes that did not, and the log files to read.
        """
        pending = list(names if names is not None else self.names())
        statuses: dict[str, common_pb2.NodeStatus] = {}
        deadline = time.monotonic() + timeout_s
        while pending:
            for name in list(pending):
                if name in self.processes and not self.is_running(name):
                    raise LaunchError(
                        f"{name} exited with code {self.processes[name].returncode}; "
                        f"see {self.config.log_path(name)}"
                    )
                status = node_status(self.config.node(name), timeout_s=1.0)
                if status is not None and (not healthy or status.health == "ok"):
                    statuses[name] = status
                    pending.remove(name)
            if not pending:
                break
            if time.monotonic() > deadline:
                logs = ", ".join(str(self.config.log_path(n)) for n in pending)
                raise LaunchError(f"not ready after {timeout_s:.0f} s: {', '.join(pending)} (logs: {logs})")
            time.sleep(0.1)
        return statuses


# --- a Global Database: one Cluster per region ----------------------------------------------------
def region_cluster_config(global_cfg, region) -> ClusterConfig:
    """A new region's cluster file: the default layout on the region's own port block, naming its
    region and the global cluster file (so its nodes find the other regions).

    In an active-active cluster a peer has the default layout too, and a witness only its 3 journal
    replicas; both peers name the first peer's adjudicator-az1 (qualified) as the initial leader,
    and every region waits active_active_failover_timeout_ms before a standby takes over."""
    # Every region uses the global data directory's certs: one CA, so the regions' nodes trust each other.
    certs_dir = str(global_cfg.path.parent / "certs")
    if not global_cfg.active_active:
        return config_mod.default_cluster(region.data_dir, region.base_port, region=region.name,
                                          global_file=str(global_cfg.path), certs_dir=certs_dir)
    settings = dict(region=region.name, global_file=str(global_cfg.path), certs_dir=certs_dir,
                    failover_timeout_ms=active_active_failover_timeout_ms(global_cfg.wan_ms),
                    read_wait_ms=active_active_read_wait_ms(global_cfg.wan_ms))
    if region.role == "witness":
        return ClusterConfig(data_dir=region.data_dir.resolve(), nodes=config_mod.witness_nodes(region.base_port),
                             initial_leader="", **settings)
    return config_mod.default_cluster(region.data_dir, region.base_port,
                                      initial_leader=f"{global_cfg.peers[0]}/adjudicator-az1", **settings)


def active_active_failover_timeout_ms(wan_ms: float) -> int:
    """How long a standby waits without the leader's heartbeats: the single-region second, plus 8
    one-way WAN delays, because a standby in the other peer hears each heartbeat a WAN hop late
    (and its own view of the leader's journal a round trip late): with only 1000 ms a slow WAN
    would look like a dead leader and cause failovers nobody asked for."""
    return int(round(1000 + 8 * wan_ms))


def active_active_read_wait_ms(wan_ms: float) -> int:
    """How long a storage copy of an active-active cluster waits for a read's ts to be closed before
    it refuses: a claim reaches a peer about one WAN round trip after the read starts (the start's
    demand crosses to the leader, its claim crosses back), so 8 round trips with a 500 ms floor is
    ample for a region that is voted in, while one cut off from the others refuses (57P03) within
    about a second instead of after the single-region default of 2 s per copy."""
    return int(round(max(500, 16 * wan_ms)))


def free_base_ports(count: int, attempts: int = 200) -> int:
    """A base port whose `count` consecutive blocks are free now (a Global Database's regions sit on
    base + i x PORT_BLOCK)."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20_000, 30_000 - count * PORT_BLOCK, PORT_BLOCK)
        if all(_port_free(base + i) for i in range(count * PORT_BLOCK)):
            return base
    raise RuntimeError(f"no {count} free consecutive blocks of ports found")


class Regions:
    """The processes of every region of a Global Database, one `Cluster` per region (by name, in the
    global file's order). Stopping stops the regions concurrently: each region's tiers still stop
    compute first and the journal last, and two regions need not take twice as long."""

    def __init__(self, clusters: dict[str, Cluster]) -> None:
        self.clusters = clusters

    def start(self) -> None:
        for cluster in self.clusters.values():
            cluster.start()

    @property
    def pids(self) -> dict[tuple[str, str], int]:
        """(region, node) -> PID of every running node."""
        return {(region, name): pid for region, cluster in self.clusters.items() for name, pid in cluster.pids.items()}

    def stop_all(self, timeout_s: float = 10.0) -> None:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self.clusters))) as pool:
            for future in [pool.submit(cluster.stop_all, timeout_s) for cluster in self.clusters.values()]:
                future.result()

    def __enter__(self) -> "Regions":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
