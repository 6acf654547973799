"""The Python client for QuorumDB compute nodes (sync, plus an asyncio variant).

    import quorumdb.client
    with quorumdb.client.connect("127.0.0.1", 7100) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO t VALUES ($1, $2)", [1, "O'Brien"])
        rows = conn.execute("SELECT name FROM t WHERE id = $1", [1]).rows

        def transfer(c):
            c.execute("UPDATE t SET name = $1 WHERE id = $2", ["x", 1])
        conn.run_transaction(transfer)   # retries 40001 with jittered backoff

A Connection holds one session on one compute node at a time. Give it several compute
nodes and it moves to the next one when its node dies:

    conn = quorumdb.client.connect(endpoints=[("127.0.0.1", 7100), ("127.0.0.1", 7101)])
    conn = quorumdb.client.connect(endpoints="127.0.0.1:7100,127.0.0.1:7101")

Failover happens only between transactions. When the node stops answering, the statement
in flight fails with 08006 (it may or may not have run if it was a COMMIT or an autocommit
statement), and the next statement opens a session on the next endpoint that answers. A
transaction that was open is lost with its session, never half-applied (its writes were
buffered on the dead node): until ROLLBACK (or reconnect()), statements fail with 08006
rather than run outside the transaction the application thinks it is in. A statement sent
to a node that restarted (08003: the session does not exist, nothing ran) is resent on a
new session when no transaction was open. run_transaction retries a transaction lost
before its COMMIT was sent.

Credentials: against a cluster that is not `--insecure` the channel is TLS, verifying the node
against the cluster's CA, and every call carries a token (`quorumdb.credentials.resolve`):
`token=`, else $QUORUMDB_TOKEN; `ca=` (a file), else $QUORUMDB_CA; whatever is missing comes
from the cluster's data directory (`data_dir=`, else $QUORUMDB_DATA_DIR, else ./quorumdb-data
when it holds a cluster): its CA, and a token minted from its secret (renewed before it
expires). `insecure=True` talks plaintext to a `quorumdb up --insecure` cluster. No token found:
DatabaseError 28000 saying how to give one; a token the node refuses: 28P01 (28000 when the node
got none), a call the node does not allow: 42501, each with the node's message.

    conn = quorumdb.client.connect("127.0.0.1", 7100, data_dir="./quorumdb-data")
    conn = quorumdb.client.connect("db.example", 7100, token=token, ca="ca.crt")

Errors:
  - DatabaseError: the server answered with an error (sqlstate, message, detail, hint);
  - OperationalError (a DatabaseError): the node could not be reached or did not answer
    (08001 could not connect, 08006 connection failure: a statement may or may not have run).

Parameters: `$1, $2, ...` placeholders get their values on the server: the SQL text and
the values travel separately (ExecuteRequest.params) and the compute node binds them into
the statement it parsed once for that text (never pasting them into the text). A value
means what its SQL literal (quorumdb.sqllex.quote_literal) means:
    None -> NULL;  True/False -> TRUE/FALSE;  int, float, Decimal -> a number
    (NaN/Infinity as 'NaN'::float8 ...);  str -> an untyped string literal, typed by where
    it is used (NUL is refused);  bytes -> bytea;  date/time/datetime -> '<isoformat>'.
Other types raise TypeError. A placeholder with no matching parameter fails with 42P02.

Every RPC carries a deadline: Execute gets timeout_s + CLIENT_DEADLINE_MARGIN_S so the
server's own statement timeout (57014) arrives first.
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Awaitable, Callable, Sequence, TypeVar

import grpc

from quorumdb import credentials as credentials_mod
from quorumdb import errors, limits, rpc, sqllex
# Re-exported: callers compare an error's sqlstate with client.SERIALIZATION_FAILURE and the like.
from quorumdb.errors import (
    CONNECTION_DOES_NOT_EXIST,
    CONNECTION_FAILURE,
    SERIALIZATION_FAILURE,
    SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
    STATEMENT_COMPLETION_UNKNOWN,
    UNDEFINED_PARAMETER,
)
from quorumdb.pb import compute_pb2, compute_pb2_grpc
from quorumdb.sqllex import quote_literal

T = TypeVar("T")


# --- errors and results ------------------------------------------------------------------


class DatabaseError(Exception):
    def __init__(self, sqlstate: str, message: str, detail: str = "", hint: str = "", context: str = ""):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        self.context = context  # PostgreSQL's CONTEXT: where it happened ("COPY t, line 5001")

    def __str__(self) -> str:
        text = f"{self.message} (SQLSTATE {self.sqlstate})"
        if self.detail:
            text += f"\nDETAIL: {self.detail}"
        if self.hint:
            text += f"\nHINT: {self.hint}"
        if self.context:
            text += f"\nCONTEXT: {self.context}"
        return text


class OperationalError(DatabaseError):
    """The compute node could not be reached, or did not answer in time."""


@dataclasses.dataclass
class Result:
    columns: list[tuple[str, str]]
    rows: list[tuple]
    command_tag: str
    error: DatabaseError | None = None

    @property
    def rowcount(self) -> int:
        """Rows affected or returned, from the command tag (INSERT 0 3 -> 3); -1 when the tag has none."""
        parts = self.command_tag.split()
        if len(parts) >= 2 and parts[-1].isdigit():
            return int(parts[-1])
        return -1

    def fetchall(self) -> list[tuple]:
        return list(self.rows)

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def scalar(self):
        """The first column of the first row (None when there is no row)."""
        return self.rows[0][0] if self.rows else None


def _value_from_pb(value: compute_pb2.Value):
    kind = value.WhichOneof("kind")
    if kind is None or kind == "is_null":
        return None
    return getattr(value, kind)


def _result_from_pb(message: compute_pb2.StatementResult) -> Result:
    error = None
    if message.has_error:
        error = DatabaseError(message.error.sqlstate, message.error.message, message.error.detail, message.error.hint,
                              message.error.context)
    return Result(
        columns=[(column.name, column.type) for column in message.columns],
        rows=[tuple(_value_from_pb(value) for value in row.values) for row in message.rows],
        command_tag=message.command_tag,
        error=error,
    )


def _auth_error(code, details: str, token_sent: bool) -> DatabaseError | None:
    """The node refused the caller (not the statement): no, a bad, or a too weak credential."""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        sqlstate = errors.INVALID_PASSWORD if token_sent else errors.INVALID_AUTHORIZATION_SPECIFICATION
        hint = ("Make a new token (`quorumdb token --user admin`) or give the cluster's --data-dir."
                if token_sent else "Give a token (--token or QUORUMDB_TOKEN) or the cluster's --data-dir.")
        return DatabaseError(sqlstate, f"authentication failed: {details}", hint=hint)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return DatabaseError(errors.INSUFFICIENT_PRIVILEGE, f"permission denied: {details}")
    return None


def _tls_hint(details: str) -> str:
    lowered = details.lower()
    if "ssl" in lowered or "handshake" in lowered or "certificate" in lowered:
        return ("TLS failed: the node's certificate is not of the CA given (--ca / QUORUMDB_CA / the data "
                "directory's certs/ca.crt), or the node runs without TLS (`quorumdb up --insecure`: use --insecure).")
    return ""


def _rpc_error(error: grpc.RpcError, what: str, opening: bool, token_sent: bool = False) -> DatabaseError:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    refused = _auth_error(code, details or "", token_sent)
    if refused is not None:
        return refused
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details and details[:5].isalnum() and details[5:6] == ":":
        return OperationalError(details[:5], details[6:].strip())
    if opening:
        return OperationalError(SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, f"could not open a session: {what}: {code} {details}",
                                hint=_tls_hint(details or ""))
    return OperationalError(
        CONNECTION_FAILURE,
        f"connection failure: {what}: {code.name if code else ''} {details}",
        hint="The statement may or may not have run; reconnect and check.",
    )


# --- parameters -------------------------------------------------------------------------


def substitute_params(sql: str, params: Sequence) -> str:
    """`sql` with each $n replaced by the SQL literal of params[n - 1] (quorumdb.sqllex's lexer:
    placeholders inside literals, identifiers, dollar quotes and comments stay). For tools that
    need the text; execute() sends the values beside the SQL instead."""
    for token in sqllex.tokens(sql):
        if token.kind == sqllex.PARAM:
            number = int(sql[token.start + 1:token.end])
            if not 1 <= number <= len(params):
                raise DatabaseError(UNDEFINED_PARAMETER, f"there is no parameter ${number}")
    return sqllex.substitute(sql, [quote_literal(value) for value in params])


def param_value(value) -> compute_pb2.Value:
    """A parameter as the gRPC API carries it (see the module docstring)."""
    if value is None:
        return compute_pb2.Value(is_null=True)
    if isinstance(value, bool):
        return compute_pb2.Value(bool_value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return compute_pb2.Value(int_value=value)
    if isinstance(value, float):
        return compute_pb2.Value(double_value=value)
    if isinstance(value, str):
        quote_literal(value)  # refuses NUL here, before anything is sent
        return compute_pb2.Value(text_value=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return compute_pb2.Value(bytes_value=bytes(value))
    return compute_pb2.Value(literal=quote_literal(value))  # int beyond 64 bits, Decimal, dates: TypeError for others


@dataclasses.dataclass
class Description:
    param_types: list[str]                    # one per $n, $1 first
    columns: list[tuple[str, str]] | None     # (name, type); None: the statement returns no rows


def _description(reply: compute_pb2.DescribeReply) -> Description:
    if reply.has_error:
        error = reply.error
        raise DatabaseError(error.sqlstate, error.message, error.detail, error.hint)
    columns = [(column.name, column.type) for column in reply.columns] if reply.returns_rows else None
    return Description(list(reply.param_types), columns)


def _param_values(params: Sequence | None) -> list[compute_pb2.Value] | None:
    return None if params is None else [param_value(value) for value in params]


def _request(session_id: str, sql: str, values: list[compute_pb2.Value] | None) -> compute_pb2.ExecuteRequest:
    if values is None:
        return compute_pb2.ExecuteRequest(session_id=session_id, sql=sql)
    return compute_pb2.ExecuteRequest(session_id=session_id, sql=sql, params=values, has_params=True)


def _raise_first_error(results: list[Result]) -> Result:
    for result in results:
        if result.error is not None:
            raise result.error
    return results[-1] if results else Result([], [], "", None)


@dataclasses.dataclass
class _Backoff:
    first_s: float
    max_s: float
    rng: random.Random

    def delay_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, first * 2^attempt)]."""
        return self.rng.uniform(0, min(self.max_s, self.first_s * (2 ** min(attempt, 30))))


