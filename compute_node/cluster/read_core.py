"""Reads from storage: which copies to ask and how to merge their answers.

Theory of operation
-------------------
Every key lives on 6 storage copies (2 per AZ). A read at `ts` needs answers from
3 of them (the 3/6 read quorum; a write is durable on 4/6, so any 3 copies include
at least one holding every durable version). A copy answers only once it has
applied every commit with commit_ts <= ts, so copies that answer should agree;
when they do not, the newest version wins (merge by highest version_ts) and the
disagreement is reported so the caller can log it (repair is the storage node's job).

Read modes (the cluster setting `read_mode`, or per session `SET quorumdb.read_mode`):

* `quorum` (the default): 3 of 6 copies, as described above.

* `single`: ONE copy, own AZ first, the next one only when it fails, says it is not
  caught up, or is slower than the hedge delay (the same hedge as the quorum read, with
  one answer needed instead of 3: `answers_needed`). At most READ_SINGLE_COPIES_MAX
  copies are tried this way; when none of them answered, the read falls back to the
  quorum read within the same deadline. Copies that recently refused a read as "not
  caught up" are asked last (`order_copies(..., behind_until_s=...)`), after copies
  that merely failed, so a lagging copy is skipped while any other can answer.

  Why one copy is not stale. A storage copy answers Get/Scan at `ts` only after
  `Segment.readiness(ts)` is READY, i.e. `ts <= closed_ts` (storage_node/service.py
  `_wait_readable`; otherwise it waits, bounded, and fails UNAVAILABLE "not caught up").
  `closed_ts` is raised only by (a) the ts of the last entry it applied (journal entries
  are in strictly increasing ts order, so any entry not yet applied has a larger ts) or
  (b) a journal closed-timestamp promise "every commit with ts <= closed_ts has index <=
  closed_index", used only once applied_index >= closed_index. A copy applies journal
  entries strictly consecutively (asserted in storage_node/core.py), so at READY it holds
  the journal's whole committed prefix through an index that includes every commit with
  commit_ts <= ts. The journal is the single order of all commits, so that prefix *is*
  every commit <= ts: the same state every other caught-up copy has. With commit-wait
  (a commit is acknowledged only when now().earliest > commit_ts) and start_ts =
  now().latest, a transaction that starts after an acknowledgement reads at a ts above
  that commit, on any compute node. The storage reply carries no "applied through" field;
  single mode relies only on what a successful reply guarantees (READY at the request's
  ts), never on a copy's earlier answers or on timing.

  What the quorum read buys on top: defence in depth. A copy whose local state is wrong
  but that believes itself caught up (a local log or checkpoint damaged in a way its CRCs
  and sha256 did not catch, a lost fsync, a bug in apply/repair) answers stale or missing
  versions with READY; a quorum read takes the newest of 3 answers, so it stays right
  unless all 3 copies asked are wrong, and it logs the disagreement. Aurora reads one
  copy in normal operation because its writer tracks each segment's SCL and picks one it
  knows is complete; here the copy checks itself against the read's ts, the same
  guarantee checked at the other end, without compute nodes tracking SCLs.

This module is pure: no I/O, no clock reads; `now_s` is passed in.

* `order_copies` decides the order in which copies are asked: the compute node's
  own AZ first (cheapest, lowest latency), then the others in the cluster file's
  order. Copies that failed recently (`suspect_until_s`) move to the end, keeping
  their relative order, so a dead copy in our AZ does not cost every read a retry.
  The caller asks the first 3 concurrently and the next one each time a copy fails.

* Hedging: a copy that is alive but not answering (paused, swapping, stuck on a
  disk) must not cost the whole RPC deadline. `LatencyWindow` keeps the recent
  answer latencies; `hedge_delay_s` is max(READ_HEDGE_DELAY_MIN_S, factor x median),
  capped at READ_HEDGE_DELAY_MAX_S. A copy asked that long ago without an answer no
  longer counts as "on its way": the caller asks the next copy too, and the first 3
  answers win (any 3 answering copies are a valid quorum; the merge does not care
  which). A copy left without an answer when the quorum completes is suspected like
  a failed one, so the next reads do not wait for it at all.

* `merge_point` merges per-key answers of Get: for each key the version with the
  highest version_ts wins (found=false with version_ts>0 is a tombstone and wins
  like any version; version_ts=0 means "no version at all").

* `merge_scan` merges pages of Scan that were all asked with the same
  (start, end, ts, limit). Scans return live versions only, in ascending key order,
  and `more=true` when the copy stopped at `limit`. A copy with more=true has only
  told us about keys up to its last key, so the merged page is valid up to the
  smallest last key among copies that said more (`bound`). Rows beyond the bound
  are dropped (a later page returns them), and the merged page says more=true; the
  caller continues strictly after `resume_after`. With pushdown (storage filters rows)
  a copy's page may be short or empty and carries `resume_key`, the last key it
  examined; that key, not its last row, is its coverage bound (`ScanPage.covered_to`),
  so a merged page may be empty with more=true. A key present on one copy
  and absent on another within the bound is a disagreement; presence wins (the
  copy that lacks it is the one missing a version, since answering copies are
  caught up to ts). Merged rows are capped at `limit`; a cap also means more=true.
"""
from __future__ import annotations

