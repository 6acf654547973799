"""A seeded fuzz of the gRPC API of every node role, and of the supervisor: every node keeps serving.

One cluster (TLS on) for the module. Against every node (journal, adjudicator, storage, compute),
with the tools' credentials (the admin certificate on node ports, a token on compute ports), and
some calls with none or wrong ones:

- malformed protobuf as the raw request of every method: random bytes, truncated valid messages,
  valid field numbers with the wrong wire type, huge and overlong varints, deeply nested garbage;
- a message larger than the servers' receive limit (rpc.OPTIONS) -> RESOURCE_EXHAUSTED;
- unknown methods and services -> UNIMPLEMENTED;
- every streaming method opened and abandoned (nothing sent, garbage sent, an empty message sent;
  then cancelled or the channel dropped), and HALF_OPEN_STREAMS of them open at once.

The admin certificate may call a few methods that act (an adjudicator's TakeOver, Backtrack,
Switchover, Promote): random bytes that happen to parse would really act, so those get only
payloads that cannot parse with the admin certificate, and the parseable ones with a compute
node's certificate (refused). Writes peers make (Append, Commit, ReportScl, ...) are fuzzed
through the same refusal, never with the writing role's certificate: a peer is trusted to send
well-formed entries, the point here is what a caller who may not write can do.

A unary request that does not parse is refused by the guard after the authorization
(INVALID_ARGUMENT), never logged: the node logs hold no parse error afterwards. No handler raises
(UNKNOWN), and a compute node's certificate is refused every journal Append and Fence.

Afterwards every node process is the same PID, answers Status ok, and the database commits
through the Python client and reads the row back from another compute node.

The seed is printed (and in every assertion message); QUORUMDB_GRPC_FUZZ_SEED replays one.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import re
import shutil
import time

import grpc
import pytest
from google.protobuf import descriptor as descriptor_mod
from google.protobuf import message as message_mod
from google.protobuf import message_factory

from quorumdb import certs, client, rpc, tokens
from quorumdb import config as config_mod
from quorumdb.credentials import ClientCredentials
from quorumdb.pb import (adjudicator_pb2, common_pb2, compute_pb2, compute_pb2_grpc, journal_pb2, storage_pb2,
                         supervisor_pb2)
from tests.util import admin_credentials, make_config, node_credentials
from tools import supervisor as supervisor_mod
from tools.launcher import STUBS, Cluster

pytestmark = pytest.mark.cluster

SEED = int(os.environ.get("QUORUMDB_GRPC_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
CALL_TIMEOUT_S = 5.0
STREAM_LINGER_S = 0.2  # how long an abandoned stream stays open before it is dropped
FUZZ_BUDGET_S = 150.0  # the whole fuzz of the cluster, bounded
SUPERVISOR_BUDGET_S = 60.0
HEALTHY_WAIT_S = 30.0
CONCURRENCY = 48
READY_TIMEOUT_S = 90.0
HALF_OPEN_STREAMS = 200
RANDOM_PAYLOADS = 10  # random-byte requests per method (plus the structured ones)
VALID_PAYLOADS = 4  # valid requests with random field values per method
SESSION_CALLS = 40  # Execute/Describe/Copy with random SQL and parameters in an open session, per compute node
SQL = ("SELECT $1", "SELECT $1::int8 + $2::int8", "SELECT $1::text || $2", "SELECT $1::float8 * 2",
       "SELECT $1::bytea", "SELECT $1::bool", "SELECT $1::numeric", "SELECT $1::date", "SELECT $1::timestamptz",
       "INSERT INTO fuzz_session VALUES ($1, $2)", "SELECT * FROM fuzz_session WHERE k = $1",
       "COPY fuzz_session FROM STDIN", "COPY fuzz_session FROM STDIN WITH (FORMAT csv)",
       "COPY (SELECT * FROM fuzz_session) TO STDOUT", "BEGIN", "COMMIT", "ROLLBACK", "SELECT 1; SELECT $1")
OVERSIZED = dict(rpc.OPTIONS)["grpc.max_receive_message_length"] + 1024

SERVICES = {
    "journal": journal_pb2.DESCRIPTOR.services_by_name["Journal"],
    "adjudicator": adjudicator_pb2.DESCRIPTOR.services_by_name["Adjudicator"],
    "storage": storage_pb2.DESCRIPTOR.services_by_name["Storage"],
    "compute": compute_pb2.DESCRIPTOR.services_by_name["Compute"],
    "supervisor": supervisor_pb2.DESCRIPTOR.services_by_name["Supervisor"],
}
# Methods the admin certificate may call that change the cluster: only unparseable bytes with it.
ACTING_ADMIN_METHODS = frozenset({"/quorumdb.Adjudicator/TakeOver", "/quorumdb.Adjudicator/Backtrack",
                                  "/quorumdb.Adjudicator/Switchover", "/quorumdb.Adjudicator/Promote"})
APPEND_STREAM = "/quorumdb.Journal/AppendStream"
# Stream methods and the certificate of the role that opens them (zero or garbage messages only).
STREAM_OPENER = {
    "/quorumdb.Journal/AppendStream": "adjudicator-az1",
    "/quorumdb.Adjudicator/CommitStream": "compute-az1",
    "/quorumdb.Storage/ReadStream": "compute-az1",
}


@pytest.fixture(autouse=True)
def say_seed():
    print(f"gRPC fuzz seed {SEED} (QUORUMDB_GRPC_FUZZ_SEED={SEED} replays it)")
    yield


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """The module's cluster, TLS on whatever the suite's shared clusters run with."""
    launched = Cluster(make_config(tmp_path_factory.mktemp("fuzz"), insecure=False))
    try:
        launched.start()
        launched.wait_ready(timeout_s=READY_TIMEOUT_S, healthy=True)
        yield launched
    finally:
        launched.stop_all()


def why(what: str) -> str:
    return f"{what} [seed {SEED}: QUORUMDB_GRPC_FUZZ_SEED={SEED}]"


# --- payloads -------------------------------------------------------------------------------------
def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def request_class(method: descriptor_mod.MethodDescriptor):
    return message_factory.GetMessageClass(method.input_type)


def random_message(rng: random.Random, descriptor, depth: int = 0):
    """A valid message of `descriptor` with random values in some of its fields."""
    message = message_factory.GetMessageClass(descriptor)()
    F = descriptor_mod.FieldDescriptor
    for field in descriptor.fields:
        if rng.random() < 0.3:
            continue
        count = rng.randint(1, 3) if field.is_repeated else 1
        for _ in range(count):
            if field.type == F.TYPE_MESSAGE:
                if depth >= 3 or field.message_type.GetOptions().map_entry:
                    continue
                value = random_message(rng, field.message_type, depth + 1)
                if field.is_repeated:
                    getattr(message, field.name).append(value)
                else:
                    getattr(message, field.name).CopyFrom(value)
                continue
            if field.type == F.TYPE_STRING:
                value = "".join(chr(rng.choice((rng.randint(32, 126), rng.randint(0x80, 0x2FFF)))) for _ in
                                range(rng.randint(0, 40)))
            elif field.type == F.TYPE_BYTES:
                value = rng.randbytes(rng.randint(0, 64))
            elif field.type == F.TYPE_BOOL:
                value = rng.random() < 0.5
            elif field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
                value = rng.choice((0.0, -1.5, 1e300 if field.type == F.TYPE_DOUBLE else 1e30, rng.random()))
            elif field.type == F.TYPE_ENUM:
                value = rng.choice(field.enum_type.values).number
            elif field.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
                value = rng.choice((0, 1, 2**63, 2**64 - 1, rng.getrandbits(64)))
            elif field.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
                value = rng.choice((0, 1, 2**32 - 1, rng.getrandbits(32)))
            elif field.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
                value = rng.choice((0, -1, -2**63, 2**63 - 1, rng.getrandbits(63)))
            else:  # int32, sint32, sfixed32
                value = rng.choice((0, -1, -2**31, 2**31 - 1, rng.getrandbits(31)))
            if field.is_repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
    return message


def wrong_types(rng: random.Random, descriptor) -> bytes:
    """Each field number of `descriptor` with a wire type its type does not have."""
    F = descriptor_mod.FieldDescriptor
    out = bytearray()
    for field in descriptor.fields:
        length_delimited = field.type in (F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE)
        choice = rng.randrange(3)
        if length_delimited and choice == 0:
            out += tag(field.number, 0) + varint(rng.getrandbits(64))
        elif length_delimited and choice == 1:
            out += tag(field.number, 1) + rng.randbytes(8)
        elif length_delimited:
            out += tag(field.number, 5) + rng.randbytes(4)
        else:
            blob = rng.randbytes(rng.randint(0, 32))
            out += tag(field.number, 2) + varint(len(blob)) + blob
    return bytes(out) or tag(1, 2) + b"\x03abc"


def huge_varints(rng: random.Random, descriptor) -> list[bytes]:
    number = descriptor.fields[0].number if descriptor.fields else 1
    return [
        tag(number, 0) + b"\xff" * 9 + b"\x01",          # 2**64 - 1
        tag(number, 0) + b"\xff" * 10 + b"\x01",         # overlong: 11 bytes
        tag(number, 2) + varint(2**62) + b"x" * 8,       # a length far past the end
        varint(2**64 - 1) + b"\x00",                     # a tag with an impossible field number
        tag(rng.randint(1, 2**29 - 1), 0) + varint(rng.getrandbits(64)),  # an unknown field
    ]


def nested_garbage(rng: random.Random, depth: int) -> bytes:
    """Field 1 length-delimited inside field 1 ... `depth` deep, garbage at the bottom."""
    body = rng.randbytes(8)
    for _ in range(depth):
        body = tag(rng.choice((1, 1, 2, 3)), 2) + varint(len(body)) + body
    return body


def payloads(rng: random.Random, method: descriptor_mod.MethodDescriptor) -> list[bytes]:
    out = [rng.randbytes(rng.choice((1, 2, 7, 33, 256, 4096))) for _ in range(RANDOM_PAYLOADS)]
    valid = random_message(rng, method.input_type).SerializeToString()
    out.append(valid[: rng.randrange(len(valid))] if len(valid) > 1 else b"\x0a")
    out.append(wrong_types(rng, method.input_type))
    out.extend(huge_varints(rng, method.input_type))
    out.append(nested_garbage(rng, 150))
    out.append(nested_garbage(rng, 2000))
    out.append(valid)
    out.extend(random_message(rng, method.input_type).SerializeToString() for _ in range(VALID_PAYLOADS - 1))
    return out


def parses(method: descriptor_mod.MethodDescriptor, payload: bytes) -> bool:
    try:
        request_class(method).FromString(payload)
    except (message_mod.DecodeError, RecursionError):
        return False
    return True


def unparseable(rng: random.Random, method: descriptor_mod.MethodDescriptor) -> list[bytes]:
    """Garbage that cannot parse as `method`'s request (checked with the same library)."""
    candidates = [b"\x07" + rng.randbytes(16), b"\x0f", b"\xff" * 11, tag(1, 2) + varint(1000) + b"short",
                  nested_garbage(rng, 2000), tag(1, 3) + rng.randbytes(5)]
    return [payload for payload in candidates if not parses(method, payload)]


