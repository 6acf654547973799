"""Model test: the journal of an active-active cluster, 9 replicas in 3 regions, driven purely.

The real pure cores (journal/core.py ReplicaCore, journal/writer_core.py WriterCore,
quorumdb/quorum.py Quorum) run through random schedules: writers append, messages are lost or
delivered late and out of order between pipelines, whole regions crash (their replicas restart
from what they had on disk, forgetting holds and storage reports) or are cut off, new writers
fence a quorum and take over from the best tail while old writers keep sending, the storage of
each peer region reports its SCL to that region's replicas only, and replicas truncate (by the
hold; a witness by the hold alone). Checked on every schedule:

(a) an index committed by any writer holds the same entry in every later writer's log, and in
    every replica that holds it as committed (no acknowledged commit lost or replaced);
(b) a writer reports an index committed only while a quorum of replicas (2 of 3 regions, each
    by a majority) hold its entry (or dropped it as durable in storage);
(c) losing any single region (crash or partition) never stops a new writer from taking over and
    committing with the other two;
(d) then, with nothing lost, every replica still up catches up with that writer.

Appends are pipelined as JournalWriter sends them (journal/writer_core.py "Pipelining"): each
writer has one stream per replica, with up to DEPTH messages in flight to a replica of another
region (one at a time within its own); a stream delivers its requests, and then its replies, in
order, and a lost message breaks the stream: everything else in flight on it is lost too, and the
writer restarts that pipeline (`on_stream_failed`). Streams of different replicas and writers
interleave freely.
"""
from __future__ import annotations

import dataclasses
import random

import pytest

from journal.core import AppendStatus, Meta, ReplicaCore
from journal.writer_core import (
    ReplicaTail,
    WriterCore,
    best_tail,
    region_votes,
    regional_hold,
)
from quorumdb.pb import common_pb2
from quorumdb.quorum import Quorum

PEERS = ["east", "west"]
WITNESS = "wit"
REGIONS = PEERS + [WITNESS]
NAMES = {region: [f"{region}/journal-az{i}" for i in (1, 2, 3)] for region in REGIONS}
QUORUM = Quorum.of_regions(NAMES)
SEGMENT = 2  # tiny segments: truncation happens all the time
STORAGE = {region: [f"{region}/storage-{i}" for i in range(6)] for region in PEERS}
DEPTH = 4  # Appends in flight to a replica of another region than the writer's


def new_replica(region: str, meta: Meta | None = None, entries=None) -> ReplicaCore:
    witness = region == WITNESS
    return ReplicaCore(STORAGE.get(region, []), meta or Meta(), entries, segment_entries=SEGMENT, lease_ns=0,
                       hold_required=True, witness=witness, active_active=True)


class Writer:
    def __init__(self, core: WriterCore, prefix: dict[int, tuple[int, str]]):
        self.core = core
        self.prefix = prefix  # its log before its buffer: the best tail's uncommitted entries
        self.stream: dict[str, int] = {name: 0 for name in core.progress}  # each replica's current stream
        self.fenced = False
        self.alive = True


