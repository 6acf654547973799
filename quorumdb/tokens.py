"""Short-lived signed auth tokens, as Aurora DSQL's: the password of a PostgreSQL connection.

Theory of operation
-------------------
A cluster has one secret (32 random bytes) kept in `<data_dir>/token_secret`, file mode 0600,
created on first use (by the first compute node that starts, or by `quorumdb token`) with an
atomic link so concurrent creators agree on one secret. A token names a user and an expiry:

    qdb1.<expiry unix seconds>.<base64url(HMAC-SHA256(secret, "quorumdb-token-v1\\0" user "\\0" expiry))>

Anyone holding the secret can make a token for any user; nobody without it can forge one, and a
token for one user is worthless for another. Verification recomputes the MAC and compares in
constant time (hmac.compare_digest).

Expiries lie on a grid. SCRAM-SHA-256 (what psql uses by default) never shows the server the
password, so the server must guess it: it computes the expected token for every expiry a valid
token could have and checks the client's SCRAM proof against each (compute_node/pgwire/scram.py).
To keep that set small, a token's expiry is rounded *up* to a grid whose step grows with the
lifetime asked for: 5 minutes for lifetimes up to 1 hour, 1 hour up to 1 day, 6 hours up to
one week. So a token lives at least as long as asked and at most one step longer, and the server
has about 60 candidates (`candidate_expiries`); scram.VerifierCache keeps their SCRAM keys, so
only the first connection of a user in a while pays the key stretching.

Pure functions take `now_s` (wall-clock seconds); only the secret file functions touch the disk.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import pathlib
import re
import secrets

from quorumdb import limits
from quorumdb.durable import fsync_dir

TOKEN_PREFIX = "qdb1"
SECRET_FILE = "token_secret"
SECRET_BYTES = 32
_MAC_CONTEXT = b"quorumdb-token-v1"

# (largest lifetime in seconds, grid step in seconds), in increasing order.
GRID_STEPS: tuple[tuple[int, int], ...] = (
    (3_600, 300),
    (86_400, 3_600),
    (limits.TOKEN_LIFETIME_MAX_S, 6 * 3_600),
)
# Expired candidates also tried (only after the live ones failed) so the error can say "expired".
RECENTLY_EXPIRED_S = 86_400

assert GRID_STEPS[-1][0] == limits.TOKEN_LIFETIME_MAX_S
assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(GRID_STEPS, GRID_STEPS[1:]))


class TokenError(ValueError):
    """A token that cannot be made (bad lifetime) or read (bad format)."""


def grid_step(lifetime_s: int) -> int:
    for lifetime_max_s, step_s in GRID_STEPS:
        if lifetime_s <= lifetime_max_s:
            return step_s
    raise TokenError(f"token lifetime {lifetime_s} s exceeds the maximum of one week")


def mac(secret: bytes, user: str, expiry_s: int) -> bytes:
    assert len(secret) == SECRET_BYTES
    message = _MAC_CONTEXT + b"\0" + user.encode() + b"\0" + str(expiry_s).encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def token_for(secret: bytes, user: str, expiry_s: int) -> str:
    """The one token for (user, expiry)."""
    encoded = base64.urlsafe_b64encode(mac(secret, user, expiry_s)).rstrip(b"=").decode()
    return f"{TOKEN_PREFIX}.{expiry_s}.{encoded}"


def issue(secret: bytes, user: str, lifetime_s: int, now_s: float) -> tuple[str, int]:
    """A token for `user` valid at least `lifetime_s` from now; returns (token, expiry_s)."""
    if not user:
        raise TokenError("a token needs a user name")
    if lifetime_s <= 0:
        raise TokenError("token lifetime must be positive")
    if lifetime_s > limits.TOKEN_LIFETIME_MAX_S:
        raise TokenError(f"token lifetime {format_duration(lifetime_s)} exceeds the maximum of one week")
    step_s = grid_step(lifetime_s)
    expiry_s = -(-(int(now_s) + lifetime_s) // step_s) * step_s
    return token_for(secret, user, expiry_s), expiry_s


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""          # why not, for the server log and the error's detail
    expiry_s: int | None = None


def verify(secret: bytes, user: str, token: str, now_s: float) -> Verdict:
    """Checks a token presented in clear (constant-time MAC comparison)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1].isdigit() or len(parts[1]) > 12:
        return Verdict(False, "not a QuorumDB token")
    expiry_s = int(parts[1])
    expected = token_for(secret, user, expiry_s)
    if not hmac.compare_digest(expected.encode(), token.encode()):
        return Verdict(False, "token signature does not match (wrong user, wrong cluster or forged)")
    if expiry_s <= now_s:
        return Verdict(False, f"token expired {int(now_s - expiry_s)} s ago", expiry_s)
    if expiry_s > now_s + limits.TOKEN_LIFETIME_MAX_S + GRID_STEPS[-1][1]:
        return Verdict(False, "token expiry is beyond the maximum lifetime", expiry_s)
    return Verdict(True, "", expiry_s)


