"""Network partitions: per-cluster drop rules that every node obeys.

Theory of operation. A cluster's partitions are one small JSON file,
`<data_dir>/net/rules.json` = {"version": N, "cut": [["nodeA", "nodeB"], ...]}: a list
of undirected links between node names that are cut. Tools (the functions below, the
supervisor behind `quorumdb chaos`, the Jepsen harness) rewrite it atomically (write a
temporary file, fsync, rename, fsync the directory) under an exclusive lock, bumping
the version. Every node polls the file's stat at most every NETFAULT_POLL_MS, re-reads
it when it changed, and keeps the cuts that involve itself in memory (`PartitionState`).
`quorumdb.rpc` consults that state:

* on the client side, every channel a node opens to another node checks the link before
  each call, adds `x-quorumdb-node: <own name>` to it, and fails the call at once with
  UNAVAILABLE "network partition: link A-B is cut" when the link is cut;
* on the server side, every method handler is wrapped once, when it is registered: it
  refuses calls whose `x-quorumdb-node` names a cut peer, and ends a cut peer's server
  streams (the journal's Subscribe, the commit and append streams) as soon as this node
  applies the rules that cut the link (`PartitionState.cut_signal`).

A call without the metadata (qsql, the Python client, `quorumdb status`, the
supervisor) is never cut: tools always see through a partition. A cut is symmetric,
so both ends drop the link even if only one of them has read the new rules yet.

The decision logic (`NetRules`, `cut_peers`, `pairs_*`) is pure and unit-tested; file
access is in the thin functions at the bottom. The public API for tests and tools:
`cut_links`, `isolate_az`, `isolate_node`, `heal`, `current_cuts`; each writer waits
NETFAULT_SETTLE_S (pass `settle_s=0` not to) so every live node has applied the rules
when it returns.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import time
from typing import Iterable

from quorumdb import durable, limits
from quorumdb.config import ClusterConfig

log = logging.getLogger("quorumdb.netfault")

NODE_METADATA_KEY = "x-quorumdb-node"
RULES_DIR = "net"
RULES_FILE = "rules.json"
LOCK_FILE = "rules.lock"

Link = frozenset  # frozenset[str] of exactly two node names


# --- pure logic -------------------------------------------------------------------------------
class RulesError(ValueError):
    """A rules file that is not what this module writes (hand-edited, truncated)."""


def link(a: str, b: str) -> frozenset[str]:
    assert a != b, f"a link joins two different nodes, not {a!r} with itself"
    return frozenset((a, b))


@dataclasses.dataclass(frozen=True)
class NetRules:
    version: int = 0
    cuts: frozenset[frozenset[str]] = frozenset()

    def is_cut(self, a: str, b: str) -> bool:
        return a != b and frozenset((a, b)) in self.cuts

    def cut_peers(self, name: str) -> frozenset[str]:
        """Every node whose link to `name` is cut."""
        return frozenset(peer for pair in self.cuts if name in pair for peer in pair if peer != name)

    def with_cuts(self, pairs: Iterable[tuple[str, str]]) -> "NetRules":
        cuts = set(self.cuts)
        cuts.update(link(a, b) for a, b in pairs)
        if len(cuts) > limits.NETFAULT_CUTS_MAX:
            raise RulesError(f"{len(cuts)} cut links; at most {limits.NETFAULT_CUTS_MAX}")
        return NetRules(self.version + 1, frozenset(cuts))

    def healed(self) -> "NetRules":
        return NetRules(self.version + 1, frozenset())

    def to_json(self) -> str:
        cut = sorted(sorted(pair) for pair in self.cuts)
        return json.dumps({"version": self.version, "cut": cut}, indent=1) + "\n"


def parse_rules(text: str) -> NetRules:
    """The rules in a file's text; RulesError if it is malformed. An empty file has no cuts."""
    if not text.strip():
        return NetRules()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise RulesError(f"not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise RulesError("the rules must be a JSON object")
    version = raw.get("version", 0)
    cut = raw.get("cut", [])
    if not isinstance(version, int) or version < 0:
        raise RulesError(f"version must be a non-negative integer, not {version!r}")
    if not isinstance(cut, list) or len(cut) > limits.NETFAULT_CUTS_MAX:
        raise RulesError(f"cut must be a list of at most {limits.NETFAULT_CUTS_MAX} pairs")
    cuts = set()
    for pair in cut:
        if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(n, str) and n for n in pair)
                or pair[0] == pair[1]):
            raise RulesError(f"each cut is a pair of two different node names, not {pair!r}")
        cuts.add(link(pair[0], pair[1]))
    return NetRules(version, frozenset(cuts))


def pairs_isolating_az(cluster: ClusterConfig, az: str) -> list[tuple[str, str]]:
    """Every link between a node of `az` and a node of another AZ."""
    inside = [n.name for n in cluster.nodes if n.az == az]
    if not inside:
        raise KeyError(f"no node in AZ {az!r} (AZs: {', '.join(sorted({n.az for n in cluster.nodes}))})")
    outside = [n.name for n in cluster.nodes if n.az != az]
    return [(a, b) for a in inside for b in outside]


def pairs_isolating_node(cluster: ClusterConfig, name: str) -> list[tuple[str, str]]:
    cluster.node(name)  # KeyError for an unknown name
    return [(name, other.name) for other in cluster.nodes if other.name != name]


def partition_message(own: str, peer: str) -> str:
    return f"network partition: link {own}-{peer} is cut"