class Model:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.replicas = {name: new_replica(region) for region in REGIONS for name in NAMES[region]}
        self.down: set[str] = set()  # regions crashed or cut off: their messages are lost
        self.scl = {region: 0 for region in PEERS}
        self.writers: list[Writer] = []
        # ("req" | "rep", writer, replica, stream, payload): in order per (kind, writer, replica, stream)
        self.network: list[tuple] = []
        self.committed: dict[int, tuple[int, str]] = {}  # index -> (epoch, txn_id), as writers reported
        self.next_txn = 0
        self.ts = 0
        self.dropped: set[str] = set()  # regions where some replica dropped a prefix
        self.most_in_flight = 0  # on one stream: the schedules do pipeline

    # --- helpers ---------------------------------------------------------------------------
    def region_of(self, name: str) -> str:
        return QUORUM.region_of(name)

    def up(self, name: str) -> bool:
        return self.region_of(name) not in self.down

    def lossy(self, p: float = 0.1) -> bool:
        return self.rng.random() < p

    def holds(self, replica: ReplicaCore, index: int, epoch: int) -> bool:
        return index < replica.first_index or replica.epoch_at(index) == epoch

    def entry(self, kind=common_pb2.ENTRY_TXN) -> common_pb2.Entry:
        self.ts += 1
        self.next_txn += 1
        return common_pb2.Entry(kind=kind, ts=self.ts, txn_id=f"t{self.next_txn}")

    # --- writers ---------------------------------------------------------------------------
    def take_over(self, loss: float = 0.1, unreached: frozenset[str] = frozenset()) -> Writer | None:
        epoch = max(r.promised_epoch for r in self.replicas.values()) + 1
        tails = []
        for name, replica in self.replicas.items():
            if not self.up(name) or name in unreached or self.lossy(loss):
                continue
            result = replica.fence(epoch, f"w{epoch}")
            if result.ok and not self.lossy(loss):  # the reply may be lost too
                tails.append(ReplicaTail(name, result.last_index, result.last_epoch, result.commit_index,
                                         result.first_index))
        if not QUORUM.is_quorum(tail.name for tail in tails):
            return None
        best = best_tail(tails)
        best_replica = self.replicas[best.name]
        # (a) every index committed so far is in the best tail's log (or below its first_index).
        for index, (entry_epoch, _) in self.committed.items():
            assert index <= best.last_index, f"committed {index} missing from the best tail {best}"
            assert self.holds(best_replica, index, entry_epoch), f"committed {index} replaced in {best.name}"
        commit_index = min(max(tail.commit_index for tail in tails), best.last_index)
        region = self.rng.choice(PEERS)
        depths = {name: 1 if self.region_of(name) == region else DEPTH for name in QUORUM.replicas}
        core = WriterCore(QUORUM.replicas, f"w{epoch}", epoch, best, commit_index, tails=tails, lease_ns=0,
                          quorum=QUORUM, region=region, peer_regions=PEERS, depths=depths)
        self.ts += 1
        core.assign([common_pb2.Entry(kind=common_pb2.ENTRY_LEADER, ts=max(self.ts, self.last_ts(best_replica) + 1),
                                      leader=f"w{epoch}")])
        self.ts = core.last_ts
        prefix = {i: (best_replica.entry(i).epoch, best_replica.entry(i).txn_id)
                  for i in range(max(commit_index + 1, best_replica.first_index), best.last_index + 1)}
        writer = Writer(core, prefix)
        self.writers.append(writer)
        return writer

    @staticmethod
    def last_ts(replica: ReplicaCore) -> int:
        return replica.entries[-1].ts if replica.entries else 0

    def append(self, writer: Writer) -> None:
        if writer.fenced or not writer.alive:
            return
        entries = [self.entry() for _ in range(self.rng.randint(1, 3))]
        for entry in entries:
            entry.ts = max(entry.ts, writer.core.last_ts + 1)
            self.ts = max(self.ts, entry.ts)
        writer.core.assign(entries)

    def send(self, writer: Writer, name: str, loss: float) -> None:
        core = writer.core
        if writer.fenced or not writer.alive or not core.can_send(name):
            return
        plan = core.plan(name)
        if plan.entries is None:  # as JournalWriter._fetch (only with nothing in flight: can_send)
            source = core.source_for(name, plan.to_index)
            if source is None or not self.up(source):
                return
            source_match = core.progress[source].match_index
            from_index = max(1, plan.from_index - 1)
            max_entries = min(64, source_match - from_index + 1)
            if max_entries <= 0:
                return
            fetched = [e for e in self.replicas[source].read(from_index, max_entries) if e.index <= source_match]
            if not fetched:
                return
            jumped = False
            if plan.from_index == 1 and fetched[0].index == 1:
                prev_index, prev_epoch, entries = 0, 0, fetched
            elif fetched[0].index == plan.from_index - 1:
                prev_index, prev_epoch, entries = fetched[0].index, fetched[0].epoch, fetched[1:]
            else:
                core.source_truncated(fetched[0].index - 1)
                prev_index, prev_epoch, entries, jumped = fetched[0].index - 1, 0, fetched, True
            plan = dataclasses.replace(plan, prev_index=prev_index, prev_epoch=prev_epoch, entries=entries,
                                       from_index=prev_index + 1, to_index=prev_index + len(entries), jumped=jumped)
        closed = core.closed()
        request = {"epoch": core.epoch, "leader": core.leader, "prev_index": plan.prev_index,
                   "prev_epoch": plan.prev_epoch, "entries": [_copy(e) for e in plan.entries],
                   "commit_index": core.commit_index, "closed_ts": closed[0], "closed_index": closed[1],
                   "hold_index": core.hold_index}
        core.on_sent(name, plan, core.commit_index, closed)
        self.most_in_flight = max(self.most_in_flight, core.in_flight(name))
        if not self.up(name) or self.lossy(loss):
            self.break_stream(writer, name)  # the writer learns it (an error or a timeout) and resends
            return
        self.network.append(("req", writer, name, writer.stream[name], request))

    def break_stream(self, writer: Writer, name: str) -> None:
        """The stream of `writer` to `name` fails: everything still on it is lost."""
        stream = writer.stream[name]
        self.network = [m for m in self.network if not (m[1] is writer and m[2] == name and m[3] == stream)]
        writer.stream[name] = stream + 1
        writer.core.on_stream_failed(name)

    def reset_network(self) -> None:
        for writer in self.writers:
            for name in QUORUM.replicas:
                self.break_stream(writer, name)
        self.network.clear()

    def deliver(self, position: int, loss: float) -> None:
        """Deliver the oldest message on the stream (and direction) of the message at `position`."""
        kind, writer, name, stream, _ = self.network[position]
        position = next(i for i, m in enumerate(self.network)
                        if m[0] == kind and m[1] is writer and m[2] == name and m[3] == stream)
        _, _, _, _, payload = self.network.pop(position)
        if not self.up(name) or self.lossy(loss):
            self.break_stream(writer, name)
            return
        if kind == "req":
            replica = self.replicas[name]
            result = replica.append(**payload)
            if result.status is AppendStatus.OK and replica.truncate_to_hold() is not None:  # as JournalService
                self.dropped.add(self.region_of(name))
            reply = (result.status, result.promised_epoch, result.last_index, result.match_index,
                     replica.durable_index)
            self.network.append(("rep", writer, name, stream, reply))
            return
        status, _promised, last_index, match_index, durable = payload
        core = writer.core
        if writer.fenced or not writer.alive:
            return
        if status is AppendStatus.FENCED:
            writer.fenced = True
            return
        if status is AppendStatus.MISMATCH:
            core.on_reply_mismatch(name, last_index)
            return
        before = core.commit_index
        core.on_reply_ok(name, match_index, durable_index=durable)
        if core.commit_index > before:
            self.on_commit(writer, before)

    def on_commit(self, writer: Writer, before: int) -> None:
        core = writer.core
        # Every index now committed is recorded; the buffer may have evicted none of
        # before+1..commit_index yet (uncommitted entries stay buffered; buffer_max is large).
        for index in range(before + 1, core.commit_index + 1):
            entry = core.buffered(index)
            identity = (entry.epoch, entry.txn_id) if entry is not None else writer.prefix.get(index)
            if identity is None:
                continue
            previous = self.committed.setdefault(index, identity)
            assert previous == identity, f"index {index} committed as {previous} and as {identity}"
        # (b) every newly committed entry is held by a quorum right now (or already dropped as
        # durable in storage).
        for index in range(before + 1, core.commit_index + 1):
            identity = self.committed.get(index)
            if identity is None:
                continue
            holders = [name for name, replica in self.replicas.items()
                       if index < replica.first_index
                       or (replica.last_index >= index and replica.epoch_at(index) == identity[0])]
            assert QUORUM.is_quorum(holders), f"{index} reported committed, held by {holders}"

    # --- storage and failures ----------------------------------------------------------------
    def storage_report(self, region: str) -> None:
        if region in self.down:
            return
        committed = max(min(r.commit_index, r.last_index) for name, r in self.replicas.items()
                        if self.region_of(name) == region)
        self.scl[region] = self.rng.randint(self.scl[region], max(self.scl[region], committed))
        for name in NAMES[region]:
            replica = self.replicas[name]
            for node in STORAGE[region]:
                if replica.report_scl(node, self.scl[region]).truncate_before is not None:
                    self.dropped.add(region)

    def crash(self, region: str) -> None:
        """The region's replicas restart from their disk (= the core's state after each step)."""
        for name in NAMES[region]:
            old = self.replicas[name]
            self.replicas[name] = new_replica(region, old.meta(), list(old.entries))

    def check_replicas(self) -> None:
        """(a) for replicas: every committed index a replica holds as committed is the same entry."""
        for name, replica in self.replicas.items():
            for index, (entry_epoch, txn_id) in self.committed.items():
                if replica.first_index <= index <= replica.commit_index:
                    local = replica.entry(index)
                    assert (local.epoch, local.txn_id) == (entry_epoch, txn_id), (name, index)

    def check_dropped_is_stored(self) -> None:
        """No replica has dropped an entry the storage of some peer region lacks: else that
        region's storage could never catch up from the journal."""
        stored = min(self.scl.values())
        for name, replica in self.replicas.items():
            assert replica.first_index - 1 <= stored, (
                f"{name} dropped up to {replica.first_index - 1}, storage of the peers holds {self.scl}")

    # --- schedules ---------------------------------------------------------------------------
    def step(self, loss: float) -> None:
        self.check_dropped_is_stored()
        choice = self.rng.random()
        live = [w for w in self.writers if w.alive and not w.fenced]
        if choice < 0.20 and live:
            self.append(self.rng.choice(live))
        elif choice < 0.55 and self.writers:
            writer = self.rng.choice(self.writers)
            self.send(writer, self.rng.choice(QUORUM.replicas), loss)
        elif choice < 0.85 and self.network:
            self.deliver(self.rng.randrange(len(self.network)), loss)
        elif choice < 0.91:
            self.storage_report(self.rng.choice(PEERS))
        elif choice < 0.95:
            if self.down:
                if self.rng.random() < 0.3:
                    self.down.clear()
            elif self.rng.random() < 0.3:  # one region at a time is lost (a majority must be left)
                region = self.rng.choice(REGIONS)
                self.down.add(region)
                if self.rng.random() < 0.5:
                    self.crash(region)
        elif choice < 0.965:
            self.take_over(loss)
        elif choice < 0.97 and live:
            self.rng.choice(live).alive = False  # a writer dies
        elif choice < 0.975:
            region = self.rng.choice(REGIONS)
            if region not in self.down:
                self.crash(region)  # a restart without a partition
        elif choice < 0.98 and live:
            self.break_stream(self.rng.choice(live), self.rng.choice(QUORUM.replicas))  # a reply timed out

    def settle(self, writer: Writer, rounds: int = 4000) -> None:
        """Deliver everything without loss until the writer has no more work (or rounds run out)."""
        for _ in range(rounds):
            for name in QUORUM.replicas:
                self.send(writer, name, 0.0)
            if self.network:
                self.deliver(0, 0.0)
            elif not any(writer.core.has_work(n) and self.up(n) for n in QUORUM.replicas):
                return
            for region in PEERS:
                if self.rng.random() < 0.05:
                    self.storage_report(region)


