"""The writer endpoint of a Global Database: each compute node's GET /role, and Debian's HAProxy
in front of every region's compute nodes sending clients only to the writers (tools/haproxy.py).

Without haproxy the tests that run it fail in CI (bash scripts/install-haproxy installs it there)
and are skipped elsewhere, as the observability tests treat a missing prometheus or chromium.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from compute_node import metrics as compute_metrics
from quorumdb import config as config_mod
from quorumdb import metrics
from tools import haproxy
from quorumdb import regions as regions_mod
from tools.launcher import Cluster, free_base_port
from tests.util import require

WAIT_S = 30.0


def needs_haproxy() -> str:
    binary = haproxy.find_binary()
    require(binary, "Debian's haproxy", haproxy.INSTALL_HINT)
    return binary


def global_database(tmp_path, pairs=(("us-east", "primary"), ("eu-west", "secondary")), base_port=24000,
                    **settings) -> regions_mod.GlobalConfig:
    """A global file and one cluster file per region, as `quorumdb up --regions` lays them out."""
    global_cfg = regions_mod.layout(tmp_path / "global", list(pairs), base_port)
    global_cfg.write()
    for region in global_cfg.regions:
        config_mod.default_cluster(region.data_dir, base_port=region.base_port, region=region.name,
                                   global_file=str(global_cfg.path), **settings).write()
    return regions_mod.load(global_cfg.data_dir)


def listen_block(text: str, name: str) -> list[str]:
    """The lines of one `listen NAME` section of an HAProxy configuration."""
    lines = text.splitlines()
    start = lines.index(f"listen {name}")
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        block.append(line.strip())
    return block


def wait_until(what: str, attempt, timeout_s: float = WAIT_S):
    """attempt() until it returns a true value (exceptions count as not yet); fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = attempt()
        except Exception as error:  # noqa: BLE001 - not yet: keep the last reason for the failure
            last = error
        else:
            if value:
                return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what} (last error: {last!r})")


def writers_become(handle: haproxy.HaproxyHandle, region: str) -> bool:
    """HAProxy's writers are the three compute nodes of `region` (soon: on a loaded machine a
    check may time out, and a writer is back one good check, 500 ms, later)."""
    expected = [f"{region}.compute-az{i}" for i in (1, 2, 3)]
    wait_until(f"HAProxy's writers to be {expected}", lambda: sorted(handle.writers()) == expected)
    return True


