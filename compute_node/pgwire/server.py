"""The PostgreSQL endpoint of a compute node: asyncio streams around the pure protocol code.

Theory of operation
-------------------
One asyncio task per connection. It reads bytes into `protocol.Frontend`, which hands back
decoded messages (a malformed or oversized one raises ProtocolViolation: the connection gets
FATAL 08P01 and is closed; no other connection notices). The phases:

  startup   SSLRequest -> 'S' and a TLS handshake with the node's certificate (tls.py; reloaded
            when `quorumdb certs rotate` replaced it), or 'N' on an --insecure cluster;
            GSSENCRequest -> 'N'; CancelRequest -> cancel the matching running statement, close;
            StartupMessage -> refused with FATAL 28000 over plaintext unless the cluster is
            --insecure -> admission (limits: 53300 too many connections, 53400 too many new
            connections per second) -> authentication.
  auth      `trust`: none. Otherwise SCRAM-SHA-256 with the token as the password
            (quorumdb/tokens.py, scram.py), and over TLS SCRAM-SHA-256-PLUS (channel binding to
            the certificate) offered first; a wrong, forged or expired token -> FATAL 28P01.
            Startup and authentication must finish within PG_STARTUP_TIMEOUT_S.
  ready     ParameterStatus, BackendKeyData, ReadyForQuery; then simple and extended queries.
            Statements run on a `bridge.PgSession` over the node's engine Session, each as a
            task the CancelRequest path can cancel (57014; 40003 if a commit was in flight),
            bounded by the statement timeout (the node's, or the client's statement_timeout if
            smaller; a statement that has committed rows ahead into a private keyspace -- a bulk
            load, ADD PRIMARY KEY's rewrite -- runs on past the node's to its transaction's age
            limit unless the client set one: docs/SQL.md). After an error in the extended
            protocol every message up to Sync is discarded. As in PostgreSQL, the statements executed between
            two Syncs outside an explicit BEGIN form one implicit transaction: begun at the
            first Execute, committed at Sync (a commit error is reported before ReadyForQuery)
            and rolled back whole when any message before the Sync failed; a BEGIN inside it
            turns it into an ordinary transaction block. After `lifetime_s` the connection is closed with
            FATAL 57P01 (PostgreSQL's admin_shutdown: the code poolers and drivers treat as
            "reconnect"), checked whenever the connection waits for the client.

COPY (only statement of a Query; COPY TO also through Parse/Bind/Execute): COPY TO STDOUT sends
CopyOutResponse, the rows as CopyData (whole records, about COPY_OUT_CHUNK_BYTES a message, drained
after each) and CopyDone. COPY FROM
STDIN checks the table and columns, sends CopyInResponse and reads CopyData into records
(quorumdb/copyformat.py, bounded by COPY_BYTES_MAX / COPY_ROWS_MAX) until CopyDone, then loads
them (compute_node/sessions/copy.py) -- or, into a table the open block truncated or created, loads them
a chunk at a time as they arrive (COPY_STREAM_CHUNK_ROWS; no total bound); after a bad record it
reads and ignores the rest up to CopyDone or CopyFail, as PostgreSQL does, then answers ErrorResponse (CONTEXT `COPY t, line N`) and
ReadyForQuery. CopyData/CopyDone/CopyFail outside a COPY are ignored, as PostgreSQL ignores them.

Writes are drained every PG_ROWS_PER_DRAIN rows, so a slow reader bounds memory.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import itertools
import logging
import secrets
import ssl
import struct
import time
import uuid
from typing import Any, Callable

from compute_node.pgwire import admission as admission_mod
from compute_node.pgwire import protocol, scram
from compute_node.pgwire import tls as tls_mod
from compute_node.sql import pgtypes
from compute_node.pgwire.bridge import TRANSACTION_WORDS, Outcome, PgSession
from compute_node.pgwire.extended import ExtendedState, Portal, PreparedStatement
from compute_node.pgwire.protocol import ProtocolViolation
from compute_node.sessions import copy as copy_mod
from quorumdb import certs, copyformat, errors, limits, sqllex, tokens
from quorumdb.errors import SqlError

log = logging.getLogger("compute_node.pgwire")


@dataclasses.dataclass(frozen=True)
class PgConfig:
    host: str = "127.0.0.1"
    port: int = 5433
    trust: bool = False
    secret: bytes | None = None               # the cluster's token secret (None only with trust)
    node_name: str = "compute"
    lifetime_s: float = limits.PG_CONNECTION_LIFETIME_S
    connections_max: int = limits.PG_CONNECTIONS_MAX
    connections_per_s: float = limits.PG_CONNECTIONS_PER_S
    connections_burst: int = limits.PG_CONNECTIONS_BURST
    statement_timeout_s: float = limits.STATEMENT_TIMEOUT_S
    startup_timeout_s: float = limits.PG_STARTUP_TIMEOUT_S
    message_bytes_max: int = limits.PG_MESSAGE_BYTES_MAX
    scram_iterations: int = limits.PG_SCRAM_ITERATIONS
    # The node's certificate (the cluster is not --insecure): TLS is served and required. None:
    # plaintext only, SSLRequest answered 'N'.
    tls: tls_mod.TlsSource | None = None
    ca_path: str = ""                          # the cluster CA, named in the hint of a refusal

    def __post_init__(self):
        assert self.trust or self.secret is not None, "token authentication needs the cluster secret"


class ConnectionClosed(Exception):
    pass


class Fatal(Exception):
    """End the connection with FATAL sqlstate/message."""

    def __init__(self, sqlstate: str, message: str, detail: str = "", hint: str = ""):
        super().__init__(message)
        self.sqlstate, self.message, self.detail, self.hint = sqlstate, message, detail, hint


class PgServer:
    def __init__(self, config: PgConfig, backend: Any, session_factory: Callable[[Any, str], Any],
                 commit_tracker: Callable[[Any], Any] | None = None,
                 wall_clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self.backend = backend
        self.session_factory = session_factory
        self.commit_tracker = commit_tracker or (lambda backend: backend)
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.admission = admission_mod.Admission(config.connections_max, config.connections_per_s,
                                                 config.connections_burst, monotonic())
        self.connections: dict[int, "PgConnection"] = {}
        self.verifiers = scram.VerifierCache(limits.PG_SCRAM_CACHE_ENTRIES)
        self._auth_slots = asyncio.Semaphore(limits.PG_AUTH_CONCURRENCY)
        self._process_ids = itertools.count(secrets.randbelow(1 << 20) + 1000)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = config.port

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.config.host, self.config.port,
                                                  limit=limits.PG_READ_CHUNK_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.tls is None:
            log.warning("PostgreSQL endpoint on %s:%d: INSECURE, plaintext only (the cluster runs --insecure); "
                        "never use this outside development", self.config.host, self.port)
        elif self.config.tls.current() is None:
            log.error("PostgreSQL endpoint on %s:%d has no usable certificate (%s): every connection is "
                      "refused until it exists", self.config.host, self.port, self.config.tls.error)
        if self.config.trust:
            log.warning("*** PostgreSQL endpoint on %s:%d runs in TRUST mode: NO AUTHENTICATION, any user "
                        "connects without a token. For development only. ***", self.config.host, self.port)
        else:
            log.info("PostgreSQL endpoint on %s:%d (%sSCRAM-SHA-256 with `quorumdb token`)", self.config.host,
                     self.port, "TLS required, " if self.config.tls is not None else "")
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await PgConnection(self, reader, writer).run()
        finally:
            self._tasks.discard(task)

    async def check_proof(self, exchange: scram.ScramServer, client_final: bytes, user: str,
                          expiries: list[int]) -> tuple[int | None, bytes]:
        """SCRAM proof against the tokens of every candidate expiry (keys cached; stretching in a thread)."""
        secret, salt, iterations = self.config.secret, tokens.scram_salt(self.config.secret, user), self.config.scram_iterations

        def derive(expiry_s: int) -> tuple[bytes, bytes]:
            return scram.keys_for(tokens.token_for(secret, user, expiry_s), salt, iterations)

        def work() -> tuple[int | None, bytes]:
            pairs = self.verifiers.keys(user, expiries, derive)
            return exchange.server_final(client_final, pairs)

        async with self._auth_slots:
            self.verifiers.forget_before(int(self.wall_clock()) - tokens.RECENTLY_EXPIRED_S)
            return await asyncio.to_thread(work)

    def next_process_id(self) -> int:
        return next(self._process_ids) & 0x7FFFFFFF

    def cancel(self, process_id: int, secret_key: int) -> bool:
        connection = self.connections.get(process_id)
        if connection is None:
            return False
        if not hmac.compare_digest(struct.pack("!i", connection.secret_key), struct.pack("!i", secret_key)):
            return False
        return connection.cancel_running()


class PgConnection:
    def __init__(self, server: PgServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.config = server.config
        self.reader = reader
        self.writer = writer
        self.frontend = protocol.Frontend(self.config.message_bytes_max, limits.PG_STARTUP_BYTES_MAX)
        self.process_id = server.next_process_id()
        self.secret_key = secrets.randbits(31)
        self.extended = ExtendedState()
        self.pg: PgSession | None = None
        self.tracker: Any = None
        self.running: asyncio.Task | None = None
        self.implicit = False  # an implicit transaction (extended protocol, up to Sync) is open
        self.cancel_requested = False
        self.copy_in_progress = False  # reading a COPY FROM STDIN's data from the client
        self.copy_cancelled = False
        self.admitted = False
        self.deadline_s = 0.0
        self.peer = writer.get_extra_info("peername")
        self.tls: tls_mod.Loaded | None = None  # the context this connection was handshaken with
        self.mechanism = "trust"

    # --- top level -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.config.startup_timeout_s):
                startup = await self._startup()
            if startup is None:
                return
            self.deadline_s = self.server.monotonic() + self.config.lifetime_s
            self.server.connections[self.process_id] = self
            await self._serve()
        except Fatal as fatal:
            await self._fatal(fatal.sqlstate, fatal.message, fatal.detail, fatal.hint)
        except ProtocolViolation as violation:
            log.info("closing connection from %s: protocol violation: %s", self.peer, violation.message)
            await self._fatal(violation.sqlstate, violation.message)
        except TimeoutError:
            await self._fatal(errors.PROTOCOL_VIOLATION, "canceling authentication due to timeout")
        except (ConnectionClosed, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._fatal(errors.ADMIN_SHUTDOWN, "terminating connection due to administrator command",
                                  detail=f"compute node {self.config.node_name} is shutting down")
            raise
        except Exception:
            log.exception("PostgreSQL connection from %s failed", self.peer)
            with contextlib.suppress(Exception):
                await self._fatal(errors.INTERNAL_ERROR, "internal error; the connection is closed")
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        self.server.connections.pop(self.process_id, None)
        if self.running is not None and not self.running.done():
            self.running.cancel()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                await self.pg.session.close()
        if self.admitted:
            self.server.admission.release()
            self.admitted = False
        with contextlib.suppress(Exception):
            self.writer.close()
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()

    async def _fatal(self, sqlstate: str, message: str, detail: str = "", hint: str = "") -> None:
        with contextlib.suppress(Exception):
            self.writer.write(protocol.error_response(sqlstate, message, detail, hint, severity="FATAL"))
            async with asyncio.timeout(1.0):
                await self.writer.drain()

    async def _next_message(self, timeout_s: float | None = None):
        while True:
            message = self.frontend.next_message()
            if message is not None:
                return message
            if self.frontend.phase is protocol.Phase.CLOSED:
                raise ConnectionClosed()
            if timeout_s is None:
                data = await self.reader.read(limits.PG_READ_CHUNK_BYTES)
            else:
                async with asyncio.timeout(timeout_s):
                    data = await self.reader.read(limits.PG_READ_CHUNK_BYTES)
            if not data:
                raise ConnectionClosed()
            self.frontend.receive_data(data)

    async def _send(self, *messages: bytes) -> None:
        self.writer.write(b"".join(messages))
        await self.writer.drain()

    # --- startup and authentication -------------------------------------------------------------
    async def _startup(self) -> protocol.StartupMessage | None:
        while True:
            message = await self._next_message()
            match message:
                case protocol.SSLRequest():
                    await self._start_tls()
                case protocol.GSSENCRequest():
                    if self.tls is not None:
                        raise ProtocolViolation("GSSENCRequest on an encrypted connection")
                    await self._send(protocol.SSL_NOT_SUPPORTED)
                case protocol.CancelRequest(process_id=process_id, secret_key=secret_key):
                    cancelled = self.server.cancel(process_id, secret_key)
                    log.info("cancel request for %d: %s", process_id, "cancelled" if cancelled else "nothing to cancel")
                    return None
                case protocol.StartupMessage():
                    await self._begin_session(message)
                    return message
                case _:
                    raise ProtocolViolation(f"unexpected {type(message).__name__} during startup")

    async def _start_tls(self) -> None:
        if self.tls is not None:
            raise ProtocolViolation("SSLRequest on a connection that is already encrypted")
        source = self.config.tls
        loaded = source.current() if source is not None else None
        if loaded is None:
            await self._send(protocol.SSL_NOT_SUPPORTED)  # the startup that follows is refused (or allowed: --insecure)
            return
        if self.frontend.buffered_bytes or len(getattr(self.reader, "_buffer", b"")):
            # Bytes sent after SSLRequest but before our answer would be taken as if they had come
            # through TLS (PostgreSQL's CVE-2021-23214): a client never does that, an attacker might.
            raise ProtocolViolation("received unencrypted data after SSL request")
        await self._send(protocol.SSL_SUPPORTED)
        try:
            await self.writer.start_tls(loaded.context, ssl_handshake_timeout=self.config.startup_timeout_s)
        except (ssl.SSLError, OSError) as error:
            log.info("TLS handshake with %s failed: %s", self.peer, error)
            raise ConnectionClosed() from None
        self.tls = loaded

    def _refuse_plaintext(self, startup: protocol.StartupMessage) -> None:
        """Over plaintext a secure cluster accepts nothing: a token (and every row) would cross the
        network in the clear. Said as PostgreSQL says a hostssl-only refusal, with what to do."""
        user = startup.parameters.get("user", "")
        database = startup.parameters.get("database") or user
        host = self.peer[0] if isinstance(self.peer, tuple) and self.peer else "unknown"
        source = self.config.tls
        if source is not None and source.current() is None:
            raise Fatal(errors.INVALID_AUTHORIZATION_SPECIFICATION, "SSL is required, but this node cannot serve it: its certificate "
                        "is missing or unreadable", detail=source.error,
                        hint="Create the node certificates with `quorumdb certs` (or `quorumdb up`), "
                             "or run the cluster with --insecure for development.")
        hint = "Use sslmode=require, or sslmode=verify-full"
        hint += f" sslrootcert={self.config.ca_path}" if self.config.ca_path else " with the cluster's ca.crt as sslrootcert"
        hint += " to check the server's certificate."
        raise Fatal(errors.INVALID_AUTHORIZATION_SPECIFICATION,
                    "SSL is required: connect with sslmode=require (the cluster is not --insecure)",
                    detail=f'no encryption: this endpoint accepts only TLS connections (host "{host}", '
                           f'user "{user}", database "{database}")', hint=hint)

    async def _begin_session(self, startup: protocol.StartupMessage) -> None:
        if self.tls is None and self.config.tls is not None:
            self._refuse_plaintext(startup)
        refusal = self.server.admission.admit(self.server.monotonic())
        if refusal is not None:
            raise Fatal(*refusal)
        self.admitted = True
        parameters = startup.parameters
        user = parameters.get("user", "")
        if not user:
            raise Fatal(errors.INVALID_AUTHORIZATION_SPECIFICATION, "no PostgreSQL user name specified in startup packet")
        database = parameters.get("database") or user
        unknown = [name for name in parameters if name.startswith("_pq_.")]
        if startup.protocol != protocol.PROTOCOL_3_0 or unknown:
            await self._send(protocol.negotiate_protocol_version(0, unknown))
        if not self.config.trust:
            await self._authenticate(user)
        self.frontend.authenticated()
        session_id = f"pg-{self.process_id}-{uuid.uuid4().hex[:8]}"
        self.tracker = self.server.commit_tracker(self.server.backend)
        session = self.server.session_factory(self.tracker, session_id)
        self.pg = PgSession(session, self.tracker, user, database, parameters.get("application_name", ""),
                            self.process_id, self.config.node_name, self.extended.deallocate)
        try:
            self.pg.apply_startup_options(parameters.get("options", ""))  # PGOPTIONS='-c name=value'
        except SqlError as error:
            raise Fatal(error.sqlstate, error.message, hint=error.hint) from None
        messages = [protocol.authentication_ok()]
        messages += [protocol.parameter_status(name, value) for name, value in self.pg.settings.reported()]
        messages.append(protocol.backend_key_data(self.process_id, self.secret_key))
        messages.append(protocol.ready_for_query("I"))
        await self._send(*messages)
        log.info("PostgreSQL session %d: user %s, database %s, from %s (%s, %s)", self.process_id, user, database,
                 self.peer, "TLS" if self.tls is not None else "plaintext", self.mechanism)

    async def _authenticate(self, user: str) -> None:
        binding = self.tls.binding if self.tls is not None else None
        offered = scram.mechanisms(binding is not None)
        await self._send(protocol.authentication_sasl(offered))
        initial = await self._next_message()
        if not isinstance(initial, protocol.PasswordData):
            raise ProtocolViolation("expected SASL response")
        mechanism, client_first = _sasl_initial(initial.payload)
        if mechanism not in offered:
            raise Fatal(errors.PROTOCOL_VIOLATION, f"client selected an invalid SASL authentication mechanism {mechanism!r}")
        secret = self.config.secret
        salt = tokens.scram_salt(secret, user)
        exchange = scram.ScramServer(secrets.token_urlsafe(18), salt, self.config.scram_iterations, binding)
        try:
            server_first = exchange.server_first(client_first, mechanism)
            self.mechanism = mechanism
        except scram.ScramError as error:
            raise Fatal(errors.PROTOCOL_VIOLATION, f"malformed SCRAM message: {error}") from None
        await self._send(protocol.authentication_sasl_continue(server_first))
        final = await self._next_message()
        if not isinstance(final, protocol.PasswordData):
            raise ProtocolViolation("expected SASL response")
        now_s = self.server.wall_clock()
        try:
            index, server_final = await self.server.check_proof(exchange, final.payload, user,
                                                                tokens.candidate_expiries(now_s))
            expired_index = None
            if index is None:
                expired = tokens.recently_expired(now_s)
                expired_index, _ = await self.server.check_proof(exchange, final.payload, user, expired)
        except scram.ScramError as error:
            raise Fatal(errors.PROTOCOL_VIOLATION, f"malformed SCRAM message: {error}") from None
        if index is None:
            if expired_index is not None:
                expired_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expired[expired_index]))
                detail = f"The token expired at {expired_at}."
            else:
                detail = (f"The password must be a current token for user {user!r} of this cluster "
                          "(wrong user, wrong cluster, forged, or expired more than a day ago).")
            log.info("authentication failed for user %s from %s: %s", user, self.peer, detail)
            raise Fatal(errors.INVALID_PASSWORD, f'password authentication failed for user "{user}"', detail=detail,
                        hint="Make a new token with `quorumdb token --user NAME --data-dir DIR` and use it as the password.")
        await self._send(protocol.authentication_sasl_final(server_final))

    # --- ready: queries ----------------------------------------------------------------------------
    async def _next_message_in_lifetime(self):
        """The client's next message, waited for no longer than the connection may still live."""
        remaining_s = self.deadline_s - self.server.monotonic()
        if remaining_s <= 0:
            self._lifetime_over()
        try:
            return await self._next_message(timeout_s=remaining_s)
        except TimeoutError:
            self._lifetime_over()

    async def _serve(self) -> None:
        while True:
            message = await self._next_message_in_lifetime()
            if self.server.monotonic() >= self.deadline_s:
                self._lifetime_over()
            if self.extended.skipping and not isinstance(message, (protocol.Sync, protocol.Terminate)):
                continue
            match message:
                case protocol.Terminate():
                    return
                case protocol.Query(sql=sql):
                    await self._end_implicit(failed=False)  # a Query ends the pipeline's transaction
                    await self._simple_query(sql)
                case protocol.Sync():
                    failed, self.extended.skipping = self.extended.skipping, False
                    await self._end_implicit(failed)
                    if self.pg.transaction_status == "I":
                        self.extended.end_transaction()
                    await self._send(protocol.ready_for_query(self.pg.transaction_status))
                case protocol.Flush():
                    await self.writer.drain()
                case protocol.CopyData() | protocol.CopyDone() | protocol.CopyFail():
                    pass  # no COPY is running (it failed before the client's data): PostgreSQL ignores these
                case protocol.Unsupported(type_code=code):
                    await self._extended_error(SqlError(errors.FEATURE_NOT_SUPPORTED,
                                                        f"protocol message {code!r} (function call) is not supported"))
                case _:
                    try:
                        await self._extended(message)
                    except SqlError as error:
                        await self._extended_error(error)

    async def _begin_implicit(self, words: list[str]) -> Outcome | None:
        """Before an Execute of a statement whose first words are `words`: open the implicit
        transaction when none is open; an outcome of its own for a BEGIN that turns an open
        implicit transaction into an explicit block."""
        first = words[0] if words else ""
        if self.implicit:
            if first in ("BEGIN", "START"):
                self.implicit = False  # the block now ends only at COMMIT/ROLLBACK, as in PostgreSQL
                return Outcome.tag_only("BEGIN" if first == "BEGIN" else "START TRANSACTION")
            if first in ("COMMIT", "END", "ABORT") or (first == "ROLLBACK" and words[1:2] != ["TO"]):
                self.implicit = False  # it ends the implicit transaction itself
            return None
        if first not in TRANSACTION_WORDS and self.pg.transaction_status == "I":
            outcome = (await self._execute(lambda: self.pg.control("BEGIN")))[-1]
            if outcome.error is not None:
                return outcome
            self.implicit = True
        return None

    async def _end_implicit(self, failed: bool) -> None:
        """At Sync: commit the implicit transaction, or roll it back if a message before failed."""
        if not self.implicit:
            return
        self.implicit = False
        status = self.pg.transaction_status
        if status == "I":
            return
        if failed or status == "E":
            await self._execute(lambda: self.pg.control("ROLLBACK"))
            return
        outcome = (await self._execute(lambda: self.pg.control("COMMIT")))[-1]
        if outcome.error is not None:
            await self._send(_error(outcome.error))
            if self.pg.transaction_status != "I":
                await self._execute(lambda: self.pg.control("ROLLBACK"))

    def _lifetime_over(self) -> None:
        raise Fatal(errors.ADMIN_SHUTDOWN,
                    f"terminating connection: its lifetime of {self.config.lifetime_s:g} s is over",
                    detail="QuorumDB closes every PostgreSQL connection after a fixed lifetime, as Aurora DSQL does.",
                    hint="Reconnect; connection pools should recycle connections before the lifetime ends.")

    async def _extended_error(self, error: SqlError) -> None:
        self.extended.skipping = True
        await self._send(_error(error))

    async def _simple_query(self, sql: str) -> None:
        self.extended.statements.pop("", None)
        self.extended.portals.pop("", None)
        statements = sqllex.split_statements(sql)
        if not statements:
            await self._send(protocol.empty_query_response(), protocol.ready_for_query(self.pg.transaction_status))
            return
        if any(copyformat.is_copy(statement) for statement in statements):
            if len(statements) == 1:
                outcome = await self._copy(statements[0], extended=False)
            else:
                outcome = Outcome.failed(SqlError(errors.FEATURE_NOT_SUPPORTED,
                                                  "COPY must be the only statement of a query message",
                                                  hint="Send the COPY in a query of its own."))
            await self._send_outcome(outcome, formats=(), describe=False)
            if self.pg.transaction_status == "I":
                self.extended.end_transaction()
            await self._send(protocol.ready_for_query(self.pg.transaction_status))
            return
        outcomes = await self._execute(lambda: self.pg.run_script(statements))
        for outcome in outcomes:
            await self._send_outcome(outcome, formats=(), describe=True)
        if self.pg.transaction_status == "I":
            self.extended.end_transaction()
        await self._send(protocol.ready_for_query(self.pg.transaction_status))

    async def _execute(self, work: Callable[[], Any]) -> list[Outcome]:
        """Runs work() as a cancellable task bounded by the statement timeout."""
        timeout_s = self.config.statement_timeout_s
        setting_s = self.pg.settings.statement_timeout_s()
        if setting_s is not None:
            timeout_s = min(timeout_s, setting_s)
        if hasattr(self.tracker, "commit_in_flight"):
            self.tracker.commit_in_flight = False
        self.cancel_requested = False
        flush_mark = self.pg.session.flush_mark()
        self.running = asyncio.ensure_future(work())
        try:
            done, _ = await asyncio.wait({self.running}, timeout=timeout_s)
            bulk_left_s = self.pg.session.bulk_time_left_s(flush_mark) if not done and setting_s is None else None
            if bulk_left_s:
                # A bulk load or table rewrite (rows committed ahead into a private keyspace) runs
                # on to its transaction's age limit, as PostgreSQL's statement_timeout of 0 lets a
                # COPY or ADD PRIMARY KEY finish; a statement_timeout the client set still applies.
                done, _ = await asyncio.wait({self.running}, timeout=bulk_left_s)
                timeout_s += bulk_left_s
            if not done:
                self.running.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.running
                return [Outcome.failed(self._interrupted(f"canceling statement due to statement timeout ({timeout_s:g}s)"))]
            if self.running.cancelled():
                return [Outcome.failed(self._interrupted("canceling statement due to user request"))]
            try:
                value = self.running.result()
            except SqlError as error:
                return [Outcome.failed(error)]
            except Exception as error:
                log.exception("statement failed")
                return [Outcome.failed(SqlError(errors.INTERNAL_ERROR, f"internal error: {error!r}"))]
            return value if isinstance(value, list) else [value]
        finally:
            if not self.running.done():
                self.running.cancel()
            self.running = None

    # --- COPY -------------------------------------------------------------------------------------
    async def _copy(self, sql: str, extended: bool) -> Outcome:
        """One COPY statement: its CopyIn/CopyOut exchange with the client; the outcome is the
        COPY's command tag or its error (the caller sends it, then ReadyForQuery or the rest of
        the extended exchange)."""
        try:
            statement = copyformat.parse_statement(sql)
            if statement.direction == "from" and extended:
                raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                               "COPY FROM STDIN is supported in the simple query protocol only",
                               hint="Send it as a simple Query (psql, psycopg's cursor.copy() and pgbench do).")
        except SqlError as error:
            self.pg.session.copy_failed()
            return Outcome.failed(error)
        if statement.direction == "to":
            return await self._copy_out(statement)
        return await self._copy_in(statement)

    async def _copy_out(self, statement: copyformat.CopyStatement) -> Outcome:
        outcome = (await self._execute(lambda: self.pg.copy_to(statement)))[-1]
        if outcome.error is not None:
            return outcome
        try:
            copy_mod.output_force_quote(outcome.columns, statement.options)
        except SqlError as error:
            return Outcome.failed(error)
        self.writer.write(protocol.copy_out_response(len(outcome.columns)))
        for chunk in copy_mod.render(outcome.columns, outcome.rows, statement.options, limits.COPY_OUT_CHUNK_BYTES):
            self.writer.write(protocol.copy_data(chunk.encode("utf-8")))
            await self.writer.drain()
        self.writer.write(protocol.copy_done())
        return Outcome.tag_only(f"COPY {len(outcome.rows)}")

    async def _copy_in(self, statement: copyformat.CopyStatement) -> Outcome:
        """CopyInResponse, then CopyData until CopyDone (load) or CopyFail (abort). After an error
        in the data the rest is read and ignored up to CopyDone/CopyFail, as PostgreSQL does, so
        the connection stays in step; nothing is written unless every record was good. Into a
        table the open block truncated or created the records are loaded a chunk at a time as
        they come (Session.copy_streams: still all or nothing, through the block)."""
        columns = (await self._execute(lambda: self.pg.copy_columns(statement)))[-1]
        if columns.error is not None:
            return columns
        names = [name for name, _ in columns.columns]
        try:
            reader = copyformat.CopyReader(statement.options, names)  # FORCE_* names checked now
        except SqlError as error:
            self.pg.session.copy_failed()
            return Outcome.failed(error)
        streams = self.pg.copy_streams(statement)
        await self._send(protocol.copy_in_response(len(names)))
        self.copy_in_progress, self.copy_cancelled = True, False
        try:
            error, records, loaded = await self._copy_in_data(statement, reader, streams)
        finally:
            self.copy_in_progress = False
        if error is not None:
            line = getattr(error, "line", None)
            if line is not None:
                copy_mod.located(error, statement.table, line)
            self.pg.session.copy_failed()
            return Outcome.failed(error)
        if streams:
            return Outcome.tag_only(f"COPY {loaded}")
        return (await self._execute(lambda: self.pg.copy_from(statement, records)))[-1]

    async def _copy_in_data(self, statement: copyformat.CopyStatement, reader: copyformat.CopyReader,
                            streams: bool = False):
        """(the first error, or None; the records not loaded yet; the rows loaded) of the client's
        CopyData up to CopyDone/CopyFail. Streaming, a chunk is loaded whenever it is full and the
        last one at CopyDone (no total bound: memory holds one chunk, the block's age limit and
        the connection's lifetime bound the time); otherwise every record is kept for the caller,
        bounded by COPY_BYTES_MAX / COPY_ROWS_MAX."""
        records: list = []
        received = 0        # bytes of input (streaming: of the chunk not loaded yet)
        loaded = 0
        error: SqlError | None = None
        while True:
            message = await self._next_message_in_lifetime()
            if self.copy_cancelled and error is None:
                error = SqlError(errors.QUERY_CANCELED, "canceling statement due to user request",
                                 context=f"COPY {statement.table}, line {reader.line}")
            match message:
                case protocol.CopyData(data=data):
                    if error is not None:
                        continue
                    received += len(data)
                    try:
                        if received > limits.COPY_BYTES_MAX and not streams:
                            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                                           f"COPY input exceeds the limit of {limits.COPY_BYTES_MAX} bytes",
                                           hint="Split the input into several COPY commands.")
                        records.extend(reader.feed(data))
                        if not streams:
                            self._check_copy_rows(len(records))
                    except SqlError as failure:
                        error = failure
                    if streams and error is None and (len(records) >= limits.COPY_STREAM_CHUNK_ROWS
                                                      or received >= limits.COPY_STREAM_CHUNK_BYTES):
                        error = await self._load_copy_chunk(statement, records)
                        loaded += len(records)
                        records, received = [], 0
                case protocol.CopyDone():
                    if error is None:
                        try:
                            records.extend(reader.finish())
                            if not streams:
                                self._check_copy_rows(len(records))
                        except SqlError as failure:
                            error = failure
                    if streams and error is None and records:
                        error = await self._load_copy_chunk(statement, records)
                        loaded += len(records)
                        records = []
                    break
                case protocol.CopyFail(message=why):
                    if error is None:  # after an error the client's reason for giving up is not news
                        error = SqlError(errors.QUERY_CANCELED, f"COPY from stdin failed: {why}")
                    break
                case protocol.Flush() | protocol.Sync():
                    continue  # PostgreSQL ignores these during COPY FROM STDIN
                case protocol.Terminate():
                    raise ConnectionClosed()
                case _:
                    error = error or SqlError(errors.PROTOCOL_VIOLATION,
                                              f"unexpected message type {type(message).__name__} during COPY from stdin")
                    break
        return error, records, loaded

    async def _load_copy_chunk(self, statement: copyformat.CopyStatement, records: list) -> SqlError | None:
        """One chunk of a streaming COPY into the open block (its error fails the block)."""
        outcome = (await self._execute(lambda: self.pg.copy_from(statement, records)))[-1]
        return outcome.error

    @staticmethod
    def _check_copy_rows(count: int) -> None:
        if count > limits.COPY_ROWS_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED, f"COPY input exceeds the limit of {limits.COPY_ROWS_MAX} rows",
                           hint="Split the input into several COPY commands.")

    def _interrupted(self, why: str) -> SqlError:
        if getattr(self.tracker, "commit_in_flight", False):
            self.tracker.commit_in_flight = False
            return errors.completion_unknown(why)
        return SqlError(errors.QUERY_CANCELED, why)

    def cancel_running(self) -> bool:
        if self.copy_in_progress:
            # Waiting for the client's COPY data: the copy fails with 57014 at its next message
            # (the rest of the data is read and ignored, as after any error in the data).
            self.copy_cancelled = True
            return True
        if self.running is None or self.running.done():
            return False
        self.cancel_requested = True
        self.running.cancel()
        return True

    async def _send_outcome(self, outcome: Outcome, formats: tuple[int, ...], describe: bool,
                            portal: Portal | None = None, max_rows: int = 0) -> None:
        for notice in outcome.notices:
            self.writer.write(protocol.notice_response(notice.sqlstate, notice.message, notice.detail, notice.hint))
        for name, value in outcome.parameter_changes:
            self.writer.write(protocol.parameter_status(name, value))
        if outcome.error is not None:
            await self._send(_error(outcome.error))
            return
        if not outcome.tag and not outcome.returns_rows:
            await self._send(protocol.empty_query_response())
            return
        oids = _column_oids(outcome)
        if portal is None:
            column_formats = [_format(formats, i, len(oids)) for i in range(len(oids))]
        else:
            column_formats = [portal.format_of(i, len(oids)) for i in range(len(oids))]
        if describe and outcome.returns_rows:
            self.writer.write(protocol.row_description(_fields(outcome, oids, column_formats)))
        start = portal.position if portal is not None else 0
        end = len(outcome.rows) if max_rows <= 0 else min(len(outcome.rows), start + max_rows)
        for count, row in enumerate(outcome.rows[start:end], start=1):
            self.writer.write(protocol.data_row([_encode(value, oid, fmt) for value, oid, fmt
                                                 in zip(row, oids, column_formats)]))
            if count % limits.PG_ROWS_PER_DRAIN == 0:
                await self.writer.drain()
        if portal is not None:
            portal.position = end
            if end < len(outcome.rows):
                await self._send(protocol.portal_suspended())
                return
            portal.done = True
        tag = outcome.tag
        if portal is not None and start > 0 and tag.startswith("SELECT"):
            tag = f"SELECT {end - start}"
        await self._send(protocol.command_complete(tag))

    # --- extended protocol ----------------------------------------------------------------------
    async def _extended(self, message) -> None:
        match message:
            case protocol.Parse():
                answered_here = self._answered_here(message.sql)
                if not answered_here and not copyformat.is_copy(message.sql):
                    # A syntax error is reported at Parse (and no statement is made), as in
                    # PostgreSQL; the parse is cached for the Binds that follow (sql/statements.py).
                    self.pg.session.engine.statements.bind(message.sql, []).release()
                self.extended.parse(message).answered_here = answered_here
                self.writer.write(protocol.parse_complete())
            case protocol.Bind():
                self.extended.bind(message)
                self.writer.write(protocol.bind_complete())
            case protocol.Describe(kind="S", name=name):
                statement = self.extended.statement(name)
                param_oids, outcome = await self._describe(statement)
                self.writer.write(protocol.parameter_description(param_oids))
                self._write_row_description(outcome, None)
            case protocol.Describe(kind="P", name=name):
                portal = self.extended.portal(name)
                if portal.outcome is None and not portal.statement.answered_here:
                    _, outcome = await self._describe(portal.statement)  # compiled, not run: Execute runs it
                    portal.described = outcome.columns if outcome is not None else []
                else:  # a settings command answered here cannot write: run it, keep its rows
                    outcome = await self._run_portal(portal)
                    if outcome.error is not None:
                        raise outcome.error
                self._write_row_description(outcome, portal)
            case protocol.Execute(portal=name, max_rows=max_rows):
                portal = self.extended.portal(name)
                if portal.statement.leading_words[:1] == ["COPY"]:
                    await self._execute_copy(portal)
                    return
                outcome = await self._run_portal(portal)
                if outcome.error is not None:
                    raise outcome.error
                if portal.described is not None and list(outcome.columns) != list(portal.described):
                    # The schema changed between Describe and Execute: the rows would not match
                    # the RowDescription the client holds (PostgreSQL refuses the same way).
                    raise SqlError(errors.FEATURE_NOT_SUPPORTED, "cached plan must not change result type")
                if portal.done:
                    await self._send(protocol.command_complete(
                        "SELECT 0" if outcome.tag.startswith("SELECT") else outcome.tag))
                    return
                await self._send_outcome(outcome, (), describe=False, portal=portal, max_rows=max_rows)
            case protocol.Close():
                self.extended.close(message)
                self.writer.write(protocol.close_complete())
            case _:
                raise ProtocolViolation(f"unexpected {type(message).__name__}")

    async def _execute_copy(self, portal: Portal) -> None:
        """Execute of a COPY ... TO STDOUT portal: CopyOutResponse, CopyData, CopyDone, then
        CommandComplete (a portal runs once; executing it again says COPY 0)."""
        if portal.done:
            await self._send(protocol.command_complete("COPY 0"))
            return
        own = await self._begin_implicit(portal.statement.leading_words)
        if own is not None and own.error is not None:
            raise own.error
        outcome = await self._copy(portal.statement.sql, extended=True)
        if outcome.error is not None:
            raise outcome.error
        portal.done = True
        await self._send(protocol.command_complete(outcome.tag))

    async def _run_portal(self, portal: Portal) -> Outcome:
        if portal.outcome is None:
            statements = portal.statement.statements
            if not statements:
                portal.outcome = Outcome.tag_only("")
            else:
                own = await self._begin_implicit(portal.statement.leading_words)
                outcomes = [own] if own is not None else await self._execute(
                    lambda: self.pg.run(statements[0], portal.params))
                portal.outcome = outcomes[-1]
                for name, value in portal.outcome.parameter_changes:
                    self.writer.write(protocol.parameter_status(name, value))
                portal.outcome.parameter_changes = []
        return portal.outcome

    def _write_row_description(self, outcome: Outcome | None, portal: Portal | None) -> None:
        if outcome is None or not outcome.returns_rows:
            self.writer.write(protocol.no_data())
            return
        oids = _column_oids(outcome)
        formats = [portal.format_of(i, len(oids)) for i in range(len(oids))] if portal is not None else [0] * len(oids)
        self.writer.write(protocol.row_description(_fields(outcome, oids, formats)))

    @staticmethod
    def _answered_here(sql: str) -> bool:
        """Settings commands: bridge.py answers them, not the engine."""
        words = sqllex.leading_words(sql, 1)
        return bool(words) and words[0] in ("SHOW", "SET", "RESET", "DISCARD", "DEALLOCATE")

    async def _describe(self, statement: PreparedStatement) -> tuple[list[int], Outcome | None]:
        """(parameter type OIDs, an outcome with the result's columns, or None for no rows) of a
        prepared statement, without running it: the engine compiles it (compute_node/sql/
        describe.py). Commands this endpoint answers itself (SHOW) cannot
        write and are run, with NULL parameters, to learn their columns."""
        declared = [oid or 0 for oid in statement.param_oids]
        if statement.leading_words[:1] == ["COPY"]:
            return [oid or pgtypes.TEXT for oid in declared], None  # COPY answers with CopyOutResponse, not rows
        if statement.answered_here:
            outcome = await self._dry_run(statement.sql, statement.param_count)
            return [oid or pgtypes.TEXT for oid in declared], outcome
        # Described once per catalog version: libpq describes the portal at every execution of a
        # prepared statement, and a description checks the schema version with a storage read.
        version = self.pg.session.engine.schema_cache.version
        if statement.described is not None and statement.described[0] == version and version is not None:
            return statement.described[1], statement.described[2]
        timeout_s = self.pg.settings.statement_timeout_s() or self.config.statement_timeout_s
        try:
            async with asyncio.timeout(min(timeout_s, self.config.statement_timeout_s)):
                description = await self.pg.session.describe(
                    statement.sql, statement.param_count, [pgtypes.sql_type_of_oid(oid) for oid in declared])
        except TimeoutError:
            raise SqlError(errors.QUERY_CANCELED, "canceling statement due to statement timeout") from None
        oids = [oid or pgtypes.oid_of(sql_type.pg_name) for oid, sql_type in zip(declared, description.param_types)]
        outcome = Outcome(description.columns, [], "") if description.columns else None
        statement.described = (self.pg.session.engine.schema_cache.version, oids, outcome)
        self.extended.remember(statement)
        return oids, outcome

    async def _dry_run(self, sql: str, param_count: int) -> Outcome | None:
        """Describe of a statement: the columns a row-returning statement would have.

        Only statements that cannot write (SELECT without FOR UPDATE, SHOW, VALUES) are run,
        with NULL for every parameter, in a throwaway session.
        """
        words = sqllex.leading_words(sql, 1)
        if not words or words[0] not in ("SELECT", "SHOW", "VALUES", "TABLE", "WITH"):
            return None
        if words[0] == "WITH" or " FOR UPDATE" in " ".join(sqllex.words(sql)).upper():
            return None
        bound = sqllex.substitute(sql, ["NULL"] * param_count) if param_count else sql
        throwaway = self.server.session_factory(self.server.commit_tracker(self.server.backend),
                                                f"pg-describe-{self.process_id}")
        probe = PgSession(throwaway, self.tracker, self.pg.user, self.pg.database, "", self.process_id,
                          self.config.node_name, lambda name: None)
        probe.settings = self.pg.settings
        try:
            outcomes = await self._execute(lambda: probe.run(bound))
        finally:
            with contextlib.suppress(Exception):
                await throwaway.close()
        outcome = outcomes[-1]
        return outcome if outcome.error is None else None