def full_name(service: descriptor_mod.ServiceDescriptor, method: descriptor_mod.MethodDescriptor) -> str:
    return f"/{service.full_name}/{method.name}"


# --- calls ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    node: str
    method: str
    kind: str
    code: grpc.StatusCode | None  # None: a stream still open when it was abandoned
    details: str = ""


class Fuzzer:
    """Runs the calls (at most CONCURRENCY at once) and records each one's outcome."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._gate = asyncio.Semaphore(CONCURRENCY)

    def record(self, node, method, kind, error: BaseException | None) -> None:
        if error is None:
            self.outcomes.append(Outcome(node, method, kind, grpc.StatusCode.OK))
        elif isinstance(error, grpc.aio.AioRpcError):
            self.outcomes.append(Outcome(node, method, kind, error.code(), error.details() or ""))
        else:
            raise error

    async def unary(self, channel, node, method, kind, payload: bytes, timeout: float = CALL_TIMEOUT_S):
        async with self._gate:
            try:
                await channel.unary_unary(method)(payload, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                self.record(node, method, kind, error)
            else:
                self.record(node, method, kind, None)

    async def server_stream(self, channel, node, method, kind, payload: bytes,
                            linger_s: float = STREAM_LINGER_S) -> None:
        """Open, read at most one response (waiting `linger_s`), then cancel."""
        async with self._gate:
            call = channel.unary_stream(method)(payload, timeout=CALL_TIMEOUT_S)
            await self._abandon(call, node, method, kind, call.read(), linger_s)

    async def bidi(self, channel, node, method, kind, messages: list[bytes],
                   linger_s: float = STREAM_LINGER_S) -> None:
        """Open, write `messages`, wait `linger_s` for a response, then cancel (an abandoned stream)."""
        async with self._gate:
            call = channel.stream_stream(method)(timeout=CALL_TIMEOUT_S)

            async def write_then_read():
                for payload in messages:
                    await call.write(payload)
                return await call.read()

            await self._abandon(call, node, method, kind, write_then_read(), linger_s)

    async def _abandon(self, call, node, method, kind, first_response, linger_s: float) -> None:
        try:
            response = await asyncio.wait_for(first_response, linger_s)
        except asyncio.TimeoutError:
            response = None
        except grpc.aio.AioRpcError as error:
            self.record(node, method, kind, error)
            return
        call.cancel()
        if response is grpc.aio.EOF:  # the server ended the stream: its status says how
            try:
                code, details = await asyncio.wait_for(call.code(), CALL_TIMEOUT_S), await call.details()
            except asyncio.TimeoutError:
                code, details = None, "no status"
            self.outcomes.append(Outcome(node, method, kind, code, details))
            return
        self.outcomes.append(Outcome(node, method, kind, grpc.StatusCode.OK if response is not None else None))


def oversize_channel(address: str, credentials: ClientCredentials | None) -> grpc.aio.Channel:
    """A channel that sends messages of any size (the tools' OPTIONS would refuse before sending)."""
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    secure = rpc.channel_credentials(credentials)
    if secure is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, secure, options=options)


