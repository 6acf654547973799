"""Continuous backup and point-in-time restore on real clusters of processes.

One source cluster runs a bank workload (transfers between accounts, each also inserting its own
row into `transfers`, and recording the commit_ts of every acknowledged commit through
SHOW quorumdb.last_commit_ts) while the uploading storage copy is SIGKILLed (and restarted later)
and the adjudicator leader is SIGKILLed and restarted. Then, for several random times T in the
restorable window (one of them after the uploader was killed), `quorumdb restore` builds a new
cluster, which is started and read: it must hold every acknowledged transfer with commit_ts <= T,
none with commit_ts > T (unknown outcomes may go either way), balances that are exactly the
initial ones plus the transfers present, and the bank total.
"""
from __future__ import annotations

import io
import random
import threading
import time

import pytest

from quorumdb import client as qclient
from quorumdb import errors, timefmt
from tools.cli import build_parser
from tools.dr import restore as restore_mod
from tools.jepsen.nemesis import find_leader
from tools.launcher import Cluster, free_base_port, node_status
from storage_node import backup_core

pytestmark = pytest.mark.cluster

ACCOUNTS = 8
INITIAL = 100
SEED = int(time.time()) % 100_000


class Bank:
    """Client threads transferring money; every outcome recorded with its commit_ts when known."""

    def __init__(self, cluster: Cluster, threads: int = 3):
        self.cluster = cluster
        self.acked: dict[str, int] = {}   # transfer id -> commit_ts
        self.unknown: set[str] = set()
        self.effects: dict[str, tuple[int, int, int]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def setup(self) -> None:
        node = self.cluster.config.computes[0]
        conn = qclient.connect(node.host, node.port)
        conn.execute("CREATE TABLE bank (id int PRIMARY KEY, balance int)")
        conn.execute("CREATE TABLE transfers (id text PRIMARY KEY, src int, dst int, amount int)")
        conn.execute("INSERT INTO bank VALUES " + ", ".join(f"({i}, {INITIAL})" for i in range(ACCOUNTS)))
        conn.close()

    def _run(self, worker: int) -> None:
        rng = random.Random(SEED * 10 + worker)
        endpoints = [(n.host, n.port) for n in self.cluster.config.computes]
        endpoints = endpoints[worker % len(endpoints):] + endpoints[:worker % len(endpoints)]
        conn = None
        number = 0
        deadline = time.monotonic() + 180
        while not self._stop.is_set() and time.monotonic() < deadline:
            number += 1
            transfer = f"w{worker}-{number}"
            src, dst = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 5)
            committing = False
            try:
                if conn is None:
                    conn = qclient.connect(endpoints=endpoints)
                conn.begin()
                balance = conn.execute("SELECT balance FROM bank WHERE id = $1", [src]).rows[0][0]
                if int(balance) < amount:
                    conn.rollback()
                    continue
                conn.execute("UPDATE bank SET balance = balance - $1 WHERE id = $2", [amount, src])
                conn.execute("UPDATE bank SET balance = balance + $1 WHERE id = $2", [amount, dst])
                conn.execute("INSERT INTO transfers VALUES ($1, $2, $3, $4)", [transfer, src, dst, amount])
                with self._lock:
                    self.effects[transfer] = (src, dst, amount)
                committing = True
                conn.commit()
                commit_ts = int(conn.execute("SHOW quorumdb.last_commit_ts").rows[0][0])
                with self._lock:
                    if commit_ts == 0:  # asked on another session (a failover in between): ts unknown
                        self.unknown.add(transfer)
                    else:
                        self.acked[transfer] = commit_ts
            except qclient.DatabaseError as error:
                if committing and (error.sqlstate == errors.STATEMENT_COMPLETION_UNKNOWN
                                   or errors.is_connection_error(error.sqlstate)):
                    with self._lock:
                        self.unknown.add(transfer)
                if committing and transfer not in self.unknown and transfer not in self.acked and \
                        not error.sqlstate.startswith(errors.CLASS_TRANSACTION_ROLLBACK):
                    with self._lock:
                        self.unknown.add(transfer)  # COMMIT failed some other way: say unknown, never lost
                try:
                    if conn is not None and conn.transaction_status != "I":
                        conn.rollback()
                except qclient.DatabaseError:
                    conn = None
                if errors.is_connection_error(error.sqlstate):
                    conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "bank threads did not stop"


