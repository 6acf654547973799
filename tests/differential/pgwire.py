"""A minimal PostgreSQL client: the simple-query protocol over TCP, trust authentication.

Enough for differential tests (no dependency on psycopg): every value comes back as
PostgreSQL's own text output, with the command tag and, for errors, the SQLSTATE,
message, detail and hint. One statement per `query` call. Every socket operation has
a timeout.
"""
from __future__ import annotations

import dataclasses
import socket
import struct

PROTOCOL_VERSION = 196608  # 3.0
SOCKET_TIMEOUT_S = 30.0
MESSAGE_BYTES_MAX = 256 * 1024 * 1024


@dataclasses.dataclass
class PgResult:
    columns: list[tuple[str, int]]          # (name, type oid)
    rows: list[tuple[str | None, ...]]      # text values, None for NULL
    command_tag: str
    error: dict | None = None               # {'C': sqlstate, 'M': message, 'D': detail, 'H': hint}

    @property
    def sqlstate(self) -> str | None:
        return self.error.get("C") if self.error else None


class PgConnection:
    def __init__(self, host: str, port: int, user: str = "postgres", database: str = "postgres"):
        self._socket = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        self._socket.settimeout(SOCKET_TIMEOUT_S)
        self._buffer = b""
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in (
            ("user", user), ("database", database), ("client_encoding", "UTF8"), ("TimeZone", "UTC"),
            ("DateStyle", "ISO, MDY"), ("extra_float_digits", "1"), ("lc_messages", "C")))
        body = struct.pack("!I", PROTOCOL_VERSION) + params + b"\0"
        self._socket.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            kind, payload = self._read_message()
            if kind == b"R":
                (code,) = struct.unpack("!I", payload[:4])
                if code != 0:
                    raise ConnectionError(f"server asks for authentication method {code}; use trust")
            elif kind == b"E":
                raise ConnectionError(f"startup failed: {_error_fields(payload)}")
            elif kind == b"Z":
                return

    def close(self) -> None:
        try:
            self._socket.sendall(b"X" + struct.pack("!I", 4))
        except OSError:
            pass
        self._socket.close()

    def query(self, sql: str) -> PgResult:
        data = sql.encode("utf-8") + b"\0"
        self._socket.sendall(b"Q" + struct.pack("!I", len(data) + 4) + data)
        result = PgResult([], [], "")
        while True:
            kind, payload = self._read_message()
            if kind == b"T":
                result.columns = _row_description(payload)
            elif kind == b"D":
                result.rows.append(_data_row(payload))
            elif kind == b"C":
                result.command_tag = payload.rstrip(b"\0").decode()
            elif kind == b"E":
                result.error = _error_fields(payload)
            elif kind == b"I":
                result.command_tag = ""
            elif kind == b"Z":
                return result
            # N (notice), S (parameter status) and others are ignored.

    def _read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self._socket.recv(max(65536, count - len(self._buffer)))
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _read_message(self) -> tuple[bytes, bytes]:
        header = self._read_exact(5)
        kind = header[:1]
        (length,) = struct.unpack("!I", header[1:])
        assert 4 <= length <= MESSAGE_BYTES_MAX, length
        return kind, self._read_exact(length - 4)


def _row_description(payload: bytes) -> list[tuple[str, int]]:
    (count,) = struct.unpack("!H", payload[:2])
    position = 2
    columns = []
    for _ in range(count):
        end = payload.index(b"\0", position)
        name = payload[position:end].decode()
        position = end + 1
        _, _, type_oid, _, _, _ = struct.unpack("!IHIhiH", payload[position:position + 18])
        position += 18
        columns.append((name, type_oid))
    return columns


def _data_row(payload: bytes) -> tuple:
    (count,) = struct.unpack("!H", payload[:2])
    position = 2
    values = []
    for _ in range(count):
        (length,) = struct.unpack("!i", payload[position:position + 4])
        position += 4
        if length < 0:
            values.append(None)
        else:
            values.append(payload[position:position + length].decode("utf-8"))
            position += length
    return tuple(values)


def _error_fields(payload: bytes) -> dict:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields
