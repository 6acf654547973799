"""Pure parts of `quorumdb bench`: the latency histogram, the summary, the workload SQL and the CLI's endpoints."""
from __future__ import annotations

import argparse
import random

import pytest

from quorumdb import client as client_mod
from tools.bench import command, runner, stats, workloads


def test_empty_histogram_reports_zeros():
    histogram = stats.Histogram()
    assert histogram.percentile_us(0.5) == 0.0
    assert histogram.percentile_us(1.0) == 0.0
    assert histogram.mean_us() == 0.0


def test_single_sample_is_every_percentile():
    histogram = stats.histogram_of([1234.0])
    for fraction in (0.0, 0.5, 0.99, 1.0):
        assert histogram.percentile_us(fraction) == 1234.0


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_within_one_percent_of_exact(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(8, 1.5) for _ in range(5_000)]
    histogram = stats.histogram_of(values)
    for fraction in (0.5, 0.9, 0.95, 0.99, 0.999):
        exact = stats.exact_percentile(values, fraction)
        assert exact <= histogram.percentile_us(fraction) <= exact * stats.BUCKET_GROWTH * 1.0000001
    assert histogram.percentile_us(1.0) == max(values)
    assert histogram.count == len(values)
    assert histogram.mean_us() == pytest.approx(sum(values) / len(values))


def test_percentiles_are_ordered_and_never_above_max():
    histogram = stats.histogram_of([100.0] * 98 + [50_000.0, 50_001.0])
    p50, p95, p99 = (histogram.percentile_us(f) for f in (0.5, 0.95, 0.99))
    assert p50 <= p95 <= p99 <= histogram.max_us == 50_001.0
    assert p50 == pytest.approx(100.0, rel=0.01)
    assert p99 == pytest.approx(50_000.0, rel=0.01)


def test_memory_is_bounded_for_any_latency():
    histogram = stats.histogram_of([0.0, 0.5, 1e12, 1e15] + [float(i) for i in range(1, 100_000, 7)])
    assert len(histogram.counts) <= stats.BUCKETS_MAX
    assert stats.bucket_of(1e15) == stats.BUCKETS_MAX - 1
    assert histogram.percentile_us(1.0) == 1e15


def test_merge_equals_recording_everything_in_one():
    rng = random.Random(7)
    a_values = [rng.uniform(10, 10_000) for _ in range(500)]
    b_values = [rng.uniform(5_000, 90_000) for _ in range(300)]
    merged = stats.histogram_of(a_values)
    merged.merge(stats.histogram_of(b_values))
    whole = stats.histogram_of(a_values + b_values)
    assert merged.counts == whole.counts
    assert (merged.count, merged.min_us, merged.max_us) == (whole.count, whole.min_us, whole.max_us)
    merged.merge(stats.Histogram())  # an empty window changes nothing
    assert merged.counts == whole.counts and merged.min_us == whole.min_us


def test_summary_in_milliseconds_and_tps():
    histogram = stats.histogram_of([1000.0, 2000.0, 3000.0, 4000.0])
    report = stats.summary(histogram, ops=4, aborts=2, errors=1, elapsed_s=2.0)
    assert report["throughput_tps"] == 2.0
    assert report["latency_ms_max"] == 4.0
    assert report["latency_ms_p50"] == pytest.approx(2.0, rel=0.01)
    assert report["latency_ms_mean"] == 2.5
    assert (report["ops"], report["aborts"], report["errors"]) == (4, 2, 1)


def test_tally_counts_nothing_during_warmup_or_after_close():
    tally = runner.Tally()
    tally.op(0.001)
    tally.abort()
    assert (tally.ops, tally.aborts, tally.warmup_ops) == (0, 0, 1)
    tally.measuring = True
    tally.op(0.002)
    tally.abort()
    tally.error(client_mod.DatabaseError("23505", "duplicate key"))
    assert tally.take_window().count == 1 and tally.window.count == 0
    tally.close()
    tally.op(0.003)
    tally.abort()
    assert (tally.ops, tally.aborts, tally.errors, tally.total.count) == (1, 1, 1, 1)
    assert tally.error_samples == ["23505: duplicate key"]


def test_tally_client_cpu_covers_only_the_measured_window(monkeypatch):
    clock = iter([5.0, 7.5, 99.0])  # process_time at: measuring starts, close, (never read again)
    monkeypatch.setattr(runner.time, "process_time", lambda: next(clock))
    tally = runner.Tally()
    tally.measuring = False  # the warm-up: no CPU reading
    assert tally.client_cpu_s() is None
    tally.measuring = True
    tally.measuring = True  # set again: the start stays the first one
    tally.op(0.001)
    tally.close()
    tally.close()  # idempotent
    assert tally.client_cpu_s() == pytest.approx(2.5)
    never = runner.Tally()
    never.close()  # the window never opened (e.g. every client failed to connect)
    assert never.client_cpu_s() is None


def test_error_samples_are_bounded_and_distinct():
    tally = runner.Tally()
    tally.measuring = True
    for i in range(50):
        tally.error(client_mod.DatabaseError("XX000", f"boom {i % 20}"))
    assert tally.errors == 50
    assert len(tally.error_samples) == runner.ERROR_SAMPLES_MAX
    assert len(set(tally.error_samples)) == runner.ERROR_SAMPLES_MAX