class LagProbe:
    """Samples now - the latest restorable time any storage copy reports."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.samples: list[tuple[float, float, str]] = []  # (wall s, lag s, uploader)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            latest, uploader = 0, ""
            for node in self.cluster.config.storages:
                status = node_status(node, timeout_s=1.0)
                if status is None:
                    continue
                latest = max(latest, status.backup_restorable_ts)
                if status.backup_uploader:
                    uploader += node.name + " "
            if latest:
                self.samples.append((time.time(), (time.time_ns() - latest) / 1e9, uploader.strip()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def restore_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = restore_mod.command(build_parser().parse_args(["restore", *argv]), out, err)
    return code, out.getvalue(), err.getvalue()


def read_restored(data_dir) -> tuple[set[str], dict[int, int]]:
    from quorumdb import config as config_mod

    restored = Cluster(config_mod.load(data_dir / "cluster.toml"))
    try:
        restored.start()
        restored.wait_ready(timeout_s=120, healthy=True)
        node = restored.config.computes[0]
        conn = qclient.connect(node.host, node.port)
        present = {row[0] for row in conn.execute("SELECT id FROM transfers").rows}
        balances = {int(r[0]): int(r[1]) for r in conn.execute("SELECT id, balance FROM bank").rows}
        conn.execute("INSERT INTO transfers VALUES ('after-restore', 0, 0, 0)")  # it takes writes
        conn.close()
        return present, balances
    finally:
        restored.stop_all()


def check_cut(bank: Bank, to_ts: int, present: set[str], balances: dict[int, int]) -> None:
    must = {t for t, ts in bank.acked.items() if ts <= to_ts}
    must_not = {t for t, ts in bank.acked.items() if ts > to_ts}
    assert must <= present, f"acknowledged commits <= T missing after restore: {sorted(must - present)[:5]}"
    assert not (present & must_not), f"commits after T present: {sorted(present & must_not)[:5]}"
    assert present <= set(bank.acked) | bank.unknown, f"never-committed transfers: {sorted(present - set(bank.acked) - bank.unknown)[:5]}"
    expected = {i: INITIAL for i in range(ACCOUNTS)}
    for transfer in present:
        src, dst, amount = bank.effects[transfer]
        expected[src] -= amount
        expected[dst] += amount
    assert balances == expected, f"balances {balances} are not the initial ones plus the transfers present"
    assert sum(balances.values()) == ACCOUNTS * INITIAL


@pytest.mark.long  # about a minute (restores at many times under faults): the CI's regions-and-long step runs it
def test_pitr_is_exact_under_faults_and_survives_the_uploader_dying(cluster_factory, tmp_path):
    print(f"seed {SEED}")
    cluster = cluster_factory(heartbeat_ms=20)
    uploader = cluster.config.storages[0].name  # rank 0
    bank = Bank(cluster)
    bank.setup()
    probe = LagProbe(cluster)
    bank.start()
    probe.start()
    try:
        time.sleep(6)
        killed_at = time.time_ns()
        cluster.kill(uploader)
        time.sleep(10)  # the rank 1 copy takes over
        cluster.restart(uploader)
        time.sleep(4)
        leader = find_leader(cluster.config)
        assert leader is not None
        cluster.kill(leader)
        time.sleep(3)
        cluster.restart(leader)
        time.sleep(5)
    finally:
        bank.stop()
        time.sleep(2)
        probe.stop()
    assert len(bank.acked) > 20, f"too few commits: {len(bank.acked)}"
    during_kill = [s for s in probe.samples if killed_at / 1e9 + backup_core.TAKEOVER_S + 2 < s[0] < killed_at / 1e9 + 10]
    takeover = [s for s in probe.samples if killed_at / 1e9 <= s[0] < killed_at / 1e9 + 10]
    print(f"acked {len(bank.acked)}, unknown {len(bank.unknown)}; lag samples (s): "
          f"max {max(s[1] for s in probe.samples):.2f}, median {sorted(s[1] for s in probe.samples)[len(probe.samples) // 2]:.2f}; "
          f"from the kill of {uploader} to its restart: max {max((s[1] for s in takeover), default=float('nan')):.2f}; "
          f"after the takeover: max {max((s[1] for s in during_kill), default=float('nan')):.2f}, "
          f"uploaders {sorted({s[2] for s in during_kill})}")
    assert any(cluster.config.storages[1].name in s[2] for s in during_kill), "no copy took over the upload"
    location = cluster.config.backup_location
    code, out, err = restore_cli("--from", location, "--latest", "--data-dir", str(tmp_path / "probe"))
    assert code == 0, err
    print(out)
    cluster.stop_all()  # the backup is all a restore needs; the machine is small
    acked_ts = sorted(bank.acked.values())
    rng = random.Random(SEED)
    # Times: one in the middle of the uploader's absence, then random ones in the window.
    times = [killed_at + 5 * 10**9] + [rng.randint(acked_ts[0], acked_ts[-1]) for _ in range(2)]
    for number, to_ts in enumerate(times):
        new = tmp_path / f"restored{number}"
        code, out, err = restore_cli("--from", location, "--to-time", timefmt.format_utc(to_ts),
                                     "--data-dir", str(new), "--base-port", str(_other_free_block(cluster)))
        assert code == 0, err
        print(out)
        used = timefmt.parse_utc(timefmt.format_utc(to_ts))  # ms precision, as the command line takes it
        present, balances = read_restored(new)
        check_cut(bank, used, present, balances)
    bad_input(location, tmp_path)


def bad_input(location: str, tmp_path) -> None:
    """A time outside the window, a corrupt or missing object, an absent store: exit 1, nothing created."""
    import shutil

    from quorumdb import backup_layout as layout
    from quorumdb.objectstore import LocalStore

    before = [(i.key, i.size) for i in LocalStore(location).list("")]
    new = tmp_path / "bad"
    code, _, err = restore_cli("--from", location, "--to-time", "2001-01-01T00:00:00.000Z", "--data-dir", str(new))
    assert code == 1 and "2001-01-01T00:00:00.000Z" in err and "cannot be restored" in err, err
    copy = tmp_path / "backup-copy"
    shutil.copytree(location, copy)
    victim = sorted(i.key for i in LocalStore(copy).list(layout.LOG_PREFIX))[1]
    data = (copy / victim).read_bytes()
    (copy / victim).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    code, _, err = restore_cli("--from", str(copy), "--latest", "--data-dir", str(new))
    assert code == 1 and victim in err and "corrupt" in err, err
    (copy / victim).unlink()
    code, _, err = restore_cli("--from", str(copy), "--latest", "--data-dir", str(new))
    assert code == 1 and "missing" in err, err
    code, _, err = restore_cli("--from", str(tmp_path / "nowhere"), "--latest", "--data-dir", str(new))
    assert code == 1 and str(tmp_path / "nowhere") in err, err
    assert not new.exists()
    assert [(i.key, i.size) for i in LocalStore(location).list("")] == before, "the source backup changed"
    print("bad input: " + err.strip())


def _other_free_block(cluster: Cluster) -> int:
    """A free block of ports that is not the stopped source cluster's (restore refuses that one)."""
    source = cluster.config.base_port
    for _ in range(50):
        base = free_base_port()
        if base != source:
            return base
    raise RuntimeError("no free block of ports other than the source cluster's")
