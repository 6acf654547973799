"""The Global Database against a real two-region cluster (docs/REGIONS.md).

One `quorumdb up --regions us:primary,eu:secondary --wan-ms 20` (30 node processes, a
supervisor per region, HAProxy as the writer endpoint when installed) serves every test of
this module, in order: reads on the secondary and write forwarding, bad input, the RPO
limit with the secondary partitioned, a switchover under a bank workload through the writer
endpoint, the secondary's lag when its leader dies while the primary is cut off, then an
unplanned failover after the primary region is killed, the old primary's return (fenced) and
its rejoin. The module stops `up` at the end, and on any failure kills
every process started under its data directory, by PID.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

import quorumdb
from quorumdb.client import DatabaseError
from quorumdb import config as config_mod
from quorumdb import credentials
from quorumdb import regions, rpc
from quorumdb.pb import journal_pb2, journal_pb2_grpc
from tests.test_cli import UpProcess, run_cli
from tests.util import free_base_port

# Two whole clusters (30 processes) over a simulated WAN: with the active-active tests, in the CI's
# regions step (python -m pytest -m regions), not the default suite.
pytestmark = [pytest.mark.cluster, pytest.mark.regions]

UP_READY_TIMEOUT_S = 240.0
WAN_MS = 20
CALL_TIMEOUT_S = 10.0


def _free_double_block() -> int:
    for _ in range(50):
        base = free_base_port()
        if all(_port_free(base + config_mod.PORT_BLOCK + i) for i in range(config_mod.PORT_BLOCK)):
            return base
    raise RuntimeError("no two free port blocks")


def _port_free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kill_tree_under(data_dir) -> None:
    """Every process whose command line names the data directory (nodes, HAProxy), by PID."""
    out = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True, timeout=30).stdout
    for pid in (int(p) for p in out.split()):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class GlobalDb:
    def __init__(self, data_dir, base: int, up: UpProcess) -> None:
        self.data_dir = data_dir
        self.base = base
        self.up = up
        self.cfg = regions.load(data_dir)

    def cluster(self, name: str) -> config_mod.ClusterConfig:
        return self.cfg.region(name).cluster()

    def port(self, name: str, i: int = 0) -> int:
        return self.cluster(name).computes[i].port

    def connect(self, name: str, i: int = 0) -> object:
        return quorumdb.connect("127.0.0.1", self.port(name, i), data_dir=self.data_dir)

    def cli(self, *args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess:
        return run_cli(*args, "--data-dir", str(self.data_dir), timeout_s=timeout_s)

    def status(self) -> dict:
        result = self.cli("global", "status", "--json", timeout_s=30.0)
        return json.loads(result.stdout)

    def row(self, name: str) -> dict:
        """The region's row of `global status --json`."""
        return next(r for r in self.status()["regions"] if r["name"] == name)

    def role(self, name: str) -> str:
        return self.row(name)["role"]

    def wait_role(self, name: str, role: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.role(name) != role:
            assert time.monotonic() < deadline, f"{name} did not become {role}: {self.status()}"
            time.sleep(0.2)

    def journal_entries(self, name: str, from_index: int, to_index: int) -> dict[int, tuple]:
        """index -> (epoch, kind, ts, txn_id) from the region's journal replicas (whichever answers)."""
        import asyncio

        async def read() -> dict[int, tuple]:
            # The admin certificate and a token of the Global Database (journals want a certificate).
            channels = rpc.Channels(credentials=credentials.for_data_dir(self.data_dir))
            found: dict[int, tuple] = {}
            try:
                for node in self.cluster(name).journals:
                    stub = journal_pb2_grpc.JournalStub(channels.get(node.address))
                    index = from_index
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        while index <= to_index:
                            reply = await stub.ReadEntries(journal_pb2.ReadEntriesRequest(
                                from_index=index, max_entries=500), timeout=CALL_TIMEOUT_S)
                            if not reply.entries:
                                break
                            for entry in reply.entries:
                                if entry.index <= to_index:
                                    found[entry.index] = (entry.epoch, entry.kind, entry.ts, entry.txn_id)
                            index = reply.entries[-1].index + 1
            finally:
                await channels.close()
            return found
        return asyncio.run(read())


@contextlib.contextmanager
def up_regions(data_dir, base: int, *flags: str, ready_timeout_s: float = UP_READY_TIMEOUT_S):
    """`quorumdb up` of several regions for a module: stopped cleanly at the end (exit 0), and every
    process under the data directory killed by PID whatever happened."""
    up = UpProcess(data_dir, base, *flags)
    try:
        up.wait_for("ready", ready_timeout_s)
        yield up
        code = up.terminate_and_wait()
        assert code == 0, up.text()
    finally:
        if up.process.poll() is None:
            up.process.kill()
            up.process.wait(timeout=10)
        _kill_tree_under(data_dir)


@pytest.fixture(scope="module")
def gdb(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("global")
    base = _free_double_block()
    with up_regions(data_dir, base, "--regions", "us:primary,eu:secondary", "--wan-ms", str(WAN_MS)) as up:
        db = GlobalDb(data_dir, base, up)
        db.wait_role("eu", "secondary", 60.0)
        yield db


def _retry(fn, attempts: int = 50, pause_s: float = 0.1):
    for attempt in range(attempts):
        try:
            return fn()
        except DatabaseError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause_s)


# --- reads on the secondary, write forwarding -------------------------------------------------------
def test_secondary_reads_are_never_ahead_never_backwards_and_forwarding_reads_its_own_writes(gdb):
    primary = gdb.connect("us")
    primary.execute("CREATE TABLE counter (id INT PRIMARY KEY, n BIGINT NOT NULL)")
    primary.execute("INSERT INTO counter VALUES (1, 0)")
    acked = [0]
    stop = threading.Event()

    def bump():
        conn = gdb.connect("us", 1)
        n = 0
        while not stop.is_set() and n < 2_000:
            n += 1
            conn.execute(f"UPDATE counter SET n = {n} WHERE id = 1")
            acked[0] = n  # acknowledged: every later read anywhere may see it

    writer = threading.Thread(target=bump, daemon=True)
    writer.start()
    secondary = gdb.connect("eu")
    seen = []
    try:
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:
            rows = _retry(lambda: secondary.execute("SELECT n FROM counter WHERE id = 1").rows)
            ceiling = acked[0] + 1  # at most the commit in flight when the read ended
            if rows:
                seen.append(rows[0][0])
                assert rows[0][0] <= ceiling, "the secondary returned a state the primary never acknowledged"
    finally:
        stop.set()
        writer.join(timeout=30)
    assert len(seen) > 20 and seen == sorted(seen), "reads on the secondary went backwards"
    assert seen[-1] > 0, "the secondary never replicated anything"
    lag = secondary.execute("SHOW quorumdb.replica_lag").rows[0][0]
    assert re.match(r"\d+ ms, \d+ entries \(secondary of us\)", lag), lag

    with pytest.raises(DatabaseError) as refused:
        secondary.execute("INSERT INTO counter VALUES (2, 0)")
    assert refused.value.sqlstate == "25006"
    secondary.execute("SET quorumdb.write_forwarding = 'session'")
    for i in range(10, 20):
        secondary.execute(f"INSERT INTO counter VALUES ({i}, {i})")
        assert secondary.execute(f"SELECT n FROM counter WHERE id = {i}").rows == [(i,)], "own write not visible"
    secondary.execute("SET quorumdb.write_forwarding = 'global'")
    primary.execute("UPDATE counter SET n = -1 WHERE id = 10")
    assert secondary.execute("SELECT n FROM counter WHERE id = 10").rows == [(-1,)]
    with pytest.raises(DatabaseError) as bad:
        secondary.execute("SET quorumdb.write_forwarding = 'sometimes'")
    assert bad.value.sqlstate == "22023"

    # The same through PostgreSQL's protocol (psycopg), where SET and SHOW are the bridge's.
    import psycopg
    cluster = gdb.cluster("eu")
    password = subprocess.run([sys.executable, "-m", "tools.cli", "token", "--user", "admin", "--data-dir",
                               str(gdb.data_dir)], capture_output=True, text=True, timeout=60).stdout.strip()
    with psycopg.connect(host="127.0.0.1", port=cluster.pg_port(cluster.computes[0].name), user="admin",
                         password=password, dbname="postgres", autocommit=True, connect_timeout=10) as pg:
        with pytest.raises(psycopg.Error) as refused_pg:
            pg.execute("INSERT INTO counter VALUES (50, 50)")
        assert refused_pg.value.sqlstate == "25006"
        pg.execute("SET quorumdb.write_forwarding = session")
        assert pg.execute("SHOW quorumdb.write_forwarding").fetchone() == ("session",)
        pg.execute("INSERT INTO counter VALUES (51, 51)")
        assert pg.execute("SELECT n FROM counter WHERE id = 51").fetchone() == (51,)
        assert "secondary of us" in pg.execute("SHOW quorumdb.replica_lag").fetchone()[0]
        with pytest.raises(psycopg.Error) as bad_pg:
            pg.execute("SET quorumdb.write_forwarding = sometimes")
        assert bad_pg.value.sqlstate == "22023"


# --- bad input -------------------------------------------------------------------------------------
def test_bad_input_gets_clear_errors_and_the_cluster_keeps_serving(gdb):
    unknown = gdb.cli("global", "switchover", "--to", "mars")
    assert unknown.returncode == 2 and "unknown region 'mars'" in unknown.stderr
    assert "unknown region" in gdb.cli("global", "failover", "--to", "mars", "--allow-data-loss").stderr
    no_flag = gdb.cli("global", "failover", "--to", "eu")
    assert no_flag.returncode == 2 and "--allow-data-loss" in no_flag.stderr
    itself = gdb.cli("global", "switchover", "--to", "us")
    assert itself.returncode == 2 and "already the primary" in itself.stderr
    bad_rpo = gdb.cli("global", "set-rpo", "0.1s")
    assert bad_rpo.returncode == 2
    # A switchover to a secondary that cannot be reached is refused, and nothing changes.
    assert gdb.cli("chaos", "region-partition", "eu").returncode == 0
    try:
        time.sleep(3.0)  # longer than a report's staleness
        cut_off = gdb.cli("global", "switchover", "--to", "eu")
        assert cut_off.returncode == 1 and "not reported" in cut_off.stderr, cut_off.stderr
    finally:
        assert gdb.cli("chaos", "region-heal").returncode == 0
    assert gdb.role("us") == "primary"
    gdb.connect("us").execute("INSERT INTO counter VALUES (100, 100)")


# --- RPO limit -------------------------------------------------------------------------------------
def test_rpo_limit_holds_commits_while_the_secondary_is_partitioned(gdb):
    assert gdb.cli("global", "set-rpo", "2s").returncode == 0
    conn = gdb.connect("us")
    conn.execute("CREATE TABLE rpo (id INT PRIMARY KEY)")
    time.sleep(0.5)
    assert gdb.cli("chaos", "region-partition", "eu").returncode == 0
    partitioned_at = time.time_ns()
    acked_ts, errors = [], []
    try:
        deadline = time.monotonic() + 9.0
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                conn.execute(f"INSERT INTO rpo VALUES ({i})")
                acked_ts.append(int(conn.execute("SHOW quorumdb.last_commit_ts").rows[0][0]))
            except DatabaseError as error:
                errors.append(str(error))
    finally:
        assert gdb.cli("chaos", "region-heal").returncode == 0
        assert gdb.cli("global", "set-rpo", "off").returncode == 0
    assert errors and all("RPO" in e for e in errors), errors[:3]
    # Nothing acknowledged beyond the limit: the secondary's last report is at most the partition's
    # start, so every acknowledged commit lies within 2 s of it (+ one report period and the clock
    # error: the bound docs/REGIONS.md states).
    assert acked_ts, "commits stopped at once instead of running until the limit"
    assert max(acked_ts) - partitioned_at <= 2.0e9 + 0.5e9, (max(acked_ts) - partitioned_at) / 1e9
    _retry(lambda: conn.execute("INSERT INTO rpo VALUES (-1)"), attempts=100)


# --- switchover under a bank workload through the writer endpoint ---------------------------------
def _bank_setup(conn) -> None:
    conn.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
    conn.execute("CREATE TABLE ledger (id BIGINT PRIMARY KEY)")
    conn.execute("INSERT INTO accounts VALUES " + ", ".join(f"({i}, 100)" for i in range(8)))


def _writer_pg():
    return shutil.which("haproxy") is not None


def test_switchover_under_bank_workload_loses_nothing(gdb):
    import psycopg
    if not _writer_pg() and os.environ.get("CI"):
        pytest.fail("HAProxy must be installed in CI (scripts/install-haproxy)")
    _bank_setup(gdb.connect("us"))
    writer = gdb.status()["writer_endpoint"]
    host, port = writer.rsplit(":", 1)
    password = subprocess.run([sys.executable, "-m", "tools.cli", "token", "--user", "admin", "--data-dir",
                               str(gdb.cfg.region("us").data_dir)], capture_output=True, text=True,
                              timeout=60).stdout.strip()
    acked: list[int] = []
    unknown: list[int] = []
    stop = threading.Event()

    def transfers(worker: int) -> None:
        conn = None
        n = 0
        while not stop.is_set():
            n += 1
            ledger_id = worker * 1_000_000 + n
            try:
                if conn is None:
                    conn = psycopg.connect(host=host, port=int(port), user="admin", password=password,
                                           dbname="postgres", connect_timeout=5)
                a, b = (ledger_id % 8), (ledger_id * 3 + 1) % 8
                if a == b:
                    continue
                with conn.transaction():
                    conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (a,))
                    conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (b,))
                    conn.execute("INSERT INTO ledger VALUES (%s)", (ledger_id,))
                acked.append(ledger_id)
            except psycopg.Error as error:
                state = getattr(error, "sqlstate", None)
                if state is None or state == "40003":
                    unknown.append(ledger_id)  # the connection broke or the outcome is unknown
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                time.sleep(0.05)

    threads = [threading.Thread(target=transfers, args=(w,), daemon=True) for w in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(3.0)
    before = len(acked)
    result = gdb.cli("global", "switchover", "--to", "eu")
    assert result.returncode == 0, result.stderr
    assert "0 commits lost" in result.stdout
    rto = float(re.search(r"RTO ([0-9.]+) s", result.stdout).group(1))
    time.sleep(4.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert before > 0 and len(acked) > before, "the workload did not go on through the writer endpoint"
    print(f"switchover RTO {rto:.2f} s; {len(acked)} transfers acknowledged, {len(unknown)} unknown")
    new_primary = gdb.connect("eu")
    ledger = {row[0] for row in new_primary.execute("SELECT id FROM ledger").rows}
    assert set(acked) <= ledger, f"acknowledged transfers lost: {sorted(set(acked) - ledger)[:10]}"
    assert set(ledger) <= set(acked) | set(unknown), "a transfer nobody sent is in the ledger"
    total = new_primary.execute("SELECT sum(balance) FROM accounts").rows[0][0]
    assert int(total) == 800, f"bank invariant broken: total {total}"
    gdb.wait_role("us", "secondary")
    # No index committed by both regions: their journals agree wherever both hold an entry.
    last = int(gdb.status()["regions"][1]["replicated_index"]) or 1
    ours, theirs = gdb.journal_entries("us", 1, last), gdb.journal_entries("eu", 1, last)
    common = set(ours) & set(theirs)
    assert common, "the two journals share no index to compare"
    assert all(ours[i] == theirs[i] for i in common), "an index holds different entries in the two regions"


# --- the replication lag, when the primary is cut off --------------------------------------------
def _known_lag(gdb, name: str, other_than: str = "", timeout_s: float = 60.0) -> tuple[int, float, float, str]:
    """The region's lag once its leader (not `other_than`) knows it: (lag_ms, monotonic time before
    and after the status command that gave it, leader). A lag nobody knows is null, never 0."""
    deadline = time.monotonic() + timeout_s
    while True:
        before = time.monotonic()
        row = gdb.row(name)
        after = time.monotonic()
        if row["lag_ms"] is not None and row["leader"] and row["leader"] != other_than:
            return row["lag_ms"], before, after, row["leader"]
        assert after < deadline, f"no leader of {name} knew its lag in {timeout_s:.0f} s: {row}"
        time.sleep(0.2)


def test_a_new_secondary_leader_knows_its_lag_while_the_primary_is_cut_off(gdb):
    """A secondary whose adjudicator leader dies while the primary is cut off hears nothing more from
    the primary; the new leader must still know how far behind the region is (its own journal
    says) and report that, not 0: the lag is what a user reads before choosing to fail over."""
    primary, standby = "eu", "us"  # after the switchover above
    gdb.wait_role(standby, "secondary")
    _, _, _, old_leader = _known_lag(gdb, standby)
    assert gdb.cli("chaos", "region-partition", primary).returncode == 0
    cut_at = time.monotonic()  # the command returns once every live node has applied the cut
    try:
        killed = gdb.cli("chaos", "kill-leader", standby)
        assert killed.returncode == 0, killed.stderr
        first, first_before, first_after, _ = _known_lag(gdb, standby, other_than=old_leader)
        # Nothing newer than the cut reached the region: its point is no later than the cut, give or
        # take the clock error (1 ms) and a node that applied the cut late on a loaded machine.
        assert first >= (first_before - cut_at) * 1000 - 500, (first, (first_before - cut_at) * 1000)
        time.sleep(1.5)
        # Whichever leader answers, its point is the journal's last entry: the lag grows with time.
        second, second_before, _, _ = _known_lag(gdb, standby)
        assert second - first >= (second_before - first_after) * 1000 - 1, (first, second)
    finally:
        assert gdb.cli("chaos", "region-heal").returncode == 0
        restarted = gdb.cli("chaos", "restart", f"{standby}/{old_leader}", timeout_s=120)
        assert restarted.returncode == 0, restarted.stderr
    # Replication resumes under the new leader and the lag comes back down.
    deadline = time.monotonic() + 60.0
    while (lag := gdb.row(standby)["lag_ms"]) is None or lag > 2000:
        assert time.monotonic() < deadline, f"{standby} did not catch up after the heal: lag {lag}"
        time.sleep(0.2)


# --- unplanned failover after the primary region is killed ---------------------------------------
def test_failover_after_region_kill_keeps_a_prefix_and_saves_the_rest(gdb):
    primary, standby = "eu", "us"  # after the switchover above
    gdb.wait_role(standby, "secondary")
    conn = gdb.connect(primary)
    conn.execute("CREATE TABLE events (id BIGINT PRIMARY KEY)")
    acked: dict[int, int] = {}  # id -> commit_ts
    stop = threading.Event()

    def load(worker: int) -> None:
        c = gdb.connect(primary, worker)
        n = 0
        while not stop.is_set():
            n += 1
            event = worker * 1_000_000 + n
            try:
                c.execute(f"INSERT INTO events VALUES ({event})")
                acked[event] = int(c.execute("SHOW quorumdb.last_commit_ts").rows[0][0])
            except DatabaseError:
                return  # the region is gone

    threads = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    # The region is cut off first, as a region failure often begins: what it acknowledges from now
    # on never reaches the secondary, so the kill loses acknowledged commits.
    assert gdb.cli("chaos", "region-partition", primary).returncode == 0
    time.sleep(1.0)
    # The clock starts before the status command that gave the lag: the lag is measured somewhere
    # inside it, and the primary goes on acknowledging while the command finishes, as it does until
    # the kill ends.
    lag_ms, measured, _, _ = _known_lag(gdb, standby)
    killed = gdb.cli("chaos", "region-kill", primary)
    assert killed.returncode == 0, killed.stderr
    kill_took_ms = (time.monotonic() - measured) * 1000  # the primary acknowledges until it is dead
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    result = gdb.cli("global", "failover", "--to", standby, "--allow-data-loss")
    assert result.returncode == 0, result.stderr
    assert gdb.cli("chaos", "region-heal").returncode == 0
    promotion_index = int(re.search(r"promoted at index (\d+)", result.stdout).group(1))
    (entry,) = gdb.journal_entries(standby, promotion_index, promotion_index).values()
    promotion_ts = entry[2]
    survivor = gdb.connect(standby)
    kept = {row[0] for row in survivor.execute("SELECT id FROM events").rows}
    expected_kept = {event for event, ts in acked.items() if ts <= promotion_ts}
    lost = {event: ts for event, ts in acked.items() if ts > promotion_ts}
    assert lost, "nothing acknowledged was lost: the failover's loss went untested"
    assert expected_kept <= kept, "an acknowledged commit before the promotion index is missing"
    assert not (kept & set(lost)), "a commit after the promotion index survived"
    # The loss window (docs/REGIONS.md): the lag measured before the kill, plus the time until the
    # region was dead, plus 0.5 s (a replicated point is a claim: up to one idle claim interval
    # and the clock error behind the last replicated commit).
    bound_ns = (lag_ms + kill_took_ms + 500) * 1_000_000
    window_ns = max(lost.values()) - promotion_ts
    assert window_ns <= bound_ns, (lag_ms, kill_took_ms, window_ns / 1e6)
    survivor.execute("INSERT INTO events VALUES (-1)")  # the new primary commits

    # The old primary returns: fenced, it commits nothing (and serves nothing stale).
    assert gdb.cli("chaos", "region-restart", primary, timeout_s=300).returncode == 0
    gdb.wait_role(primary, "fenced", 60.0)
    old = _retry(lambda: gdb.connect(primary), attempts=100)
    with pytest.raises(DatabaseError) as refused:
        old.execute("INSERT INTO events VALUES (-2)")
    assert refused.value.sqlstate in ("57P03", "25006")
    assert -2 not in {row[0] for row in survivor.execute("SELECT id FROM events").rows}

    rejoin = gdb.cli("global", "rejoin", primary, timeout_s=400)
    assert rejoin.returncode == 0, rejoin.stderr
    snapshot = re.search(r"recovery snapshot (\S+)", rejoin.stdout).group(1)
    with open(os.path.join(snapshot, "lost-commits.jsonl")) as f:
        saved_ts = {json.loads(line)["ts"] for line in f}
    assert set(lost.values()) <= saved_ts, "a lost acknowledged commit is not in the recovery snapshot"
    gdb.wait_role(primary, "secondary", 60.0)
    print(f"failover: promotion index {promotion_index}, {len(lost)} acknowledged commits lost "
          f"(lag before the kill {lag_ms} ms), all in {snapshot}")


def test_detach_makes_the_secondary_an_independent_cluster(gdb):
    roles = {r["role"]: r["name"] for r in gdb.status()["regions"]}
    if "secondary" not in roles:
        pytest.fail(f"no secondary region to detach (roles {roles}): the failover test above did not rejoin one")
    primary, secondary = roles["primary"], roles["secondary"]
    result = gdb.cli("global", "detach", secondary)
    assert result.returncode == 0, result.stderr
    gdb.wait_role(secondary, "detached")
    detached = gdb.connect(secondary)
    detached.execute("CREATE TABLE own (id INT PRIMARY KEY)")
    detached.execute("INSERT INTO own VALUES (1)")  # it commits on its own now
    gdb.connect(primary).execute("INSERT INTO events VALUES (-3)")  # and the primary goes on alone
    with pytest.raises(DatabaseError):
        gdb.connect(primary).execute("SELECT * FROM own")  # nothing flows between them any more
    assert gdb.cli("global", "switchover", "--to", secondary).returncode != 0
