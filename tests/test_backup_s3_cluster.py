"""The continuous backup to S3, end to end: a cluster started with `backup_dir = s3://bucket/prefix`
ships its backup to a real S3-compatible server (moto's, its own process), the storage nodes
finding the endpoint and credentials in the environment they inherit from the launcher, and
`quorumdb restore --from s3://...` rebuilds a new cluster from it holding exactly what was
committed up to the time used."""
from __future__ import annotations

import io
import json
import time

import pytest

from quorumdb import client as qclient
from quorumdb import config as config_mod
from tools.cli import build_parser, main as cli_main
from tools.dr import restore as restore_mod
from tools.launcher import Cluster, free_base_port
from tests.s3server import _new_bucket, aws_env, moto_endpoint  # noqa: F401 - fixtures

pytestmark = pytest.mark.cluster

RESTORABLE_WAIT_S = 90.0


def backup_status(location: str) -> dict:
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["backup", "status", "--from", location, "--json"])
    return json.loads(out.getvalue()) if code == 0 else {}


@pytest.mark.long  # about 30 s (a cluster backed up to moto and restored; tests/test_objectstore.py keeps S3 in the suite): the CI's regions-and-long step runs it
def test_backup_to_s3_and_restore_from_it(moto_endpoint, cluster_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # inherited by every node the launcher starts
    bucket = _new_bucket(moto_endpoint)
    location = f"s3://{bucket}/prod/east"
    cluster = cluster_factory(backup_dir=location)
    node = cluster.config.computes[0]
    conn = qclient.connect(node.host, node.port)
    conn.execute("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
    for i in range(20):
        conn.execute(f"INSERT INTO notes VALUES ({i}, 'before {i}')")
    written_ns = time.time_ns()
    deadline = time.monotonic() + RESTORABLE_WAIT_S
    while backup_status(location).get("latest_restorable_ts", 0) < written_ns:
        assert time.monotonic() < deadline, f"the S3 backup did not reach the writes within {RESTORABLE_WAIT_S:.0f} s"
        time.sleep(0.5)
    to_time_ns = time.time_ns()
    time.sleep(0.01)
    conn.execute("DELETE FROM notes WHERE id < 10")  # after the restore's time: must not be restored
    conn.close()
    while backup_status(location).get("latest_restorable_ts", 0) < to_time_ns:  # restorable up to it too
        assert time.monotonic() < deadline, f"the S3 backup did not reach to_time within {RESTORABLE_WAIT_S:.0f} s"
        time.sleep(0.5)
    status = backup_status(location)
    assert status["location"] == location and status["by_kind"]["logs"]["objects"] >= 1

    from quorumdb import timefmt

    out, err = io.StringIO(), io.StringIO()
    restored_dir = tmp_path / "restored"
    args = build_parser().parse_args(["restore", "--from", location, "--to-time", timefmt.format_utc(to_time_ns),
                                      "--data-dir", str(restored_dir), "--base-port", str(free_base_port())])
    # --to-time has millisecond precision: the time used is to_time_ns cut to the millisecond,
    # still after every insert (the backup status said they were restorable before to_time_ns).
    assert restore_mod.command(args, out, err) == 0, err.getvalue()
    assert "restored" in out.getvalue()
    restored = Cluster(config_mod.load(restored_dir / "cluster.toml"))
    try:
        restored.start()
        restored.wait_ready(timeout_s=120, healthy=True)
        first = restored.config.computes[0]
        rconn = qclient.connect(first.host, first.port)
        rows = rconn.execute("SELECT id, body FROM notes ORDER BY id").rows
        assert [(int(r[0]), r[1]) for r in rows] == [(i, f"before {i}") for i in range(20)]
        rconn.close()
    finally:
        restored.stop_all()
