"""The deterministic simulation (tools/sim): its parts, its determinism, the default seed
runs of both workloads with every fault, and proof that it finds a planted bug.

The seed runs go through the command a user runs (`quorumdb sim`), in a subprocess with two
worker processes; they are what the default suite spends on simulation (docs/SIMULATION.md).
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import subprocess
import sys

import pytest

from tools.sim.disk import DiskState, NodeCrashed, SimDisk
from tools.sim.loop import Stuck, VirtualLoop
from tools.sim.run import run_seed

pytestmark = pytest.mark.sim

# The default run: seeds per workload, and simulated seconds of workload per seed.
DEFAULT_SEEDS = "1-200"
DEFAULT_DURATION = "1"
SUMMARY = re.compile(r"^(\d+) seeds, (\d+) faults injected, (\d+) operations checked, (\d+) violations", re.M)


@pytest.fixture(autouse=True)
def _quiet_nodes():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL + 1)
    yield
    root.setLevel(level)


# --- the virtual-time loop ------------------------------------------------------------------
def test_virtual_loop_jumps_to_the_next_timer():
    loop = VirtualLoop()
    try:
        async def main():
            start = loop.time()
            order = []

            async def sleeper(seconds):
                await asyncio.sleep(seconds)
                order.append(seconds)

            await asyncio.gather(*(sleeper(s) for s in (3600.0, 1.0, 60.0)))
            return order, loop.time() - start

        order, elapsed = loop.run_until_complete(main())
        assert order == [1.0, 60.0, 3600.0]
        assert 3600.0 <= elapsed < 3600.1  # a simulated hour, in no real time
    finally:
        loop.close()


def test_virtual_loop_reports_a_program_that_can_never_move():
    loop = VirtualLoop()
    try:
        with pytest.raises(Stuck):
            loop.run_until_complete(asyncio.Event().wait())
    finally:
        loop.close()


def test_virtual_loop_refuses_threads():
    loop = VirtualLoop()
    try:
        with pytest.raises(RuntimeError, match="threads are not simulated"):
            loop.run_until_complete(asyncio.to_thread(print))
    finally:
        loop.close()


# --- the simulated disk --------------------------------------------------------------------
def _disk(state=None, alive=lambda: True):
    state = state or DiskState()
    disk = SimDisk(state, alive=alive)
    disk.mkdir("/d")
    return state, disk


def _append(disk, path, data: bytes) -> None:
    file = disk.open_append(path)
    file.write(data)
    file.close()


def test_disk_keeps_only_what_was_synced():
    state, disk = _disk()
    _append(disk, "/d/log", b"one")
    disk.fsync("/d/log")
    disk.fsync_dir("/d")
    _append(disk, "/d/log", b"two")
    state.crash(random.Random(1), tear=False)
    assert disk.read("/d/log") == b"one"


def test_disk_loses_a_name_whose_directory_was_not_synced():
    state, disk = _disk()
    disk.write("/d/new", b"data")
    disk.fsync("/d/new")  # the contents are durable, the name is not
    state.crash(random.Random(1), tear=False)
    assert not disk.exists("/d/new")


def test_disk_undoes_a_rename_not_yet_synced():
    state, disk = _disk()
    disk.write("/d/meta", b"old")
    disk.fsync("/d/meta")
    disk.fsync_dir("/d")
    disk.write("/d/meta.tmp", b"new")
    disk.fsync("/d/meta.tmp")
    disk.replace("/d/meta.tmp", "/d/meta")
    assert disk.read("/d/meta") == b"new"
    state.crash(random.Random(1), tear=False)
    assert disk.read("/d/meta") == b"old"
    assert not disk.exists("/d/meta.tmp")


def test_disk_may_tear_the_last_unsynced_append():
    torn = set()
    for seed in range(40):
        state, disk = _disk()
        _append(disk, "/d/log", b"durable|")
        disk.fsync("/d/log")
        disk.fsync_dir("/d")
        _append(disk, "/d/log", b"0123456789")
        state.crash(random.Random(seed), tear=True)
        data = disk.read("/d/log")
        assert data.startswith(b"durable|") and b"durable|0123456789".startswith(data)
        torn.add(len(data))
    assert len(torn) > 3  # prefixes of several lengths survive, never more than was written


def test_disk_of_a_crashed_incarnation_refuses_every_call():
    alive = [True]
    state, disk = _disk(alive=lambda: alive[0])
    alive[0] = False
    with pytest.raises(NodeCrashed):
        _append(disk, "/d/log", b"x")


def test_disk_reader_keeps_a_removed_file():
    state, disk = _disk()
    disk.write("/d/ckpt", b"checkpoint bytes")
    reader = disk.open_read("/d/ckpt")
    disk.unlink("/d/ckpt")
    assert reader.read(100) == b"checkpoint bytes"
    with pytest.raises(FileNotFoundError):
        disk.read("/d/ckpt")


# --- whole-cluster runs -----------------------------------------------------------------------
def test_a_seed_gives_the_same_run_event_for_event():
    first = run_seed(3, "append", faults=True, duration_s=0.5)
    other = run_seed(4, "append", faults=True, duration_s=0.5)
    again = run_seed(3, "append", faults=True, duration_s=0.5)
    assert first.events > 1000 and first.ops > 0
    assert (again.trace_hash, again.events, again.ops) == (first.trace_hash, first.events, first.ops)
    assert other.trace_hash != first.trace_hash


def test_the_roles_real_code_runs_with_crashes_and_faults():
    results = [run_seed(seed, "bank", faults=True, duration_s=2.0) for seed in (1, 2, 3)]
    for result in results:
        assert result.valid, result.violations
        assert result.crashes >= 15  # the nemesis's, and every node at once for the durability check
    assert sum(r.faults for r in results) > sum(r.crashes for r in results)
    assert sum(r.stats["transfers_ok"] for r in results) > 0 and sum(r.stats["reads_ok"] for r in results) > 0


# Seeds that once found a real bug (docs/SIMULATION.md, "Bugs it found"): each must stay valid.
# (workload, seed, duration): the seed's run changes with the code, so these guard the fix only
# as long as the run still reaches the same situation; the default run guards the rest.
FOUND_BUGS = [
    ("append", 1651, 1.0),  # a read-only transaction saw a commit still in its commit-wait,
    ("append", 1877, 1.0),  # and a later one on a node whose clock was behind did not
]


@pytest.mark.parametrize("workload, seed, duration", FOUND_BUGS)
def test_seeds_that_found_bugs_stay_valid(workload, seed, duration):
    result = run_seed(seed, workload, faults=True, duration_s=duration)
    assert result.valid, result.violations


def _sim(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "tools.cli", "sim", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.long  # about 40 s each: the CI's regions-and-long step runs them, the planted bugs stay in the suite
@pytest.mark.parametrize("workload", ["bank", "append"])
def test_default_run_of_200_seeds_with_every_fault_finds_no_violation(workload):
    done = _sim("--workload", workload, "--seeds", DEFAULT_SEEDS, "--faults", "all", "--duration", DEFAULT_DURATION,
                "--jobs", "2", timeout=900)
    summary = SUMMARY.search(done.stdout)
    assert summary is not None, done.stdout[-3000:] + done.stderr[-3000:]
    seeds, faults, operations, violations = (int(g) for g in summary.groups())
    assert done.returncode == 0 and violations == 0, done.stdout[-5000:]
    assert seeds == 200 and faults > 200 * 15 and operations > 200 * 5


@pytest.mark.parametrize("variant", ["storage-reads-early", "adjudicator-skips-commit-wait"])
def test_a_planted_bug_is_found_in_the_default_seeds_and_replays_from_its_seed(variant):
    done = _sim("--workload", "append", "--seeds", DEFAULT_SEEDS, "--faults", "all", "--duration", DEFAULT_DURATION,
                "--broken", variant, "--stop-on-violation", "--jobs", "2", timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    found = re.search(r"^seed (\d+): append VIOLATION (.*); replay: quorumdb sim (.*)$", done.stdout, re.M)
    assert found is not None, done.stdout[-3000:]
    seed, kinds, replay = found.groups()
    assert f"--broken {variant}" in replay and f"--seeds {seed}" in replay
    again = _sim(*replay.split(), timeout=300)
    assert again.returncode == 1
    assert f"seed {seed}: append VIOLATION {kinds};" in again.stdout
    traces = re.findall(rf"^seed {seed}: trace ([0-9a-f]{{64}})", again.stdout, re.M)
    third = _sim(*replay.split(), timeout=300)
    assert traces and traces == re.findall(rf"^seed {seed}: trace ([0-9a-f]{{64}})", third.stdout, re.M)


def test_one_command_runs_both_workloads():
    done = _sim("--workload", "bank,append", "--seeds", "7-8", "--duration", "0.3", "--jobs", "2", "--trace",
                timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    traced = re.findall(r"^seed (\d+): trace [0-9a-f]{64} \((bank|append),", done.stdout, re.M)
    assert sorted(traced) == [("7", "append"), ("7", "bank"), ("8", "append"), ("8", "bank")]
    assert SUMMARY.search(done.stdout).group(1) == "4"


def test_bad_arguments_are_refused_clearly():
    done = _sim("--seeds", "9-3", timeout=60)
    assert done.returncode == 2 and "need 0 <= A <= B" in done.stderr
    done = _sim("--broken", "nonsense", timeout=60)
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = _sim("--workload", "bank,nope", timeout=60)
    assert done.returncode == 2 and "one or more of append, bank" in done.stderr
