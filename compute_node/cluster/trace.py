"""EXPLAIN ANALYZE: where one statement's (and its commit's) time goes.

Theory of operation
-------------------
`Session` (compute_node/session.py) runs an `EXPLAIN ANALYZE` statement, or `EXPLAIN ANALYZE
COMMIT`, with a `StatementTrace` in the context variable `CURRENT`; every other statement runs
with none, and the hooks below then cost one context-variable read each. While it is set:

* the Backend (compute_node/backend.py) opens a `ReadTrace` for each storage read (a point
  chunk or a scan page) and puts it in `CURRENT_READ` for the duration of the read, so that
  `TracedStorageReader._send` records each copy asked, when, and how its answer ended
  (answered, failed, or cancelled because the read had its answers first: hedging);
* the adjudicator client (compute_node/adjudicator_client.py) sets `explain` on the commit
  request; the leader answers with `CommitTiming` (adjudicator/metrics.py): queue, adjudication,
  journal append until fsynced on 2 of 3 replicas, commit-wait. The client records the reply,
  the adjudicator that gave it, and how many sends it took.

`render` turns a finished trace into the QUERY PLAN lines. Every time is measured, none derived,
except the two lines that say so ("on the compute node" and "commit stream and network"): those
are what a measured interval holds beyond the measured parts inside it. The top-level phases
(parse, plan, execute, commit) are consecutive intervals of the session; their sum is checked
against the statement's total, also measured (tests/test_explain_analyze_cluster.py): they agree
within EXPLAIN_TOLERANCE. The adjudicator's phases are measured on the leader's clock, as
durations.
"""
from __future__ import annotations

import contextvars
import dataclasses
import time
from typing import Any

from quorumdb import limits

CURRENT: contextvars.ContextVar["StatementTrace | None"] = contextvars.ContextVar("quorumdb_trace", default=None)
CURRENT_READ: contextvars.ContextVar["ReadTrace | None"] = contextvars.ContextVar("quorumdb_trace_read", default=None)

# The top-level phases of a trace add up to its total within this share of the total, or
# EXPLAIN_TOLERANCE_MIN_S, whichever is larger (what lies between them: a few Python statements).
EXPLAIN_TOLERANCE = 0.10
EXPLAIN_TOLERANCE_MIN_S = 0.002

clock = time.perf_counter


@dataclasses.dataclass
class CopyAsk:
    copy: str
    asked: float
    done: float = 0.0
    outcome: str = "no answer yet"


@dataclasses.dataclass
class ReadTrace:
    kind: str          # get | scan
    keys: int          # keys asked (get) or the page's row limit (scan)
    mode: str          # quorum | single
    started: float
    ended: float = 0.0
    copies: list[CopyAsk] = dataclasses.field(default_factory=list)
    error: str = ""

    def asked(self, copy: str, future: Any) -> None:
        if len(self.copies) >= limits.TRACE_COPIES_MAX:
            return
        ask = CopyAsk(copy, clock())
        self.copies.append(ask)
        future.add_done_callback(lambda done: _finish(ask, done))


def _finish(ask: CopyAsk, future: Any) -> None:
    ask.done = clock()
    if future.cancelled():
        ask.outcome = "cancelled"
        return
    error = future.exception()
    if error is None:
        ask.outcome = "answered"
        return
    code = getattr(error, "code", None)
    ask.outcome = f"failed: {code().name if callable(code) else type(error).__name__}"


@dataclasses.dataclass
class CommitTrace:
    started: float
    ended: float = 0.0
    read_only: bool = False
    outcome: str = ""      # committed, or the SQLSTATE of the error
    adjudicator: str = ""  # who gave the final answer
    sends: int = 0
    commit_ts: int = 0
    index: int = 0
    timing: Any = None     # adjudicator_pb2.CommitTiming of the final answer


