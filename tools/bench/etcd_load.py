"""Load generator for etcd's v3 JSON gateway: N clients doing single-key puts over raw HTTP/1.1.

Theory of operation: each client owns one keep-alive TCP connection to one member (clients are
spread round-robin over the members; a follower forwards the put to the leader, as in etcd's own
`benchmark put --endpoints=...`), sends `POST /v3/kv/put` with a base64 key and value, waits for
the whole response and records the round trip. One put in flight per client, so N clients = N
outstanding requests, as with `quorumdb bench --clients N` and `pgbench -c N`. A warm-up period
is run but not counted. Request building and response-head parsing are pure and unit-tested.
"""
from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tools.bench import report

REQUEST_TIMEOUT_S = 5.0  # one put; etcd's own request timeout is 5 s + election time, far above normal
CONNECT_TIMEOUT_S = 2.0  # 127.0.0.1: a connect that takes longer means the member is down
RESPONSE_HEAD_MAX_BYTES = 16_384  # etcd's gateway answers with a few hundred bytes of headers
RESPONSE_BODY_MAX_BYTES = 1_048_576  # a put reply is ~200 bytes; anything this large is a bug
LATENCY_SAMPLES_MAX = 2_000_000  # memory bound: ~16 MB of floats, ~8 min at 4,000 puts/s
ERROR_BACKOFF_S = 0.05  # pause after a failed put before the client reconnects
KEY_SPACE = 10_000  # distinct keys written, like a table of 10,000 rows
VALUE_BYTES = 16


def put_body(key: str, value: bytes) -> bytes:
    return json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value).decode()}).encode()


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode("ascii") + body


@dataclass(frozen=True)
class ResponseHead:
    status: int
    content_length: int | None  # None: no Content-Length header
    chunked: bool
    close: bool


def parse_response_head(head: bytes) -> ResponseHead:
    """The status line and the headers that frame the body. Raises ValueError on malformed input."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    content_length = None
    chunked = False
    close = False
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            content_length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            close = value.lower() == "close"
    return ResponseHead(status, content_length, chunked, close)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head_bytes = await reader.readuntil(b"\r\n\r\n")
    if len(head_bytes) > RESPONSE_HEAD_MAX_BYTES:
        raise ValueError("response head too large")
    head = parse_response_head(head_bytes[:-4])
    if head.chunked:
        body = bytearray()
        for _ in range(RESPONSE_BODY_MAX_BYTES):  # bounded: at least one byte per chunk
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()  # the empty trailer line
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(body) > RESPONSE_BODY_MAX_BYTES:
                raise ValueError("response body too large")
        return head.status, bytes(body), head.close
    if head.content_length is None:
        raise ValueError("response without Content-Length or chunked encoding")
    if head.content_length > RESPONSE_BODY_MAX_BYTES:
        raise ValueError("response body too large")
    return head.status, await reader.readexactly(head.content_length), head.close


@dataclass
class _Tally:
    latencies_s: list[float] = field(default_factory=list)
    completed: int = 0
    completed_all: int = 0  # warm-up included: what the CPU used during the whole run is divided by
    errors: int = 0
    first_error: str | None = None


async def _client(endpoint: tuple[str, int], seed: int, measure_from: float, end_at: float, tally: _Tally) -> None:
    host, port = endpoint
    rng = random.Random(seed)
    writer = None
    try:
        while time.monotonic() < end_at:
            try:
                if writer is None:
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        reader, writer = await asyncio.open_connection(host, port)
                body = put_body(f"bench-{rng.randrange(KEY_SPACE):05d}", rng.randbytes(VALUE_BYTES))
                request = build_request(host, port, "/v3/kv/put", body)
                started = time.monotonic()
                writer.write(request)
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, reply, close = await _read_response(reader)
                finished = time.monotonic()
                if status != 200 or b'"header"' not in reply:
                    raise ValueError(f"HTTP {status}: {reply[:200]!r}")
                tally.completed_all += 1
                if started >= measure_from and finished <= end_at:
                    tally.completed += 1
                    if len(tally.latencies_s) < LATENCY_SAMPLES_MAX:
                        tally.latencies_s.append(finished - started)
                if close:
                    writer.close()
                    writer = None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError) as error:
                if time.monotonic() >= measure_from:
                    tally.errors += 1
                    tally.first_error = tally.first_error or f"{type(error).__name__}: {error}"
                if writer is not None:
                    writer.close()
                    writer = None
                await asyncio.sleep(ERROR_BACKOFF_S)
    finally:
        if writer is not None:
            writer.close()


async def run_puts(endpoints: list[tuple[str, int]], clients: int, duration_s: float, warmup_s: float,
                   seed: int = 1) -> dict[str, Any]:
    """Run `clients` put loops for warmup_s + duration_s; figures of the last duration_s."""
    assert clients >= 1
    assert endpoints
    assert duration_s > 0
    tally = _Tally()
    measure_from = time.monotonic() + warmup_s
    end_at = measure_from + duration_s
    tasks = [asyncio.create_task(_client(endpoints[i % len(endpoints)], seed * 1000 + i, measure_from, end_at, tally))
             for i in range(clients)]
    # Every client stops by end_at + one request timeout; the extra second is slack for the loop.
    done, pending = await asyncio.wait(tasks, timeout=warmup_s + duration_s + REQUEST_TIMEOUT_S + CONNECT_TIMEOUT_S + 1)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()  # re-raise a bug in the client loop
    figures = report.summarize(tally.latencies_s, tally.completed, duration_s, tally.errors)
    figures["first_error"] = tally.first_error
    figures["completed_all"] = tally.completed_all
    return figures


def measure_puts(endpoints: list[tuple[str, int]], clients: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """Blocking wrapper: runs the load on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop  # noqa: PLC0415  (optional: a faster client loop, so the generator is not the bottleneck)
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    cpu_before = time.process_time()
    figures = runner(run_puts(endpoints, clients, duration_s, warmup_s))
    # This process's CPU during the run (warm-up included), per put: the load generator's own cost.
    cpu_s = time.process_time() - cpu_before
    figures["loadgen_cpu_s"] = round(cpu_s, 3)
    figures["loadgen_cpu_ms_per_op"] = (round(1000.0 * cpu_s / figures["completed_all"], 4)
                                        if figures["completed_all"] else None)
    return figures
