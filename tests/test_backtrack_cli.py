"""The pure parts of `quorumdb backtrack` and the backtrack window line of `quorumdb status`."""
from __future__ import annotations

import pytest

from quorumdb import timefmt
from tools import cli
from quorumdb.config import default_nodes
from tools.dr import backtrack
from quorumdb.pb import common_pb2

NOW = timefmt.parse_utc("2026-12-01T13:40:00.250Z")
S = 1_000_000_000


def test_target_time_is_parsed_and_bad_ones_are_named():
    assert backtrack.parse_target("2026-12-01T13:39:00.000Z", NOW) == NOW - 60 * S - 250_000_000
    with pytest.raises(backtrack.BacktrackError, match="in the future"):
        backtrack.parse_target("2026-12-01T13:41:00.000Z", NOW)
    with pytest.raises(backtrack.BacktrackError, match="bad time"):
        backtrack.parse_target("13:40 yesterday", NOW)
    with pytest.raises(backtrack.BacktrackError, match="no zone"):
        backtrack.parse_target("2026-12-01T13:39:00.000", NOW)


def test_a_time_before_the_window_is_refused_naming_the_window():
    start = NOW - 3_600 * S
    backtrack.check_in_window(start, start, NOW)
    with pytest.raises(backtrack.BacktrackError) as refused:
        backtrack.check_in_window(start - 1, start, NOW)
    assert "outside the backtrack window" in str(refused.value)
    assert "2026-12-01T12:40:00.250Z" in str(refused.value) and "1h 00m" in str(refused.value)
    assert "nothing was changed" in str(refused.value)


def test_window_start_is_the_most_caught_up_copys_and_needs_one_copy():
    statuses = [common_pb2.NodeStatus(backtrack_window_start_ts=5), None, common_pb2.NodeStatus(backtrack_window_start_ts=9)]
    assert backtrack.window_start(statuses) == 9
    with pytest.raises(backtrack.BacktrackError, match="no storage copy answered"):
        backtrack.window_start([None, None])


def test_copy_outcome_matches_only_its_own_entry():
    status = common_pb2.NodeStatus(applied_index=12, backtrack="index 12 to 2026-12-01T13:00:00.000Z: rewound 3 keys")
    assert backtrack.copy_outcome("s", status, 12).line.endswith("rewound 3 keys")
    assert backtrack.copy_outcome("s", status, 1).line == "", "index 1 is not index 12"
    refused = common_pb2.NodeStatus(applied_index=12, backtrack="index 12 to x: refused, outside the window starting y")
    assert backtrack.copy_outcome("s", refused, 12).refused
    assert not backtrack.copy_outcome("s", None, 12).applied


def test_status_shows_the_configured_and_the_reached_window():
    nodes = default_nodes(20_000, "127.0.0.1")
    statuses = []
    for node in nodes:
        status = common_pb2.NodeStatus(name=node.name, service=node.service, health="ok")
        if node.service == "storage":
            status.backtrack_window_start_ts = NOW - 2 * 3_600 * S
            status.detail = "keys=1 backtrack_window_s=86400 backtrack_budget_bytes=67108864 window_bytes=10"
        statuses.append(status)
    table = cli.status_table(nodes, statuses, now_ns=NOW)
    lines = table.splitlines()
    assert lines[-1] == f"({len(nodes)} of {len(nodes)} nodes up)"
    assert lines[-2] == ("backtrack window: configured 1d 0h, budget 64 MiB per copy; "
                         "reached 2h 00m (from 2026-12-01T11:40:00.250Z)")
