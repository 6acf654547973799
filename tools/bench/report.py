"""Pure parts of the comparison runner: parsing tool output, percentiles, ratios, the tables.

Theory of operation: `tools/bench/compare` runs processes and collects raw text and samples; everything
here turns that into figures without touching a socket, a file or the clock, so the tests drive it
directly. A figure that could not be measured is None and every ratio built on it is None too
(printed as "n/a"), never a made-up number.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Iterable, Sequence

# --- what is measured ------------------------------------------------------------------------
QDB_CLIENTS = ("bench", "pgbench")  # `quorumdb bench` (Python, gRPC) and pgbench (C, PostgreSQL endpoint)
READ_MODES = ("quorum", "single")  # quorum: 3-of-6 reads, the default; single: one caught-up copy
TPCB_CLIENTS = 8
# QuorumDB's runs, in the order tools/bench/compare makes them, each with both clients: (workload,
# clients, read modes). tpcb runs on the default (quorum) cluster only.
QDB_RUNS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("point-write", 1, READ_MODES), ("point-write", 64, READ_MODES),
    ("point-read", 1, READ_MODES), ("point-read", 64, READ_MODES),
    ("tpcb", TPCB_CLIENTS, ("quorum",)),
)


# pgbench's own scripts on both systems (`pgbench -i` tables, same scale): (figure name, script,
# clients). PostgreSQL's rows are `postgres.<name>`; QuorumDB's `quorumdb.same_<mode>_<name>`.
SAME_SCRIPT_RUNS: tuple[tuple[str, str, int], ...] = (
    (f"tpcb_{TPCB_CLIENTS}", "tpcb-like", TPCB_CLIENTS),
    (f"simple_update_{TPCB_CLIENTS}", "simple-update", TPCB_CLIENTS),
    ("select_only_64", "select-only", 64),
    ("point_upsert_64", "point-upsert", 64),
)
SAME_SCRIPT_MODES = ("quorum",)  # one `pgbench -i` load, on the default cluster


def same_row(mode: str, name: str) -> str:
    assert mode in READ_MODES
    return f"same_{mode}_{name}"


def qdb_row(client: str, mode: str, workload: str, clients: int) -> str:
    """The figure name of one QuorumDB run: `bench_quorum_point_write_64`, `pgbench_single_point_read_1`."""
    assert client in QDB_CLIENTS and mode in READ_MODES
    return f"{client}_{mode}_{workload.replace('-', '_')}_{clients}"


@dataclasses.dataclass(frozen=True)
class Target:
    """One target of the issue "A fast path". `numerator` and `denominator` are figure paths
    (`system.row.field`); {client} and {mode} in them are filled for each QuorumDB client and read
    mode. Without a denominator the figure itself is compared with the target (ms, cores).
    `same`: fields that must be equal in both figures (tpcb's scale), else no ratio."""
    key: str
    title: str
    numerator: str
    denominator: str | None
    target: float
    direction: str  # "higher": at least the target; "lower": at most
    unit: str = "ratio"
    per_client: bool = True
    same: tuple[str, ...] = ()
    modes: tuple[str, ...] = READ_MODES  # the read modes it is measured in


TARGETS: tuple[Target, ...] = (
    Target("cluster_cpu_per_point_write", "cluster CPU per committed point-write, 64 clients (ms)",
           "quorumdb.{client}_{mode}_point_write_64.cluster_cpu_ms_per_op", None, 1.2, "lower", unit="ms"),
    Target("point_write_64_vs_etcd", "point-write / etcd put, 64 clients (tps)",
           "quorumdb.{client}_{mode}_point_write_64.throughput_tps", "etcd.put_64.throughput_tps", 0.5, "higher"),
    Target("point_read_64_vs_select_only", "point-read / PostgreSQL select-only, 64 clients (tps)",
           "quorumdb.{client}_{mode}_point_read_64.throughput_tps", "postgres.select_only_64.throughput_tps", 0.1,
           "higher"),
    Target("tpcb_vs_pgbench", f"tpcb / pgbench TPC-B, {TPCB_CLIENTS} clients, same scale >= clients (tps)",
           f"quorumdb.{{client}}_{{mode}}_tpcb_{TPCB_CLIENTS}.throughput_tps",
           f"postgres.tpcb_{TPCB_CLIENTS}.throughput_tps", 0.25, "higher", same=("scale",), modes=("quorum",)),
    Target("point_write_1_p50_vs_etcd", "point-write p50 / etcd put p50, 1 client (latency)",
           "quorumdb.{client}_{mode}_point_write_1.latency_ms_p50", "etcd.put_1.latency_ms_p50", 3.0, "lower"),
    Target("point_read_1_p50", "point-read p50, 1 client (ms)",
           "quorumdb.{client}_{mode}_point_read_1.latency_ms_p50", None, 3.0, "lower", unit="ms"),
    Target("idle_cluster_cores", "idle CPU of the cluster, 8 s after set-up (cores)",
           "quorumdb.idle_{mode}.cluster_cores", None, 0.3, "lower", unit="cores", per_client=False),
)

CLIENT_LABELS = {"bench": "quorumdb bench", "pgbench": "pgbench"}

# The rows of the figures table: (figure path, system, client, read mode, workload, clients).
FIGURE_ROWS: tuple[tuple[str, str, str, str, str, int], ...] = (
    ("etcd.put_1", "etcd 3 members", "tools/bench/etcd_load.py", "", "put (v3 JSON gateway)", 1),
    ("etcd.put_64", "etcd 3 members", "tools/bench/etcd_load.py", "", "put (v3 JSON gateway)", 64),
    (f"postgres.tpcb_{TPCB_CLIENTS}", "PostgreSQL", "pgbench", "", "TPC-B (-b tpcb-like)", TPCB_CLIENTS),
    ("postgres.select_only_64", "PostgreSQL", "pgbench", "", "select-only (-S)", 64),
    (f"postgres.simple_update_{TPCB_CLIENTS}", "PostgreSQL", "pgbench", "", "simple-update (-b)", TPCB_CLIENTS),
    ("postgres.point_upsert_64", "PostgreSQL", "pgbench", "", "point-upsert (-f)", 64),
) + tuple(
    (f"quorumdb.{qdb_row(client, mode, workload, clients)}", "QuorumDB", client, mode, workload, clients)
    for mode in READ_MODES for workload, clients, modes in QDB_RUNS if mode in modes for client in QDB_CLIENTS
)

FIGURE_ROWS += tuple(
    (f"quorumdb.{same_row(mode, name)}", "QuorumDB", "pgbench", mode, f"{script} (pgbench -i tables)", clients)
    for mode in SAME_SCRIPT_MODES for name, script, clients in SAME_SCRIPT_RUNS)

_TPS_LINE = re.compile(r"^tps = ([0-9]+(?:\.[0-9]+)?) \(([^)]*)\)", re.MULTILINE)
_PGBENCH_LATENCY = re.compile(r"^latency average = ([0-9]+(?:\.[0-9]+)?) ms", re.MULTILINE)
_PGBENCH_FAILED = re.compile(r"^number of failed transactions: ([0-9]+)", re.MULTILINE)
_PGBENCH_PROCESSED = re.compile(r"^number of transactions actually processed: ([0-9]+)", re.MULTILINE)
_PGBENCH_RETRIES = re.compile(r"^total number of retries: ([0-9]+)", re.MULTILINE)
_PGBENCH_CONNECTION = re.compile(r"^initial connection time = ([0-9]+(?:\.[0-9]+)?) ms", re.MULTILINE)
_PGBENCH_SCALE = re.compile(r"^scaling factor: ([0-9]+)", re.MULTILINE)


def parse_pgbench(output: str) -> dict[str, Any]:
    """Figures from pgbench's summary. Raises ValueError when it has no tps line.

    pgbench 14+ prints one line `tps = N (without initial connection time)`; older versions print
    two, `(including connections establishing)` and `(excluding ...)`: the one without connection
    set-up is taken, as it is what the run measured."""
    lines = _TPS_LINE.findall(output)
    if not lines:
        raise ValueError("no 'tps = ' line in pgbench output")
    chosen = lines[0]
    for value, note in lines:
        if "without" in note or "excluding" in note:
            chosen = (value, note)
            break
    result: dict[str, Any] = {"throughput_tps": float(chosen[0])}
    latency = _PGBENCH_LATENCY.search(output)
    result["latency_ms_avg"] = float(latency.group(1)) if latency else None
    processed = _PGBENCH_PROCESSED.search(output)
    result["transactions"] = int(processed.group(1)) if processed else None
    failed = _PGBENCH_FAILED.search(output)
    result["errors"] = int(failed.group(1)) if failed else 0
    retries = _PGBENCH_RETRIES.search(output)  # printed only with --max-tries > 1
    result["retries"] = int(retries.group(1)) if retries else 0
    connection = _PGBENCH_CONNECTION.search(output)
    result["connection_ms"] = float(connection.group(1)) if connection else None
    scale = _PGBENCH_SCALE.search(output)
    result["scale"] = int(scale.group(1)) if scale else None
    return result


def parse_bench_json(output: str) -> dict[str, Any]:
    """The object `quorumdb bench --json` printed: the last line of stdout that is a JSON object
    holding throughput_tps (progress lines may come before it). Raises ValueError without one."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "throughput_tps" in value:
            return value
    try:  # a pretty-printed object over several lines
        value = json.loads(output)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict) and "throughput_tps" in value:
        return value
    raise ValueError("no JSON object with throughput_tps in `quorumdb bench --json` output")


def parse_etcd_version(output: str) -> str | None:
    """'etcd Version: 3.4.23' -> '3.4.23'."""
    match = re.search(r"etcd Version:\s*(\S+)", output)
    return match.group(1) if match else None


def parse_postgres_version(output: str) -> str | None:
    """'pg_ctl (PostgreSQL) 15.5 (Debian 15.5-0+deb12u1)' -> '15.5'."""
    match = re.search(r"\(PostgreSQL\)\s*(\S+)", output)
    return match.group(1) if match else None


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (None when empty)."""
    assert 0.0 <= fraction <= 1.0
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_s: Iterable[float], completed: int, elapsed_s: float, errors: int) -> dict[str, Any]:
    """The figures of one load-generator run, in the same shape as `quorumdb bench --json`."""
    assert elapsed_s > 0
    ordered = sorted(latencies_s)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000.0, 3)

    return {
        "throughput_tps": round(completed / elapsed_s, 1),
        "latency_ms_p50": ms(percentile(ordered, 0.50)),
        "latency_ms_p95": ms(percentile(ordered, 0.95)),
        "latency_ms_p99": ms(percentile(ordered, 0.99)),
        "latency_ms_max": ms(ordered[-1] if ordered else None),
        "completed": completed,
        "errors": errors,
        "elapsed_s": round(elapsed_s, 3),
    }


