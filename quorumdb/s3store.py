"""The object store on S3 (or any S3-compatible server), through boto3.

Same semantics as LocalStore (quorumdb/objectstore.py); how each one is kept on S3:

  * Immutable put: PutObject with `If-None-Match: *` (S3 conditional writes), so the server
    refuses to replace an existing key; no lock, no read-modify-write race between two copies
    uploading the same range. On 412 the existing object is read back (verified) and compared:
    the same bytes are a no-op, other bytes raise ObjectExists. A 409 (another put of that key
    still in flight) is retried a bounded number of times.
  * Atomic: S3 makes an object visible only once the whole PutObject has succeeded.
  * Checksummed: the data's sha256 goes into the object's user metadata (`x-amz-meta-sha256`),
    which `get` checks against the bytes it received, and into `x-amz-checksum-sha256`, which
    makes the server refuse an upload damaged on the way.
  * list: ListObjectsV2 pages in key order (S3 lists in UTF-8 byte order, which is Python's
    str order for our ASCII keys), `StartAfter` for start_after.

Where: `s3://bucket/prefix` puts key K at `prefix/K` in the bucket. The endpoint is AWS unless
QUORUMDB_S3_ENDPOINT, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL names another (an S3-compatible
server such as MinIO or moto; those are addressed path-style, `endpoint/bucket/key`, which every
such server accepts). Region and credentials come from boto3's usual chain (AWS_REGION,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/config, instance roles).

Every call has a deadline: connect and read timeouts and a bounded number of attempts
(quorumdb/limits.py S3_*). Whatever keeps a call from completing (the endpoint down, the bucket
missing, the credentials refused) raises StoreUnreachable with a message naming the location
and the endpoint.
"""
from __future__ import annotations

import base64
import os
import re
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from quorumdb import limits
from quorumdb.objectstore_api import (
    ObjectCorrupt,
    ObjectExists,
    ObjectInfo,
    ObjectMissing,
    StoreUnreachable,
    check_key,
    sha256,
)

