"""Workloads: what each client does, how it runs against QuorumDB, and the final reads.

A workload has setup (tables and initial rows), a generator (the next operation of client i,
drawn from that client's own seeded Random, so a replay asks for the same operations), an
executor (SQL through quorumdb.client), final reads, and its checker (checker.py).

Outcome of an operation, as the history records it:
    ok    the transaction committed (the client got COMMIT's acknowledgement);
    fail  it definitely did not: a 40001 conflict on every attempt, an error before COMMIT
          was sent, or an answer that says nothing was committed (57P03 from COMMIT);
    info  unknown: 40003, the connection lost while COMMIT was in flight, any other error
          from COMMIT.
A 40001 is retried by the client as a new transaction (re-reading everything), at most
OP_ATTEMPTS_MAX times; the server never replays a transaction.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable

from quorumdb import client as qclient
from quorumdb import errors
from tools.jepsen import checker, limits
from tools.jepsen.history import Op


class Definite(Exception):
    """The operation did not take effect."""

    def __init__(self, message: str, broken: bool = False):
        super().__init__(message)
        self.broken = broken  # the connection should be replaced


class Indefinite(Exception):
    """The operation may or may not have taken effect."""

    def __init__(self, message: str, broken: bool = False):
        super().__init__(message)
        self.broken = broken


def _error_text(error: qclient.DatabaseError) -> str:
    return f"{error.sqlstate} {error.message}"[:300]


def _rollback_quietly(conn: qclient.Connection) -> None:
    if conn.transaction_status == "I":
        return
    try:
        conn.rollback()
    except qclient.DatabaseError:
        pass


class Refused(Exception):
    """The client itself decided not to go on with the transaction (it rolls back)."""


def run_transaction(conn: qclient.Connection, body: Callable[[qclient.Connection], Any], rng: random.Random) -> Any:
    """BEGIN; body(conn); COMMIT with the client's own 40001 retries; raises Definite/Indefinite."""
    last = ""
    for attempt in range(limits.OP_ATTEMPTS_MAX):
        committing = False
        try:
            conn.begin()
            value = body(conn)
            committing = True
            conn.commit()
            return value
        except qclient.OperationalError as error:
            if committing:
                raise Indefinite(_error_text(error), broken=True) from None
            raise Definite(_error_text(error), broken=True) from None
        except qclient.DatabaseError as error:
            _rollback_quietly(conn)
            if error.sqlstate == errors.SERIALIZATION_FAILURE:
                last = _error_text(error)
                rng_delay = min(limits.OP_BACKOFF_MAX_S, limits.OP_BACKOFF_FIRST_S * 2 ** attempt)
                time.sleep(rng.uniform(0, rng_delay))
                continue
            if not committing:
                raise Definite(_error_text(error), broken=error.sqlstate == errors.CANNOT_CONNECT_NOW) from None
            if error.sqlstate == errors.CANNOT_CONNECT_NOW:
                raise Definite(_error_text(error), broken=True) from None
            raise Indefinite(_error_text(error)) from None
        except Refused as refusal:
            _rollback_quietly(conn)
            raise Definite(str(refusal)) from None
    raise Definite(f"gave up after {limits.OP_ATTEMPTS_MAX} attempts: {last}")


def read_only(conn: qclient.Connection, body: Callable[[qclient.Connection], Any]) -> Any:
    """A read-only transaction: any error means no result (fail); nothing to be unknown about."""
    try:
        conn.begin()
        value = body(conn)
        conn.commit()
        return value
    except qclient.OperationalError as error:
        raise Definite(_error_text(error), broken=True) from None
    except qclient.DatabaseError as error:
        _rollback_quietly(conn)
        raise Definite(_error_text(error), broken=error.sqlstate == errors.CANNOT_CONNECT_NOW) from None


class Workload:
    name = ""
    write_fs: tuple[str, ...] = ()

    def setup(self, conn: qclient.Connection) -> None:
        raise NotImplementedError

    def next_op(self, rng: random.Random, client: int, seq: int) -> tuple[str, Any]:
        raise NotImplementedError

    def execute(self, conn: qclient.Connection, f: str, value: Any, rng: random.Random) -> Any:
        raise NotImplementedError

    def final_read(self, conn: qclient.Connection) -> Any:
        raise NotImplementedError

    def check(self, ops: list[Op], final: Any) -> checker.Verdict:
        raise NotImplementedError

    def is_write(self, op: Op) -> bool:
        return op.f in self.write_fs

    def meta(self) -> dict:
        return {}


# --- bank ---------------------------------------------------------------------------------