def http_get(host: str, port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# --- the configuration ------------------------------------------------------------------------------
def test_the_writer_ports_are_base_57_and_58_of_the_first_region_and_free_in_the_layout():
    assert haproxy.ports(7100) == (7157, 7158)
    base = 20_000
    cluster = config_mod.default_cluster("/tmp/layout", base_port=base)
    used = {node.port - base for node in cluster.nodes}
    used |= {cluster.pg_port(node.name) - base for node in cluster.computes}
    used |= {cluster.metrics_port(node.name) - base for node in cluster.nodes}
    used |= {39, config_mod.CONSOLE_PORT_OFFSET, config_mod.PROMETHEUS_PORT_OFFSET}  # supervisor, console, Prometheus
    writer = {config_mod.WRITER_PG_PORT_OFFSET, config_mod.WRITER_API_PORT_OFFSET}
    assert writer == {57, 58} and writer.isdisjoint(used)
    assert max(writer) < config_mod.PORT_BLOCK


def test_the_config_has_one_checked_server_per_compute_node_of_every_region(tmp_path):
    global_cfg = global_database(tmp_path, (("us-east", "primary"), ("eu-west", "secondary"),
                                            ("ap-south", "secondary")))
    path = haproxy.write_config(global_cfg)
    assert path == global_cfg.data_dir / "haproxy" / "haproxy.cfg"
    text = path.read_text()
    base = global_cfg.regions[0].base_port
    pg = listen_block(text, "writer_pg")
    api = listen_block(text, "writer_api")
    assert f"bind 127.0.0.1:{base + 57}" in pg and f"bind 127.0.0.1:{base + 58}" in api
    assert "mode tcp" in pg and "mode tcp" in api
    assert "option httpchk GET /role" in pg and "http-check expect status 200" in pg
    assert "default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions" in pg
    assert "default-server on-marked-down shutdown-sessions" in api
    expected_pg, expected_api = [], []
    for region in global_cfg.regions:
        cluster = region.cluster()
        for node in cluster.computes:
            name = f"{region.name}.{node.name}"
            expected_pg.append(f"server {name} {node.host}:{cluster.pg_port(node.name)} "
                               f"check port {cluster.metrics_port(node.name)}")
            expected_api.append(f"server {name} {node.host}:{node.port} track writer_pg/{name}")
    assert [line for line in pg if line.startswith("server ")] == expected_pg
    assert [line for line in api if line.startswith("server ")] == expected_api
    assert len(expected_pg) == 9
    # the second region's nodes are on its own block: base + 60 (PostgreSQL at compute + 3, /role at + 40)
    assert f"server eu-west.compute-az1 127.0.0.1:{base + 63} check port {base + 100}" in pg
    defaults = listen_block(text.replace("\ndefaults\n", "\nlisten defaults\n"), "defaults")
    assert defaults == ["mode tcp", "timeout connect 2000ms", "timeout client 3600s", "timeout server 3600s",
                        "timeout check 1000ms"]
    assert haproxy.addresses(global_cfg) == (f"127.0.0.1:{base + 57}", f"127.0.0.1:{base + 58}")


def test_haproxy_accepts_the_generated_config(tmp_path):
    binary = needs_haproxy()
    global_cfg = global_database(tmp_path)
    path = haproxy.write_config(global_cfg)
    assert haproxy.check_config(binary, path) is None
    broken = path.with_name("broken.cfg")
    broken.write_text(path.read_text().replace("http-check expect status 200", "http-check expect sometimes"))
    assert haproxy.check_config(binary, broken) is not None


def test_start_says_why_it_does_not_start(tmp_path, monkeypatch, capsys):
    global_cfg = global_database(tmp_path)
    said: list[str] = []
    monkeypatch.setattr(haproxy, "find_binary", lambda: None)
    assert haproxy.start(global_cfg, say=said.append) is None
    assert said == [f"writer endpoint: not started: no `haproxy` binary; {haproxy.INSTALL_HINT}"]

    off = global_database(tmp_path / "off", metrics=False)
    said.clear()
    assert haproxy.start(off, say=said.append, binary="/bin/false") is None
    assert len(said) == 1 and "metrics are off in us-east, eu-west" in said[0], said
    assert not haproxy.config_path(off).exists()
    assert haproxy.start(off, binary="/bin/false") is None  # by default: a warning on stderr
    assert capsys.readouterr().err.startswith("warning: writer endpoint: not started: metrics are off")


def test_start_refuses_a_taken_port_and_leaves_no_haproxy(tmp_path):
    binary = needs_haproxy()
    global_cfg = global_database(tmp_path, base_port=free_base_port())
    pg_port, _ = haproxy.ports(global_cfg.regions[0].base_port)
    said: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", pg_port))
        taken.listen()
        assert haproxy.start(global_cfg, say=said.append, binary=binary) is None
    assert len(said) == 1 and said[0].startswith("writer endpoint: not started: haproxy exited"), said
    assert "cannot bind" in said[0] or "Address already in use" in said[0], said
    left = subprocess.run(["pgrep", "-f", str(haproxy.config_path(global_cfg))], check=False,
                          capture_output=True, text=True, timeout=10)
    assert left.stdout == "", f"haproxy still running: {left.stdout}"


def test_show_stat_is_parsed_into_servers():
    text = ("# pxname,svname,qcur,status,check_status,check_code\n"
            "writer_pg,FRONTEND,,OPEN,,\n"
            "writer_pg,us-east.compute-az1,0,UP,L7OK,200\n"
            "writer_pg,eu-west.compute-az1,0,DOWN,L7STS,503\n"
            "writer_pg,eu-west.compute-az2,0,UP 1/2,INI,\n"
            "writer_pg,BACKEND,0,UP,,\n")
    servers = haproxy.parse_stat(text)
    assert [(s.name, s.up, s.checked) for s in servers] == [
        ("us-east.compute-az1", True, True), ("eu-west.compute-az1", False, True),
        ("eu-west.compute-az2", True, False)]
    assert haproxy.parse_stat("") == [] and haproxy.parse_stat("Unknown command\n") == []


# --- GET /role -----------------------------------------------------------------------------------------
def test_role_reply_is_200_writer_only_for_a_region_that_accepts_commits():
    assert metrics.role_reply(True, "primary") == (200, b"writer\n")
    assert metrics.role_reply(True, "detached") == (200, b"writer\n")
    assert metrics.role_reply(False, "secondary") == (503, b"reader\n")
    assert metrics.role_reply(False, "fenced") == (503, b"fenced\n")
    assert metrics.role_reply(False, "") == (503, b"unknown\n")


def test_region_role_without_a_region_view_is_the_writer():
    class View:
        is_writer, role = False, "secondary"

    assert compute_metrics.region_role(None) == (True, "primary")
    assert compute_metrics.region_role(View()) == (False, "secondary")


def test_the_metrics_server_answers_role_only_where_a_role_is_set():
    state = {"role": (True, "primary")}

    async def run() -> list[tuple[int, bytes]]:
        compute = metrics.NodeMetrics("compute-az1", "compute", "az1")
        compute.set_role(lambda: state["role"])
        journal = metrics.NodeMetrics("journal-az1", "journal", "az1")
        servers = [await metrics.serve_http("127.0.0.1", 0, node) for node in (compute, journal)]
        ports = [server.sockets[0].getsockname()[1] for server in servers]
        answers = []
        try:
            for port in (ports[0], ports[1]):
                answers.append(await raw_get(port, "/role"))
            state["role"] = (False, "secondary")
            answers.append(await raw_get(ports[0], "/role"))
            answers.append(await raw_get(ports[0], "/metrics"))
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
        return answers

    writer, journal, reader, scrape = asyncio.run(run())
    assert writer[0] == 200 and writer[1].endswith(b"\r\n\r\nwriter\n")
    assert journal[0] == 404
    assert reader[0] == 503 and reader[1].endswith(b"\r\n\r\nreader\n")
    assert scrape[0] == 200 and b"quorumdb_node_info" in scrape[1]


async def raw_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())  # HTTP/1.0: what HAProxy's httpchk sends
    await writer.drain()
    async with asyncio.timeout(5):
        data = await reader.read()
    writer.close()
    return int(data.split()[1]), data


