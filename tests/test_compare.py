"""Pure parts of tools/bench/compare: parsing pgbench and `quorumdb bench --json`, percentiles, ratios,
the markdown tables, the pgbench scripts and per-transaction logs, CPU accounting from
/proc/PID/stat text, the read-mode check, and the HTTP/1.1 framing of the etcd load generator.
No processes, no timing."""
import base64
import json
import pathlib
import random

import pytest

from tools.bench import compare_main, etcd_load, peers, pgbench_load, procstat, report
from tools.bench import workloads

PGBENCH_15 = """\
pgbench (15.18 (Debian 15.18-0+deb12u1))
starting vacuum...end.
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 1
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 24960
number of failed transactions: 3 (0.012%)
latency average = 3.205 ms
initial connection time = 12.345 ms
tps = 2496.118264 (without initial connection time)
"""

PGBENCH_13 = """\
number of transactions actually processed: 1000
latency average = 4.000 ms
tps = 1990.000000 (including connections establishing)
tps = 2000.500000 (excluding connections establishing)
"""


PGBENCH_15_RETRIES = """\
pgbench (15.18 (Debian 15.18-0+deb12u1), server 16.0 (QuorumDB))
transaction type: /tmp/x/tpcb.sql
scaling factor: 8
query mode: simple
number of clients: 3
number of threads: 2
maximum number of tries: 1000
duration: 3 s
number of transactions actually processed: 66
number of failed transactions: 0 (0.000%)
number of transactions retried: 22 (33.333%)
total number of retries: 35
latency average = 502.768 ms
initial connection time = 98.001 ms
tps = 15.911904 (without initial connection time)
"""


def test_parse_pgbench_15():
    figures = report.parse_pgbench(PGBENCH_15)
    assert figures["throughput_tps"] == pytest.approx(2496.118264)
    assert figures["latency_ms_avg"] == pytest.approx(3.205)
    assert figures["transactions"] == 24960
    assert figures["errors"] == 3
    assert figures["retries"] == 0  # no retry lines without --max-tries
    assert figures["connection_ms"] == pytest.approx(12.345)
    assert figures["scale"] == 1


def test_parse_pgbench_with_retries_and_scale():
    figures = report.parse_pgbench(PGBENCH_15_RETRIES)
    assert (figures["transactions"], figures["retries"], figures["errors"], figures["scale"]) == (66, 35, 0, 8)


def test_parse_pgbench_old_takes_the_figure_without_connection_setup():
    figures = report.parse_pgbench(PGBENCH_13)
    assert figures["throughput_tps"] == pytest.approx(2000.5)
    assert figures["errors"] == 0


def test_parse_pgbench_without_tps_raises():
    with pytest.raises(ValueError):
        report.parse_pgbench("pgbench: error: connection to server failed\n")


def test_parse_bench_json_takes_the_last_object_with_throughput():
    line = json.dumps({"throughput_tps": 812.5, "latency_ms_p50": 9.5, "aborts": 2, "errors": 0})
    output = "loading rows...\n{\"progress\": 1}\n" + line + "\n"
    assert report.parse_bench_json(output)["throughput_tps"] == 812.5
    pretty = json.dumps({"throughput_tps": 3.0, "errors": 0}, indent=2)
    assert report.parse_bench_json(pretty)["throughput_tps"] == 3.0
    with pytest.raises(ValueError):
        report.parse_bench_json("{\"progress\": 1}\nTraceback ...\n")


def test_versions():
    assert report.parse_etcd_version("etcd Version: 3.4.23\nGit SHA: Not provided\n") == "3.4.23"
    assert report.parse_etcd_version("nothing") is None
    assert report.parse_postgres_version("pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") == "15.18"


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert report.percentile(values, 0.50) == 50.0
    assert report.percentile(values, 0.99) == 99.0
    assert report.percentile(values, 1.0) == 100.0
    assert report.percentile([7.0], 0.5) == 7.0
    assert report.percentile([], 0.5) is None


def test_summarize_in_milliseconds():
    figures = report.summarize([0.002, 0.001, 0.003, 0.010], completed=4, elapsed_s=2.0, errors=1)
    assert figures["throughput_tps"] == 2.0
    assert figures["latency_ms_p50"] == 2.0
    assert figures["latency_ms_max"] == 10.0
    assert figures["errors"] == 1
    empty = report.summarize([], completed=0, elapsed_s=1.0, errors=5)
    assert empty["throughput_tps"] == 0.0
    assert empty["latency_ms_p50"] is None


