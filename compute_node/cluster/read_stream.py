"""Reads from a compute node to one storage copy over one bidirectional gRPC stream.

Every session of a compute node that reads hands its Get or Scan to the ReadStream of each
copy it asks (compute_node/cluster/storage_reader.py decides which). The stream's sender task takes
everything queued at that moment (up to READ_STREAM_BATCH_MAX ops and READ_STREAM_BATCH_BYTES)
and writes it as one ReadBatch message; the copy answers each op when it can serve the op's ts,
batching the answers too (storage_node/service.py ReadStreamServer). So the more sessions read at
once, the bigger the messages, and one message replaces a unary call per read per copy: the
per-call cost of Python gRPC is paid per batch, at every hop.

Reads change nothing, so failure handling is simple: when the stream breaks (reset, deadline,
the copy restarted, a partition cut it), every op written on it and not yet answered fails with
the stream's error (as a `grpc.aio.AioRpcError`, like the unary call it replaces), and the
reader asks another copy or again; ops queued but not yet written go on a new stream (or fail
with the error when the stream never managed to send anything, so a dead copy is not redialled
in a loop). An op whose caller stopped waiting (its own timeout, a hedge
won) is forgotten; a late answer is dropped. A partition known before sending fails the op at
once, as the unary call did.

Batching is ack-clocked: an op finding nothing unanswered on the stream goes out at once (one
client: no added latency); while earlier ops are unanswered, new ones wait for the next answer
and then leave together, at most STREAM_LINGER_S later. Under load a message then carries what
arrived during one round trip instead of one op each, and message counts, not bytes, are what
Python gRPC costs.

Bounds: READ_STREAM_PENDING_MAX ops queued or unanswered per stream; a stream lives at most
READ_STREAM_LIFETIME_S (its gRPC deadline; the sender half-closes it after half of that and
opens a new one for new ops) and is half-closed after READ_STREAM_IDLE_S without ops.
"""
from __future__ import annotations

import asyncio
import itertools
import logging

import grpc

from compute_node.cluster.commit_stream import linger, stop_reader, take_batch, wait_for_work
from quorumdb import aio, limits, rpc
from quorumdb.pb import storage_pb2, storage_pb2_grpc

log = logging.getLogger("compute_node.cluster.read_stream")


def stream_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def result_error(result: storage_pb2.ReadResult) -> grpc.aio.AioRpcError | None:
    """The error a non-OK ReadResult stands for (what the unary call would have raised)."""
    if result.code == 0:
        return None
    try:
        code = next(c for c in grpc.StatusCode if c.value[0] == result.code)
    except StopIteration:
        code = grpc.StatusCode.UNKNOWN
    return stream_error(code, result.message)


