"""What every object store backend offers and raises (quorumdb/objectstore.py has the semantics,
LocalStore and open_store; quorumdb/s3store.py the S3 backend). Apart so that both backends import
it without importing each other."""
from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Protocol

_KEY_PART = re.compile(r"^[A-Za-z0-9._-]+$")


class ObjectStoreError(Exception):
    """Base of every object store error; the message names the store and the key."""


class ObjectMissing(ObjectStoreError):
    pass


class ObjectCorrupt(ObjectStoreError):
    pass


class ObjectExists(ObjectStoreError):
    pass


class StoreUnreachable(ObjectStoreError):
    pass


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int  # bytes of data (what get returns)


class ObjectStore(Protocol):
    location: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str = "", start_after: str = "") -> list[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def check(self) -> None:
        """Raise StoreUnreachable unless the store answers (and, for S3, the bucket exists)."""


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(not _KEY_PART.match(part) or part in (".", "..") for part in parts):
        raise ValueError(f"bad object key {key!r}")
    return key


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
