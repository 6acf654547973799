"""`quorumdb global ...`: look at and steer a Global Database (docs/REGIONS.md).

    quorumdb global status [--json]                  regions, roles, lag, endpoints
    quorumdb global switchover --to R                planned: marker, RPO 0, prints the RTO
    quorumdb global failover --to R --allow-data-loss  unplanned: promotes R where it stands
    quorumdb global set-rpo 20s | off                commits wait, then fail, beyond the limit
    quorumdb global detach R                         R becomes a cluster of its own
    quorumdb global rejoin R                         a fenced region saves its lost suffix, rejoins

The commands talk to each region's adjudicator leader (RegionPoint, Switchover, Promote)
and write the global control state (quorumdb/regions.py) the adjudicators poll.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Any, TextIO

import grpc

from quorumdb import config as config_mod
from quorumdb import limits, regions, rpc
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc
from tools import toolcreds

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2




class GlobalError(Exception):
    """A refused or failed command (the message says why); exit_code says how to exit."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass
class RegionState:
    name: str
    cluster: config_mod.ClusterConfig
    point: adjudicator_pb2.RegionPointReply | None
    leader: str = ""
    problem: str = ""

    @property
    def role(self) -> str:
        return self.point.role if self.point is not None else "unreachable"


async def region_point(channels: rpc.Channels, cluster: config_mod.ClusterConfig) -> tuple[
        adjudicator_pb2.RegionPointReply | None, str, str]:
    """The region's leader's RegionPoint: (reply, leader name, problem)."""
    problems = []
    answers = []
    for node in cluster.adjudicators:
        stub = adjudicator_pb2_grpc.AdjudicatorStub(channels.get(node.address))
        answers.append(stub.RegionPoint(adjudicator_pb2.RegionPointRequest(), timeout=limits.STATUS_TIMEOUT_S))
    results = await asyncio.gather(*answers, return_exceptions=True)
    for node, result in zip(cluster.adjudicators, results):
        if isinstance(result, grpc.aio.AioRpcError):
            problems.append(f"{node.name}: {result.code().name} {result.details() or ''}".rstrip())
        elif isinstance(result, BaseException):
            problems.append(f"{node.name}: {result!r}")
        elif result.is_leader:
            return result, node.name, ""
    standby = next((r for r in results if isinstance(r, adjudicator_pb2.RegionPointReply)), None)
    return standby, "", "no adjudicator leads" + (f" ({'; '.join(problems)})" if problems else "")


async def gather(global_cfg: regions.GlobalConfig, channels: rpc.Channels) -> list[RegionState]:
    states = []
    for region in global_cfg.regions:
        cluster = region.cluster()
        point, leader, problem = await region_point(channels, cluster)
        states.append(RegionState(region.name, cluster, point, leader, problem))
    return states


def writer_endpoint(global_cfg: regions.GlobalConfig, states: list[RegionState]) -> str:
    """HAProxy's PostgreSQL address when `up` runs it, else the primary's first PostgreSQL endpoint."""
    first = global_cfg.regions[0]
    if (global_cfg.data_dir / "haproxy" / "haproxy.cfg").exists():
        return f"127.0.0.1:{first.base_port + config_mod.WRITER_PG_PORT_OFFSET}"
    for state in states:
        if state.role == "primary":
            node = state.cluster.computes[0]
            return f"{node.host}:{state.cluster.pg_port(node.name)}"
    return ""


def lag_of(point: adjudicator_pb2.RegionPointReply | None, replicates: bool) -> int | None:
    """A region's replication lag in ms: 0 for a region that does not replicate (a primary, a
    detached region), None when it is not known (unreachable, no leader answered, a new leader
    still reading its point): a region whose lag nobody knows is not shown as up to date."""
    if point is None:
        return None
    if not replicates:
        return 0
    return regions.reported_lag_ms(point)