@dataclasses.dataclass
class StatementTrace:
    node: str
    default_read_mode: str
    started: float = dataclasses.field(default_factory=clock)
    ended: float = 0.0
    parse_s: float = 0.0
    parse_cached: bool | None = None
    plan_s: float | None = None
    execute: tuple[float, float] | None = None
    rows: int | None = None
    reads: list[ReadTrace] = dataclasses.field(default_factory=list)
    reads_dropped: int = 0
    commit: CommitTrace | None = None
    commit_note: str = ""   # why there is no commit phase (inside a transaction block)

    def start_read(self, kind: str, keys: int, mode: str | None) -> ReadTrace | None:
        if len(self.reads) >= limits.TRACE_READS_MAX:
            self.reads_dropped += 1
            return None
        read = ReadTrace(kind, keys, mode or self.default_read_mode, clock())
        self.reads.append(read)
        return read

    def start_commit(self) -> CommitTrace:
        self.commit = CommitTrace(clock())
        return self.commit

    def phases(self) -> list[tuple[str, float]]:
        """The consecutive top-level phases, (name, seconds)."""
        phases = [("parse", self.parse_s)]
        if self.plan_s is not None:
            phases.append(("plan", self.plan_s))
        if self.execute is not None:
            phases.append(("execute", self.execute[1] - self.execute[0]))
        if self.commit is not None:
            phases.append(("commit", self.commit.ended - self.commit.started))
        return phases

    @property
    def total_s(self) -> float:
        return self.ended - self.started


def phases_agree(trace: StatementTrace) -> bool:
    """Do the top-level phases add up to the measured total (within the stated tolerance)?"""
    accounted = sum(seconds for _, seconds in trace.phases())
    return abs(trace.total_s - accounted) <= max(EXPLAIN_TOLERANCE * trace.total_s, EXPLAIN_TOLERANCE_MIN_S)


# --- hooks used by the Backend and the adjudicator client --------------------------------------
def start_read(kind: str, keys: int, mode: str | None):
    """(ReadTrace, context token) when a trace is on, else None: call end_read with it."""
    trace = CURRENT.get()
    if trace is None:
        return None
    read = trace.start_read(kind, keys, mode)
    if read is None:
        return None
    return read, CURRENT_READ.set(read)


def end_read(started, error: BaseException | None = None) -> None:
    read, token = started
    read.ended = clock()
    if error is not None:
        read.error = str(getattr(error, "message", "") or error)
    CURRENT_READ.reset(token)


# --- rendering ------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _ns_ms(nanoseconds: int) -> str:
    return f"{nanoseconds / 1e6:.3f} ms"


def render(trace: StatementTrace) -> list[str]:
    """The timing lines EXPLAIN ANALYZE prints after the plan."""
    lines = [f"Phases on {trace.node} (read_mode {trace.default_read_mode}):"]
    for name, seconds in trace.phases():
        match name:
            case "parse":
                cached = {True: "statement cache hit", False: "parsed: statement cache miss", None: ""}[trace.parse_cached]
                lines.append(f"  parse: {_ms(seconds)}" + (f" ({cached})" if cached else ""))
            case "plan":
                lines.append(f"  plan: {_ms(seconds)}")
            case "execute":
                lines += _execute_lines(trace, seconds)
            case "commit":
                lines += _commit_lines(trace.commit, seconds)
    if trace.commit is None and trace.commit_note:
        lines.append(f"  commit: {trace.commit_note}")
    accounted = sum(seconds for _, seconds in trace.phases())
    lines.append(f"Total: {_ms(trace.total_s)} (the phases above add up to {_ms(accounted)})")
    return lines