def lookup(figures: dict[str, Any], path: str) -> float | None:
    """figures['a']['b']['c'] for 'a.b.c'; None when any step is missing or not a number."""
    node: Any = figures
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return float(node)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _meets(value: float | None, target: float, direction: str) -> bool | None:
    if value is None:
        return None
    return value >= target if direction == "higher" else value <= target


def _row_of(path: str) -> str:
    """'quorumdb.bench_quorum_tpcb_8.throughput_tps' -> 'quorumdb.bench_quorum_tpcb_8'."""
    return path.rsplit(".", 1)[0]


def _field(figures: dict[str, Any], row: str, name: str) -> Any:
    node: Any = figures
    for part in row.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node.get(name) if isinstance(node, dict) else None


def compute_ratios(figures: dict[str, Any], clients: Sequence[str] = QDB_CLIENTS,
                   modes: Sequence[str] = READ_MODES) -> list[dict[str, Any]]:
    """One entry per target, QuorumDB client and read mode: the value (or None: not measured,
    failed, a zero denominator, or `same` fields that differ) and whether it meets its target."""
    results = []
    for target in TARGETS:
        for client in (clients if target.per_client else (None,)):
            for mode in (mode for mode in modes if mode in target.modes):
                numerator = target.numerator.format(client=client, mode=mode)
                top = lookup(figures, numerator)
                note = None
                if target.denominator is None:
                    value = top
                else:
                    value = ratio(top, lookup(figures, target.denominator))
                    for name in target.same:
                        mine, theirs = (_field(figures, _row_of(numerator), name),
                                        _field(figures, _row_of(target.denominator), name))
                        if value is not None and mine != theirs:
                            value, note = None, f"{name} differs: {mine} against {theirs}"
                results.append({"key": target.key, "title": target.title, "client": client, "read_mode": mode,
                                "numerator": numerator, "denominator": target.denominator,
                                "value": None if value is None else round(value, 4), "target": target.target,
                                "direction": target.direction, "unit": target.unit,
                                "meets_target": _meets(value, target.target, target.direction),
                                "default": mode == "quorum", "note": note})
    return results


