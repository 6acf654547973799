"""The Compute servicer and the Python client, end to end over gRPC with a stub SQL session.

The stub session speaks a tiny command language instead of SQL, so these tests
check the transport (session table, locks, deadlines, protobuf conversion,
client errors and retries), not the SQL layer.
"""
from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from compute_node.service import ComputeService, value_to_pb
from quorumdb import sqllex, client as qclient
from quorumdb import config as config_mod
from quorumdb import errors, rpc
from quorumdb.pb import common_pb2, compute_pb2, compute_pb2_grpc
from tests.util import free_base_port


@dataclasses.dataclass
class StubResult:
    columns: list
    rows: list
    command_tag: str
    error: errors.SqlError | None = None


class StubBackend:
    def __init__(self):
        self.data: dict[bytes, bytes] = {}
        self.conflicts_left = 0
        self.commit_mode = "ok"  # ok | hang | unknown
        self.commits = 0
        self.leader = "adjudicator-az1"
        self.ts = 1000

    def start_ts(self) -> int:
        self.ts += 10
        return self.ts

    def now_ts(self) -> int:
        self.ts += 10
        return self.ts

    async def get_many(self, keys, ts):
        return {key: self.data.get(key) for key in keys}

    async def scan(self, start, end, ts, limit):
        return [], False

    async def commit(self, start_ts, writes, lock_keys, txn_id):
        if self.commit_mode == "hang":
            await asyncio.sleep(60)
        if self.commit_mode == "unknown":
            raise errors.completion_unknown("test")
        if self.conflicts_left > 0:
            self.conflicts_left -= 1
            raise errors.conflict("k")
        self.commits += 1
        for key, value in writes:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        return start_ts + 1


class StubSession:
    """Commands: BEGIN, COMMIT, ROLLBACK, PUT k v, GET k, SLEEP s, FAIL sqlstate, VALUES, ECHO text."""

    active: list[str] = []  # session ids currently executing (to detect interleaving)
    overlaps = 0

    def __init__(self, backend, session_id):
        self.backend = backend
        self.session_id = session_id
        self.transaction_status = "I"
        self.writes: dict[bytes, bytes | None] = {}
        self.start_ts = 0
        self.closed = False

    async def execute(self, sql: str, params=None):
        if params is not None:  # the literals the server made of the request's values, pasted for ECHO
            sql = sqllex.substitute(sql, params)
        if self.session_id in StubSession.active:
            StubSession.overlaps += 1
        StubSession.active.append(self.session_id)
        try:
            results = []
            for statement in [s.strip() for s in sql.split(";") if s.strip()]:
                try:
                    results.append(await self._one(statement))
                except errors.SqlError as error:
                    if self.transaction_status == "T":
                        self.transaction_status = "E"
                    results.append(StubResult([], [], "", error))
                    break
            return results
        finally:
            StubSession.active.remove(self.session_id)

    async def _one(self, statement: str) -> StubResult:
        words = statement.split(" ", 2)
        match words[0].upper():
            case "BEGIN":
                self.transaction_status, self.writes = "T", {}
                self.start_ts = self.backend.start_ts()
                return StubResult([], [], "BEGIN")
            case "COMMIT":
                if self.transaction_status == "T" and self.writes:
                    writes, self.writes = list(self.writes.items()), {}
                    self.transaction_status = "I"
                    await self.backend.commit(self.start_ts, writes, [], self.session_id)
                self.transaction_status = "I"
                return StubResult([], [], "COMMIT")
            case "ROLLBACK":
                self.transaction_status, self.writes = "I", {}
                return StubResult([], [], "ROLLBACK")
            case "PUT":
                self.writes[words[1].encode()] = words[2].encode()
                return StubResult([], [], "INSERT 0 1")
            case "GET":
                values = await self.backend.get_many([words[1].encode()], self.backend.start_ts())
                value = values[words[1].encode()]
                return StubResult([("v", "text")], [(value.decode() if value else None,)], "SELECT 1")
            case "SLEEP":
                await asyncio.sleep(float(words[1]))
                return StubResult([], [], "SLEEP")
            case "FAIL":
                raise errors.SqlError(words[1], "failed on purpose", detail="d", hint="h")
            case "VALUES":
                row = (None, True, -5, 2**70, 1.5, "it's", b"\x00\xff")
                columns = [(f"c{i}", "text") for i in range(len(row))]
                return StubResult(columns, [row, row], "SELECT 2")
            case "ECHO":
                text = statement[5:]
                return StubResult([("echo", "text")], [(text,)], "SELECT 1")
        raise errors.SqlError(errors.SYNTAX_ERROR, f"unknown command {words[0]!r}")

    async def close(self):
        self.closed = True


