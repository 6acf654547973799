"""Scan pushdown on a storage node: a filter and a projection evaluated next to the data.

Theory of operation
-------------------
A full or range scan used to move every live row of the range from 3 copies to the
compute node, which then applied WHERE. With pushdown the compute node sends, with the
Scan, a small spec; the copy decodes each row it walks (quorumdb/keys.py's row codec,
shared by every node, so storage always knows the format) and returns only rows the
filter keeps, re-encoded with the columns the statement does not need set to NULL.

The spec is JSON (versioned, so a storage node refuses a version it does not know):

    {"v": 1, "filter": NODE | null, "columns": [slot, ...] | null}

`columns` are physical slots (catalog.TableDef slots) to keep; null keeps all. A
projected row keeps its length (slots beyond it stay absent, so the compute node still
fills ADD COLUMN's missing values) and the primary key is in the storage key anyway.
NODE is one of
    ["and", NODE, ...]  ["or", NODE, ...]  ["not", NODE]
    ["cmp", OP, slot, KIND, constant]   OP in = <> < <= > >=; KIND int|float|text|bool
    ["isnull", slot]                    true when the slot holds NULL
    ["col", slot]                       a boolean column used as a condition
evaluated with PostgreSQL's three-valued logic: a comparison with NULL is unknown
(None), NOT unknown is unknown, AND is false if any part is false, OR true if any part
is true. A row is returned only when the filter is *true*. Floats compare as
PostgreSQL's float8 does (NaN equals NaN and is above every number; -0 = 0); text
compares by code point (= UTF-8 byte order, the C collation the engine uses).

Safety: the compute node pushes only conjuncts whose result here is exactly the one it
would compute, and still applies the complete WHERE to every row it receives, so the
filter can only drop rows that WHERE drops anyway. When a row cannot be evaluated
exactly (a referenced slot is absent from an old row, or holds a value of another
Python type than KIND), the copy keeps the row: "unsure" never drops.

Paging: `filter_page` takes what Segment.scan walked (at most SCAN_PUSHDOWN_EXAMINE_MAX
live rows) and returns at most `limit` kept rows, `more`, and `resume_key` = the last key
examined when more (the answer covers every key up to it). read_core.merge_scan uses it
as that copy's coverage bound. This module is pure.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence

from quorumdb import keys, limits

VERSION = 1
OPS = ("=", "<>", "<", "<=", ">", ">=")
KINDS = ("int", "float", "text", "bool")


class PushdownError(ValueError):
    """A malformed or unsupported spec (the Scan is refused with INVALID_ARGUMENT)."""


class _Unsure(Exception):
    """The row cannot be evaluated exactly: keep it."""


Evaluator = Callable[[tuple], "bool | None"]


class Spec:
    def __init__(self, predicate: Evaluator | None, columns: frozenset[int] | None, max_slot: int) -> None:
        self.predicate = predicate
        self.columns = columns
        self.max_slot = max_slot  # highest slot the filter reads (-1: none)

    def apply(self, value: bytes) -> bytes | None:
        """The value to return for this row (projected), or None when the filter drops it."""
        if self.predicate is None and self.columns is None:
            return value
        stored = keys.decode_row(value)
        if self.predicate is not None and self.max_slot < len(stored):
            try:
                if self.predicate(stored) is not True:
                    return None
            except _Unsure:
                pass
        if self.columns is None:
            return value
        return keys.encode_row([v if i in self.columns else None for i, v in enumerate(stored)])


def encode(filter_node: Any, columns: Sequence[int] | None) -> bytes:
    doc = {"v": VERSION, "filter": filter_node, "columns": sorted(set(columns)) if columns is not None else None}
    data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    parse(data)  # the compute node never sends what a storage node would refuse
    return data


def parse(data: bytes) -> Spec:
    if len(data) > limits.SCAN_PUSHDOWN_SPEC_BYTES_MAX:
        raise PushdownError(f"pushdown spec of {len(data)} bytes exceeds {limits.SCAN_PUSHDOWN_SPEC_BYTES_MAX}")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PushdownError(f"pushdown spec is not JSON: {error}") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise PushdownError(f"unsupported pushdown spec version {doc.get('v') if isinstance(doc, dict) else None!r}")
    columns = doc.get("columns")
    if columns is not None:
        if not isinstance(columns, list) or not all(_is_slot(c) for c in columns):
            raise PushdownError("pushdown columns must be a list of slots")
        columns = frozenset(columns)
    slots: list[int] = []
    node = doc.get("filter")
    predicate = _compile(node, slots, 0) if node is not None else None
    return Spec(predicate, columns, max(slots, default=-1))


def filter_page(spec: Spec, rows: Sequence[tuple[bytes, bytes, int]], more: bool,
                limit: int) -> tuple[list[tuple[bytes, bytes, int]], bool, bytes | None]:
    """(kept rows, more, resume_key) from the rows Segment.scan walked (more: it stopped early)."""
    assert limit > 0
    assert rows or not more, "a scan that stopped early walked some rows"
    kept: list[tuple[bytes, bytes, int]] = []
    for position, (key, value, version_ts) in enumerate(rows):
        out = spec.apply(value)
        if out is not None:
            kept.append((key, out, version_ts))
            if len(kept) == limit and (more or position < len(rows) - 1):
                return kept, True, key
    if more:
        return kept, True, rows[-1][0]
    return kept, False, None


# --- compiling the filter into closures ---------------------------------------------------
def _is_slot(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 4096


def _compile(node: Any, slots: list[int], depth: int) -> Evaluator:
    if depth > limits.SCAN_PUSHDOWN_DEPTH_MAX:
        raise PushdownError("pushdown filter nests too deeply")
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise PushdownError(f"malformed pushdown node {node!r:.80}")
    op = node[0]
    if op in ("and", "or"):
        if len(node) < 2:
            raise PushdownError(f"{op} needs operands")
        parts = [_compile(child, slots, depth + 1) for child in node[1:]]
        return _and(parts) if op == "and" else _or(parts)
    if op == "not" and len(node) == 2:
        inner = _compile(node[1], slots, depth + 1)
        return lambda row: None if (result := inner(row)) is None else not result
    if op == "isnull" and len(node) == 2 and _is_slot(node[1]):
        slot = node[1]
        slots.append(slot)
        return lambda row: row[slot] is None
    if op == "col" and len(node) == 2 and _is_slot(node[1]):
        slot = node[1]
        slots.append(slot)
        return lambda row: _typed(row[slot], "bool")
    if op == "cmp" and len(node) == 5:
        _, symbol, slot, kind, constant = node
        if symbol not in OPS or not _is_slot(slot) or kind not in KINDS:
            raise PushdownError(f"malformed comparison {node!r:.80}")
        if constant is not None and not _constant_ok(constant, kind):
            raise PushdownError(f"constant {constant!r:.40} does not fit kind {kind}")
        slots.append(slot)
        return _comparison(symbol, slot, kind, constant)
    raise PushdownError(f"unknown pushdown node {op!r:.40}")


def _constant_ok(constant: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(constant, int) and not isinstance(constant, bool) and keys.INT_MIN <= constant <= keys.INT_MAX
    if kind == "float":
        return isinstance(constant, (int, float)) and not isinstance(constant, bool) and math.isfinite(constant)
    if kind == "text":
        return isinstance(constant, str)
    return isinstance(constant, bool)


def _and(parts: list[Evaluator]) -> Evaluator:
    def evaluate(row: tuple) -> bool | None:
        unknown = False
        for part in parts:
            result = part(row)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True
    return evaluate


def _or(parts: list[Evaluator]) -> Evaluator:
    def evaluate(row: tuple) -> bool | None:
        unknown = False
        for part in parts:
            result = part(row)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False
    return evaluate


def _typed(value: Any, kind: str) -> Any:
    """The stored value as a comparable of `kind` (None for NULL); _Unsure on a type mismatch."""
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, float):
            return _float_key(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
            return (0, float(value))
    elif kind == "text":
        if isinstance(value, str):
            return value
    elif isinstance(value, bool):
        return value
    raise _Unsure


def _float_key(value: float) -> tuple[int, float]:
    # PostgreSQL float8: NaN = NaN and NaN > every number; -0.0 == 0.0 (Python agrees on that).
    return (1, 0.0) if math.isnan(value) else (0, value)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _comparison(symbol: str, slot: int, kind: str, constant: Any) -> Evaluator:
    if constant is None:
        return lambda row: None  # a comparison with NULL is never true (nor false)
    right = _float_key(float(constant)) if kind == "float" else constant
    compare = _COMPARE[symbol]

    def evaluate(row: tuple) -> bool | None:
        left = _typed(row[slot], kind)
        return None if left is None else compare(left, right)
    return evaluate
