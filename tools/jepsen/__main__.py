"""Command line: python -m tools.jepsen --workload bank --seed 7 --duration 600

With `--regions-dir DIR`, the run goes against the running active-active cluster in DIR
(`quorumdb up --regions A,B --witness W`): clients in both peers, whole-region faults
(tools/jepsen/regions.py).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from tools.jepsen import nemesis, regions, runner
from tools.jepsen.workloads import WORKLOADS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.jepsen",
        description="Run a seeded Jepsen-style test against a fresh QuorumDB cluster, or re-check a history.")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), help="what the clients do")
    parser.add_argument("--seed", type=int, default=1, help="derives the fault schedule and every client's requests")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of workload and faults")
    parser.add_argument("--clients", type=int, default=6, help="client threads, spread over the 3 compute nodes")
    parser.add_argument("--nemesis", default="all",
                        help=f"comma-separated fault kinds ({', '.join(nemesis.KINDS)}), 'all' or 'none'")
    parser.add_argument("--out", type=pathlib.Path, help="output directory (history.jsonl, cluster/ data and logs)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's data and logs after a valid run")
    parser.add_argument("--read-mode", choices=("quorum", "single"), default="quorum",
                        help="the cluster's reads: 3 of 6 storage copies (default) or one caught-up copy")
    parser.add_argument("--regions-dir", type=pathlib.Path, metavar="DIR",
                        help="run against the running active-active cluster in DIR (region faults: "
                             f"{', '.join(regions.REGION_KINDS)}; --nemesis picks among them)")
    parser.add_argument("--check", type=pathlib.Path, metavar="HISTORY",
                        help="only re-run the checker on a stored history.jsonl")
    args = parser.parse_args(argv)
    if args.check is not None:
        return 0 if runner.check_file(args.check).valid else 1
    if args.workload is None:
        parser.error("--workload is required")
    if args.regions_dir is not None:
        kinds = list(regions.REGION_KINDS) if args.nemesis == "all" else \
            [] if args.nemesis == "none" else [k.strip() for k in args.nemesis.split(",") if k.strip()]
        try:
            regions.region_schedule(args.seed, args.duration, kinds, ["a", "b"], "w")
        except ValueError as error:
            parser.error(str(error))
        result = regions.run_regions(args.regions_dir, args.workload, args.seed, args.duration, args.clients, kinds,
                                     args.out, log=lambda line: print(line, flush=True))
        return 0 if result.valid else 1
    try:
        kinds = nemesis.parse_kinds(args.nemesis)
    except ValueError as error:
        parser.error(str(error))
    options = runner.Options(args.workload, args.seed, args.duration, args.clients, kinds, args.out, args.keep,
                             args.read_mode)
    return runner.run(options, log=lambda line: print(line, flush=True)).exit_code


if __name__ == "__main__":
    sys.exit(main())