# --- endpoints -------------------------------------------------------------------------------

Endpoint = tuple[str, int]


def parse_endpoints(host: str, port: int, endpoints=None) -> list[Endpoint]:
    """The compute nodes to use, in order: `endpoints` ([(host, port), ...], ["h:p", ...] or
    "h:p,h:p") when given, else (host, port); host may itself be a comma list "h:p,h:p"."""
    if endpoints is None:
        endpoints = host if "," in host or ":" in host else [(host, port)]
    if isinstance(endpoints, str):
        endpoints = [item for item in endpoints.split(",") if item.strip()]
    parsed: list[Endpoint] = []
    for item in endpoints:
        if isinstance(item, str):
            name, _, number = item.strip().rpartition(":")
            if not name or not number.isdigit():
                raise ValueError(f"endpoint {item!r} is not host:port")
            parsed.append((name, int(number)))
        else:
            name, number = item
            parsed.append((str(name), int(number)))
    if not parsed:
        raise ValueError("no endpoint given")
    return parsed


def _is_rollback(sql: str) -> bool:
    return sql.strip().rstrip(";").strip().upper() in ("ROLLBACK", "ABORT", "ROLLBACK TRANSACTION", "ROLLBACK WORK")


def _lost_transaction_error() -> OperationalError:
    return OperationalError(
        CONNECTION_FAILURE,
        "connection failure: the transaction in progress was lost with its compute node",
        hint="Nothing of it was applied unless its COMMIT was in flight; ROLLBACK (or reconnect) and run it again.",
    )