def _figures(qdb_write64=1250.0, etcd64=2500.0, qdb_p50=6.0, etcd_p50=2.0, qdb_scale=8, pg_scale=8):
    def qdb(**figures):
        return figures

    return {
        "etcd": {"put_1": {"throughput_tps": 400.0, "latency_ms_p50": etcd_p50},
                 "put_64": {"throughput_tps": etcd64, "latency_ms_p50": 20.0, "server_cpu_ms_per_op": 0.3}},
        "postgres": {"tpcb_8": {"throughput_tps": 2000.0, "latency_ms_avg": 3.2, "scale": pg_scale},
                     "select_only_64": {"throughput_tps": 30000.0}},
        "quorumdb": {
            "idle_quorum": {"cluster_cores": 0.3, "wall_s": 8.0, "cores_by_service": {"journal": 0.1, "storage": 0.2}},
            "idle_single": {"cluster_cores": 0.302, "wall_s": 8.0},
            "bench_quorum_point_write_1": qdb(throughput_tps=160.0, latency_ms_p50=qdb_p50),
            "bench_quorum_point_write_64": qdb(throughput_tps=qdb_write64, aborts=0, errors=0,
                                               cluster_cpu_ms_per_op=1.2, loadgen_cpu_ms_per_op=0.15),
            "bench_quorum_point_read_1": qdb(throughput_tps=300.0, latency_ms_p50=3.0),
            "bench_quorum_point_read_64": qdb(throughput_tps=3000.0),
            "bench_quorum_tpcb_8": qdb(throughput_tps=500.0, aborts=12, scale=qdb_scale),
            "pgbench_quorum_point_write_64": qdb(throughput_tps=1300.0, cluster_cpu_ms_per_op=1.21),
            "pgbench_quorum_point_read_1": qdb(throughput_tps=310.0, latency_ms_p50=3.01),
            "bench_single_point_read_64": qdb(throughput_tps=2999.0),
        },
    }


def _by(ratios, key, client="bench", mode="quorum"):
    [entry] = [e for e in ratios if e["key"] == key and e["client"] == client and e["read_mode"] == mode]
    return entry


def test_targets_are_the_fast_path_issues():
    targets = {target.key: (target.target, target.direction) for target in report.TARGETS}
    assert targets == {
        "cluster_cpu_per_point_write": (1.2, "lower"),
        "point_write_64_vs_etcd": (0.5, "higher"),
        "point_read_64_vs_select_only": (0.1, "higher"),
        "tpcb_vs_pgbench": (0.25, "higher"),
        "point_write_1_p50_vs_etcd": (3.0, "lower"),
        "point_read_1_p50": (3.0, "lower"),
        "idle_cluster_cores": (0.3, "lower"),
    }


def test_ratios_and_targets_at_their_boundaries():
    ratios = report.compute_ratios(_figures())
    # exactly on a target meets it, in both directions
    assert _by(ratios, "point_write_64_vs_etcd")["value"] == pytest.approx(0.5)
    assert _by(ratios, "point_write_64_vs_etcd")["meets_target"] is True
    assert _by(ratios, "point_write_64_vs_etcd", "pgbench")["value"] == pytest.approx(0.52)
    assert _by(ratios, "point_read_64_vs_select_only")["value"] == pytest.approx(0.1)
    assert _by(ratios, "point_read_64_vs_select_only")["meets_target"] is True
    assert _by(ratios, "point_read_64_vs_select_only", mode="single")["meets_target"] is False  # 2,999
    assert _by(ratios, "tpcb_vs_pgbench")["value"] == pytest.approx(0.25)
    assert _by(ratios, "tpcb_vs_pgbench")["meets_target"] is True
    assert _by(ratios, "point_write_1_p50_vs_etcd")["value"] == pytest.approx(3.0)
    assert _by(ratios, "point_write_1_p50_vs_etcd")["meets_target"] is True
    assert _by(report.compute_ratios(_figures(qdb_p50=6.2)), "point_write_1_p50_vs_etcd")["meets_target"] is False
    # absolute targets: the figure itself, no denominator
    assert _by(ratios, "cluster_cpu_per_point_write")["value"] == pytest.approx(1.2)
    assert _by(ratios, "cluster_cpu_per_point_write")["meets_target"] is True
    assert _by(ratios, "cluster_cpu_per_point_write", "pgbench")["meets_target"] is False  # 1.21 ms
    assert _by(ratios, "point_read_1_p50")["meets_target"] is True  # 3.0 ms
    assert _by(ratios, "point_read_1_p50", "pgbench")["meets_target"] is False  # 3.01 ms
    assert _by(ratios, "idle_cluster_cores", None)["meets_target"] is True  # 0.3 cores
    assert _by(ratios, "idle_cluster_cores", None, "single")["meets_target"] is False  # 0.302 cores
    worse = report.compute_ratios(_figures(qdb_write64=1249.0))
    assert _by(worse, "point_write_64_vs_etcd")["meets_target"] is False


