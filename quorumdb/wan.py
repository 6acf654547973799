"""The WAN between regions: delay, jitter, loss and region partitions that every node obeys.

Theory of operation. The regions of a Global Database (quorumdb/regions.py) run on one
machine, so the distance between them is simulated, in the process, on every message a node
sends to a node of another region (`quorumdb.rpc.region_channel`). The rules are one small JSON
file beside the global cluster file, `<global data dir>/net/wan.json` =
{"version": N, "delay_ms": 30.0, "jitter_ms": 5.0, "loss": 0.01, "partitioned": ["eu-west"]}:

* every message (the request and the reply of a unary call, each message of a stream, in either
  direction) is delivered one one-way delay after it was sent: `delay_ms` plus a uniform draw in
  [0, `jitter_ms`]; the messages of one stream direction stay in order (a message is delivered
  at max(previous delivery, arrival + delay)), as on one TCP connection;
* each message is lost with probability `loss`: a unary call then fails UNAVAILABLE "WAN message
  lost" (a lost reply after the server ran the call), a stream ends with that error (its owner
  reconnects, as after any broken stream);
* a partitioned region is cut from every other region: calls between them fail at once with
  UNAVAILABLE "region partition: A - B is cut", and open streams end with that error;
* a cut link (`"cut_links": [["us-east-1", "us-east-2"]]`, written only when there is one) is the
  same for that one pair of regions, both directions, while their other links stay up (the link
  between the two peers of an active-active cluster cut, both still reaching the witness).

Without the file, the rules are the global cluster file's `wan_ms`, `wan_jitter_ms` and
`wan_loss` (version 0, no partition), so `quorumdb up --wan-ms` needs no second file. Tools (the
functions below, `quorumdb chaos wan`/`region-partition`/`region-link-cut`) rewrite the file atomically (temporary
file, fsync, rename, fsync the directory) under an exclusive lock, bumping the version; every node
of every region polls its stat every NETFAULT_POLL_MS (`quorumdb.rpc.watch_wan`) and keeps the
rules in memory (`WanState`): calls never touch the disk.

The decisions (`WanRules`, `parse_rules`, `one_way_delay_ms`, `deliver_at`, `is_lost`) are pure
and unit-tested; the random draws come from the state's seeded `random.Random`. The public API
for tools and tests: `read_rules`, `set_wan`, `partition_region`, `cut_link`, `heal_regions`; each writer
waits NETFAULT_SETTLE_S (pass `settle_s=0` not to) so every live node has applied the rules when
it returns.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import pathlib
import random
import time

from quorumdb import durable, limits, netfault
from quorumdb.regions import NAME_RE, WAN_MS_MAX, GlobalConfig

log = logging.getLogger("quorumdb.wan")

RULES_DIR = "net"
RULES_FILE = "wan.json"
LOCK_FILE = "wan.lock"
LOSS_MAX = 0.5  # as regions.parse_wan: beyond half the messages nothing useful gets through
LOST_MESSAGE = "WAN message lost"
_KEYS = frozenset({"version", "delay_ms", "jitter_ms", "loss", "partitioned", "cut_links"})


# --- pure logic -------------------------------------------------------------------------------
class RulesError(ValueError):
    """A WAN rules file or setting that is not valid (the message says why)."""


@dataclasses.dataclass(frozen=True)
class WanRules:
    version: int = 0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    partitioned: frozenset[str] = frozenset()  # regions cut off from every other region
    # Single links cut between two regions (both directions), each as a sorted pair; the other
    # links of both regions stay up (`quorumdb chaos region-link-cut A B`).
    cut_links: frozenset[tuple[str, str]] = frozenset()

    def __post_init__(self) -> None:
        check_link(self.delay_ms, self.jitter_ms, self.loss)

    @property
    def delayed(self) -> bool:
        """Whether a message between two connected regions is delayed or may be lost."""
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss > 0

    def is_cut(self, region_a: str, region_b: str) -> bool:
        return region_a != region_b and (region_a in self.partitioned or region_b in self.partitioned
                                         or link(region_a, region_b) in self.cut_links)

    def with_link(self, delay_ms: float, jitter_ms: float, loss: float) -> "WanRules":
        return WanRules(self.version + 1, float(delay_ms), float(jitter_ms), float(loss), self.partitioned,
                        self.cut_links)

    def with_partition(self, region: str) -> "WanRules":
        return dataclasses.replace(self, version=self.version + 1, partitioned=self.partitioned | {region})

    def with_link_cut(self, region_a: str, region_b: str) -> "WanRules":
        if region_a == region_b:
            raise RulesError(f"a link joins two different regions, not {region_a} and itself")
        return dataclasses.replace(self, version=self.version + 1,
                                   cut_links=self.cut_links | {link(region_a, region_b)})

    def healed(self) -> "WanRules":
        return dataclasses.replace(self, version=self.version + 1, partitioned=frozenset(), cut_links=frozenset())

    def to_json(self) -> str:
        fields = {"version": self.version, "delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms,
                  "loss": self.loss, "partitioned": sorted(self.partitioned)}
        if self.cut_links:  # only when there are: a file without cuts reads as it always did
            fields["cut_links"] = [list(pair) for pair in sorted(self.cut_links)]
        return json.dumps(fields, indent=1) + "\n"


def link(region_a: str, region_b: str) -> tuple[str, str]:
    """The link between two regions, the same whichever end names it."""
    return (region_a, region_b) if region_a <= region_b else (region_b, region_a)


def check_link(delay_ms: float, jitter_ms: float, loss: float) -> None:
    """RulesError unless the delay, jitter and loss are in range (the same ranges as --wan-ms)."""
    for name, value, high in (("delay_ms", delay_ms, WAN_MS_MAX), ("jitter_ms", jitter_ms, WAN_MS_MAX),
                              ("loss", loss, LOSS_MAX)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RulesError(f"{name} must be a number, not {value!r}")
        if not 0 <= value <= high:
            raise RulesError(f"{name} must be 0..{high}, not {value!r}")


def parse_rules(text: str) -> WanRules:
    """The rules in a file's text; RulesError if it is anything this module does not write."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise RulesError(f"not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise RulesError("the WAN rules must be a JSON object")
    unknown = set(raw) - _KEYS
    if unknown:
        raise RulesError(f"unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    version = raw.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise RulesError(f"version must be a non-negative integer, not {version!r}")
    partitioned = raw.get("partitioned", [])
    if not isinstance(partitioned, list) or not all(isinstance(name, str) and NAME_RE.match(name)
                                                    for name in partitioned):
        raise RulesError(f"partitioned must be a list of region names, not {partitioned!r}")
    if len(set(partitioned)) != len(partitioned):
        raise RulesError(f"partitioned names a region twice: {partitioned!r}")
    cut_links = raw.get("cut_links", [])
    if not isinstance(cut_links, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(name, str) and NAME_RE.match(name)
                                                              for name in pair) and pair[0] != pair[1]
            for pair in cut_links):
        raise RulesError(f"cut_links must be a list of [region, region] pairs of two regions, not {cut_links!r}")
    delay_ms, jitter_ms, loss = raw.get("delay_ms", 0.0), raw.get("jitter_ms", 0.0), raw.get("loss", 0.0)
    check_link(delay_ms, jitter_ms, loss)
    return WanRules(version, float(delay_ms), float(jitter_ms), float(loss), frozenset(partitioned),
                    frozenset(link(a, b) for a, b in cut_links))