class PartitionState:
    """What one process knows of the rules: its own name and the peers it is cut from.

    Calls read `cut_peers` (a frozenset, replaced whole) and never the disk; `apply` is
    fed by the file watcher (`quorumdb.rpc.watch_rules`). An open server stream waits on
    `cut_signal(peer)`, a future that `apply` completes when that peer becomes cut, so a cut
    ends the stream at once and an open stream costs nothing per message or per poll.
    """

    def __init__(self, cluster: ClusterConfig, name: str, rules: NetRules | None = None) -> None:
        cluster.node(name)  # KeyError for an unknown name
        self.cluster = cluster
        self.name = name
        self.node_by_address = {node.address: node.name for node in cluster.nodes}
        self.node_names = frozenset(node.name for node in cluster.nodes)
        self.rules = NetRules()
        self.cut_peers: frozenset[str] = frozenset()
        # One future per peer that has had an open stream since its last cut: at most one per
        # node of the cluster, whatever names callers send.
        self._cut_signals: dict[str, asyncio.Future[None]] = {}
        if rules is not None:
            self.apply(rules)

    def apply(self, rules: NetRules) -> bool:
        """Adopt newer rules; True if the cuts of this node changed."""
        self.rules = rules
        peers = rules.cut_peers(self.name)
        newly_cut = peers - self.cut_peers
        changed = peers != self.cut_peers
        self.cut_peers = peers
        for peer in newly_cut:
            signal = self._cut_signals.pop(peer, None)
            if signal is not None:
                _complete(signal)
        return changed

    def is_cut_from(self, peer: str) -> bool:
        return peer in self.cut_peers

    def cut_signal(self, peer: str) -> asyncio.Future[None] | None:
        """A future (of the running loop) that completes when the link to `peer` becomes cut.

        It reports cuts from now on: check `is_cut_from(peer)` first, with no await between.
        Shared by every stream of that peer. None for a name that is not a node of this
        cluster: such a caller is only refused when a call opens (no tool cuts it anyway).
        """
        if peer == self.name or peer not in self.node_names:
            return None
        loop = asyncio.get_running_loop()
        signal = self._cut_signals.get(peer)
        if signal is None or signal.done() or signal.get_loop() is not loop:  # first, or a new loop (tests)
            signal = loop.create_future()
            self._cut_signals[peer] = signal
        return signal


def _complete(signal: asyncio.Future[None]) -> None:
    """Complete a cut signal, from its own loop's thread or from any other (set_identity, tools)."""
    loop = signal.get_loop()
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _set_done(signal)
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
        loop.call_soon_threadsafe(_set_done, signal)


def _set_done(signal: asyncio.Future[None]) -> None:
    if not signal.done():
        signal.set_result(None)


# --- the rules file -------------------------------------------------------------------------
def rules_path(cluster: ClusterConfig) -> pathlib.Path:
    return cluster.data_dir / RULES_DIR / RULES_FILE


def read_rules(cluster: ClusterConfig) -> NetRules:
    return read_rules_file(rules_path(cluster))


def read_rules_file(path: pathlib.Path) -> NetRules:
    try:
        with open(path, "rb") as f:
            data = f.read(limits.NETFAULT_RULES_BYTES_MAX + 1)
    except FileNotFoundError:
        return NetRules()
    if len(data) > limits.NETFAULT_RULES_BYTES_MAX:
        raise RulesError(f"{path} is larger than {limits.NETFAULT_RULES_BYTES_MAX} bytes")
    return parse_rules(data.decode("utf-8", errors="replace"))


def stat_signature(path: pathlib.Path) -> tuple[int, int, int] | None:
    """What changes when the file is rewritten (a rename gives a new inode), or None if absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _locked(cluster: ClusterConfig):
    return durable.locked(rules_path(cluster).parent / LOCK_FILE)


def _write(cluster: ClusterConfig, rules: NetRules) -> None:
    durable.replace_atomically(rules_path(cluster), rules.to_json().encode())


def _update(cluster: ClusterConfig, change, settle_s: float) -> NetRules:
    with _locked(cluster):
        rules = change(read_rules(cluster))
        _write(cluster, rules)
    log.info("network rules v%d: %d cut links", rules.version, len(rules.cuts))
    if settle_s > 0:
        time.sleep(settle_s)
    return rules


# --- public API ---------------------------------------------------------------------------------
def cut_links(cluster: ClusterConfig, pairs: Iterable[tuple[str, str]],
              settle_s: float = limits.NETFAULT_SETTLE_S) -> None:
    """Cut the given undirected links (in addition to those already cut)."""
    pairs = list(pairs)
    for a, b in pairs:
        cluster.node(a)
        cluster.node(b)  # KeyError for an unknown name, before anything is written
    _update(cluster, lambda rules: rules.with_cuts(pairs), settle_s)


def isolate_az(cluster: ClusterConfig, az: str, settle_s: float = limits.NETFAULT_SETTLE_S) -> None:
    """Cut every link between the nodes of `az` and the nodes of the other AZs."""
    cut_links(cluster, pairs_isolating_az(cluster, az), settle_s)


def isolate_node(cluster: ClusterConfig, name: str, settle_s: float = limits.NETFAULT_SETTLE_S) -> None:
    """Cut every link of one node."""
    cut_links(cluster, pairs_isolating_node(cluster, name), settle_s)


def heal(cluster: ClusterConfig, settle_s: float = limits.NETFAULT_SETTLE_S) -> None:
    """Remove all cuts."""
    _update(cluster, NetRules.healed, settle_s)


def current_cuts(cluster: ClusterConfig) -> set[frozenset[str]]:
    return set(read_rules(cluster).cuts)
