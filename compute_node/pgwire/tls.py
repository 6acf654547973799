"""The PostgreSQL endpoint's TLS context: the node's certificate, reloaded when it is rotated.

Theory of operation
-------------------
`TlsSource` holds the paths of the node's certificate and key (quorumdb/certs.py's layout) and a
server-side SSLContext made from them (TLS 1.2 at least, no client certificates: clients prove
who they are with a token, over SCRAM). For every new connection `current()` stats the
certificate file once; when its inode or mtime changed (`quorumdb certs rotate` replaces the key,
then the certificate, each by an atomic rename) a new context is loaded, so connections made after
a rotation are served with the new certificate and no process stops. Established connections keep
the context they were handshaken with.

A load can fail (the files are missing, or the key is already new while the certificate is still
old in the middle of a rotation): the previous context stays in use and the next connection tries
again. Without any context the endpoint cannot serve TLS and, since the cluster is not
--insecure, refuses every startup with a message that names the missing file.

With each context comes its certificate's tls-server-end-point channel binding (RFC 5929), the
hash of the exact DER certificate that context presents, which SCRAM-SHA-256-PLUS checks.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from quorumdb import certs

log = logging.getLogger("compute_node.pgwire")


@dataclasses.dataclass(frozen=True)
class Loaded:
    context: ssl.SSLContext
    binding: bytes                # tls-server-end-point of the certificate the context presents
    fingerprint: tuple[int, int]  # (inode, mtime ns) of the certificate file it was loaded from


class TlsSource:
    def __init__(self, cert_path: pathlib.Path | str, key_path: pathlib.Path | str):
        self.cert_path = pathlib.Path(cert_path)
        self.key_path = pathlib.Path(key_path)
        self._loaded: Loaded | None = None
        self._failed: tuple[int, int] | None = None  # the file state whose load failed (logged once)
        self.error = ""
        self._lock = threading.Lock()

    def current(self) -> Loaded | None:
        """The context for a new connection (one stat; a reload when the certificate changed)."""
        try:
            stat = os.stat(self.cert_path)
            state = (stat.st_ino, stat.st_mtime_ns)
        except OSError as error:
            self._note_failure(None, f"cannot read the node's certificate {self.cert_path}: {error.strerror}")
            return self._loaded
        loaded = self._loaded
        if loaded is not None and loaded.fingerprint == state:
            return loaded
        with self._lock:
            if self._loaded is not None and self._loaded.fingerprint == state:
                return self._loaded
            try:
                fresh = _load(self.cert_path, self.key_path, state)
            except (OSError, ssl.SSLError, ValueError) as error:
                self._note_failure(state, f"cannot load the node's certificate {self.cert_path} "
                                          f"and key {self.key_path}: {error}")
                return self._loaded
            if self._loaded is not None:
                log.info("PostgreSQL endpoint: certificate %s changed, new connections use it", self.cert_path)
            self._loaded, self._failed, self.error = fresh, None, ""
            return fresh

    def _note_failure(self, state: tuple[int, int] | None, message: str) -> None:
        if state is None or state != self._failed:
            log.error("PostgreSQL endpoint: %s%s", message,
                      "; still serving the previous certificate" if self._loaded is not None else "")
        self._failed, self.error = state, message


def _load(cert_path: pathlib.Path, key_path: pathlib.Path, state: tuple[int, int]) -> Loaded:
    pem = cert_path.read_bytes()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    if cert_path.read_bytes() != pem:
        # Replaced between the two reads: the binding would not be the presented certificate's.
        raise ValueError("the certificate changed while it was loaded")
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return Loaded(context, certs.tls_server_end_point(der), state)


def for_node(certs_dir: pathlib.Path | str, cert_name: str) -> TlsSource:
    cert_path, key_path = certs.pair_paths(certs_dir, cert_name)
    return TlsSource(cert_path, key_path)
