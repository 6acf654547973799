"""Journal follower: committed entries, in order, from whichever replica answers.

Used by storage nodes and standby adjudicators:

    follower = JournalFollower(cluster, "storage-az1-a", prefer_az="az1", channels=channels)
    async for batch in follower.batches(from_index=applied_index + 1):
        for entry in batch.entries: apply(entry)   # consecutive, starting at the index you asked for
        if applied_index >= batch.closed_index:
            closed_ts = max(closed_ts, batch.closed_ts)

Guarantees:
* `entries` are committed and consecutive, the first one is exactly the next expected
  index (duplicates after a replica switch are dropped; nothing is ever skipped unless
  allow_skip and the journal has truncated what was asked for).
* Closed timestamp: after applying every entry up to index i, the batch's closed_ts may
  be used once i >= closed_index: every transaction with commit_ts <= closed_ts has been
  delivered. A batch with no entries is a heartbeat carrying a newer closed_ts.
  closed (ts, index) and commit_index never go backwards across batches, even across
  a switch of replica.
* Truncation: if the journal no longer holds `from_index` (4 of 6 storage copies hold
  it), with allow_skip a batch with skipped_to=first_index and no entries is yielded and
  following continues from first_index (fetch the gap from storage peers); without
  allow_skip, JournalTruncated(first_index) is raised.
* Subscribes to the replica in its own AZ first; on an error, or no reply for
  limits.JOURNAL_FOLLOWER_IDLE_S (a replica cut off from the writer), it rotates to the
  next replica with a bounded backoff. Streams end after limits.SUBSCRIBE_STREAM_S and
  are renewed at once.
The iterator runs until the caller stops iterating (or cancels its task).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import AsyncIterator

import grpc

from quorumdb import limits, rpc
from quorumdb.config import ClusterConfig
from quorumdb.pb import common_pb2, journal_pb2, journal_pb2_grpc

log = logging.getLogger("journal.follower")


@dataclasses.dataclass
class FollowBatch:
    entries: list[common_pb2.Entry]
    commit_index: int
    closed_ts: int
    closed_index: int
    epoch: int
    leader: str
    skipped_to: int = 0


class JournalTruncated(Exception):
    """The journal dropped the entries asked for; they are on storage peers."""

    def __init__(self, first_index: int):
        super().__init__(f"the journal starts at index {first_index}")
        self.first_index = first_index


class JournalFollower:
    def __init__(self, cluster: ClusterConfig, subscriber: str, prefer_az: str, channels: rpc.Channels):
        self.subscriber = subscriber
        journals = cluster.journals
        assert journals, "the cluster file names no journal replica"
        ordered = [n for n in journals if n.az == prefer_az] + [n for n in journals if n.az != prefer_az]
        self.replicas = [n.name for n in ordered]
        self._stubs = {n.name: journal_pb2_grpc.JournalStub(channels.get(n.address)) for n in ordered}
        self.current_replica = self.replicas[0]
        self._commit_index = 0
        self._closed = (0, 0)

    async def batches(self, from_index: int, allow_skip: bool = False) -> AsyncIterator[FollowBatch]:
        assert from_index >= 1
        next_index = from_index
        position = 0
        backoff_s = limits.JOURNAL_RETRY_BACKOFF_MIN_S
        while True:
            name = self.replicas[position % len(self.replicas)]
            self.current_replica = name
            call = self._stubs[name].Subscribe(
                journal_pb2.SubscribeRequest(from_index=next_index, subscriber=self.subscriber),
                timeout=limits.SUBSCRIBE_STREAM_S,
            )
            healthy = False
            try:
                while True:
                    async with asyncio.timeout(limits.JOURNAL_FOLLOWER_IDLE_S):  # not wait_for: see quorumdb/aio.py
                        reply = await call.read()
                    if reply is grpc.aio.EOF:
                        healthy = True  # the stream's deadline: renew at once
                        break
                    if reply.truncated:
                        if not allow_skip:
                            raise JournalTruncated(reply.first_index)
                        assert reply.first_index > next_index
                        next_index = reply.first_index
                        yield self._batch(reply, [], skipped_to=reply.first_index)
                        healthy = True
                        break
                    entries = [entry for entry in reply.entries if entry.index >= next_index]
                    if entries and entries[0].index != next_index:
                        log.warning("%s sent entry %d when %d was next; resubscribing",
                                    name, entries[0].index, next_index)
                        break
                    _check_consecutive(entries)
                    next_index += len(entries)
                    backoff_s = limits.JOURNAL_RETRY_BACKOFF_MIN_S
                    yield self._batch(reply, entries)
            except TimeoutError:
                log.info("no reply from %s for %.1f s; switching replica", name, limits.JOURNAL_FOLLOWER_IDLE_S)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    healthy = True
                else:
                    log.info("subscription to %s failed: %s", name, error.code())
            finally:
                call.cancel()
            if not healthy:
                position += 1
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, limits.JOURNAL_RETRY_BACKOFF_MAX_S)

    def _batch(self, reply: journal_pb2.SubscribeReply, entries: list[common_pb2.Entry],
               skipped_to: int = 0) -> FollowBatch:
        self._commit_index = max(self._commit_index, reply.commit_index)
        self._closed = max(self._closed, (reply.closed_ts, reply.closed_index))
        return FollowBatch(
            entries=entries,
            commit_index=self._commit_index,
            closed_ts=self._closed[0],
            closed_index=self._closed[1],
            epoch=reply.epoch,
            leader=reply.leader,
            skipped_to=skipped_to,
        )


def _check_consecutive(entries: list[common_pb2.Entry]) -> None:
    for before, after in zip(entries, entries[1:]):
        assert after.index == before.index + 1, "a replica sent entries out of order"