def methods_of(service_name: str):
    service = SERVICES[service_name]
    return [(full_name(service, method), method) for method in service.methods]


# --- the cluster fuzz ------------------------------------------------------------------------------
async def fuzz_cluster(config: config_mod.ClusterConfig, rng: random.Random, fuzzer: Fuzzer) -> None:
    admin = admin_credentials(config)
    compute_cert = node_credentials(config, "compute-az1")
    ca = certs.read_ca(config.certs_path)
    bad = {"plaintext": None, "ca-only": ClientCredentials(ca_pem=ca),
           "forged-token": ClientCredentials(ca_pem=ca, token=f"qdb1.{int(time.time()) + 600}.{'A' * 43}")}
    channels: list[grpc.aio.Channel] = []

    def open_channel(address, credentials):
        channel = rpc.client_channel(address, credentials)
        channels.append(channel)
        return channel

    jobs = []
    oversized = b"\x0a" + varint(OVERSIZED) + bytes(OVERSIZED)
    try:
        for node in config.nodes:
            channel = open_channel(node.address, admin)
            as_compute = open_channel(node.address, compute_cert)
            for method, descriptor in methods_of(node.service):
                streaming_request = descriptor.client_streaming
                for payload in payloads(rng, descriptor):
                    acting = method in ACTING_ADMIN_METHODS and parses(descriptor, payload)
                    target, kind = (as_compute, "parseable-as-compute") if acting else (channel, "malformed")
                    if streaming_request:
                        jobs.append(fuzzer.bidi(target, node.name, method, kind, [payload]))
                    elif descriptor.server_streaming:
                        jobs.append(fuzzer.server_stream(target, node.name, method, kind, payload))
                    else:
                        jobs.append(fuzzer.unary(target, node.name, method, kind, payload))
                # A few calls with no or wrong credentials, garbage or not.
                for label, credentials in bad.items():
                    if rng.random() < 0.5:
                        payload = rng.choice((b"", rng.randbytes(rng.randint(1, 64))))
                        bad_channel = open_channel(node.address, credentials)
                        # Wait for the refusal (a handshake may take a while on a busy machine).
                        linger_s = CALL_TIMEOUT_S / 2
                        if streaming_request:
                            jobs.append(fuzzer.bidi(bad_channel, node.name, method, "bad:" + label, [payload],
                                                    linger_s))
                        elif descriptor.server_streaming:
                            jobs.append(fuzzer.server_stream(bad_channel, node.name, method, "bad:" + label,
                                                             payload, linger_s))
                        else:
                            jobs.append(fuzzer.unary(bad_channel, node.name, method, "bad:" + label, payload))
            # Unknown methods and services.
            service = SERVICES[node.service].full_name
            for method in (f"/{service}/NoSuchMethod", "/quorumdb.NoSuchService/Status",
                           "/grpc.health.v1.Health/Check", f"/{service}/" + rng.choice("abcdefghXYZ") * 9,
                           "/" + "".join(rng.choice("abcdefxyz.") for _ in range(12)) + "/Status"):
                jobs.append(fuzzer.unary(channel, node.name, method, "unknown", rng.randbytes(rng.randint(0, 32))))
        await asyncio.gather(*jobs)
        jobs.clear()

        # Messages past the receive limit: one per node, a few nodes at a time (64 MiB each).
        big = asyncio.Semaphore(3)

        async def send_oversized(node) -> None:
            async with big:
                channel = oversize_channel(node.address, admin)
                try:
                    await fuzzer.unary(channel, node.name, f"/{SERVICES[node.service].full_name}/Status",
                                       "oversized", oversized, timeout=30.0)
                finally:
                    await channel.close()

        await asyncio.gather(*(send_oversized(node) for node in config.nodes))
        # And one on a stream, by the role that opens it (the message past the limit ends the stream).
        journal = config.journals[0]
        streamed = oversize_channel(journal.address, node_credentials(config, STREAM_OPENER[APPEND_STREAM]))
        try:
            await fuzzer.bidi(streamed, journal.name, APPEND_STREAM, "oversized", [oversized], linger_s=30.0)
        finally:
            await streamed.close()

        # Streams abandoned in every way, with the role that opens them and with the admin's.
        for node in config.nodes:
            for method, descriptor in methods_of(node.service):
                if not (descriptor.client_streaming or descriptor.server_streaming):
                    continue
                garbage = unparseable(rng, descriptor)
                if descriptor.client_streaming:
                    opener = open_channel(node.address, node_credentials(config, STREAM_OPENER[method]))
                    admin_channel = open_channel(node.address, admin)
                    for target, kind in ((opener, "stream-opener"), (admin_channel, "stream-admin")):
                        jobs.append(fuzzer.bidi(target, node.name, method, kind, []))
                        jobs.append(fuzzer.bidi(target, node.name, method, kind, [rng.choice(garbage)]))
                    # One empty message (valid, it asks for nothing) on the admin's: refused at open.
                    jobs.append(fuzzer.bidi(admin_channel, node.name, method, "stream-admin", [b""]))
                    # Dropped: the channel goes away under an open stream.
                    dropped = rpc.client_channel(node.address, node_credentials(config, STREAM_OPENER[method]))
                    call = dropped.stream_stream(method)(timeout=CALL_TIMEOUT_S)
                    jobs.append(_drop_after(dropped, call, STREAM_LINGER_S))
                else:
                    channel = open_channel(node.address, admin)
                    for payload in (b"", rng.choice(garbage), random_message(rng, descriptor.input_type)
                                    .SerializeToString()):
                        jobs.append(fuzzer.server_stream(channel, node.name, method, "stream-admin", payload))
                    dropped = rpc.client_channel(node.address, admin)
                    call = dropped.unary_stream(method)(b"", timeout=CALL_TIMEOUT_S)
                    jobs.append(_drop_after(dropped, call, STREAM_LINGER_S))
        await asyncio.gather(*jobs)
        jobs.clear()

        await half_open_streams(config, rng, admin)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)