class Bank(Workload):
    """Accounts with a fixed total; transfers move money; snapshot reads see every account."""

    name = "bank"
    write_fs = ("transfer",)

    def __init__(self, accounts: int = 8, balance: int = 100, read_fraction: float = 0.2):
        self.accounts = accounts
        self.balance = balance
        self.initial = {account: balance for account in range(accounts)}
        self.read_fraction = read_fraction

    def meta(self) -> dict:
        return {"accounts": self.accounts, "balance": self.balance}

    def setup(self, conn: qclient.Connection) -> None:
        conn.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
        conn.execute("CREATE TABLE transfers (id TEXT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, "
                     "amount BIGINT NOT NULL)")
        values = ", ".join(f"({a}, {b})" for a, b in sorted(self.initial.items()))
        conn.execute(f"INSERT INTO accounts VALUES {values}")

    def next_op(self, rng: random.Random, client: int, seq: int) -> tuple[str, Any]:
        if rng.random() < self.read_fraction:
            return "read", None
        src, dst = rng.sample(range(self.accounts), 2)
        return "transfer", {"id": f"c{client}-{seq}", "from": src, "to": dst, "amount": rng.randint(1, 5)}

    def execute(self, conn, f, value, rng):
        if f == "read":
            return {"balances": read_only(conn, self._read_balances)}
        assert f == "transfer"
        src, dst, amount = value["from"], value["to"], value["amount"]

        def body(c: qclient.Connection):
            balances = dict(c.fetchall(f"SELECT id, balance FROM accounts WHERE id IN ({src}, {dst})"))
            if balances.get(src, 0) < amount:
                raise Refused(f"insufficient funds: account {src} has {balances.get(src)}")
            c.execute(f"UPDATE accounts SET balance = {balances[src] - amount} WHERE id = {src}")
            c.execute(f"UPDATE accounts SET balance = {balances[dst] + amount} WHERE id = {dst}")
            c.execute("INSERT INTO transfers VALUES ($1, $2, $3, $4)", [value["id"], src, dst, amount])
            return value

        return run_transaction(conn, body, rng)

    def _read_balances(self, c: qclient.Connection) -> list[list[int]]:
        # Two statements in one transaction: both must read the same snapshot.
        half = self.accounts // 2
        rows = c.fetchall(f"SELECT id, balance FROM accounts WHERE id < {half}")
        rows += c.fetchall(f"SELECT id, balance FROM accounts WHERE id >= {half}")
        return sorted([int(a), int(b)] for a, b in rows)

    def final_read(self, conn):
        def body(c):
            return {"balances": self._read_balances(c),
                    "transfer_ids": sorted(r[0] for r in c.fetchall("SELECT id FROM transfers"))}
        return read_only(conn, body)

    def check(self, ops, final):
        return checker.check_bank(ops, self.initial, final)


# --- set ----------------------------------------------------------------------------------


class SetWorkload(Workload):
    """Unique inserts; every acknowledged one must be there at the end."""

    name = "set"
    write_fs = ("add",)

    def __init__(self, read_fraction: float = 0.1):
        self.read_fraction = read_fraction

    def setup(self, conn):
        conn.execute("CREATE TABLE elements (id BIGINT PRIMARY KEY)")

    def next_op(self, rng, client, seq):
        if rng.random() < self.read_fraction:
            return "read", None
        return "add", client * 1_000_000 + seq

    def execute(self, conn, f, value, rng):
        if f == "read":
            return read_only(conn, self._read)
        assert f == "add"
        return run_transaction(conn, lambda c: (c.execute(f"INSERT INTO elements VALUES ({int(value)})"), value)[1], rng)

    def _read(self, c):
        return sorted(int(r[0]) for r in c.fetchall("SELECT id FROM elements"))

    def final_read(self, conn):
        return read_only(conn, self._read)

    def check(self, ops, final):
        return checker.check_set(ops, final)


# --- append -------------------------------------------------------------------------------

# Keys a client uses at a time, and after how many of its operations its window of keys moves
# on by one: lists stay short (tens of values) however long the run, and every key is shared
# by all clients for a while.
APPEND_ACTIVE_KEYS = 6
APPEND_WINDOW_SHIFT_OPS = 12
APPEND_MICRO_OPS_MAX = 4


class Append(Workload):
    """Elle-style list append: keys hold comma-separated lists in a TEXT column."""

    name = "append"
    write_fs = ("txn",)

    def setup(self, conn):
        conn.execute("CREATE TABLE lists (k INT PRIMARY KEY, v TEXT NOT NULL)")

    def next_op(self, rng, client, seq):
        window = seq // APPEND_WINDOW_SHIFT_OPS
        micro = []
        for j in range(rng.randint(1, APPEND_MICRO_OPS_MAX)):
            key = window + rng.randrange(APPEND_ACTIVE_KEYS)
            if rng.random() < 0.5:
                micro.append([checker.APPEND, key, client * 10_000_000 + seq * APPEND_MICRO_OPS_MAX + j])
            else:
                micro.append([checker.READ, key, None])
        return "txn", micro

    def is_write(self, op):
        return op.f == "txn" and any(m[0] == checker.APPEND for m in op.value)

    def execute(self, conn, f, value, rng):
        assert f == "txn"

        def body(c: qclient.Connection):
            done = []
            for kind, key, element in value:
                current = _read_list(c, key)
                if kind == checker.READ:
                    done.append([checker.READ, key, current])
                    continue
                # The append reads the list first (a real read of this transaction: recorded),
                # then writes it back longer, so the adjudicator's write-write check applies.
                done.append([checker.READ, key, current])
                text = ",".join(str(v) for v in current + [element])
                if current:  # a row is only ever written with at least one value
                    c.execute("UPDATE lists SET v = $1 WHERE k = $2", [text, key])
                else:
                    c.execute("INSERT INTO lists VALUES ($1, $2)", [key, text])
                done.append([checker.APPEND, key, element])
            return done

        return run_transaction(conn, body, rng)

    def final_read(self, conn):
        def body(c):
            return sorted([int(k), _parse(v)] for k, v in c.fetchall("SELECT k, v FROM lists"))
        return read_only(conn, body)

    def check(self, ops, final):
        return checker.check_append(ops, None if final is None else {k: v for k, v in final})


def _parse(text: str) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []


def _read_list(c: qclient.Connection, key: int) -> list[int]:
    row = c.fetchone("SELECT v FROM lists WHERE k = $1", [key])
    return [] if row is None else _parse(row[0])


WORKLOADS: dict[str, Callable[[], Workload]] = {"bank": Bank, "set": SetWorkload, "append": Append}
