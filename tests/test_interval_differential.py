"""Random interval expressions against a real PostgreSQL 15: input with fractions and signs,
+ - * /, timestamps plus intervals, extract (numeric) and date_part (double precision), sum/avg.

Each run prints its seed; QUORUMDB_INTERVAL_SEED=<seed> replays one. The fixed corpus
(tests/differential/corpus/12_expressions_session.sql) holds the cases picked by hand."""
from __future__ import annotations

import os
import random

from compute_node.sessions.session import Session
from tests.differential.runner import Report, run_file, split_with_lines
from tests.sql_memory_backend import MemoryBackend

STATEMENTS = 150
UNITS = ("year", "mon", "week", "day", "hour", "min", "sec", "ms", "us", "decade")


def random_interval(rng: random.Random) -> str:
    parts = []
    for unit in rng.sample(UNITS, rng.randint(1, 3)):
        number = rng.choice([rng.randint(-500, 500), round(rng.uniform(-100, 100), rng.randint(0, 6)),
                             rng.randint(-3, 3)])
        parts.append(f"{number} {unit}")
    if rng.random() < 0.2:
        parts.append(f"{rng.randint(0, 99)}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999)}")
    if rng.random() < 0.1:
        parts.append("ago")
    return " ".join(parts)


def random_timestamp(rng: random.Random) -> str:
    return (f"'{rng.randint(1990, 2040)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}'")


def random_statement(rng: random.Random) -> str:
    a, b = random_interval(rng), random_interval(rng)
    factor = rng.choice([0.5, 1.5, -2, 3, 0.3333, 7, -0.25, 1e-3, 123.456, rng.randint(-1000, 1000)])
    day = f"'{rng.randint(1990, 2040)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}'"
    return (f"SELECT INTERVAL '{a}', INTERVAL '{a}' + INTERVAL '{b}', INTERVAL '{a}' * {factor}, "
            f"INTERVAL '{b}' / {factor}, INTERVAL '{a}' < INTERVAL '{b}', "
            f"TIMESTAMPTZ {random_timestamp(rng)} + INTERVAL '{a}', DATE {day} - INTERVAL '{b}', "
            f"TIMESTAMP {random_timestamp(rng)} - TIMESTAMP {random_timestamp(rng)}, "
            f"extract(epoch FROM INTERVAL '{a}'), extract(second FROM INTERVAL '{b}'), "
            f"date_part('epoch', INTERVAL '{b}'), date_part('second', INTERVAL '{a}'), "
            f"date_part('epoch', TIMESTAMP {random_timestamp(rng)}), date_trunc('hour', INTERVAL '{a}'), "
            f"sum(x), avg(x) FROM (VALUES (INTERVAL '{a}'), (INTERVAL '{b}')) v(x);")


async def test_random_interval_expressions_match_postgres(postgres):
    seed = int(os.environ.get("QUORUMDB_INTERVAL_SEED", random.randrange(2**32)))
    print(f"interval differential seed {seed} (QUORUMDB_INTERVAL_SEED={seed} replays it)")
    rng = random.Random(seed)
    script = "\n".join(random_statement(rng) for _ in range(STATEMENTS))
    connection = postgres.connect()
    try:
        report = Report()
        session = Session(MemoryBackend(), "interval-fuzz", rng=random.Random(seed))
        await run_file("random_intervals", split_with_lines(script), connection, session.execute, report)
    finally:
        connection.close()
    print(report.summary(f"random intervals (seed {seed})"))
    differing = [v.describe() for v in report.verdicts if v.kind == "mismatch"]
    assert not differing, f"seed {seed}: {len(differing)} statements differ from PostgreSQL:\n" + "\n".join(differing)
    # Results beyond year 9999 are refused (0A000); most statements must really be compared.
    assert report.count("match") >= STATEMENTS * 3 // 4, report.summary("random intervals")