async def _drop_after(channel: grpc.aio.Channel, call, linger_s: float) -> None:
    await asyncio.sleep(linger_s)
    await channel.close()  # no cancel: the server learns only that the connection went away


async def half_open_streams(config: config_mod.ClusterConfig, rng: random.Random, admin) -> None:
    """HALF_OPEN_STREAMS streams opened at once across every node's streaming methods, nothing sent;
    half cancelled, the rest dropped with their channels."""
    targets = []
    for node in config.nodes:
        for method, descriptor in methods_of(node.service):
            if descriptor.client_streaming:
                targets.append((node, method, node_credentials(config, STREAM_OPENER[method]), True))
            elif descriptor.server_streaming:
                targets.append((node, method, admin, False))
    assert targets, "no streaming methods?"
    channels = {}
    calls = []
    for index in range(HALF_OPEN_STREAMS):
        node, method, credentials, bidi = rng.choice(targets)
        key = (node.name, method, index % 4)
        if key not in channels:
            channels[key] = rpc.client_channel(node.address, credentials)
        channel = channels[key]
        if bidi:
            calls.append(channel.stream_stream(method)(timeout=2 * CALL_TIMEOUT_S))
        else:
            calls.append(channel.unary_stream(method)(b"", timeout=2 * CALL_TIMEOUT_S))
    # Let every stream reach its server and sit there.
    connecting = [asyncio.ensure_future(call.wait_for_connection()) for call in calls]
    await asyncio.wait(connecting, timeout=CALL_TIMEOUT_S)
    await asyncio.sleep(0.5)
    for call in calls[::2]:
        call.cancel()
    await asyncio.gather(*(channel.close() for channel in channels.values()), return_exceptions=True)
    for waiting in connecting:
        waiting.cancel()
    await asyncio.gather(*connecting, return_exceptions=True)