class ComputeHarness:
    """A compute servicer with the stub session on a real gRPC port, in this process."""

    def __init__(self, **service_kw):
        port = free_base_port()
        self.node = config_mod.NodeConfig("compute-az1", "compute", "az1", "127.0.0.1", port)
        self.backend = StubBackend()
        self.now_s = 0.0
        self.service = ComputeService(
            self.node, self.backend, StubSession, health=lambda: "ok", monotonic=lambda: self.now_s, **service_kw
        )
        self.server = rpc.new_server()
        compute_pb2_grpc.add_ComputeServicer_to_server(self.service, self.server)
        self.server.add_insecure_port(self.node.address)

    async def __aenter__(self):
        await self.server.start()
        return self

    async def __aexit__(self, *exc):
        await self.server.stop(grace=None)


def run_sync(fn, *args):
    """Run blocking client code in a thread so the in-process server keeps serving."""
    return asyncio.to_thread(fn, *args)


async def test_value_conversion_round_trip():
    async with ComputeHarness() as harness:
        connection = await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True)
        async with connection:
            result = await connection.execute("VALUES")
            assert result.rows[0] == (None, True, -5, str(2**70), 1.5, "it's", b"\x00\xff")
            assert result.columns[0] == ("c0", "text")
            assert result.rowcount == 2
            assert connection.transaction_status == "I"


def test_value_to_pb_kinds():
    assert value_to_pb(None).WhichOneof("kind") == "is_null"
    assert value_to_pb(False).WhichOneof("kind") == "bool_value"
    assert value_to_pb(7).WhichOneof("kind") == "int_value"
    assert value_to_pb(2**63).WhichOneof("kind") == "text_value"
    assert value_to_pb(0.5).WhichOneof("kind") == "double_value"


async def test_sync_client_execute_script_and_errors():
    async with ComputeHarness() as harness:

        def work():
            with qclient.connect("127.0.0.1", harness.node.port, insecure=True) as connection:
                results = connection.execute_script("ECHO a; FAIL 23505; ECHO never")
                assert [r.command_tag for r in results] == ["SELECT 1", ""]
                assert results[1].error.sqlstate == "23505"
                assert results[1].error.detail == "d" and results[1].error.hint == "h"
                with pytest.raises(qclient.DatabaseError) as raised:
                    connection.execute("ECHO a; FAIL 42P01")
                assert raised.value.sqlstate == "42P01"
                assert not isinstance(raised.value, qclient.OperationalError)
                assert connection.execute("ECHO $1", ["x'y"]).rows == [("'x''y'",)]
                connection.begin()
                assert connection.transaction_status == "T"
                with pytest.raises(qclient.DatabaseError):
                    connection.execute("FAIL 22012")
                assert connection.transaction_status == "E"
                connection.rollback()
                assert connection.transaction_status == "I"

        await run_sync(work)


async def test_unknown_session_is_08003():
    async with ComputeHarness() as harness:
        channel = grpc.aio.insecure_channel(harness.node.address)
        stub = compute_pb2_grpc.ComputeStub(channel)
        reply = await stub.Execute(compute_pb2.ExecuteRequest(session_id="nope", sql="ECHO x"), timeout=5)
        await channel.close()
        assert reply.results[0].has_error
        assert reply.results[0].error.sqlstate == "08003"
        assert "does not exist" in reply.results[0].error.message


async def test_statement_timeout_is_57014_and_session_stays_usable():
    async with ComputeHarness(statement_timeout_s=0.3) as harness:
        async with await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True) as connection:
            with pytest.raises(qclient.DatabaseError) as raised:
                await connection.execute("SLEEP 5")
            assert raised.value.sqlstate == "57014"
            assert (await connection.execute("ECHO still here")).rows == [("still here",)]


async def test_timeout_during_commit_is_40003_not_57014():
    async with ComputeHarness(statement_timeout_s=0.3) as harness:
        harness.backend.commit_mode = "hang"
        async with await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True) as connection:
            with pytest.raises(qclient.DatabaseError) as raised:
                await connection.execute("BEGIN; PUT a 1; COMMIT")
            assert raised.value.sqlstate == "40003"


async def test_requests_on_one_session_are_serialized():
    StubSession.overlaps = 0
    async with ComputeHarness() as harness:
        async with await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True) as connection:
            await asyncio.gather(*(connection.execute("SLEEP 0.05") for _ in range(5)))
    assert StubSession.overlaps == 0


