"""Checkers: pure functions from a history (a list of `Op`s plus the final reads) to a verdict.

No I/O, no clock, no randomness: the same history always gives the same verdict, and unit
tests drive them with hand-made histories.

Operation types (see history.py): "ok" took effect; "fail" definitely did not; "info" may or
may not have (40003, a connection lost during COMMIT, a run that ended mid-operation).

bank     Every successful snapshot read of all accounts sums to the fixed total and has every
         account (a torn or stale snapshot breaks the sum). At the end, with every node back:
         each acknowledged transfer's id is present, no definitely-failed transfer's id is, no
         id is present that was never attempted, and each balance equals its initial value
         plus the replay of the transfers whose id is present (acknowledged ones, and unknown
         ones that did happen). No balance is ever negative (a transfer only moves money the
         source had at its snapshot; first committer wins makes that safe).

set      Every acknowledged add is in the final read; nothing is read (during the run or at the
         end) that was never attempted or that definitely failed; a read misses no add that was
         acknowledged before the read began (real time: no stale read).

append   Elle-style list append (Kingsbury & Alvaro, "Elle", VLDB 2020). Each key holds a list;
         transactions append unique values and read whole lists. Because values are unique and
         lists only grow, a read names the exact version it saw and the order of versions:
           - all reads of a key must be prefixes of one another ("incompatible order");
           - the longest read gives the version order, hence the dependency graph between
             committed transactions: ww (T1 appended the version before T2's), wr (T2 read
             T1's append last), rw (T1 read a version T2 then overwrote), and real-time edges
             (T1 completed before T2 began; kept as a transitive reduction, about one edge per
             client per transaction);
           - G0: a cycle of ww edges; G1c: a cycle of ww/wr edges (with a wr);
             G-single: a cycle with exactly one rw edge (read skew: forbidden by snapshot
             isolation); cycles with two or more rw edges (write skew) are allowed;
             *-realtime: the same cycles that close only through a real-time edge (a stale
             read: the database served a snapshot older than a commit it had acknowledged);
           - G1a: a read of a value whose transaction failed; G1b: a read that ends inside
             another transaction's appends to the key (an intermediate version);
           - lost update: two committed transactions read the same version of a key and both
             appended to it (first committer wins must abort one);
           - internal: a read after the transaction's own appends does not end with them;
           - atomicity / lost append: at the end, a committed transaction's appends are either
             all present (acknowledged ones must be) or, for unknown outcomes, all absent;
             garbage / duplicate reads.
         "Committed" means ok, or info whose appends some committed read observed.
         Work is bounded: at most CHECK_OPS_MAX operations, CHECK_RW_EDGES_MAX rw edges
         searched, ANOMALIES_REPORTED_MAX reports per kind; every anomaly names its transactions
         (T<index>(p<process>), the index of the invocation in history.jsonl).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterable

from quorumdb import graphs
from tools.jepsen import limits
from tools.jepsen.history import FAIL, INFO, OK, Op


@dataclasses.dataclass
class Verdict:
    workload: str
    valid: bool = True
    anomalies: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, kind: str, description: str) -> None:
        self.valid = False
        self.counts[kind] += 1
        reported = self.anomalies.setdefault(kind, [])
        if len(reported) < limits.ANOMALIES_REPORTED_MAX:
            reported.append(description)

    def text(self) -> str:
        lines = [f"{self.workload}: {'VALID' if self.valid else 'INVALID'}  "
                 + "  ".join(f"{k}={v}" for k, v in sorted(self.stats.items()))]
        for kind, descriptions in sorted(self.anomalies.items()):
            lines.append(f"  {kind}: {self.counts[kind]}")
            lines += [f"    - {d}" for d in descriptions]
            if self.counts[kind] > len(descriptions):
                lines.append(f"    ... and {self.counts[kind] - len(descriptions)} more")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"workload": self.workload, "valid": self.valid, "anomalies": self.anomalies,
                "counts": dict(self.counts), "stats": self.stats}


def _too_large(verdict: Verdict, ops: list[Op]) -> bool:
    if len(ops) > limits.CHECK_OPS_MAX:
        verdict.add("unchecked", f"{len(ops)} operations exceed CHECK_OPS_MAX={limits.CHECK_OPS_MAX}")
        return True
    return False


def _type_counts(ops: Iterable[Op]) -> dict[str, int]:
    counts = collections.Counter(op.type for op in ops)
    return {"ok": counts[OK], "fail": counts[FAIL], "info": counts[INFO]}


# --- bank ------------------------------------------------------------------------------


def check_bank(ops: list[Op], initial: dict[int, int], final: dict | None) -> Verdict:
    """ops: "transfer" {id, from, to, amount} and "read" {balances: [[account, balance], ...]}.
    final: {"balances": [[account, balance], ...], "transfer_ids": [...]} or None (not read)."""
    verdict = Verdict("bank")
    if _too_large(verdict, ops):
        return verdict
    total = sum(initial.values())
    transfers = [op for op in ops if op.f == "transfer"]
    reads = [op for op in ops if op.f == "read" and op.type == OK]
    verdict.stats.update({f"transfers_{k}": v for k, v in _type_counts(transfers).items()})
    verdict.stats["reads_ok"] = len(reads)
    for op in reads:
        _check_bank_snapshot(verdict, op.name, dict(map(tuple, op.value["balances"])), initial, total)
    if final is None:
        verdict.add("no-final-read", "the final balances could not be read")
        return verdict
    balances = dict(map(tuple, final["balances"]))
    _check_bank_snapshot(verdict, "final read", balances, initial, total)
    present = set(final["transfer_ids"])
    by_id: dict[str, Op] = {}
    for op in transfers:
        assert op.value["id"] not in by_id, f"transfer id {op.value['id']} used twice"
        by_id[op.value["id"]] = op
    expected = dict(initial)
    for transfer_id in sorted(present - by_id.keys()):
        verdict.add("never-attempted", f"transfer {transfer_id} is present but no client attempted it")
    for transfer_id, op in by_id.items():
        if op.type == OK and transfer_id not in present:
            verdict.add("lost-ack", f"{op.name} transfer {transfer_id} was acknowledged but is missing")
        if op.type == FAIL and transfer_id in present:
            verdict.add("failed-present", f"{op.name} transfer {transfer_id} failed ({op.error}) but is present")
        if transfer_id in present:
            value = op.value
            expected[value["from"]] = expected.get(value["from"], 0) - value["amount"]
            expected[value["to"]] = expected.get(value["to"], 0) + value["amount"]
    for account in sorted(set(expected) | set(balances)):
        if expected.get(account) != balances.get(account):
            verdict.add("final-balance", f"account {account}: balance {balances.get(account)}, "
                        f"replay of the present transfers gives {expected.get(account)}")
    unknown = [op for op in transfers if op.type == INFO]
    verdict.stats["unknown_resolved_committed"] = sum(1 for op in unknown if op.value["id"] in present)
    verdict.stats["unknown_resolved_absent"] = len(unknown) - verdict.stats["unknown_resolved_committed"]
    return verdict


def _check_bank_snapshot(verdict: Verdict, name: str, balances: dict, initial: dict, total: int) -> None:
    if set(balances) != set(initial):
        missing = sorted(set(initial) - set(balances))
        extra = sorted(set(balances) - set(initial))
        verdict.add("snapshot-accounts", f"{name}: accounts missing {missing}, unexpected {extra}")
    if sum(balances.values()) != total:
        verdict.add("snapshot-sum", f"{name}: balances sum to {sum(balances.values())}, not {total}: {balances}")
    negative = sorted(a for a, b in balances.items() if b < 0)
    if negative:
        verdict.add("negative-balance", f"{name}: accounts {negative} went negative")


# --- set -------------------------------------------------------------------------------


def check_set(ops: list[Op], final: list | None) -> Verdict:
    """ops: "add" element (int) and "read" [elements]. final: every element present, or None."""
    verdict = Verdict("set")
    if _too_large(verdict, ops):
        return verdict
    adds = [op for op in ops if op.f == "add"]
    reads = [op for op in ops if op.f == "read" and op.type == OK]
    verdict.stats.update({f"adds_{k}": v for k, v in _type_counts(adds).items()})
    verdict.stats["reads_ok"] = len(reads)
    by_element: dict[Any, Op] = {}
    for op in adds:
        assert op.value not in by_element, f"element {op.value} added twice"
        by_element[op.value] = op
    acknowledged = sorted((op for op in adds if op.type == OK), key=lambda op: op.complete_time)
    for read in reads:
        _check_set_members(verdict, read.name, read.value, by_element)
        seen = set(read.value)
        for add in acknowledged:
            if add.complete_time >= read.invoke_time:
                break
            if add.value not in seen:
                verdict.add("stale-read", f"{read.name} (began at {read.invoke_time:.3f} s) misses element "
                            f"{add.value} acknowledged to {add.name} at {add.complete_time:.3f} s")
    if final is None:
        verdict.add("no-final-read", "the final set could not be read")
        return verdict
    _check_set_members(verdict, "final read", final, by_element)
    present = set(final)
    for add in acknowledged:
        if add.value not in present:
            verdict.add("lost-ack", f"{add.name} add {add.value} was acknowledged but is missing")
    unknown = [op for op in adds if op.type == INFO]
    verdict.stats["unknown_resolved_committed"] = sum(1 for op in unknown if op.value in present)
    verdict.stats["final_size"] = len(present)
    return verdict


def _check_set_members(verdict: Verdict, name: str, elements: list, by_element: dict[Any, Op]) -> None:
    counts = collections.Counter(elements)
    for element, count in sorted(counts.items()):
        if count > 1:
            verdict.add("duplicate", f"{name}: element {element} read {count} times")
        add = by_element.get(element)
        if add is None:
            verdict.add("never-attempted", f"{name}: element {element} was never added")
        elif add.type == FAIL:
            verdict.add("failed-present", f"{name}: element {element} of failed {add.name} ({add.error}) is present")


# --- append ----------------------------------------------------------------------------

APPEND, READ = "append", "r"
EDGE_WW, EDGE_WR, EDGE_RW, EDGE_RT = "ww", "wr", "rw", "rt"
FINAL_NAME = "final-read"


class _Graph:
    """Dependency graph: edges[a][b] = [(kind, key), ...] between transaction indexes."""

    def __init__(self) -> None:
        self.edges: dict[int, dict[int, list[tuple[str, Any]]]] = collections.defaultdict(dict)
        self.edge_count = collections.Counter()

    def add(self, a: int, b: int, kind: str, key: Any = None) -> None:
        if a == b:
            return
        labels = self.edges[a].setdefault(b, [])
        if not any(label[0] == kind for label in labels):
            labels.append((kind, key))
            self.edge_count[kind] += 1

    def successors(self, a: int, kinds: frozenset[str]) -> Iterable[int]:
        for b, labels in self.edges.get(a, {}).items():
            if any(kind in kinds for kind, _ in labels):
                yield b

    def label(self, a: int, b: int, kinds: frozenset[str]) -> str:
        for kind, key in self.edges[a][b]:
            if kind in kinds:
                return kind if key is None else f"{kind}({key})"
        raise AssertionError("no edge of those kinds")


def _sccs(nodes: Iterable[int], graph: _Graph, kinds: frozenset[str]) -> list[set[int]]:
    """Strongly connected components with more than one node, over the edges of `kinds`."""
    return graphs.strongly_connected(nodes, lambda node: graph.successors(node, kinds))


def _path(graph: _Graph, start: int, goal: int, kinds: frozenset[str], within: set[int]) -> list[int] | None:
    """Shortest path start..goal using edges of `kinds` inside `within` (BFS), or None."""
    parent: dict[int, int | None] = {start: None}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while parent[path[-1]] is not None:
                path.append(parent[path[-1]])
            return path[::-1]
        for succ in graph.successors(node, kinds):
            if succ in within and succ not in parent:
                parent[succ] = node
                queue.append(succ)
    return None


@dataclasses.dataclass
class _Txn:
    op: Op
    appends: list[tuple[Any, Any]]  # (key, value) in order
    external_reads: dict[Any, list]  # key -> list read before the txn's own appends to it
    all_reads: list[tuple[Any, list, list]]  # (key, list read, own appends to key before it)


def _parse_txn(op: Op) -> _Txn:
    appends: list[tuple[Any, Any]] = []
    external: dict[Any, list] = {}
    all_reads: list[tuple[Any, list, list]] = []
    own: dict[Any, list] = collections.defaultdict(list)
    for micro in op.value:
        kind, key, value = micro[0], micro[1], micro[2]
        if kind == APPEND:
            appends.append((key, value))
            own[key].append(value)
        elif kind == READ and value is not None:
            all_reads.append((key, list(value), list(own[key])))
            if not own[key] and key not in external:
                external[key] = list(value)
    return _Txn(op, appends, external, all_reads)


def check_append(ops: list[Op], final: dict | None) -> Verdict:
    """ops: "txn" with value [[f, key, value], ...]: ["append", k, v] or ["r", k, list-or-None].
    final: {key: list} read after recovery (a last, read-only transaction), or None."""
    verdict = Verdict("append")
    if _too_large(verdict, ops):
        return verdict
    txn_ops = [op for op in ops if op.f == "txn"]
    verdict.stats.update({f"txns_{k}": v for k, v in _type_counts(txn_ops).items()})
    txns = {op.index: _parse_txn(op) for op in txn_ops}
    final_index = None
    if final is not None:
        final_index = max([op.index for op in ops], default=0) + 1
        end = max([t for op in ops for t in (op.invoke_time, op.complete_time) if t is not None], default=0.0)
        final_op = Op(-1, "txn", [[READ, k, v] for k, v in sorted(final.items())], OK, end + 1, end + 1, final_index)
        txns[final_index] = _parse_txn(final_op)

    writer: dict[tuple[Any, Any], int] = {}
    for index, txn in txns.items():
        for key, value in txn.appends:
            assert (key, value) not in writer, f"value {value} appended to key {key} twice"
            writer[(key, value)] = index

    committed = {i for i, t in txns.items() if t.op.type == OK}
    observed = {writer[(k, v)] for i in committed for k, lst, _ in txns[i].all_reads for v in lst if (k, v) in writer}
    committed |= {i for i in observed if txns[i].op.type == INFO}
    verdict.stats["txns_committed"] = len(committed)
    name = lambda i: FINAL_NAME if i == final_index else txns[i].op.name  # noqa: E731

    _check_reads(verdict, txns, committed, writer, name)
    orders = _version_orders(verdict, txns, committed, name)
    if final is not None:
        _check_final(verdict, txns, committed, final, name, final_index)
    _check_lost_updates(verdict, txns, committed, writer, name)

    graph = _Graph()
    _add_dependency_edges(graph, txns, committed, orders, writer)
    _add_realtime_edges(graph, txns, committed)
    verdict.stats.update({f"edges_{k}": v for k, v in sorted(graph.edge_count.items())})
    _find_cycles(verdict, graph, sorted(committed), name)
    return verdict


def _check_reads(verdict, txns, committed, writer, name) -> None:
    for i in sorted(committed):
        for key, lst, own_before in txns[i].all_reads:
            counts = collections.Counter(lst)
            duplicates = sorted(v for v, c in counts.items() if c > 1)
            if duplicates:
                verdict.add("duplicate", f"{name(i)} read key {key} = {lst}: values {duplicates} twice")
            if own_before and lst[-len(own_before):] != own_before:
                verdict.add("internal", f"{name(i)} read key {key} = {lst} after appending {own_before} itself")
            seen = set(lst)
            for value in lst:
                w = writer.get((key, value))
                if w is None:
                    verdict.add("garbage", f"{name(i)} read value {value} of key {key} that nobody appended")
                elif w == i:
                    continue
                elif txns[w].op.type == FAIL:
                    verdict.add("G1a", f"{name(i)} read value {value} of key {key} appended by "
                                f"{name(w)}, which failed ({txns[w].op.error})")
                else:
                    later = [v for k, v in txns[w].appends if k == key and v not in seen]
                    if later:
                        verdict.add("G1b", f"{name(i)} read key {key} = {lst}: an intermediate version of "
                                    f"{name(w)}, which also appended {later} to it")


def _version_orders(verdict, txns, committed, name) -> dict[Any, list]:
    """Per key, the longest read, if every read of the key is a prefix of it."""
    reads_by_key: dict[Any, list[tuple[list, int]]] = collections.defaultdict(list)
    for i in committed:
        for key, lst, _ in txns[i].all_reads:
            reads_by_key[key].append((lst, i))
    orders: dict[Any, list] = {}
    for key, reads in reads_by_key.items():
        reads.sort(key=lambda r: (len(r[0]), r[1]))
        longest, longest_reader = reads[-1]
        compatible = len(set(longest)) == len(longest)  # duplicates (reported) give no order
        for lst, reader in reads:
            if longest[: len(lst)] != lst:
                verdict.add("incompatible-order", f"key {key}: {name(reader)} read {lst}, "
                            f"{name(longest_reader)} read {longest}: neither is a prefix of the other")
                compatible = False
                break
        if compatible:
            orders[key] = longest
    return orders


def _check_final(verdict, txns, committed, final, name, final_index) -> None:
    present = {(k, v) for k, lst in final.items() for v in lst}
    for i in sorted(committed):
        if i == final_index or not txns[i].appends:
            continue
        missing = [(k, v) for k, v in txns[i].appends if (k, v) not in present]
        if not missing:
            continue
        if txns[i].op.type == OK:
            verdict.add("lost-append", f"{name(i)} was acknowledged but its appends {missing} are not in the final read")
        else:
            verdict.add("atomicity", f"{name(i)} (outcome unknown) is partly visible: {missing} missing at the end")


def _check_lost_updates(verdict, txns, committed, writer, name) -> None:
    """Two committed transactions read the same version of a key and both appended to it."""
    by_version: dict[tuple[Any, tuple], list[int]] = collections.defaultdict(list)
    for i in sorted(committed):
        appended_keys = {k for k, _ in txns[i].appends}
        for key, lst in txns[i].external_reads.items():
            if key in appended_keys:
                by_version[(key, tuple(lst))].append(i)
    for (key, version), readers in sorted(by_version.items(), key=lambda item: str(item[0])):
        if len(readers) > 1:
            verdict.add("lost-update", f"key {key}: {', '.join(name(i) for i in readers)} all read "
                        f"{list(version)} and appended to it")


def _add_dependency_edges(graph: _Graph, txns, committed, orders, writer) -> None:
    for key, order in orders.items():
        for before, after in zip(order, order[1:]):
            a, b = writer.get((key, before)), writer.get((key, after))
            if a in committed and b in committed:
                graph.add(a, b, EDGE_WW, key)
    for i in committed:
        for key, lst in txns[i].external_reads.items():
            if lst:
                w = writer.get((key, lst[-1]))
                if w in committed:
                    graph.add(w, i, EDGE_WR, key)
            order = orders.get(key)
            if order is not None and len(lst) < len(order) and order[: len(lst)] == lst:
                w = writer.get((key, order[len(lst)]))
                if lst and writer.get((key, lst[-1])) == w:
                    continue  # read inside w's appends: reported as G1b, not an anti-dependency
                if w in committed:
                    graph.add(i, w, EDGE_RW, key)


def _add_realtime_edges(graph: _Graph, txns, committed) -> None:
    """T1 -> T2 when T1 completed before T2 was invoked, as a transitive reduction.

    Sweep invocations and completions in time order, keeping the frontier of completed
    transactions not yet implied by a later one: an invocation gets an edge from each
    frontier member; a completion removes from the frontier the members it got edges from
    (they now reach later transactions through it). Unknown outcomes have no completion
    time: they receive edges but give none.
    """
    events = []
    for i in committed:
        op = txns[i].op
        events.append((op.invoke_time, 0, i))
        if op.type == OK and op.complete_time is not None:
            events.append((op.complete_time, 1, i))
    events.sort()
    frontier: set[int] = set()
    predecessors: dict[int, frozenset[int]] = {}
    for _, kind, i in events:
        if kind == 0:
            predecessors[i] = frozenset(frontier)
            for p in frontier:
                graph.add(p, i, EDGE_RT)
        else:
            frontier -= predecessors[i]
            frontier.add(i)


ALL = frozenset({EDGE_WW, EDGE_WR, EDGE_RW, EDGE_RT})
WW = frozenset({EDGE_WW})
WWR = frozenset({EDGE_WW, EDGE_WR})
WWR_RT = frozenset({EDGE_WW, EDGE_WR, EDGE_RT})


def _describe(graph: _Graph, cycle: list[int], kinds_per_step: list[frozenset[str]], name) -> str:
    parts = [name(cycle[0])]
    for (a, b), kinds in zip(zip(cycle, cycle[1:]), kinds_per_step):
        parts.append(f"-{graph.label(a, b, kinds)}-> {name(b)}")
    return " ".join(parts)


def _find_cycles(verdict: Verdict, graph: _Graph, nodes: list[int], name) -> None:
    searches = 0
    # G0 and G1c: cycles of ww (+ wr) edges.
    for component in _sccs(nodes, graph, WWR):
        found = False
        for a in sorted(component):
            for b in graph.successors(a, frozenset({EDGE_WR})):
                if b in component:
                    back = _path(graph, b, a, WWR, component)
                    if back is not None:
                        cycle = [a] + back
                        kinds = [frozenset({EDGE_WR})] + [WWR] * (len(back) - 1)
                        verdict.add("G1c", _describe(graph, cycle, kinds, name))
                        found = True
                        break
            if found:
                break
        if not found:
            for ww_component in _sccs(sorted(component), graph, WW):
                start = min(ww_component)
                succ = next(b for b in graph.successors(start, WW) if b in ww_component)
                back = _path(graph, succ, start, WW, ww_component)
                cycle = [start] + back
                verdict.add("G0", _describe(graph, cycle, [WW] * (len(cycle) - 1), name))
    # G-single (one rw edge, the rest ww/wr) and the real-time variants.
    for component in _sccs(nodes, graph, ALL):
        for a in sorted(component):
            for b in list(graph.successors(a, frozenset({EDGE_RW}))):
                if b not in component:
                    continue
                searches += 1
                if searches > limits.CHECK_RW_EDGES_MAX:
                    verdict.stats["rw_search_truncated"] = True
                    return
                back = _path(graph, b, a, WWR, component)
                kind = "G-single"
                if back is None:
                    back = _path(graph, b, a, WWR_RT, component)
                    kind = "G-single-realtime"
                if back is not None:
                    cycle = [a] + back
                    kinds = [frozenset({EDGE_RW})] + [WWR if kind == "G-single" else WWR_RT] * (len(back) - 1)
                    verdict.add(kind, _describe(graph, cycle, kinds, name))
    # Cycles of ww/wr/rt edges through a real-time edge (a stale read without any rw edge).
    for component in _sccs(nodes, graph, WWR_RT):
        for a in sorted(component):
            reported = False
            for b in list(graph.successors(a, frozenset({EDGE_RT}))):
                if b not in component:
                    continue
                back = _path(graph, b, a, WWR_RT, component)
                if back is not None:
                    cycle = [a] + back
                    kinds = [frozenset({EDGE_RT})] + [WWR_RT] * (len(back) - 1)
                    verdict.add("G1c-realtime", _describe(graph, cycle, kinds, name))
                    reported = True
                    break
            if reported:
                break
