"""`quorumdb backtrack --to-time T`: rewind a running cluster in place to the time T.

A backtrack is a journal entry, not a file operation (storage_node/core.py has the design): the
adjudicator leader gives it the next commit_ts b_ts like any commit and, from then on, refuses
every commit whose start_ts < b_ts (40001); each storage copy applies it from its own MVCC
history, so a read at any ts >= b_ts sees exactly what a read at T saw. It survives SIGKILL and
restart like every journal entry, and a later backtrack may move forward again within the window.

This command only starts it and reports:
  1. parse T (ISO 8601 UTC with ms); refuse a malformed time or one in the future;
  2. ask the storage copies for their backtrack window (`backtrack_window_start_ts`) and refuse a
     T before it, naming the window: nothing is changed;
  3. call Backtrack on the adjudicator leader (following NOT_LEADER hints, bounded attempts, each
     with a deadline); the reply comes once the entry is durable and its commit-wait has passed;
  4. wait (bounded) until the storage copies have applied the entry and print what each did.
Exit 0 when the copies rewound, 1 when anything was refused or failed (the message says what).
A copy applies the entry with the same window everywhere, so a race with the window's advance
between steps 2 and 3 ends in the same "refused" on every copy, never in copies that disagree.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Callable, Sequence, TextIO

import grpc

from quorumdb import config as config_mod
from quorumdb import limits, rpc, timefmt
from tools import nodestatus, toolcreds
from quorumdb.pb import (
    adjudicator_pb2,
    adjudicator_pb2_grpc,
    common_pb2,
)


class BacktrackError(Exception):
    """The backtrack was not started or did not complete (the message says why)."""


@dataclasses.dataclass(frozen=True)
class CopyOutcome:
    name: str
    applied: bool     # the copy has applied the entry
    line: str         # its Status `backtrack` line for the entry ("" if not known)

    @property
    def refused(self) -> bool:
        return "refused" in self.line


# --- pure parts -------------------------------------------------------------------------------
def parse_target(text: str, now_ns: int) -> int:
    """T in ns; raises BacktrackError for a malformed time or one after now."""
    try:
        to_ts = timefmt.parse_utc(text)
    except timefmt.TimeFormatError as error:
        raise BacktrackError(str(error)) from None
    if to_ts > now_ns:
        raise BacktrackError(f"--to-time {timefmt.format_utc(to_ts)} is in the future "
                             f"(now is {timefmt.format_utc(now_ns)}): a backtrack can only go back")
    return to_ts


def window_start(statuses: Sequence[common_pb2.NodeStatus | None]) -> int:
    """The window start the copies report: the highest (the most caught-up copy's; all agree once caught up)."""
    starts = [status.backtrack_window_start_ts for status in statuses if status is not None]
    if not starts:
        raise BacktrackError("no storage copy answered Status: cannot tell the backtrack window; nothing was changed")
    return max(starts)


def check_in_window(to_ts: int, start_ts: int, now_ns: int) -> None:
    if to_ts < start_ts:
        raise BacktrackError(
            f"--to-time {timefmt.format_utc(to_ts)} is outside the backtrack window: the storage copies can "
            f"rewind to {timefmt.format_utc(start_ts)} at the earliest (window "
            f"{timefmt.format_utc(start_ts)} .. {timefmt.format_utc(now_ns)}, "
            f"{describe_span((now_ns - start_ts) / 1e9)}); nothing was changed")


def describe_span(seconds: float) -> str:
    """A duration for people: '6m 12s', '23h 59m', '3d 4h'."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def copy_outcome(name: str, status: common_pb2.NodeStatus | None, index: int) -> CopyOutcome:
    if status is None:
        return CopyOutcome(name, False, "")
    line = status.backtrack if re.match(rf"index {index}\b", status.backtrack) else ""
    return CopyOutcome(name, status.applied_index >= index, line)


# --- talking to the cluster ---------------------------------------------------------------------
async def call_leader(channels: rpc.Channels, cluster: config_mod.ClusterConfig,
                      to_ts: int) -> adjudicator_pb2.BacktrackReply:
    """Backtrack on the leader: each adjudicator in turn, a NOT_LEADER hint first. Bounded attempts."""
    adjudicators = list(cluster.adjudicators)
    names = {node.name: node for node in adjudicators}
    hint = ""
    last_problem = "no adjudicator answered"
    for attempt in range(limits.BACKTRACK_CALL_ATTEMPTS_MAX):
        node = names.get(hint) or adjudicators[attempt % len(adjudicators)]
        hint = ""
        stub = adjudicator_pb2_grpc.AdjudicatorStub(channels.get(node.address))
        try:
            reply = await stub.Backtrack(adjudicator_pb2.BacktrackRequest(to_ts=to_ts),
                                         timeout=limits.BACKTRACK_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # It may have been appended: trying again could rewind twice; say so instead.
                raise BacktrackError(
                    f"{node.name} did not answer Backtrack within {limits.BACKTRACK_CALL_TIMEOUT_S:.0f} s: the "
                    "backtrack may or may not have happened; see `quorumdb status` (storage `backtrack` "
                    "lines) before trying again") from None
            last_problem = f"{node.name}: {error.code().name} {error.details()}"
            await asyncio.sleep(limits.BACKTRACK_RETRY_BACKOFF_S)
            continue
        match reply.outcome:
            case adjudicator_pb2.COMMITTED:
                return reply
            case adjudicator_pb2.NOT_LEADER:
                hint = reply.leader_hint
                last_problem = reply.message
                if not hint:
                    await asyncio.sleep(limits.BACKTRACK_RETRY_BACKOFF_S)
            case adjudicator_pb2.UNAVAILABLE:
                last_problem = f"{node.name}: {reply.message}"
                await asyncio.sleep(limits.BACKTRACK_RETRY_BACKOFF_S)
            case adjudicator_pb2.UNKNOWN:
                raise BacktrackError(f"{node.name}: the backtrack may or may not have happened ({reply.message}); "
                                     "see `quorumdb status` before trying again")
            case _:
                raise BacktrackError(f"{node.name} refused the backtrack: {reply.message}")
    raise BacktrackError(f"no adjudicator leader took the backtrack after {limits.BACKTRACK_CALL_ATTEMPTS_MAX} "
                         f"attempts ({last_problem}); nothing was changed")


async def wait_applied(channels: rpc.Channels, storages: Sequence[config_mod.NodeConfig], index: int,
                       timeout_s: float) -> list[CopyOutcome]:
    """Poll the copies until every one has applied `index` or timeout_s passed; their outcomes."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = await nodestatus.gather_statuses(storages, channels=channels)
        outcomes = [copy_outcome(node.name, status, index) for node, status in zip(storages, statuses)]
        if all(outcome.applied for outcome in outcomes) or time.monotonic() >= deadline:
            return outcomes
        await asyncio.sleep(limits.BACKTRACK_POLL_INTERVAL_S)


async def backtrack(cluster: config_mod.ClusterConfig, to_text: str, out: TextIO,
                    now_ns: Callable[[], int] = time.time_ns,
                    wait_timeout_s: float = limits.BACKTRACK_APPLY_WAIT_S, credentials=None) -> int:
    """The whole command; returns the exit status. Raises BacktrackError before anything changed.
    `credentials` (tools/toolcreds.py): default, the cluster's data directory's."""
    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    to_ts = parse_target(to_text, now_ns())
    storages = list(cluster.storages)
    channels = toolcreds.Channels(credentials if credentials is not None else toolcreds.for_cluster(cluster))
    try:
        start_ts = window_start(await nodestatus.gather_statuses(storages, channels=channels))
        now = now_ns()
        check_in_window(to_ts, start_ts, now)
        say(f"backtrack to {timefmt.describe(to_ts)}; window starts {timefmt.format_utc(start_ts)} "
            f"({describe_span((now - start_ts) / 1e9)} reachable)")
        started = time.monotonic()
        reply = await call_leader(channels, cluster, to_ts)
        say(f"backtrack entry: index {reply.index}, ts {timefmt.describe(reply.ts)} "
            f"(durable after {(time.monotonic() - started) * 1000:.0f} ms); commits of transactions that "
            "started before it now fail with SQLSTATE 40001")
        outcomes = await wait_applied(channels, storages, reply.index, wait_timeout_s)
    finally:
        await channels.close()
    for outcome in outcomes:
        if outcome.line:
            say(f"  {outcome.name}: {outcome.line}")
        elif outcome.applied:
            say(f"  {outcome.name}: applied (its outcome line was replaced by a later backtrack or a restart)")
        else:
            say(f"  {outcome.name}: not applied yet (within {wait_timeout_s:.0f} s); it applies the entry "
                "when it catches up")
    say(f"used: {timefmt.describe(to_ts)}; took {(time.monotonic() - started) * 1000:.0f} ms")
    if any(outcome.refused for outcome in outcomes):
        say("refused: the storage copies' window had moved past the time; nothing was rewound")
        return 1
    if not any(outcome.line for outcome in outcomes):
        say("no storage copy reported the backtrack's outcome in time")
        return 1
    say(f"rewound: reads now see the database as at {timefmt.format_utc(to_ts)}")
    return 0
