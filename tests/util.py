"""Helpers for tests that start real processes on 127.0.0.1."""
from __future__ import annotations

import pathlib

from quorumdb import config as config_mod
from tools.launcher import free_base_port  # noqa: F401 - re-exported for tests


def make_config(tmp_path: pathlib.Path, **settings) -> config_mod.ClusterConfig:
    cluster = config_mod.default_cluster(tmp_path / "cluster", base_port=free_base_port(), **settings)
    cluster.write()
    return cluster


def require(found: object, what: str, install: str) -> None:
    """Fail (never skip) when a program the suite tests with is missing: a skipped test would hide
    whatever it checks. `make test` (scripts/setup test) installs them all."""
    if not found:
        import pytest

        pytest.fail(f"{what} is not installed: run `{install}` (or `make test`, which installs everything)")
