"""The SQL engine's own cost per statement, without any RPC (docs/BENCHMARKS.md, "The fast path").

Runs a compute node's Session over the in-memory backend of the SQL tests (no storage, no
adjudicator: reads and commits are dictionary operations), so what it measures is the engine:
lexing, the statement cache, binding, planning, executing, encoding rows and building the write
set. The statements are `quorumdb bench`'s point-write (an upsert) and point-read, with a
different key each time, as the bench sends them (literals in the text).

    python tools/bench/engine_micro.py                 # 3 rounds of 3,000 statements each
    python tools/bench/engine_micro.py --rounds 5 --statements 5000
    python tools/bench/engine_micro.py --profile write # cProfile of the point-write, top 30 by own time

Prints the median microseconds per statement over the rounds (wall time of one thread; run it
on a quiet machine, or compare two trees in the same minute: copy this file into the other
tree's tools/bench/ and run it there).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import pathlib
import pstats
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from compute_node.sessions.session import Session  # noqa: E402
from tests.sql_memory_backend import MemoryBackend  # noqa: E402

try:
    from compute_node.sql.engine import Engine  # noqa: E402
except ImportError:  # a tree from before the node-wide engine (copy this file there to compare)
    Engine = None

PAD = "x" * 32  # tools/bench/workloads.py's filler

ROWS = 100
WRITE = ("INSERT INTO bench_kv (k, v, pad) VALUES ({k}, {v}, '" + PAD + "') "
         "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
READ = "SELECT v FROM bench_kv WHERE k = {k}"


async def session_with_table() -> Session:
    if Engine is None:
        session = Session(MemoryBackend(), "engine-micro")
    else:
        session = Session(MemoryBackend(), "engine-micro", engine=Engine())
    await session.execute("CREATE TABLE bench_kv (k BIGINT PRIMARY KEY, v BIGINT, pad TEXT)")
    for key in range(ROWS):
        await session.execute(f"INSERT INTO bench_kv VALUES ({key}, 0, '{PAD}')")
    return session


async def run(template: str, session: Session, statements: int) -> float:
    """Microseconds per statement."""
    started = time.perf_counter()
    for i in range(statements):
        await session.execute(template.format(k=i % ROWS, v=i))
    return 1e6 * (time.perf_counter() - started) / statements


async def main(args: argparse.Namespace) -> None:
    session = await session_with_table()
    templates = {"write": WRITE, "read": READ}
    if args.profile:
        await run(templates[args.profile], session, 200)  # warm the caches first
        profiler = cProfile.Profile()
        profiler.enable()
        await run(templates[args.profile], session, args.statements)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    for name, template in templates.items():
        await run(template, session, 200)
        samples = [await run(template, session, args.statements) for _ in range(args.rounds)]
        print(f"point-{name}: {statistics.median(samples):.0f} µs per statement "
              f"(rounds: {', '.join(f'{sample:.0f}' for sample in samples)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--profile", choices=("write", "read"))
    asyncio.run(main(parser.parse_args()))
