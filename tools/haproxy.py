"""The writer endpoint of a Global Database: one address that always reaches the primary region.

Theory of operation
-------------------
PostgreSQL HA setups (Patroni, pg_auto_failover, Stolon) give clients one writer address with
HAProxy in front of every database node: HAProxy asks each node over HTTP whether it is the
primary (`option httpchk`, Patroni's `GET /primary`) and sends connections only to nodes that say
yes. QuorumDB does the same with Debian's HAProxy (`apt-get install haproxy`, or
`bash scripts/install-haproxy`):

- every compute node answers `GET /role` on its metrics port (quorumdb/metrics.py): `200 writer`
  when its region accepts commits, `503 reader` (or `fenced`, `unknown`) otherwise, from the
  region's role its adjudicators report (compute_node/cluster/region_view.py);
- `config_text` makes one HAProxy configuration with two TCP listeners on 127.0.0.1: `writer_pg`
  (PostgreSQL, the first region's base port + 57) and `writer_api` (the gRPC client API, base
  port + 58), each with one server per compute node of *every* region. A node's check fails in a
  secondary region, so only the primary's compute nodes take connections; after a switchover the
  old primary's nodes fail their checks within HAPROXY_CHECK_FALL x HAPROXY_CHECK_INTER_MS and
  the new primary's pass at their next check;
- `on-marked-down shutdown-sessions`: the sessions of a node that stops being a writer are
  closed, so a client reconnects (to the same address) and lands on the new primary, instead of
  keeping a session whose commits now fail;
- `writer_api` servers *track* the `writer_pg` server of the same node (same node, same answer):
  each node is checked once, not twice, which halves what the checks cost an idle machine.

`start` writes `<global data dir>/haproxy/haproxy.cfg`, checks it (`haproxy -c`), and runs
`haproxy -f haproxy.cfg -db` (foreground: it stays our child, with a PID to stop, never a
daemon; in its own session, so a Ctrl-C at `up`'s terminal reaches `up`, which stops it in
order) with its output in `<global data dir>/logs/haproxy.log`; `HaproxyHandle.stop` ends it.
Without the binary, or with metrics off in a region (no HTTP server answers /role there), it
starts nothing and says why in one line. The endpoint needs no state of its own: every decision
is the compute nodes' answer to the last check.
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import socket
import subprocess
import sys
import time
from typing import Callable, Sequence

from quorumdb import config as config_mod
from quorumdb import limits
from quorumdb import regions as regions_mod
from tools.launcher import stop_process

BINARY = "haproxy"
INSTALL_HINT = "install it with `apt-get install haproxy` (Debian) or `bash scripts/install-haproxy`"
LISTEN_HOST = "127.0.0.1"
DIRECTORY = "haproxy"
CONFIG_FILE = "haproxy.cfg"
LOG_FILE = "haproxy.log"
STATS_SOCKET = "haproxy.sock"
# The most bytes read from one stats answer (`show stat` is ~1 KB per server).
STATS_BYTES_MAX = 1024 * 1024
PG_LISTEN = "writer_pg"
API_LISTEN = "writer_api"


@dataclasses.dataclass(frozen=True)
class Backend:
    """One compute node as the writer endpoint sees it: where its two servers and its /role are."""
    name: str        # <region>.<node>: unique across regions, and valid as an HAProxy server name
    host: str
    pg_port: int
    api_port: int
    check_port: int  # its metrics port, where /role is


# --- pure: addresses and the configuration text ---------------------------------------------------
def ports(first_region_base_port: int) -> tuple[int, int]:
    """(writer pg port, writer api port): the first region's base port + 57 and + 58."""
    return (first_region_base_port + config_mod.WRITER_PG_PORT_OFFSET,
            first_region_base_port + config_mod.WRITER_API_PORT_OFFSET)


def addresses(global_cfg: regions_mod.GlobalConfig) -> tuple[str, str]:
    """(writer pg host:port, writer api host:port) of a Global Database (whether it runs or not)."""
    pg_port, api_port = ports(global_cfg.regions[0].base_port)
    return f"{LISTEN_HOST}:{pg_port}", f"{LISTEN_HOST}:{api_port}"