def _copy(entry: common_pb2.Entry) -> common_pb2.Entry:
    copy = common_pb2.Entry()
    copy.CopyFrom(entry)
    return copy


def run_schedule(seed: int, steps: int = 400) -> Model:
    model = Model(seed)
    loss = model.rng.choice([0.0, 0.05, 0.2])
    while model.take_over(0.0) is None:
        pass
    for _ in range(steps):
        model.step(loss)
    model.check_replicas()
    # (d) the latest writer, with whatever its pipelines have in flight, mismatched or broken,
    # brings every replica up to date once nothing is lost (unless a rival's fence stops it).
    last = model.writers[-1]
    if last.alive and not last.fenced and model.rng.random() < 0.5:
        model.down.clear()
        model.settle(last)
        if not last.fenced:
            check_caught_up(model, last, seed)
    # (c) lose any single region (crash it, or cut it off): a new writer takes over and commits.
    lost = model.rng.choice(REGIONS)
    model.down = {lost}
    if model.rng.random() < 0.5:
        model.crash(lost)
    model.reset_network()
    writer = None
    for _ in range(5):
        writer = model.take_over(0.0)
        if writer is not None:
            break
    assert writer is not None, f"no writer could fence a quorum without {lost}"
    model.append(writer)
    target = writer.core.last_index
    model.settle(writer)
    assert writer.core.commit_index >= target, (
        f"seed {seed}: without {lost} the new writer committed {writer.core.commit_index} < {target}")
    # (d) and, with nothing lost, every replica that is up catches up (the pipelines recover from
    # whatever the schedule left in flight, mismatched or broken).
    check_caught_up(model, writer, seed)
    model.check_replicas()
    return model