def test_every_target_is_reported_per_client_and_read_mode():
    ratios = report.compute_ratios(_figures())
    cells = {(e["key"], e["client"], e["read_mode"]) for e in ratios}
    assert ("point_write_64_vs_etcd", "pgbench", "single") in cells
    assert ("idle_cluster_cores", None, "quorum") in cells and ("idle_cluster_cores", "bench", "quorum") not in cells
    # tpcb runs on the default cluster only: no single-mode cell at all (not a failed one)
    assert not any(key == "tpcb_vs_pgbench" and mode == "single" for key, _, mode in cells)
    assert len(ratios) == 6 * 2 * 2 - 2 + 2  # 6 per-client targets (tpcb: quorum only) + idle per mode
    only_quorum = report.compute_ratios(_figures(), modes=["quorum"])
    assert {e["read_mode"] for e in only_quorum} == {"quorum"}
    # not measured: None, never a number
    assert _by(ratios, "point_write_64_vs_etcd", "pgbench", "single")["value"] is None
    assert _by(ratios, "point_write_64_vs_etcd", "pgbench", "single")["meets_target"] is None


def test_tpcb_ratio_needs_the_same_scale_on_both_sides():
    ratios = report.compute_ratios(_figures(qdb_scale=1, pg_scale=8))
    entry = _by(ratios, "tpcb_vs_pgbench")
    assert entry["value"] is None and entry["meets_target"] is None
    assert "scale differs: 1 against 8" in entry["note"]


def test_missing_or_zero_figures_give_no_ratio():
    figures = _figures(etcd64=0.0)
    del figures["quorumdb"]["bench_quorum_tpcb_8"]
    ratios = report.compute_ratios(figures)
    assert _by(ratios, "point_write_64_vs_etcd")["value"] is None
    assert _by(ratios, "point_write_64_vs_etcd")["meets_target"] is None
    assert _by(ratios, "tpcb_vs_pgbench")["value"] is None
    assert all(entry["value"] is None for entry in report.compute_ratios({}))
    assert report.lookup({"a": {"b": True}}, "a.b") is None  # a flag is not a figure


def test_figure_rows_cover_every_quorumdb_run_with_both_clients():
    names = [path for path, *_ in report.FIGURE_ROWS]
    assert len(names) == len(set(names))
    for workload, clients, modes in report.QDB_RUNS:
        for mode in modes:
            for client in report.QDB_CLIENTS:
                assert f"quorumdb.{report.qdb_row(client, mode, workload, clients)}" in names
    assert "quorumdb.pgbench_single_tpcb_8" not in names
    assert report.qdb_row("pgbench", "single", "point-read", 64) == "pgbench_single_point_read_64"
    with pytest.raises(AssertionError):
        report.qdb_row("psql", "quorum", "point-read", 1)


def test_markdown_report_has_every_row_and_says_na():
    figures = _figures()
    del figures["etcd"]
    result = {"date": "2026-11-22 10:00 UTC", "command": "tools/bench/compare --duration 10", "duration_s": 10.0,
              "warmup_s": 2.0, "pgbench_mode": "extended", "tpcb_scale": 8,
              "machine": {"nproc": 2, "cpu_model": "X", "memory_gib": 8.0, "kernel": "6.1", "python": "3.11.7"},
              "versions": {"etcd": None, "postgres": "15.18", "quorumdb": "abc123"},
              "load_average_1m": {"start": 0.3}, "figures": figures, "ratios": report.compute_ratios(figures)}
    text = report.markdown_report(result)
    assert "`tools/bench/compare --duration 10`" in text
    assert "PostgreSQL 15.18" in text and "etcd n/a" in text
    assert "pgbench protocol `-M extended`" in text
    assert "quorum cluster 0.30 cores over 8.0 s (journal 0.10, storage 0.20)" in text
    assert ("| QuorumDB | quorumdb bench | quorum | point-write | 64 | 1,250.0 | n/a | n/a | 0 | 0 | 1.20 | 0.150 |"
            in text)
    assert "| PostgreSQL | pgbench | - | TPC-B (-b tpcb-like) | 8 | 2,000.0 | avg 3.20 |" in text
    assert "| etcd 3 members | tools/bench/etcd_load.py | - | put (v3 JSON gateway) | 64 | n/a |" in text
    assert "| QuorumDB | pgbench -M extended | single | point-read | 64 | n/a |" in text
    rows_per_target = 2 * (len(report.TARGETS) - 1) + 1  # a row per client; idle is one row
    same_rows = len(report.SAME_SCRIPT_RUNS) * len(report.SAME_SCRIPT_MODES)
    assert text.count("\n| ") == len(report.FIGURE_ROWS) + rows_per_target + same_rows + 6  # + 3 heads, 3 rules
    assert ("| tpcb / pgbench TPC-B, 8 clients, same scale >= clients (tps) | quorumdb bench | 0.250 (yes) | - "
            "| >= 0.25 |") in text
    assert "| idle CPU of the cluster, 8 s after set-up (cores) | - | 0.300 (yes) | 0.302 (no) | <= 0.3 cores |" in text
    assert "| cluster CPU per committed point-write, 64 clients (ms) | pgbench -M extended | 1.21 (no) | n/a |" in text


