"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp dir, on a free port.

Runs the Debian `postgresql` package's binaries as the `postgres` user when the tests
run as root (initdb refuses root). The cluster is created with no locale (C collation,
as QuorumDB compares text), UTF8, trust authentication, TimeZone UTC, fsync off.
`start()` raises PostgresMissing when no server binaries exist: the caller must fail
loudly (scripts/install-postgres installs them).
"""
from __future__ import annotations

import contextlib
import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from tests.differential.pgwire import PgConnection

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class PostgresMissing(RuntimeError):
    pass


def find_bindir() -> pathlib.Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in candidates:
        if (pathlib.Path(candidate) / "initdb").exists() and (pathlib.Path(candidate) / "pg_ctl").exists():
            return pathlib.Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        return pathlib.Path(initdb).resolve().parent
    raise PostgresMissing("PostgreSQL server binaries (initdb, pg_ctl) not found: run `bash scripts/install-postgres`")


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = _free_port()
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="qdb-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        self.started = False

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0])] + args[1:]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--"] + command
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=str(self.root))

    def start(self) -> "PostgresServer":
        if self._as_postgres:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresMissing("user postgres does not exist: run `bash scripts/install-postgres`") from None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        init = self._run(["initdb", "-D", str(self.data), "--no-locale", "-E", "UTF8", "-A", "trust", "-U",
                          "postgres"], START_TIMEOUT_S)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c TimeZone=UTC -c max_connections=20 "
                   "-c lc_messages=C")
        started = self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t",
                             str(int(START_TIMEOUT_S)), "start"], START_TIMEOUT_S + 10)
        if started.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{log}")
        self.started = True
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                PgConnection("127.0.0.1", self.port).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def connect(self, database: str = "postgres") -> PgConnection:
        return PgConnection("127.0.0.1", self.port, database=database)

    def stop(self) -> None:
        if self.started:
            self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", str(int(STOP_TIMEOUT_S)),
                       "stop"], STOP_TIMEOUT_S + 10)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)