def check_caught_up(model: Model, writer: Writer, seed: int) -> None:
    behind = {name: writer.core.progress[name].match_index for name in QUORUM.replicas
              if model.up(name) and writer.core.progress[name].match_index < writer.core.last_index}
    assert not behind, f"seed {seed}: replicas behind {writer.core.last_index}: {behind}"
    uninformed = {name: model.replicas[name].commit_index for name in QUORUM.replicas
                  if model.up(name) and model.replicas[name].commit_index < writer.core.commit_index}
    assert not uninformed, f"seed {seed}: replicas never told commit index {writer.core.commit_index}: {uninformed}"


@pytest.mark.parametrize("block", range(10))
def test_random_schedules_across_three_regions(block):
    committed_total = 0
    pipelined = 0
    for seed in range(block * 25, block * 25 + 25):
        model = run_schedule(seed)
        committed_total += len(model.committed)
        pipelined += model.most_in_flight > 1
    assert committed_total > 25 * 5, "the schedules commit something"
    assert pipelined > 12, "most schedules had several Appends in flight on one stream"


def test_schedules_truncate_and_hold():
    """The schedules exercise truncation: some replica (a witness too) drops a prefix."""
    dropped = {region: 0 for region in REGIONS}
    for seed in range(1000, 1040):
        model = run_schedule(seed, steps=600)
        for region in model.dropped:
            dropped[region] += 1
    assert all(dropped.values()), dropped