async def session_fuzz(config: config_mod.ClusterConfig, rng: random.Random, fuzzer: Fuzzer) -> None:
    """In one open session per compute node: Execute, Describe and Copy with random SQL, random
    parameters and random COPY input (deeper than a request with no session gets)."""
    admin = admin_credentials(config)
    plans = []
    for node in config.computes:
        calls = []
        for _ in range(SESSION_CALLS):
            method = rng.choice(("Execute", "Execute", "Describe", "Copy"))
            request = random_message(rng, SERVICES["compute"].methods_by_name[method].input_type)
            sql = rng.choice(SQL)
            if rng.random() < 0.2:
                sql = "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(0, 60)))
            request.sql = sql
            calls.append((method, request))
        plans.append((node, calls))

    async def one_session(node, calls) -> None:
        channel = rpc.client_channel(node.address, admin)
        try:
            stub = compute_pb2_grpc.ComputeStub(channel)
            session = await stub.OpenSession(compute_pb2.OpenSessionRequest(client="grpc-fuzz"),
                                             timeout=CALL_TIMEOUT_S)
            await stub.Execute(compute_pb2.ExecuteRequest(
                session_id=session.session_id,
                sql="CREATE TABLE IF NOT EXISTS fuzz_session (k INT PRIMARY KEY, v TEXT)"), timeout=30.0)
            for method, request in calls:
                request.session_id = session.session_id
                method_name = f"/quorumdb.Compute/{method}"
                await fuzzer.unary(channel, node.name, method_name, "session", request.SerializeToString(),
                                   timeout=30.0)
            await stub.CloseSession(compute_pb2.CloseSessionRequest(session_id=session.session_id),
                                    timeout=CALL_TIMEOUT_S)
        finally:
            await channel.close()

    await asyncio.gather(*(one_session(node, calls) for node, calls in plans))