class FakeResult:
    def __init__(self, value):
        self.value = value

    def scalar(self):
        return self.value


def drive(steps, answer=lambda sql: None) -> list[str]:
    """Run a workload generator, answering each statement with FakeResult(answer(sql))."""
    sent, result = [], None
    try:
        while True:
            sql = steps.send(result)
            sent.append(sql)
            result = FakeResult(answer(sql))
    except StopIteration:
        return sent


def test_setup_loads_missing_rows_in_bounded_batches_and_skips_when_present():
    workload = workloads.make("point-read", workloads.Params(rows=1_200))
    empty = drive(workload.setup(), lambda sql: 0 if "count(*)" in sql else None)
    inserts = [sql for sql in empty if sql.startswith("INSERT")]
    assert len(inserts) == 3 and all("ON CONFLICT (k) DO NOTHING" in sql for sql in inserts)
    assert inserts[-1].count("'),") == 1_200 - 2 * workloads.LOAD_BATCH_ROWS - 1
    full = drive(workload.setup(), lambda sql: 1_200 if "count(*)" in sql else None)
    assert not any(sql.startswith("INSERT") for sql in full)
    assert full[0].startswith("CREATE TABLE IF NOT EXISTS bench_kv")


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_every_workload_plans_within_its_data_set(name):
    params = workloads.Params(rows=150, scale=3, hot=4)
    workload = workloads.make(name, params)
    rng = random.Random(1)
    for _ in range(200):
        sql = drive(workload.steps(workload.plan(rng)), lambda sql: 5)
        assert sql
        transactional = sql[0] == "BEGIN"
        assert transactional == (sql[-1] == "COMMIT")
    setup = drive(workload.setup(), lambda sql: 0)
    assert all("IF NOT EXISTS" in sql for sql in setup if sql.startswith("CREATE"))


def test_tpcb_is_pgbench_shaped_and_bank_moves_money_between_two_hot_accounts():
    tpcb = workloads.make("tpcb", workloads.Params(rows=1000, scale=2))
    sql = drive(tpcb.steps(tpcb.plan(random.Random(3))))
    assert [s.split()[0] for s in sql] == ["BEGIN", "UPDATE", "SELECT", "UPDATE", "UPDATE", "INSERT", "COMMIT"]
    bank = workloads.make("bank-contended", workloads.Params(hot=2))
    for seed in range(20):
        source, target, amount = bank.plan(random.Random(seed))
        assert {source, target} == {1, 2} and 1 <= amount <= workloads.TRANSFER_AMOUNT_MAX
    with pytest.raises(ValueError):
        workloads.make("nope", workloads.Params())
    with pytest.raises(ValueError):
        workloads.Params(hot=1)


def test_scan_reads_a_full_range_inside_the_table():
    scan = workloads.make("scan", workloads.Params(rows=120))
    rng = random.Random(0)
    for _ in range(100):
        first = scan.plan(rng)
        assert 1 <= first and first + workloads.SCAN_ROWS - 1 <= 120


def _args(**kw):
    base = dict(base_port=None, port=None, host="127.0.0.1")
    base.update(kw)
    return argparse.Namespace(**base)


def test_endpoints_from_ports_base_port_and_default():
    assert command.endpoints_of(_args()) == [("127.0.0.1", 7100)]
    assert command.endpoints_of(_args(base_port=7200)) == [("127.0.0.1", p) for p in (7200, 7201, 7202)]
    assert command.endpoints_of(_args(port=["7100,7101", "7102", "7100"], host="h")) == [
        ("h", 7100), ("h", 7101), ("h", 7102)]


def test_clients_are_spread_round_robin_over_endpoints():
    options = runner.Options(workload="scan", endpoints=[("a", 1), ("b", 2), ("c", 3)])
    assert [runner._endpoints_for(options, i)[0] for i in range(4)] == [("a", 1), ("b", 2), ("c", 3), ("a", 1)]
    assert sorted(runner._endpoints_for(options, 1)) == options.endpoints


@pytest.mark.parametrize("bad", [dict(clients=0), dict(duration_s=0), dict(warmup_s=-1), dict(driver="x"),
                                 dict(duration_s=runner.DURATION_MAX_S)])
def test_options_are_bounded(bad):
    with pytest.raises(ValueError):
        runner.Options(workload="scan", **bad).validate()


def test_tpcb_history_keys_differ_between_runs_with_the_same_seed():
    params = workloads.Params(rows=100)
    first = workloads.make("tpcb", params, salt=1 << 40)
    second = workloads.make("tpcb", params, salt=12345)
    keys_first = [first.plan(random.Random(9))[-1] for _ in range(1)]
    keys_second = [second.plan(random.Random(9))[-1] for _ in range(1)]
    assert keys_first != keys_second
    rng = random.Random(4)
    keys = [first.plan(rng)[-1] for _ in range(1000)]
    assert all(0 <= key < workloads.HISTORY_ID_MAX for key in keys)
