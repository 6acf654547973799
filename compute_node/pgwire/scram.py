"""SCRAM-SHA-256 server side (RFC 5802 / RFC 7677), pure: nonces and salt are passed in.

Theory of operation
-------------------
PostgreSQL clients authenticate with SCRAM-SHA-256 by default: the password never crosses the
wire; the client proves it knows it, and the server proves back (server-final `v=`) that it
knows it too. A normal server stores a verifier per user. QuorumDB's passwords are tokens
(quorumdb/tokens.py) that the server can recompute for any (user, expiry) but whose expiry it
does not know, so the exchange is checked against a list of *candidate passwords*: the proof
is tested against each in turn (StoredKey comparison with hmac.compare_digest) and the first
match wins. With tokens on the expiry grid this is a few hundred HMACs.

Only the mechanism SCRAM-SHA-256 without channel binding is offered (there is no TLS):
gs2 header `n,,` or `y,,`; `p=` (binding requested) is refused, as a server without TLS must.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import threading
from typing import Callable, Iterable

MECHANISM = "SCRAM-SHA-256"


class ScramError(ValueError):
    """The client's messages do not follow the protocol (-> 08P01), or the proof failed (-> 28P01)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (ValueError, base64.binascii.Error):
        raise ScramError("invalid base64 in SCRAM message") from None


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def client_proof(password: str, salt: bytes, iterations: int, auth_message: bytes) -> bytes:
    """What a client sends (used by the tests to play the client)."""
    client_key = _hmac(salted_password(password, salt, iterations), b"Client Key")
    signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
    return bytes(a ^ b for a, b in zip(client_key, signature))


def _attributes(message: str) -> list[tuple[str, str]]:
    pairs = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM attribute {part[:20]!r}")
        pairs.append((part[0], part[2:]))
    return pairs


@dataclasses.dataclass
class ScramServer:
    """One exchange: `server_first(client_first)`, then `server_final(client_final, candidates)`."""

    server_nonce: str            # printable, no ','
    salt: bytes
    iterations: int
    _client_first_bare: str = ""
    _server_first: str = ""
    _gs2_header: str = ""
    _nonce: str = ""

    def server_first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag.startswith("p"):
            raise ScramError("channel binding is not supported (the server has no TLS)")
        if flag not in ("n", "y") or not bare:
            raise ScramError("malformed SCRAM client-first-message")
        if authzid:
            raise ScramError("SCRAM authorization identity is not supported")
        attributes = _attributes(bare)
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r" or not attributes[1][1]:
            raise ScramError("malformed SCRAM client-first-message")
        client_nonce = attributes[1][1]
        if any(not (0x21 <= ord(ch) <= 0x7E) or ch == "," for ch in client_nonce):
            raise ScramError("invalid SCRAM client nonce")
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + self.server_nonce
        self._server_first = f"r={self._nonce},s={_b64(self.salt)},i={self.iterations}"
        return self._server_first.encode()

    def server_final(self, client_final: bytes,
                     candidates: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bytes]:
        """Checks the proof against candidate (stored_key, server_key) pairs.

        Returns (index of the matching candidate or None, the server-final message).
        """
        assert self._server_first, "server_first comes first"
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        without_proof, separator, proof_text = text.rpartition(",p=")
        if not separator:
            raise ScramError("SCRAM client-final-message has no proof")
        attributes = dict(_attributes(without_proof))
        if _unb64(attributes.get("c", "")) != self._gs2_header.encode():
            raise ScramError("SCRAM channel binding does not match")
        if attributes.get("r") != self._nonce:
            raise ScramError("SCRAM nonce does not match")
        proof = _unb64(proof_text)
        if len(proof) != hashlib.sha256().digest_size:
            raise ScramError("SCRAM proof has the wrong length")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        for index, (stored_key, server_key) in enumerate(candidates):
            signature = _hmac(stored_key, auth_message)
            recovered_client_key = bytes(a ^ b for a, b in zip(proof, signature))
            if hmac.compare_digest(hashlib.sha256(recovered_client_key).digest(), stored_key):
                return index, f"v={_b64(_hmac(server_key, auth_message))}".encode()
        return None, b"e=invalid-proof"


def keys_for(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of a password: what a PostgreSQL verifier stores."""
    salted = salted_password(password, salt, iterations)
    return hashlib.sha256(_hmac(salted, b"Client Key")).digest(), _hmac(salted, b"Server Key")


class VerifierCache:
    """(user, expiry) -> (StoredKey, ServerKey), bounded; `derive` does the key stretching."""

    def __init__(self, entries_max: int):
        self.entries_max = entries_max
        self._keys: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()  # used from worker threads (asyncio.to_thread)

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self, user: str, expiries: list[int],
             derive: Callable[[int], tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        found = []
        for expiry in expiries:
            key = (user, expiry)
            with self._lock:
                pair = self._keys.get(key)
            if pair is None:
                pair = derive(expiry)
                with self._lock:
                    if len(self._keys) >= self.entries_max:
                        self._keys.clear()  # rare: simplest bound that keeps correctness
                    self._keys[key] = pair
            found.append(pair)
        return found

    def forget_before(self, expiry_s: int) -> None:
        with self._lock:
            for key in [key for key in self._keys if key[1] < expiry_s]:
                del self._keys[key]
