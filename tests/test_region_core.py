"""The Global Database's pure decisions (adjudicator/region_core.py): roles, holds, RPO, switchover checks,
and a model of switchovers and failovers in which no index is ever committed by two regions."""
from __future__ import annotations

import random

import pytest

from adjudicator import region_core as rc
from quorumdb.regions import ControlState

NONE = ControlState()


def test_no_regions_is_its_own_writer():
    view = rc.resolve_role("", "", None, NONE)
    assert view.role == rc.RegionRole.NONE and view.accepts_commits


def test_initial_roles_come_from_the_global_file():
    assert rc.resolve_role("us", "us", None, NONE).role == rc.RegionRole.PRIMARY
    view = rc.resolve_role("eu", "us", None, NONE)
    assert view.role == rc.RegionRole.SECONDARY and view.primary == "us" and not view.accepts_commits
    assert view.replicates


def test_switchover_marker_moves_the_primary_in_both_logs():
    marker = rc.Marker(2, "eu", index=50)
    assert rc.resolve_role("us", "us", marker, NONE).role == rc.RegionRole.SECONDARY
    assert rc.resolve_role("eu", "us", marker, NONE).role == rc.RegionRole.PRIMARY


def test_switchover_recorded_before_the_target_replicated_the_marker():
    control = ControlState(global_epoch=2, primary="eu", marker_index=50)
    view = rc.resolve_role("eu", "us", None, control)
    assert view.role == rc.RegionRole.PROMOTING and view.replicate_to_index == 50 and view.replicates
    assert view.primary == "us", "it copies from the old primary until the marker arrives"
    assert not view.accepts_commits
    # The old primary wrote the marker: its log agrees with the control state.
    assert rc.resolve_role("us", "us", rc.Marker(2, "eu", 50), control).role == rc.RegionRole.SECONDARY


def test_failover_fences_the_old_primary_and_promotes_the_target():
    control = ControlState(global_epoch=2, primary="eu", fenced=(("us", 40), ("ap", 40)))
    old = rc.resolve_role("us", "us", None, control)
    assert old.role == rc.RegionRole.FENCED and not old.accepts_commits and "rejoins" in old.reason
    new = rc.resolve_role("eu", "us", None, control)
    assert new.role == rc.RegionRole.PROMOTING and not new.replicates
    # Once the new primary wrote its ENTRY_GLOBAL it is primary by its own log.
    assert rc.resolve_role("eu", "us", rc.Marker(2, "eu", 41), control).role == rc.RegionRole.PRIMARY
    # The old primary, once it copied that entry (rejoined), is a secondary.
    assert rc.resolve_role("us", "us", rc.Marker(2, "eu", 41), control).role == rc.RegionRole.SECONDARY
    # A third region is fenced too until it rejoins (it may have replicated past index 40).
    assert rc.resolve_role("ap", "us", None, control).role == rc.RegionRole.FENCED
    assert rc.resolve_role("ap", "us", rc.Marker(2, "eu", 41), control).primary == "eu"


def test_detached_region_leads_alone():
    view = rc.resolve_role("eu", "us", None, ControlState(detached=("eu",)))
    assert view.role == rc.RegionRole.DETACHED and view.accepts_commits and not view.replicates


def test_newer_marker_keeps_the_highest_epoch():
    marker = rc.newer_marker(None, 2, "eu", 10)
    assert rc.newer_marker(marker, 3, "us", 20) == rc.Marker(3, "us", 20)
    assert rc.newer_marker(rc.Marker(3, "us", 20), 2, "eu", 30) == rc.Marker(3, "us", 20)


def test_truncation_hold():
    reports = {"eu": rc.ReplicaReport("eu", 900, 0), "ap": rc.ReplicaReport("ap", 700, 0)}
    assert rc.truncation_hold(reports, [], 1000, 10_000) == 0
    assert rc.truncation_hold(reports, ["eu", "ap"], 1000, 10_000) == 700
    assert rc.truncation_hold(reports, ["eu", "xx"], 1000, 10_000) == 1   # not reported: hold all
    assert rc.truncation_hold(reports, ["ap"], 100_000, 10_000) == 90_000  # too far behind: let go


def test_rpo_violation():
    second = 1_000_000_000
    reports = {"eu": rc.ReplicaReport("eu", 5, 100 * second)}
    assert rc.rpo_violation(reports, ["eu"], 110 * second, 0) == ""
    assert rc.rpo_violation(reports, ["eu"], 110 * second, 20 * second) == ""
    message = rc.rpo_violation(reports, ["eu"], 130 * second, 20 * second)
    assert "RPO" in message and "eu is 30.0 s behind" in message and "nothing was committed" in message
    assert "has not reported" in rc.rpo_violation({}, ["eu"], 130 * second, 20 * second)


def test_switchover_refusals():
    reports = {"eu": rc.ReplicaReport("eu", 990, 0)}
    ok = rc.switchover_refusal("eu", ["us", "eu"], rc.RegionRole.PRIMARY, reports, 1000, 100)
    assert ok == ""
    assert "unknown region" in rc.switchover_refusal("mars", ["us", "eu"], rc.RegionRole.PRIMARY, reports, 1000, 100)
    assert "entries behind" in rc.switchover_refusal("eu", ["us", "eu"], rc.RegionRole.PRIMARY, reports, 5000, 100)
    assert "not reported" in rc.switchover_refusal("eu", ["us", "eu"], rc.RegionRole.PRIMARY, {}, 1000, 100)
    assert "not the primary" in rc.switchover_refusal("eu", ["us", "eu"], rc.RegionRole.SECONDARY, reports, 1000, 100)


