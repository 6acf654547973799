"""A real S3-compatible server for tests: moto's standalone server, its own process on 127.0.0.1.

Used by the object store's contract tests and by the cluster test whose backup goes to S3. The
server is started on a free port, waited for (bounded), and stopped by PID.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import boto3
import pytest

from quorumdb import s3store

MOTO_START_TIMEOUT_S = 60.0
MOTO_STOP_TIMEOUT_S = 10.0
_bucket_numbers = itertools.count()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _moto_server(log_path: pathlib.Path, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `python -m moto.server` on a free port of 127.0.0.1; yields its endpoint URL."""
    port = _free_port()
    env = dict(os.environ, **(extra_env or {}))
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + MOTO_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not listen on port {port} within {MOTO_START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=MOTO_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=MOTO_STOP_TIMEOUT_S)


# Credentials moto accepts (it checks none unless told to); no ~/.aws files, no instance metadata.
def _aws_env(tmp: pathlib.Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory) -> Iterator[None]:
    tmp = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", s3store.ENDPOINT_ENV, "AWS_PROFILE",
                     "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
            patch.delenv(name, raising=False)
        for name, value in _aws_env(tmp).items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def moto_endpoint(aws_env, tmp_path_factory) -> Iterator[str]:
    with _moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


def _new_bucket(endpoint: str) -> str:
    bucket = f"qdb-test-{os.getpid()}-{next(_bucket_numbers)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return bucket