def same_script_ratios(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """QuorumDB / PostgreSQL for each script both ran with pgbench (identical client work): tps
    and cluster/server CPU per transaction. None where either side was not measured or the
    scales differ."""
    entries = []
    for mode in SAME_SCRIPT_MODES:
        for name, script, clients in SAME_SCRIPT_RUNS:
            mine, theirs = f"quorumdb.{same_row(mode, name)}", f"postgres.{name}"
            value = ratio(lookup(figures, mine + ".throughput_tps"), lookup(figures, theirs + ".throughput_tps"))
            note = None
            if value is not None and _field(figures, mine, "scale") != _field(figures, theirs, "scale"):
                value, note = None, (f"scale differs: {_field(figures, mine, 'scale')} against "
                                     f"{_field(figures, theirs, 'scale')}")
            entries.append({"script": script, "clients": clients, "read_mode": mode,
                            "quorumdb_tps": lookup(figures, mine + ".throughput_tps"),
                            "postgres_tps": lookup(figures, theirs + ".throughput_tps"),
                            "quorumdb_cpu_ms_per_op": lookup(figures, mine + ".cluster_cpu_ms_per_op"),
                            "postgres_cpu_ms_per_op": lookup(figures, theirs + ".server_cpu_ms_per_op"),
                            "ratio": None if value is None else round(value, 4), "note": note})
    return entries


def same_scripts_markdown(entries: list[dict[str, Any]]) -> str:
    lines = ["| pgbench script | clients | QuorumDB tps | PostgreSQL tps | QuorumDB / PostgreSQL "
             "| QuorumDB CPU ms/op | PostgreSQL CPU ms/op |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for entry in entries:
        shown = _significant(entry["ratio"]) if entry["note"] is None else f"n/a ({entry['note']})"
        lines.append(f"| {entry['script']} | {entry['clients']} | {_number(entry['quorumdb_tps'])} "
                     f"| {_number(entry['postgres_tps'])} | {shown} | {_number(entry['quorumdb_cpu_ms_per_op'], 2)} "
                     f"| {_number(entry['postgres_cpu_ms_per_op'], 3)} |")
    return "\n".join(lines)


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _significant(value: float | None) -> str:
    """Two decimals, or three significant digits below 1 (a ratio of 0.002 is not 0.00, and
    0.302 cores is not the 0.30 that would meet a target of 0.3)."""
    if value is None:
        return "n/a"
    if value != 0 and abs(value) < 1:
        return f"{value:.{2 - int(math.floor(math.log10(abs(value))))}f}"
    return f"{value:,.2f}"


def client_label(client: str, pgbench_mode: str = "simple") -> str:
    return f"pgbench -M {pgbench_mode}" if client == "pgbench" else CLIENT_LABELS.get(client, client)


def figures_markdown(figures: dict[str, Any], pgbench_mode: str = "simple") -> str:
    lines = ["| system | client | read mode | workload | clients | throughput (tps) | p50 ms | p99 ms | aborts "
             "| errors | server CPU ms/op | load-gen CPU ms/op |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for path, system, client, mode, workload, clients in FIGURE_ROWS:
        tps = lookup(figures, path + ".throughput_tps")
        p50 = lookup(figures, path + ".latency_ms_p50")
        p99 = lookup(figures, path + ".latency_ms_p99")
        if p50 is None and lookup(figures, path + ".latency_ms_avg") is not None:
            p50_text = f"avg {_number(lookup(figures, path + '.latency_ms_avg'), 2)}"
        else:
            p50_text = _number(p50, 2)
        aborts = lookup(figures, path + ".aborts")
        errors = lookup(figures, path + ".errors")
        server_cpu = lookup(figures, path + ".cluster_cpu_ms_per_op")
        if server_cpu is None:
            server_cpu = lookup(figures, path + ".server_cpu_ms_per_op")
        loadgen_cpu = lookup(figures, path + ".loadgen_cpu_ms_per_op")
        label = client_label(client, pgbench_mode) if system == "QuorumDB" else client
        lines.append(f"| {system} | {label} | {mode or '-'} | {workload} | {clients} | {_number(tps)} | {p50_text} "
                     f"| {_number(p99, 2)} | {_number(aborts, 0)} | {_number(errors, 0)} | {_number(server_cpu, 2)} "
                     f"| {_number(loadgen_cpu, 3)} |")
    return "\n".join(lines)


def ratios_markdown(ratios: list[dict[str, Any]], pgbench_mode: str = "simple") -> str:
    """One row per target and QuorumDB client; a column per read mode (quorum, the default, first)."""
    modes = [mode for mode in READ_MODES if any(entry["read_mode"] == mode for entry in ratios)]
    lines = ["| target | client | " + " | ".join(f"{mode}{' (default)' if mode == 'quorum' else ''}" for mode in modes)
             + " | target |", "| --- | --- | " + " | ".join("---:" for _ in modes) + " | --- |"]
    rows: dict[tuple[str, Any], dict[str, dict[str, Any]]] = {}
    for entry in ratios:
        rows.setdefault((entry["key"], entry["client"]), {})[entry["read_mode"]] = entry
    for (_, client), by_mode in rows.items():
        first = next(iter(by_mode.values()))
        cells = []
        for mode in modes:
            entry = by_mode.get(mode)
            if entry is None:
                cells.append("-")  # not measured in this mode (tpcb runs on the default cluster only)
            elif entry["value"] is None:
                cells.append("n/a" if entry["note"] is None else f"n/a ({entry['note']})")
            else:
                met = {True: "yes", False: "no", None: "n/a"}[entry["meets_target"]]
                cells.append(f"{_significant(entry['value'])} ({met})")
        sign = ">=" if first["direction"] == "higher" else "<="
        unit = "" if first["unit"] == "ratio" else f" {first['unit']}"
        label = "-" if client is None else client_label(client, pgbench_mode)
        lines.append(f"| {first['title']} | {label} | " + " | ".join(cells) + f" | {sign} {first['target']:g}{unit} |")
    return "\n".join(lines)


def _loads(loads: dict[str, Any]) -> str:
    if not loads:
        return "n/a"
    return ", ".join(f"{name.replace('_', ' ')} {value if value is not None else 'n/a'}"
                     for name, value in loads.items())


def idle_text(figures: dict[str, Any]) -> str:
    """'quorum cluster 0.31 cores (adjudicator 0.08, ...); single cluster ...' or 'not measured'."""
    parts = []
    for mode in READ_MODES:
        idle = (figures.get("quorumdb") or {}).get(f"idle_{mode}")
        if not isinstance(idle, dict) or idle.get("cluster_cores") is None:
            continue
        by_service = ", ".join(f"{name} {cores:.2f}" for name, cores in (idle.get("cores_by_service") or {}).items())
        parts.append(f"{mode} cluster {idle['cluster_cores']:.2f} cores over {idle.get('wall_s', '?')} s"
                     + (f" ({by_service})" if by_service else ""))
    return "; ".join(parts) if parts else "not measured"


def markdown_report(result: dict[str, Any]) -> str:
    """The section body for docs/BENCHMARKS.md: machine, versions, figures, targets, command."""
    machine = result.get("machine", {})
    versions = result.get("versions", {})
    pgbench_mode = result.get("pgbench_mode", "simple")
    lines = [
        f"Measured {result.get('date', '?')} with `{result.get('command', 'tools/bench/compare')}` "
        f"({result.get('duration_s', '?')} s per measured run after {result.get('warmup_s', '?')} s of warm-up, "
        f"{result.get('wall_time_s', '?')} s in all; pgbench protocol `-M {pgbench_mode}`, "
        f"TPC-B scale {result.get('tpcb_scale', '?')}).",
        "",
        f"Machine: {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('memory_gib', '?')} GiB memory, Linux {machine.get('kernel', '?')}, "
        f"Python {machine.get('python', '?')}. "
        f"Versions: etcd {versions.get('etcd') or 'n/a'}, PostgreSQL {versions.get('postgres') or 'n/a'}, "
        f"QuorumDB {versions.get('quorumdb') or 'n/a'}. "
        f"1-minute load average: {_loads(result.get('load_average_1m', {}))}.",
        "",
        f"Idle QuorumDB cluster CPU: {idle_text(result.get('figures', {}))}.",
        "",
        figures_markdown(result.get("figures", {}), pgbench_mode),
        "",
        ratios_markdown(result.get("ratios", []), pgbench_mode),
        "",
        "The same pgbench scripts on both systems (`pgbench -i` tables at the TPC-B scale):",
        "",
        same_scripts_markdown(result.get("same_scripts") or same_script_ratios(result.get("figures", {}))),
    ]
    return "\n".join(lines) + "\n"


# --- read-mode check ---------------------------------------------------------------------------
READ_COUNTERS = ("reads_quorum", "reads_single")


def parse_read_counters(status_json: str | None) -> dict[str, int] | None:
    """The compute nodes' read counters summed, from `quorumdb status --json` (a list of nodes
    whose `detail` reads `sessions=0 read_mode=quorum reads_quorum=3897 reads_single=0 ...`).
    None when the output is not that (the check is then skipped, never guessed)."""
    try:
        nodes = json.loads(status_json or "")
    except json.JSONDecodeError:
        return None
    if not isinstance(nodes, list):
        return None
    totals = dict.fromkeys(READ_COUNTERS, 0)
    seen = False
    for node in nodes:
        if not isinstance(node, dict) or node.get("service") != "compute":
            continue
        for item in str(node.get("detail", "")).split():
            name, _, value = item.partition("=")
            if name in totals and value.isdigit():
                totals[name] += int(value)
                seen = True
    return totals if seen else None


def read_counter_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, Any]:
    """Reads each mode served during a run, and the share served by a single copy."""
    if before is None or after is None:
        return {"reads_quorum": None, "reads_single": None, "reads_single_share": None}
    quorum = after["reads_quorum"] - before["reads_quorum"]
    single = after["reads_single"] - before["reads_single"]
    if quorum < 0 or single < 0:  # a compute node restarted: its counters began again
        return {"reads_quorum": None, "reads_single": None, "reads_single_share": None}
    total = quorum + single
    return {"reads_quorum": quorum, "reads_single": single,
            "reads_single_share": None if total == 0 else round(single / total, 4)}


def read_mode_problem(mode: str, counts: dict[str, Any]) -> str | None:
    """A run meant to read in `mode` whose reads were mostly the other mode measured the wrong
    thing (e.g. a SET that did not reach the session). A few reads of the other mode are normal:
    `quorumdb status` and the schema checks of other sessions."""
    share = counts.get("reads_single_share")
    if share is None:
        return None
    reads = counts["reads_quorum"] + counts["reads_single"]
    if mode == "single" and share < 0.5:
        return f"meant single-copy reads, but only {share:.0%} of {reads} were"
    if mode == "quorum" and share > 0.5:
        return f"meant quorum reads, but {share:.0%} of {reads} were single-copy"
    return None
