"""The docker-compose deployment's files agree with the cluster file, without Docker.

docker/cluster.toml, docker-compose.yml and the Dockerfile are checked against each other and
against `quorumdb up`'s default layout; plus the two product options the containers need:
`listen_host` (nodes listen on all interfaces) and the simulated cross-AZ delay. The cluster
itself runs in tests/compose (marked `compose`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import re
import stat
import subprocess
import sys
import time
from typing import Callable

import grpc
import pytest
import yaml

from quorumdb import config as config_mod
from quorumdb import certs, limits, rpc, tokens
from tools import healthcheck
from tools.launcher import ensure_certs
from tests.util import free_base_port, stop_process

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKER_CLUSTER = config_mod.load(ROOT / "docker" / "cluster.toml")


def compose_file() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def test_docker_cluster_file_is_the_default_layout_with_service_names_as_hosts():
    defaults = config_mod.default_nodes()
    assert [(n.name, n.service, n.az, n.port) for n in DOCKER_CLUSTER.nodes] == \
        [(n.name, n.service, n.az, n.port) for n in defaults]
    assert all(node.host == node.name for node in DOCKER_CLUSTER.nodes)
    assert DOCKER_CLUSTER.listen_host == "0.0.0.0"
    assert [DOCKER_CLUSTER.pg_port(n.name) for n in DOCKER_CLUSTER.computes] == [5433, 5434, 5435]
    node = DOCKER_CLUSTER.node("storage-az2-b")
    assert DOCKER_CLUSTER.listen_address(node) == "0.0.0.0:7133" and node.address == "storage-az2-b:7133"


def test_compose_services_are_the_nodes_attached_labelled_published_and_on_volumes():
    compose = compose_file()
    services = {name: service for name, service in compose["services"].items() if name != "prometheus"}
    assert list(services) == [node.name for node in DOCKER_CLUSTER.nodes]
    assert set(compose["networks"]) == {"az1", "az2", "az3", "regional"}
    assert set(compose["volumes"]) == {node.name for node in DOCKER_CLUSTER.nodes} | {"token-secret", "backup"}
    for node in DOCKER_CLUSTER.nodes:
        service = services[node.name]
        assert service["environment"]["QUORUMDB_NODE"] == node.name
        assert service["labels"] == {"quorumdb.az": node.az, "quorumdb.service": node.service,
                                     "quorumdb.node": node.name}
        assert service["networks"] == [node.az, "regional"]
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"] == ["CMD", "python3", "-m", "tools.healthcheck"]
        ports = [interpolate(port) for port in service["ports"]]
        metrics_port = DOCKER_CLUSTER.metrics_port(node.name)
        expected = [f"127.0.0.1:{node.port}:{node.port}", f"127.0.0.1:{metrics_port}:{metrics_port}"]
        if node.service == "compute":
            pg = DOCKER_CLUSTER.pg_port(node.name)
            expected.append(f"127.0.0.1:{pg}:{pg}")
        assert ports == expected
        volumes = service["volumes"]
        assert f"{node.name}:/data" in volumes
        assert "./docker/cluster.toml:/etc/quorumdb/cluster.toml:ro" in volumes
        # the certificates from the host, read-only, at the cluster file's certs_dir; the CA's key hidden
        mounts = [volume for volume in volumes if isinstance(volume, dict)]
        assert mounts == [CERTS_MOUNT, NO_CA_KEY_MOUNT], mounts
        assert ("token-secret:/secret" in volumes) == (node.service == "compute")
        # every storage copy reads and writes the one backup store named in the cluster file
        assert (f"backup:{DOCKER_CLUSTER.backup_location}" in volumes) == (node.service == "storage")


CERTS_MOUNT = {"type": "bind", "source": "${QUORUMDB_CERTS_DIR:-./docker/certs}", "target": "/etc/quorumdb/certs",
               "read_only": True, "bind": {"create_host_path": False}}
NO_CA_KEY_MOUNT = {"type": "bind", "source": "/dev/null", "target": "/etc/quorumdb/certs/ca.key", "read_only": True}


def test_the_cluster_file_runs_tls_with_the_mounted_certificates():
    assert DOCKER_CLUSTER.insecure is False
    assert str(DOCKER_CLUSTER.certs_path) == CERTS_MOUNT["target"]
    assert NO_CA_KEY_MOUNT["target"] == str(certs.ca_path(DOCKER_CLUSTER.certs_path)).replace(".crt", ".key")


def dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore rule for one path: the last matching pattern wins ('!' re-includes);
    a pattern also matches everything under a directory it matches."""
    import fnmatch

    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], pattern[3:]) for prefix in prefixes)
        else:
            matched = any(re.fullmatch(regex, prefix) for prefix in prefixes)
        if matched:
            excluded = not negate
    return excluded


