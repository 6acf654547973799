"""The bank and list-append workloads, driven through the async client inside a simulation.

Operations, their SQL and their checkers are the Jepsen-style harness's (tools/jepsen/
workloads.py and checker.py): the same `next_op` generators, the same transactions, the same
ok / fail / info rules, the same verdicts. Only the driving differs: the harness runs blocking
clients in threads against real processes; here each client is a task of the simulation using
`quorumdb.client.AsyncConnection`, whose channel the simulation supplies.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable

from quorumdb import client as qclient
from quorumdb import errors
from tools.jepsen import checker
from tools.jepsen import limits as jlimits
from tools.jepsen import workloads as jworkloads
from tools.jepsen.workloads import Definite, Indefinite, Refused

Body = Callable[[qclient.AsyncConnection], Awaitable[Any]]


def _text(error: qclient.DatabaseError) -> str:
    return f"{error.sqlstate} {error.message}"[:300]


async def _rollback_quietly(conn: qclient.AsyncConnection) -> None:
    if conn.transaction_status == "I":
        return
    try:
        await conn.rollback()
    except qclient.DatabaseError:
        pass


async def run_transaction(conn: qclient.AsyncConnection, body: Body, rng: random.Random) -> Any:
    """jepsen.workloads.run_transaction, awaited: BEGIN; body; COMMIT with the client's own
    40001 retries; raises Definite (did not happen) or Indefinite (may have happened)."""
    last = ""
    for attempt in range(jlimits.OP_ATTEMPTS_MAX):
        committing = False
        try:
            await conn.begin()
            value = await body(conn)
            committing = True
            await conn.commit()
            return value
        except qclient.OperationalError as error:
            if committing:
                raise Indefinite(_text(error), broken=True) from None
            raise Definite(_text(error), broken=True) from None
        except qclient.DatabaseError as error:
            await _rollback_quietly(conn)
            if error.sqlstate == errors.SERIALIZATION_FAILURE:
                last = _text(error)
                delay = min(jlimits.OP_BACKOFF_MAX_S, jlimits.OP_BACKOFF_FIRST_S * 2 ** attempt)
                await asyncio.sleep(rng.uniform(0, delay))
                continue
            if not committing:
                raise Definite(_text(error), broken=error.sqlstate == errors.CANNOT_CONNECT_NOW) from None
            if error.sqlstate == errors.CANNOT_CONNECT_NOW:
                raise Definite(_text(error), broken=True) from None
            raise Indefinite(_text(error)) from None
        except Refused as refusal:
            await _rollback_quietly(conn)
            raise Definite(str(refusal)) from None
    raise Definite(f"gave up after {jlimits.OP_ATTEMPTS_MAX} attempts: {last}")


async def read_only(conn: qclient.AsyncConnection, body: Body) -> Any:
    try:
        await conn.begin()
        value = await body(conn)
        await conn.commit()
        return value
    except qclient.OperationalError as error:
        raise Definite(_text(error), broken=True) from None
    except qclient.DatabaseError as error:
        await _rollback_quietly(conn)
        raise Definite(_text(error), broken=error.sqlstate == errors.CANNOT_CONNECT_NOW) from None


class Bank:
    name = "bank"

    def __init__(self) -> None:
        self.spec = jworkloads.Bank()

    setup_sql = property(lambda self: [
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)",
        "CREATE TABLE transfers (id TEXT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount BIGINT NOT NULL)",
        "INSERT INTO accounts VALUES " + ", ".join(f"({a}, {b})" for a, b in sorted(self.spec.initial.items())),
    ])

    def next_op(self, rng: random.Random, client: int, seq: int):
        return self.spec.next_op(rng, client, seq)

    async def _balances(self, c: qclient.AsyncConnection) -> list[list[int]]:
        half = self.spec.accounts // 2  # two statements, one snapshot
        rows = await c.fetchall(f"SELECT id, balance FROM accounts WHERE id < {half}")
        rows += await c.fetchall(f"SELECT id, balance FROM accounts WHERE id >= {half}")
        return sorted([int(a), int(b)] for a, b in rows)

    async def execute(self, conn, f: str, value, rng):
        if f == "read":
            return {"balances": await read_only(conn, self._balances)}
        src, dst, amount = value["from"], value["to"], value["amount"]

        async def body(c):
            balances = dict(await c.fetchall(f"SELECT id, balance FROM accounts WHERE id IN ({src}, {dst})"))
            if balances.get(src, 0) < amount:
                raise Refused(f"insufficient funds: account {src} has {balances.get(src)}")
            await c.execute(f"UPDATE accounts SET balance = {balances[src] - amount} WHERE id = {src}")
            await c.execute(f"UPDATE accounts SET balance = {balances[dst] + amount} WHERE id = {dst}")
            await c.execute("INSERT INTO transfers VALUES ($1, $2, $3, $4)", [value["id"], src, dst, amount])
            return value

        return await run_transaction(conn, body, rng)

    async def final_read(self, conn):
        async def body(c):
            return {"balances": await self._balances(c),
                    "transfer_ids": sorted(r[0] for r in await c.fetchall("SELECT id FROM transfers"))}
        return await read_only(conn, body)

    def is_write(self, op) -> bool:
        return self.spec.is_write(op)

    def check(self, ops, final) -> checker.Verdict:
        return self.spec.check(ops, final)


class Append:
    name = "append"
    setup_sql = ["CREATE TABLE lists (k INT PRIMARY KEY, v TEXT NOT NULL)"]

    def __init__(self) -> None:
        self.spec = jworkloads.Append()

    def next_op(self, rng, client, seq):
        return self.spec.next_op(rng, client, seq)

    @staticmethod
    async def _read_list(c, key: int) -> list[int]:
        row = await c.fetchone("SELECT v FROM lists WHERE k = $1", [key])
        return [] if row is None else jworkloads._parse(row[0])

    async def execute(self, conn, f, value, rng):
        async def body(c):
            done = []
            for kind, key, element in value:
                current = await self._read_list(c, key)
                done.append([checker.READ, key, current])
                if kind == checker.READ:
                    continue
                text = ",".join(str(v) for v in current + [element])
                if current:
                    await c.execute("UPDATE lists SET v = $1 WHERE k = $2", [text, key])
                else:
                    await c.execute("INSERT INTO lists VALUES ($1, $2)", [key, text])
                done.append([checker.APPEND, key, element])
            return done

        return await run_transaction(conn, body, rng)

    async def final_read(self, conn):
        async def body(c):
            return sorted([int(k), jworkloads._parse(v)] for k, v in await c.fetchall("SELECT k, v FROM lists"))
        return await read_only(conn, body)

    def is_write(self, op) -> bool:
        return self.spec.is_write(op)

    def check(self, ops, final) -> checker.Verdict:
        return self.spec.check(ops, final)


WORKLOADS = {"bank": Bank, "append": Append}
