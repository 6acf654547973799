"""The history of a run: every operation's invocation and completion, and every fault.

One JSON object per line (`history.jsonl` in the run's output directory), appended as
events happen, so a run that dies still leaves its history behind:

    {"type": "invoke", "process": 3, "f": "transfer", "value": {...}, "time": 1.234, "index": 17}
    {"type": "ok",     "process": 3, "f": "transfer", "value": {...}, "time": 1.301, "index": 18}
    {"type": "fail",   ... "error": "40001 ..."}   definitely did not take effect
    {"type": "info",   ... "error": "40003 ..."}   may or may not have taken effect
    {"type": "fault",  "kind": "kill-leader", "nodes": [...], "start": 5.1, "end": 9.3, ...}
    {"type": "meta",   ...}                        the run's parameters and schedule

`time` is seconds since the run's clients started (time.monotonic based). A process runs
one operation at a time, so its invoke is always followed by that operation's completion
(or by nothing, when the run ended first: the checker then treats it as "info").

`Op` pairs an invocation with its completion; `pair_ops` builds them from events. The
checkers only ever see `Op`s, so they can be driven by hand-made histories.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import threading
import time
from typing import Any, Iterable

OK, FAIL, INFO = "ok", "fail", "info"
COMPLETION_TYPES = (OK, FAIL, INFO)


@dataclasses.dataclass
class Op:
    """One operation: what was asked (invoke value) and how it ended."""

    process: int
    f: str
    value: Any  # the invoke value, replaced by the completion value when one was returned
    type: str  # ok | fail | info
    invoke_time: float
    complete_time: float | None  # None: never completed (counts as info)
    index: int  # position of the invocation in the history: a stable name for reports
    error: str = ""

    @property
    def name(self) -> str:
        return f"T{self.index}(p{self.process})"


class Recorder:
    """Thread-safe writer of history events (JSON lines, flushed per event)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")
        self._lock = threading.Lock()
        self._index = 0
        self.origin = time.monotonic()
        self.events: list[dict] = []

    def now(self) -> float:
        return time.monotonic() - self.origin

    def record(self, event: dict) -> dict:
        with self._lock:
            event = dict(event)
            event.setdefault("time", round(self.now(), 6))
            event["index"] = self._index
            self._index += 1
            self.events.append(event)
            if not self._file.closed:
                self._file.write(json.dumps(event, sort_keys=True, default=str) + "\n")
                self._file.flush()
            return event

    def invoke(self, process: int, f: str, value: Any) -> dict:
        return self.record({"type": "invoke", "process": process, "f": f, "value": value})

    def complete(self, kind: str, process: int, f: str, value: Any, error: str = "") -> dict:
        assert kind in COMPLETION_TYPES, kind
        event = {"type": kind, "process": process, "f": f, "value": value}
        if error:
            event["error"] = error
        return self.record(event)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def load(path: pathlib.Path | str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pair_ops(events: Iterable[dict]) -> list[Op]:
    """Operations from invoke/completion events, in invocation order.

    An invocation with no completion (the run ended while it was in flight) is "info".
    """
    open_by_process: dict[int, Op] = {}
    ops: list[Op] = []
    for event in events:
        kind = event.get("type")
        if kind == "invoke":
            process = event["process"]
            assert process not in open_by_process, f"process {process} invoked twice without completing"
            op = Op(process, event["f"], event.get("value"), INFO, event["time"], None, event["index"])
            open_by_process[process] = op
            ops.append(op)
        elif kind in COMPLETION_TYPES:
            op = open_by_process.pop(event["process"], None)
            assert op is not None, f"completion without invocation: {event}"
            op.type = kind
            op.complete_time = event["time"] if kind != INFO else None
            if event.get("value") is not None:
                op.value = event["value"]
            op.error = event.get("error", "")
    return ops


def faults(events: Iterable[dict]) -> list[dict]:
    return [event for event in events if event.get("type") == "fault"]