def scram_salt(secret: bytes, user: str) -> bytes:
    """The SCRAM salt of a user: fixed per (cluster, user), as a stored PostgreSQL verifier's is."""
    return hmac.new(secret, b"quorumdb-scram-salt\0" + user.encode(), hashlib.sha256).digest()[:16]


def candidate_expiries(now_s: float) -> list[int]:
    """Every grid expiry a still-valid token may carry at now_s, soonest first."""
    now = int(now_s)
    found: set[int] = set()
    for lifetime_max_s, step_s in GRID_STEPS:
        first = (now // step_s + 1) * step_s
        found.update(range(first, now + lifetime_max_s + step_s + 1, step_s))
    return sorted(found)


def recently_expired(now_s: float) -> list[int]:
    """Grid expiries of tokens that expired within RECENTLY_EXPIRED_S, most recent first."""
    now = int(now_s)
    found: set[int] = set()
    for lifetime_max_s, step_s in GRID_STEPS[:2]:
        last = (now // step_s) * step_s
        found.update(range(last, now - min(lifetime_max_s, RECENTLY_EXPIRED_S) - 1, -step_s))
    return sorted(found, reverse=True)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> int:
    """'15m' -> 900; units s, m, h, d, w (seconds without a unit)."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise TokenError(f"bad duration {text!r}: use a number with s, m, h, d or w (e.g. 15m)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def format_duration(seconds: int) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- the secret file (the only I/O here) --------------------------------------------------
def secret_path(data_dir: pathlib.Path | str) -> pathlib.Path:
    return pathlib.Path(data_dir) / SECRET_FILE


def secret_dir(data_dir: pathlib.Path | str) -> pathlib.Path:
    """Where a cluster's secret lives: its data directory, or for a region of a Global Database
    (docs/REGIONS.md) the global data directory, so one token works in every region (the writer
    endpoint moves clients between regions at a switchover)."""
    directory = pathlib.Path(data_dir)
    cluster_file = directory / "cluster.toml"
    if cluster_file.exists():
        import tomllib
        with cluster_file.open("rb") as f:
            global_file = tomllib.load(f).get("cluster", {}).get("global_file", "")
        if global_file:
            return pathlib.Path(global_file).parent
    return directory


def load_secret(data_dir: pathlib.Path | str) -> bytes | None:
    path = secret_path(data_dir)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise TokenError(f"{path} is not a QuorumDB token secret") from None
    if len(secret) != SECRET_BYTES:
        raise TokenError(f"{path} holds {len(secret)} bytes, not {SECRET_BYTES}")
    return secret


def load_or_create_secret(data_dir: pathlib.Path | str) -> bytes:
    """The cluster's secret; created (0600, fsynced, atomically) if it does not exist yet."""
    existing = load_secret(data_dir)
    if existing is not None:
        return existing
    directory = pathlib.Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(SECRET_BYTES).hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, secret_path(directory))  # fails if another process won the race
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    fsync_dir(directory)
    secret = load_secret(directory)
    assert secret is not None
    return secret
