"""`quorumdb up --insecure`: written into the cluster file, plaintext nodes, and a warning that is hard to miss."""
from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest

from quorumdb import config as config_mod
from quorumdb import rpc
from quorumdb.pb import common_pb2, journal_pb2_grpc
from tests.util import free_base_port, stop_process
from tools import cli


def test_up_insecure_is_written_into_the_cluster_file(tmp_path):
    args = cli.build_parser().parse_args(["up", "--insecure", "--data-dir", str(tmp_path)])
    assert args.insecure
    cluster = cli.load_or_create_cluster(tmp_path, free_base_port())
    assert not cluster.insecure  # secure unless asked
    cluster = cli.apply_insecure_option(cluster, args)
    assert cluster.insecure and config_mod.load(cluster.config_path).insecure
    plain = cli.build_parser().parse_args(["up", "--data-dir", str(tmp_path)])
    assert cli.apply_insecure_option(config_mod.load(cluster.config_path), plain).insecure  # kept


@pytest.mark.cluster
def test_an_insecure_node_serves_plaintext_and_says_so(tmp_path):
    cluster = config_mod.default_cluster(tmp_path / "c", base_port=free_base_port(), insecure=True, metrics=False)
    cluster.write()
    node = cluster.node("journal-az1")
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tools.node", "--config", str(cluster.config_path),
                                    "--name", node.name], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        status = None
        while status is None and time.monotonic() < deadline and process.poll() is None:
            with grpc.insecure_channel(node.address) as channel:
                try:
                    status = journal_pb2_grpc.JournalStub(channel).Status(common_pb2.StatusRequest(), timeout=1)
                except grpc.RpcError:
                    time.sleep(0.2)
        assert status is not None, log_path.read_text(errors="replace")
        assert not (cluster.certs_path / "ca.crt").exists()  # no certificates needed
        text = log_path.read_text(errors="replace")
        assert "WARNING" in text and rpc.INSECURE_WARNING in text
    finally:
        stop_process(process)
