"""Sending commits to the adjudicator leader, and what its answers mean for SQL.

Routing: a commit goes to the cached leader. NOT_LEADER means nothing was done;
the client follows `leader_hint` (or, without a usable hint, the next adjudicator
not yet asked this round). A connection refused before anything was sent is also
safe to send elsewhere. When a round finds no leader (a failover in progress), the
client pauses COMMIT_ROUTE_BACKOFF_S and tries again, bounded by COMMIT_SENDS_MAX
sends and the commit deadline (COMMIT_TIMEOUT_S); each send gets at most
COMMIT_ATTEMPT_TIMEOUT_S, so a hung leader leaves time for the next one.

Resends: when a send may have reached a leader without an answer (deadline, a
connection broken after sending, an UNKNOWN reply: the leader was fenced or lost the
journal mid-append), the SAME request (same txn_id, start_ts, writes) is sent again
with `retry` set, to whoever leads, until the deadline. The adjudicator answers a
resend from its txn_id table: COMMITTED with the original commit_ts if the
transaction is in the journal, else it decides it afresh (adjudicator/core.py says
why that cannot commit twice). Outcomes are never guessed: "statement completion
unknown" (40003) is reported only when no leader gave a final answer within the
deadline after a send whose fate is unknown. Without such a send, failing to find a
leader is 57P03 (nothing was committed), naming the cause the adjudicators gave
(for instance "journal unavailable: no majority of journal replicas"). An UNAVAILABLE
reply to a first send (nothing decided) is 57P03 at once. `outcome_error`,
`next_target` and `give_up_error` are pure.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Sequence

import grpc

from compute_node.cluster import trace as trace_mod
from compute_node.cluster.commit_stream import CommitStream, SendError, SendFailure, failure_kind
from quorumdb import config as config_mod
from quorumdb import errors, limits, members, rpc
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc, common_pb2

log = logging.getLogger("compute_node.cluster.adjudicator_client")


def outcome_error(reply: adjudicator_pb2.CommitReply) -> errors.SqlError | None:
    """The SqlError for a final commit outcome (None for COMMITTED). NOT_LEADER is not final."""
    outcome = reply.outcome
    if outcome == adjudicator_pb2.COMMITTED:
        return None
    if outcome == adjudicator_pb2.CONFLICT:
        if reply.message.startswith(errors.STARTED_BEFORE_BACKTRACK):
            return errors.SqlError(errors.SERIALIZATION_FAILURE, reply.message,
                                   hint="Run the whole transaction again: it then sees the rewound database.")
        if any(code in reply.message for code in errors.DSQL_RETRY_CODES):  # the adjudicator named the case
            return errors.SqlError(errors.SERIALIZATION_FAILURE, reply.message, detail=_conflict_detail(reply))
        return errors.conflict(_key_text(reply.conflict_key))
    if outcome == adjudicator_pb2.TOO_OLD:
        return errors.SqlError(
            errors.SERIALIZATION_FAILURE,
            f"transaction is older than the maximum transaction age, please retry: ({errors.DSQL_WRITE_CONFLICT})",
            detail=reply.message,
        )
    if outcome == adjudicator_pb2.UNAVAILABLE:
        if reply.message.startswith("journal unavailable"):
            message = reply.message
        else:
            message = f"cluster unavailable: the commit was not made ({reply.message or 'no journal majority'})"
        return errors.SqlError(
            errors.CANNOT_CONNECT_NOW,
            message,
            detail=reply.message,
            hint="Nothing was committed; retry the transaction later.",
        )
    if outcome == adjudicator_pb2.UNKNOWN:
        return errors.completion_unknown(reply.message or "the journal append may or may not be durable")
    if outcome == adjudicator_pb2.NOT_LEADER:
        raise AssertionError("NOT_LEADER is routed, never mapped to an error")
    # OUTCOME_UNSPECIFIED or a value this build does not know: the commit may have happened.
    return errors.completion_unknown(f"unexpected commit outcome {outcome}")


def _key_text(key: bytes) -> str:
    return key.hex() if key else ""


def _conflict_detail(reply: adjudicator_pb2.CommitReply) -> str:
    return f"Conflicting key: {_key_text(reply.conflict_key)}" if reply.conflict_key else ""


def classify_rpc_error(code: grpc.StatusCode, details: str) -> SendFailure:
    """Whether a failed unary Commit RPC can have reached the adjudicator: the stream's rule
    (no connection was ever made), plus a refusal by the fault-injection interceptor, which a
    unary call meets before sending anything."""
    if code == grpc.StatusCode.UNAVAILABLE and "network partition" in (details or "").lower():
        return SendFailure.NOT_SENT
    return failure_kind(True, code, details)


@dataclasses.dataclass
class RouteState:
    """Which adjudicators one commit has asked in the current round."""

    names: Sequence[str]
    asked_this_round: set[str] = dataclasses.field(default_factory=set)


def next_target(state: RouteState, hint: str | None) -> str | None:
    """The next adjudicator to ask: the hint when usable, else one not asked this round; None ends the round."""
    if hint and hint in state.names and hint not in state.asked_this_round:
        return hint
    for name in state.names:
        if name not in state.asked_this_round:
            return name
    return None


def give_up_error(unknowns: list[str], refusals: list[str]) -> errors.SqlError:
    """The error when no leader gave a final answer within the deadline."""
    if unknowns:
        return errors.SqlError(
            errors.STATEMENT_COMPLETION_UNKNOWN,
            "statement completion unknown: the commit may or may not have happened "
            "(no adjudicator leader answered its resends within the deadline)",
            detail="; ".join([*unknowns[-3:], *refusals[-3:]]),
            hint="Check whether the transaction's effects are present before retrying it.",
        )
    journal_down = [refusal for refusal in refusals if "journal unavailable" in refusal]
    if journal_down:
        cause = journal_down[-1].split("no leader known: ", 1)[-1]
        message = f"cluster unavailable: no adjudicator leader ({cause}); nothing was committed"
    else:
        message = "cluster unavailable: no adjudicator leader reachable; nothing was committed"
    return errors.SqlError(
        errors.CANNOT_CONNECT_NOW,
        message,
        detail="; ".join(refusals[-6:]),
        hint="Retry the transaction when an adjudicator leads again.",
    )


def _note_reply(commit: trace_mod.CommitTrace, target: str, reply: adjudicator_pb2.CommitReply) -> None:
    """An EXPLAIN ANALYZE's commit: the final answer and where its time went."""
    commit.adjudicator = target
    commit.commit_ts = reply.commit_ts
    commit.index = reply.index
    if reply.HasField("timing"):
        commit.timing = reply.timing