def status_report(global_cfg: regions.GlobalConfig, states: list[RegionState],
                  control: regions.ControlState) -> dict[str, Any]:
    rows = []
    for state in states:
        point = state.point
        cluster = state.cluster
        role = state.role
        replicates = role in ("secondary", "promoting", "fenced")
        rows.append({
            "name": state.name,
            "role": role,
            "lag_ms": lag_of(point, replicates),
            "lag_entries": (max(0, point.primary_commit_index - point.replicated_index)
                            if point is not None and replicates else 0),
            "replicated_index": int(point.replicated_index) if point is not None else 0,
            "primary_region": point.primary_region if point is not None else "",
            "global_epoch": int(point.global_epoch) if point is not None else 0,
            "leader": state.leader,
            "endpoints": [node.address for node in cluster.computes],
            "pg_endpoints": [f"{node.host}:{cluster.pg_port(node.name)}" for node in cluster.computes],
            "message": (point.message if point is not None else "") or state.problem,
        })
    return {"regions": rows, "writer_endpoint": writer_endpoint(global_cfg, states),
            "global_epoch": max([control.global_epoch] + [r["global_epoch"] for r in rows]),
            "rpo_s": control.rpo_s, "detached": list(control.detached)}


def status_text(report: dict[str, Any]) -> str:
    lines = [f"{'region':<12} {'role':<10} {'lag':>9} {'entries':>8} {'leader':<18} endpoints (client API / PostgreSQL)"]
    for row in report["regions"]:
        lag = regions.lag_text(row["lag_ms"]) if row["role"] != "primary" else "-"
        entries = str(row["lag_entries"]) if row["role"] != "primary" else "-"
        lines.append(f"{row['name']:<12} {row['role']:<10} {lag:>9} {entries:>8} {row['leader'] or '-':<18} "
                     f"{','.join(row['endpoints'])} / {','.join(row['pg_endpoints'])}")
        if row["message"]:
            lines.append(f"{'':<12} {row['message']}")
    rpo = f"{report['rpo_s']:g} s" if report["rpo_s"] else "none"
    lines.append(f"writer endpoint: {report['writer_endpoint'] or '(no primary)'}; global epoch "
                 f"{report['global_epoch']}; RPO limit: {rpo}")
    return "\n".join(lines) + "\n"


def _primary(states: list[RegionState]) -> RegionState:
    primaries = [state for state in states if state.role == "primary"]
    if len(primaries) != 1:
        seen = ", ".join(f"{s.name}={s.role}" for s in states)
        raise GlobalError(f"expected exactly one primary region, found {len(primaries)} ({seen})")
    return primaries[0]


def _target(global_cfg: regions.GlobalConfig, name: str) -> None:
    if name not in global_cfg.names:
        raise GlobalError(f"unknown region {name!r} (regions: {', '.join(global_cfg.names)})", EXIT_USAGE)


async def _leader_stub(channels: rpc.Channels, state: RegionState) -> adjudicator_pb2_grpc.AdjudicatorStub:
    if not state.leader:
        raise GlobalError(f"region {state.name} has no adjudicator leader reachable ({state.problem})")
    return adjudicator_pb2_grpc.AdjudicatorStub(channels.get(state.cluster.node(state.leader).address))


async def _wait_role(channels: rpc.Channels, cluster: config_mod.ClusterConfig, role: str,
                     timeout_s: float) -> adjudicator_pb2.RegionPointReply:
    deadline = time.monotonic() + timeout_s
    while True:
        point, leader, _ = await region_point(channels, cluster)
        if point is not None and leader and point.role == role:
            return point
        if time.monotonic() >= deadline:
            raise GlobalError(f"the region did not become {role} within {timeout_s:.0f} s "
                              f"(it is {point.role if point else 'unreachable'})")
        await asyncio.sleep(0.02)


