"""Clone time and bytes against data size: `quorumdb clone` of a running cluster at 1x, 10x, 100x rows.

Theory of operation: one source cluster (its own free port block, storage_checkpoint_entries low so
copies checkpoint during the load) gets rows of ~100 bytes in transactions of 100 rows; after each
size step it commits 2 * checkpoint interval + 5 one-row transactions, so the log tail after the
newest checkpoint holds small entries at every size and the step compares like with like. Then it
runs the real command (`python -m tools.cli clone`, a subprocess, against the running source)
REPEATS times and prints what each reported. The clone directories are removed after each run and
every node is stopped at the end.

    PYTHONPATH=. python tools/bench/clone_scaling.py                 # 2,000 / 20,000 / 200,000 rows, 3 runs each
    PYTHONPATH=. python tools/bench/clone_scaling.py --rows 2000,20000 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from quorumdb import client
from quorumdb import config as config_mod
from tools.launcher import Cluster, free_base_port

ROWS_PER_TXN = 100
PAD = "p" * 100
READY_TIMEOUT_S = 120.0
CLONE_TIMEOUT_S = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="2000,20000,200000", help="comma-separated row counts, ascending")
    parser.add_argument("--repeats", type=int, default=3, help="clones per size")
    parser.add_argument("--checkpoint-entries", type=int, default=100, help="storage_checkpoint_entries")
    args = parser.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    assert sizes == sorted(sizes) and sizes[0] > 0, "--rows must be positive and ascending"
    root = pathlib.Path(tempfile.mkdtemp(prefix="clone-scaling-"))
    source = config_mod.default_cluster(root / "source", base_port=free_base_port(),
                                        storage_checkpoint_entries=args.checkpoint_entries)
    source.write()
    cluster = Cluster(source)
    try:
        cluster.start()
        cluster.wait_ready(timeout_s=READY_TIMEOUT_S, healthy=True)
        with client.connect("127.0.0.1", source.computes[0].port, timeout_s=60.0, data_dir=source.data_dir) as conn:
            conn.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
            conn.execute("CREATE TABLE small (id int PRIMARY KEY, n int)")
            loaded = 0
            for target in sizes:
                started = time.monotonic()
                while loaded < target:
                    upto = min(loaded + ROWS_PER_TXN, target)
                    conn.execute("INSERT INTO big VALUES " + ", ".join(f"({i}, '{PAD}')"
                                                                       for i in range(loaded + 1, upto + 1)))
                    loaded = upto
                for i in range(2 * args.checkpoint_entries + 5):
                    conn.execute("INSERT INTO small VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = excluded.n",
                                 [i % 3, i])
                print(f"== {loaded} rows (loaded in {time.monotonic() - started:.1f} s)", flush=True)
                for run in range(args.repeats):
                    new = root / f"clone-{target}-{run}"
                    done = subprocess.run(
                        [sys.executable, "-m", "tools.cli", "clone", "--source", str(source.data_dir),
                         "--data-dir", str(new), "--base-port", str(free_base_port())],
                        capture_output=True, text=True, timeout=CLONE_TIMEOUT_S, env=dict(os.environ), check=False)
                    print(f"-- run {run}: exit {done.returncode}\n{done.stdout}{done.stderr}", flush=True)
                    shutil.rmtree(new, ignore_errors=True)
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