# --- unit tests of the pieces the model relies on ----------------------------------------------------
def test_the_quorum_of_regions_commits_with_two_regions_not_with_one():
    best = ReplicaTail(NAMES["east"][0], 0, 0, 0, 1)
    core = WriterCore(QUORUM.replicas, "w1", 1, best, 0, quorum=QUORUM, region="east", peer_regions=PEERS)
    core.assign([common_pb2.Entry(kind=common_pb2.ENTRY_LEADER, ts=1)])
    for name in NAMES["east"]:
        core.on_ok(name, core.plan(name), 1, 0)
    assert core.commit_index == 0, "one region, even all of it, is not a quorum"
    core.on_ok(NAMES[WITNESS][0], core.plan(NAMES[WITNESS][0]), 1, 0)
    assert core.commit_index == 0, "one replica of a second region is not its majority"
    core.on_ok(NAMES[WITNESS][2], core.plan(NAMES[WITNESS][2]), 1, 0)
    assert core.commit_index == 1


def test_the_hold_is_the_lowest_peer_region_best_durable_index():
    durable = {NAMES["east"][0]: 7, NAMES["east"][1]: 9, NAMES["west"][2]: 4, NAMES[WITNESS][0]: 100}
    assert regional_hold(QUORUM, durable, PEERS) == 4
    assert regional_hold(QUORUM, {NAMES["east"][0]: 7}, PEERS) == 0, "a silent peer region holds everything"