def _sasl_initial(payload: bytes) -> tuple[str, bytes]:
    end = payload.find(b"\0")
    if end < 0 or len(payload) < end + 5:
        raise ProtocolViolation("malformed SASLInitialResponse")
    mechanism = payload[:end].decode("utf-8", "replace")
    size = struct.unpack("!i", payload[end + 1:end + 5])[0]
    data = payload[end + 5:]
    if size != len(data):
        raise ProtocolViolation("malformed SASLInitialResponse length")
    return mechanism, data


def _error(error: SqlError) -> bytes:
    return protocol.error_response(error.sqlstate, error.message, error.detail or "", error.hint or "",
                                   context=getattr(error, "context", "") or "")


def _format(formats: tuple[int, ...], index: int, count: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[index]


def _column_oids(outcome: Outcome) -> list[int]:
    oids = []
    for index, (_, type_name) in enumerate(outcome.columns):
        sample = next((row[index] for row in outcome.rows if row[index] is not None), None)
        oids.append(pgtypes.oid_of(type_name, sample))
    return oids


def _fields(outcome: Outcome, oids: list[int], formats: list[int]) -> list[protocol.FieldDescription]:
    return [protocol.FieldDescription(name, oid, pgtypes.type_size(oid), -1, fmt)
            for (name, _), oid, fmt in zip(outcome.columns, oids, formats)]


def _encode(value: Any, oid: int, format_code: int) -> bytes | None:
    if value is None:
        return None
    if format_code == 1:
        return pgtypes.encode_binary(value, oid)
    return pgtypes.encode_text(value, oid)


async def start_for_node(cluster: Any, node: Any, backend: Any,
                         session_factory: Callable[[Any, str], Any]) -> PgServer | None:
    """The compute node's PostgreSQL endpoint on cluster.pg_port(node) (called by compute_node/main.py).

    `session_factory(backend_view, session_id)` makes the node's SQL sessions (sharing its engine).
    A port that cannot be bound is logged as an error and the node goes on serving gRPC.
    """
    from compute_node.service import CommitTracker

    secret = None if cluster.pg_trust else await asyncio.to_thread(tokens.load_or_create_secret,
                                                                   tokens.secret_dir(cluster.data_dir))
    source = None if cluster.insecure else tls_mod.for_node(cluster.certs_path, cluster.cert_name(node.name))
    config = PgConfig(host=cluster.bind_host(node), port=cluster.pg_port(node.name), trust=cluster.pg_trust,
                      secret=secret, node_name=node.name, tls=source,
                      ca_path=str(certs.ca_path(cluster.certs_path)) if source is not None else "", lifetime_s=cluster.pg_connection_lifetime_s,
                      connections_max=cluster.pg_connections_max, connections_per_s=cluster.pg_connections_per_s,
                      connections_burst=max(limits.PG_CONNECTIONS_BURST, int(cluster.pg_connections_per_s)))
    server = PgServer(config, backend, session_factory, CommitTracker)
    try:
        await server.start()
    except OSError as error:
        log.error("PostgreSQL endpoint NOT started: cannot listen on %s:%d: %s", config.host, config.port, error)
        return None
    return server
