"""The Python client's endpoints and failover, against fake compute nodes (sync gRPC servers).

The fake nodes serve plaintext, so the client connects with insecure=True.

Story: a client with three compute nodes opens on the first that answers; when its node dies
between transactions the next statement runs on another node; a transaction open on the dead
node is lost, never continued elsewhere (statements fail 08006 until ROLLBACK); a node that
restarted (08003, nothing ran) gets the statement again on a new session; run_transaction
reruns a transaction lost before its COMMIT was sent.
"""
from __future__ import annotations

import concurrent.futures
import itertools

import grpc
import pytest

from quorumdb import client
from quorumdb.pb import compute_pb2, compute_pb2_grpc
from tests.util import free_base_port


class FakeCompute(compute_pb2_grpc.ComputeServicer):
    """Sessions that track BEGIN/COMMIT/ROLLBACK and remember every statement run."""

    def __init__(self, name: str):
        self.name = name
        self.sessions: dict[str, str] = {}  # session id -> transaction status
        self.statements: list[str] = []
        self.committed: list[list[str]] = []  # statements of each committed transaction
        self._open: dict[str, list[str]] = {}
        self._ids = itertools.count()

    def OpenSession(self, request, context):
        session_id = f"{self.name}-{next(self._ids)}"
        self.sessions[session_id] = "I"
        return compute_pb2.OpenSessionReply(session_id=session_id)

    def Execute(self, request, context):
        if request.session_id not in self.sessions:
            error = compute_pb2.SqlError(sqlstate="08003", message="session does not exist")
            return compute_pb2.ExecuteReply(results=[compute_pb2.StatementResult(has_error=True, error=error)],
                                            transaction_status="I")
        sql = request.sql.strip().upper()
        self.statements.append(sql)
        status = self.sessions[request.session_id]
        if sql == "BEGIN":
            status = "T"
            self._open[request.session_id] = []
        elif sql == "COMMIT":
            self.committed.append(self._open.pop(request.session_id, []))
            status = "I"
        elif sql == "ROLLBACK":
            self._open.pop(request.session_id, None)
            status = "I"
        elif status == "T":
            self._open[request.session_id].append(sql)
        else:
            self.committed.append([sql])
        self.sessions[request.session_id] = status
        tag = sql.split()[0]
        return compute_pb2.ExecuteReply(results=[compute_pb2.StatementResult(command_tag=tag)],
                                        transaction_status=status)

    def CloseSession(self, request, context):
        self.sessions.pop(request.session_id, None)
        return compute_pb2.CloseSessionReply()


class Nodes:
    def __init__(self):
        base = free_base_port()
        self.endpoints = [("127.0.0.1", base + i) for i in range(3)]
        self.fakes = [FakeCompute(f"c{i}") for i in range(3)]
        self.servers: list[grpc.Server | None] = [None] * 3
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

    def start(self, i: int) -> None:
        server = grpc.server(self._pool)
        compute_pb2_grpc.add_ComputeServicer_to_server(self.fakes[i], server)
        server.add_insecure_port(f"127.0.0.1:{self.endpoints[i][1]}")
        server.start()
        self.servers[i] = server

    def stop(self, i: int) -> None:
        server, self.servers[i] = self.servers[i], None
        if server is not None:
            server.stop(grace=None).wait(5)

    def close(self) -> None:
        for i in range(3):
            self.stop(i)
        self._pool.shutdown(wait=False)


@pytest.fixture
def nodes():
    n = Nodes()
    yield n
    n.close()


def test_parse_endpoints():
    assert client.parse_endpoints("db", 7100) == [("db", 7100)]
    assert client.parse_endpoints("x", 1, [("a", 7100), ("b", "7101")]) == [("a", 7100), ("b", 7101)]
    assert client.parse_endpoints("x", 1, "a:7100, b:7101") == [("a", 7100), ("b", 7101)]
    assert client.parse_endpoints("a:7100,b:7101", 1) == [("a", 7100), ("b", 7101)]
    assert client.parse_endpoints("x", 1, ["a:1"]) == [("a", 1)]
    with pytest.raises(ValueError):
        client.parse_endpoints("x", 1, "a7100")
    with pytest.raises(ValueError):
        client.parse_endpoints("x", 1, [])


