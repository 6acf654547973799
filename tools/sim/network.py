"""The simulated network: gRPC's channel and server interfaces over in-process message passing.

The roles' code is unchanged: `rpc.new_server()` and `rpc.Channels()` hand it a `SimServer`
and `SimChannel`s (through the node's runtime), the generated stubs and `add_*_to_server`
functions register and call methods as they would over gRPC, and every message is serialized
to bytes and parsed again on the other side (nothing is shared between nodes).

What the network does to messages, drawn from the simulation's seeded random generator:
* each message takes a one-way delay: tens of microseconds within an AZ, about a millisecond
  across AZs, now and then a spike (`Network.latency`);
* the messages of one call, in each direction, arrive in the order they were sent (HTTP/2);
  different calls are independent and may overtake one another;
* a unary request or its reply may be lost (the caller sees DEADLINE_EXCEEDED at its
  deadline, not knowing whether the request ran); a unary request between nodes may be
  delivered twice (a retried request whose first copy arrived after all: the caller sees one
  reply). Nodes retry their calls to one another, so those must be safe to repeat; a
  client's SQL statement is not repeated (a session is a conversation: a client retries a
  whole transaction, never a statement);
* a stream may break (both ends see UNAVAILABLE);
* a cut link (partition) fails every open call between its ends at once, and new calls fail
  with UNAVAILABLE, as `quorumdb.rpc` does in a real node;
* a crashed node's calls end: its peers see UNAVAILABLE after one delay;
* a paused node (`pause`) sends and receives nothing until it resumes, then everything
  held arrives at once (stale messages from a process that does not know it was paused).

Every delivery and failure is added to the simulation's trace (`Trace`), whose hash shows
that the same seed gives the same run, event for event.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import logging

import grpc

from quorumdb import limits
from tools.sim.disk import NodeCrashed

log = logging.getLogger("tools.sim.network")

EOF_MARK = object()


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


class Network:
    def __init__(self, sim) -> None:
        self.sim = sim
        self.rng = sim.rng
        self.servers: dict[str, SimServer] = {}     # address -> the serving incarnation
        self.cuts: set[frozenset[str]] = set()
        self.calls: dict[int, _Call] = {}            # open calls, by id, in creation order
        self._next_call = 0
        # Fault rates (0 when the run has no network faults).
        self.unary_drop = 0.0
        self.unary_duplicate = 0.0
        self.stream_break = 0.0
        self.spike = 0.0
        self.messages = 0
        self.paused: dict[str, float] = {}  # node -> virtual time it resumes
        self.last_appender: str | None = None  # who last opened a journal append stream: the leader

    # --- links ----------------------------------------------------------------------
    def latency(self, src: str, dst: str) -> float:
        """One-way delay of a message from src to dst, in seconds."""
        rng = self.rng
        if src == dst:
            base = 0.00001
        elif self.sim.az_of(src) == self.sim.az_of(dst):
            base = 0.00005 + rng.random() * 0.0002
        else:
            base = 0.0005 + rng.random() * 0.001
        if self.spike and rng.random() < self.spike:
            base += rng.random() * 0.2
        return base

    def link_up(self, a: str, b: str) -> bool:
        return a == b or frozenset((a, b)) not in self.cuts

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((a, b)))
        for call in list(self.calls.values()):
            if {call.client, call.server_name} == {a, b}:
                call.fail_both(grpc.StatusCode.UNAVAILABLE, f"network partition: link {a}-{b} is cut")

    def heal(self) -> None:
        self.cuts.clear()

    def pause(self, name: str, seconds: float) -> None:
        """The node stops for a while (a long GC pause, SIGSTOP, a stalled VM): every message to
        or from it waits until it resumes; its callers' deadlines run meanwhile. Its own timers
        still fire, so it may act on a stale view when it comes back, as a paused process does."""
        self.paused[name] = max(self.paused.get(name, 0.0), self.sim.now() + seconds)
        self.sim.faults_injected += 1
        self.sim.trace.add(f"pause {name} for {seconds:.3f} s")

    def spike_for(self, seconds: float) -> None:
        """Every message is slow (up to 200 ms more) for a while: a congested network."""
        saved = self.spike
        self.spike = 1.0
        self.sim.faults_injected += 1
        self.sim.trace.add(f"network spike for {seconds:.3f} s")
        asyncio.get_running_loop().call_later(seconds, self._end_spike, saved)

    def _end_spike(self, saved: float) -> None:
        if self.spike == 1.0:
            self.spike = saved if self.sim.allow_crashes else 0.0

    def node_crashed(self, name: str) -> None:
        server = self.servers.get(self.sim.address_of(name))
        if server is not None and server.owner == name:
            del self.servers[self.sim.address_of(name)]
        for call in list(self.calls.values()):
            if call.client == name:
                call.fail_both(grpc.StatusCode.UNAVAILABLE, f"{name} crashed", delay_from=None)
            elif call.server_name == name:
                call.fail_both(grpc.StatusCode.UNAVAILABLE, f"connection to {name} reset: it crashed",
                               delay_from=name)

    def new_call_id(self) -> int:
        self._next_call += 1
        return self._next_call


class SimServer:
    """What `rpc.new_server()` returns inside a simulation: registers method handlers, serves
    calls as tasks of its node."""

    def __init__(self, network: Network, runtime) -> None:
        self.network = network
        self.runtime = runtime
        self.owner = runtime.name
        self._generic: list = []
        self._context: contextvars.Context | None = None
        self.serving = False

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service_name, method_handlers) -> None:
        pass  # the generic handlers registered alongside know the same methods

    def add_insecure_port(self, address: str) -> int:
        return int(address.rsplit(":", 1)[1])

    async def start(self) -> None:
        self._context = contextvars.copy_context()  # the node's context: its handlers run as its tasks
        self.serving = True
        self.network.servers[self.network.sim.address_of(self.owner)] = self

    async def stop(self, grace=None) -> None:
        self.serving = False
        address = self.network.sim.address_of(self.owner)
        if self.network.servers.get(address) is self:
            del self.network.servers[address]
        for call in list(self.network.calls.values()):
            if call.server is self:
                call.fail_both(grpc.StatusCode.UNAVAILABLE, f"{self.owner} is stopping")

    async def wait_for_termination(self, timeout=None) -> bool:
        return True

    def handler(self, method: str, metadata):
        details = _HandlerCallDetails(method, metadata)
        for generic in self._generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None

    def spawn(self, coro) -> asyncio.Task:
        # The node's context: the world's task factory files the task under the node's runtime.
        return asyncio.get_running_loop().create_task(coro, context=self._context.copy())


class _HandlerCallDetails:
    def __init__(self, method, metadata):
        self.method = method
        self.invocation_metadata = metadata


class SimChannel:
    """What `rpc.Channels().get(address)` returns inside a simulation."""

    def __init__(self, network: Network, runtime, address: str) -> None:
        self.network = network
        self.runtime = runtime
        self.address = address
        self._calls: set[int] = set()

    def _multi(kind):
        def make(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
            return _MultiCallable(self, method, kind, request_serializer, response_deserializer)
        return make

    unary_unary = _multi("unary_unary")
    unary_stream = _multi("unary_stream")
    stream_unary = _multi("stream_unary")
    stream_stream = _multi("stream_stream")

    async def close(self, grace=None) -> None:
        for call_id in sorted(self._calls):
            call = self.network.calls.get(call_id)
            if call is not None:
                call.cancel()
        self._calls.clear()

    async def channel_ready(self) -> None:
        return None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class _MultiCallable:
    def __init__(self, channel: SimChannel, method: str, kind: str, serializer, deserializer):
        self.channel = channel
        self.method = method
        self.kind = kind
        self.serializer = serializer or (lambda m: m)
        self.deserializer = deserializer or (lambda b: b)

    def __call__(self, request=None, *, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                 compression=None):
        call = _Call(self, timeout, metadata)
        if self.kind.startswith("unary"):
            call.write_now(request)
            call.done_writing_now()
        elif request is not None:  # a request iterator given up front
            call.feed(request)
        call.start()
        return call


class _Call:
    """Both ends of one simulated call: the client's call object and the server's state."""

    def __init__(self, multi: _MultiCallable, timeout, metadata) -> None:
        network = multi.channel.network
        self.network = network
        self.sim = network.sim
        self.loop = asyncio.get_running_loop()
        self.id = network.new_call_id()
        self.multi = multi
        self.method = multi.method
        self.kind = multi.kind
        self.client_rt = multi.channel.runtime
        self.client = self.client_rt.name
        self.address = multi.channel.address
        self.server_name = self.sim.name_at(self.address)
        self.server: SimServer | None = None
        self.metadata = tuple(metadata or ()) + (("x-quorumdb-node", self.client),)
        self.deadline = None if timeout is None else self.loop.time() + timeout
        self.unary_request = multi.kind.startswith("unary")
        self.unary_response = multi.kind.endswith("unary")
        # client side
        self._responses: collections.deque = collections.deque()
        self._status: tuple[grpc.StatusCode, str] | None = None
        self._client_waiter: asyncio.Future | None = None
        self._cancelled = False
        self._done_callbacks: list = []
        # server side
        self._requests: collections.deque = collections.deque()
        self._server_waiter: asyncio.Future | None = None
        self._server_task: asyncio.Task | None = None
        self._server_done = False
        self._to_server_at = 0.0   # the last delivery time in each direction: FIFO per call
        self._to_client_at = 0.0
        self._request_bytes = b""       # a unary call's request, for a duplicate delivery
        self._client_done_writing = False
        self._deadline_handle = None
        multi.channel._calls.add(self.id)
        network.calls[self.id] = self

    # --- plumbing ---------------------------------------------------------------------
    def _when(self, direction: str) -> float:
        src, dst = (self.client, self.server_name) if direction == "up" else (self.server_name, self.client)
        at = self.loop.time() + self.network.latency(src, dst or src)
        paused = self.network.paused
        if paused:  # a paused process sends and reads nothing until it resumes
            at = max(at, paused.get(src, 0.0), paused.get(dst, 0.0))
        last = self._to_server_at if direction == "up" else self._to_client_at
        at = max(at, last + 1e-9)
        if direction == "up":
            self._to_server_at = at
        else:
            self._to_client_at = at
        return at

    def _trace(self, what: str, size: int = 0) -> None:
        self.sim.trace.add(f"{what} {self.id} {self.client}>{self.server_name} {self.method} {size}")

    @property
    def finished(self) -> bool:
        return self._status is not None

    def _finish(self, code: grpc.StatusCode, details: str) -> None:
        if self._status is not None:
            return
        self._status = (code, details)
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        self.network.calls.pop(self.id, None)
        self.multi.channel._calls.discard(self.id)
        self._wake_client()
        for callback in self._done_callbacks:
            self.loop.call_soon(callback, self)

    def _wake_client(self) -> None:
        waiter, self._client_waiter = self._client_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_server(self) -> None:
        waiter, self._server_waiter = self._server_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_server(self) -> None:
        self._server_done = True
        task = self._server_task
        if task is not None and not task.done():
            task.cancel()
        self._wake_server()

    def fail_both(self, code: grpc.StatusCode, details: str, delay_from: str | None = "now") -> None:
        """End the call on both sides (partition, crash, server stop, broken stream)."""
        self._trace(f"fail:{code.name}")
        self._stop_server()
        if delay_from is None or delay_from == "now":
            self._finish(code, details)
        else:  # the client learns after one delay (a connection reset travels too)
            self.loop.call_at(self.loop.time() + self.network.latency(delay_from, self.client),
                              self._finish, code, details)

    def _client_alive(self) -> bool:
        return self.client_rt.alive

    # --- start: connect -----------------------------------------------------------------
    def start(self) -> None:
        if self.deadline is not None:
            self._deadline_handle = self.loop.call_at(self.deadline, self._on_deadline)
        self.loop.call_at(self._when("up"), self._connect)

    def _on_deadline(self) -> None:
        self._deadline_handle = None
        if not self.finished:
            self._trace("deadline")
            self._stop_server()
            self._finish(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _connect(self) -> None:
        if self.finished:
            return
        network = self.network
        if self.server_name is not None and not network.link_up(self.client, self.server_name):
            self._finish(grpc.StatusCode.UNAVAILABLE,
                         f"network partition: link {self.client}-{self.server_name} is cut")
            return
        server = network.servers.get(self.address)
        if server is None or not server.serving:
            self._finish(grpc.StatusCode.UNAVAILABLE, f"failed to connect to {self.address}: connection refused")
            return
        handler = server.handler(self.method, self.metadata)
        if handler is None:
            self._finish(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {self.method}")
            return
        rng = network.rng
        if self.unary_request and network.unary_drop and rng.random() < network.unary_drop:
            self._trace("drop-request")
            return  # lost: the caller's deadline ends it
        self.server = server
        self._trace("connect")
        if self.method == "/quorumdb.Journal/AppendStream":
            network.last_appender = self.client
        self._server_task = server.spawn(self._serve(handler))
        if (self.kind == "unary_unary" and self.client_rt.is_node and network.unary_duplicate
                and rng.random() < network.unary_duplicate):
            self._trace("duplicate")
            server.spawn(self._serve(handler, duplicate=True))

    # --- server side --------------------------------------------------------------------
    async def _next_request(self):
        while True:
            if self._requests:
                item = self._requests.popleft()
                if item is EOF_MARK:
                    return EOF_MARK
                return item
            if self._server_done:
                raise asyncio.CancelledError()
            self._server_waiter = self.loop.create_future()
            await self._server_waiter

    async def _request_iterator(self):
        while True:
            item = await self._next_request()
            if item is EOF_MARK:
                return
            yield item

    async def _serve(self, handler, duplicate: bool = False) -> None:
        """Run the method's handler as a task of the server's node; `duplicate`: a second delivery
        of a unary request, whose reply (or error) goes nowhere."""
        context = _ServerContext(self, handler.response_serializer)
        try:
            if self.unary_request:
                request = self._request_bytes if duplicate else await self._next_request()
                if request is EOF_MARK:
                    raise _Abort(grpc.StatusCode.INTERNAL, "no request")
                argument = handler.request_deserializer(request)
            else:
                argument = _RequestIterator(self, handler.request_deserializer)
            behavior = {
                "unary_unary": handler.unary_unary, "unary_stream": handler.unary_stream,
                "stream_unary": handler.stream_unary, "stream_stream": handler.stream_stream,
            }[self.kind]
            result = behavior(argument, context)
            if inspect.isasyncgen(result):
                async for message in result:
                    self._send(handler.response_serializer(message))
            else:
                response = await result
                if response is not None and self.unary_response and not duplicate:
                    self._send(handler.response_serializer(response))
            if not duplicate:
                self._end(grpc.StatusCode.OK, "")
        except _Abort as abort:
            if not duplicate:
                self._end(abort.code, abort.details)
        except (asyncio.CancelledError, NodeCrashed):
            raise
        except Exception as error:  # noqa: BLE001 - gRPC turns a handler's exception into UNKNOWN
            self.sim.handler_error(self.server_name, self.method, error)
            if not duplicate:
                self._end(grpc.StatusCode.UNKNOWN, f"Unexpected {type(error).__name__}: {error}")

    def _send(self, data: bytes) -> None:
        if self._server_done or self.finished:
            return
        if len(data) > limits.GRPC_MESSAGE_BYTES_MAX:
            self.fail_both(grpc.StatusCode.RESOURCE_EXHAUSTED, f"response of {len(data)} bytes is too large")
            return
        network = self.network
        if not self.unary_response and network.stream_break and network.rng.random() < network.stream_break:
            self.fail_both(grpc.StatusCode.UNAVAILABLE, "stream broken (simulated connection loss)", self.server_name)
            return
        self._trace("reply", len(data))
        self.loop.call_at(self._when("down"), self._deliver_response, data)

    def _deliver_response(self, data: bytes) -> None:
        if self.finished or not self._client_alive():
            return
        if self.server_name and not self.network.link_up(self.client, self.server_name):
            return
        self.network.messages += 1
        self._responses.append(data)
        self._wake_client()

    def _end(self, code: grpc.StatusCode, details: str) -> None:
        self._server_done = True
        if self.finished:
            return
        if (self.unary_response and code == grpc.StatusCode.OK and self.network.unary_drop
                and self.network.rng.random() < self.network.unary_drop):
            self._trace("drop-reply")
            return  # the reply is lost: the caller's deadline ends the call
        self._trace(f"end:{code.name}")
        self.loop.call_at(self._when("down"), self._deliver_status, code, details)

    def _deliver_status(self, code, details) -> None:
        if not self._client_alive():
            return
        self._finish(code, details)

    # --- client side: requests ------------------------------------------------------------
    def write_now(self, request) -> None:
        data = self.multi.serializer(request)
        if len(data) > limits.GRPC_MESSAGE_BYTES_MAX:
            raise rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request of {len(data)} bytes is too large")
        self._request_bytes = data
        self._up(data)

    def done_writing_now(self) -> None:
        self._up(EOF_MARK)

    def _up(self, item) -> None:
        if item is not EOF_MARK:
            self._trace("request", len(item))
        self.loop.call_at(self._when("up"), self._deliver_request, item)

    def _deliver_request(self, item) -> None:
        if self._server_done or self.finished:
            return
        if self.server_name and not self.network.link_up(self.client, self.server_name):
            return
        if item is not EOF_MARK:
            self.network.messages += 1
        self._requests.append(item)
        self._wake_server()

    def feed(self, iterator) -> None:
        async def pump():
            try:
                async for request in iterator:
                    await self.write(request)
                await self.done_writing()
            except Exception:  # noqa: BLE001 - the call's own status reports the failure
                pass
        asyncio.ensure_future(pump())

    def _raise_if_ended(self) -> None:
        if self._cancelled:
            raise asyncio.InvalidStateError("RPC already cancelled")
        if self._status is not None:
            code, details = self._status
            if code != grpc.StatusCode.OK:
                raise rpc_error(code, details)
            raise asyncio.InvalidStateError("RPC already finished")

    async def write(self, request) -> None:
        self._raise_if_ended()
        if self._client_done_writing:
            raise asyncio.InvalidStateError("write after done_writing")
        data = self.multi.serializer(request)
        if len(data) > limits.GRPC_MESSAGE_BYTES_MAX:
            self.fail_both(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request of {len(data)} bytes is too large")
            self._raise_if_ended()
        network = self.network
        if network.stream_break and network.rng.random() < network.stream_break:
            self.fail_both(grpc.StatusCode.UNAVAILABLE, "stream broken (simulated connection loss)")
            self._raise_if_ended()
        self._up(data)

    async def done_writing(self) -> None:
        if self.finished or self._client_done_writing:
            return
        self._client_done_writing = True
        self._up(EOF_MARK)

    # --- client side: responses -----------------------------------------------------------
    async def _wait_client(self) -> None:
        self._client_waiter = self.loop.create_future()
        try:
            await self._client_waiter
        except asyncio.CancelledError:
            if not self.finished:
                self.cancel()
            raise

    async def read(self):
        while True:
            if self._cancelled:
                raise asyncio.CancelledError()
            if self._responses:
                return self.multi.deserializer(self._responses.popleft())
            if self._status is not None:
                code, details = self._status
                if code == grpc.StatusCode.OK:
                    return grpc.aio.EOF
                raise rpc_error(code, details)
            await self._wait_client()

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        while True:
            message = await self.read()
            if message is grpc.aio.EOF:
                return
            yield message

    def __await__(self):
        return self._result().__await__()

    async def _result(self):
        while self._status is None and not self._cancelled:
            await self._wait_client()
        if self._cancelled:
            raise asyncio.CancelledError()
        code, details = self._status
        if code != grpc.StatusCode.OK:
            raise rpc_error(code, details)
        if self.unary_response:
            if not self._responses:
                raise rpc_error(grpc.StatusCode.INTERNAL, "no response")
            return self.multi.deserializer(self._responses.popleft())
        return None

    def cancel(self) -> bool:
        if self.finished:
            return False
        self._cancelled = True
        self._trace("cancel")
        self._stop_server()
        self._finish(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self.finished

    def time_remaining(self):
        return None if self.deadline is None else max(0.0, self.deadline - self.loop.time())

    def add_done_callback(self, callback) -> None:
        if self.finished:
            self.loop.call_soon(callback, self)
        else:
            self._done_callbacks.append(callback)

    async def code(self):
        while self._status is None:
            await self._wait_client()
        return self._status[0]

    async def details(self):
        while self._status is None:
            await self._wait_client()
        return self._status[1]

    async def initial_metadata(self):
        return grpc.aio.Metadata()

    async def trailing_metadata(self):
        return grpc.aio.Metadata()

    async def wait_for_connection(self) -> None:
        return None


class _RequestIterator:
    def __init__(self, call: _Call, deserializer):
        self._call = call
        self._deserializer = deserializer

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self._call._next_request()
        if item is EOF_MARK:
            raise StopAsyncIteration
        return self._deserializer(item)


class _ServerContext:
    """The parts of grpc.aio.ServicerContext the services use."""

    def __init__(self, call: _Call, serializer):
        self._call = call
        self._serializer = serializer

    async def abort(self, code, details="", trailing_metadata=()):
        raise _Abort(code, details)

    async def write(self, message) -> None:
        call = self._call
        if call._server_done:
            raise asyncio.CancelledError()
        call._send(self._serializer(message))

    async def read(self):
        item = await self._call._next_request()
        return grpc.aio.EOF if item is EOF_MARK else item

    def invocation_metadata(self):
        return self._call.metadata

    def time_remaining(self):
        return self._call.time_remaining()

    def done(self) -> bool:
        return self._call._server_done

    def cancelled(self) -> bool:
        return self._call._server_done and self._call.finished

    def peer(self) -> str:
        return f"sim:{self._call.client}"

    def set_code(self, code) -> None:
        pass

    def set_details(self, details) -> None:
        pass

    def add_done_callback(self, callback) -> None:
        pass

