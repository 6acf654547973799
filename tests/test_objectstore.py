"""The object store's contract, the same tests for both backends: LocalStore on a temporary
directory, and S3Store against a real S3-compatible server (moto's standalone server, a separate
process on 127.0.0.1 started here and stopped by PID).

What the backup relies on: puts are immutable (same bytes again is a no-op, other bytes are
refused) and atomic, gets return exactly what was put or say the object is corrupt or missing,
listings are in key order by prefix and page correctly, and a store that cannot be reached says
so, naming where it is.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
from typing import Callable

import pytest

from quorumdb import config as config_mod, limits
from tools import cli, launcher
from quorumdb.objectstore import (
    LocalStore,
    ObjectCorrupt,
    ObjectExists,
    ObjectMissing,
    StoreUnreachable,
    open_store,
)

import boto3  # noqa: E402 - a runtime dependency (the S3 backend), as moto[server] is a test one

from quorumdb import s3store  # noqa: E402 - needs boto3
from quorumdb.s3store import S3Store  # noqa: E402

from tests.s3server import _aws_env, _free_port, _moto_server, _new_bucket, aws_env, moto_endpoint  # noqa: E402,F401

REPO = pathlib.Path(__file__).resolve().parent.parent


# --- the two backends behind one interface ------------------------------------------------
@dataclasses.dataclass
class Backend:
    store: LocalStore | S3Store
    # Replace an object's bytes behind the store's back (bit rot, a tampered object).
    damage: Callable[[str], None]


def _local_backend(tmp_path: pathlib.Path) -> Backend:
    store = LocalStore(tmp_path / "objects")

    def damage(key: str) -> None:
        path = store.root / key
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0x01
        path.write_bytes(bytes(raw))

    return Backend(store, damage)


def _s3_backend(endpoint: str, monkeypatch) -> Backend:
    bucket = _new_bucket(endpoint)
    # The way users point QuorumDB at an S3-compatible server: boto3's standard variable.
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    store = S3Store.from_url(f"s3://{bucket}/cluster-a/backup")
    raw = boto3.client("s3", endpoint_url=endpoint)

    def damage(key: str) -> None:
        name = store.prefix + key
        head = raw.head_object(Bucket=bucket, Key=name)
        body = bytearray(raw.get_object(Bucket=bucket, Key=name)["Body"].read())
        body[-1] ^= 0x01
        # Same recorded sha256, other bytes.
        raw.put_object(Bucket=bucket, Key=name, Body=bytes(body), Metadata=head["Metadata"])

    return Backend(store, damage)


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path, monkeypatch) -> Backend:
    if request.param == "local":
        return _local_backend(tmp_path)
    return _s3_backend(request.getfixturevalue("moto_endpoint"), monkeypatch)


# --- the contract -------------------------------------------------------------------------
def test_put_get_round_trip(backend):
    store = backend.store
    store.check()
    blobs = {"base/seg-0/ckpt-000001": os.urandom(256 * 1024), "log/seg-0/empty": b"",
             "manifest/seg-0": b"\x00\xff" * 100}
    for key, data in blobs.items():
        store.put(key, data)
    for key, data in blobs.items():
        assert store.get(key) == data
    assert {(info.key, info.size) for info in store.list()} == {(k, len(v)) for k, v in blobs.items()}


def test_put_is_immutable(backend):
    store = backend.store
    store.put("log/seg-1/0000000001", b"first")
    store.put("log/seg-1/0000000001", b"first")  # a retried upload: a no-op
    with pytest.raises(ObjectExists, match="log/seg-1/0000000001"):
        store.put("log/seg-1/0000000001", b"second")
    assert store.get("log/seg-1/0000000001") == b"first"
    assert [info.key for info in store.list()] == ["log/seg-1/0000000001"]


def test_racing_puts_of_one_key_leave_exactly_one_winner(backend):
    store = backend.store
    contents = [f"copy {i}".encode() * 1000 for i in range(6)]

    def put(data: bytes) -> bool:
        try:
            store.put("log/seg-2/0000000007", data)
            return True
        except ObjectExists:
            return False

    with concurrent.futures.ThreadPoolExecutor(len(contents)) as pool:
        won = list(pool.map(put, contents))
    assert won.count(True) == 1, won
    assert store.get("log/seg-2/0000000007") == contents[won.index(True)]


def test_list_is_in_key_order_by_prefix_and_start_after(backend):
    store = backend.store
    keys = ["log/seg-1/0000000003", "log/seg-1/0000000001", "log/seg-10/0000000001", "log/seg-1/0000000002",
            "logs/other", "base/seg-1/ckpt-1", "manifest"]
    for key in keys:
        store.put(key, key.encode())
    assert [info.key for info in store.list()] == sorted(keys)
    assert [info.key for info in store.list("log/seg-1/")] == [
        "log/seg-1/0000000001", "log/seg-1/0000000002", "log/seg-1/0000000003"]
    # A prefix is a string prefix, not a directory: "log" also matches "logs/...".
    assert [info.key for info in store.list("log")] == sorted(k for k in keys if k.startswith("log"))
    assert [info.key for info in store.list("log/seg-1/", start_after="log/seg-1/0000000001")] == [
        "log/seg-1/0000000002", "log/seg-1/0000000003"]
    assert store.list("log/seg-1/", start_after="log/seg-1/0000000003") == []
    assert store.list("nothing/") == []
    assert {info.key: info.size for info in store.list("base/")} == {"base/seg-1/ckpt-1": len("base/seg-1/ckpt-1")}


def test_list_pages_through_many_keys(backend):
    """More keys than one S3 ListObjectsV2 page (1000) holds, listed whole and from the middle."""
    store = backend.store
    count = limits.S3_LIST_PAGE_KEYS + 20
    keys = [f"log/seg-3/{index:010d}" for index in range(count)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put(key, b"x"), keys))
    store.put("log/seg-4/0000000000", b"y")  # past the prefix: must not appear
    assert [info.key for info in store.list("log/seg-3/")] == keys
    middle = keys[count // 3]
    assert [info.key for info in store.list("log/seg-3/", start_after=middle)] == keys[count // 3 + 1:]


def test_list_pages_with_small_pages(backend, monkeypatch):
    """Many continuation tokens in one listing, with start_after (S3Store; LocalStore has no pages)."""
    monkeypatch.setattr(limits, "S3_LIST_PAGE_KEYS", 7)
    store = backend.store
    keys = [f"snapshot/{index:03d}" for index in range(50)]
    for key in keys:
        store.put(key, b"s")
    assert [info.key for info in store.list("snapshot/")] == keys
    assert [info.key for info in store.list("snapshot/", start_after="snapshot/020")] == keys[21:]


def test_delete(backend):
    store = backend.store
    store.put("base/seg-5/ckpt-1", b"old")
    store.put("base/seg-5/ckpt-2", b"new")
    store.delete("base/seg-5/ckpt-1")
    store.delete("base/seg-5/ckpt-1")  # already gone: not an error
    store.delete("base/seg-5/never-written")
    assert [info.key for info in store.list()] == ["base/seg-5/ckpt-2"]
    with pytest.raises(ObjectMissing):
        store.get("base/seg-5/ckpt-1")
    # Once deleted, the key may be written again (retention removed it; nothing pins it).
    store.put("base/seg-5/ckpt-1", b"rewritten")
    assert store.get("base/seg-5/ckpt-1") == b"rewritten"


def test_missing_object(backend):
    with pytest.raises(ObjectMissing, match="manifest/seg-9"):
        backend.store.get("manifest/seg-9")


def test_corruption_is_detected(backend):
    store = backend.store
    store.put("base/seg-6/ckpt-1", b"checkpoint bytes" * 100)
    backend.damage("base/seg-6/ckpt-1")
    with pytest.raises(ObjectCorrupt, match="base/seg-6/ckpt-1.*sha256"):
        store.get("base/seg-6/ckpt-1")
    # A re-put cannot paper over it: the existing object is read (and fails its check) first.
    with pytest.raises(ObjectCorrupt):
        store.put("base/seg-6/ckpt-1", b"checkpoint bytes" * 100)


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "a/../b", "a b", "a/./b", "ümlaut"])
def test_bad_keys_are_refused(backend, key):
    with pytest.raises(ValueError, match="bad object key"):
        backend.store.put(key, b"x")
    with pytest.raises(ValueError, match="bad object key"):
        backend.store.get(key)


def test_local_list_skips_an_object_deleted_while_listing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "backup")
    store.put("segment/a", b"1")
    store.put("segment/b", b"2")
    real_walk = os.walk

    def walk_then_delete(top, *args, **kwargs):
        for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
            if "b" in filenames:
                store.delete("segment/b")  # a concurrent retention pass
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(os, "walk", walk_then_delete)
    assert [info.key for info in store.list("segment/")] == ["segment/a"]


# --- unreachable stores: a clear error naming where, within the call's deadline -------------
@pytest.mark.timeout(60)
def test_local_store_unreachable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    store = LocalStore(blocker / "backup")  # a directory below a regular file cannot exist
    with pytest.raises(StoreUnreachable, match=str(blocker / "backup")):
        store.check()
    with pytest.raises(StoreUnreachable, match=str(blocker / "backup")):
        store.put("base/x", b"1")


@pytest.mark.timeout(60)
def test_s3_endpoint_unreachable(aws_env, monkeypatch):
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    store = S3Store.from_url("s3://some-bucket/backup")
    calls = (store.check, lambda: store.put("base/x", b"1"), lambda: store.get("base/x"),
             store.list, lambda: store.delete("base/x"))
    # Each call spends its retries (limits.S3_ATTEMPTS_MAX) before it gives up: run them together.
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    for future in futures:
        with pytest.raises(StoreUnreachable, match=f"s3://some-bucket/backup .*{dead}"):
            future.result()


@pytest.mark.timeout(60)
def test_s3_bucket_missing(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    store = S3Store.from_url("s3://no-such-bucket/backup")
    for call in (store.check, lambda: store.put("base/x", b"1"), lambda: store.get("base/x"), store.list):
        with pytest.raises(StoreUnreachable, match="bucket no-such-bucket does not exist"):
            call()


@pytest.mark.timeout(120)
def test_s3_credentials_refused(aws_env, tmp_path, monkeypatch):
    # A second server that checks credentials (moto's IAM auth): "testing" is no known key.
    with _moto_server(tmp_path / "moto-auth.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        store = S3Store.from_url("s3://guarded/backup")
        for call in (store.check, store.list, lambda: store.put("base/x", b"1")):
            with pytest.raises(StoreUnreachable, match="s3://guarded/backup .*credentials refused"):
                call()


@pytest.mark.timeout(60)
def test_s3_without_credentials(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store.from_url("s3://any-bucket")
    with pytest.raises(StoreUnreachable, match="s3://any-bucket .*no usable AWS credentials"):
        store.check()


# --- where the S3 store is -----------------------------------------------------------------
@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://my-bucket", "my-bucket", ""),
    ("s3://my-bucket/", "my-bucket", ""),
    ("s3://my.bucket-1/team/cluster-a", "my.bucket-1", "team/cluster-a/"),
    ("s3://my-bucket/backup/", "my-bucket", "backup/"),
])
def test_parse_url(url, bucket, prefix):
    assert s3store.parse_url(url) == (bucket, prefix)


@pytest.mark.parametrize("url, complaint", [
    ("my-bucket/backup", "must start with s3://"),
    ("s3://", "bucket name ''"),
    ("s3://My_Bucket/x", "bucket name 'My_Bucket'"),
    ("s3://ab/x", "bucket name 'ab'"),
    ("s3://bucket/a//b", "prefix 'a//b'"),
    ("s3://bucket/a/../b", "prefix 'a/../b'"),
])
def test_parse_url_names_what_is_wrong(url, complaint):
    with pytest.raises(ValueError, match=complaint.replace(".", r"\.")):
        s3store.parse_url(url)


def test_quorumdb_s3_endpoint_wins_over_aws_endpoint_url(moto_endpoint, monkeypatch):
    bucket = _new_bucket(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # dead
    monkeypatch.setenv(s3store.ENDPOINT_ENV, moto_endpoint)
    store = open_store(f"s3://{bucket}/x")
    assert isinstance(store, S3Store)
    assert store.endpoint == moto_endpoint
    store.check()


def test_open_store_picks_the_backend(tmp_path, aws_env):
    assert isinstance(open_store(str(tmp_path / "backup")), LocalStore)
    store = open_store("s3://a-bucket/team/cluster")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.location) == ("a-bucket", "team/cluster/", "s3://a-bucket/team/cluster")


# --- LocalStore: a put is atomic even when the process dies in the middle of it ---------------
def test_local_put_killed_mid_write_leaves_nothing(tmp_path):
    root = tmp_path / "objects"
    # The child writes the temporary file whole, then dies (SIGKILL) at the fsync, before the
    # link that would publish it: the state a crash mid-upload leaves.
    script = textwrap.dedent(f"""
        import os, signal
        from quorumdb.objectstore import LocalStore
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        LocalStore({str(root)!r}).put("base/seg-7/ckpt-1", b"x" * 1_000_000)
    """)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    child = subprocess.run([sys.executable, "-c", script], env=env, timeout=60, capture_output=True)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    store = LocalStore(root)
    assert store.list() == []
    with pytest.raises(ObjectMissing):
        store.get("base/seg-7/ckpt-1")
    assert store.sweep_temporary() == 1
    assert not any(path.is_file() for path in root.rglob("*"))
    store.put("base/seg-7/ckpt-1", b"written again after the crash")
    assert store.get("base/seg-7/ckpt-1") == b"written again after the crash"


def test_local_put_failing_mid_write_leaves_nothing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "objects")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StoreUnreachable, match="cannot write base/seg-8/ckpt-1: No space left on device"):
        store.put("base/seg-8/ckpt-1", b"y" * 100_000)
    monkeypatch.undo()
    assert store.list() == []
    with pytest.raises(ObjectMissing):
        store.get("base/seg-8/ckpt-1")


# --- `quorumdb up --backup-dir s3://...` and the storage nodes' environment -----------------
def test_up_backup_dir_s3_is_written_into_cluster_toml(tmp_path):
    cluster = config_mod.default_cluster(tmp_path)
    cluster.write()
    args = cli.build_parser().parse_args(["up", "--data-dir", str(tmp_path), "--backup-dir", "s3://qdb-backups/prod/east"])
    cli.apply_pg_options(cluster, args)
    loaded = config_mod.load(cluster.config_path)
    assert loaded.backup_dir == "s3://qdb-backups/prod/east"
    assert loaded.backup_location == "s3://qdb-backups/prod/east"


def test_up_refuses_a_bad_s3_location(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["up", "--backup-dir", "s3://Bad_Bucket/x"])
    assert "bucket name 'Bad_Bucket'" in capsys.readouterr().err


def test_storage_nodes_inherit_the_s3_environment(tmp_path, monkeypatch):
    """Nodes are child processes of `quorumdb up` (and of its supervisor's restarts): the endpoint
    and credentials set for `quorumdb up` must reach them."""
    spawned: list[dict[str, str]] = []

    class FakePopen:
        def __init__(self, argv, env, **_):
            spawned.append(env)

        def poll(self):
            return None

    monkeypatch.setattr(launcher.subprocess, "Popen", FakePopen)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-for-nodes")
    monkeypatch.setenv(s3store.ENDPOINT_ENV, "http://127.0.0.1:9001")
    cluster = config_mod.default_cluster(tmp_path, backup_dir="s3://qdb-backups/x")
    processes = launcher.Cluster(cluster)
    processes.start([cluster.by_service("storage")[0].name])
    assert len(spawned) == 1
    assert spawned[0]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert spawned[0]["AWS_ACCESS_KEY_ID"] == "key-for-nodes"
    assert spawned[0][s3store.ENDPOINT_ENV] == "http://127.0.0.1:9001"