async def switchover(global_cfg: regions.GlobalConfig, to: str, out: TextIO) -> None:
    _target(global_cfg, to)
    channels = _channels(global_cfg)
    try:
        states = await gather(global_cfg, channels)
        primary = _primary(states)
        target = next(state for state in states if state.name == to)
        if target is primary:
            raise GlobalError(f"region {to} is already the primary", EXIT_USAGE)
        if target.role != "secondary" or not target.leader:
            raise GlobalError(f"region {to} cannot take over: it is {target.role}"
                              f"{f' ({target.problem})' if target.problem else ''}")
        control = regions.read_state(global_cfg.data_dir)
        epoch = max(control.global_epoch, primary.point.global_epoch, target.point.global_epoch) + 1
        started = time.monotonic()
        stub = await _leader_stub(channels, primary)
        reply = await stub.Switchover(adjudicator_pb2.SwitchoverRequest(
            to_region=to, global_epoch=epoch, max_lag_entries=limits.SWITCHOVER_LAG_ENTRIES_MAX),
            timeout=limits.TAKE_OVER_TIMEOUT_S + limits.JOURNAL_COMMIT_TIMEOUT_S)
        if not reply.ok:
            raise GlobalError(f"switchover to {to} refused by {primary.name}: {reply.message}; nothing changed")
        regions.update_state(global_cfg.data_dir, lambda state: dataclasses.replace(
            state, global_epoch=epoch, primary=to, marker_index=reply.marker_index, fenced=()))
        out.write(f"{primary.name} wrote the switchover marker at index {reply.marker_index} (global epoch {epoch}) "
                  f"and commits nothing more\n")
        out.flush()
        point = await _wait_role(channels, target.cluster, "primary", limits.SWITCHOVER_TIMEOUT_S)
        rto = time.monotonic() - started
        await _wait_role(channels, primary.cluster, "secondary", limits.SWITCHOVER_TIMEOUT_S)
        out.write(f"switchover complete: {to} is the primary (global epoch {point.global_epoch}), {primary.name} "
                  f"is a secondary; RTO {rto:.2f} s; 0 commits lost\n")
    finally:
        await channels.close()


async def failover(global_cfg: regions.GlobalConfig, to: str, allow_data_loss: bool, out: TextIO) -> None:
    _target(global_cfg, to)
    if not allow_data_loss:
        raise GlobalError(f"a failover promotes {to} where its replication stands: the commits it has not "
                          "replicated are lost. Pass --allow-data-loss to go ahead, or use `quorumdb global "
                          "switchover` (no loss) while the primary is up", EXIT_USAGE)
    channels = _channels(global_cfg)
    try:
        states = await gather(global_cfg, channels)
        target = next(state for state in states if state.name == to)
        if target.role == "primary":
            raise GlobalError(f"region {to} is already the primary", EXIT_USAGE)
        if target.role not in ("secondary", "promoting") or not target.leader:
            raise GlobalError(f"region {to} cannot be promoted: it is {target.role}"
                              f"{f' ({target.problem})' if target.problem else ''}")
        lag = regions.lag_text(lag_of(target.point, True))
        control = regions.read_state(global_cfg.data_dir)
        epoch = max([control.global_epoch] + [s.point.global_epoch for s in states if s.point is not None]) + 1
        others = [name for name in global_cfg.names if name != to and name not in control.detached]
        started = time.monotonic()
        # The control state first: an old primary that comes back (or was only cut off) is fenced
        # by it before anything else; its exact promotion index is filled in below.
        regions.update_state(global_cfg.data_dir, lambda state: dataclasses.replace(
            state, global_epoch=epoch, primary=to, marker_index=0,
            fenced=tuple((name, 0) for name in others)))
        stub = await _leader_stub(channels, target)
        reply = await stub.Promote(adjudicator_pb2.PromoteRequest(global_epoch=epoch),
                                   timeout=limits.TAKE_OVER_TIMEOUT_S + limits.JOURNAL_COMMIT_TIMEOUT_S + 5)
        if not reply.ok:
            raise GlobalError(f"promoting {to} failed: {reply.message} (the control state names {to} as primary "
                              f"at global epoch {epoch}: run the failover again once {to} is reachable)")
        regions.update_state(global_cfg.data_dir, lambda state: dataclasses.replace(
            state, fenced=tuple((name, reply.promotion_index) for name in others)))
        rto = time.monotonic() - started
        heard_beyond = max(0, reply.primary_commit_index - reply.promotion_index)
        out.write(f"failover to {to}: promoted at index {reply.promotion_index} (global epoch {epoch}); RTO {rto:.2f} s\n"
                  f"lost: the commits the old primary made after index {reply.promotion_index}: at most the "
                  f"replication lag, {lag} when the failover began ({heard_beyond} entries heard of but not "
                  f"replicated); the exact ones go to a recovery snapshot when it rejoins\n"
                  f"fenced: {', '.join(others) or '-'} (each commits nothing until `quorumdb global rejoin`)\n")
    finally:
        await channels.close()


