"""The Global Database's decisions, pure (docs/REGIONS.md): no await, socket, file or clock read.

Roles. A region's role follows from two facts. The journal's newest ENTRY_GLOBAL (its
*marker*: global epoch g, primary region P) says what the log agreed: a switchover's marker
is written by the old primary as its last entry, and replicated to the new one, so both
logs say the same thing at the same index. The global control state (quorumdb/regions.py)
says what the operator decided where no log can carry it: a failover promotes a secondary
while the old primary is dead or cut off, so the old primary learns it from the control
state, never from its own log. The higher global epoch wins:

* log epoch >= control epoch: P is primary; every other region is its secondary.
* control epoch higher, naming this region: a failover (promote now, where replication
  stands) or a switchover whose marker this region has not replicated yet (keep
  replicating up to `marker_index`; the marker itself then makes it primary).
* control epoch higher, naming another region, and this region is in the failover's fenced
  list (every region but the promoted one): *fenced*. It commits nothing and copies nothing
  until it rejoins: its log past the promotion index (an old primary's unreplicated commits,
  or a secondary that had replicated further than the promoted one) is saved and dropped,
  then it replicates from the new primary, whose ENTRY_GLOBAL makes it a secondary again.
* a detached region is a cluster on its own: it leads and replicates from nobody.

Why no index is ever committed by two regions: a primary commits only while its log's
marker names it and the control state has no higher epoch naming another; a secondary only
copies the primary's committed entries. A switchover's marker is the old primary's last
entry, and the new primary appends only after replicating it. A failover's new primary
appends after its promotion index P; the old primary may have committed past P (those
entries are the failover's loss: saved in a recovery snapshot, never merged), and it is
fenced by the control state before it may commit again.
"""
from __future__ import annotations

import dataclasses
import enum

from quorumdb.regions import ControlState


class RegionRole(enum.Enum):
    NONE = ""                # a cluster without regions
    PRIMARY = "primary"
    SECONDARY = "secondary"
    PROMOTING = "promoting"  # a failover named this region: stop replicating, lead
    FENCED = "fenced"        # an old primary after a failover: commits nothing until it rejoins
    DETACHED = "detached"    # left the Global Database: a cluster on its own


@dataclasses.dataclass(frozen=True)
class Marker:
    """The newest ENTRY_GLOBAL of a log (epoch 1 = the global file's initial primary, no entry)."""
    global_epoch: int
    primary: str
    index: int = 0


@dataclasses.dataclass(frozen=True)
class RoleView:
    role: RegionRole
    primary: str             # the region this one follows (or itself)
    global_epoch: int
    replicate_to_index: int = 0  # PROMOTING after a switchover: replicate up to here first
    reason: str = ""

    @property
    def accepts_commits(self) -> bool:
        return self.role in (RegionRole.NONE, RegionRole.PRIMARY, RegionRole.DETACHED)

    @property
    def replicates(self) -> bool:
        """This region copies the primary's journal."""
        return self.role == RegionRole.SECONDARY or (self.role == RegionRole.PROMOTING and self.replicate_to_index > 0)


def resolve_role(own: str, initial_primary: str, marker: Marker | None, control: ControlState) -> RoleView:
    if not own:
        return RoleView(RegionRole.NONE, "", 0)
    if own in control.detached:
        return RoleView(RegionRole.DETACHED, own, max(control.global_epoch, marker.global_epoch if marker else 1),
                        reason="detached from the Global Database")
    log = marker or Marker(1, initial_primary)
    if control.global_epoch > log.global_epoch:
        if control.primary == own:
            if control.marker_index:
                # Still copying from the old primary (the log's) until its marker arrives.
                return RoleView(RegionRole.PROMOTING, log.primary, control.global_epoch, control.marker_index,
                                f"switchover: replicating up to the marker at index {control.marker_index}")
            return RoleView(RegionRole.PROMOTING, own, control.global_epoch,
                            reason=f"failover to {own} at global epoch {control.global_epoch}")
        if control.fenced_index(own) is not None:
            return RoleView(RegionRole.FENCED, control.primary, control.global_epoch,
                            replicate_to_index=control.fenced_index(own),
                            reason=(f"fenced: region {control.primary} was promoted at global epoch "
                                    f"{control.global_epoch} after index {control.fenced_index(own)}; {own} "
                                    "commits nothing until it rejoins as a secondary"))
        return RoleView(RegionRole.SECONDARY, control.primary, control.global_epoch)
    if log.primary == own:
        return RoleView(RegionRole.PRIMARY, own, log.global_epoch)
    return RoleView(RegionRole.SECONDARY, log.primary, log.global_epoch)


