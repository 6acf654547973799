"""Group commit from a compute node to one adjudicator over a bidirectional gRPC stream.

Every session of a compute node that commits hands its CommitRequest to the CommitStream of
the adjudicator it routes to (compute_node/cluster/adjudicator_client.py decides where). The stream's
sender task takes everything queued at that moment (up to COMMIT_STREAM_BATCH_MAX requests and
COMMIT_STREAM_BATCH_BYTES) and writes it as one CommitBatch message: the more sessions commit
at once, the bigger the batches, and one message replaces a unary call per commit. The
adjudicator answers each batch with one CommitReplyBatch once its commits are decided and their
commit-wait has passed; replies are matched to requests by `seq`.

What a failure means for a request (the router turns it into a resend or an error):
  * still queued, never written to a stream: NOT_SENT;
  * written, then the stream failed because no connection could be made (connect failure,
    DNS): NOT_SENT, no byte of it reached the adjudicator;
  * written, then anything else (deadline, reset, a partition cutting an open stream, the
    stream ending without its reply): MAYBE_SENT; the router resends it with `retry` set and
    the adjudicator answers from its txn_id table, so nothing commits twice.
A partition known before writing (this node is cut from the adjudicator) is NOT_SENT at once.

Bounds: COMMIT_STREAM_PENDING_MAX requests queued or unanswered per stream; a stream lives at
most COMMIT_STREAM_LIFETIME_S (its gRPC deadline): after half of it the sender half-closes it
(the adjudicator answers what it holds, then ends it) and opens a new one for new requests. An
idle stream is half-closed after COMMIT_STREAM_IDLE_S. Each send waits at most its timeout.
`take_batch` and `failure_kind` are the pure parts. Batching is ack-clocked as on the read
streams (compute_node/cluster/read_stream.py): while something written is unanswered, what comes next
waits for the next reply batch, at most STREAM_LINGER_S.

The stream also carries the node's read demand (`signal_reads`, `CommitBatch.reads_active` and
`read_demand_ts`, the highest start_ts of the transactions begun since the last message): the
leader closes that ts at once (adjudicator/heartbeat.py), so a read does not wait for the next
periodic heartbeat. It is never retried; losing one only makes a read wait for a later
heartbeat.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from typing import Sequence

import grpc

from quorumdb import aio, limits, rpc
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc

log = logging.getLogger("compute_node.cluster.commit_stream")

_CONNECT_FAILURES = ("failed to connect", "connection refused", "dns resolution failed")


class SendFailure(enum.Enum):
    NOT_SENT = "not_sent"        # the adjudicator never saw the request
    MAYBE_SENT = "maybe_sent"    # the outcome is unknown


class SendError(Exception):
    """A commit request got no reply; `kind` says whether the adjudicator may have seen it."""

    def __init__(self, kind: SendFailure, code: str, details: str) -> None:
        super().__init__(f"{code} {details}".strip())
        self.kind = kind
        self.code = code
        self.details = details


def failure_kind(written: bool, code: grpc.StatusCode | None, details: str) -> SendFailure:
    """Whether a request without a reply can have reached the adjudicator (see the module docstring)."""
    if not written:
        return SendFailure.NOT_SENT
    text = (details or "").lower()
    if code == grpc.StatusCode.UNAVAILABLE and any(marker in text for marker in _CONNECT_FAILURES):
        return SendFailure.NOT_SENT
    return SendFailure.MAYBE_SENT


def take_batch(sizes: Sequence[int], max_requests: int, max_bytes: int) -> int:
    """How many of the queued requests (their serialized sizes, oldest first) go in the next message.

    At least one when any is queued (a single request always fits a message, see limits).
    """
    count = 0
    total = 0
    for size in sizes:
        if count >= max_requests or (count and total + size > max_bytes):
            break
        count += 1
        total += size
    return count


async def wait_for_work(wake: asyncio.Event, reader: asyncio.Task, idle_s: float) -> bool:
    """A stream's sender with nothing queued: wait until more is queued (`wake`) or the stream's
    reader ends. False after `idle_s` of neither: the stream is idle."""
    wake.clear()
    waiter = asyncio.ensure_future(wake.wait())
    done, _ = await asyncio.wait((waiter, reader), timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    return bool(done)


async def stop_reader(reader: asyncio.Task) -> BaseException | None:
    """A stream's reader once its sender is done with the stream: cancelled (and awaited) if it is
    still running; the error it ended with of its own, if any."""
    if not reader.done():
        await aio.cancel_and_wait(reader)
    return None if reader.cancelled() else reader.exception()


async def linger(answered: asyncio.Event, queued_at: float, loop: asyncio.AbstractEventLoop) -> bool:
    """Ack-clocked batching: while the last message has no answer yet, hold the next one back (up
    to STREAM_LINGER_S after the last message left) so more requests join it. True if it waited."""
    linger_s = queued_at + limits.STREAM_LINGER_S - loop.time()
    if linger_s <= 0:
        return False
    await aio.wait_event(answered, linger_s)
    return True


@dataclasses.dataclass(eq=False)
class _Pending:
    request: adjudicator_pb2.CommitRequest  # a copy, with this send's seq
    future: asyncio.Future                  # -> CommitReply, or SendError
    size: int
    written: bool = False


class CommitStream:
    """The stream(s) from this compute node to one adjudicator; `send` is safe from any task."""

    def __init__(self, target: str, stub: adjudicator_pb2_grpc.AdjudicatorStub) -> None:
        self.target = target
        self._stub = stub
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._unanswered = 0  # queued + written without a reply
        self._seq = 0
        self._task: asyncio.Task | None = None
        self._closed = False
        self._reads_active = False  # to say on the next message (see signal_reads)
        self._read_demand_ts = 0    # likewise
        self._queued_at = 0.0       # loop time the oldest unsent request or demand arrived
        self._answered = asyncio.Event()  # set by the reader at every reply batch
        # Figures for the compute node's status: messages written and requests they carried.
        self.batches_sent = 0
        self.requests_sent = 0

    def signal_reads(self, read_ts: int = 0) -> None:
        """Tell this adjudicator (if it leads) that this compute node serves reads, and that a
        transaction reads at `read_ts`, on the next message (at once when nothing is queued): it
        then closes read_ts as soon as it can and keeps closed timestamps fresh."""
        if self._closed:
            return
        if not self._queue and not self._reads_active:
            self._queued_at = asyncio.get_running_loop().time()
        self._reads_active = True
        self._read_demand_ts = max(self._read_demand_ts, read_ts)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"commit-stream-{self.target}")

    async def send(self, request: adjudicator_pb2.CommitRequest, timeout_s: float) -> adjudicator_pb2.CommitReply:
        """The adjudicator's reply; raises SendError (never hangs beyond timeout_s)."""
        if self._closed:
            raise SendError(SendFailure.NOT_SENT, "CANCELLED", "compute node is stopping")
        state = rpc.identity()
        if state is not None and state.cut_peers and self.target in state.cut_peers:
            raise SendError(SendFailure.NOT_SENT, "UNAVAILABLE", f"network partition: cut from {self.target}")
        if self._unanswered >= limits.COMMIT_STREAM_PENDING_MAX:
            raise SendError(SendFailure.NOT_SENT, "RESOURCE_EXHAUSTED",
                            f"{self._unanswered} commits already waiting on the stream to {self.target}")
        self._seq += 1
        message = adjudicator_pb2.CommitRequest()
        message.CopyFrom(request)
        message.seq = self._seq
        pending = _Pending(message, asyncio.get_running_loop().create_future(), message.ByteSize())
        if not self._queue and not self._reads_active:
            self._queued_at = asyncio.get_running_loop().time()
        self._queue.append(pending)
        self._unanswered += 1
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"commit-stream-{self.target}")
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(pending.future)
        except TimeoutError:
            if not pending.future.done():
                kind = failure_kind(pending.written, grpc.StatusCode.DEADLINE_EXCEEDED, "")
                self._fail(pending, SendError(kind, "DEADLINE_EXCEEDED", f"no reply within {timeout_s:.1f} s"))
                if not pending.written:
                    self._queue.remove(pending)
            return pending.future.result()  # raises the SendError (or returns a reply that just came)

    def _fail(self, pending: _Pending, error: SendError) -> None:
        if not pending.future.done():
            pending.future.set_exception(error)
            pending.future.exception()  # retrieved: a late failure of an abandoned send is not logged
            self._unanswered -= 1

    def _answer(self, pending: _Pending, reply: adjudicator_pb2.CommitReply) -> None:
        if not pending.future.done():
            pending.future.set_result(reply)
            self._unanswered -= 1

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)
        for pending in self._queue:
            self._fail(pending, SendError(SendFailure.NOT_SENT, "CANCELLED", "compute node is stopping"))
        self._queue.clear()

    # --- the sender task ---------------------------------------------------------------------
    async def _run(self) -> None:
        """Open streams one after another while there is something to send."""
        while (self._queue or self._reads_active) and not self._closed:
            await self._one_stream()

    async def _one_stream(self) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        call = self._stub.CommitStream(timeout=limits.COMMIT_STREAM_LIFETIME_S)
        written: dict[int, _Pending] = {}
        reader = asyncio.create_task(self._read(call, written), name=f"commit-stream-read-{self.target}")
        error: tuple[grpc.StatusCode | None, str] | None = None
        try:
            while not reader.done():
                if not self._queue and not self._reads_active:
                    if not await wait_for_work(self._wake, reader, limits.COMMIT_STREAM_IDLE_S) and not written:
                        break  # idle: half-close
                    continue
                if loop.time() - opened > limits.COMMIT_STREAM_LIFETIME_S / 2:
                    break  # rotate: new requests go on a new stream
                if (written and not self._answered.is_set() and len(self._queue) < limits.COMMIT_STREAM_BATCH_MAX):
                    if await linger(self._answered, self._queued_at, loop):
                        continue
                self._answered.clear()  # the next message waits for an answer to this one
                self._queued_at = loop.time()
                if not self._queue:  # only a read demand to say
                    demand_ts, self._reads_active, self._read_demand_ts = self._read_demand_ts, False, 0
                    self.batches_sent += 1
                    await call.write(adjudicator_pb2.CommitBatch(reads_active=True, read_demand_ts=demand_ts))
                    continue
                count = take_batch([p.size for p in self._queue], limits.COMMIT_STREAM_BATCH_MAX,
                                   limits.COMMIT_STREAM_BATCH_BYTES)
                batch, self._queue[:count] = self._queue[:count], []
                reads_active, self._reads_active = self._reads_active, False
                demand_ts, self._read_demand_ts = self._read_demand_ts, 0
                for pending in batch:
                    pending.written = True
                    written[pending.request.seq] = pending
                self.batches_sent += 1
                self.requests_sent += len(batch)
                wait_s = rpc.cross_az_wait_s(self.target)  # simulated AZ distance, per message
                if wait_s:
                    await asyncio.sleep(wait_s)
                await call.write(adjudicator_pb2.CommitBatch(requests=[p.request for p in batch],
                                                             reads_active=reads_active, read_demand_ts=demand_ts))
            if not reader.done():
                await call.done_writing()
            # Half-closed: the adjudicator answers what it holds, then ends the stream; each
            # send's own timeout bounds how long its caller waits, the stream deadline this.
            await reader
        except grpc.aio.AioRpcError as rpc_error:
            error = (rpc_error.code(), rpc_error.details() or "")
        except (grpc.RpcError, asyncio.InvalidStateError) as other:  # e.g. a write after the call ended
            error = (None, repr(other))
        except asyncio.CancelledError:
            reader.cancel()
            call.cancel()
            raise
        finally:
            exc = await stop_reader(reader)
        if error is None and exc is not None:
            error = (exc.code(), exc.details() or "") if isinstance(exc, grpc.aio.AioRpcError) else (None, repr(exc))
        if written:
            code, details = error or (None, "the stream ended without answering")
            if error is not None:
                log.warning("commit stream to %s failed with %d unanswered: %s %s",
                            self.target, len(written), code.name if code else "", details)
            for pending in list(written.values()):
                kind = failure_kind(True, code, details)
                self._fail(pending, SendError(kind, code.name if code else "UNKNOWN", details))
            written.clear()
        if error is not None:
            self._reads_active, self._read_demand_ts = False, 0  # a read demand is only a hint: not retried
            # Nothing queued was written to the failed stream: fail it as not sent rather than
            # reconnect in a loop; the router picks an adjudicator (or resends here) itself.
            code_name = error[0].name if error[0] is not None else "UNKNOWN"
            for pending in self._queue:
                self._fail(pending, SendError(SendFailure.NOT_SENT, code_name, error[1]))
            self._queue.clear()

    async def _read(self, call, written: dict[int, _Pending]) -> None:
        async for reply_batch in call:
            self._answered.set()
            for reply in reply_batch.replies:
                pending = written.pop(reply.seq, None)
                if pending is not None:
                    self._answer(pending, reply)