class ReadStream:
    """The stream(s) from this compute node to one storage copy; `request` is safe from any task."""

    def __init__(self, target: str, stub: storage_pb2_grpc.StorageStub) -> None:
        self.target = target
        self._stub = stub
        self._queue: list[tuple[storage_pb2.ReadOp, asyncio.Future, int]] = []  # (op, future, size)
        self._queued_at = 0.0  # loop time the oldest queued op arrived
        self._wake = asyncio.Event()
        self._answered = asyncio.Event()  # set by the reader at every reply batch
        self._unanswered = 0
        self._ids = itertools.count(1)
        self._task: asyncio.Task | None = None
        self._closed = False
        # Figures for the compute node's status and the tests: messages written, ops they carried.
        self.batches_sent = 0
        self.ops_sent = 0

    def request(self, op: storage_pb2.ReadOp) -> asyncio.Future:
        """A future of the op's ReadResult payload (GetReply or ScanReply); it fails with an
        AioRpcError. The caller bounds the wait; cancelling the future abandons the op."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._closed:
            future.set_exception(stream_error(grpc.StatusCode.CANCELLED, "compute node is stopping"))
            return future
        state = rpc.identity()
        if state is not None and state.cut_peers and self.target in state.cut_peers:
            future.set_exception(rpc.partition_error(state.name, self.target))
            return future
        if self._unanswered >= limits.READ_STREAM_PENDING_MAX:
            future.set_exception(stream_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                              f"{self._unanswered} reads already wait on the stream to {self.target}"))
            return future
        op.id = next(self._ids)
        if not self._queue:
            self._queued_at = loop.time()
        self._queue.append((op, future, op.ByteSize()))
        self._unanswered += 1
        future.add_done_callback(self._done)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"read-stream-{self.target}")
        return future

    def _done(self, future: asyncio.Future) -> None:
        self._unanswered -= 1

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)
        error = stream_error(grpc.StatusCode.CANCELLED, "compute node is stopping")
        for _, future, _ in self._queue:
            _fail(future, error)
        self._queue.clear()

    # --- the sender task ------------------------------------------------------------------
    async def _run(self) -> None:
        """Open streams one after another while there is something to send."""
        while self._queue and not self._closed:
            await self._one_stream()

    async def _one_stream(self) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        call = self._stub.ReadStream(timeout=limits.READ_STREAM_LIFETIME_S)
        written: dict[int, asyncio.Future] = {}
        messages = 0  # written on this stream
        reader = asyncio.create_task(self._read(call, written), name=f"read-stream-read-{self.target}")
        error: grpc.aio.AioRpcError | None = None
        try:
            while not reader.done():
                if not self._queue:
                    if not await wait_for_work(self._wake, reader, limits.READ_STREAM_IDLE_S) and not written:
                        break  # idle: half-close
                    continue
                if loop.time() - opened > limits.READ_STREAM_LIFETIME_S / 2:
                    break  # rotate: new ops go on a new stream
                if written and not self._answered.is_set() and len(self._queue) < limits.READ_STREAM_BATCH_MAX:
                    if await linger(self._answered, self._queued_at, loop):
                        continue
                self._answered.clear()  # the next message waits for an answer to this one
                count = take_batch([size for _, _, size in self._queue], limits.READ_STREAM_BATCH_MAX,
                                   limits.READ_STREAM_BATCH_BYTES)
                batch, self._queue[:count] = self._queue[:count], []
                self._queued_at = loop.time()
                ops = []
                for op, future, _ in batch:
                    if future.done():
                        continue  # abandoned before it left
                    written[op.id] = future
                    ops.append(op)
                if not ops:
                    continue
                self.batches_sent += 1
                self.ops_sent += len(ops)
                wait_s = rpc.cross_az_wait_s(self.target)  # simulated AZ distance, per message
                if wait_s:
                    await asyncio.sleep(wait_s)
                await call.write(storage_pb2.ReadBatch(ops=ops))
                messages += 1
            if not reader.done():
                await call.done_writing()
            # Half-closed: the copy answers what it holds (each op within its wait), then ends.
            await reader
        except grpc.aio.AioRpcError as rpc_error:
            error = rpc_error
        except (grpc.RpcError, asyncio.InvalidStateError) as other:  # e.g. a write after the call ended
            error = stream_error(grpc.StatusCode.UNAVAILABLE, f"read stream to {self.target} broke: {other!r}")
        except asyncio.CancelledError:
            reader.cancel()
            call.cancel()
            raise
        finally:
            exc = await stop_reader(reader)
        if error is None and exc is not None:
            error = exc if isinstance(exc, grpc.aio.AioRpcError) else stream_error(
                grpc.StatusCode.UNAVAILABLE, f"read stream to {self.target} broke: {exc!r}")
        if written:
            error = error or stream_error(grpc.StatusCode.UNAVAILABLE,
                                          f"read stream to {self.target} ended without answering")
            for future in written.values():
                _fail(future, error)
            written.clear()
        if error is not None and not messages:
            # A stream that broke before it could send anything: what is queued fails too (the
            # reader asks another copy) rather than have this one reconnect in a loop. After a
            # stream that worked, what never left it goes on the next one (_run).
            for _, future, _ in self._queue:
                _fail(future, error)
            self._queue.clear()

    async def _read(self, call, written: dict[int, asyncio.Future]) -> None:
        async for reply_batch in call:
            self._answered.set()
            for result in reply_batch.results:
                future = written.pop(result.id, None)
                if future is None or future.done():
                    continue
                error = result_error(result)
                if error is not None:
                    future.set_exception(error)
                    future.exception()  # retrieved: a failed op nobody awaits any more is not logged
                elif result.WhichOneof("reply") == "get":
                    future.set_result(result.get)
                else:
                    future.set_result(result.scan)


def _fail(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # retrieved: see _read