async def compute_cert_writes(config: config_mod.ClusterConfig, rng: random.Random, fuzzer: Fuzzer) -> None:
    """A compute node's certificate calling journal Append and Fence: valid, fuzzed and garbage."""
    compute_cert = node_credentials(config, "compute-az1")
    for journal in config.journals:
        channel = rpc.client_channel(journal.address, compute_cert)
        try:
            jobs = []
            for name in ("Append", "Fence"):
                descriptor = SERVICES["journal"].methods_by_name[name]
                method = full_name(SERVICES["journal"], descriptor)
                valid = [b"", random_message(rng, descriptor.input_type).SerializeToString(),
                         request_class(descriptor)(epoch=2**63).SerializeToString()]
                for payload in valid + payloads(rng, descriptor):
                    jobs.append(fuzzer.unary(channel, journal.name, method, "compute-cert-write", payload))
            await asyncio.gather(*jobs)
        finally:
            await channel.close()


def request_streaming(method: str) -> bool:
    service, _, name = method.lstrip("/").partition("/")
    for descriptor in SERVICES.values():
        if descriptor.full_name == service and name in descriptor.methods_by_name:
            return descriptor.methods_by_name[name].client_streaming
    return False


def handler_raised(outcome: Outcome) -> bool:
    """An exception escaped a handler, or gRPC's own parsing of a unary request failed (the guard
    refuses those with INVALID_ARGUMENT, after the authorization). A streamed request's messages
    are parsed as the service reads them: one that does not parse ends that stream UNKNOWN."""
    if request_streaming(outcome.method):
        # A write racing the server's refusal of the stream fails in the client's gRPC core.
        return (outcome.code == grpc.StatusCode.UNKNOWN and "DecodeError" not in outcome.details) or (
            outcome.code == grpc.StatusCode.INTERNAL and outcome.details != "Internal error from Core")
    return outcome.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def refused_unauthenticated(outcome: Outcome) -> bool:
    """A call without valid credentials: refused at the handshake (UNAVAILABLE) or by the guard
    (UNAUTHENTICATED), before its request is looked at."""
    return outcome.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


def logged_parse_errors(config: config_mod.ClusterConfig) -> list[str]:
    """Lines of the node logs where gRPC logged a unary request that did not parse (with a
    traceback): the guard refuses those without a word, so garbage cannot fill a node's log."""
    found = []
    for node in config.nodes:
        path = config.log_path(node.name)
        for line in path.read_text(errors="replace").splitlines() if path.exists() else ():
            match = re.search(r"raised by servicer method \[(\S+)\]", line)
            if match and not request_streaming(match.group(1)):
                found.append(line)
    return found


