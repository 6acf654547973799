"""Pure parts of bench/compare: parsing pgbench and `quorumdb bench --json`, percentiles, ratios,
the markdown tables, and the HTTP/1.1 framing of the etcd load generator. No processes, no timing."""
import base64
import json

import pytest

from bench import compare_main, etcd_load, report

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


def test_parse_pgbench_15():
    figures = report.parse_pgbench(PGBENCH_15)
    assert figures["throughput_tps"] == pytest.approx(2496.118264)
    assert figures["latency_ms_avg"] == pytest.approx(3.205)
    assert figures["transactions"] == 24960
    assert figures["errors"] == 3


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


def _figures(qdb_write64=3000.0, etcd64=2500.0, qdb_p50=4.0, etcd_p50=2.0):
    return {
        "etcd": {"put_1": {"throughput_tps": 400.0, "latency_ms_p50": etcd_p50},
                 "put_64": {"throughput_tps": etcd64, "latency_ms_p50": 20.0}},
        "postgres": {"tpcb_8": {"throughput_tps": 2500.0, "latency_ms_avg": 3.2},
                     "select_only_64": {"throughput_tps": 33000.0}},
        "quorumdb": {"point_write_1": {"throughput_tps": 250.0, "latency_ms_p50": qdb_p50},
                     "point_write_64": {"throughput_tps": qdb_write64, "aborts": 0, "errors": 0},
                     "tpcb_8": {"throughput_tps": 1000.0, "aborts": 12},
                     "point_read_64": {"throughput_tps": 11000.0}},
    }


def test_ratios_and_targets():
    by_key = {entry["key"]: entry for entry in report.compute_ratios(_figures())}
    assert by_key["point_write_64_vs_etcd"]["value"] == pytest.approx(1.2)
    assert by_key["point_write_64_vs_etcd"]["meets_target"] is True
    assert by_key["tpcb_8_vs_pgbench"]["value"] == pytest.approx(0.4)
    assert by_key["tpcb_8_vs_pgbench"]["meets_target"] is False
    assert by_key["point_read_64_vs_pgbench_select"]["value"] == pytest.approx(0.333, abs=1e-3)
    assert by_key["point_read_64_vs_pgbench_select"]["meets_target"] is True  # 11,000 is exactly a third
    # latency: lower is better; exactly 2x meets the target, more does not
    assert by_key["point_write_1_p50_vs_etcd"]["value"] == pytest.approx(2.0)
    assert by_key["point_write_1_p50_vs_etcd"]["meets_target"] is True
    worse = {e["key"]: e for e in report.compute_ratios(_figures(qdb_p50=5.0))}
    assert worse["point_write_1_p50_vs_etcd"]["meets_target"] is False


def test_missing_or_zero_figures_give_no_ratio():
    figures = _figures(etcd64=0.0)
    del figures["quorumdb"]["tpcb_8"]
    by_key = {entry["key"]: entry for entry in report.compute_ratios(figures)}
    assert by_key["point_write_64_vs_etcd"]["value"] is None
    assert by_key["point_write_64_vs_etcd"]["meets_target"] is None
    assert by_key["tpcb_8_vs_pgbench"]["value"] is None
    assert report.compute_ratios({})[0]["value"] is None
    assert report.lookup({"a": {"b": True}}, "a.b") is None  # a flag is not a figure


def test_markdown_report_has_every_row_and_says_na():
    figures = _figures()
    del figures["etcd"]
    result = {"date": "2026-11-22 10:00 UTC", "command": "bench/compare --duration 10", "duration_s": 10.0,
              "machine": {"nproc": 2, "cpu_model": "X", "memory_gib": 8.0, "kernel": "6.1", "python": "3.11.7"},
              "versions": {"etcd": None, "postgres": "15.18", "quorumdb": "abc123"},
              "load_average_1m": {"start": 0.3}, "figures": figures, "ratios": report.compute_ratios(figures)}
    text = report.markdown_report(result)
    assert "`bench/compare --duration 10`" in text
    assert "PostgreSQL 15.18" in text and "etcd n/a" in text
    assert "| QuorumDB | point-write | 64 | 3,000.0 |" in text
    assert "| PostgreSQL | pgbench TPC-B | 8 | 2,500.0 | avg 3.20 |" in text
    assert "| etcd 3 members | put (v3 JSON gateway) | 64 | n/a |" in text
    assert text.count("\n| ") == len(report.FIGURE_ROWS) + len(report.RATIOS) + 4  # + 2 heads, 2 rules
    assert "| QuorumDB tpcb / pgbench TPC-B, 8 clients (tps) | 0.40 | >= 0.50 | no |" in text


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
    assert compare_main.parse_args([]).duration == compare_main.DEFAULT_DURATION_S
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