def backends_of(region: str, cluster: config_mod.ClusterConfig) -> list[Backend]:
    """The compute nodes of one region's cluster."""
    return [Backend(f"{region}.{node.name}", node.host, cluster.pg_port(node.name), node.port,
                    cluster.metrics_port(node.name)) for node in cluster.computes]


def config_text(backends: Sequence[Backend], pg_port: int, api_port: int,
                stats_socket: pathlib.Path | None = None) -> str:
    """haproxy.cfg for the two writer listeners over `backends` (see the module docstring)."""
    assert backends, "a writer endpoint needs at least one compute node"
    assert len({backend.name for backend in backends}) == len(backends), "server names are unique"
    assert pg_port != api_port
    check_ms = int(limits.HAPROXY_CHECK_TIMEOUT_S * 1000)
    lines = [
        "# QuorumDB writer endpoint (tools/haproxy.py writes it; edits are overwritten).",
        "global",
        f"    maxconn {limits.HAPROXY_CONNECTIONS_MAX}",
    ]
    if stats_socket is not None:
        lines.append(f"    stats socket {stats_socket} mode 600 level user")
    lines += [
        "",
        "defaults",
        "    mode tcp",
        f"    timeout connect {int(limits.HAPROXY_CONNECT_TIMEOUT_S * 1000)}ms",
        f"    timeout client {limits.HAPROXY_SESSION_IDLE_S}s",
        f"    timeout server {limits.HAPROXY_SESSION_IDLE_S}s",
        f"    timeout check {check_ms}ms",
        "",
        f"listen {PG_LISTEN}",
        f"    bind {LISTEN_HOST}:{pg_port}",
        "    mode tcp",
        "    balance leastconn",
        "    option httpchk GET /role",
        "    http-check expect status 200",
        (f"    default-server inter {limits.HAPROXY_CHECK_INTER_MS}ms fall {limits.HAPROXY_CHECK_FALL} rise 1 "
         "on-marked-down shutdown-sessions"),
    ]
    lines += [f"    server {backend.name} {backend.host}:{backend.pg_port} check port {backend.check_port}"
              for backend in backends]
    lines += [
        "",
        f"listen {API_LISTEN}",
        f"    bind {LISTEN_HOST}:{api_port}",
        "    mode tcp",
        "    balance leastconn",
        "    default-server on-marked-down shutdown-sessions",
    ]
    # `track`: the same node's writer_pg check decides (one /role check per node, not two).
    lines += [f"    server {backend.name} {backend.host}:{backend.api_port} track {PG_LISTEN}/{backend.name}"
              for backend in backends]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class ServerState:
    proxy: str         # writer_pg | writer_api
    name: str          # <region>.<node>
    status: str        # UP, DOWN, "UP 1/2" (going down), MAINT, ...
    check_status: str  # L7OK, L7STS (answered, not 200), L4CON (refused), INI (not checked yet), ...

    @property
    def up(self) -> bool:
        return self.status.startswith("UP")

    @property
    def checked(self) -> bool:
        return self.check_status not in ("", "INI", "UNK")


def parse_stat(csv_text: str) -> list[ServerState]:
    """HAProxy's `show stat` CSV -> the servers (not the FRONTEND/BACKEND summary rows)."""
    lines = csv_text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    columns = lines[0][2:].split(",")
    at = {name: i for i, name in enumerate(columns)}
    servers = []
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) < len(columns) or fields[at["svname"]] in ("FRONTEND", "BACKEND"):
            continue
        servers.append(ServerState(fields[at["pxname"]], fields[at["svname"]], fields[at["status"]],
                                   fields[at["check_status"]]))
    return servers


def metrics_off_regions(clusters: Sequence[tuple[str, config_mod.ClusterConfig]]) -> list[str]:
    """The regions whose compute nodes serve no HTTP (metrics = false): nothing answers /role there."""
    return [name for name, cluster in clusters if not cluster.metrics]


