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

Channel binding (RFC 5929 tls-server-end-point, RFC 5802 section 6): over TLS the server offers
SCRAM-SHA-256-PLUS first and SCRAM-SHA-256 second, and the exchange is given the binding data (the
hash of the server's DER certificate, quorumdb/certs.py). With PLUS the client's gs2 header must be
`p=tls-server-end-point,,` and its final message's `c=` must be the base64 of that header followed
by the binding data: a man in the middle that terminated TLS with another certificate cannot
forge it without the password. The rules, as PostgreSQL's auth-scram.c applies them:

    mechanism   gs2 flag   over TLS                        without TLS
    PLUS        p=...      checked against the binding     refused (PLUS is never offered)
    PLUS        n / y      refused (binding data missing)  refused
    plain       p=...      refused (inconsistent)          refused (no binding possible)
    plain       y          refused: the client thinks the  accepted
                           server cannot bind but it can,
                           so someone stripped PLUS from
                           the offer (a downgrade)
    plain       n          accepted (client does not bind) accepted
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import threading
from typing import Callable, Iterable

MECHANISM = "SCRAM-SHA-256"
MECHANISM_PLUS = "SCRAM-SHA-256-PLUS"
BINDING_TYPE = "tls-server-end-point"


def mechanisms(binding_available: bool) -> list[str]:
    """What the server offers, best first (AuthenticationSASL)."""
    return [MECHANISM_PLUS, MECHANISM] if binding_available else [MECHANISM]


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
    """One exchange: `server_first(client_first, mechanism)`, then `server_final(client_final, candidates)`.

    `channel_binding`: the connection's tls-server-end-point data when it runs over TLS (the server
    then offers PLUS), None without TLS.
    """

    server_nonce: str            # printable, no ','
    salt: bytes
    iterations: int
    channel_binding: bytes | None = None
    _client_first_bare: str = ""
    _server_first: str = ""
    _gs2_header: str = ""
    _nonce: str = ""
    _binding_expected: bytes = b""

    def _check_binding_flag(self, flag: str, plus: bool) -> None:
        if flag.startswith("p="):
            if self.channel_binding is None:
                raise ScramError("the client requested channel binding, but the connection is not encrypted")
            if not plus:
                raise ScramError("the client selected SCRAM-SHA-256 without channel binding, but the SCRAM "
                                 "message includes channel binding data")
            if flag[2:] != BINDING_TYPE:
                raise ScramError(f"unsupported SCRAM channel-binding type {flag[2:]!r}")
            return
        if flag not in ("n", "y"):
            raise ScramError("malformed SCRAM client-first-message")
        if plus:
            raise ScramError("the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include "
                             "channel binding data")
        if flag == "y" and self.channel_binding is not None:
            # The client can bind and believes the server cannot, though PLUS was offered: the
            # offer was altered on the way (a downgrade attack), so the exchange stops here.
            raise ScramError("SCRAM channel binding negotiation error: the client supports channel binding "
                             "but thinks the server does not, and this server does support it")

    def server_first(self, client_first: bytes, mechanism: str = MECHANISM) -> bytes:
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        if mechanism not in mechanisms(self.channel_binding is not None):
            raise ScramError(f"client selected an invalid SASL authentication mechanism {mechanism!r}")
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if not bare:
            raise ScramError("malformed SCRAM client-first-message")
        self._check_binding_flag(flag, mechanism == MECHANISM_PLUS)
        if authzid:
            raise ScramError("SCRAM authorization identity is not supported")
        attributes = _attributes(bare)
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r" or not attributes[1][1]:
            raise ScramError("malformed SCRAM client-first-message")
        client_nonce = attributes[1][1]
        if any(not (0x21 <= ord(ch) <= 0x7E) or ch == "," for ch in client_nonce):
            raise ScramError("invalid SCRAM client nonce")
        self._gs2_header = f"{flag},{authzid},"
        self._binding_expected = self._gs2_header.encode() + (self.channel_binding if flag.startswith("p") else b"")
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
        if not hmac.compare_digest(_unb64(attributes.get("c", "")), self._binding_expected):
            raise ScramError("SCRAM channel binding check failed")
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