import collections
import dataclasses
import statistics
from typing import Sequence

from quorumdb import limits

# Copies that answer a read (3 of 6).
READ_QUORUM = 3

READ_MODES = ("quorum", "single")  # as quorumdb/config.py READ_MODES


def answers_needed(read_mode: str) -> int:
    """How many copies must answer a read in this mode."""
    match read_mode:
        case "quorum":
            return READ_QUORUM
        case "single":
            return 1
    raise ValueError(f"unknown read mode {read_mode!r} (one of {', '.join(READ_MODES)})")


@dataclasses.dataclass(frozen=True)
class Version:
    """One copy's answer for one key (mirrors storage.proto Version)."""

    key: bytes
    value: bytes
    version_ts: int
    found: bool


@dataclasses.dataclass(frozen=True)
class ScanPage:
    """One copy's answer to a Scan: live versions in ascending key order."""

    copy_name: str
    versions: tuple[Version, ...]
    more: bool
    # Pushdown scans: with more, the last key the copy examined (rows it filtered out
    # included); its answer covers every key up to it. None: the last version's key.
    resume_key: bytes | None = None

    @property
    def covered_to(self) -> bytes | None:
        """With more: the last key this page answers for; None when it covers the whole range."""
        if not self.more:
            return None
        return self.resume_key if self.resume_key else self.versions[-1].key


@dataclasses.dataclass
class PointMerge:
    # key -> value (None: no live version at ts).
    values: dict[bytes, bytes | None]
    # Keys on which the answering copies disagreed (distinct version_ts).
    disagreements: list[bytes]


@dataclasses.dataclass
class ScanMerge:
    rows: list[tuple[bytes, bytes]]
    more: bool
    disagreements: list[bytes]
    # When more: the last key this page covers; the next page starts strictly after it.
    resume_after: bytes | None


def order_copies(
    copy_names_azs: Sequence[tuple[str, str]],
    own_az: str,
    suspect_until_s: dict[str, float],
    now_s: float,
    behind_until_s: dict[str, float] | None = None,
) -> list[str]:
    """Names of the copies in the order to ask them (see module docstring).

    With `behind_until_s` (single mode), copies that recently said "not caught up" come
    after every other copy, suspected ones included."""
    own = [name for name, az in copy_names_azs if az == own_az]
    others = [name for name, az in copy_names_azs if az != own_az]
    preferred = own + others
    behind_until_s = behind_until_s or {}
    behind = [name for name in preferred if behind_until_s.get(name, 0.0) > now_s]
    preferred = [name for name in preferred if name not in behind]
    healthy = [name for name in preferred if suspect_until_s.get(name, 0.0) <= now_s]
    suspect = [name for name in preferred if suspect_until_s.get(name, 0.0) > now_s]
    return healthy + suspect + behind


class LatencyWindow:
    """The last `size` read latencies of successful answers (seconds)."""

    def __init__(self, size: int = limits.READ_LATENCY_WINDOW) -> None:
        assert size > 0
        self._samples: collections.deque[float] = collections.deque(maxlen=size)

    def record(self, latency_s: float) -> None:
        assert latency_s >= 0
        self._samples.append(latency_s)

    def median_s(self) -> float | None:
        return statistics.median(self._samples) if self._samples else None


def hedge_delay_s(
    median_s: float | None,
    delay_min_s: float = limits.READ_HEDGE_DELAY_MIN_S,
    delay_max_s: float = limits.READ_HEDGE_DELAY_MAX_S,
    factor: float = limits.READ_HEDGE_MEDIAN_FACTOR,
) -> float:
    """How long a copy may take before the next copy is asked as well."""
    if median_s is None:
        return delay_min_s
    return min(delay_max_s, max(delay_min_s, factor * median_s))