# The endpoint override QuorumDB reads first; boto3 itself reads the AWS_* ones.
ENDPOINT_ENV = "QUORUMDB_S3_ENDPOINT"
_ENDPOINT_ENVS = (ENDPOINT_ENV, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# User metadata key holding the hex sha256 of the data.
SHA256_METADATA = "sha256"
# S3's bucket naming rules (lowercase letters, digits, '.', '-'; 3 to 63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Error codes meaning the credentials were refused (or lack the permission).
_REFUSED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                            "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "403"})


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); ValueError naming what is wrong."""
    if not url.startswith("s3://"):
        raise ValueError(f"bad S3 location {url!r}: must start with s3://")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"bad S3 location {url!r}: bucket name {bucket!r} must be 3 to 63 lowercase "
                         "letters, digits, '.' or '-', starting and ending with a letter or digit")
    prefix = prefix.rstrip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise ValueError(f"bad S3 location {url!r}: prefix {prefix!r} must be '/'-separated parts of "
                             "letters, digits, '.', '_' or '-'") from None
        prefix += "/"
    return bucket, prefix


def configured_endpoint() -> str | None:
    """The endpoint an environment variable names, or None (AWS itself, or ~/.aws/config's)."""
    for name in _ENDPOINT_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class S3Store:
    """An S3 bucket and prefix with object-store semantics (see the module docstring)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None):
        _, normalized_prefix = parse_url(f"s3://{bucket}/{prefix}")  # validates both
        # boto3 takes ~0.15 s to import: only processes that use S3 pay for it.
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = normalized_prefix
        self.location = f"s3://{bucket}/{self.prefix}".rstrip("/")
        endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV, "").strip() or None
        custom_endpoint = endpoint_url is not None or configured_endpoint() is not None
        config = Config(
            connect_timeout=limits.S3_CONNECT_TIMEOUT_S,
            read_timeout=limits.S3_READ_TIMEOUT_S,
            retries={"max_attempts": limits.S3_ATTEMPTS_MAX, "mode": "standard"},
            # Virtual-host addressing (bucket.endpoint) needs DNS for every bucket, which a
            # local server on 127.0.0.1 or localhost does not have.
            s3={"addressing_style": "path" if custom_endpoint else "auto"},
        )
        session = boto3.session.Session()
        region = session.region_name or ("us-east-1" if custom_endpoint else None)
        self._client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.endpoint = self._client.meta.endpoint_url

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> "S3Store":
        bucket, prefix = parse_url(url)
        return cls(bucket, prefix, endpoint_url=endpoint_url)

    def __repr__(self) -> str:
        return f"S3Store({self.location!r}, endpoint={self.endpoint!r})"

    # --- the ObjectStore protocol ---------------------------------------------------------
    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise self._unreachable(error, "reach the bucket") from None

    def put(self, key: str, data: bytes) -> None:
        name = self._name(key)
        digest = sha256(data)
        for attempt in range(limits.S3_PUT_CONFLICT_RETRIES + 1):
            refused = self._put_if_absent(key, name, data, digest)
            if refused is None:
                return
            if refused == 409:
                # Another put of this key is in flight; once it ends, ours gets 412 or succeeds.
                time.sleep(0.05 * (attempt + 1))
                continue
            try:  # 412: the key exists. The same bytes (verified) make this put a no-op.
                existing = self.get(key)
            except ObjectMissing:
                continue  # deleted in between: put again
            if existing != data:
                raise ObjectExists(f"{self.location}: object {key} exists with other contents")
            return
        raise StoreUnreachable(f"{self.location}: put {key}: other puts of the same key kept conflicting "
                               f"({limits.S3_PUT_CONFLICT_RETRIES + 1} attempts)")

    def _put_if_absent(self, key: str, name: str, data: bytes, digest: bytes) -> int | None:
        """None once written; 412 when the key exists; 409 while another put of it is in flight."""
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=name, Body=data, IfNoneMatch="*",
                Metadata={SHA256_METADATA: digest.hex()},
                ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
            )
            return None
        except ClientError as error:
            status = _status(error)
            if status in (409, 412):
                return status
            if _code(error) in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
                raise ObjectCorrupt(f"{self.location}: the server refused object {key}: its bytes "
                                    f"arrived damaged ({_code(error)})") from None
            raise self._unreachable(error, f"put {key}") from None
        except BotoCoreError as error:
            raise self._unreachable(error, f"put {key}") from None

    def get(self, key: str) -> bytes:
        name = self._name(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=name)
            data = response["Body"].read()
        except ClientError as error:
            if _status(error) == 404 and _code(error) != "NoSuchBucket":
                raise ObjectMissing(f"{self.location}: object {key} is missing") from None
            raise self._unreachable(error, f"get {key}") from None
        except BotoCoreError as error:
            raise self._unreachable(error, f"get {key}") from None
        recorded = response.get("Metadata", {}).get(SHA256_METADATA)
        if recorded is None:
            raise ObjectCorrupt(f"{self.location}: object {key} has no sha256 metadata "
                                "(not written through the object store)")
        if sha256(data).hex() != recorded.lower():
            raise ObjectCorrupt(f"{self.location}: object {key} fails its sha256 check")
        return data

    def list(self, prefix: str = "", start_after: str = "") -> list[ObjectInfo]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix,
                                  "MaxKeys": limits.S3_LIST_PAGE_KEYS}
        if start_after:
            params["StartAfter"] = self.prefix + start_after
        found: list[ObjectInfo] = []
        while True:  # one page per request; ends when the listing is not truncated
            try:
                page = self._client.list_objects_v2(**params)
            except (ClientError, BotoCoreError) as error:
                raise self._unreachable(error, f"list {prefix!r}") from None
            for item in page.get("Contents", ()):
                key = item["Key"][len(self.prefix):]
                # "folder/" placeholders that consoles create are not objects of ours.
                if key and not key.endswith("/"):
                    found.append(ObjectInfo(key, int(item["Size"])))
            if not page.get("IsTruncated"):
                return found
            token = page.get("NextContinuationToken")
            assert token, "a truncated ListObjectsV2 page carries a continuation token"
            params["ContinuationToken"] = token

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if _status(error) == 404 and _code(error) != "NoSuchBucket":
                return
            raise self._unreachable(error, f"delete {key}") from None
        except BotoCoreError as error:
            raise self._unreachable(error, f"delete {key}") from None

    # --- helpers ----------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _unreachable(self, error: Exception, action: str) -> StoreUnreachable:
        where = f"{self.location} (endpoint {self.endpoint})"
        if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
            return StoreUnreachable(f"{where}: cannot {action}: no usable AWS credentials ({error}); set "
                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        if isinstance(error, ClientError):
            code, status = _code(error), _status(error)
            if code == "NoSuchBucket" or (code == "404" and action == "reach the bucket"):
                return StoreUnreachable(f"{where}: bucket {self.bucket} does not exist")
            if code in _REFUSED_CODES or status == 403:
                return StoreUnreachable(f"{where}: cannot {action}: credentials refused ({code}: "
                                        f"{_message(error)})")
            return StoreUnreachable(f"{where}: cannot {action}: {code} {_message(error)}".rstrip())
        return StoreUnreachable(f"{where}: cannot {action}: {error}")


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", ""))
