"""gRPC plumbing shared by every service and client: options, servers, channels.

Every call made through QuorumDB code passes `timeout=`; the constants live in
`quorumdb.limits`. Channels are cached per address and closed together.

Network partitions (`quorumdb.netfault`). A node process calls `set_identity`
before it serves; from then on `Channels()` attaches, to every channel it opens to
another node of the cluster, client interceptors (unary and streaming) that send
`x-quorumdb-node: <name>` and fail a call at once with UNAVAILABLE "network
partition: link A-B is cut" when that link is cut, and `new_server()` attaches a
server interceptor that refuses calls from a cut peer and ends a server stream
within NETFAULT_STREAM_CHECK_MS of its link being cut. `watch_rules` keeps the
in-memory cuts current (one stat every NETFAULT_POLL_MS; calls never touch the
disk). A process without an identity (qsql, the client, tools) gets plain channels
and servers, and its calls, which carry no node name, are never cut.

Simulated distance between AZs. A node process whose environment has
`QUORUMDB_CROSS_AZ_DELAY_MS=N` (0 to CROSS_AZ_DELAY_MS_MAX) waits 2N ms, one round trip
of N ms each way, before every call it makes to a node in another AZ (a stream waits once,
when it opens; the commit and append streams also wait before each message they send). Same-AZ calls and tools' calls are not delayed. It is done here, in the
process, rather than with `tc netem`, so that it needs no kernel module and no privilege and
delays exactly the cross-AZ links, whichever Docker network a peer's address resolves to
(docs/DOCKER.md shows its effect on commit latency). The deadline of a delayed call starts
after the wait.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from typing import Any, Mapping

import grpc

from quorumdb import aio, limits, netfault
from quorumdb.config import ClusterConfig

log = logging.getLogger("quorumdb.rpc")

OPTIONS = [
    ("grpc.max_send_message_length", limits.GRPC_MESSAGE_BYTES_MAX),
    ("grpc.max_receive_message_length", limits.GRPC_MESSAGE_BYTES_MAX),
    # Notice a dead peer on an idle connection within seconds, not minutes.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a peer restarts (the default backoff reaches 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]

# Status codes that mean "the peer did not answer"; the request may or may not have
# been processed (for a commit that makes the outcome unknown).
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})

# This process's place in the cluster's partitions; None outside a node process.
_identity: netfault.PartitionState | None = None
# The wait before each call to another AZ (set_identity reads it from CROSS_AZ_DELAY_ENV).
CROSS_AZ_DELAY_ENV = "QUORUMDB_CROSS_AZ_DELAY_MS"
_cross_az_wait_s: float = 0.0
# The rules file's stat when the identity last read it (the watcher re-reads on change).
_identity_signature: tuple[int, int, int] | None = None


def unary_rpc() -> bool:
    """QUORUMDB_UNARY_RPC=1: commits and journal appends as unary calls, not streams (limits.py)."""
    return os.environ.get(limits.UNARY_RPC_ENV, "") == "1"


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable without it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- identity and the rules watcher ------------------------------------------------------------
def cross_az_delay_ms(environ: Mapping[str, str] = os.environ) -> int:
    """The configured one-way cross-AZ delay in ms (0 when unset); ValueError when out of range."""
    text = environ.get(CROSS_AZ_DELAY_ENV, "").strip() or "0"
    try:
        delay_ms = int(text)
    except ValueError:
        raise ValueError(f"{CROSS_AZ_DELAY_ENV}={text!r}: not a whole number of milliseconds") from None
    if not 0 <= delay_ms <= limits.CROSS_AZ_DELAY_MS_MAX:
        raise ValueError(f"{CROSS_AZ_DELAY_ENV}={delay_ms}: must be 0..{limits.CROSS_AZ_DELAY_MS_MAX}")
    return delay_ms


def set_identity(cluster: ClusterConfig, name: str) -> netfault.PartitionState:
    """Say which node this process is; reads the current rules (blocking: call before serving).

    Also reads the simulated cross-AZ delay from the environment (see the module docstring).
    """
    global _identity, _identity_signature, _cross_az_wait_s
    delay_ms = cross_az_delay_ms()
    _cross_az_wait_s = 2 * delay_ms / 1000
    if delay_ms:
        log.info("simulated cross-AZ latency: %d ms each way (%s)", delay_ms, CROSS_AZ_DELAY_ENV)
    path = netfault.rules_path(cluster)
    _identity_signature = netfault.stat_signature(path)  # taken before the read: no missed change
    state = netfault.PartitionState(cluster, name)
    try:
        state.apply(netfault.read_rules_file(path))
    except netfault.RulesError as error:
        log.warning("ignoring the network rules in %s: %s", path, error)
    if state.cut_peers:
        log.info("network rules v%d: cut from %s", state.rules.version, ", ".join(sorted(state.cut_peers)))
    _identity = state
    return state


def clear_identity() -> None:
    global _identity, _identity_signature, _cross_az_wait_s
    _identity, _identity_signature, _cross_az_wait_s = None, None, 0.0


def identity() -> netfault.PartitionState | None:
    return _identity


async def watch_rules(stop: asyncio.Event, state: netfault.PartitionState | None = None,
                      signature: Any = ...) -> None:
    """Keep `state` (default: this process's identity) in step with the rules file until `stop`."""
    state = state if state is not None else _identity
    assert state is not None, "watch_rules needs an identity (set_identity first)"
    if signature is ...:
        signature = _identity_signature if state is _identity else None
    path = netfault.rules_path(state.cluster)
    interval_s = limits.NETFAULT_POLL_MS / 1000
    while not stop.is_set():
        await aio.wait_event(stop, interval_s)
        try:
            current = await asyncio.to_thread(netfault.stat_signature, path)
        except OSError as error:
            log.warning("cannot stat the network rules %s: %s", path, error)
            continue
        if current == signature:
            continue
        signature = current
        try:
            rules = await asyncio.to_thread(netfault.read_rules_file, path)
        except (netfault.RulesError, OSError) as error:
            log.warning("ignoring the network rules in %s: %s", path, error)
            continue
        if state.apply(rules):
            peers = ", ".join(sorted(state.cut_peers)) or "nobody"
            log.info("network rules v%d: %s is cut from %s", rules.version, state.name, peers)


# --- client side ---------------------------------------------------------------------------------
def partition_error(own: str, peer: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details=netfault.partition_message(own, peer))


class _LinkGuard:
    """The shared part of the four client interceptors of one channel (own node -> target node)."""

    def __init__(self, state: netfault.PartitionState, target: str, wait_s: float = 0.0) -> None:
        self.state = state
        self.target = target
        self.metadata_item = (netfault.NODE_METADATA_KEY, state.name)
        self.wait_s = wait_s  # simulated cross-AZ round trip, 0 within an AZ

    async def prepare(self, call_details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        """The call's details, tagged; raises at once on a cut link, waits out the simulated distance."""
        tagged = self.details(call_details)
        if self.wait_s:
            await asyncio.sleep(self.wait_s)
            if self.target in self.state.cut_peers:  # cut while this call waited
                raise partition_error(self.state.name, self.target)
        return tagged

    def details(self, call_details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if self.target in self.state.cut_peers:
            raise partition_error(self.state.name, self.target)
        metadata = call_details.metadata
        tagged = grpc.aio.Metadata(*metadata, self.metadata_item) if metadata else grpc.aio.Metadata(self.metadata_item)
        return call_details._replace(metadata=tagged)


class _UnaryUnaryGuard(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, guard: _LinkGuard) -> None:
        self.guard = guard

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(await self.guard.prepare(client_call_details), request)


class _UnaryStreamGuard(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, guard: _LinkGuard) -> None:
        self.guard = guard

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(await self.guard.prepare(client_call_details), request)


class _StreamUnaryGuard(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, guard: _LinkGuard) -> None:
        self.guard = guard

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(await self.guard.prepare(client_call_details), request_iterator)


class _StreamStreamGuard(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, guard: _LinkGuard) -> None:
        self.guard = guard

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(await self.guard.prepare(client_call_details), request_iterator)


def cross_az_wait_s(target: str, state: netfault.PartitionState | None = None) -> float:
    """The simulated round trip to node `target` (0 within an AZ, for tools, or when not set).

    `state`: whose distance (default this process's identity). The interceptors wait it once
    per call, so once per stream; the commit and append streams (compute_node/commit_stream.py,
    journal/writer.py) also wait it before each message they send.
    """
    state = state if state is not None else _identity
    if not _cross_az_wait_s or state is None or target == state.name:
        return 0.0
    try:
        same_az = state.cluster.node(target).az == state.cluster.node(state.name).az
    except KeyError:
        return 0.0
    return 0.0 if same_az else _cross_az_wait_s


def client_interceptors(state: netfault.PartitionState | None, address: str) -> list[grpc.aio.ClientInterceptor]:
    """The partition interceptors for a channel to `address` (none for tools or non-cluster addresses)."""
    if state is None:
        return []
    target = state.node_by_address.get(address)
    if target is None or target == state.name:
        return []
    guard = _LinkGuard(state, target, cross_az_wait_s(target, state))
    return [_UnaryUnaryGuard(guard), _UnaryStreamGuard(guard), _StreamUnaryGuard(guard), _StreamStreamGuard(guard)]


class Channels:
    """One aio channel per address, created lazily, closed together.

    In a node process (after `set_identity`) each channel to another node carries the
    partition interceptors; `state` overrides the process identity (tests).
    """

    def __init__(self, state: netfault.PartitionState | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._state = state if state is not None else _identity

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            interceptors = client_interceptors(self._state, address)
            channel = grpc.aio.insecure_channel(address, options=OPTIONS, interceptors=interceptors or None)
            self._channels[address] = channel
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)


# --- server side -----------------------------------------------------------------------------------
def caller_node(invocation_metadata) -> str | None:
    """The calling node's name from its metadata; None for tools and clients."""
    for key, value in invocation_metadata or ():
        if key == netfault.NODE_METADATA_KEY:
            return value
    return None


class PartitionServerInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls from cut peers; ends server streams when their link is cut mid-stream."""

    def __init__(self, state: netfault.PartitionState) -> None:
        self.state = state

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        peer = caller_node(handler_call_details.invocation_metadata)
        if handler is None or peer is None or peer == self.state.name:
            return handler
        if self.state.is_cut_from(peer):
            return _refusing(handler, netfault.partition_message(self.state.name, peer))
        if handler.response_streaming:
            return _guard_stream(handler, self.state, peer)
        return handler


def _refusing(handler, message: str):
    async def refuse(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)

    field = {
        (False, False): "unary_unary", (False, True): "unary_stream",
        (True, False): "stream_unary", (True, True): "stream_stream",
    }[(handler.request_streaming, handler.response_streaming)]
    return handler._replace(**{field: refuse})


def _guard_stream(handler, state: netfault.PartitionState, peer: str):
    field = "stream_stream" if handler.request_streaming else "unary_stream"
    behavior = getattr(handler, field)
    message = netfault.partition_message(state.name, peer)
    check_s = limits.NETFAULT_STREAM_CHECK_MS / 1000

    if inspect.isasyncgenfunction(behavior):
        async def guarded_generator(request, context):
            responses = behavior(request, context)
            try:
                while True:
                    next_response = asyncio.ensure_future(responses.__anext__())
                    try:
                        while not next_response.done():
                            await asyncio.wait((next_response,), timeout=check_s)
                            if not next_response.done() and state.is_cut_from(peer):
                                await context.abort(grpc.StatusCode.UNAVAILABLE, message)
                    finally:
                        if not next_response.done():
                            next_response.cancel()
                            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                                await next_response
                    try:
                        response = next_response.result()
                    except StopAsyncIteration:
                        return
                    if state.is_cut_from(peer):
                        await context.abort(grpc.StatusCode.UNAVAILABLE, message)
                    yield response
            finally:
                await responses.aclose()

        return handler._replace(**{field: guarded_generator})

    if inspect.iscoroutinefunction(behavior):  # the reader/writer API: context.write()
        async def guarded_coroutine(request, context):
            task = asyncio.ensure_future(behavior(request, context))
            try:
                while not task.done():
                    await asyncio.wait((task,), timeout=check_s)
                    if not task.done() and state.is_cut_from(peer):
                        await context.abort(grpc.StatusCode.UNAVAILABLE, message)
                return task.result()
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

        return handler._replace(**{field: guarded_coroutine})
    return handler  # a synchronous generator handler: not used by QuorumDB services


def new_server(state: netfault.PartitionState | None = None) -> grpc.aio.Server:
    """An aio server; in a node process (or given `state`) it obeys the cluster's partitions."""
    state = state if state is not None else _identity
    interceptors = [PartitionServerInterceptor(state)] if state is not None else None
    return grpc.aio.server(options=OPTIONS, interceptors=interceptors)