def test_lag():
    assert rc.lag_ms(5_000_000_000, 0) is None, "no replicated point known: unknown, not up to date"
    assert rc.lag_ms(5_000_000_000, 4_000_000_000) == 1000


@pytest.mark.parametrize("seed", range(200))
def test_model_no_index_is_committed_by_two_regions(seed):
    """Random switchovers, failovers, crashes and lagging replication among three regions: a
    region commits only when resolve_role says it accepts commits, a secondary copies a prefix
    of its primary's committed log, a failover promotes where replication stands and fences the
    old primary through the control state, and a fenced region rejoins by dropping its suffix
    after the promotion index. Every index ever committed names one (region, entry) pair, and
    every region's log is, after the failovers' lost suffixes, a prefix of one history."""
    rng = random.Random(seed)
    names = ["us", "eu", "ap"]
    logs = {name: [] for name in names}   # entries: (global_epoch, writer region, serial)
    markers: dict[str, rc.Marker | None] = {name: None for name in names}
    control = ControlState()
    alive = {name: True for name in names}
    committed_at: dict[int, tuple] = {}   # index -> entry, as committed by its writer
    lost: list[tuple] = []
    serial = 0

    def view(name):
        return rc.resolve_role(name, "us", markers[name], control)

    def append(name, entry):
        logs[name].append(entry)
        if entry[1] == "marker":
            markers[name] = rc.newer_marker(markers[name], entry[0], entry[2], len(logs[name]))

    for _ in range(150):
        action = rng.random()
        name = rng.choice(names)
        v = view(name)
        if action < 0.45 and alive[name] and v.accepts_commits:
            serial += 1
            entry = (v.global_epoch, name, serial)
            append(name, entry)
            index = len(logs[name])
            assert index not in committed_at or committed_at[index] == entry, "an index committed twice"
            committed_at[index] = entry
        elif action < 0.75 and alive[name] and v.replicates:
            source = v.primary
            if not alive[source]:
                continue
            target_len = len(logs[source]) if v.replicate_to_index == 0 else min(len(logs[source]), v.replicate_to_index)
            take = rng.randint(0, max(0, target_len - len(logs[name])))
            for entry in logs[source][len(logs[name]):len(logs[name]) + take]:
                append(name, entry)
        elif action < 0.82:
            # Switchover from the current primary to a caught-up secondary (the CLI checks that).
            primaries = [n for n in names if view(n).role == rc.RegionRole.PRIMARY and alive[n]]
            if not primaries:
                continue
            old = primaries[0]
            target = rng.choice([n for n in names if n != old])
            if view(target).role != rc.RegionRole.SECONDARY or not alive[target]:
                continue
            epoch = max(view(old).global_epoch, control.global_epoch) + 1
            append(old, (epoch, "marker", target))
            committed_at.setdefault(len(logs[old]), logs[old][-1])
            control = ControlState(global_epoch=epoch, primary=target, marker_index=len(logs[old]),
                                   fenced=control.fenced, detached=control.detached)
        elif action < 0.88:
            # Failover to a secondary, wherever its replication stands.
            target = name
            if view(target).role != rc.RegionRole.SECONDARY or not alive[target]:
                continue
            old = view(target).primary
            epoch = max(control.global_epoch, view(target).global_epoch, view(old).global_epoch) + 1
            promotion_index = len(logs[target])
            control = ControlState(global_epoch=epoch, primary=target,
                                   fenced=tuple((n, promotion_index) for n in names if n != target),
                                   detached=control.detached)
            assert view(target).role == rc.RegionRole.PROMOTING
            # Whatever was committed past the promotion index is the failover's loss (saved when
            # the regions holding it rejoin); from now on every other region is fenced.
            for index in [i for i in committed_at if i > promotion_index]:
                lost.append(committed_at.pop(index))
            assert not any(view(n).accepts_commits for n in names if n != target)
            append(target, (epoch, "marker", target))
            committed_at[len(logs[target])] = logs[target][-1]
        elif action < 0.94:
            alive[name] = not alive[name]
        else:
            # A fenced region rejoins: save and drop its suffix after the promotion index.
            if view(name).role == rc.RegionRole.FENCED and alive[name]:
                promotion_index = control.fenced_index(name)
                lost.extend(logs[name][promotion_index:])
                del logs[name][promotion_index:]
                markers[name] = None
                for i, entry in enumerate(logs[name], start=1):
                    if entry[1] == "marker":
                        markers[name] = rc.newer_marker(markers[name], entry[0], entry[2], i)
                source = view(name).primary
                for entry in logs[source][len(logs[name]):]:
                    append(name, entry)
                assert view(name).role in (rc.RegionRole.SECONDARY, rc.RegionRole.FENCED)
    # Every surviving log agrees with what was committed at each index, except lost suffixes.
    for name in names:
        for index, entry in enumerate(logs[name], start=1):
            if entry in lost:
                continue
            assert committed_at.get(index, entry) == entry or entry[1] == "marker"
    primaries = [n for n in names if view(n).role == rc.RegionRole.PRIMARY]
    assert len(primaries) <= 1