async def test_session_limit_and_idle_reaping():
    async with ComputeHarness(sessions_max=2, session_idle_s=10.0) as harness:
        first = await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True)
        second = await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True)
        with pytest.raises(qclient.OperationalError) as raised:
            await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True)
        assert raised.value.sqlstate == "53300"
        harness.now_s = 5.0
        await second.execute("ECHO keep me")
        harness.now_s = 12.0  # first idle 12 s, second 7 s
        third = await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True)  # reaps the idle one
        assert harness.service.session_count == 2
        # The reaped session answers 08003 (nothing ran); the client opens a new session to
        # resend it, which the full node refuses.
        with pytest.raises(qclient.DatabaseError) as raised:
            await first.execute("ECHO x")
        assert raised.value.sqlstate == "53300"
        assert (await second.execute("ECHO alive")).rows == [("alive",)]
        await third.close()
        assert (await first.execute("ECHO back")).rows == [("back",)]  # a new session, statement resent
        assert harness.service.session_count == 2
        for connection in (first, second):
            await connection.close()
        assert harness.service.session_count == 0


async def test_status_reports_compute_role_leader_and_health():
    async with ComputeHarness() as harness:
        channel = grpc.aio.insecure_channel(harness.node.address)
        status = await compute_pb2_grpc.ComputeStub(channel).Status(common_pb2.StatusRequest(), timeout=5)
        await channel.close()
        assert (status.service, status.role, status.leader, status.health) == (
            "compute", "query", "adjudicator-az1", "ok"
        )


async def test_run_transaction_retries_conflicts_then_commits():
    async with ComputeHarness() as harness:
        harness.backend.conflicts_left = 3
        calls = []

        def body(connection):
            calls.append(connection.transaction_status)
            connection.execute("PUT k v")
            return "done"

        def work():
            with qclient.connect("127.0.0.1", harness.node.port, insecure=True) as connection:
                assert connection.run_transaction(body, backoff_s=(0.001, 0.01)) == "done"
                assert connection.transaction_status == "I"

        await run_sync(work)
        assert calls == ["T"] * 4
        assert harness.backend.commits == 1
        assert harness.backend.data == {b"k": b"v"}


async def test_run_transaction_gives_up_after_attempts_max():
    async with ComputeHarness() as harness:
        harness.backend.conflicts_left = 100

        def work():
            with qclient.connect("127.0.0.1", harness.node.port, insecure=True) as connection:
                with pytest.raises(qclient.DatabaseError) as raised:
                    connection.run_transaction(lambda c: c.execute("PUT k v"), attempts_max=3, backoff_s=(0.001, 0.01))
                return raised.value.sqlstate

        assert await run_sync(work) == "40001"
        assert harness.backend.conflicts_left == 97


async def test_run_transaction_does_not_retry_unknown_outcome():
    async with ComputeHarness() as harness:
        harness.backend.commit_mode = "unknown"
        async with await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True) as connection:
            attempts = 0

            async def body(c):
                nonlocal attempts
                attempts += 1
                await c.execute("PUT k v")

            with pytest.raises(qclient.DatabaseError) as raised:
                await connection.run_transaction(body, backoff_s=(0.001, 0.01))
            assert raised.value.sqlstate == "40003"
            assert attempts == 1


async def test_run_transaction_rolls_back_on_application_error():
    async with ComputeHarness() as harness:
        async with await qclient.connect_async("127.0.0.1", harness.node.port, insecure=True) as connection:

            async def body(c):
                await c.execute("PUT k v")
                raise ValueError("application bug")

            with pytest.raises(ValueError):
                await connection.run_transaction(body)
            assert connection.transaction_status == "I"
            assert harness.backend.commits == 0


def test_connect_to_nothing_is_operational_error():
    port = free_base_port()
    with pytest.raises(qclient.OperationalError) as raised:
        qclient.connect("127.0.0.1", port, timeout_s=2.0, insecure=True)
    assert raised.value.sqlstate == "08001"


async def test_execute_on_a_dead_node_is_operational_error():
    harness = ComputeHarness()
    await harness.server.start()
    connection = await qclient.connect_async("127.0.0.1", harness.node.port, timeout_s=2.0, insecure=True)
    await harness.server.stop(grace=None)
    try:
        with pytest.raises(qclient.OperationalError) as raised:
            await connection.execute("ECHO x")
        assert raised.value.sqlstate == "08006"
    finally:
        await connection.close()


def test_reg_values_reach_grpc_clients_as_names():
    """x::regclass is an oid that prints as the relation's name: over gRPC too (qsql shows it)."""
    from compute_node.service import value_to_pb
    from compute_node.sql.catalog_functions import RegOid
    assert value_to_pb(RegOid(16386, "accounts")).text_value == "accounts"
    assert value_to_pb(16386).int_value == 16386