def test_opens_on_the_first_endpoint_that_answers(nodes):
    nodes.start(1)
    nodes.start(2)
    conn = client.connect(endpoints=nodes.endpoints, timeout_s=2.0, insecure=True)
    try:
        assert conn.address.endswith(str(nodes.endpoints[1][1])) and conn.failovers == 1
        assert conn.execute("SELECT 1").command_tag == "SELECT"
    finally:
        conn.close()
    with pytest.raises(client.OperationalError) as raised:
        client.connect(endpoints=[nodes.endpoints[0]], timeout_s=1.0, insecure=True)
    assert raised.value.sqlstate == "08001"


def test_node_death_between_transactions_moves_to_the_next_node(nodes):
    for i in range(3):
        nodes.start(i)
    conn = client.connect(endpoints=nodes.endpoints, timeout_s=2.0, insecure=True)
    try:
        conn.execute("INSERT 1")
        nodes.stop(0)
        with pytest.raises(client.OperationalError) as raised:
            conn.execute("INSERT 2")  # sent to the dead node: fails, never silently resent
        assert raised.value.sqlstate == "08006"
        conn.execute("INSERT 3")
        assert nodes.fakes[1].committed == [["INSERT 3"]]
        assert "INSERT 2" not in nodes.fakes[1].statements
    finally:
        conn.close()


def test_transaction_open_on_a_dead_node_is_lost_not_continued(nodes):
    for i in range(3):
        nodes.start(i)
    conn = client.connect(endpoints=nodes.endpoints, timeout_s=2.0, insecure=True)
    try:
        conn.begin()
        conn.execute("INSERT A")
        nodes.stop(0)
        with pytest.raises(client.OperationalError):
            conn.execute("INSERT B")
        for sql in ("INSERT C", "COMMIT"):
            with pytest.raises(client.OperationalError) as raised:
                conn.execute(sql)
            assert raised.value.sqlstate == "08006" and "lost" in raised.value.message
        conn.rollback()
        assert conn.transaction_status == "I"
        conn.execute("INSERT D")
        survivor = nodes.fakes[1]
        assert survivor.committed == [["INSERT D"]], survivor.committed
        assert not any(s in survivor.statements for s in ("INSERT A", "INSERT B", "INSERT C", "COMMIT"))
    finally:
        conn.close()


def test_statement_to_a_restarted_node_is_resent_on_a_new_session(nodes):
    nodes.start(0)
    conn = client.connect(endpoints=nodes.endpoints[:1], timeout_s=2.0, insecure=True)
    try:
        nodes.fakes[0].sessions.clear()  # the node restarted: its sessions are gone
        assert conn.execute("INSERT X").command_tag == "INSERT"
        assert nodes.fakes[0].committed == [["INSERT X"]]
    finally:
        conn.close()


def test_run_transaction_reruns_a_transaction_lost_before_commit(nodes):
    for i in range(3):
        nodes.start(i)
    conn = client.connect(endpoints=nodes.endpoints, timeout_s=2.0, insecure=True)
    attempts = []

    def work(c):
        attempts.append(c.address)
        c.execute("INSERT T")
        if len(attempts) == 1:
            nodes.stop(0)  # the node dies mid-transaction
            c.execute("INSERT U")
        return len(attempts)

    try:
        assert conn.run_transaction(work, backoff_s=(0.001, 0.01)) == 2
        assert attempts[0] != attempts[1]
        assert nodes.fakes[1].committed == [["INSERT T"]]
    finally:
        conn.close()


async def test_async_connection_fails_over_between_transactions(nodes):
    for i in range(3):
        nodes.start(i)
    conn = await client.connect_async(endpoints=nodes.endpoints, timeout_s=2.0, insecure=True)
    try:
        await conn.begin()
        await conn.execute("INSERT A")
        nodes.stop(0)
        with pytest.raises(client.OperationalError):
            await conn.execute("COMMIT")
        with pytest.raises(client.OperationalError):
            await conn.execute("INSERT B")
        await conn.rollback()
        await conn.execute("INSERT C")
        assert nodes.fakes[1].committed == [["INSERT C"]]
    finally:
        await conn.close()