# --- HAProxy follows the writer (fake compute nodes: a role and a TCP server that names its region) ---
class FakeRegions:
    """For every compute node of every region: /role from `roles[region]` on its metrics port (the
    real serve_http), and on its PostgreSQL and client API ports a TCP server that writes
    `<region>\\n` and keeps the connection open. One event loop in a thread."""

    def __init__(self, global_cfg: regions_mod.GlobalConfig, roles: dict[str, tuple[bool, str]]) -> None:
        self.global_cfg = global_cfg
        self.roles = roles
        self.loop = asyncio.new_event_loop()
        self.servers: list[asyncio.AbstractServer] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "FakeRegions":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _start(self) -> None:
        for region in self.global_cfg.regions:
            cluster = region.cluster()
            for node in cluster.computes:
                node_metrics = metrics.NodeMetrics(node.name, "compute", node.az)
                node_metrics.set_role(lambda name=region.name: self.roles[name])
                self.servers.append(await metrics.serve_http(node.host, cluster.metrics_port(node.name), node_metrics))
                for port in (cluster.pg_port(node.name), node.port):
                    self.servers.append(await asyncio.start_server(self._greeter(region.name), node.host, port))

    @staticmethod
    def _greeter(region: str):
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(f"{region}\n".encode())
            await writer.drain()
            await reader.read()  # until the client (or HAProxy) closes
            writer.close()
        return greet

    async def _stop(self) -> None:
        for server in self.servers:
            server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()


def region_behind(address: str) -> tuple[socket.socket, str]:
    """Connect to the writer endpoint; (the open socket, the region that answered)."""
    host, port = address.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=5)
    data = conn.recv(64)
    if not data:
        conn.close()
        raise ConnectionError("closed at once: no writer")
    return conn, data.decode().strip()