# --- credentials -------------------------------------------------------------------------------


class _CredentialSource(credentials_mod.Source):
    """The connection's credentials (`credentials_mod.Source`), the lack of any as a 28000 error.

    Given nothing (no argument, environment or default data directory), a process that started
    the cluster itself (tools.launcher remembers it in quorumdb.rpc) uses that cluster's
    credentials: it holds its data directory anyway."""

    def __init__(self, *args, addresses: Sequence[str] = (), **kwargs) -> None:
        self.addresses = tuple(addresses)
        super().__init__(*args, **kwargs)

    def resolve(self) -> credentials_mod.ClientCredentials:
        try:
            return super().resolve()
        except credentials_mod.CredentialsError as error:
            for address in self.addresses:
                known = rpc.known_credentials(address)
                if known is not None:
                    return known
                if rpc.known_insecure(address):
                    return credentials_mod.INSECURE
            raise DatabaseError(errors.INVALID_AUTHORIZATION_SPECIFICATION, str(error)) from None


# --- sync connection -------------------------------------------------------------------


class _SessionState:
    """What Connection and AsyncConnection share apart from their I/O: the endpoints, the
    session's state, and what a failed opening or a lost node means for them."""

    def __init__(self, host: str, port: int, timeout_s: float, client_name: str, endpoints,
                 session_sql: Sequence[str], token: str | None, ca: str | None, data_dir, insecure: bool,
                 credentials: credentials_mod.ClientCredentials | None, server_name: str | None):
        self.endpoints = parse_endpoints(host, port, endpoints)
        # credentials: already resolved ones (a tool's); server_name: the name the node's
        # certificate must carry when it is not the host dialled.
        self._credentials = _CredentialSource(token, ca, data_dir, insecure, given=credentials,
                                              default_data_dir=credentials_mod.DEFAULT_DATA_DIR,
                                              addresses=[f"{h}:{p}" for h, p in self.endpoints])
        self._server_name = server_name
        # Run on every session this connection opens (e.g. SET quorumdb.read_mode = 'single'),
        # so a session setting survives reconnects and failover to another compute node.
        self.session_sql = tuple(session_sql)
        self.timeout_s = timeout_s
        self._client_name = client_name
        self._position = 0  # the endpoint in use (or to try first)
        self._stub: compute_pb2_grpc.ComputeStub | None = None
        self.address = self._endpoint_address(0)
        self.transaction_status = "I"
        self._session_id: str | None = None
        self._lost_transaction = False  # the session died with a transaction open
        self._closed = False
        self.failovers = 0  # sessions opened on another endpoint after a failure

    def _endpoint_address(self, position: int) -> str:
        host, port = self.endpoints[position % len(self.endpoints)]
        return f"{host}:{port}"

    def _opening_error(self, error: grpc.RpcError) -> DatabaseError:
        return _rpc_error(error, self.address, opening=True, token_sent=self._credentials.token_sent)

    def _note_open_failure(self, failures: list[DatabaseError], error: grpc.RpcError) -> None:
        """An endpoint did not open a session: try the next one only if it could not be reached;
        a node that answered (e.g. too many sessions) gives the caller its answer."""
        failures.append(self._opening_error(error))
        if failures[-1].sqlstate != SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION:
            raise failures[-1] from None

    def _session_opened(self, reply: compute_pb2.OpenSessionReply, offset: int) -> None:
        if offset:
            self.failovers += 1
        self._session_id = reply.session_id
        self.transaction_status = "I"
        self._lost_transaction = False

    def _no_session(self, failures: list[DatabaseError]) -> DatabaseError:
        """What to raise when no endpoint opened a session (08001)."""
        if len(failures) == 1:
            return failures[0]
        return OperationalError(
            SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            f"could not open a session on any of {len(self.endpoints)} compute nodes",
            detail="; ".join(f.message for f in failures),
        )

    def _forget_session(self) -> None:
        """The node stopped answering: the session is gone (with any open transaction), and the
        next one is opened on the next endpoint. The caller drops the channel."""
        self._lost_transaction = self._lost_transaction or self.transaction_status != "I"
        self._session_id = None
        self._position = (self._position + 1) % len(self.endpoints)
        self.transaction_status = "I"


