"""PostgreSQL v3 protocol messages: bytes in -> frontend messages out, backend messages -> bytes.

Theory of operation
-------------------
Pure code, no I/O (h11's model): `Frontend` buffers the bytes a client sends and hands back one
decoded message at a time, checking that it is legal in the connection's phase:

    STARTUP         untyped packets: SSLRequest ('S' and TLS, or 'N') / GSSENCRequest ('N'), still STARTUP,
                    CancelRequest (-> CLOSED), StartupMessage (-> AUTHENTICATING)
    AUTHENTICATING  only 'p' (SASL / password messages) and Terminate; the shell calls
                    `authenticated()` when the exchange succeeds (-> READY)
    READY           Query, Parse, Bind, Describe, Execute, Sync, Flush, Close, Terminate, and
                    CopyData / CopyDone / CopyFail (the shell decides whether a COPY is running)
    CLOSED          nothing more is read

Anything else -- a length below 4 or above the bound, a string without its NUL, a count that
runs past the end, bytes left over, an unknown message type, a message of the wrong phase --
raises ProtocolViolation (SQLSTATE 08P01): the shell answers FATAL and closes that connection.
Buffering is bounded: a header announcing more than `message_bytes_max` is refused before
its body is read.

The encoders at the bottom build the backend messages the server sends.
"""
from __future__ import annotations

import dataclasses
import enum
import struct

from quorumdb import errors

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class ProtocolViolation(Exception):
    def __init__(self, message: str, sqlstate: str = errors.PROTOCOL_VIOLATION):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


class Phase(enum.Enum):
    STARTUP = "startup"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


# --- frontend messages ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SSLRequest:
    pass


@dataclasses.dataclass(frozen=True)
class GSSENCRequest:
    pass


@dataclasses.dataclass(frozen=True)
class CancelRequest:
    process_id: int
    secret_key: int


@dataclasses.dataclass(frozen=True)
class StartupMessage:
    protocol: int
    parameters: dict[str, str]


@dataclasses.dataclass(frozen=True)
class PasswordData:
    """A 'p' message: SASLInitialResponse, SASLResponse or PasswordMessage (decoded by the auth step)."""
    payload: bytes


@dataclasses.dataclass(frozen=True)
class Query:
    sql: str


@dataclasses.dataclass(frozen=True)
class Parse:
    name: str
    sql: str
    param_oids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Describe:
    kind: str  # 'S' statement or 'P' portal
    name: str


@dataclasses.dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int  # 0 = all


@dataclasses.dataclass(frozen=True)
class Close:
    kind: str  # 'S' or 'P'
    name: str


@dataclasses.dataclass(frozen=True)
class Sync:
    pass


@dataclasses.dataclass(frozen=True)
class Flush:
    pass


@dataclasses.dataclass(frozen=True)
class Terminate:
    pass


@dataclasses.dataclass(frozen=True)
class CopyData:
    data: bytes


@dataclasses.dataclass(frozen=True)
class CopyDone:
    pass


@dataclasses.dataclass(frozen=True)
class CopyFail:
    message: str


@dataclasses.dataclass(frozen=True)
class Unsupported:
    """A well-formed message the server does not implement (FunctionCall): ERROR, not FATAL."""
    type_code: str


FrontendMessage = (SSLRequest | GSSENCRequest | CancelRequest | StartupMessage | PasswordData | Query | Parse
                   | Bind | Describe | Execute | Close | Sync | Flush | Terminate | CopyData | CopyDone | CopyFail
                   | Unsupported)