# --- files and the process -------------------------------------------------------------------------
def directory(global_cfg: regions_mod.GlobalConfig) -> pathlib.Path:
    return global_cfg.data_dir / DIRECTORY


def config_path(global_cfg: regions_mod.GlobalConfig) -> pathlib.Path:
    return directory(global_cfg) / CONFIG_FILE


def log_path(global_cfg: regions_mod.GlobalConfig) -> pathlib.Path:
    return global_cfg.data_dir / "logs" / LOG_FILE


def find_binary() -> str | None:
    return shutil.which(BINARY)


def region_clusters(global_cfg: regions_mod.GlobalConfig) -> list[tuple[str, config_mod.ClusterConfig]]:
    """(region name, its cluster file) of every region, in the global file's order."""
    return [(region.name, region.cluster()) for region in global_cfg.regions]


def write_config(global_cfg: regions_mod.GlobalConfig,
                 clusters: Sequence[tuple[str, config_mod.ClusterConfig]] | None = None) -> pathlib.Path:
    """Write <global data dir>/haproxy/haproxy.cfg for every region's compute nodes; its path."""
    clusters = region_clusters(global_cfg) if clusters is None else clusters
    backends = [backend for name, cluster in clusters for backend in backends_of(name, cluster)]
    pg_port, api_port = ports(global_cfg.regions[0].base_port)
    path = config_path(global_cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = config_text(backends, pg_port, api_port, stats_socket_path(global_cfg))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def stats_socket_path(global_cfg: regions_mod.GlobalConfig) -> pathlib.Path | None:
    """HAProxy's stats socket (`show stat`: which servers are up), unless its path is too long for a
    Unix socket (108 bytes on Linux): the endpoint works without it."""
    path = directory(global_cfg) / STATS_SOCKET
    return path if len(str(path).encode()) < 100 else None


def stats_command(path: pathlib.Path, command: str, timeout_s: float = limits.HAPROXY_CHECK_TIMEOUT_S) -> str:
    """One command on HAProxy's stats socket; its whole answer (HAProxy closes after it)."""
    chunks = []
    total = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout_s)
        client.connect(str(path))
        client.sendall(command.encode() + b"\n")
        while total < STATS_BYTES_MAX:
            chunk = client.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks).decode(errors="replace")


