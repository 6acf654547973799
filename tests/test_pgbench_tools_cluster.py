"""PostgreSQL's own benchmark, unmodified, against a real cluster's PostgreSQL endpoint.

`pgbench -i` with its default steps (drop, create with fillfactor, client-side COPY inside one
transaction after TRUNCATE, VACUUM, primary keys added to the loaded tables) and with
server-side generation (`-I dtGvp`: INSERT ... SELECT FROM generate_series), then the built-in
tpcb-like, simple-update and select-only scripts for a few seconds each with `--max-tries`
retrying 40001 as pgbench does. Afterwards the money adds up: every transaction that changed a
balance also wrote its delta to pgbench_history, so sum(abalance) = sum(delta).

No timed assertions (2 shared cores): only that the tools finish, and that the data is exactly
what the transactions pgbench counts as processed wrote (a failed one, 40001 on every try, left
nothing).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import psycopg
import pytest

pytestmark = pytest.mark.cluster

PGBENCH = shutil.which("pgbench")
INIT_TIMEOUT_S = 600.0   # 200,000 rows through COPY and a primary key rewrite, on a loaded 2-core machine
RUN_TIMEOUT_S = 180.0
SCALE = 2


@pytest.fixture(scope="module")
def endpoint(shared_cluster):
    assert PGBENCH is not None, "pgbench is required: bash scripts/install-postgres"
    config = shared_cluster.config
    token = subprocess.run(["quorumdb", "token", "--user", "admin", "--data-dir", str(config.data_dir)],
                           capture_output=True, text=True, timeout=60)
    assert token.returncode == 0, token.stderr
    port = config.pg_port(config.computes[0].name)
    env = dict(os.environ, PGPASSWORD=token.stdout.strip(), PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="admin",
               PGDATABASE="postgres")
    return env, port, token.stdout.strip()


def _pgbench(env, *args: str, timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run([PGBENCH, *args], env=env, capture_output=True, text=True, timeout=timeout)
    print(f"\n$ pgbench {' '.join(args)}\n{done.stdout}\n{done.stderr[-3000:]}")
    return done


def _query(env, sql: str):
    with psycopg.connect(host="127.0.0.1", port=env["PGPORT"], user="admin", password=env["PGPASSWORD"],
                         dbname="postgres", autocommit=True, connect_timeout=30) as connection:
        return connection.execute(sql).fetchall()


def _counts(env) -> dict[str, int]:
    return {table: _query(env, f"SELECT count(*) FROM pgbench_{table}")[0][0]
            for table in ("branches", "tellers", "accounts", "history")}


@pytest.mark.long  # about 40 s (100,000 rows generated in the server): the CI's regions-and-long step runs it
def test_pgbench_init_with_server_side_generation(endpoint):
    env, _, _ = endpoint
    done = _pgbench(env, "-i", "-s", "1", "-I", "dtGvp", timeout=INIT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert _counts(env) == {"branches": 1, "tellers": 10, "accounts": 100_000, "history": 0}
    assert _query(env, "SELECT count(*), sum(bid) FROM pgbench_accounts WHERE aid BETWEEN 99990 AND 100000") \
        == [(11, 11)]


@pytest.mark.long
def test_pgbench_init_then_builtin_scripts_keep_the_money_consistent(endpoint):
    env, _, _ = endpoint
    done = _pgbench(env, "-i", "-s", str(SCALE), timeout=INIT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert _counts(env) == {"branches": SCALE, "tellers": 10 * SCALE, "accounts": 100_000 * SCALE, "history": 0}
    # The primary keys pgbench added are real: a duplicate is refused.
    with pytest.raises(psycopg.errors.UniqueViolation):
        _query(env, "INSERT INTO pgbench_branches (bid, bbalance) VALUES (1, 0)")

    processed = {}
    for index, script in enumerate(("tpcb-like", "simple-update", "select-only")):
        # The first run lets pgbench vacuum and truncate history (balances are all 0 then);
        # later runs keep history (-n) so that it still explains every balance.
        args = ["-b", script, "-c", "4", "-j", "2", "-T", "3", "--max-tries", "20"]
        done = _pgbench(env, *args, *([] if index == 0 else ["-n"]), timeout=RUN_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        found = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
        assert found and int(found.group(1)) > 0, done.stdout
        # A transaction that still met 40001 after --max-tries is "failed": pgbench rolled it
        # back, so it must leave no trace (checked below). With 2 branches and 4 clients every
        # tpcb-like transaction updates a hot row, so a few may exhaust their tries.
        assert failed and int(failed.group(1)) < int(found.group(1)), done.stdout
        processed[script] = int(found.group(1))

    (accounts,), (history, rows), (branches,), (tellers,) = (
        _query(env, "SELECT sum(abalance) FROM pgbench_accounts")[0],
        _query(env, "SELECT sum(delta), count(*) FROM pgbench_history")[0],
        _query(env, "SELECT sum(bbalance) FROM pgbench_branches")[0],
        _query(env, "SELECT sum(tbalance) FROM pgbench_tellers")[0])
    print(f"processed {processed}; history rows {rows}")
    assert rows == processed["tpcb-like"] + processed["simple-update"]
    assert accounts == history
    assert branches == tellers  # only tpcb-like changes them, always together