class _Cursor:
    """Reads fields from one message payload; every overrun is a ProtocolViolation."""

    def __init__(self, data: bytes, what: str):
        self.data = data
        self.position = 0
        self.what = what

    def _take(self, size: int) -> bytes:
        if size < 0 or self.position + size > len(self.data):
            raise ProtocolViolation(f"{self.what} message is truncated")
        chunk = self.data[self.position:self.position + size]
        self.position += size
        return chunk

    def int16(self) -> int:
        return struct.unpack("!h", self._take(2))[0]

    def uint16(self) -> int:
        return struct.unpack("!H", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack("!i", self._take(4))[0]

    def uint32(self) -> int:
        return struct.unpack("!I", self._take(4))[0]

    def byte(self) -> str:
        return chr(self._take(1)[0])

    def bytes(self, size: int) -> bytes:
        return self._take(size)

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.position)
        if end < 0:
            raise ProtocolViolation(f"{self.what} message has a string without its terminator")
        raw = self.data[self.position:end]
        self.position = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation(f"invalid UTF-8 in {self.what} message",
                                    errors.CHARACTER_NOT_IN_REPERTOIRE) from None

    def rest(self) -> bytes:
        chunk = self.data[self.position:]
        self.position = len(self.data)
        return chunk

    def end(self) -> None:
        if self.position != len(self.data):
            raise ProtocolViolation(f"{self.what} message has {len(self.data) - self.position} bytes too many")


_READY_TYPES = {"Q", "P", "B", "D", "E", "C", "S", "H", "X", "d", "c", "f", "F"}


class Frontend:
    """The client side of one connection as the server sees it: bytes in, messages out."""

    def __init__(self, message_bytes_max: int, startup_bytes_max: int):
        assert startup_bytes_max <= message_bytes_max
        self._buffer = bytearray()
        self.phase = Phase.STARTUP
        self.message_bytes_max = message_bytes_max
        self.startup_bytes_max = startup_bytes_max

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        assert self.phase is not Phase.CLOSED
        self._buffer += data

    def authenticated(self) -> None:
        assert self.phase is Phase.AUTHENTICATING
        self.phase = Phase.READY

    def close(self) -> None:
        self.phase = Phase.CLOSED

    def next_message(self) -> FrontendMessage | None:
        """The next complete message, or None until more bytes arrive."""
        if self.phase is Phase.CLOSED:
            return None
        try:
            if self.phase is Phase.STARTUP:
                return self._next_startup()
            return self._next_typed()
        except ProtocolViolation:
            self.phase = Phase.CLOSED
            raise

    # --- startup packets: int32 length, int32 code, body -------------------------------
    def _next_startup(self) -> FrontendMessage | None:
        if len(self._buffer) < 4:
            return None
        length = struct.unpack("!i", self._buffer[:4])[0]
        if length < 8 or length > self.startup_bytes_max:
            raise ProtocolViolation(f"invalid length of startup packet ({length})")
        if len(self._buffer) < length:
            return None
        packet = bytes(self._buffer[4:length])
        del self._buffer[:length]
        cursor = _Cursor(packet, "startup")
        code = cursor.uint32()
        if code == SSL_REQUEST_CODE:
            cursor.end()
            return SSLRequest()
        if code == GSSENC_REQUEST_CODE:
            cursor.end()
            return GSSENCRequest()
        if code == CANCEL_REQUEST_CODE:
            message = CancelRequest(cursor.int32(), cursor.int32())
            cursor.end()
            self.phase = Phase.CLOSED
            return message
        if code >> 16 != 3:
            raise ProtocolViolation(
                f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: server supports 3.0",
                errors.FEATURE_NOT_SUPPORTED)
        parameters: dict[str, str] = {}
        while True:
            name = cursor.cstring()
            if name == "":
                break
            if name in parameters:
                raise ProtocolViolation(f"startup parameter {name!r} given twice")
            parameters[name] = cursor.cstring()
        cursor.end()
        self.phase = Phase.AUTHENTICATING
        return StartupMessage(code, parameters)

    # --- typed messages: byte type, int32 length (including itself), body ---------------
    def _next_typed(self) -> FrontendMessage | None:
        if len(self._buffer) < 5:
            if self._buffer and chr(self._buffer[0]) not in _READY_TYPES | {"p"}:
                raise ProtocolViolation(f"invalid frontend message type {self._buffer[0]}")
            return None
        type_code = chr(self._buffer[0])
        length = struct.unpack("!i", self._buffer[1:5])[0]
        if length < 4 or length > self.message_bytes_max:
            raise ProtocolViolation(f"invalid message length {length} for message type {type_code!r}"
                                    + (f" (the limit is {self.message_bytes_max} bytes)"
                                       if length > self.message_bytes_max else ""))
        allowed = _READY_TYPES if self.phase is Phase.READY else {"p", "X"}
        if type_code not in allowed:
            raise ProtocolViolation(f"unexpected message type {type_code!r} during {self.phase.value}")
        if len(self._buffer) < 1 + length:
            return None
        body = bytes(self._buffer[5:1 + length])
        del self._buffer[:1 + length]
        message = _decode(type_code, body)
        if isinstance(message, Terminate):
            self.phase = Phase.CLOSED
        return message