class Connection(_SessionState):
    """One session on one compute node (of `endpoints`). Not thread-safe: use one Connection per thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7100, timeout_s: float = 30.0, client_name: str = "python",
                 endpoints=None, session_sql: Sequence[str] = (), *, token: str | None = None, ca: str | None = None,
                 data_dir=None, insecure: bool = False,
                 credentials: credentials_mod.ClientCredentials | None = None, server_name: str | None = None):
        super().__init__(host, port, timeout_s, client_name, endpoints, session_sql, token, ca, data_dir, insecure,
                         credentials, server_name)
        self._channel: grpc.Channel | None = None
        self._open_session()

    def _use_endpoint(self, position: int) -> None:
        address = self._endpoint_address(position)
        if self._channel is not None and address == self.address:
            return
        self._drop_channel()
        self._position = position % len(self.endpoints)
        self.address = address
        self._channel = rpc.sync_client_channel(address, self._credentials.current, self._server_name)
        self._stub = compute_pb2_grpc.ComputeStub(self._channel)

    def _renew_credentials(self) -> None:
        """A token about to expire: resolve again and use a channel with the new one (the
        session lives on the node, not in the channel)."""
        self._credentials.renew()
        if self._channel is not None:
            self._drop_channel()
            self._use_endpoint(self._position)

    def _drop_channel(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    def _open_session(self) -> None:
        """A new session on the current endpoint, else on the next ones in turn (08001 if none answers)."""
        failures = []
        for offset in range(len(self.endpoints)):
            self._use_endpoint(self._position + offset)
            try:
                reply = self._stub.OpenSession(
                    compute_pb2.OpenSessionRequest(client=self._client_name), timeout=self.timeout_s
                )
            except grpc.RpcError as error:
                self._note_open_failure(failures, error)
                continue
            self._session_opened(reply, offset)
            for sql in self.session_sql:
                try:
                    reply = self._stub.Execute(compute_pb2.ExecuteRequest(session_id=self._session_id, sql=sql),
                                               timeout=self.timeout_s + limits.CLIENT_DEADLINE_MARGIN_S)
                except grpc.RpcError as error:
                    raise self._opening_error(error) from None
                _raise_first_error([_result_from_pb(result) for result in reply.results])
            return
        self._drop_channel()
        raise self._no_session(failures)

    def reconnect(self) -> None:
        """Open a fresh session (the old one's open transaction is lost)."""
        self._close_session()
        self._open_session()

    def _session_lost(self) -> None:
        """The node stopped answering: forget the session; the next statement opens one elsewhere."""
        self._forget_session()
        self._drop_channel()

    def execute_script(self, sql: str, params: Sequence | None = None) -> list[Result]:
        """Every statement's result; the failing one has .error set. Raises only OperationalError
        (and TypeError for a parameter of a type that has no SQL literal)."""
        values = _param_values(params)
        if self._closed:
            raise OperationalError(CONNECTION_FAILURE, "connection is closed")
        if self._credentials.due():
            self._renew_credentials()
        if self._lost_transaction:
            if not _is_rollback(sql):
                raise _lost_transaction_error()
            self._open_session()
            return [Result([], [], "ROLLBACK")]
        if self._session_id is None:
            self._open_session()
        for _ in range(2):  # a second time only after 08003: the statement did not run
            status_before = self.transaction_status
            try:
                reply = self._stub.Execute(
                    _request(self._session_id, sql, values),
                    timeout=self.timeout_s + limits.CLIENT_DEADLINE_MARGIN_S,
                )
            except grpc.RpcError as error:
                self._session_lost()
                raise _rpc_error(error, self.address, opening=False, token_sent=self._credentials.token_sent) from None
            results = [_result_from_pb(result) for result in reply.results]
            if _session_gone(results):
                self.transaction_status = status_before
                self._session_lost()
                if self._lost_transaction:
                    raise _lost_transaction_error()
                self._open_session()
                continue
            self.transaction_status = reply.transaction_status or "I"
            return results
        return results

    def execute(self, sql: str, params: Sequence | None = None) -> Result:
        """Run sql (one or more statements); returns the last result, raises DatabaseError on error."""
        return _raise_first_error(self.execute_script(sql, params))

    def copy(self, sql: str, data: bytes = b"") -> tuple[Result, bytes]:
        """One COPY statement: `COPY t FROM STDIN ...` loads `data` (text or CSV bytes, as the
        statement's options say); `COPY t TO STDOUT ...` answers its output. Returns (the result:
        tag `COPY n` or .error set, the output bytes); raises OperationalError as execute_script.
        Input and output are bounded by limits.COPY_BYTES_MAX (one message each way)."""
        if self._closed:
            raise OperationalError(CONNECTION_FAILURE, "connection is closed")
        if self._lost_transaction:
            raise _lost_transaction_error()
        if self._session_id is None:
            self._open_session()
        try:
            reply = self._stub.Copy(compute_pb2.CopyRequest(session_id=self._session_id, sql=sql, data=data),
                                    timeout=self.timeout_s + limits.CLIENT_DEADLINE_MARGIN_S)
        except grpc.RpcError as error:
            self._session_lost()
            raise _rpc_error(error, self.address, opening=False, token_sent=self._credentials.token_sent) from None
        self.transaction_status = reply.transaction_status or "I"
        return _result_from_pb(reply.result), reply.data

    def describe(self, sql: str) -> Description:
        """The parameter types and result columns of one statement, without running it."""
        if self._session_id is None:
            self._open_session()
        try:
            reply = self._stub.Describe(compute_pb2.DescribeRequest(session_id=self._session_id, sql=sql),
                                        timeout=self.timeout_s + limits.CLIENT_DEADLINE_MARGIN_S)
        except grpc.RpcError as error:
            raise _rpc_error(error, self.address, opening=False, token_sent=self._credentials.token_sent) from None
        return _description(reply)

    def fetchall(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        return self.execute(sql, params).rows

    def fetchone(self, sql: str, params: Sequence | None = None) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def begin(self) -> None:
        self.execute("BEGIN")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    def run_transaction(
        self,
        fn: Callable[["Connection"], T],
        attempts_max: int = 20,
        backoff_s: tuple[float, float] = (0.005, 0.5),
        rng: random.Random | None = None,
    ) -> T:
        """BEGIN; fn(conn); COMMIT, retrying the whole of it on 40001 (and on a lost connection
        before COMMIT was sent) with jittered exponential backoff, at most attempts_max times.
        40003 and a connection lost during COMMIT are raised: the outcome is unknown."""
        assert attempts_max >= 1
        backoff = _Backoff(backoff_s[0], backoff_s[1], rng or random.Random())
        for attempt in range(attempts_max):
            committing = False
            try:
                self.begin()
                value = fn(self)
                committing = True
                self.commit()
                return value
            except DatabaseError as error:
                retry = _should_retry(error, committing) and attempt + 1 < attempts_max
                if isinstance(error, OperationalError):
                    if not retry:
                        raise
                    self._reconnect_quietly()
                else:
                    self._rollback_quietly()
                    if not retry:
                        raise
                time.sleep(backoff.delay_s(attempt))
            except BaseException:
                self._rollback_quietly()
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _rollback_quietly(self) -> None:
        if self.transaction_status == "I":
            return
        try:
            self.rollback()
        except DatabaseError:
            pass

    def _reconnect_quietly(self) -> None:
        try:
            self.reconnect()
        except OperationalError:
            pass  # the next attempt reports it

    def _close_session(self) -> None:
        session_id, self._session_id = self._session_id, None
        self._lost_transaction = False
        self.transaction_status = "I"
        if session_id is None or self._stub is None:
            return
        try:
            self._stub.CloseSession(
                compute_pb2.CloseSessionRequest(session_id=session_id), timeout=limits.STATUS_TIMEOUT_S
            )
        except grpc.RpcError:
            pass  # the node reaps idle sessions

    def close(self) -> None:
        self._close_session()
        self._drop_channel()
        self._closed = True

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _session_gone(results: list[Result]) -> bool:
    return len(results) == 1 and results[0].error is not None and results[0].error.sqlstate == CONNECTION_DOES_NOT_EXIST


def _should_retry(error: DatabaseError, committing: bool) -> bool:
    if error.sqlstate == SERIALIZATION_FAILURE:
        return True
    if isinstance(error, OperationalError) and not committing:
        return True  # nothing was committed: the transaction never reached COMMIT
    return False


def connect(host: str = "127.0.0.1", port: int = 7100, endpoints=None, **kw) -> Connection:
    """A Connection to (host, port), or to the first of `endpoints` that answers (see the module docstring)."""
    return Connection(host, port, endpoints=endpoints, **kw)


# --- asyncio connection ------------------------------------------------------------------


class AsyncConnection(_SessionState):
    """The asyncio twin of Connection (endpoints and failover included).
    Create it with `await connect_async(host, port)` or `await connect_async(endpoints=...)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7100, timeout_s: float = 30.0,
                 client_name: str = "python-async", endpoints=None, session_sql: Sequence[str] = (), *,
                 token: str | None = None, ca: str | None = None, data_dir=None, insecure: bool = False,
                 credentials: credentials_mod.ClientCredentials | None = None, server_name: str | None = None):
        super().__init__(host, port, timeout_s, client_name, endpoints, session_sql, token, ca, data_dir, insecure,
                         credentials, server_name)
        self._channel: grpc.aio.Channel | None = None

    async def _use_endpoint(self, position: int) -> None:
        address = self._endpoint_address(position)
        if self._channel is not None and address == self.address:
            return
        await self._drop_channel()
        self._position = position % len(self.endpoints)
        self.address = address
        self._channel = rpc.client_channel(address, self._credentials.current, self._server_name)
        self._stub = compute_pb2_grpc.ComputeStub(self._channel)

    async def _renew_credentials(self) -> None:
        self._credentials.renew()  # as Connection._renew_credentials
        if self._channel is not None:
            await self._drop_channel()
            await self._use_endpoint(self._position)

    async def _drop_channel(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def open(self) -> "AsyncConnection":
        failures = []
        for offset in range(len(self.endpoints)):
            await self._use_endpoint(self._position + offset)
            try:
                reply = await self._stub.OpenSession(
                    compute_pb2.OpenSessionRequest(client=self._client_name), timeout=self.timeout_s
                )
            except grpc.RpcError as error:
                self._note_open_failure(failures, error)
                continue
            self._session_opened(reply, offset)
            for sql in self.session_sql:
                try:
                    reply = await self._stub.Execute(compute_pb2.ExecuteRequest(session_id=self._session_id, sql=sql),
                                                     timeout=self.timeout_s + limits.CLIENT_DEADLINE_MARGIN_S)
                except grpc.RpcError as error:
                    raise self._opening_error(error) from None
                _raise_first_error([_result_from_pb(result) for result in reply.results])
            return self
        await self._drop_channel()
        raise self._no_session(failures)

    async def reconnect(self) -> None:
        await self._close_session()
        await self.open()

    async def _session_lost(self) -> None:
        self._forget_session()
        await self._drop_channel()

    async def execute_script(self, sql: str, params: Sequence | None = None) -> list[Result]:
        values = _param_values(params)
        if self._closed:
            raise OperationalError(CONNECTION_FAILURE, "connection is closed")
        if self._credentials.due():
            await self._renew_credentials()
        if self._lost_transaction:
            if not _is_rollback(sql):
                raise _lost_transaction_error()
            await self.open()
            return [Result([], [], "ROLLBACK")]
        if self._session_id is None:
            await self.open()
        for _ in range(2):  # a second time only after 08003: the statement did not run
            status_before = self.transaction_status
            try:
                reply = await self._stub.Execute(
                    _request(self._session_id, sql, values),
                    timeout=self.timeout_s + limits.CLIENT_DEADLINE_MARGIN_S,
                )
            except grpc.RpcError as error:
                await self._session_lost()
                raise _rpc_error(error, self.address, opening=False, token_sent=self._credentials.token_sent) from None
            results = [_result_from_pb(result) for result in reply.results]
            if _session_gone(results):
                self.transaction_status = status_before
                await self._session_lost()
                if self._lost_transaction:
                    raise _lost_transaction_error()
                await self.open()
                continue
            self.transaction_status = reply.transaction_status or "I"
            return results
        return results

    async def execute(self, sql: str, params: Sequence | None = None) -> Result:
        return _raise_first_error(await self.execute_script(sql, params))

    async def copy(self, sql: str, data: bytes = b"") -> tuple[Result, bytes]:
        """Connection.copy, awaited."""
        if self._closed:
            raise OperationalError(CONNECTION_FAILURE, "connection is closed")
        if self._lost_transaction:
            raise _lost_transaction_error()
        if self._session_id is None:
            await self.open()
        try:
            reply = await self._stub.Copy(compute_pb2.CopyRequest(session_id=self._session_id, sql=sql, data=data),
                                          timeout=self.timeout_s + limits.CLIENT_DEADLINE_MARGIN_S)
        except grpc.RpcError as error:
            await self._session_lost()
            raise _rpc_error(error, self.address, opening=False, token_sent=self._credentials.token_sent) from None
        self.transaction_status = reply.transaction_status or "I"
        return _result_from_pb(reply.result), reply.data

    async def describe(self, sql: str) -> Description:
        """The parameter types and result columns of one statement, without running it."""
        if self._session_id is None:
            await self.open()
        try:
            reply = await self._stub.Describe(compute_pb2.DescribeRequest(session_id=self._session_id, sql=sql),
                                              timeout=self.timeout_s + limits.CLIENT_DEADLINE_MARGIN_S)
        except grpc.RpcError as error:
            raise _rpc_error(error, self.address, opening=False, token_sent=self._credentials.token_sent) from None
        return _description(reply)

    async def fetchall(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        return (await self.execute(sql, params)).rows

    async def fetchone(self, sql: str, params: Sequence | None = None) -> tuple | None:
        return (await self.execute(sql, params)).fetchone()

    async def begin(self) -> None:
        await self.execute("BEGIN")

    async def commit(self) -> None:
        await self.execute("COMMIT")

    async def rollback(self) -> None:
        await self.execute("ROLLBACK")

    async def run_transaction(
        self,
        fn: Callable[["AsyncConnection"], Awaitable[T]],
        attempts_max: int = 20,
        backoff_s: tuple[float, float] = (0.005, 0.5),
        rng: random.Random | None = None,
    ) -> T:
        """As Connection.run_transaction; fn is a coroutine function."""
        assert attempts_max >= 1
        backoff = _Backoff(backoff_s[0], backoff_s[1], rng or random.Random())
        for attempt in range(attempts_max):
            committing = False
            try:
                await self.begin()
                value = await fn(self)
                committing = True
                await self.commit()
                return value
            except DatabaseError as error:
                retry = _should_retry(error, committing) and attempt + 1 < attempts_max
                if isinstance(error, OperationalError):
                    if not retry:
                        raise
                    try:
                        await self.reconnect()
                    except OperationalError:
                        pass
                else:
                    await self._rollback_quietly()
                    if not retry:
                        raise
                await asyncio.sleep(backoff.delay_s(attempt))
            except BaseException:
                await self._rollback_quietly()
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _rollback_quietly(self) -> None:
        if self.transaction_status == "I":
            return
        try:
            await self.rollback()
        except DatabaseError:
            pass

    async def _close_session(self) -> None:
        session_id, self._session_id = self._session_id, None
        self._lost_transaction = False
        self.transaction_status = "I"
        if session_id is None or self._stub is None:
            return
        try:
            await self._stub.CloseSession(
                compute_pb2.CloseSessionRequest(session_id=session_id), timeout=limits.STATUS_TIMEOUT_S
            )
        except grpc.RpcError:
            pass

    async def close(self) -> None:
        await self._close_session()
        await self._drop_channel()
        self._closed = True

    async def __aenter__(self) -> "AsyncConnection":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def connect_async(host: str = "127.0.0.1", port: int = 7100, endpoints=None, **kw) -> AsyncConnection:
    connection = AsyncConnection(host, port, endpoints=endpoints, **kw)
    try:
        return await connection.open()
    except BaseException:
        await connection._drop_channel()
        raise