def test_small_values_keep_three_significant_digits():
    assert report._significant(0.0021) == "0.00210"
    assert report._significant(0.302) == "0.302"
    assert report._significant(24.31) == "24.31"
    assert report._significant(None) == "n/a"


def test_put_request_framing():
    body = etcd_load.put_body("bench-00042", b"\x00\x01value")
    decoded = json.loads(body)
    assert base64.b64decode(decoded["key"]) == b"bench-00042"
    assert base64.b64decode(decoded["value"]) == b"\x00\x01value"
    request = etcd_load.build_request("127.0.0.1", 2379, "/v3/kv/put", body)
    head, _, sent_body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v3/kv/put HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert sent_body == body


def test_parse_response_head():
    head = etcd_load.parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                         b"Content-Length: 123\r\nDate: x")
    assert (head.status, head.content_length, head.chunked, head.close) == (200, 123, False, False)
    chunked = etcd_load.parse_response_head(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
                                            b"Connection: close")
    assert (chunked.status, chunked.content_length, chunked.chunked, chunked.close) == (503, None, True, True)
    with pytest.raises(ValueError):
        etcd_load.parse_response_head(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(ValueError):
        etcd_load.parse_response_head(b"HTTP/1.1 200 OK\r\nno colon here")


def test_arguments():
    defaults = compare_main.parse_args([])
    assert defaults.duration == compare_main.DEFAULT_DURATION_S
    assert defaults.pgbench_mode == "simple"  # QuorumDB's extended protocol is being reworked
    assert defaults.read_modes == ["quorum", "single"] and defaults.tpcb_scale >= report.TPCB_CLIENTS
    assert compare_main.parse_args(["--read-modes", "single,quorum"]).read_modes == ["quorum", "single"]
    assert compare_main.parse_args(["--pgbench-mode", "prepared"]).pgbench_mode == "prepared"
    for bad in (["--read-modes", "eventual"], ["--read-modes", ""], ["--pgbench-mode", "fast"],
                ["--tpcb-scale", "4"]):
        with pytest.raises(SystemExit):
            compare_main.parse_args(bad)
    quick = compare_main.parse_args(["--quick"])
    assert quick.duration == compare_main.QUICK_DURATION_S
    assert compare_main.parse_args(["--quick", "--duration", "7"]).duration == 7.0
    assert compare_main.parse_args(["--only", "etcd, postgres"]).only == ["etcd", "postgres"]
    with pytest.raises(SystemExit):
        compare_main.parse_args(["--only", "mysql"])
    with pytest.raises(SystemExit):
        compare_main.parse_args(["--duration", "0"])


def test_read_response_content_length_and_chunked():
    import asyncio

    async def read(data: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await etcd_load._read_response(reader)

    plain = b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"header":1}'
    assert asyncio.run(read(plain)) == (200, b'{"header":1}', False)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert asyncio.run(read(chunked)) == (200, b"hello world", False)
    with pytest.raises(ValueError):
        asyncio.run(read(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody"))


# --- pgbench scripts and commands ----------------------------------------------------------------
def _fill(script: str, **values) -> list[str]:
    """The SQL lines of a pgbench script with its variables replaced (longest name first)."""
    lines = [line for line in script.splitlines() if line and not line.startswith("\\")]
    for name in sorted(values, key=len, reverse=True):
        lines = [line.replace(f":{name}", str(values[name])) for line in lines]
    return [line.rstrip(";") for line in lines]


def _steps(workload, plan) -> list[str]:
    steps, sent, result = workload.steps(plan), [], None
    try:
        while True:
            sent.append(steps.send(result))
    except StopIteration:
        return sent


def test_pgbench_scripts_send_what_quorumdb_bench_sends():
    params = workloads.Params()
    rng = random.Random(3)
    write = workloads.make("point-write", params)
    key, value = write.plan(rng)
    assert _fill(pgbench_load.script("point-write"), k=key, v=value) == _steps(write, (key, value))
    read = workloads.make("point-read", params)
    assert _fill(pgbench_load.script("point-read"), k=key) == _steps(read, (key, 0))
    tpcb = workloads.make("tpcb", workloads.Params(scale=8))
    aid, bid, tid, delta, hid = tpcb.plan(rng)
    assert _fill(pgbench_load.script("tpcb"), aid=aid, bid=bid, tid=tid, delta=delta, hid=hid) == \
        _steps(tpcb, (aid, bid, tid, delta, hid))


def test_pgbench_scripts_draw_from_the_same_ranges():
    write = pgbench_load.script("point-write")
    assert "\\set k random(1, :rows)" in write  # -D rows=N, the same N as quorumdb bench --rows
    assert f"\\set v random(0, {workloads.VALUE_MAX})" in write
    assert f"'{workloads.PAD}'" in write and "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;" in write
    assert pgbench_load.script("point-read").splitlines() == [
        "\\set k random(1, :rows)", "SELECT v FROM bench_kv WHERE k = :k;"]
    tpcb = pgbench_load.script("tpcb")
    assert "\\set tid random(1, 10 * :scale)" in tpcb and "\\set bid random(1, :scale)" in tpcb
    assert f"\\set hid random(1, {2 ** 62 - 1})" in tpcb
    assert tpcb.strip().splitlines()[-1] == "COMMIT;"
    with pytest.raises(ValueError):
        pgbench_load.script("scan")


def test_clients_are_spread_over_the_compute_nodes():
    assert pgbench_load.split_clients(64, 3) == [22, 21, 21]
    assert pgbench_load.split_clients(1, 3) == [1, 0, 0]
    assert pgbench_load.split_clients(8, 3) == [3, 3, 2]
    assert pgbench_load.split_clients(5, 1) == [5]
    for clients in range(1, 100):
        shares = pgbench_load.split_clients(clients, 3)
        assert sum(shares) == clients and max(shares) - min(shares) <= 1


def test_pgbench_command():
    target = pgbench_load.Target("127.0.0.1", 7703, "admin", "postgres", 22)
    command = pgbench_load.command("/usr/bin/pgbench", target, ["-f", "/t/point-read.sql"], 32, "simple",
                                   "/t/logs/node0", variables={"rows": 10000})
    text = " ".join(command)
    assert command[:4] == ["/usr/bin/pgbench", "-n", "-f", "/t/point-read.sql"]
    assert "-c 22 -j 2 -T 32 -P 1 -M simple" in text
    assert "-l --log-prefix /t/logs/node0" in text and "-D rows=10000" in text
    assert f"--max-tries {pgbench_load.MAX_TRIES}" in text and pgbench_load.MAX_TRIES > 1  # 40001 is retried
    assert "-s" not in command
    assert command[-7:] == ["-h", "127.0.0.1", "-p", "7703", "-U", "admin", "postgres"]
    one = pgbench_load.command("pgbench", pgbench_load.Target("h", 1, "u", "d", 1), ["-b", "tpcb-like"], 3,
                               "prepared", "/p", scale=8, vacuum=True)
    assert "-n" not in one and "-j 1" in " ".join(one) and "-M prepared" in " ".join(one)
    assert one[one.index("-s") + 1] == "8"
    with pytest.raises(ValueError):
        pgbench_load.command("pgbench", target, ["-S"], 3, "fast", "/p")


def test_run_seconds_are_whole_and_cover_connections_warmup_and_duration():
    assert pgbench_load.CONNECT_ALLOWANCE_S == 1.0
    assert pgbench_load.run_seconds(3.0, 0.0) == 4
    assert pgbench_load.run_seconds(30.0, 2.0) == 33
    assert pgbench_load.run_seconds(2.5, 0.0) == 4
    assert pgbench_load.run_seconds(0.2, 0.0) == 2


# --- pgbench's per-transaction log ---------------------------------------------------------------
def test_parse_log_line():
    line = pgbench_load.parse_log_line("3 17 11200 0 1796135247 421430 2\n")
    assert line == pgbench_load.Transaction(end_us=1796135247_421430, latency_us=11200, retries=2)
    failed = pgbench_load.parse_log_line("0 5 failed 0 1796135247 5 999")
    assert failed.latency_us is None and failed.retries == 999
    assert pgbench_load.parse_log_line("0 1 800 0 1796135247 5").retries == 0  # --max-tries 1: no column
    assert pgbench_load.parse_log_line("   \n") is None
    for bad in ("0 1 800", "a b c d e f g", "0 1 800 0 x 5 0"):
        with pytest.raises(ValueError):
            pgbench_load.parse_log_line(bad)


def _log(entries):
    """(end second, latency ms or None, retries) -> pgbench log lines."""
    base = 1_796_135_000
    return [f"0 {i} {'failed' if ms is None else int(ms * 1000)} 0 {base + int(end)} {int(end % 1 * 1e6)} {retries}"
            for i, (end, ms, retries) in enumerate(entries)]


def test_log_summary_counts_only_the_last_duration_seconds():
    entries = [(0.5, 100.0, 5), (1.0, 100.0, 0), (1.9, 100.0, 1)]  # warm-up: before 2.0 s
    entries += [(2.0 + i * 0.1, 10.0 + i, 1 if i % 10 == 0 else 0) for i in range(1, 41)]  # 40 in (2, 6]
    entries += [(5.0, None, 3)]  # a failed transaction inside the window
    lines = _log(entries)
    figures = pgbench_load.summarize_log(lambda: iter(lines), duration_s=4.0)
    assert figures["ops"] == 40
    assert figures["throughput_tps"] == pytest.approx(10.0)
    assert figures["errors"] == 1
    assert figures["aborts"] == 4 + 3  # retries inside the window only
    assert figures["transactions_all"] == 43  # what CPU per operation divides by: warm-up included
    assert figures["latency_ms_max"] == pytest.approx(50.0)
    assert figures["latency_ms_p50"] == pytest.approx(30.0, rel=0.011)  # 1 % buckets, as quorumdb bench
    assert figures["log_span_s"] == pytest.approx(5.5)


def test_log_summary_of_an_empty_log_has_no_latency():
    figures = pgbench_load.summarize_log(lambda: iter([]), duration_s=3.0)
    assert figures["ops"] == 0 and figures["throughput_tps"] == 0.0
    assert figures["latency_ms_p50"] is None and figures["log_span_s"] is None


def test_log_files_are_found_per_process(tmp_path):
    for name in ("node0.123", "node0.123.1", "node1.456", "p0.out", "node10.9"):
        (tmp_path / name).write_text("")
    assert [p.name for p in pgbench_load.log_files(tmp_path, "node0")] == ["node0.123", "node0.123.1"]
    (tmp_path / "a").write_text("0 1 5 0 10 0 0\n")
    (tmp_path / "b").write_text("1 1 7 0 11 0 0\n")
    assert list(pgbench_load.read_log_lines([tmp_path / "a", tmp_path / "b"])()) == \
        ["0 1 5 0 10 0 0\n", "1 1 7 0 11 0 0\n"]


def test_merge_summaries_and_error_samples():
    merged = pgbench_load.merge_summaries([
        {"throughput_tps": 100.0, "transactions": 300, "latency_ms_avg": 10.0, "retries": 2, "errors": 0},
        {"throughput_tps": 50.0, "transactions": 100, "latency_ms_avg": 30.0, "retries": 1, "errors": 1}])
    assert merged["pgbench_tps"] == 150.0 and merged["pgbench_transactions"] == 400
    assert merged["pgbench_latency_ms_avg"] == pytest.approx(15.0)
    assert (merged["pgbench_retries"], merged["pgbench_failed"]) == (3, 1)
    stderr = ("progress: 1.0 s, 113.0 tps, lat 34.555 ms stddev 7.467, 0 failed\n"
              "pgbench: error: client 3 script 0 aborted in command 2 query 0: ERROR:  boom\n"
              "pgbench: error: client 3 script 0 aborted in command 2 query 0: ERROR:  boom\n"
              "pgbench: fatal: Run was aborted; the above results are incomplete.\n")
    assert pgbench_load.error_samples(stderr) == [
        "pgbench: error: client 3 script 0 aborted in command 2 query 0: ERROR:  boom",
        "pgbench: fatal: Run was aborted; the above results are incomplete."]


# --- CPU from /proc/PID/stat ---------------------------------------------------------------------
STAT = "4242 (python3 (a) b) S 4000 4242 4000 0 -1 4194560 100 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 3 0"


def _stat(pid, utime, stime, cutime=0, cstime=0, ppid=4000):
    return procstat.parse_stat(STAT.replace("4242 (", f"{pid} (").replace(" S 4000 ", f" S {ppid} ").format(
        utime=utime, stime=stime, cutime=cutime, cstime=cstime))


def test_parse_stat_counts_fields_after_the_last_parenthesis():
    stat = _stat(4242, 150, 30, 7, 3)
    assert (stat.pid, stat.comm, stat.state, stat.ppid) == (4242, "python3 (a) b", "S", 4000)
    assert (stat.utime, stat.stime, stat.own_ticks, stat.reaped_children_ticks) == (150, 30, 180, 10)
    with pytest.raises(ValueError):
        procstat.parse_stat("4242 no parentheses")
    with pytest.raises(ValueError):
        procstat.parse_stat("4242 (x) S 1 2 3")


def test_cpu_delta_sums_every_process_and_groups_by_node_kind():
    names = {1: "journal-az1", 2: "storage-az1-a", 3: "storage-az2-b", 4: "compute-az1"}
    before = procstat.Snapshot({1: 100, 2: 200, 3: 300, 4: 400}, names)
    after = procstat.Snapshot({1: 150, 2: 260, 3: 330, 5: 40},
                              {**names, 5: "compute-az1"})  # 4 exited; compute-az1 restarted as pid 5
    used = procstat.delta(before, after, ticks_per_s=100)
    assert used.seconds == pytest.approx((50 + 60 + 30 + 40) / 100)
    assert used.by_group == {"compute": 0.4, "journal": 0.5, "storage": 0.9}
    assert (used.vanished, used.appeared) == (1, 1)
    reused = procstat.delta(procstat.Snapshot({7: 500}, {7: "x"}), procstat.Snapshot({7: 20}, {7: "x"}),
                            ticks_per_s=100)
    assert reused.seconds == pytest.approx(0.2)  # a PID reused by a new process: its own ticks only


def test_cluster_nodes_are_found_by_their_config_file():
    cmdlines = {
        10: ["python3", "-m", "tools.node", "--config", "/tmp/a/qdb-quorum/cluster.toml", "--name", "journal-az1"],
        11: ["python3", "-m", "tools.node", "--config", "/tmp/b/cluster.toml", "--name", "journal-az1"],
        12: ["python3", "-m", "tools.cli", "up", "--data-dir", "/tmp/a/qdb-quorum"],
        13: [],
    }
    found = procstat.cluster_node_pids(pathlib.Path("/tmp/a/qdb-quorum/cluster.toml"), pids=cmdlines,
                                       cmdline_of=cmdlines.__getitem__)
    assert found == {10: "journal-az1"}
    assert procstat.service_of("adjudicator-az3") == "adjudicator"


def test_tree_ticks_adds_live_and_reaped_backends():
    stats = {1: _stat(1, 100, 50, cutime=300, cstime=30, ppid=0), 2: _stat(2, 40, 10, ppid=1),
             3: _stat(3, 5, 5, ppid=99)}
    assert procstat.tree_ticks(1, pids=stats, stat_of=stats.get) == 150 + 330 + 50
    assert procstat.tree_ticks(7, pids=stats, stat_of=stats.get) is None


def test_own_seconds_counts_the_live_processes_own_threads():
    stats = {1: _stat(1, 100, 50, cutime=300, cstime=30, ppid=0), 2: _stat(2, 40, 10, ppid=1)}
    seconds = procstat.own_seconds([1, 2, 3], stat_of=stats.get)  # 3 is gone: it counts nothing
    assert seconds == pytest.approx((150 + 50) / procstat.CLOCK_TICKS_PER_S)


def test_cpu_per_operation():
    assert procstat.per_op_ms(1.5, 1000) == pytest.approx(1.5)
    assert procstat.per_op_ms(1.5, 0) is None and procstat.per_op_ms(None, 10) is None
    figures = {}
    compare_main.with_cpu(figures, "cluster_cpu_ms_per_op", 12.0, 4000)
    assert figures == {"cluster_cpu_s": 12.0, "cluster_cpu_ms_per_op": 3.0}


# --- the read-mode check and the cluster's endpoints ----------------------------------------------
def _status(quorum, single):
    nodes = [{"name": "journal-az1", "service": "journal", "detail": "reads_quorum=999"}]
    nodes += [{"name": f"compute-az{i}", "service": "compute",
               "detail": f"sessions=0 read_mode=quorum reads_quorum={q} reads_single={s} copies_asked=1 hedges=0"}
              for i, (q, s) in enumerate(zip(quorum, single), 1)]
    return json.dumps(nodes)


def test_read_counters_prove_the_read_mode():
    before = report.parse_read_counters(_status([10, 20, 30], [0, 0, 0]))
    assert before == {"reads_quorum": 60, "reads_single": 0}
    after = report.parse_read_counters(_status([12, 21, 30], [400, 300, 300]))
    counts = report.read_counter_delta(before, after)
    assert counts == {"reads_quorum": 3, "reads_single": 1000, "reads_single_share": pytest.approx(0.997, abs=1e-3)}
    assert report.read_mode_problem("single", counts) is None
    assert "meant quorum reads" in report.read_mode_problem("quorum", counts)
    unchanged = report.read_counter_delta(after, after)
    assert unchanged["reads_single_share"] is None and report.read_mode_problem("single", unchanged) is None
    restarted = report.read_counter_delta(after, before)
    assert restarted["reads_quorum"] is None
    assert report.parse_read_counters("not json") is None
    assert report.parse_read_counters(json.dumps([{"service": "journal", "detail": ""}])) is None


UP_OUTPUT = """\
SQL endpoints (compute nodes):
  compute-az1    127.0.0.1:7700     qsql -h 127.0.0.1 -p 7700

PostgreSQL endpoints (psql, psycopg, SQLAlchemy; password: `quorumdb token --user admin`):
  compute-az1    127.0.0.1:7703         psql -h 127.0.0.1 -p 7703 -U admin -d postgres
  compute-az2    127.0.0.1:7704         psql -h 127.0.0.1 -p 7704 -U admin -d postgres
  compute-az3    127.0.0.1:7705         psql -h 127.0.0.1 -p 7705 -U admin -d postgres

data: /tmp/qdbpg/data   logs: /tmp/qdbpg/data/logs
QuorumDB is ready: 15 nodes up. Press Ctrl-C to stop.
"""


def test_pg_endpoints_come_from_up_output():
    assert peers.parse_pg_endpoints(UP_OUTPUT.splitlines()) == [("127.0.0.1", 7703), ("127.0.0.1", 7704),
                                                                ("127.0.0.1", 7705)]
    assert peers.parse_pg_endpoints(["SQL endpoints (compute nodes):", "  compute-az1    127.0.0.1:7700"]) == []


def test_cluster_commands(tmp_path):
    cluster = peers.QuorumDBCluster(tmp_path, 7700, read_mode="single", name="qdb-single")
    assert cluster.command[-4:] == ["--base-port", "7700", "--read-mode", "single"]
    assert cluster.config_path == tmp_path / "qdb-single" / "cluster.toml"
    assert "--read-mode" not in peers.QuorumDBCluster(tmp_path, 7700).command
    bench = cluster.bench_command(["quorumdb", "bench"], "tpcb", 8, 30, warmup_s=2, read_mode="single", rows=10000,
                                  scale=8, setup=False)
    assert " ".join(bench) == ("quorumdb bench --workload tpcb --clients 8 --duration 30 --base-port 7700 --json "
                               "--warmup 2 --read-mode single --rows 10000 --scale 8 --no-setup")


def test_same_scripts_compare_identical_pgbench_runs_and_refuse_different_scales():
    figures = {"postgres": {"tpcb_8": {"throughput_tps": 2000.0, "scale": 8, "server_cpu_ms_per_op": 0.5},
                            "select_only_64": {"throughput_tps": 40000.0, "scale": 8}},
               "quorumdb": {"same_quorum_tpcb_8": {"throughput_tps": 100.0, "scale": 8, "cluster_cpu_ms_per_op": 9.0},
                            "same_quorum_select_only_64": {"throughput_tps": 2000.0, "scale": 2}}}
    entries = {entry["script"]: entry for entry in report.same_script_ratios(figures)}
    assert set(entries) == {"tpcb-like", "simple-update", "select-only", "point-upsert"}
    assert entries["tpcb-like"]["ratio"] == 0.05 and entries["tpcb-like"]["quorumdb_cpu_ms_per_op"] == 9.0
    assert entries["select-only"]["ratio"] is None and "scale differs: 2 against 8" in entries["select-only"]["note"]
    assert entries["simple-update"]["ratio"] is None and entries["simple-update"]["note"] is None
    text = report.same_scripts_markdown(list(entries.values()))
    assert "| tpcb-like | 8 | 100.0 | 2,000.0 | 0.0500 | 9.00 | 0.500 |" in text
    assert "| select-only | 64 | 2,000.0 | 40,000.0 | n/a (scale differs: 2 against 8) |" in text


def test_point_upsert_script_and_builtin_arguments(tmp_path):
    args, needs_scale = pgbench_load.same_script_args("point-upsert", tmp_path)
    assert args[0] == "-f" and needs_scale
    text = (tmp_path / "point-upsert.sql").read_text()
    assert "ON CONFLICT (aid) DO UPDATE" in text and ":scale" in text
    assert pgbench_load.same_script_args("select-only", tmp_path) == (["-b", "select-only"], False)
    with pytest.raises(ValueError):
        pgbench_load.same_script_args("nonsense", tmp_path)