def test_no_certificate_or_key_goes_into_the_image():
    # The build context holds the wheels and docker/, never the certificates made beside them.
    assert not dockerignore_excludes("build/wheels/quorumdb-0.1.0-py3-none-any.whl")
    assert not dockerignore_excludes("docker/entrypoint.sh") and not dockerignore_excludes("docker/cluster.toml")
    for path in ("docker/certs/ca.key", "docker/certs/ca.crt", "docker/certs/nodes/journal-az1.key",
                 "docker/certs/quorumdb-admin.crt", "docker/other/node.key", "docker/token_secret", "quorumdb-data/x"):
        assert dockerignore_excludes(path), path
    # The Dockerfile copies only the wheels, the entrypoint and the default cluster file.
    text = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^(?:COPY|ADD)\s+(.*)$", text, re.M)
    assert [copy.split()[0] for copy in copies] == ["build/wheels/", "docker/entrypoint.sh", "docker/cluster.toml"]
    assert not re.search(r"^(?:COPY|ADD|RUN).*(certs|\.key|\.crt|token_secret)", text, re.M)
    assert "/docker/certs/" in (ROOT / ".gitignore").read_text().splitlines()


def test_compose_certs_makes_certificates_for_every_service_name(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "scripts" / "compose-certs"), str(tmp_path / "certs")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o700
    for node in DOCKER_CLUSTER.nodes:
        info = certs.info_of(certs.pair_paths(tmp_path / "certs", node.name)[0])
        assert info.name == node.name and node.host in info.hosts and "127.0.0.1" in info.hosts
        assert stat.S_IMODE(certs.pair_paths(tmp_path / "certs", node.name)[1].stat().st_mode) == 0o600
    assert certs.pair_paths(tmp_path / "certs", certs.ADMIN)[0].exists()
    again = subprocess.run(["bash", str(ROOT / "scripts" / "compose-certs"), str(tmp_path / "certs")],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert again.returncode == 0 and "created nothing" in again.stdout, again.stdout + again.stderr


def test_compose_prometheus_scrapes_every_node_from_the_regional_network():
    """The same scrape configuration as `quorumdb up --prometheus` (tools/prometheus.py): one
    place decides what Prometheus scrapes, whichever way the cluster runs."""
    from tools import prometheus

    service = compose_file()["services"]["prometheus"]
    assert service["profiles"] == ["metrics"] and service["networks"] == ["regional"]
    assert "./docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in service["volumes"]
    scrape = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    targets = [config["targets"][0] for config in scrape["scrape_configs"][0]["static_configs"]]
    assert targets == [f"{node.name}:{DOCKER_CLUSTER.metrics_port(node.name)}" for node in DOCKER_CLUSTER.nodes]
    assert (ROOT / "docker" / "prometheus.yml").read_text() == prometheus.scrape_config(DOCKER_CLUSTER)


def test_dockerfile_takes_the_base_image_as_a_build_argument():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert "--no-index" in text and "python3 -m venv" in text


def test_listen_host_defaults_to_the_node_host_and_round_trips(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=7100)
    node = cluster.node("journal-az1")
    assert cluster.bind_host(node) == "127.0.0.1" and cluster.listen_address(node) == "127.0.0.1:7110"
    everywhere = dataclasses.replace(cluster, listen_host="0.0.0.0")
    everywhere.write()
    loaded = config_mod.load(everywhere.config_path)
    assert loaded.listen_host == "0.0.0.0" and loaded.listen_address(node) == "0.0.0.0:7110"


def test_cross_az_delay_setting_is_parsed_and_bounded():
    assert rpc.cross_az_delay_ms({}) == 0
    assert rpc.cross_az_delay_ms({rpc.CROSS_AZ_DELAY_ENV: " 5 "}) == 5
    for bad in ("-1", "x", "2.5", str(limits.CROSS_AZ_DELAY_MS_MAX + 1)):
        with pytest.raises(ValueError):
            rpc.cross_az_delay_ms({rpc.CROSS_AZ_DELAY_ENV: bad})


def test_cross_az_delay_waits_a_round_trip_before_calls_to_other_azs_only(tmp_path, monkeypatch):
    cluster = config_mod.default_cluster(tmp_path, base_port=7100, insecure=True)  # in-process plaintext: partitions, not TLS
    monkeypatch.setenv(rpc.CROSS_AZ_DELAY_ENV, "20")
    state = rpc.set_identity(cluster, "compute-az1")
    try:
        same = rpc.client_interceptors(state, cluster.node("storage-az1-b").address)
        other = rpc.client_interceptors(state, cluster.node("storage-az2-a").address)
        assert same[0].guard.wait_s == 0 and other[0].guard.wait_s == pytest.approx(0.040)
        details = grpc.aio.ClientCallDetails("/quorumdb.Storage/Get", 1.0, None, None, None)

        async def elapsed(guard) -> float:
            started = time.monotonic()
            prepared = await guard.prepare(details)
            assert ("x-quorumdb-node", "compute-az1") in list(prepared.metadata)
            return time.monotonic() - started

        assert asyncio.run(elapsed(same[0].guard)) < 0.02
        assert asyncio.run(elapsed(other[0].guard)) >= 0.040
    finally:
        rpc.clear_identity()
    assert rpc.client_interceptors(None, cluster.node("storage-az2-a").address) == []


@pytest.mark.cluster
def test_a_node_keeps_its_data_in_data_dir_listens_on_listen_host_and_passes_the_healthcheck(tmp_path, monkeypatch,
                                                                                             capsys):
    """What each container does: the cluster file read-only elsewhere, data (and a compute node's
    token secret) on the volume, and the health check run with only the image's environment."""
    cluster = dataclasses.replace(config_mod.default_cluster(tmp_path / "etc", base_port=free_base_port()),
                                  listen_host="0.0.0.0")
    cluster.write()
    data = tmp_path / "data"
    as_node_sees_it = dataclasses.replace(cluster, data_dir=data.resolve())
    ensure_certs(as_node_sees_it)  # in DATA/certs, as a deployment mounts them
    tokens.load_or_create_secret(data)  # the compute containers share it on a volume
    processes = [subprocess.Popen(
        [sys.executable, "-m", "tools.node", "--config", str(cluster.config_path), "--name", name,
         "--data-dir", str(data)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in ("journal-az1", "compute-az1")]
    # docker/entrypoint.sh and docker-compose.yml: the check gets no option, only these variables.
    monkeypatch.setenv("QUORUMDB_CONFIG", str(cluster.config_path))
    monkeypatch.setenv("QUORUMDB_DATA", str(data))
    monkeypatch.delenv("QUORUMDB_DATA_DIR", raising=False)
    try:
        def check_line(name: str, done: Callable[[str], bool]) -> str:
            monkeypatch.setenv("QUORUMDB_NODE", name)
            deadline = time.monotonic() + 30
            while True:
                healthcheck.main(["--timeout", "1.0"])
                line = capsys.readouterr().out.strip().splitlines()[-1]
                if done(line) or time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    return line
                time.sleep(0.2)

        line = check_line("journal-az1", lambda line: line.endswith(": ok"))
        assert line.startswith("journal-az1: replica") and line.endswith(": ok"), line
        # A compute node alone is degraded (no storage), but it answers: the check found the token
        # secret where the node keeps it, and its token was accepted.
        line = check_line("compute-az1", lambda line: line.startswith("compute-az1: query"))
        assert line.startswith("compute-az1: query epoch"), line
        assert (data / "nodes" / "journal-az1" / "journal").is_dir()
        assert not (tmp_path / "etc" / "nodes").exists()
        other = cluster.node("journal-az2")  # nobody listens there
        assert healthcheck.check(other, "127.0.0.1", timeout_s=0.5)[0] is False
    finally:
        for process in processes:
            stop_process(process)