def summary(outcomes: list[Outcome]) -> str:
    counts: dict[tuple[str, str], int] = {}
    for outcome in outcomes:
        key = (outcome.kind, outcome.code.name if outcome.code is not None else "OPEN")
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{kind}/{code}: {n}" for (kind, code), n in sorted(counts.items()))


# --- checks afterwards -----------------------------------------------------------------------------
def wait_healthy(config: config_mod.ClusterConfig, name: str) -> str:
    """Status of node `name` until it says ok (bounded); returns the last health or error seen."""
    node = config.node(name)
    deadline = time.monotonic() + HEALTHY_WAIT_S
    last = ""
    while time.monotonic() < deadline:
        try:
            with rpc.sync_client_channel(node.address, admin_credentials(config)) as channel:
                reply = STUBS[node.service](channel).Status(common_pb2.StatusRequest(), timeout=CALL_TIMEOUT_S)
            last = reply.health
            if last == "ok":
                return last
        except grpc.RpcError as error:
            last = f"{error.code().name}: {error.details()}"
        time.sleep(0.2)
    return last


def check_database(config: config_mod.ClusterConfig) -> None:
    writer, reader = config.computes[0], config.computes[1]
    table = f"fuzz_{SEED}"
    with client.connect(writer.host, writer.port, data_dir=config.data_dir, timeout_s=30.0) as conn:
        conn.execute(f"CREATE TABLE {table} (k INT PRIMARY KEY, v TEXT)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'seed {SEED}')")
    deadline = time.monotonic() + HEALTHY_WAIT_S
    rows = None
    with client.connect(reader.host, reader.port, data_dir=config.data_dir, timeout_s=30.0) as conn:
        while time.monotonic() < deadline:
            rows = conn.fetchall(f"SELECT k, v FROM {table}")
            if rows:
                break
            time.sleep(0.2)
    assert rows == [(1, f"seed {SEED}")], why(f"{reader.name} read {rows!r}")


# --- tests -----------------------------------------------------------------------------------------
def test_fuzzing_the_grpc_api_of_every_node_leaves_every_node_serving(shared_cluster):
    config = shared_cluster.config
    assert not config.insecure, "the fuzz is meant for a cluster with TLS on"
    assert {node.service for node in config.nodes} == {"journal", "adjudicator", "storage", "compute"}
    pids = {name: process.pid for name, process in shared_cluster.processes.items()}
    assert len(pids) == len(config.nodes)
    rng = random.Random(SEED)
    fuzzer = Fuzzer()
    started = time.monotonic()

    async def everything() -> None:
        await fuzz_cluster(config, rng, fuzzer)
        await session_fuzz(config, rng, fuzzer)
        await compute_cert_writes(config, rng, fuzzer)

    asyncio.run(asyncio.wait_for(everything(), FUZZ_BUDGET_S))
    elapsed = time.monotonic() - started
    print(f"{len(fuzzer.outcomes)} calls in {elapsed:.1f} s: {summary(fuzzer.outcomes)}")

    # Every node: the same process, alive, answering Status ok.
    for node in config.nodes:
        process = shared_cluster.processes[node.name]
        assert process.pid == pids[node.name] and process.poll() is None, \
            why(f"{node.name} died (exit code {process.returncode})")
    for node in config.nodes:
        assert wait_healthy(config, node.name) == "ok", why(f"{node.name} is not healthy after the fuzz")

    by_kind: dict[str, list[Outcome]] = {}
    for outcome in fuzzer.outcomes:
        by_kind.setdefault(outcome.kind, []).append(outcome)
    raised = [o for o in fuzzer.outcomes if handler_raised(o)]
    assert not raised, why(f"handlers raised on fuzzed input: {raised[:5]}")
    for outcome in by_kind["oversized"]:
        assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, why(f"oversized: {outcome}")
    assert len(by_kind["oversized"]) == len(config.nodes) + 1
    for outcome in by_kind["unknown"]:
        assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, why(f"unknown method: {outcome}")
    for outcome in by_kind.get("parseable-as-compute", []):
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, why(f"an acting admin method: {outcome}")
    for kind, outcomes in by_kind.items():
        if kind.startswith("bad:"):
            for outcome in outcomes:
                assert refused_unauthenticated(outcome), why(f"{kind}: {outcome}")
    writes = by_kind["compute-cert-write"]
    assert writes and not [o for o in writes if o.code == grpc.StatusCode.OK], \
        why("a compute certificate appended to or fenced the journal")
    # Refused by role before the request is even parsed.
    assert all(o.code == grpc.StatusCode.PERMISSION_DENIED for o in writes), why(summary(writes))

    logged = logged_parse_errors(config)
    assert not logged, why(f"{len(logged)} parse errors logged, e.g. {logged[:3]}")

    check_database(config)


