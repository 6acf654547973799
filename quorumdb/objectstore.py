"""Object stores for the continuous backup: a local directory, or S3 through boto3.

Storage copies ship their checkpoints and log ranges here; `quorumdb restore`, `snapshot` and
`backup status` read them back. Both backends give the same object-store semantics, which is
all the backup relies on:

  * `put(key, data)` is immutable and atomic: an object appears whole or not at all, and a key
    once written never changes. Putting the same bytes again is a no-op (an upload retried
    after a crash, or two copies racing for the same range); other bytes raise ObjectExists.
  * `get(key)` returns exactly what was put, verified against the sha256 recorded at put time
    (ObjectCorrupt otherwise), or raises ObjectMissing.
  * `list(prefix, start_after)` returns the objects whose key starts with prefix, in key order.
  * `delete(key)` removes an object (a missing one is not an error).

Every call that fails to reach the store raises StoreUnreachable naming the location. Keys are
'/'-separated paths of [A-Za-z0-9._-] parts (`backup_layout` builds them).

LocalStore keeps each object as one file `ROOT/<key>`: an 8-byte magic, the sha256 of the data
(32 bytes), then the data. A put writes a temporary file beside it, fsyncs it, and *links* it to
the final name (link fails if the name exists: immutability without a lock), then fsyncs the
directory. Temporary files start with '.' and are never listed; leftovers of a crash are
removed by `sweep_temporary`.
"""
from __future__ import annotations

import os
import pathlib
import secrets

from quorumdb.durable import fsync_dir
from quorumdb.objectstore_api import (  # noqa: F401 - the store's whole interface, from one place
    ObjectCorrupt,
    ObjectExists,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    ObjectStoreError,
    StoreUnreachable,
    check_key,
    sha256,
)

MAGIC = b"QDBOBJ01"
_HEADER_BYTES = len(MAGIC) + 32


class LocalStore:
    """A directory with object-store semantics (see the module docstring)."""

    def __init__(self, root: pathlib.Path | str):
        self.root = pathlib.Path(root)
        self.location = str(self.root)

    def _path(self, key: str) -> pathlib.Path:
        return self.root / check_key(key)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StoreUnreachable(f"backup directory {self.location} is not writable")
        except OSError as error:
            raise StoreUnreachable(f"backup directory {self.location}: {error.strerror or error}") from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        digest = sha256(data)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            with open(tmp, "wb") as f:
                f.write(MAGIC + digest)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                existing = self._read(path, key)
                if existing != data:
                    raise ObjectExists(f"{self.location}: object {key} exists with other contents") from None
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(path.parent)
        except ObjectStoreError:
            raise
        except OSError as error:
            raise StoreUnreachable(f"backup directory {self.location}: cannot write {key}: "
                                   f"{error.strerror or error}") from None

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self._read(path, key)
        except FileNotFoundError:
            raise ObjectMissing(f"{self.location}: object {key} is missing") from None
        except OSError as error:
            raise StoreUnreachable(f"backup directory {self.location}: cannot read {key}: "
                                   f"{error.strerror or error}") from None

    def _read(self, path: pathlib.Path, key: str) -> bytes:
        raw = path.read_bytes()
        if len(raw) < _HEADER_BYTES or raw[:len(MAGIC)] != MAGIC:
            raise ObjectCorrupt(f"{self.location}: object {key} has no valid header")
        data = raw[_HEADER_BYTES:]
        if sha256(data) != raw[len(MAGIC):_HEADER_BYTES]:
            raise ObjectCorrupt(f"{self.location}: object {key} fails its sha256 check")
        return data

    def list(self, prefix: str = "", start_after: str = "") -> list[ObjectInfo]:
        # Walk only the directory the prefix points into (keys are paths).
        directory, _, name_prefix = prefix.rpartition("/")
        base = self.root / directory if directory else self.root
        found: list[ObjectInfo] = []
        try:
            if not base.is_dir():
                return []
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                relative_dir = pathlib.Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith("."):
                        continue
                    key = name if relative_dir == "." else f"{relative_dir}/{name}"
                    if not key.startswith(prefix) or key <= start_after:
                        continue
                    try:
                        size = os.stat(os.path.join(dirpath, name)).st_size - _HEADER_BYTES
                    except FileNotFoundError:
                        # Deleted between the walk and the stat (retention runs while
                        # others list): an object that is gone is simply not listed.
                        continue
                    found.append(ObjectInfo(key, max(size, 0)))
        except OSError as error:
            raise StoreUnreachable(f"backup directory {self.location}: cannot list {prefix!r}: "
                                   f"{error.strerror or error}") from None
        del name_prefix  # the key filter above covers it
        found.sort(key=lambda info: info.key)
        return found

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise StoreUnreachable(f"backup directory {self.location}: cannot delete {key}: "
                                   f"{error.strerror or error}") from None

    def sweep_temporary(self) -> int:
        """Remove temporary files a crash left behind. Returns how many."""
        removed = 0
        for path in self.root.rglob(".*.tmp"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed


def open_store(location: str) -> ObjectStore:
    """`s3://bucket/prefix` -> S3Store (quorumdb/s3store.py), anything else -> LocalStore."""
    if location.startswith("s3://"):
        from quorumdb.s3store import S3Store

        return S3Store.from_url(location)
    return LocalStore(location)