def test_haproxy_moves_clients_to_the_new_writer_and_closes_the_old_writers_sessions(tmp_path):
    binary = needs_haproxy()
    global_cfg = global_database(tmp_path, base_port=free_base_port())
    roles = {"us-east": (True, "primary"), "eu-west": (False, "secondary")}
    said: list[str] = []
    with FakeRegions(global_cfg, roles):
        handle = haproxy.start(global_cfg, say=said.append, binary=binary)
        assert handle is not None, said
        try:
            assert said == []
            assert handle.describe() == f"writer endpoint: {handle.line}"
            assert handle.line.startswith(f"postgresql://{handle.address}/ and client API {handle.api_address} ")
            assert writers_become(handle, "us-east")
            sessions = []
            for address in (handle.pg_address, handle.api_address):
                for _ in range(3):
                    conn, region = region_behind(address)
                    assert region == "us-east"
                    sessions.append(conn)
            # A switchover: the old primary's nodes answer 503, the new one's 200.
            roles["us-east"], roles["eu-west"] = (False, "secondary"), (True, "primary")
            switched = time.monotonic()
            for conn in sessions:
                conn.settimeout(WAIT_S)
                assert conn.recv(64) == b"", "a session on a demoted writer is closed"
                conn.close()
            closed_s = time.monotonic() - switched
            for address in (handle.pg_address, handle.api_address):
                conn, region = wait_until("a connection to the new writer", lambda address=address: region_behind(address))
                conn.close()
                assert region == "eu-west"
            assert writers_become(handle, "eu-west")
            # fall 2 x inter 500 ms and a check's own time: about a second (5 s on a loaded machine).
            assert closed_s < 5.0, closed_s
        finally:
            handle.stop()
        assert not handle.running
    assert "is DOWN" in handle.log_path.read_text()


# --- a real cluster ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def primary_cluster(tmp_path_factory):
    """One real cluster without regions (so its compute nodes are writers), laid out as the first
    region of a Global Database: <data>/regions/us-east/cluster.toml."""
    root = tmp_path_factory.mktemp("writer")
    config = config_mod.default_cluster(regions_mod.region_dir(root / "global", "us-east"),
                                        base_port=free_base_port(), pg_trust=True)
    config.write()
    with Cluster(config) as cluster:
        try:
            cluster.start()
            cluster.wait_ready(timeout_s=90.0, healthy=True)
        except BaseException:
            from tests.conftest import dump_logs
            dump_logs(cluster)
            raise
        yield cluster


@pytest.mark.cluster
def test_role_is_writer_on_every_compute_node_and_404_on_a_journal_node(primary_cluster):
    config = primary_cluster.config
    for node in config.computes:
        assert http_get(node.host, config.metrics_port(node.name), "/role") == (200, "writer\n"), node.name
    journal = config.journals[0]
    status, _ = http_get(journal.host, config.metrics_port(journal.name), "/role")
    assert status == 404
    status, text = http_get(journal.host, config.metrics_port(config.computes[0].name), "/metrics")
    assert status == 200 and "quorumdb_compute_commits_total" in text