class NoProcesses:
    """A launcher with nothing to signal: the supervisor's chaos actions reach it and find no node."""

    def __init__(self, config: config_mod.ClusterConfig) -> None:
        self.config = config
        self.processes: dict = {}

    def names(self, services=None) -> list[str]:
        return []

    def wait_ready(self, names=None, timeout_s: float = 60.0, healthy: bool = False) -> None:
        return None


def test_fuzzing_the_supervisor_leaves_it_serving(shared_cluster, tmp_path):
    """The supervisor's gRPC server in-process (as `quorumdb up` runs it), over a launcher with no
    processes and a copy of the cluster's directory: a fuzzed request that parses as KillAll or
    Partition must not break the module's cluster, only the server is under test."""
    config = shared_cluster.config
    data_dir = tmp_path / "supervised"
    data_dir.mkdir()
    shutil.copy(tokens.secret_path(tokens.secret_dir(config.data_dir)), tokens.secret_path(data_dir))
    copy = dataclasses.replace(config, data_dir=data_dir, certs_dir=str(config.certs_path))
    said: list[str] = []
    supervisor = supervisor_mod.Supervisor(NoProcesses(copy), said.append, status=lambda node, timeout_s: None)
    base_port = config.node("journal-az1").port - config_mod.PORT_OFFSET["journal"]
    listen = supervisor_mod.address(base_port)
    server = supervisor_mod.serve(supervisor, listen)
    rng = random.Random(SEED ^ 0x5A5A)
    fuzzer = Fuzzer()
    admin = admin_credentials(config)
    ca = certs.read_ca(config.certs_path)

    async def everything() -> None:
        fuzzer._gate = asyncio.Semaphore(4)  # the supervisor serves a few calls at a time
        channel = rpc.client_channel(listen, admin)
        no_token = rpc.client_channel(listen, ClientCredentials(ca_pem=ca))
        plaintext = rpc.client_channel(listen, None)
        big = oversize_channel(listen, admin)
        try:
            jobs = []
            for method, descriptor in methods_of("supervisor"):
                for payload in payloads(rng, descriptor):
                    jobs.append(fuzzer.unary(channel, "supervisor", method, "malformed", payload))
                for payload in (b"", rng.randbytes(8)):
                    jobs.append(fuzzer.unary(no_token, "supervisor", method, "bad:no-token", payload))
                jobs.append(fuzzer.unary(plaintext, "supervisor", method, "bad:plaintext", b""))
            for method in ("/quorumdb.Supervisor/NoSuchMethod", "/quorumdb.NoSuchService/Nodes"):
                jobs.append(fuzzer.unary(channel, "supervisor", method, "unknown", rng.randbytes(5)))
            await asyncio.gather(*jobs)
            oversized = b"\x0a" + varint(OVERSIZED) + bytes(OVERSIZED)
            await fuzzer.unary(big, "supervisor", "/quorumdb.Supervisor/Nodes", "oversized", oversized,
                               timeout=30.0)
        finally:
            for each in (channel, no_token, plaintext, big):
                await each.close()

    try:
        asyncio.run(asyncio.wait_for(everything(), SUPERVISOR_BUDGET_S))
        print(f"supervisor: {len(fuzzer.outcomes)} calls: {summary(fuzzer.outcomes)}")
        with rpc.sync_client_channel(listen, admin) as channel:
            reply = supervisor_mod.supervisor_pb2_grpc.SupervisorStub(channel).Nodes(
                supervisor_pb2.NodesRequest(), timeout=CALL_TIMEOUT_S)
        assert reply.data_dir == str(data_dir), why("the supervisor stopped serving")
    finally:
        server.stop(grace=None)
    raised = [o for o in fuzzer.outcomes if handler_raised(o)]
    assert not raised, why(f"supervisor handlers raised on fuzzed input: {raised[:5]}")
    for outcome in fuzzer.outcomes:
        if outcome.kind == "oversized":
            assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, why(f"oversized: {outcome}")
        elif outcome.kind == "unknown":
            assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, why(f"unknown method: {outcome}")
        elif outcome.kind.startswith("bad:"):
            assert refused_unauthenticated(outcome), why(f"{outcome}")
    # The module's cluster was never touched: every node the same process.
    assert all(process.poll() is None for process in shared_cluster.processes.values())
