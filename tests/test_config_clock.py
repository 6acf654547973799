"""Cluster file round trip, the default port layout, and the clock's interval."""
import pytest

from quorumdb import config as config_mod
from quorumdb.clock import Clock, FakeClock


def test_default_layout_names_and_ports(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=7100)
    names = [n.name for n in cluster.nodes]
    assert names[:3] == ["journal-az1", "journal-az2", "journal-az3"]
    assert [n.name for n in cluster.storages] == [
        "storage-az1-a", "storage-az1-b", "storage-az2-a", "storage-az2-b", "storage-az3-a", "storage-az3-b"]
    assert [n.port for n in cluster.computes] == [7100, 7101, 7102]
    ports = [n.port for n in cluster.nodes]
    assert len(set(ports)) == len(ports) == 15
    assert {n.az for n in cluster.storages if n.az == "az2"} == {"az2"}
    assert sum(1 for n in cluster.storages if n.az == "az3") == 2


def test_cluster_file_round_trip(tmp_path):
    cluster = config_mod.default_cluster(tmp_path, base_port=9000, heartbeat_ms=7, clock_error_ns=5)
    path = cluster.write()
    loaded = config_mod.load(path)
    assert loaded == cluster


def test_unknown_setting_is_refused(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text("[cluster]\nheartbeat_msec = 3\n")
    with pytest.raises(ValueError, match="heartbeat_msec"):
        config_mod.load(path)


def test_read_mode_round_trips_and_a_bad_one_is_refused(tmp_path):
    assert config_mod.default_cluster(tmp_path / "a").read_mode == "quorum"
    cluster = config_mod.default_cluster(tmp_path / "b", read_mode="single")
    assert config_mod.load(cluster.write()).read_mode == "single"
    path = cluster.write()
    path.write_text(path.read_text().replace('read_mode = "single"', 'read_mode = "fastest"'))
    with pytest.raises(ValueError, match="read_mode must be one of quorum, single, not 'fastest'"):
        config_mod.load(path)


def test_clock_interval_contains_now_and_has_the_error_bound():
    clock = Clock(error_ns=2_000_000)
    earliest, latest = clock.now()
    assert latest - earliest == 4_000_000
    fake = FakeClock(start_ns=10_000, error_ns=100)
    assert fake.now() == (9_900, 10_100)
    fake.advance(50)
    assert fake.wait_until_past_s(10_100) > 0
    fake.advance(200)
    assert fake.wait_until_past_s(10_100) == 0.0
