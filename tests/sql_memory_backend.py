"""An in-memory Backend for SQL and session tests (a test double, not the real storage).

Versions per key with their commit_ts; reads see the newest version <= ts; commit
applies first-committer-wins: a write or lock key committed by someone else after the
transaction's start_ts is a conflict (40001). The clock is a counter the test may move.
"""
from __future__ import annotations


from quorumdb import errors
from quorumdb.errors import SqlError


class MemoryBackend:
    def __init__(self, start_ns: int = 1_000_000, unique_txn_ids: bool = False):
        # unique_txn_ids: a txn_id committed twice is a bug (the real adjudicator would answer the
        # second with the first's outcome); tests whose sessions all have distinct ids turn it on.
        self.unique_txn_ids = unique_txn_ids
        self.txn_ids: set[str] = set()
        self.now_ns = start_ns
        self.versions: dict[bytes, list[tuple[int, bytes | None]]] = {}
        self.commits: list[tuple[int, list[tuple[bytes, bytes | None]], list[bytes], str]] = []
        self.scan_calls = 0
        self.get_calls = 0
        self.snapshots = 0  # start_ts calls: each asks the leader to close a timestamp
        self.fail_next_commit: SqlError | None = None
        self.private_commits = 0  # commits flagged private_keyspace (bulk batches flushed ahead)

    def advance(self, ns: int) -> None:
        self.now_ns += ns

    def start_ts(self) -> int:
        self.now_ns += 1
        self.snapshots += 1
        return self.now_ns

    def now_ts(self) -> int:
        self.now_ns += 1
        return self.now_ns

    def _read(self, key: bytes, ts: int) -> bytes | None:
        value = None
        for commit_ts, version in self.versions.get(key, []):
            if commit_ts <= ts:
                value = version
        return value

    async def get_many(self, keys: list[bytes], ts: int) -> dict[bytes, bytes | None]:
        self.get_calls += 1
        return {key: self._read(key, ts) for key in keys}

    async def scan(self, start: bytes, end: bytes | None, ts: int, limit: int):
        self.scan_calls += 1
        assert limit > 0
        rows = []
        for row in self.visible(start, end, ts):
            if len(rows) == limit:
                return rows, True
            rows.append(row)
        return rows, False

    def visible(self, start: bytes, end: bytes | None, ts: int):
        """(key, value) of each row in [start, end) that a read at `ts` sees, in key order."""
        for key in sorted(self.versions):
            if key < start or (end is not None and key >= end):
                continue
            value = self._read(key, ts)
            if value is not None:
                yield key, value

    async def commit(self, start_ts, writes, lock_keys, txn_id, private_keyspace=False) -> int:
        if private_keyspace:
            self.private_commits += 1
        if self.fail_next_commit is not None:
            error, self.fail_next_commit = self.fail_next_commit, None
            raise error
        if self.unique_txn_ids and txn_id:
            assert txn_id not in self.txn_ids, f"txn_id {txn_id} committed twice"
            self.txn_ids.add(txn_id)
        for key in [k for k, _ in writes] + list(lock_keys):
            versions = self.versions.get(key, [])
            if versions and versions[-1][0] > start_ts:
                raise errors.conflict(key.hex())
        commit_ts = self.now_ts()  # the adjudicator's clock: no snapshot
        for key, value in writes:
            self.versions.setdefault(key, []).append((commit_ts, value))
        self.commits.append((commit_ts, list(writes), list(lock_keys), txn_id))
        return commit_ts

    # --- test helpers ---
    def live_keys(self) -> list[bytes]:
        return [k for k in sorted(self.versions) if self._read(k, self.now_ns) is not None]
