"""Pure parts of the comparison runner: parsing tool output, percentiles, ratios, the tables.

Theory of operation: `bench/compare` runs processes and collects raw text and samples; everything
here turns that into figures without touching a socket, a file or the clock, so the tests drive it
directly. A figure that could not be measured is None and every ratio built on it is None too
(printed as "n/a"), never a made-up number.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Sequence

# The ratios the issue asks for: (key, title, numerator figure, denominator figure, target, which way).
# "higher" means the ratio should be at least the target; "lower" at most.
RATIOS: tuple[tuple[str, str, str, str, float, str], ...] = (
    ("point_write_64_vs_etcd", "QuorumDB point-write / etcd put, 64 clients (tps)",
     "quorumdb.point_write_64.throughput_tps", "etcd.put_64.throughput_tps", 1.0, "higher"),
    ("tpcb_8_vs_pgbench", "QuorumDB tpcb / pgbench TPC-B, 8 clients (tps)",
     "quorumdb.tpcb_8.throughput_tps", "postgres.tpcb_8.throughput_tps", 0.5, "higher"),
    ("point_read_64_vs_pgbench_select", "QuorumDB point-read / pgbench select-only, 64 clients (tps)",
     "quorumdb.point_read_64.throughput_tps", "postgres.select_only_64.throughput_tps", 1 / 3, "higher"),
    ("point_write_1_p50_vs_etcd", "QuorumDB point-write p50 / etcd put p50, 1 client (latency)",
     "quorumdb.point_write_1.latency_ms_p50", "etcd.put_1.latency_ms_p50", 2.0, "lower"),
)

# The rows of the figures table: (figure path, system, workload, clients).
FIGURE_ROWS: tuple[tuple[str, str, str, int], ...] = (
    ("etcd.put_1", "etcd 3 members", "put (v3 JSON gateway)", 1),
    ("etcd.put_64", "etcd 3 members", "put (v3 JSON gateway)", 64),
    ("quorumdb.point_write_1", "QuorumDB", "point-write", 1),
    ("quorumdb.point_write_64", "QuorumDB", "point-write", 64),
    ("postgres.tpcb_8", "PostgreSQL", "pgbench TPC-B", 8),
    ("quorumdb.tpcb_8", "QuorumDB", "tpcb", 8),
    ("postgres.select_only_64", "PostgreSQL", "pgbench select-only (-S)", 64),
    ("quorumdb.point_read_64", "QuorumDB", "point-read", 64),
)

_TPS_LINE = re.compile(r"^tps = ([0-9]+(?:\.[0-9]+)?) \(([^)]*)\)", re.MULTILINE)
_PGBENCH_LATENCY = re.compile(r"^latency average = ([0-9]+(?:\.[0-9]+)?) ms", re.MULTILINE)
_PGBENCH_FAILED = re.compile(r"^number of failed transactions: ([0-9]+)", re.MULTILINE)
_PGBENCH_PROCESSED = re.compile(r"^number of transactions actually processed: ([0-9]+)", re.MULTILINE)


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


def compute_ratios(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per ratio in RATIOS, with the value (or None) and whether it meets its target."""
    results = []
    for key, title, numerator, denominator, target, direction in RATIOS:
        value = ratio(lookup(figures, numerator), lookup(figures, denominator))
        if value is None:
            meets = None
        elif direction == "higher":
            meets = value >= target
        else:
            meets = value <= target
        results.append({"key": key, "title": title, "numerator": numerator, "denominator": denominator,
                        "value": None if value is None else round(value, 3), "target": round(target, 3),
                        "direction": direction, "meets_target": meets})
    return results


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def figures_markdown(figures: dict[str, Any]) -> str:
    lines = ["| system | workload | clients | throughput (tps) | p50 ms | p99 ms | aborts | errors |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for path, system, workload, clients in FIGURE_ROWS:
        tps = lookup(figures, path + ".throughput_tps")
        p50 = lookup(figures, path + ".latency_ms_p50")
        p99 = lookup(figures, path + ".latency_ms_p99")
        if p50 is None and lookup(figures, path + ".latency_ms_avg") is not None:
            p50_text = f"avg {_number(lookup(figures, path + '.latency_ms_avg'), 2)}"
        else:
            p50_text = _number(p50, 2)
        aborts = lookup(figures, path + ".aborts")
        errors = lookup(figures, path + ".errors")
        lines.append(f"| {system} | {workload} | {clients} | {_number(tps)} | {p50_text} | {_number(p99, 2)} "
                     f"| {_number(aborts, 0)} | {_number(errors, 0)} |")
    return "\n".join(lines)


def ratios_markdown(ratios: list[dict[str, Any]]) -> str:
    lines = ["| ratio | measured | target | met |", "| --- | ---: | ---: | --- |"]
    for entry in ratios:
        sign = ">=" if entry["direction"] == "higher" else "<="
        met = {True: "yes", False: "no", None: "n/a"}[entry["meets_target"]]
        lines.append(f"| {entry['title']} | {_number(entry['value'], 2)} | {sign} {entry['target']:.2f} | {met} |")
    return "\n".join(lines)


def _loads(loads: dict[str, Any]) -> str:
    if not loads:
        return "n/a"
    return ", ".join(f"{name.replace('_', ' ')} {value if value is not None else 'n/a'}" for name, value in loads.items())


def markdown_report(result: dict[str, Any]) -> str:
    """The section body for docs/BENCHMARKS.md: machine, versions, figures, ratios, command."""
    machine = result.get("machine", {})
    versions = result.get("versions", {})
    lines = [
        f"Measured {result.get('date', '?')} with `{result.get('command', 'bench/compare')}` "
        f"({result.get('duration_s', '?')} s per measured run, {result.get('wall_time_s', '?')} s in all).",
        "",
        f"Machine: {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('memory_gib', '?')} GiB memory, Linux {machine.get('kernel', '?')}, "
        f"Python {machine.get('python', '?')}. "
        f"Versions: etcd {versions.get('etcd') or 'n/a'}, PostgreSQL {versions.get('postgres') or 'n/a'}, "
        f"QuorumDB {versions.get('quorumdb') or 'n/a'}. "
        f"1-minute load average: {_loads(result.get('load_average_1m', {}))}.",
        "",
        figures_markdown(result.get("figures", {})),
        "",
        ratios_markdown(result.get("ratios", [])),
    ]
    return "\n".join(lines) + "\n"