@pytest.mark.cluster
def test_haproxy_routes_psycopg_and_the_client_api_to_the_running_writer_region(primary_cluster):
    import psycopg

    import quorumdb

    binary = needs_haproxy()
    data_dir = primary_cluster.config.data_dir.parent.parent  # <data>/regions/us-east -> <data>
    second = regions_mod.RegionConfig("eu-west", "secondary", free_base_port(),
                                      regions_mod.region_dir(data_dir, "eu-west"))
    first = regions_mod.RegionConfig("us-east", "primary", primary_cluster.config.base_port,
                                     regions_mod.region_dir(data_dir, "us-east"))
    regions_mod.GlobalConfig(data_dir, (first, second)).write()
    # The second region's cluster file names compute nodes that do not run: their checks fail.
    config_mod.default_cluster(second.data_dir, base_port=second.base_port, region="eu-west",
                               global_file=str(data_dir / regions_mod.GLOBAL_FILE)).write()
    global_cfg = regions_mod.load(data_dir)
    assert global_cfg.regions[0].cluster().config_path == primary_cluster.config.config_path

    said: list[str] = []
    handle = haproxy.start(global_cfg, say=said.append, binary=binary)
    assert handle is not None, said
    try:
        assert handle.pg_address == f"127.0.0.1:{primary_cluster.config.base_port + 57}"
        assert writers_become(handle, "us-east")
        assert {s.name for s in handle.servers() if s.proxy == "writer_pg" and not s.up} == {
            f"eu-west.compute-az{i}" for i in (1, 2, 3)}
        host, pg_port = handle.pg_address.rsplit(":", 1)

        def select_one():
            with psycopg.connect(host=host, port=int(pg_port), user="admin", dbname="postgres",
                                 connect_timeout=5, autocommit=True) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)

        assert wait_until("SELECT 1 through the writer endpoint", select_one)
        psql = shutil.which("psql")
        require(psql, "Debian's psql", "bash scripts/install-postgres")
        if psql is not None:
            done = subprocess.run([psql, "-h", host, "-p", pg_port, "-U", "admin", "-d", "postgres", "-Atc",
                                   "SELECT 40 + 2"], check=False, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
            assert done.returncode == 0 and done.stdout.strip() == "42", done.stderr
        api_host, api_port = handle.api_address.rsplit(":", 1)
        # Through HAProxy (TLS passes through it): the primary's CA and a token from its data dir.
        with quorumdb.connect(api_host, int(api_port), timeout_s=30, data_dir=primary_cluster.config.data_dir) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS writer_probe (id INT PRIMARY KEY, v TEXT)")
            conn.execute("INSERT INTO writer_probe VALUES (1, 'through haproxy')")
            assert conn.execute("SELECT v FROM writer_probe WHERE id = 1").rows == [("through haproxy",)]
    finally:
        handle.stop()
    assert not handle.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(pg_port)), timeout=2).close()


@pytest.mark.cluster
def test_two_real_regions_role_is_writer_only_in_the_primary_and_haproxy_sends_clients_there(tmp_path):
    """Two whole regions (30 processes): the secondary's compute nodes answer 503 reader once their
    adjudicators report the role, and psycopg through the writer endpoint writes in the primary."""
    import psycopg

    binary = needs_haproxy()
    data_dir = tmp_path / "global"
    global_cfg = regions_mod.GlobalConfig(data_dir, tuple(
        regions_mod.RegionConfig(name, role, free_base_port(), regions_mod.region_dir(data_dir, name))
        for name, role in (("us-east", "primary"), ("eu-west", "secondary"))))
    global_cfg.write()
    clusters = []
    for region in global_cfg.regions:
        config = config_mod.default_cluster(region.data_dir, base_port=region.base_port, region=region.name,
                                            global_file=str(global_cfg.path), pg_trust=True)
        config.write()
        clusters.append(Cluster(config))
    handle = None
    try:
        for cluster in clusters:
            cluster.start()
        for cluster in clusters:
            cluster.wait_ready(timeout_s=120.0)

        def roles() -> dict[str, tuple[int, str]]:
            return {f"{c.config.region}.{n.name}": http_get(n.host, c.config.metrics_port(n.name), "/role")
                    for c in clusters for n in c.config.computes}

        expected = {f"{region}.compute-az{i}": answer for region, answer in
                    (("us-east", (200, "writer\n")), ("eu-west", (503, "reader\n"))) for i in (1, 2, 3)}
        wait_until("every compute node to know its region's role", lambda: roles() == expected, timeout_s=60.0)
        said: list[str] = []
        handle = haproxy.start(global_cfg, say=said.append, binary=binary)
        assert handle is not None, said
        assert writers_become(handle, "us-east")
        host, pg_port = handle.pg_address.rsplit(":", 1)

        def write_and_read():
            with psycopg.connect(host=host, port=int(pg_port), user="admin", dbname="postgres",
                                 connect_timeout=5, autocommit=True) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS writer_probe (id INT PRIMARY KEY, v TEXT)")
                conn.execute("INSERT INTO writer_probe VALUES (1, 'in the primary') ON CONFLICT DO NOTHING")
                return conn.execute("SELECT v FROM writer_probe").fetchall() == [("in the primary",)]

        assert wait_until("a write through the writer endpoint", write_and_read)
    except BaseException:
        from tests.conftest import dump_logs
        for cluster in clusters:
            dump_logs(cluster)
        raise
    finally:
        if handle is not None:
            handle.stop()
        for cluster in clusters:
            cluster.stop_all()
    assert handle is not None and not handle.running