def check_config(binary: str, path: pathlib.Path) -> str | None:
    """`haproxy -c -f path`: None when valid, else HAProxy's complaint (its last lines)."""
    try:
        result = subprocess.run([binary, "-c", "-f", str(path)], check=False, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=limits.HAPROXY_CHECK_CONFIG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"`haproxy -c` did not answer within {limits.HAPROXY_CHECK_CONFIG_TIMEOUT_S:g} s"
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return "; ".join(lines[-3:]) or f"`haproxy -c` exited with {result.returncode}"


class HaproxyHandle:
    """A running writer endpoint: its child process and addresses; `stop()` ends it."""

    def __init__(self, process: subprocess.Popen, global_cfg: regions_mod.GlobalConfig) -> None:
        self.process = process
        self.config_path = config_path(global_cfg)
        self.log_path = log_path(global_cfg)
        self.stats_socket = stats_socket_path(global_cfg)
        self.pg_address, self.api_address = addresses(global_cfg)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def servers(self) -> list[ServerState]:
        """Every server's state from HAProxy's stats socket ([] when it does not answer)."""
        if self.stats_socket is None:
            return []
        try:
            return parse_stat(stats_command(self.stats_socket, "show stat"))
        except OSError:
            return []

    def writers(self) -> list[str]:
        """The compute nodes (<region>.<node>) the writer endpoint sends PostgreSQL clients to now."""
        return [server.name for server in self.servers() if server.proxy == PG_LISTEN and server.up]

    @property
    def address(self) -> str:
        """The PostgreSQL writer address, host:port."""
        return self.pg_address

    @property
    def line(self) -> str:
        """What `quorumdb up` prints after "writer endpoint: "."""
        host, port = self.pg_address.rsplit(":", 1)
        return (f"postgresql://{host}:{port}/ and client API {self.api_address} follow the primary "
                f"(HAProxy pid {self.pid}; {self.config_path}, log {self.log_path})")

    def describe(self) -> str:
        return f"writer endpoint: {self.line}"

    def stop(self, timeout_s: float = limits.HAPROXY_STOP_TIMEOUT_S) -> None:
        """SIGTERM (HAProxy's hard stop: it closes every session at once), SIGKILL after timeout_s."""
        stop_process(self.process, timeout_s)


def _warn(line: str) -> None:
    sys.stderr.write(f"warning: {line}\n")


def start(global_cfg: regions_mod.GlobalConfig, say: Callable[[str], None] = _warn,
          binary: str | None = None) -> HaproxyHandle | None:
    """Start the writer endpoint of a Global Database; the caller prints `handle.describe()` (or
    "writer endpoint: " + `handle.line`) and stops the handle at shutdown. None when it is not
    started (no haproxy binary, metrics off in a region, a bad configuration, a port taken): then
    `say` gets one line saying why (default: a warning on stderr)."""
    binary = binary or find_binary()
    if binary is None:
        say(f"writer endpoint: not started: no `{BINARY}` binary; {INSTALL_HINT}")
        return None
    clusters = region_clusters(global_cfg)
    off = metrics_off_regions(clusters)
    if off:
        say(f"writer endpoint: not started: metrics are off in {', '.join(off)} (metrics = false); its health "
            f"check asks each compute node's /role on its metrics port: `quorumdb up --metrics`")
        return None
    path = write_config(global_cfg, clusters)
    problem = check_config(binary, path)
    if problem is not None:
        say(f"writer endpoint: not started: {path} is not valid: {problem}")
        return None
    handle = _spawn(binary, global_cfg)
    problem = _wait_started(handle, limits.HAPROXY_START_TIMEOUT_S)
    if problem is not None:
        handle.stop()
        say(f"writer endpoint: not started: {problem}")
        return None
    return handle


def _spawn(binary: str, global_cfg: regions_mod.GlobalConfig) -> HaproxyHandle:
    stats_socket = stats_socket_path(global_cfg)
    if stats_socket is not None:
        # A socket file left by an earlier HAProxy: only the new one may answer there.
        stats_socket.unlink(missing_ok=True)
    path = log_path(global_cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as log:
        process = subprocess.Popen([binary, "-f", str(config_path(global_cfg)), "-db"],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return HaproxyHandle(process, global_cfg)


def _wait_started(handle: HaproxyHandle, timeout_s: float) -> str | None:
    """Until HAProxy listens and has checked every node once; why not (it exited, or the timeout).

    HAProxy starts each server UP, one failed check from DOWN: until a secondary's node has been
    checked once (within one check interval), a client could land on it. So `start` returns only
    after every node's first check, as the stats socket tells (HAProxy answers there once every
    listener is bound); without the socket, once both ports accept connections and one check
    interval and timeout have passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not handle.running:
            return f"haproxy exited with {handle.process.returncode}: {_log_tail(handle.log_path)}"
        if handle.stats_socket is None:
            if _accepts(handle.pg_address) and _accepts(handle.api_address):
                time.sleep(limits.HAPROXY_CHECK_INTER_MS / 1000 + limits.HAPROXY_CHECK_TIMEOUT_S)
                return None
        else:
            servers = handle.servers()
            if servers and all(server.checked for server in servers if server.proxy == PG_LISTEN):
                return None
        if time.monotonic() >= deadline:
            return f"haproxy has not started and checked every compute node after {timeout_s:g} s " \
                   f"(log {handle.log_path})"
        time.sleep(0.05)


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _log_tail(path: pathlib.Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "; ".join(line for line in text.splitlines()[-lines:] if line.strip()) or "(empty log)"
