"""CPU time of the processes a benchmark drives, read from /proc/PID/stat (Linux).

Theory of operation: a figure such as "cluster CPU per committed write" is the sum, over every
process of the system under test, of utime + stime read just before and just after a run,
divided by the operations of that run; nothing (not even the idle cost) is subtracted, the idle
cost being measured and reported on its own. tools/bench/ab_versions does the same in shell.

Parsing is pure (tests feed it text). Reading /proc is best effort: a process that exits between
the two readings contributes nothing after it is gone (its CPU is lost, not guessed), one that
appears (a node restarted during the run) contributes all of its CPU since it started; both are
counted in `vanished`/`appeared` so the report can say so.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable, Iterable, Mapping

PROC = pathlib.Path("/proc")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclasses.dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str  # R, S, D, Z (zombie: exited, not yet reaped), ...
    ppid: int
    utime: int  # clock ticks, this process's own threads, user mode
    stime: int  # ... kernel mode
    cutime: int  # ticks of its children that it has waited for (exited and reaped)
    cstime: int

    @property
    def own_ticks(self) -> int:
        return self.utime + self.stime

    @property
    def reaped_children_ticks(self) -> int:
        return self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """One /proc/PID/stat line. The command name (field 2) is in parentheses and may itself
    contain spaces and parentheses, so the fields are counted from the *last* ')'.
    Raises ValueError on anything else."""
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    pid = int(text[:open_paren].strip())
    comm = text[open_paren + 1:close_paren]
    rest = text[close_paren + 1:].split()
    # rest[0] is field 3 (state); utime is field 14, so rest[11]; ppid field 4 -> rest[1]
    if len(rest) < 15:
        raise ValueError(f"/proc/{pid}/stat has too few fields")
    return ProcStat(pid=pid, comm=comm, state=rest[0], ppid=int(rest[1]), utime=int(rest[11]), stime=int(rest[12]),
                    cutime=int(rest[13]), cstime=int(rest[14]))


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError):
        return None  # gone, or not ours to read


def own_seconds(pids: Iterable[int], stat_of: Callable[[int], ProcStat | None] = read_stat) -> float:
    """CPU seconds of the processes' own threads so far; a process that is gone counts nothing."""
    return sum(stat.own_ticks for pid in pids if (stat := stat_of(pid)) is not None) / CLOCK_TICKS_PER_S


def is_running(pid: int) -> bool:
    """Alive and not a zombie."""
    stat = read_stat(pid)
    return stat is not None and stat.state != "Z"


def read_cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def all_pids() -> list[int]:
    try:
        return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]
    except OSError:
        return []


def node_name(cmdline: list[str]) -> str | None:
    """The value of `--name X` in a QuorumDB node's command line."""
    for flag, value in zip(cmdline, cmdline[1:]):
        if flag == "--name":
            return value
    return None


def is_cluster_node(cmdline: list[str], config_path: str) -> bool:
    """A `python -m tools.node --config <config_path> --name X` process of that one cluster
    (other clusters on the machine have other config paths)."""
    return "tools.node" in cmdline and config_path in cmdline


def cluster_node_pids(config_path: pathlib.Path, pids: Iterable[int] | None = None,
                      cmdline_of: Callable[[int], list[str]] = read_cmdline) -> dict[int, str]:
    """PID -> node name of every node process of the cluster whose config file is `config_path`."""
    wanted = str(config_path)
    found = {}
    for pid in (all_pids() if pids is None else pids):
        cmdline = cmdline_of(pid)
        if is_cluster_node(cmdline, wanted):
            found[pid] = node_name(cmdline) or f"pid{pid}"
    return found


def service_of(name: str) -> str:
    """'storage-az2-a' -> 'storage' (the node kinds of the default cluster)."""
    return name.split("-", 1)[0]


@dataclasses.dataclass
class Snapshot:
    """CPU ticks per PID at one moment (own threads only)."""
    ticks: dict[int, int]
    names: dict[int, str]


def snapshot(names: Mapping[int, str], stat_of: Callable[[int], ProcStat | None] = read_stat) -> Snapshot:
    ticks = {}
    for pid in names:
        stat = stat_of(pid)
        if stat is not None:
            ticks[pid] = stat.own_ticks
    return Snapshot(ticks, dict(names))


@dataclasses.dataclass(frozen=True)
class CpuDelta:
    seconds: float
    by_group: dict[str, float]  # e.g. per node kind: journal, adjudicator, storage, compute
    vanished: int  # processes read before but not after (their CPU in between is lost)
    appeared: int  # processes read after but not before (all their CPU is counted)


def delta(before: Snapshot, after: Snapshot, group: Callable[[str], str] = service_of,
          ticks_per_s: float = CLOCK_TICKS_PER_S) -> CpuDelta:
    """CPU used between two snapshots, summed over the processes and per group of names."""
    total = 0
    by_group: dict[str, int] = {}
    for pid, ticks in after.ticks.items():
        used = ticks - before.ticks.get(pid, 0)
        if used < 0:  # a PID reused by a new process between the readings
            used = ticks
        total += used
        key = group(after.names.get(pid, before.names.get(pid, "?")))
        by_group[key] = by_group.get(key, 0) + used
    vanished = sum(1 for pid in before.ticks if pid not in after.ticks)
    appeared = sum(1 for pid in after.ticks if pid not in before.ticks)
    return CpuDelta(total / ticks_per_s, {key: value / ticks_per_s for key, value in sorted(by_group.items())},
                    vanished, appeared)


def tree_ticks(root_pid: int, pids: Iterable[int] | None = None,
               stat_of: Callable[[int], ProcStat | None] = read_stat) -> int | None:
    """CPU ticks of a server that forks a process per connection (PostgreSQL's postmaster):
    the root's own and reaped children's ticks plus the own ticks of its children still alive.
    A backend that exits is reaped by the postmaster and moves into its cutime/cstime, so
    readings taken while no backend is exiting add up. None if the root is gone."""
    root = stat_of(root_pid)
    if root is None:
        return None
    total = root.own_ticks + root.reaped_children_ticks
    for pid in (all_pids() if pids is None else pids):
        if pid == root_pid:
            continue
        stat = stat_of(pid)
        if stat is not None and stat.ppid == root_pid:
            total += stat.own_ticks
    return total


def per_op_ms(cpu_s: float | None, operations: int | None) -> float | None:
    """Milliseconds of CPU per operation; None without operations (never a division by zero)."""
    if cpu_s is None or not operations:
        return None
    return 1000.0 * cpu_s / operations


def reaped_children_cpu_s() -> float:
    """CPU seconds of this process's children (and their descendants) that have exited and been
    waited for: the difference across a load generator's run is that generator's own CPU, as long
    as no other child of ours is reaped meanwhile (tools/bench/compare runs one load at a time)."""
    import resource  # noqa: PLC0415  (Unix only, like the rest of this module)

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
