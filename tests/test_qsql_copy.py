"""qsql's \\copy through the gRPC Copy call: a real ComputeService with the engine Session over the
in-memory backend (tests/sql_memory_backend.py) on a real port, and qsql's Shell with the real client."""
from __future__ import annotations

import asyncio
import functools
import io
import threading

import pytest

from compute_node.service import ComputeService
from compute_node.sessions.session import Session
from compute_node.sql.engine import Engine
from quorumdb import client as qclient
from quorumdb import config as config_mod
from quorumdb import rpc
from tools import qsql
from quorumdb.pb import compute_pb2_grpc
from tests.sql_memory_backend import MemoryBackend
from tests.util import free_base_port


class ServiceThread:
    """The compute servicer with real sessions, served from its own event loop thread."""

    def __init__(self):
        self.port = free_base_port()
        node = config_mod.NodeConfig("compute-az1", "compute", "az1", "127.0.0.1", self.port)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start():
            self.service = ComputeService(node, MemoryBackend(), functools.partial(Session, engine=Engine()))
            self.server = rpc.new_server()
            compute_pb2_grpc.add_ComputeServicer_to_server(self.service, self.server)
            self.server.add_insecure_port(node.address)
            await self.server.start()
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        assert ready.is_set()

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=None), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def service():
    started = ServiceThread()
    yield started
    started.stop()


def shell_for(service) -> tuple[qsql.Shell, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    connection = qclient.connect("127.0.0.1", service.port, insecure=True)  # an in-process plaintext service
    return qsql.Shell(connection, out=out, err=err), out, err


@pytest.mark.parametrize("text, sql, path, stream", [
    ("t from 'data.csv' with (format csv, header)", "COPY t FROM STDIN with (format csv, header)", "data.csv", None),
    ("t (a, b) from /tmp/x.txt", "COPY t (a, b) FROM STDIN", "/tmp/x.txt", None),
    ("t from stdin", "COPY t FROM STDIN", None, "stdin"),
    ("(SELECT a FROM t WHERE b = 'to') to pstdout csv", "COPY (SELECT a FROM t WHERE b = 'to') TO STDOUT csv",
     None, "pstdout"),
    ("public.t to 'it''s.txt'", "COPY public.t TO STDOUT", "it's.txt", None),
])
def test_parse_copy_command_like_psql(text, sql, path, stream):
    command = qsql.parse_copy_command(text)
    assert (command.sql, command.path, command.stream) == (sql, path, stream)


@pytest.mark.parametrize("text, message", [
    ("t into 'x'", "expected FROM or TO"),
    ("t from", "must follow FROM"),
    ("t from program 'ls'", "program is not supported"),
    ("t from stdout", "cannot be used with FROM"),
    ("t to 'unterminated", "unterminated"),
])
def test_parse_copy_command_errors(text, message):
    with pytest.raises(ValueError, match=message):
        qsql.parse_copy_command(text)


def test_backslash_copy_round_trip_through_grpc(service, tmp_path):
    def work():
        shell, out, err = shell_for(service)
        shell.run_sql("CREATE TABLE src (id INT PRIMARY KEY, name TEXT, amount NUMERIC(10,2), seen DATE)")
        shell.run_sql("CREATE TABLE dst (id INT PRIMARY KEY, name TEXT, amount NUMERIC(10,2), seen DATE)")
        # \copy from stdin inside a script reads the script's next lines, up to \.
        script = ("\\copy src from stdin\n"
                  + "".join(f"{i}\tname {i}\\twith tab\t{i}.25\t2024-01-{i % 28 + 1:02d}\n" for i in range(1, 3001))
                  + "3001\t\\N\t\\N\t\\N\n"
                  + "\\.\n"
                  + "SELECT count(*) FROM src;\n")
        assert shell.run_lines(qsql.iter_lines(script), "load.sql") == qsql.EXIT_OK, err.getvalue()
        assert "COPY 3001\n" in out.getvalue() and " 3001\n" in out.getvalue()
        target = tmp_path / "out.csv"
        assert shell.run_meta(f"\\copy src to '{target}' with (format csv, header)") is qsql.MetaOutcome.CONTINUE
        assert out.getvalue().endswith("COPY 3001\n")
        lines = target.read_text().splitlines()
        assert lines[0] == "id,name,amount,seen" and lines[1] == "1,name 1\twith tab,1.25,2024-01-02"
        assert lines[-1] == "3001,,,"
        assert shell.run_meta(f"\\copy dst from '{target}' csv header") is qsql.MetaOutcome.CONTINUE, err.getvalue()
        for query in ("SELECT * FROM src EXCEPT SELECT * FROM dst", "SELECT * FROM dst EXCEPT SELECT * FROM src"):
            out.truncate(0)
            out.seek(0)
            assert shell.run_sql(f"SELECT count(*) FROM ({query}) AS d")
            assert " 0\n" in out.getvalue()
        # A bad line: psql's error format with the CONTEXT line, nothing loaded, the session goes on.
        bad = tmp_path / "bad.csv"
        bad.write_text("1,a,1,2024-01-01\n2,b,x,2024-01-01\n")
        shell.run_sql("CREATE TABLE other (id INT PRIMARY KEY, name TEXT, amount NUMERIC(10,2), seen DATE)")
        assert shell.run_meta(f"\\copy other from '{bad}' (format csv)") is qsql.MetaOutcome.FAILED
        assert err.getvalue().endswith('ERROR:  invalid input syntax for type numeric: "x"\n'
                                       'CONTEXT:  COPY other, line 2, column amount: "x"\n')
        out.truncate(0)
        out.seek(0)
        assert shell.run_sql("SELECT count(*) FROM other") and " 0\n" in out.getvalue()
        assert shell.run_meta(f"\\copy other from '{tmp_path / 'missing.csv'}'") is qsql.MetaOutcome.FAILED
        assert "No such file or directory" in err.getvalue()
        shell.connection.close()

    work()


def test_async_client_copy(service):
    async def main():
        connection = await qclient.connect_async("127.0.0.1", service.port, insecure=True)
        async with connection:
            await connection.execute("CREATE TABLE a (id INT PRIMARY KEY, v TEXT)")
            result, _ = await connection.copy("COPY a FROM STDIN (FORMAT csv)", b'1,"x,y"\n2,\n')
            assert (result.error, result.command_tag) == (None, "COPY 2")
            result, data = await connection.copy("COPY a TO STDOUT")
            assert result.command_tag == "COPY 2" and data == b"1\tx,y\n2\t\\N\n"
            result, _ = await connection.copy("COPY a FROM STDIN", b"3\tz\nbad\tw\n")
            assert result.error.sqlstate == "22P02" and result.error.context == 'COPY a, line 2, column id: "bad"'
            assert (await connection.execute("SELECT count(*) FROM a")).rows == [(2,)]

    asyncio.run(main())