def _decode(type_code: str, body: bytes) -> FrontendMessage:
    match type_code:
        case "p":
            return PasswordData(body)
        case "Q":
            cursor = _Cursor(body, "Query")
            message = Query(cursor.cstring())
        case "P":
            cursor = _Cursor(body, "Parse")
            name, sql = cursor.cstring(), cursor.cstring()
            count = cursor.uint16()
            message = Parse(name, sql, tuple(cursor.uint32() for _ in range(count)))
        case "B":
            cursor = _Cursor(body, "Bind")
            portal, statement = cursor.cstring(), cursor.cstring()
            param_formats = tuple(cursor.int16() for _ in range(cursor.uint16()))
            params: list[bytes | None] = []
            for _ in range(cursor.uint16()):
                size = cursor.int32()
                if size < -1:
                    raise ProtocolViolation(f"invalid parameter length {size} in Bind message")
                params.append(None if size == -1 else cursor.bytes(size))
            result_formats = tuple(cursor.int16() for _ in range(cursor.uint16()))
            message = Bind(portal, statement, param_formats, tuple(params), result_formats)
        case "D" | "C":
            cursor = _Cursor(body, "Describe" if type_code == "D" else "Close")
            kind = cursor.byte()
            if kind not in ("S", "P"):
                raise ProtocolViolation(f"invalid {cursor.what} message subtype {ord(kind)}")
            name = cursor.cstring()
            message = Describe(kind, name) if type_code == "D" else Close(kind, name)
        case "E":
            cursor = _Cursor(body, "Execute")
            message = Execute(cursor.cstring(), cursor.int32())
        case "S" | "H" | "X":
            cursor = _Cursor(body, {"S": "Sync", "H": "Flush", "X": "Terminate"}[type_code])
            message = {"S": Sync(), "H": Flush(), "X": Terminate()}[type_code]
        case "d":
            return CopyData(body)
        case "c":
            cursor = _Cursor(body, "CopyDone")
            message = CopyDone()
        case "f":
            cursor = _Cursor(body, "CopyFail")
            message = CopyFail(cursor.cstring())
        case "F":
            return Unsupported(type_code)
        case _:
            raise AssertionError(type_code)
    cursor.end()
    return message


# --- backend messages -----------------------------------------------------------------------
def _message(type_code: bytes, payload: bytes = b"") -> bytes:
    return type_code + struct.pack("!I", len(payload) + 4) + payload


def _cstring(text: str) -> bytes:
    encoded = text.encode("utf-8")
    assert b"\0" not in encoded, "backend strings never hold NUL"
    return encoded + b"\0"


def authentication_ok() -> bytes:
    return _message(b"R", struct.pack("!I", 0))


def authentication_cleartext_password() -> bytes:
    return _message(b"R", struct.pack("!I", 3))


def authentication_sasl(mechanisms: list[str]) -> bytes:
    return _message(b"R", struct.pack("!I", 10) + b"".join(_cstring(m) for m in mechanisms) + b"\0")


def authentication_sasl_continue(data: bytes) -> bytes:
    return _message(b"R", struct.pack("!I", 11) + data)


def authentication_sasl_final(data: bytes) -> bytes:
    return _message(b"R", struct.pack("!I", 12) + data)


def parameter_status(name: str, value: str) -> bytes:
    return _message(b"S", _cstring(name) + _cstring(value))


def backend_key_data(process_id: int, secret_key: int) -> bytes:
    return _message(b"K", struct.pack("!ii", process_id, secret_key))