def one_way_delay_ms(rules: WanRules, draw: float) -> float:
    """One message's delay: the base delay plus `draw` (uniform in [0, 1)) of the jitter."""
    return rules.delay_ms + draw * rules.jitter_ms


def deliver_at(previous_s: float, arrival_s: float, delay_s: float) -> float:
    """When a stream message is delivered: after its own delay, and never before the one sent before it."""
    return max(previous_s, arrival_s + delay_s)


def is_lost(rules: WanRules, draw: float) -> bool:
    """Whether a message is lost, for `draw` uniform in [0, 1)."""
    return draw < rules.loss


def partition_message(own: str, peer: str) -> str:
    return f"region partition: {own} - {peer} is cut"


class WanState:
    """What one node process knows of the WAN: its region, the current rules, a random source.

    Calls read `rules` (replaced whole) and never the disk; `apply` is fed by the file watcher
    (`quorumdb.rpc.watch_wan`). An open stream to another region registers on `cut_signal(peer)`,
    a future that `apply` completes when the link to that region becomes cut, so a partition
    ends the stream at once and an open stream costs nothing per poll.
    """

    def __init__(self, global_cfg: GlobalConfig, own_region: str, rules: WanRules | None = None,
                 rng: random.Random | None = None) -> None:
        global_cfg.region(own_region)  # KeyError for an unknown region
        self.global_cfg = global_cfg
        self.region = own_region
        self.rng = rng if rng is not None else random.Random()
        self.rules = WanRules()
        self._cut_signals: dict[str, asyncio.Future[None]] = {}
        self.apply(rules if rules is not None else rules_from_global(global_cfg))

    def apply(self, rules: WanRules) -> bool:
        """Adopt newer rules; True if they changed anything (delay, loss or a partition)."""
        changed = dataclasses.replace(rules, version=0) != dataclasses.replace(self.rules, version=0)
        self.rules = rules
        for peer in [peer for peer in self._cut_signals if rules.is_cut(self.region, peer)]:
            netfault._complete(self._cut_signals.pop(peer))  # from this loop or any thread, as a cut signal
        return changed

    def is_cut_from(self, peer_region: str) -> bool:
        return self.rules.is_cut(self.region, peer_region)

    def cut_signal(self, peer_region: str) -> asyncio.Future[None]:
        """A future (of the running loop) completed when the link to `peer_region` becomes cut.

        It reports cuts from now on: check `is_cut_from` first, with no await between. Shared
        by every stream to that region; one per region of the Global Database at most.
        """
        self.global_cfg.region(peer_region)  # KeyError: bounds the dict to the known regions
        loop = asyncio.get_running_loop()
        signal = self._cut_signals.get(peer_region)
        if signal is None or signal.done() or signal.get_loop() is not loop:
            signal = loop.create_future()
            self._cut_signals[peer_region] = signal
        return signal

    def draw_delay_s(self) -> float:
        return one_way_delay_ms(self.rules, self.rng.random()) / 1000

    def draw_lost(self) -> bool:
        return self.rules.loss > 0 and is_lost(self.rules, self.rng.random())


