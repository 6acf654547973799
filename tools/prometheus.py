"""A Prometheus server for a cluster: its scrape configuration, and `quorumdb up --prometheus`.

`scrape_config` is the one place the configuration is made: `quorumdb up --prometheus` writes it to
`<data dir>/prometheus/prometheus.yml` and starts Debian's `prometheus` (`apt-get install
prometheus`, or `bash scripts/install-observability`) on 127.0.0.1:<base port + 56> with its data
in `<data dir>/prometheus/data`; docker/prometheus.yml is the same function's output for the
docker-compose cluster (tests/test_docker_files.py checks that it still is). Every node is one
static target labelled with its node name, service and AZ.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

from quorumdb import config as config_mod
from quorumdb import limits
from tools.launcher import stop_process

BINARY = "prometheus"
INSTALL_HINT = "install it with `apt-get install prometheus` (Debian) or `bash scripts/install-observability`"


def scrape_config(cluster: config_mod.ClusterConfig, interval_s: int = limits.PROMETHEUS_SCRAPE_INTERVAL_S,
                  host: str | None = None) -> str:
    """prometheus.yml scraping every node of `cluster` (at `host` instead of each node's host if given).

    Written as YAML text by hand (the format is fixed and small): no YAML library needed at run time."""
    lines = [
        "# Prometheus scrape configuration for a QuorumDB cluster (tools/prometheus.py makes it).",
        "global:",
        f"  scrape_interval: {interval_s}s",
        f"  scrape_timeout: {max(1, interval_s - 1)}s",
        "  evaluation_interval: 15s",
        "scrape_configs:",
        "  - job_name: quorumdb",
        "    metrics_path: /metrics",
        "    static_configs:",
    ]
    for node in cluster.nodes:
        target = f"{host or node.host}:{cluster.metrics_port(node.name)}"
        lines += [
            f'      - targets: ["{target}"]',
            f'        labels: {{node: "{node.name}", service: "{node.service}", az: "{node.az}"}}',
        ]
    return "\n".join(lines) + "\n"


def address(cluster: config_mod.ClusterConfig) -> tuple[str, int]:
    return "127.0.0.1", cluster.base_port + config_mod.PROMETHEUS_PORT_OFFSET


def directory(cluster: config_mod.ClusterConfig) -> pathlib.Path:
    return cluster.data_dir / "prometheus"


def find_binary() -> str | None:
    return shutil.which(BINARY)


def start(cluster: config_mod.ClusterConfig, binary: str) -> subprocess.Popen:
    """Write the configuration and start Prometheus (its output in <data>/logs/prometheus.log)."""
    folder = directory(cluster)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    config_path = folder / "prometheus.yml"
    config_path.write_text(scrape_config(cluster))
    host, port = address(cluster)
    log_path = cluster.data_dir / "logs" / "prometheus.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={host}:{port}", "--storage.tsdb.retention.time=1d"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )


def stop(process: subprocess.Popen, timeout_s: float = limits.PROMETHEUS_STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL after timeout_s (by its PID)."""
    stop_process(process, timeout_s)
