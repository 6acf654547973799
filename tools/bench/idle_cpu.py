"""Idle CPU of one fresh cluster: utime + stime of its 15 nodes over SECONDS, as % of one core.

    python -m tools.bench.idle_cpu [--seconds 20]

Run it from two trees in turn (PYTHONPATH=TREE) to compare versions; the machine is shared and
noisy, so interleave the runs and compare within one sitting.
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

from tools.bench import procstat
from quorumdb import config
from tools import launcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="qdb-idle-"))
    cluster = config.default_cluster(data_dir, launcher.free_base_port())
    cluster.write()
    with launcher.Cluster(cluster) as nodes:
        nodes.start()
        nodes.wait_ready(timeout_s=120)
        time.sleep(5.0)  # past the start-up work
        pids = list(nodes.pids.values())
        before_s = procstat.own_seconds(pids)
        time.sleep(args.seconds)
        used_s = procstat.own_seconds(pids) - before_s
    print(f"idle CPU: {100 * used_s / args.seconds:.1f} % of one core ({len(pids)} nodes, {args.seconds:g} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
