"""adjudicator/heartbeat.py: when the leader heartbeats (closed timestamps on demand)."""
from __future__ import annotations

import math

from adjudicator.heartbeat import claim_needed, idle_interval_s, next_heartbeat_at

HB = 0.010
IDLE = 0.100
NEVER = -math.inf


def test_idle_interval_is_bounded_by_the_failover_timeout_and_the_heartbeat():
    assert idle_interval_s(10, 500, 100) == 0.1
    assert idle_interval_s(10, 200, 100) == 0.04   # a fifth of the failover timeout
    assert idle_interval_s(50, 100, 100) == 0.05   # never faster than heartbeat_ms
    assert idle_interval_s(10, 0, 100) == 0.1      # failover off: the idle setting


def test_without_demand_the_leader_heartbeats_slowly():
    assert next_heartbeat_at(5.0, NEVER, NEVER, 5.001, HB, IDLE) == 5.1


def test_with_demand_it_heartbeats_every_period():
    assert next_heartbeat_at(5.0, NEVER, demand_until=5.25, now=5.001, heartbeat_s=HB, idle_s=IDLE) == 5.01


def test_a_new_demand_after_idling_makes_a_heartbeat_due_at_once():
    last = 5.0
    now = 5.06  # 60 ms after the last heartbeat, a compute node starts reading
    assert next_heartbeat_at(last, NEVER, demand_until=now + 0.25, now=now, heartbeat_s=HB, idle_s=IDLE) <= now


def test_a_lapsed_demand_returns_to_the_idle_interval():
    assert next_heartbeat_at(5.0, NEVER, demand_until=5.004, now=5.005, heartbeat_s=HB, idle_s=IDLE) == 5.1


def test_a_batch_append_postpones_the_heartbeat_by_a_period():
    # Demand is live, but a batch was appended 2 ms ago: its closed timestamp is as fresh.
    assert next_heartbeat_at(5.0, 5.018, demand_until=6.0, now=5.02, heartbeat_s=HB, idle_s=IDLE) == 5.028
    # With no demand the idle interval still rules when it is later.
    assert next_heartbeat_at(5.0, 5.018, NEVER, now=5.02, heartbeat_s=HB, idle_s=IDLE) == 5.1


def test_a_read_demand_needs_a_claim_only_beyond_what_is_claimed():
    assert claim_needed(read_ts=1_000, claimed_ts=999)
    assert not claim_needed(read_ts=1_000, claimed_ts=1_000)  # a heartbeat or a batch's commit_ts covers it
    assert not claim_needed(read_ts=0, claimed_ts=0)          # no demand in the message