def _execute_lines(trace: StatementTrace, seconds: float) -> list[str]:
    rows = f", {trace.rows} row(s)" if trace.rows is not None else ""
    lines = [f"  execute: {_ms(seconds)}{rows}"]
    for number, read in enumerate(trace.reads, 1):
        duration = (read.ended or read.started) - read.started
        what = f"{read.keys} key(s)" if read.kind == "get" else f"page of up to {read.keys} row(s)"
        lines.append(f"    storage read {number} ({read.kind} {what}, {read.mode}): {_ms(duration)}"
                     + (f", failed: {read.error}" if read.error else ""))
        lines += _copy_lines(read)
    if trace.reads_dropped:
        lines.append(f"    ... and {trace.reads_dropped} more storage reads (not traced)")
    if trace.reads or trace.execute is not None:
        # Reads may overlap (a scan beside the schema-version check): count the time any was running.
        reads_s = covered_s([(read.started, read.ended or read.started) for read in trace.reads])
        lines.append(f"    waiting for storage (any read running): {_ms(reads_s)}")
        lines.append(f"    on the compute node (compile, evaluate, buffer writes): {_ms(max(0.0, seconds - reads_s))}")
    return lines


def covered_s(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of intervals."""
    covered, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        covered += stop - max(start, end)
        end = stop
    return covered


def _copy_lines(read: ReadTrace) -> list[str]:
    needed = 3 if read.mode == "quorum" else 1
    lines = []
    hedges = 0
    for position, ask in enumerate(read.copies):
        earlier = read.copies[:position]
        if position < needed:
            why = ""
        elif any(e.done == 0.0 or e.done > ask.asked for e in earlier if not e.outcome.startswith("failed")):
            why = " (hedge: another copy was slow)"
            hedges += 1
        else:
            why = " (after a failure)"
        took = f"{_ms(ask.done - ask.asked)}" if ask.done else "no answer"
        lines.append(f"      {ask.copy}: {ask.outcome} after {took}, asked at +{_ms(ask.asked - read.started)}{why}")
    answered = [ask.copy for ask in read.copies if ask.outcome == "answered"]
    lines.append(f"      answered by: {', '.join(answered) or 'none'}; hedges: {hedges}")
    return lines


def _commit_lines(commit: CommitTrace, seconds: float) -> list[str]:
    if commit.read_only:
        return [f"  commit: {_ms(seconds)} (read-only: ends on the compute node, nothing sent)"]
    head = f"  commit: {_ms(seconds)}, {commit.outcome or 'no answer'}"
    if commit.commit_ts:
        head += f" (commit_ts {commit.commit_ts}, journal index {commit.index})"
    lines = [head]
    timing = commit.timing
    if timing is None or not timing.total_ns:
        if commit.adjudicator:
            lines.append(f"    adjudicator {commit.adjudicator} gave no timings")
        return lines
    adjudicator_s = timing.total_ns / 1e9
    sends = f", {commit.sends} sends" if commit.sends > 1 else ""
    lines.append(f"    commit stream to {timing.leader or commit.adjudicator} and back (queue on this node, network, "
                 f"message handling{sends}): {_ms(max(0.0, seconds - adjudicator_s))}")
    lines.append(f"    adjudicator {timing.leader}: {_ns_ms(timing.total_ns)}")
    lines.append(f"      commit queue (waiting for its batch): {_ns_ms(timing.queue_ns)}")
    lines.append(f"      adjudication (conflict check of a batch of {timing.batch_commits}): "
                 f"{_ns_ms(timing.adjudication_ns)}")
    if timing.journal_append_ns:
        lines.append(f"      journal append + fsync on 2 of 3 replicas ({timing.batch_entries} entries in the batch): "
                     f"{_ns_ms(timing.journal_append_ns)}")
    if timing.commit_wait_ns:
        lines.append(f"      commit-wait (until now().earliest > commit_ts): {_ns_ms(timing.commit_wait_ns)}")
    parts = timing.queue_ns + timing.adjudication_ns + timing.journal_append_ns + timing.commit_wait_ns
    lines.append(f"      other (replies, task switches): {_ns_ms(max(0, timing.total_ns - parts))}")
    return lines
