"""`quorumdb sim`: run seeds of the deterministic simulation and report violations.

    quorumdb sim --workload bank|append|bank,append --seeds A-B [--faults all|none] [--duration S]
                 [--jobs N] [--trace] [--log FILE] [--json] [--stop-on-violation]
                 [--broken VARIANT]   (test only: a planted bug, tools/sim/broken.py)

One line per failing seed, with the command that replays it, then the summary
`N seeds, F faults injected, O operations checked, V violations`. Exit status 1 on any
violation, 2 on bad arguments. Seeds run in `--jobs` worker processes (each seed is a fresh
simulated cluster, so the order and the worker do not change a seed's run).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import multiprocessing
import os
import sys
import time

from tools.sim import broken as broken_mod
from tools.sim import limits as sim_limits

SEEDS_MAX = sim_limits.SEEDS_MAX
DURATION_MAX_S = sim_limits.DURATION_MAX_S
TRACE_SHOWN = 200


def parse_seeds(text: str) -> range:
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-", 1))
        else:
            first = last = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected N or A-B (whole numbers)") from None
    if first < 0 or last < first:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: need 0 <= A <= B")
    if last - first + 1 > SEEDS_MAX:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: at most {SEEDS_MAX} seeds in one run")
    return range(first, last + 1)


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--duration {text!r}: expected seconds") from None
    if not 0 < value <= DURATION_MAX_S:
        raise argparse.ArgumentTypeError(f"--duration {text!r}: must be in (0, {DURATION_MAX_S:g}] seconds")
    return value


def replay_command(workload: str, seed: int, faults: bool, duration_s: float, broken: str | None) -> str:
    parts = ["quorumdb sim", f"--workload {workload}", f"--seeds {seed}"]
    if faults:
        parts.append("--faults all")
    parts.append(f"--duration {duration_s:g}")
    if broken:
        parts.append(f"--broken {broken}")
    return " ".join(parts + ["--trace"])


def _workloads(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in sim_limits.WORKLOADS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"--workload {text!r}: one or more of {', '.join(sim_limits.WORKLOADS)}, "
                                         "separated by commas")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", type=_workloads, default=["bank"],
                        help="bank (transfers and snapshot reads) or append (Elle list-append); "
                             "bank,append runs every seed with each in turn; default bank")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1-20"),
                        help="the seeds to run: N or A-B inclusive (default 1-20)")
    parser.add_argument("--faults", choices=("all", "none"), default="all",
                        help="all: crashes, partitions, network and disk faults, fault points (default); none")
    parser.add_argument("--duration", type=_duration, default=sim_limits.DEFAULT_DURATION_S,
                        help=f"simulated seconds of workload per seed (default {sim_limits.DEFAULT_DURATION_S:g})")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default: 2, or 1 on a one-core machine)")
    parser.add_argument("--trace", action="store_true",
                        help=f"print each seed's trace hash, and the last {TRACE_SHOWN} events of a failing seed")
    parser.add_argument("--log", default=None, metavar="FILE",
                        help="write the nodes' logs (with simulated time and node name) to FILE (one job only)")
    parser.add_argument("--json", action="store_true", help="one JSON object per seed, then the summary as JSON")
    parser.add_argument("--stop-on-violation", action="store_true",
                        help="stop after the first seed (in seed order) with a violation")
    parser.add_argument("--broken", choices=broken_mod.VARIANTS, default=None,
                        help="test only: run a deliberately broken variant of the product, to show that the "
                             "simulator finds its bug")


class _NodeLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from quorumdb import runtime

        rt = runtime.current()
        world = getattr(rt, "world", None)
        record.sim_time = f"{world.now():.6f}" if world is not None else "-"
        record.sim_node = getattr(rt, "name", "-")
        return True


def _configure_logging(path: str | None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if path is None:
        root.setLevel(logging.CRITICAL + 1)  # the nodes' logs are the simulation's noise unless asked for
        return
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.addFilter(_NodeLogFilter())
    handler.setFormatter(logging.Formatter("%(sim_time)s %(sim_node)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _run_one(seed: int, workload: str, faults: bool, duration: float, broken: str | None, keep: int,
             log_path: str | None) -> dict:
    from tools.sim import run as run_mod  # the simulation loads only when a seed runs

    _configure_logging(log_path)
    result = run_mod.run_seed(seed, workload, faults=faults, duration_s=duration, broken=broken, trace_keep=keep)
    return result.to_json()


def _worker_init() -> None:
    _configure_logging(None)


def command(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        print("quorumdb sim: --jobs must be at least 1", file=sys.stderr)
        return 2
    faults = args.faults == "all"
    keep = TRACE_SHOWN if args.trace else 0
    runs = [(workload, seed) for workload in args.workload for seed in args.seeds]
    jobs = 1 if args.log else min(args.jobs, len(runs))
    if args.log:
        open(args.log, "w").close()
    started = time.perf_counter()
    totals = {"seeds": 0, "faults": 0, "ops": 0, "violations": 0, "failing": 0, "virtual_s": 0.0}

    def report(result: dict) -> None:
        totals["seeds"] += 1
        totals["faults"] += result["faults"]
        totals["ops"] += result["ops"]
        totals["violations"] += result["violation_count"]
        totals["virtual_s"] += result["virtual_s"]
        replay = replay_command(result["workload"], result["seed"], faults, args.duration, args.broken)
        if not result["valid"]:
            totals["failing"] += 1
        if args.json:
            print(json.dumps(dict(result, replay=replay), sort_keys=True, default=str), flush=True)
            return
        if args.trace:
            print(f"seed {result['seed']}: trace {result['trace_hash']} ({result['workload']}, "
                  f"{result['events']} events, {result['ops']} operations, {result['faults']} faults)", flush=True)
        if not result["valid"]:
            kinds = " ".join(f"{kind}={len(found)}" for kind, found in sorted(result["violations"].items()))
            print(f"seed {result['seed']}: {result['workload']} VIOLATION {kinds}; replay: {replay}", flush=True)
            for kind, found in sorted(result["violations"].items()):
                for text in found[:3]:
                    print(f"    {kind}: {text}", flush=True)
            if args.trace:
                print("    last events:", flush=True)
                for line in result["recent"]:
                    print(f"      {line}", flush=True)

    call = (faults, args.duration, args.broken, keep)
    if jobs == 1:
        for workload, seed in runs:
            report(_run_one(seed, workload, *call, args.log))
            if args.stop_on_violation and totals["failing"]:
                break
    else:
        context = multiprocessing.get_context("spawn")  # no grpc or loop state inherited by fork
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init) as pool:
            futures = [pool.submit(_run_one, seed, workload, *call, None) for workload, seed in runs]
            for future in futures:  # in seed order, whatever finishes first
                report(future.result())
                if args.stop_on_violation and totals["failing"]:
                    for rest in futures:
                        rest.cancel()
                    break
    elapsed = time.perf_counter() - started
    summary = (f"{totals['seeds']} seeds, {totals['faults']} faults injected, {totals['ops']} operations checked, "
               f"{totals['violations']} violations")
    if args.json:
        print(json.dumps({"summary": summary, "seeds": totals["seeds"], "faults": totals["faults"],
                          "operations": totals["ops"], "violations": totals["violations"],
                          "failing_seeds": totals["failing"], "real_s": round(elapsed, 1),
                          "simulated_s": round(totals["virtual_s"], 1)}))
    else:
        print(f"{summary} ({','.join(args.workload)}, {elapsed:.1f} s real for {totals['virtual_s']:.0f} s simulated, "
              f"{jobs} job{'s' if jobs != 1 else ''})")
    return 1 if totals["violations"] else 0
