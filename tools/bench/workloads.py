"""The workloads of `quorumdb bench`, as plain generators of SQL (pure: no I/O, no clock).

A workload's `setup(rows)` and each transaction `steps(plan)` are generators that yield SQL
text and receive each statement's Result back (`result = yield sql`). The runner drives them
with the sync or the asyncio client alike, so the SQL lives in one place. `plan(rng)` picks a
transaction's parameters once, so a transaction aborted with 40001 is retried with the same
ones as a new transaction.

Tables (created idempotently; rows 1..N are made to exist, extra rows are harmless):
  bench_kv(k, v, pad)                    point-write, point-read, rmw, scan
  bench_accounts(id, balance)            bank-contended (only `hot` accounts are used)
  pgbench_branches/tellers/accounts/history   tpcb (pgbench's TPC-B-like transaction)
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Generator

Steps = Generator[str, Any, None]

LOAD_BATCH_ROWS = 500  # rows per INSERT while loading: well under the 3,000-row transaction quota
SCAN_ROWS = 100  # rows one `scan` reads
PAD = "x" * 32  # bench_kv filler, a small fixed-size row
FILLER = "f" * 84  # pgbench's filler is char(84) on accounts
TELLERS_PER_BRANCH = 10  # as pgbench
HISTORY_ID_MAX = 2 ** 62  # client-chosen history keys (the table needs a primary key)
TRANSFER_AMOUNT_MAX = 100
VALUE_MAX = 1_000_000  # bench_kv.v written by point-write is 0..VALUE_MAX (tools/bench/compare's pgbench scripts too)
DELTA_MAX = 5000  # tpcb: each transaction moves -DELTA_MAX..DELTA_MAX, as pgbench's builtin

# The statements of the workloads tools/bench/compare also runs through pgbench (tools/bench/pgbench_load.py
# fills the same templates with pgbench variables), so both clients send the same SQL text.
POINT_WRITE_SQL = ("INSERT INTO bench_kv (k, v, pad) VALUES ({k}, {v}, '" + PAD + "') "
                   "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
POINT_READ_SQL = "SELECT v FROM bench_kv WHERE k = {k}"
TPCB_SQL = (
    "BEGIN",
    "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid}",
    "SELECT abalance FROM pgbench_accounts WHERE aid = {aid}",
    "UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid}",
    "UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid}",
    "INSERT INTO pgbench_history (hid, tid, bid, aid, delta, mtime) "
    "VALUES ({hid}, {tid}, {bid}, {aid}, {delta}, now())",
    "COMMIT",
)


@dataclasses.dataclass(frozen=True)
class Params:
    rows: int = 10_000  # rows of bench_kv, and pgbench_accounts for tpcb
    scale: int = 1  # tpcb: branches (tellers = 10 per branch)
    hot: int = 8  # bank-contended: accounts transfers choose from

    def __post_init__(self) -> None:
        if self.rows < 1 or self.scale < 1 or self.hot < 2:
            raise ValueError("rows and scale must be >= 1 and hot >= 2")


def ensure_rows(table: str, key: str, count: int, values: Any) -> Steps:
    """Make rows 1..count of `table` exist; `values(i)` is one row's SQL tuple text. Skips the
    load when they are all there already (one count query)."""
    present = (yield f"SELECT count(*) FROM {table} WHERE {key} BETWEEN 1 AND {count}").scalar()
    if present == count:
        return
    for first in range(1, count + 1, LOAD_BATCH_ROWS):
        last = min(count, first + LOAD_BATCH_ROWS - 1)
        tuples = ", ".join(values(i) for i in range(first, last + 1))
        yield f"INSERT INTO {table} VALUES {tuples} ON CONFLICT ({key}) DO NOTHING"


class Workload:
    name = ""
    description = ""

    def __init__(self, params: Params, salt: int = 0):
        self.params = params
        self.salt = salt  # differs per run, so keys a run inserts do not repeat an earlier run's (same --seed)

    def setup(self) -> Steps:
        raise NotImplementedError

    def plan(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def steps(self, plan: Any) -> Steps:
        raise NotImplementedError


class _KvWorkload(Workload):
    def setup(self) -> Steps:
        yield "CREATE TABLE IF NOT EXISTS bench_kv (k bigint PRIMARY KEY, v bigint NOT NULL, pad text)"
        yield from ensure_rows("bench_kv", "k", self.params.rows, lambda i: f"({i}, 0, '{PAD}')")

    def plan(self, rng: random.Random) -> Any:
        return rng.randint(1, self.params.rows), rng.randint(0, VALUE_MAX)


class PointWrite(_KvWorkload):
    name = "point-write"
    description = "autocommit single-row upsert (INSERT ... ON CONFLICT (k) DO UPDATE)"

    def steps(self, plan: Any) -> Steps:
        key, value = plan
        yield POINT_WRITE_SQL.format(k=key, v=value)


class PointRead(_KvWorkload):
    name = "point-read"
    description = "primary-key SELECT of one row"

    def steps(self, plan: Any) -> Steps:
        key, _ = plan
        yield POINT_READ_SQL.format(k=key)


class ReadModifyWrite(_KvWorkload):
    name = "rmw"
    description = "BEGIN; SELECT; UPDATE; COMMIT on one random row"

    def steps(self, plan: Any) -> Steps:
        key, _ = plan
        yield "BEGIN"
        value = (yield f"SELECT v FROM bench_kv WHERE k = {key}").scalar()
        yield f"UPDATE bench_kv SET v = {int(value or 0) + 1} WHERE k = {key}"
        yield "COMMIT"


class Scan(_KvWorkload):
    name = "scan"
    description = f"range SELECT of {SCAN_ROWS} consecutive rows by primary key"

    def plan(self, rng: random.Random) -> Any:
        return rng.randint(1, max(1, self.params.rows - SCAN_ROWS + 1))

    def steps(self, plan: Any) -> Steps:
        yield f"SELECT k, v FROM bench_kv WHERE k BETWEEN {plan} AND {plan + SCAN_ROWS - 1}"


class TpcB(Workload):
    name = "tpcb"
    description = "pgbench's TPC-B-like transaction (3 updates, 1 select, 1 insert)"

    def setup(self) -> Steps:
        scale, rows = self.params.scale, self.params.rows
        yield "CREATE TABLE IF NOT EXISTS pgbench_branches (bid int PRIMARY KEY, bbalance bigint NOT NULL, filler text)"
        yield ("CREATE TABLE IF NOT EXISTS pgbench_tellers "
               "(tid int PRIMARY KEY, bid int NOT NULL, tbalance bigint NOT NULL, filler text)")
        yield ("CREATE TABLE IF NOT EXISTS pgbench_accounts "
               "(aid int PRIMARY KEY, bid int NOT NULL, abalance bigint NOT NULL, filler text)")
        yield ("CREATE TABLE IF NOT EXISTS pgbench_history (hid bigint PRIMARY KEY, tid int, bid int, aid int, "
               "delta int, mtime timestamp, filler text)")
        yield from ensure_rows("pgbench_branches", "bid", scale, lambda i: f"({i}, 0, NULL)")
        yield from ensure_rows("pgbench_tellers", "tid", scale * TELLERS_PER_BRANCH,
                               lambda i: f"({i}, {(i - 1) // TELLERS_PER_BRANCH + 1}, 0, NULL)")
        yield from ensure_rows("pgbench_accounts", "aid", rows,
                               lambda i: f"({i}, {(i - 1) * scale // rows + 1}, 0, '{FILLER}')")

    def plan(self, rng: random.Random) -> Any:
        scale = self.params.scale
        return (rng.randint(1, self.params.rows), rng.randint(1, scale), rng.randint(1, scale * TELLERS_PER_BRANCH),
                rng.randint(-DELTA_MAX, DELTA_MAX), rng.randint(1, HISTORY_ID_MAX - 1) ^ (self.salt % HISTORY_ID_MAX))

    def steps(self, plan: Any) -> Steps:
        aid, bid, tid, delta, hid = plan
        for template in TPCB_SQL:
            yield template.format(aid=aid, bid=bid, tid=tid, delta=delta, hid=hid)


class BankContended(Workload):
    name = "bank-contended"
    description = "transfers between a few hot accounts (40001 retried as a new transaction, counted as aborts)"

    def setup(self) -> Steps:
        yield "CREATE TABLE IF NOT EXISTS bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL)"
        yield from ensure_rows("bench_accounts", "id", self.params.hot, lambda i: f"({i}, 1000000)")

    def plan(self, rng: random.Random) -> Any:
        source, target = rng.sample(range(1, self.params.hot + 1), 2)
        return source, target, rng.randint(1, TRANSFER_AMOUNT_MAX)

    def steps(self, plan: Any) -> Steps:
        source, target, amount = plan
        yield "BEGIN"
        yield f"SELECT balance FROM bench_accounts WHERE id = {source}"
        yield f"UPDATE bench_accounts SET balance = balance - {amount} WHERE id = {source}"
        yield f"UPDATE bench_accounts SET balance = balance + {amount} WHERE id = {target}"
        yield "COMMIT"


WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls for cls in (PointWrite, PointRead, ReadModifyWrite, TpcB, BankContended, Scan)
}


def make(name: str, params: Params, salt: int = 0) -> Workload:
    try:
        return WORKLOADS[name](params, salt)
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; one of {', '.join(WORKLOADS)}") from None