def newer_marker(current: Marker | None, entry_epoch: int, primary: str, index: int) -> Marker:
    """The log's marker after an ENTRY_GLOBAL (entries arrive in index order)."""
    if current is None or entry_epoch >= current.global_epoch:
        return Marker(entry_epoch, primary, index)
    return current


# --- replication -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ReplicaReport:
    region: str
    index: int      # durable in that region's journal
    ts: int         # its replicated closed ts


def truncation_hold(reports: dict[str, ReplicaReport], secondaries: list[str], commit_index: int,
                    retain_max: int) -> int:
    """The index the primary's journal must keep every entry after (AppendRequest.hold_index).

    The slowest attached secondary's replicated index; 1 while one has not reported yet (keep
    everything until it does); never more than retain_max entries behind the commit index (a
    secondary further behind must be seeded again); 0 (no hold) without secondaries."""
    if not secondaries:
        return 0
    floor = max(1, commit_index - retain_max)
    held = [reports[name].index if name in reports else 0 for name in secondaries]
    return max(floor, min(held), 1)


def rpo_violation(reports: dict[str, ReplicaReport], secondaries: list[str], now_earliest: int,
                  rpo_ns: int) -> str:
    """Why a commit now would be beyond the RPO limit ("" when some secondary is within it).

    A secondary is within the limit when its replicated point is less than rpo_ns behind now
    (its report is older than the truth, so this errs on the safe side)."""
    if rpo_ns <= 0 or not secondaries:
        return ""
    behind = []
    for name in secondaries:
        report = reports.get(name)
        if report is not None and now_earliest - report.ts <= rpo_ns:
            return ""
        behind.append(f"{name} {'has not reported' if report is None else f'is {(now_earliest - report.ts) / 1e9:.1f} s behind'}")
    return (f"global database RPO limit exceeded: no secondary region within {rpo_ns / 1e9:g} s "
            f"({'; '.join(behind)}); nothing was committed")


def lag_ms(now_latest: int, replicated_ts: int) -> int | None:
    """How far the replicated point is behind now; None while no replicated point is known (a
    lag of 0 would claim the region is up to date)."""
    if replicated_ts <= 0:
        return None
    return max(0, (now_latest - replicated_ts) // 1_000_000)


def switchover_refusal(target: str, regions: list[str], role: RegionRole, reports: dict[str, ReplicaReport],
                       commit_index: int, max_lag_entries: int, detached: tuple[str, ...] = ()) -> str:
    """Why the primary refuses a switchover to `target` ("" when it may go ahead)."""
    if target not in regions:
        return f"unknown region {target!r} (regions: {', '.join(regions)})"
    if target in detached:
        return f"region {target} is detached from the Global Database"
    if role != RegionRole.PRIMARY:
        return f"this region is not the primary (it is {role.value or 'not a region'})"
    report = reports.get(target)
    if report is None:
        return (f"region {target} has not reported its replication point recently: it is unreachable or not "
                "replicating")
    behind = commit_index - report.index
    if behind > max_lag_entries:
        return f"region {target} is {behind} entries behind (at most {max_lag_entries} for a switchover)"
    return ""