async def detach(global_cfg: regions.GlobalConfig, name: str, out: TextIO) -> None:
    _target(global_cfg, name)
    channels = _channels(global_cfg)
    try:
        states = await gather(global_cfg, channels)
        target = next(state for state in states if state.name == name)
        if target.role == "primary":
            raise GlobalError(f"region {name} is the primary: switch over to another region before detaching it",
                              EXIT_USAGE)
        if not target.leader:
            raise GlobalError(f"region {name} has no adjudicator leader reachable ({target.problem})")
        regions.update_state(global_cfg.data_dir, lambda state: dataclasses.replace(
            state, detached=tuple(sorted(set(state.detached) | {name}))))
        stub = await _leader_stub(channels, target)
        reply = await stub.Promote(adjudicator_pb2.PromoteRequest(detach=True),
                                   timeout=limits.TAKE_OVER_TIMEOUT_S + limits.JOURNAL_COMMIT_TIMEOUT_S + 5)
        if not reply.ok:
            raise GlobalError(f"detaching {name} failed: {reply.message}")
        out.write(f"detached {name}: an independent cluster from index {reply.promotion_index} on "
                  f"(client API {target.cluster.computes[0].address}); the others no longer replicate to it\n")
    finally:
        await channels.close()


# --- rejoin: a fenced region comes back as a secondary ---------------------------------------------
def lost_suffix(cluster: config_mod.ClusterConfig, after_index: int) -> list[Any]:
    """The entries after `after_index` in the region's journal files (the replica that holds most).

    The primary's journal keeps every entry its secondaries have not replicated (the hold), so
    everything after a failover's promotion index is still in these files."""
    from journal.store import JournalStore
    best: list[Any] = []
    for node in cluster.journals:
        directory = cluster.node_data_dir(node.name) / "journal"
        if not directory.exists():
            continue
        _, entries = JournalStore(directory, segment_entries=cluster.journal_segment_entries).open()
        if entries and (not best or entries[-1].index > best[-1].index):
            best = entries
    return [entry for entry in best if entry.index > after_index]


def entry_json(entry: Any) -> dict[str, Any]:
    from quorumdb.pb import common_pb2
    return {"index": entry.index, "epoch": entry.epoch, "kind": common_pb2.EntryKind.Name(entry.kind),
            "ts": entry.ts, "txn_id": entry.txn_id,
            "writes": [{"key": w.key.hex(), "value": None if w.tombstone else w.value.hex()} for w in entry.writes]}