def negotiate_protocol_version(newest_minor: int, unrecognized: list[str]) -> bytes:
    return _message(b"v", struct.pack("!iI", newest_minor, len(unrecognized))
                    + b"".join(_cstring(name) for name in unrecognized))


def ready_for_query(status: str) -> bytes:
    assert status in ("I", "T", "E"), status
    return _message(b"Z", status.encode())


@dataclasses.dataclass(frozen=True)
class FieldDescription:
    name: str
    type_oid: int
    type_size: int
    type_modifier: int = -1
    format_code: int = 0
    table_oid: int = 0
    column_number: int = 0


def row_description(fields: list[FieldDescription]) -> bytes:
    parts = [struct.pack("!H", len(fields))]
    for field in fields:
        parts.append(_cstring(field.name) + struct.pack("!IhIhih", field.table_oid, field.column_number,
                                                        field.type_oid, field.type_size, field.type_modifier,
                                                        field.format_code))
    return _message(b"T", b"".join(parts))


def data_row(values: list[bytes | None]) -> bytes:
    parts = [struct.pack("!H", len(values))]
    for value in values:
        if value is None:
            parts.append(struct.pack("!i", -1))
        else:
            parts.append(struct.pack("!i", len(value)) + value)
    return _message(b"D", b"".join(parts))


def command_complete(tag: str) -> bytes:
    return _message(b"C", _cstring(tag))


def empty_query_response() -> bytes:
    return _message(b"I")


def parse_complete() -> bytes:
    return _message(b"1")


def bind_complete() -> bytes:
    return _message(b"2")


def close_complete() -> bytes:
    return _message(b"3")


def no_data() -> bytes:
    return _message(b"n")


def portal_suspended() -> bytes:
    return _message(b"s")


def _copy_response(type_code: bytes, column_count: int) -> bytes:
    # Overall format 0 (text) and every column text: the only formats served.
    return _message(type_code, struct.pack("!bH", 0, column_count) + struct.pack("!h", 0) * column_count)


def copy_in_response(column_count: int) -> bytes:
    return _copy_response(b"G", column_count)


def copy_out_response(column_count: int) -> bytes:
    return _copy_response(b"H", column_count)


def copy_data(data: bytes) -> bytes:
    return _message(b"d", data)


def copy_done() -> bytes:
    return _message(b"c")


def parameter_description(oids: list[int]) -> bytes:
    return _message(b"t", struct.pack("!H", len(oids)) + b"".join(struct.pack("!I", oid) for oid in oids))


# ErrorResponse / NoticeResponse field codes.
FIELD_SEVERITY = "S"
FIELD_SEVERITY_NONLOCALIZED = "V"
FIELD_CODE = "C"
FIELD_MESSAGE = "M"
FIELD_DETAIL = "D"
FIELD_HINT = "H"
FIELD_CONTEXT = "W"


def _fields(severity: str, sqlstate: str, message: str, detail: str = "", hint: str = "", context: str = "") -> bytes:
    assert len(sqlstate) == 5, sqlstate
    parts = [(FIELD_SEVERITY, severity), (FIELD_SEVERITY_NONLOCALIZED, severity), (FIELD_CODE, sqlstate),
             (FIELD_MESSAGE, message)]
    if detail:
        parts.append((FIELD_DETAIL, detail))
    if hint:
        parts.append((FIELD_HINT, hint))
    if context:
        parts.append((FIELD_CONTEXT, context))
    return b"".join(code.encode() + _cstring(value.replace("\0", "")) for code, value in parts) + b"\0"


def error_response(sqlstate: str, message: str, detail: str = "", hint: str = "", severity: str = "ERROR",
                   context: str = "") -> bytes:
    assert severity in ("ERROR", "FATAL", "PANIC")
    return _message(b"E", _fields(severity, sqlstate, message, detail, hint, context))


def notice_response(sqlstate: str, message: str, detail: str = "", hint: str = "",
                    severity: str = "NOTICE") -> bytes:
    assert severity in ("WARNING", "NOTICE", "DEBUG", "INFO", "LOG")
    return _message(b"N", _fields(severity, sqlstate, message, detail, hint))


SSL_NOT_SUPPORTED = b"N"
SSL_SUPPORTED = b"S"
