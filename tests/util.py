"""Helpers for tests that start real processes on 127.0.0.1."""
from __future__ import annotations

import pathlib
import random
import socket

from quorumdb import config as config_mod

PORT_BLOCK = 40


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(attempts: int = 200) -> int:
    """A base port whose whole block [base, base + 40) is free now, away from 7100 and ephemeral ports."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20_000, 30_000, PORT_BLOCK)
        if all(_port_free(base + i) for i in range(PORT_BLOCK)):
            return base
    raise RuntimeError("no free block of ports found")


def make_config(tmp_path: pathlib.Path, **settings) -> config_mod.ClusterConfig:
    cluster = config_mod.default_cluster(tmp_path / "cluster", base_port=free_base_port(), **settings)
    cluster.write()
    return cluster
