"""Storage-layer recovery, measured from the outside: every figure is a whole command's time or bytes.

For each data size (N rows, then K x N rows of `quorumdb bench`'s bench_kv table), on a fresh cluster
started with `quorumdb up`:
  1. load the rows (`quorumdb bench --workload point-write --rows N`, which loads before it runs);
  2. upload lag: while `quorumdb bench` commits point writes for S seconds, sample
     `quorumdb backup status --json` every second (now - latest restorable time);
  3. `quorumdb restore --latest` into a new directory: seconds, and bytes of the new directory;
  4. `quorumdb clone` of the running cluster: seconds, and bytes it adds (files whose inode the
     source does not share: the copied log tail, configs; hard-linked checkpoints cost nothing);
  5. `quorumdb backtrack --to-time` (a time a few seconds back): seconds until the command returns
     (the storage copies have applied the rewind).
The machine is shared and noisy: read the two sizes as a ratio within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

from tools.bench import peers
from quorumdb import timefmt
from tools.launcher import free_base_port

COMMAND_TIMEOUT_S = 600


def say(text: str) -> None:
    print(f"[dr] {text}", flush=True)


def timed(command: list[str], timeout_s: float = COMMAND_TIMEOUT_S) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    completed = peers.run(command, timeout_s=timeout_s, cwd=peers.REPO_ROOT)
    return time.perf_counter() - started, completed


def tree_bytes(path: pathlib.Path, exclude_inodes: set[tuple[int, int]] | None = None) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            identity = (info.st_dev, info.st_ino)
            if identity in seen or (exclude_inodes and identity in exclude_inodes):
                continue
            seen.add(identity)
            total += info.st_size
    return total


def inodes(path: pathlib.Path) -> set[tuple[int, int]]:
    found = set()
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            found.add((info.st_dev, info.st_ino))
    return found


def measure(work_dir: pathlib.Path, rows: int, write_s: float) -> dict:
    qdb = peers.quorumdb_command()
    cluster = peers.QuorumDBCluster(work_dir, free_base_port(), name=f"source-{rows}")
    result: dict = {"rows": rows}
    say(f"{rows} rows: starting a cluster on base port {cluster.base_port}")
    cluster.start()
    try:
        load_s, _ = timed(cluster.bench_command(qdb + ["bench"], "point-write", clients=8, duration_s=1, rows=rows),
                          timeout_s=1800)
        result["load_s"] = round(load_s, 1)
        writer = subprocess.Popen(cluster.bench_command(qdb + ["bench"], "point-write", clients=4, duration_s=write_s,
                                                        rows=rows, setup=False),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=peers.REPO_ROOT)
        lags = []
        try:
            deadline = time.monotonic() + write_s + 5
            while writer.poll() is None and time.monotonic() < deadline:
                completed = peers.run(qdb + ["backup", "status", "--base-port", str(cluster.base_port), "--json"],
                                      check=False, timeout_s=30, cwd=peers.REPO_ROOT)
                if completed.returncode == 0:
                    lags.append(json.loads(completed.stdout)["upload_lag_ms"])
                time.sleep(1)
        finally:
            peers.stop_process(writer, "quorumdb bench")
        result["upload_lag_ms_median"] = round(statistics.median(lags)) if lags else None
        result["upload_lag_ms_max"] = round(max(lags)) if lags else None
        status = json.loads(peers.run(qdb + ["backup", "status", "--base-port", str(cluster.base_port), "--json"],
                                      cwd=peers.REPO_ROOT).stdout)
        result["backup_objects"] = status["objects"]
        result["backup_bytes"] = status["bytes"]

        restored = work_dir / f"restored-{rows}"
        restore_s, completed = timed(qdb + ["restore", "--from", status["location"], "--latest",
                                            "--data-dir", str(restored), "--base-port", str(free_base_port())])
        result["restore_s"] = round(restore_s, 2)
        result["restore_bytes"] = tree_bytes(restored)
        result["restore_output"] = completed.stdout.strip().splitlines()

        cloned = work_dir / f"clone-{rows}"
        clone_s, completed = timed(qdb + ["clone", "--source", str(cluster.data_dir), "--data-dir", str(cloned),
                                          "--base-port", str(free_base_port())])
        result["clone_s"] = round(clone_s, 2)
        result["clone_bytes_added"] = tree_bytes(cloned, exclude_inodes=inodes(cluster.data_dir))
        result["clone_output"] = completed.stdout.strip().splitlines()

        to_time = timefmt.format_utc(time.time_ns() - 3_000_000_000)
        backtrack_s, completed = timed(qdb + ["backtrack", "--base-port", str(cluster.base_port),
                                              "--to-time", to_time])
        result["backtrack_s"] = round(backtrack_s, 2)
        result["backtrack_output"] = completed.stdout.strip().splitlines()
    finally:
        cluster.stop()
    return result


def table(results: list[dict]) -> str:
    columns = [("rows", "rows"), ("load_s", "load s"), ("upload_lag_ms_median", "upload lag ms (median)"),
               ("upload_lag_ms_max", "upload lag ms (max)"), ("backup_bytes", "backup bytes"),
               ("restore_s", "restore s"), ("restore_bytes", "restored bytes"), ("clone_s", "clone s"),
               ("clone_bytes_added", "clone bytes added"), ("backtrack_s", "backtrack s")]
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + " --- |" * len(columns)]
    for result in results:
        lines.append("| " + " | ".join(str(result.get(key, "")) for key, _ in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bench/dr", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the small data set (default 20000)")
    parser.add_argument("--scale", type=int, default=10, help="the large data set has SCALE x rows (default 10)")
    parser.add_argument("--write-seconds", type=float, default=15.0, help="seconds of writes for the lag (default 15)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="quorumdb-dr-") as tmp:
        for rows in (args.rows, args.rows * args.scale):
            results.append(measure(pathlib.Path(tmp), rows, args.write_seconds))
            say(json.dumps({k: v for k, v in results[-1].items() if not k.endswith("_output")}))
    print(table(results))
    for result in results:
        for key in ("restore_output", "clone_output", "backtrack_output"):
            print(f"\n{result['rows']} rows, {key.removesuffix('_output')}:")
            print("\n".join("    " + line for line in result.get(key, [])))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
    return 0