# --- the rules file -------------------------------------------------------------------------
def rules_path(global_cfg: GlobalConfig) -> pathlib.Path:
    return global_cfg.data_dir / RULES_DIR / RULES_FILE


def rules_from_global(global_cfg: GlobalConfig) -> WanRules:
    """The rules before any tool wrote the file: the global cluster file's link settings."""
    try:
        return WanRules(0, float(global_cfg.wan_ms), float(global_cfg.wan_jitter_ms), float(global_cfg.wan_loss))
    except RulesError as error:
        raise RulesError(f"{global_cfg.path}: {error}") from None


def read_rules_file(path: pathlib.Path, global_cfg: GlobalConfig) -> WanRules:
    try:
        with open(path, "rb") as f:
            data = f.read(limits.NETFAULT_RULES_BYTES_MAX + 1)
    except FileNotFoundError:
        return rules_from_global(global_cfg)
    if len(data) > limits.NETFAULT_RULES_BYTES_MAX:
        raise RulesError(f"{path} is larger than {limits.NETFAULT_RULES_BYTES_MAX} bytes")
    try:
        return parse_rules(data.decode("utf-8", errors="replace"))
    except RulesError as error:
        raise RulesError(f"{path}: {error}") from None


def stat_signature(path: pathlib.Path) -> tuple[int, int, int] | None:
    return netfault.stat_signature(path)


def _locked(global_cfg: GlobalConfig):
    return durable.locked(rules_path(global_cfg).parent / LOCK_FILE)


def _write(global_cfg: GlobalConfig, rules: WanRules) -> None:
    durable.replace_atomically(rules_path(global_cfg), rules.to_json().encode())


def _update(global_cfg: GlobalConfig, change, settle_s: float) -> WanRules:
    with _locked(global_cfg):
        rules = change(read_rules(global_cfg))
        _write(global_cfg, rules)
    log.info("WAN rules v%d: %.1f ms + %.1f ms jitter, loss %.3f, partitioned: %s, links cut: %s", rules.version,
             rules.delay_ms, rules.jitter_ms, rules.loss, ", ".join(sorted(rules.partitioned)) or "none",
             ", ".join(f"{a} - {b}" for a, b in sorted(rules.cut_links)) or "none")
    if settle_s > 0:
        time.sleep(settle_s)
    return rules


# --- public API ---------------------------------------------------------------------------------
def read_rules(global_cfg: GlobalConfig) -> WanRules:
    """The current rules: the file's, or the global cluster file's settings when there is none."""
    return read_rules_file(rules_path(global_cfg), global_cfg)


def set_wan(global_cfg: GlobalConfig, delay_ms: float, jitter_ms: float = 0.0, loss: float = 0.0,
            settle_s: float = limits.NETFAULT_SETTLE_S) -> WanRules:
    """Set the one-way delay, jitter and loss between regions (partitions stay as they are)."""
    check_link(delay_ms, jitter_ms, loss)  # before anything is written
    return _update(global_cfg, lambda rules: rules.with_link(delay_ms, jitter_ms, loss), settle_s)


def partition_region(global_cfg: GlobalConfig, region: str,
                     settle_s: float = limits.NETFAULT_SETTLE_S) -> WanRules:
    """Cut `region` off from every other region (KeyError for an unknown region)."""
    global_cfg.region(region)
    return _update(global_cfg, lambda rules: rules.with_partition(region), settle_s)


def cut_link(global_cfg: GlobalConfig, region_a: str, region_b: str,
             settle_s: float = limits.NETFAULT_SETTLE_S) -> WanRules:
    """Cut only the link between `region_a` and `region_b`, both directions; every other link stays
    (KeyError for an unknown region, RulesError for a region and itself)."""
    global_cfg.region(region_a)
    global_cfg.region(region_b)
    if region_a == region_b:
        raise RulesError(f"a link joins two different regions, not {region_a} and itself")
    return _update(global_cfg, lambda rules: rules.with_link_cut(region_a, region_b), settle_s)


def heal_regions(global_cfg: GlobalConfig, settle_s: float = limits.NETFAULT_SETTLE_S) -> WanRules:
    """Remove every region partition and every cut link; the delay, jitter and loss stay."""
    return _update(global_cfg, WanRules.healed, settle_s)
