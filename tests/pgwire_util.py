"""An in-process PostgreSQL endpoint over the in-memory backend, for driver tests without a cluster."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from compute_node.pgwire.server import PgConfig, PgServer
from compute_node.service import CommitTracker
from compute_node.sessions.session import Session
from quorumdb import tokens
from tests.sql_memory_backend import MemoryBackend

SECRET = bytes(range(32))


class ServerThread:
    """PgServer on 127.0.0.1:<free port> in its own event loop thread; stop() ends everything."""

    def __init__(self, **config):
        config.setdefault("port", 0)
        config.setdefault("secret", SECRET)
        self.config = PgConfig(**config)
        self.backend = MemoryBackend()
        self.loop = asyncio.new_event_loop()
        self.server: PgServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(timeout=10), "server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = PgServer(self.config, self.backend, Session, CommitTracker)
        self.loop.run_until_complete(self.server.start())
        self._ready.set()
        self.loop.run_forever()

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, function, timeout_s: float = 10.0):
        """Runs function() on the server's loop and returns its result."""
        async def wrapper():
            return function()
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout_s)

    def token(self, user: str = "admin", lifetime_s: int = 900) -> str:
        return tokens.issue(SECRET, user, lifetime_s, time.time())[0]

    def dsn(self, user: str = "admin", **extra) -> str:
        parts = {"host": "127.0.0.1", "port": self.port, "user": user, "dbname": "postgres", "connect_timeout": 10}
        if not self.config.trust:
            parts["password"] = self.token(user)
        parts.update(extra)
        return " ".join(f"{key}={value}" for key, value in parts.items())

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


@contextlib.contextmanager
def serving(**config):
    """A ServerThread(**config), stopped on the way out whatever the test did."""
    started = ServerThread(**config)
    try:
        yield started
    finally:
        started.stop()