def save_recovery_snapshot(global_cfg: regions.GlobalConfig, name: str, cluster: config_mod.ClusterConfig,
                           epoch: int, promotion_index: int) -> tuple[pathlib.Path, list[Any]]:
    """Write the region's entries after the promotion index to a named recovery snapshot and move
    the region's whole node state there (nothing is dropped). Returns (directory, entries)."""
    import shutil
    suffix = lost_suffix(cluster, promotion_index)
    directory = global_cfg.data_dir / regions.RECOVERY_DIR / f"{name}-epoch{epoch}-after-{promotion_index}"
    n = 1
    while directory.exists():
        n += 1
        directory = directory.with_name(f"{name}-epoch{epoch}-after-{promotion_index}-{n}")
    directory.mkdir(parents=True)
    with open(directory / "lost-commits.jsonl", "w") as f:
        for entry in suffix:
            f.write(json.dumps(entry_json(entry)) + "\n")
    commits = [entry for entry in suffix if entry.writes]
    summary = {"region": name, "global_epoch": epoch, "promotion_index": promotion_index,
               "entries": len(suffix), "commits": len(commits),
               "first_ts": suffix[0].ts if suffix else 0, "last_ts": suffix[-1].ts if suffix else 0,
               "note": "entries this region held after the failover's promotion index: never part of the "
                       "new primary's history. nodes/ is the region's whole state before it rejoined."}
    (directory / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    nodes = cluster.data_dir / "nodes"
    if nodes.exists():
        shutil.move(str(nodes), str(directory / "nodes"))
    return directory, suffix


def _supervisor(cluster: config_mod.ClusterConfig):
    from tools import supervisor as supervisor_mod
    from quorumdb.pb import supervisor_pb2_grpc
    channel = toolcreds.sync_channel(supervisor_mod.address(cluster.base_port), toolcreds.source(cluster.data_dir))
    return channel, supervisor_pb2_grpc.SupervisorStub(channel)


def _channels(global_cfg: regions.GlobalConfig) -> toolcreds.Channels:
    """Channels to the regions' nodes with the Global Database's credentials (one CA and one token
    secret for every region; $QUORUMDB_TOKEN / $QUORUMDB_CA replace them)."""
    return toolcreds.Channels(toolcreds.source(global_cfg.data_dir))


def _region_nodes_action(cluster: config_mod.ClusterConfig, action: str) -> None:
    """Kill or restart every node of a region through `up`'s supervisor of that region."""
    from quorumdb.pb import supervisor_pb2
    channel, stub = _supervisor(cluster)
    try:
        for az in sorted({node.az for node in cluster.nodes}):
            try:
                getattr(stub, action)(supervisor_pb2.AzActionRequest(az=az), timeout=limits.CHAOS_RPC_TIMEOUT_S)
            except grpc.RpcError as error:
                if action == "KillAz" and error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    continue  # nothing of that AZ runs: already down (a killed region, a rejoin run again)
                raise
    except grpc.RpcError as error:
        raise GlobalError(f"the supervisor of region {cluster.region} ({action}): {error.code().name} "
                          f"{error.details()}: is the region running under `quorumdb up`?") from None
    finally:
        channel.close()


async def rejoin(global_cfg: regions.GlobalConfig, name: str, out: TextIO) -> None:
    """A region a failover fenced: save what it holds after the promotion index, rebuild its state
    from the primary's storage at its latest point (tools/dr/clone.py, which links the
    primary's immutable files), and start it again as a secondary."""
    import shutil
    from tools.dr import clone as clone_mod
    _target(global_cfg, name)
    control = regions.read_state(global_cfg.data_dir)
    promotion_index = control.fenced_index(name)
    if promotion_index is None:
        raise GlobalError(f"region {name} is not fenced: nothing to rejoin", EXIT_USAGE)
    if promotion_index == 0:
        raise GlobalError(f"the failover to {control.primary} has not finished (its promotion index is unknown): "
                          "run `quorumdb global failover` again first")
    cluster = global_cfg.region(name).cluster()
    source = global_cfg.region(control.primary).cluster()
    started = time.monotonic()
    await asyncio.to_thread(_region_nodes_action, cluster, "KillAz")
    directory, suffix = save_recovery_snapshot(global_cfg, name, cluster, control.global_epoch, promotion_index)
    commits = [entry for entry in suffix if entry.writes]
    span = (f", commit_ts {commits[0].ts} .. {commits[-1].ts} ({(commits[-1].ts - commits[0].ts) / 1e6:.0f} ms)"
            if commits else "")
    out.write(f"saved {len(suffix)} entries after index {promotion_index} ({len(commits)} commits lost by the "
              f"failover{span}) to the recovery snapshot {directory}\n")
    out.flush()
    scratch = global_cfg.data_dir / regions.RECOVERY_DIR / f".rejoin-{name}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        report = await asyncio.to_thread(clone_mod._clone, source, scratch, None, cluster.base_port,
                                         clone_mod.CLOSED_WAIT_S, time.time_ns, started)
    except clone_mod.CloneError as error:
        raise GlobalError(f"rebuilding {name} from {control.primary} failed: {error} (its old state is in "
                          f"{directory}; run rejoin again)") from None
    shutil.move(str(scratch / "nodes"), str(cluster.data_dir / "nodes"))
    shutil.rmtree(scratch, ignore_errors=True)
    regions.update_state(global_cfg.data_dir, lambda state: dataclasses.replace(
        state, fenced=tuple((n, i) for n, i in state.fenced if n != name)))
    await asyncio.to_thread(_region_nodes_action, cluster, "RestartAz")
    channels = _channels(global_cfg)
    try:
        await _wait_role(channels, cluster, "secondary", limits.SWITCHOVER_TIMEOUT_S)
    finally:
        await channels.close()
    out.write(f"rejoined: {name} is a secondary of {control.primary} again, rebuilt from its state at index "
              f"{report.cut_index} ({time.monotonic() - started:.1f} s)\n")


def set_rpo(global_cfg: regions.GlobalConfig, text: str, out: TextIO) -> None:
    from quorumdb import tokens
    if text.lower() in ("off", "0", "none"):
        seconds = 0.0
    else:
        try:
            seconds = float(tokens.parse_duration(text))
        except tokens.TokenError as error:
            raise GlobalError(f"set-rpo {text!r}: {error}", EXIT_USAGE) from None
        if seconds < limits.RPO_MIN_S:
            raise GlobalError(f"set-rpo {text!r}: at least {limits.RPO_MIN_S:g} s (or off)", EXIT_USAGE)
    regions.update_state(global_cfg.data_dir, lambda state: dataclasses.replace(state, rpo_s=seconds))
    if seconds:
        out.write(f"RPO limit: {seconds:g} s: commits on the primary wait, then fail, while no secondary is within it\n")
    else:
        out.write("RPO limit: off\n")