def test_the_writer_hold_follows_replies_and_fence_tails():
    best = ReplicaTail(NAMES["east"][0], 20, 1, 20, 1)
    tails = [best, ReplicaTail(NAMES[WITNESS][1], 20, 1, 20, 9)]
    core = WriterCore(QUORUM.replicas, "w2", 2, best, 20, tails=tails, quorum=QUORUM, peer_regions=PEERS)
    assert core.hold_index == 8, "a truncated prefix is durable in every peer region"
    core.on_ok(NAMES["east"][1], core.plan(NAMES["east"][1]), 0, 0, durable_index=15)
    assert core.hold_index == 8
    core.on_ok(NAMES["west"][0], core.plan(NAMES["west"][0]), 0, 0, durable_index=12)
    assert core.hold_index == 12
    single = WriterCore(["a", "b", "c"], "w", 2, ReplicaTail("a", 20, 1, 20, 9), 20)
    single.on_ok("b", single.plan("b"), 0, 0, durable_index=15)
    assert single.hold_index == 0, "outside active-active the hold is the region agent's"


def test_a_witness_truncates_by_the_hold_alone_and_a_peer_by_both():
    witness = new_replica(WITNESS)
    peer = new_replica("east")
    entries = [common_pb2.Entry(kind=common_pb2.ENTRY_TXN, index=i, epoch=1, ts=i) for i in range(1, 11)]
    for replica in (witness, peer):
        replica.append(1, "w", 0, 0, entries, 10, 0, 0)
        assert replica.truncate_to_hold() is None, "no hold heard since start: nothing dropped"
    for node in STORAGE["east"]:
        peer.report_scl(node, 6)
    assert peer.first_index == 1, "storage alone is not enough: the other peer may need them"
    for replica in (witness, peer):
        replica.append(1, "w", 10, 1, [], 10, 0, 0, hold_index=8)
        replica.truncate_to_hold()
    assert witness.first_index == 9, "up to the hold (8), in whole segments of 2"
    assert peer.first_index == 7, "min(own durable 6, hold 8) = 6"
    assert witness.durable_index == 8


def test_a_lagging_witness_jumps_over_what_the_hold_covers():
    witness = new_replica(WITNESS)
    witness.fence(1, "w")
    later = [common_pb2.Entry(kind=common_pb2.ENTRY_TXN, index=i, epoch=1, ts=i) for i in range(9, 12)]
    refused = witness.append(1, "w", 8, 0, later, 11, 0, 0, hold_index=4)
    assert refused.status is AppendStatus.MISMATCH, "8 is not known durable: no jump"
    taken = witness.append(1, "w", 8, 0, later, 11, 0, 0, hold_index=8)
    assert taken.status is AppendStatus.OK and taken.reset and witness.first_index == 9


def test_region_votes():
    ages = {name: 50.0 for name in QUORUM.replicas}
    matches = {name: 100 for name in QUORUM.replicas}
    ages[NAMES["west"][0]] = ages[NAMES["west"][1]] = float("inf")  # never acknowledged
    matches[NAMES[WITNESS][0]] = matches[NAMES[WITNESS][1]] = 10  # acknowledging, far behind
    kinds = {"east": "peer", "west": "peer", WITNESS: "witness"}
    votes = {vote.name: vote for vote in region_votes(QUORUM, matches, ages, 90, 1000, kinds)}
    assert votes["east"].voted_in and votes["east"].match_index == 100 and votes["east"].ack_age_ms == 50
    assert not votes["west"].voted_in and votes["west"].ack_age_ms == float("inf")
    assert not votes[WITNESS].voted_in and votes[WITNESS].match_index == 10 and votes[WITNESS].kind == "witness"
    ages[NAMES["east"][0]] = ages[NAMES["east"][1]] = 1500
    assert not region_votes(QUORUM, matches, ages, 90, 1000, kinds)[0].voted_in, "acknowledged too long ago"


