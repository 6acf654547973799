"""QuorumDB's SQL against a real PostgreSQL: the differential corpus (tests/differential/).

The bulk runs every corpus file against the session engine over the in-memory
backend (the same SQL engine a compute node runs, without the network); a smaller
pass runs a few files through a real 15-process cluster. PostgreSQL is Debian's
`postgresql` package, started by the fixture with initdb/pg_ctl in a temp dir; if it
is not installed these tests FAIL (run `bash scripts/install-postgres`), never skip.
"""
from __future__ import annotations

import asyncio
import random

import pytest

from compute_node.sessions.session import Session
from compute_node.sql.engine import Engine
from quorumdb.client import connect
from tests.differential.runner import Report, load_corpus, run_file
from tests.sql_memory_backend import MemoryBackend

# Files the real-cluster pass runs (each statement is a round trip through gRPC, storage quorums
# and the adjudicator, so this pass is smaller).
CLUSTER_FILES = ("01_types", "05_dml", "07_joins", "09_transactions", "12_expressions_session")
CORPUS_STATEMENTS_MIN = 800


def fresh_database(postgres, name: str):
    admin = postgres.connect()
    try:
        for sql in (f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"):
            result = admin.query(sql)
            assert result.error is None, result.error
    finally:
        admin.close()
    return postgres.connect(name)


def print_report(report: Report, title: str) -> None:
    print()
    print(report.summary(title))
    for verdict in report.verdicts:
        if verdict.kind == "mismatch":
            print(verdict.describe())
    unsupported = [v for v in report.verdicts if v.kind == "unsupported"]
    if unsupported:
        print(f"unsupported (0A000) statements ({len(unsupported)}):")
        for verdict in unsupported:
            print(f"    {verdict.file}:{verdict.line}: {verdict.sql[:100]} -> {verdict.quorumdb.message}")
    noted = [v for v in report.verdicts if v.notes]
    for verdict in noted:
        print(f"    note {verdict.file}:{verdict.line}: {'; '.join(verdict.notes)}")


async def test_corpus_matches_postgres_in_memory(postgres):
    report = Report()
    corpus = load_corpus()
    for index, (name, statements) in enumerate(corpus):
        connection = fresh_database(postgres, f"mem_{index}")
        try:
            session = Session(MemoryBackend(), f"diff-{name}", rng=random.Random(index))
            await run_file(name, statements, connection, session.execute, report)
        finally:
            connection.close()
    print_report(report, "differential (session engine, in-memory backend)")
    mismatches = [v.describe() for v in report.verdicts if v.kind == "mismatch"]
    assert not mismatches, f"{len(mismatches)} statements differ from PostgreSQL:\n" + "\n".join(mismatches)
    assert report.total >= CORPUS_STATEMENTS_MIN, f"corpus has only {report.total} statements"
    assert report.count("match") > report.count("unsupported") * 4, "most of the corpus must be supported"


async def test_corpus_matches_postgres_through_a_warm_statement_cache(postgres):
    """The whole corpus through ONE engine, twice, the second time in reverse file order: most
    statements then run from a cached parse of another text of the same shape (other constants,
    statements.py), and every answer must still be PostgreSQL's."""
    engine = Engine()
    corpus = load_corpus()
    for round_number, files in enumerate((corpus, list(reversed(corpus)))):
        # The second round's own counts: the corpus has more shapes than the cache holds
        # (STATEMENT_CACHE_SHAPES_MAX), so the first round's misses outnumber any round's hits.
        hits_before, misses_before = engine.statements.hits, engine.statements.misses
        report = Report()
        for index, (name, statements) in enumerate(files):
            connection = fresh_database(postgres, f"warm_{round_number}_{index}")
            try:
                session = Session(MemoryBackend(), f"warm-{name}", rng=random.Random(index), engine=engine)
                await run_file(name, statements, connection, session.execute, report)
            finally:
                connection.close()
        print_report(report, f"differential (warm statement cache, round {round_number + 1})")
        mismatches = [v.describe() for v in report.verdicts if v.kind == "mismatch"]
        assert not mismatches, f"{len(mismatches)} statements differ from PostgreSQL:\n" + "\n".join(mismatches)
    warm_hits, warm_misses = engine.statements.hits - hits_before, engine.statements.misses - misses_before
    assert warm_hits > warm_misses, (warm_hits, warm_misses)


@pytest.mark.cluster
async def test_corpus_subset_matches_postgres_on_a_cluster(postgres, shared_cluster):
    report = Report()
    corpus = load_corpus(CLUSTER_FILES)
    assert len(corpus) == len(CLUSTER_FILES)
    node = shared_cluster.config.computes[0]
    for index, (name, statements) in enumerate(corpus):
        connection = fresh_database(postgres, f"cluster_{index}")
        client = connect(node.host, node.port)
        try:
            _drop_all_tables(client)

            async def execute(sql: str):
                return await asyncio.to_thread(client.execute_script, sql)
            await run_file(name, statements, connection, execute, report)
        finally:
            client.execute_script("ROLLBACK")
            _drop_all_tables(client)
            client.close()
            connection.close()
    print_report(report, "differential (real cluster)")
    mismatches = [v.describe() for v in report.verdicts if v.kind == "mismatch"]
    assert not mismatches, f"{len(mismatches)} statements differ from PostgreSQL:\n" + "\n".join(mismatches)
    assert report.total >= 100


def _drop_all_tables(client) -> None:
    result = client.execute_script("SELECT table_name FROM information_schema.tables")[-1]
    assert result.error is None, result.error
    for (name,) in result.rows:
        dropped = client.execute_script(f'DROP TABLE IF EXISTS "{name}"')[-1]
        assert dropped.error is None, dropped.error
