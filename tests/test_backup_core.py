"""storage_node/backup_core.py: who uploads and what, decided without I/O."""
from __future__ import annotations

from storage_node import backup_core as core
from storage_node.backup_core import CopyView, StoreView

S = 1_000_000_000


def store(has_base=True, base=0, base_bytes=100, uploaded=0, restorable=0, log_bytes=0) -> StoreView:
    return StoreView(has_base, base, base_bytes, uploaded, restorable, log_bytes)


def copy(applied=0, closed=0, first=0, last=0, ckpt=0) -> CopyView:
    return CopyView(applied, closed, first, last, ckpt)


def test_rank_zero_always_uploads_and_others_wait_rank_times_takeover():
    names = ["s0", "s1", "s2"]
    assert [core.rank_of(names, n) for n in names] == [0, 1, 2]
    zero, one, two = (core.Takeover(n, core.rank_of(names, n), now_s=0.0) for n in names)
    assert zero.active(0.0, has_work=False)
    assert not one.active(core.TAKEOVER_S - 0.01, has_work=True)
    assert one.active(core.TAKEOVER_S, has_work=True)
    assert not one.active(100.0, has_work=False)  # nothing to ship: stays a standby
    assert not two.active(core.TAKEOVER_S, has_work=True)
    assert two.active(2 * core.TAKEOVER_S, has_work=True)


def test_progress_by_another_copy_resets_the_wait_but_own_manifests_do_not():
    one = core.Takeover("s1", 1, now_s=0.0)
    one.observe("m1", "s0", now_s=2.0)
    assert not one.active(2.0 + core.TAKEOVER_S - 0.1, True)
    one.observe("m1", "s0", now_s=4.0)  # the same key again: no progress
    assert one.active(2.0 + core.TAKEOVER_S, True)
    one.observe("m2", "s1", now_s=6.0)  # its own manifest: still the uploader
    assert one.active(6.0, True)
    one.observe("m3", "s0", now_s=7.0)  # rank 0 is back: rank 1 stands down at once
    assert not one.active(7.5, True)


def test_new_cluster_gets_the_genesis_base_a_restored_one_its_checkpoint():
    assert core.next_step(copy(applied=5, first=1, last=5), store(has_base=False), 10, 0, 0, 0) == core.GenesisBase()
    assert core.next_step(copy(), store(has_base=False), 10, 0, 0, 0) == core.GenesisBase()
    restored = copy(applied=500, first=501, last=0, ckpt=500)
    restored = CopyView(500, 7, 0, 0, 500)  # log empty, checkpoint 500
    assert core.next_step(restored, store(has_base=False), 10, 0, 0, 0) == core.CheckpointBase(500)
    stuck = copy(applied=900, first=700, last=900, ckpt=500)
    assert isinstance(core.next_step(stuck, store(has_base=False), 10, 0, 0, 0), core.Idle)


def test_ships_the_log_after_the_uploaded_index_in_batches():
    holder = copy(applied=120, closed=99 * S, first=50, last=120)
    step = core.next_step(holder, store(uploaded=100), now_s=10.0, last_ship_s=0.0, last_manifest_s=0.0, stalled_s=0)
    assert step == core.ShipLog(101, 120, 99 * S)
    batching = core.next_step(holder, store(uploaded=100), now_s=10.0, last_ship_s=9.8, last_manifest_s=0, stalled_s=0)
    assert batching == core.Idle("batching")


def test_a_copy_without_the_next_index_ships_nothing_until_everyone_had_a_turn():
    repaired = copy(applied=300, first=251, last=300, ckpt=250)
    step = core.next_step(repaired, store(uploaded=100), 10.0, 0.0, 0.0, stalled_s=core.TAKEOVER_S)
    assert isinstance(step, core.Idle) and "another copy" in step.reason
    step = core.next_step(repaired, store(uploaded=100), 10.0, 0.0, 0.0, stalled_s=core.REBASE_AFTER_S)
    assert step == core.CheckpointBase(250, rebase=True)


def test_idle_cluster_refreshes_the_manifest_when_closed_time_moved():
    idle = copy(applied=100, closed=50 * S, first=1, last=100)
    state = store(uploaded=100, restorable=49 * S)
    assert core.next_step(idle, state, 10.0, 0, last_manifest_s=9.5, stalled_s=0) == core.Idle("up to date")
    assert core.next_step(idle, state, 10.0, 0, last_manifest_s=9.0, stalled_s=0) == core.RefreshManifest(100, 50 * S)
    barely = copy(applied=100, closed=49 * S + core.IDLE_ADVANCE_NS - 1, first=1, last=100)
    assert core.next_step(barely, state, 10.0, 0, 0, 0) == core.Idle("up to date")
    assert not core.has_work(barely, state)
    assert core.has_work(idle, state)


def test_new_base_once_enough_log_follows_the_newest_base():
    holder = copy(applied=1000, first=400, last=1000, ckpt=900)
    few = store(uploaded=1000, base=0, base_bytes=10, log_bytes=core.BASE_LOG_BYTES_MIN - 1)
    assert core.next_step(holder, few, 10, 0, 10, 0) == core.Idle("up to date")
    many = store(uploaded=1000, base=0, base_bytes=10, log_bytes=core.BASE_LOG_BYTES_MIN)
    assert core.next_step(holder, many, 10, 0, 10, 0) == core.CheckpointBase(900)
    big_base = store(uploaded=1000, base=0, base_bytes=2 * core.BASE_LOG_BYTES_MIN, log_bytes=core.BASE_LOG_BYTES_MIN)
    assert core.next_step(holder, big_base, 10, 0, 10, 0) == core.Idle("up to date")
    not_uploaded = store(uploaded=800, base=0, base_bytes=10, log_bytes=core.BASE_LOG_BYTES_MIN)
    assert isinstance(core.next_step(holder, not_uploaded, 10, 0, 10, 0), core.ShipLog)


def test_restorable_ts_is_closed_ts_only_when_everything_was_shipped():
    assert core.restorable_ts_after(120, 120, closed_ts=99, last_shipped_ts=90) == 99
    assert core.restorable_ts_after(110, 120, closed_ts=99, last_shipped_ts=80) == 80


def test_split_for_objects_keeps_each_object_under_the_cap_and_everything_in_order():
    assert core.split_for_objects([4, 4, 4, 4], object_bytes_max=8) == [(0, 2), (2, 4)]
    assert core.split_for_objects([20, 1], object_bytes_max=8) == [(0, 1), (1, 2)]  # one large entry alone
    assert core.split_for_objects([], object_bytes_max=8) == []


def test_drop_gate_never_passes_the_uploaded_index():
    assert core.drop_gate(500, None) == 500
    assert core.drop_gate(500, 300) == 300
    assert core.drop_gate(500, 900) == 500
    assert core.drop_gate(500, 0) == 0


def test_backoff_grows_and_is_bounded():
    assert core.backoff_s(0) == 0
    assert core.backoff_s(1) < core.backoff_s(3) <= core.backoff_s(100) == core.RETRY_BACKOFF_S[-1]


def test_a_large_put_gets_time_for_its_bytes():
    assert core.call_timeout_s(0) == core.STORE_CALL_TIMEOUT_S
    assert core.call_timeout_s(10 * core.STORE_BYTES_PER_S_MIN) == core.STORE_CALL_TIMEOUT_S + 10