def test_source_for_prefers_the_writers_own_region():
    best = ReplicaTail(NAMES["east"][0], 30, 1, 30, 1)
    core = WriterCore(QUORUM.replicas, "w", 2, best, 30, quorum=QUORUM, region="west", peer_regions=PEERS)
    core.progress[NAMES["west"][1]].match_index = 25
    lagging = NAMES["west"][2]
    assert core.source_for(lagging, 20) == NAMES["west"][1], "covers the range and is near"
    assert core.source_for(lagging, 28) == NAMES["east"][0], "only the remote one covers it"


def test_a_lagging_witness_catches_up_when_a_peer_is_lost():
    """The witness was cut off while both peers committed and dropped a prefix; then a peer is
    lost. The new writer hears no storage report from the lost peer, so its hold starts from the
    fenced replicas' truncated prefixes: the witness jumps over what the other peer dropped."""
    model = Model(7)
    first = model.take_over(0.0)
    model.down = {WITNESS}
    for _ in range(12):
        model.append(first)
        model.settle(first)
        for region in PEERS:
            model.storage_report(region)
    model.settle(first)
    witness_last = max(model.replicas[name].last_index for name in NAMES[WITNESS])
    assert all(model.replicas[name].first_index > witness_last + 1 for name in NAMES["west"]), \
        "the peers dropped what the witness misses"
    model.down = {"east"}
    model.reset_network()
    writer = model.take_over(0.0)
    assert writer is not None
    model.append(writer)
    target = writer.core.last_index
    model.settle(writer)
    assert writer.core.commit_index >= target
    assert all(model.replicas[name].last_index >= target for name in NAMES[WITNESS])
    model.check_replicas()


def test_a_replica_restarts_its_log_only_past_what_every_peer_region_stores():
    """A lagging replica that a new writer did not fence is sent Appends after the best tail: a
    gap. It may restart its log there only if that is stored in EVERY peer region (the hold), not
    merely in its own region's storage: else the other peer's storage, behind, could never catch
    up once the journal dropped the rest (and a new writer would take that first_index as a hold)."""
    model = Model(11)
    first = model.take_over(0.0)
    lagging = NAMES["east"][2]
    model.down = {"west"}
    for _ in range(6):
        model.append(first)
        for _ in range(60):
            for name in QUORUM.replicas:
                if name != lagging:
                    model.send(first, name, 0.0)
            while model.network:
                model.deliver(0, 0.0)
    while model.scl["east"] < first.core.commit_index:
        model.storage_report("east")  # east's storage holds everything; west's (down) nothing
    assert model.scl["west"] == 0 and model.replicas[lagging].last_index < first.core.commit_index
    writer = model.take_over(0.0, unreached=frozenset({lagging}))
    model.append(writer)
    model.settle(writer)
    model.check_dropped_is_stored()
    model.check_replicas()


def test_catch_up_reads_avoid_unreachable_sources():
    best = ReplicaTail(NAMES["east"][0], 30, 1, 30, 1)
    core = WriterCore(QUORUM.replicas, "w", 2, best, 30, quorum=QUORUM, region="west", peer_regions=PEERS)
    core.progress[NAMES[WITNESS][1]].match_index = 12
    lagging = NAMES[WITNESS][0]
    assert core.source_for(lagging, 20) == NAMES["east"][0]
    assert core.source_for(lagging, 20, avoid={NAMES["east"][0]}) == NAMES[WITNESS][1], "a cut-off region is avoided"
    assert core.source_for(lagging, 20, avoid={NAMES["east"][0], NAMES[WITNESS][1]}) == NAMES["east"][0], \
        "when every source is avoided, one is still tried"