class AdjudicatorClient:
    def __init__(self, cluster: config_mod.ClusterConfig, channels: rpc.Channels, region: str = "") -> None:
        """`region`: the adjudicators are another region's (write forwarding in a Global
        Database): every call crosses the WAN (rpc.Channels.get_remote)."""
        if region:
            adjudicators = cluster.adjudicators
            self._stubs = {node.name: adjudicator_pb2_grpc.AdjudicatorStub(channels.get_remote(node.address, region))
                           for node in adjudicators}
        else:
            # In an active-active cluster the adjudicators of both peers (qualified names), those
            # of the other peer across the WAN; otherwise the cluster's own.
            self._stubs = {member.name: adjudicator_pb2_grpc.AdjudicatorStub(channels.member(member))
                           for member in members.adjudicator_members(cluster)}
        assert self._stubs, "a cluster needs an adjudicator"
        self._names = list(self._stubs)
        # The leader we last heard of; the cluster file's initial leader to begin with.
        self.leader: str | None = cluster.initial_leader if cluster.initial_leader in self._stubs else None
        # Commits go over one CommitStream per adjudicator (group commit); QUORUMDB_UNARY_RPC=1
        # sends one unary Commit per transaction instead (kept to measure the difference).
        self.unary = rpc.unary_rpc()
        self._streams = {name: CommitStream(name, stub) for name, stub in self._stubs.items()}

    def note_reads(self, read_ts: int) -> None:
        """A transaction starts here and reads at read_ts: ask the leader to close it now
        (adjudicator/heartbeat.py). The commit stream's sender coalesces what piles up while it
        writes, so busy nodes send a demand per message, not per transaction."""
        if self.unary:
            return
        self._streams[self.leader or self._names[0]].signal_reads(read_ts)

    def stream_figures(self) -> tuple[int, int]:
        """(batch messages, requests) sent over the commit streams so far."""
        streams = self._streams.values()
        return sum(s.batches_sent for s in streams), sum(s.requests_sent for s in streams)

    async def close(self) -> None:
        for stream in self._streams.values():
            await stream.close()

    async def _send(self, target: str, request: adjudicator_pb2.CommitRequest,
                    timeout_s: float) -> adjudicator_pb2.CommitReply:
        """One send to one adjudicator; raises SendError."""
        if not self.unary:
            return await self._streams[target].send(request, timeout_s)
        try:
            return await self._stubs[target].Commit(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            kind = classify_rpc_error(error.code(), error.details())
            raise SendError(kind, error.code().name, error.details() or "") from None

    async def commit(
        self, start_ts: int, writes: list[tuple[bytes, bytes | None]], lock_keys: list[bytes], txn_id: str,
        private_keyspace: bool = False,
    ) -> int:
        """Commit at the leader; returns commit_ts or raises SqlError (40001, 40003, 57P03).
        `private_keyspace`: a bulk batch (adjudicator.proto CommitRequest.private_keyspace)."""
        assert txn_id, "a commit carries a txn_id: resends are recognised by it"
        request = adjudicator_pb2.CommitRequest(
            start_ts=start_ts,
            writes=[
                common_pb2.Write(key=key, value=value or b"", tombstone=value is None) for key, value in writes
            ],
            lock_keys=lock_keys,
            txn_id=txn_id,
            private_keyspace=private_keyspace,
        )
        traced = trace_mod.CURRENT.get()  # EXPLAIN ANALYZE: the leader answers where the time went
        if traced is not None:
            request.explain = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.COMMIT_TIMEOUT_S
        state = RouteState(self._names)
        hint = self.leader
        refusals: list[str] = []
        unknowns: list[str] = []  # sends whose fate is unknown: from then on, every send is a resend
        for _ in range(limits.COMMIT_SENDS_MAX):
            target = next_target(state, hint)
            if target is None:  # nobody leads right now: wait for a failover to finish
                state.asked_this_round.clear()
                hint = None
                if loop.time() + limits.COMMIT_ROUTE_BACKOFF_S >= deadline:
                    break
                await asyncio.sleep(limits.COMMIT_ROUTE_BACKOFF_S)
                continue
            state.asked_this_round.add(target)
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                break
            request.retry = bool(unknowns)
            if traced is not None and traced.commit is not None:
                traced.commit.sends += 1
            try:
                reply = await self._send(target, request, min(remaining_s, limits.COMMIT_ATTEMPT_TIMEOUT_S))
            except SendError as error:
                if self.leader == target:
                    self.leader = None
                hint = None
                if error.kind == SendFailure.NOT_SENT:
                    refusals.append(f"{target}: unreachable")
                    continue
                log.warning("commit %s to %s failed after sending (%s); resending to the leader",
                            txn_id, target, error.code)
                unknowns.append(f"{target}: {error.code} {error.details}".strip())
                continue
            if reply.outcome == adjudicator_pb2.NOT_LEADER:
                refusals.append(f"{target}: {reply.message or 'not leader'}")
                if self.leader == target:
                    self.leader = None
                hint = reply.leader_hint or None
                continue
            if reply.outcome == adjudicator_pb2.UNKNOWN or (
                reply.outcome == adjudicator_pb2.UNAVAILABLE and unknowns
            ):
                # The leader could not tell (fenced, journal lost mid-append), or cannot take
                # the resend now: the transaction may still be committed; ask again.
                log.warning("commit %s at %s: %s; resending", txn_id, target, reply.message)
                unknowns.append(f"{target}: {reply.message}")
                if self.leader == target:
                    self.leader = None
                hint = None
                continue
            self.leader = target
            if traced is not None and traced.commit is not None:
                _note_reply(traced.commit, target, reply)
            error = outcome_error(reply)
            if error is not None:
                raise error
            assert reply.commit_ts > start_ts, "the adjudicator must assign commit_ts > start_ts"
            if reply.duplicate:
                log.info("commit %s: resend answered from the txn_id table (commit_ts %d)", txn_id, reply.commit_ts)
            return reply.commit_ts
        raise give_up_error(unknowns, refusals)

    async def find_leader(self) -> tuple[str | None, str]:
        """Ask every adjudicator's Status; returns (leader name or None, why not)."""
        names = self._names

        async def status(name: str):
            return await self._stubs[name].Status(common_pb2.StatusRequest(), timeout=limits.STATUS_TIMEOUT_S)

        results = await asyncio.gather(*(status(name) for name in names), return_exceptions=True)
        best: tuple[int, str] | None = None
        hints: list[str] = []
        for name, result in zip(names, results):
            if isinstance(result, BaseException):
                continue
            if result.role == "leader" and (best is None or result.epoch > best[0]):
                best = (result.epoch, name)
            if result.leader:
                hints.append(result.leader)
        if best is not None:
            self.leader = best[1]
            return best[1], ""
        reachable = sum(1 for result in results if not isinstance(result, BaseException))
        if reachable == 0:
            return None, "no adjudicator reachable"
        return None, f"no adjudicator leads ({reachable} reachable, hints {sorted(set(hints))})"
