"""A compute node never hands out a sequence value from a range reserved before a backtrack.

A backtrack rewinds the sequences' stored state with everything else, so a range another node
reserved after T is handed out again by the next reservation; a node still holding its own old
range would then repeat values. The backtrack moves the catalog version to a new backtrack
generation (keys.version_after_backtrack), and a node drops its ranges when its schema cache sees
the generation change; ordinary DDL (version + 1) keeps them, so serial columns have no gaps."""
from __future__ import annotations

from compute_node.sessions.session import Session
from compute_node.sql.engine import Engine
from quorumdb import keys
from tests.sql_memory_backend import MemoryBackend
from tests.test_sql_statements import ok, rows


def backtrack(backend: MemoryBackend, to_ts: int) -> None:
    """The storage rule (storage_node/core.py) on the in-memory backend."""
    b_ts = backend.now_ts()
    for key, versions in backend.versions.items():
        if key != keys.SCHEMA_VERSION_KEY and versions[-1][0] > to_ts:
            versions.append((b_ts, backend._read(key, to_ts)))
    newest = backend.versions.get(keys.SCHEMA_VERSION_KEY, [(0, None)])[-1][1]
    backend.versions.setdefault(keys.SCHEMA_VERSION_KEY, []).append(
        (b_ts, keys.encode_version(keys.version_after_backtrack(keys.decode_version(newest)))))


async def test_ranges_reserved_before_a_backtrack_are_not_used_after_it():
    backend = MemoryBackend()
    first, second = Engine(), Engine()
    a = Session(backend, "a", engine=first)
    b = Session(backend, "b", engine=second)
    await ok(a, "CREATE SEQUENCE s")
    before = [(await rows(a, "SELECT nextval('s')"))[0][0] for _ in range(3)]  # a's range, reserved before T
    to_ts = backend.now_ts()
    for _ in range(3):
        await rows(b, "SELECT nextval('s')")  # b's range, reserved after T: rewound with the sequence's state
    assert first.sequences.ranges and second.sequences.ranges
    backtrack(backend, to_ts)
    handed_out = []
    for _ in range(40):
        handed_out += [(await rows(a, "SELECT nextval('s')"))[0][0], (await rows(b, "SELECT nextval('s')"))[0][0]]
    assert len(set(handed_out)) == len(handed_out), f"a value handed out twice after the backtrack: {handed_out}"
    assert not set(handed_out) & set(before), "a value of a range reserved before the backtrack"
    assert first.sequences.forgotten >= 1 and second.sequences.forgotten >= 1


def test_ordinary_ddl_keeps_the_ranges_and_a_backtrack_drops_them():
    from compute_node.sql.sequences import NodeSequences

    node = NodeSequences()
    node.catalog_version_changed(7)  # the first version seen, no ranges yet: nothing to drop
    node.ranges[1] = object()
    node.catalog_version_changed(8)  # DDL
    assert 1 in node.ranges and node.forgotten == 0
    node.catalog_version_changed(keys.version_after_backtrack(8))
    assert not node.ranges and node.forgotten == 1