async def status(global_cfg: regions.GlobalConfig, as_json: bool, out: TextIO) -> int:
    channels = _channels(global_cfg)
    try:
        states = await gather(global_cfg, channels)
    finally:
        await channels.close()
    report = status_report(global_cfg, states, regions.read_state(global_cfg.data_dir))
    out.write(json.dumps(report, indent=1) + "\n" if as_json else status_text(report))
    return EXIT_OK if all(state.point is not None and state.leader for state in states) else EXIT_FAILED


def add_parser(commands: argparse._SubParsersAction, default_data_dir: str) -> None:
    parser = commands.add_parser("global", help="a Global Database's regions: status, switchover, failover, RPO")
    actions = parser.add_subparsers(dest="global_action", required=True)

    def data_dir(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data-dir", default=os.environ.get("QUORUMDB_DATA_DIR", default_data_dir),
                         help="the Global Database's data directory (with global.toml)")

    sub = actions.add_parser("status", help="every region's role, replication lag and endpoints")
    data_dir(sub)
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub = actions.add_parser("switchover", help="planned: make region R the primary with no loss (RPO 0)")
    data_dir(sub)
    sub.add_argument("--to", required=True, metavar="R")
    sub = actions.add_parser("failover", help="unplanned: promote region R where its replication stands")
    data_dir(sub)
    sub.add_argument("--to", required=True, metavar="R")
    sub.add_argument("--allow-data-loss", action="store_true",
                     help="required: the commits R has not replicated are lost (kept in a recovery snapshot)")
    sub = actions.add_parser("set-rpo", help="hold commits on the primary while no secondary is within the limit")
    data_dir(sub)
    sub.add_argument("limit", metavar="DURATION", help="20s, 1m, ... or off")
    sub = actions.add_parser("detach", help="make secondary region R an independent cluster")
    data_dir(sub)
    sub.add_argument("region", metavar="R")
    sub = actions.add_parser("rejoin", help="a region a failover fenced: save its lost suffix to a recovery "
                                            "snapshot, rebuild it from the primary, run it as a secondary")
    data_dir(sub)
    sub.add_argument("region", metavar="R")


# The Global Database's primary/secondary commands have nothing to act on in an active-active cluster.
ACTIVE_ACTIVE_REFUSAL = ("this is an active-active cluster (two peers and a witness): every peer takes writes; "
                         "there is no primary to switch over")


def command(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    data_dir = pathlib.Path(args.data_dir).resolve()
    if not regions.is_global(data_dir):
        err.write(f"quorumdb global: {data_dir} holds no Global Database (no {regions.GLOBAL_FILE}); start one with "
                  "`quorumdb up --regions us-east:primary,eu-west:secondary`\n")
        return EXIT_USAGE
    try:
        global_cfg = regions.load(data_dir)
        if global_cfg.active_active:
            err.write(f"quorumdb global {args.global_action}: {ACTIVE_ACTIVE_REFUSAL} ({global_cfg.path}; see "
                      f"`quorumdb status --data-dir {data_dir}`)\n")
            return EXIT_USAGE
        match args.global_action:
            case "status":
                return asyncio.run(status(global_cfg, args.json, out))
            case "switchover":
                asyncio.run(switchover(global_cfg, args.to, out))
            case "failover":
                asyncio.run(failover(global_cfg, args.to, args.allow_data_loss, out))
            case "set-rpo":
                set_rpo(global_cfg, args.limit, out)
            case "detach":
                asyncio.run(detach(global_cfg, args.region, out))
            case "rejoin":
                asyncio.run(rejoin(global_cfg, args.region, out))
    except GlobalError as error:
        err.write(f"quorumdb global {args.global_action}: {error}\n")
        return error.exit_code
    except (grpc.aio.AioRpcError, regions.RegionsError, OSError) as error:
        err.write(f"quorumdb global {args.global_action}: {error}\n")
        return EXIT_FAILED
    return EXIT_OK