def copies_to_launch(answers: int, on_time_pending: int, unasked: int, needed: int = READ_QUORUM) -> int:
    """How many more copies to ask now: enough that answers plus on-time pending reach `needed`
    (READ_QUORUM, or 1 for a single-copy read)."""
    assert answers >= 0 and on_time_pending >= 0 and unasked >= 0
    assert needed >= 1
    return max(0, min(unasked, needed - answers - on_time_pending))


def merge_point(keys: Sequence[bytes], answers: Sequence[Sequence[Version]]) -> PointMerge:
    """Merge the Get answers of several copies; each answer has one Version per key, in `keys` order."""
    assert len(answers) > 0
    values: dict[bytes, bytes | None] = {}
    disagreements: list[bytes] = []
    for position, key in enumerate(keys):
        best: Version | None = None
        seen_ts: set[int] = set()
        for answer in answers:
            assert len(answer) == len(keys), "a copy answered a different number of keys"
            version = answer[position]
            assert version.key == key, "a copy answered keys out of order"
            seen_ts.add(version.version_ts)
            if best is None or version.version_ts > best.version_ts:
                best = version
        assert best is not None
        if len(seen_ts) > 1:
            disagreements.append(key)
        values[key] = best.value if best.found else None
    return PointMerge(values, disagreements)


def merge_scan(pages: Sequence[ScanPage], limit: int) -> ScanMerge:
    """Merge Scan pages of several copies asked with the same (start, end, ts, limit)."""
    assert len(pages) > 0
    assert limit > 0
    bound: bytes | None = None  # None: no copy stopped early, every row is covered
    for page in pages:
        if page.more:
            assert page.versions or page.resume_key, "a copy said more=true with an empty page"
            last_key = page.covered_to
            if bound is None or last_key < bound:
                bound = last_key
    best: dict[bytes, Version] = {}
    # key -> version_ts reported by each copy that holds it (within the bound).
    holders: dict[bytes, list[int]] = {}
    for page in pages:
        previous: bytes | None = None
        for version in page.versions:
            assert previous is None or version.key > previous, "a copy returned keys out of order"
            previous = version.key
            if bound is not None and version.key > bound:
                break
            holders.setdefault(version.key, []).append(version.version_ts)
            current = best.get(version.key)
            if current is None or version.version_ts > current.version_ts:
                best[version.key] = version
    # Every page covers every key up to the bound, so each copy should hold each key once.
    disagreements = [
        key for key in sorted(best) if len(holders[key]) != len(pages) or len(set(holders[key])) > 1
    ]
    rows = [(key, best[key].value) for key in sorted(best) if best[key].found]
    resume_after = bound
    if len(rows) > limit:
        rows = rows[:limit]
        resume_after = rows[-1][0]
    if resume_after is not None and rows:
        assert rows[-1][0] <= resume_after
    return ScanMerge(rows, resume_after is not None, disagreements, resume_after)


def check_get_answer(keys: Sequence[bytes], versions: Sequence[Version]) -> str | None:
    """Why a copy's Get answer is malformed (None when it is well formed)."""
    if len(versions) != len(keys):
        return f"answered {len(versions)} versions for {len(keys)} keys"
    for key, version in zip(keys, versions):
        if version.key != key:
            return "answered keys out of request order"
    return None


def check_scan_page(page: ScanPage, start: bytes, end: bytes | None, limit: int) -> str | None:
    """Why a copy's Scan page is malformed (None when it is well formed)."""
    if len(page.versions) > limit:
        return f"returned {len(page.versions)} rows for limit {limit}"
    if page.more and not page.versions and not page.resume_key:
        return "said more=true with an empty page"
    if page.resume_key:
        if not page.more:
            return "returned a resume key with more=false"
        if page.versions and page.resume_key < page.versions[-1].key:
            return "returned a resume key before its last row"
        if page.resume_key < start or (end is not None and page.resume_key >= end):
            return "returned a resume key outside the requested range"
    previous: bytes | None = None
    for version in page.versions:
        if previous is not None and version.key <= previous:
            return "returned keys out of ascending order"
        if version.key < start or (end is not None and version.key >= end):
            return "returned a key outside the requested range"
        previous = version.key
    return None

