"""The cluster's certificate authority: one CA per cluster, one certificate per node.

Theory of operation
-------------------
`quorumdb up` makes a CA on first start and a certificate for every node (and one for the
tools), with the `cryptography` library; they live in the cluster's certs directory (by default
`<data-dir>/certs`, mode 0700):

    ca.crt  ca.key                   the cluster's CA (10 years)
    nodes/<name>.crt  <name>.key     one per node (1 year): CN = the node's name
    admin.crt  admin.key             the tools' identity (CN = quorumdb-admin)

Private keys are written 0600 and never leave the directory. Keys are ECDSA P-256: making one
costs well under a millisecond, so every test cluster can have its own CA.

Every node certificate is valid for both ends of a connection (serverAuth + clientAuth): a node
serves with it and calls other nodes with it, so both ends of every inter-node channel are
authenticated (mutual TLS). Its subject alternative names are the node's name (the compose
deployment's host names), its host from the cluster file, `localhost` and 127.0.0.1, so that
clients can verify the host they dialled (`sslmode=verify-full`). A peer's role comes from the
certificate's CN: the caller checks it against the cluster file (quorumdb/authz.py decides what
each role may call). Another cluster's certificates are signed by another CA, and the TLS
handshake refuses them.

Rotation (`quorumdb certs rotate NODE`) writes a new key and certificate for the node in place
(atomic renames); the running node reads them for each new handshake (its servers use gRPC's
dynamic credentials and the PostgreSQL endpoint reloads its context), so no process stops.

Everything here is file and crypto work without a clock of its own: callers pass `now`.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
import os
import pathlib
import secrets
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quorumdb.durable import fsync_dir

ADMIN = "quorumdb-admin"         # the tools' certificate (quorumdb status/chaos/..., with the data dir)
CA_DAYS = 3650
CERT_DAYS = 365
CA_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
NODES_DIR = "nodes"
ORGANIZATION = "QuorumDB"


class CertError(ValueError):
    """A certs directory that is missing, incomplete or not this cluster's."""


@dataclasses.dataclass(frozen=True)
class CertInfo:
    name: str                      # the CN: a node name, quorumdb-admin, or "ca"
    path: pathlib.Path
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int
    fingerprint: str               # SHA-256 of the DER certificate, hex
    hosts: tuple[str, ...]         # subject alternative names
    cluster_id: str                # the CA's cluster id (OU), the same on every certificate of a cluster

    def days_left(self, now: datetime.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400.0


def default_dir(data_dir: pathlib.Path | str) -> pathlib.Path:
    return pathlib.Path(data_dir) / "certs"


def ca_path(certs_dir: pathlib.Path | str) -> pathlib.Path:
    return pathlib.Path(certs_dir) / CA_FILE


def pair_paths(certs_dir: pathlib.Path | str, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(certificate, key) of a node or of quorumdb-admin."""
    base = pathlib.Path(certs_dir)
    folder = base if name == ADMIN else base / NODES_DIR
    return folder / f"{name}.crt", folder / f"{name}.key"


def _utc(now: datetime.datetime | None) -> datetime.datetime:
    return (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)


def _write(path: pathlib.Path, data: bytes, mode: int) -> None:
    """Atomically replace path with data, created with `mode` (a key is never readable by others,
    not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_ca(certs_dir: pathlib.Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((certs_dir / CA_FILE).read_bytes())
        key = serialization.load_pem_private_key((certs_dir / CA_KEY_FILE).read_bytes(), password=None)
    except FileNotFoundError as error:
        raise CertError(f"no cluster CA in {certs_dir} ({error.filename} is missing)") from None
    return cert, key


def cluster_id_of(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return values[0].value if values else ""


def make_ca(certs_dir: pathlib.Path | str, now: datetime.datetime | None = None) -> CertInfo:
    """Create the cluster's CA (refuses to replace one: every certificate hangs on it)."""
    certs_dir = pathlib.Path(certs_dir)
    if (certs_dir / CA_FILE).exists():
        raise CertError(f"{certs_dir / CA_FILE} exists: a cluster keeps its CA")
    certs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(certs_dir, 0o700)
    start = _utc(now)
    cluster_id = secrets.token_hex(8)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster_id),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"QuorumDB cluster CA {cluster_id}")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(minutes=5))
            .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write(certs_dir / CA_KEY_FILE, _key_pem(key), 0o600)
    _write(certs_dir / CA_FILE, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return info_of(certs_dir / CA_FILE)


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def default_hosts(name: str, host: str = "127.0.0.1") -> list[str]:
    """The names a node's certificate answers to: its own name, its host, localhost, 127.0.0.1."""
    return [name, host, "localhost", "127.0.0.1"]


def issue(certs_dir: pathlib.Path | str, name: str, hosts: Sequence[str] = (),
          days: int = CERT_DAYS, now: datetime.datetime | None = None) -> CertInfo:
    """A new key and certificate for `name` signed by the cluster's CA (replacing any old pair)."""
    certs_dir = pathlib.Path(certs_dir)
    ca_cert, ca_key = _load_ca(certs_dir)
    start = _utc(now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster_id_of(ca_cert)),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(minutes=5))
            .not_valid_after(min(start + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=True, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(_san(hosts or default_hosts(name))), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = pair_paths(certs_dir, name)
    # Key first: a reader that sees the new certificate must find its key (it retries on a mismatch).
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return info_of(cert_path)


def ensure(certs_dir: pathlib.Path | str, nodes: Iterable[tuple[str, Sequence[str]]],
           now: datetime.datetime | None = None) -> list[str]:
    """The CA, the admin certificate and one certificate per (name, hosts) that is missing.
    Returns the names it created (an existing certificate is kept: rotate replaces one)."""
    certs_dir = pathlib.Path(certs_dir)
    created = []
    if not (certs_dir / CA_FILE).exists():
        make_ca(certs_dir, now)
        created.append("ca")
    for name, hosts in [(ADMIN, ["localhost", "127.0.0.1"]), *nodes]:
        cert_path, key_path = pair_paths(certs_dir, name)
        if not (cert_path.exists() and key_path.exists()):
            issue(certs_dir, name, hosts, now=now)
            created.append(name)
    return created


def rotate(certs_dir: pathlib.Path | str, name: str, days: int = CERT_DAYS,
           now: datetime.datetime | None = None) -> CertInfo:
    """Replace a node's (or quorumdb-admin's) key and certificate, keeping its host names."""
    cert_path, _ = pair_paths(certs_dir, name)
    if not cert_path.exists():
        raise CertError(f"no certificate for {name!r} in {certs_dir}")
    return issue(certs_dir, name, info_of(cert_path).hosts, days=days, now=now)


def info_of(path: pathlib.Path | str) -> CertInfo:
    path = pathlib.Path(path)
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = names[0].value if names else ""
    if path.name == CA_FILE:
        name = "ca"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = tuple([str(v) for v in san.get_values_for_type(x509.DNSName)]
                      + [str(v) for v in san.get_values_for_type(x509.IPAddress)])
    except x509.ExtensionNotFound:
        hosts = ()
    return CertInfo(name=name, path=path, not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    serial=cert.serial_number, fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
                    hosts=hosts, cluster_id=cluster_id_of(cert))


def list_certs(certs_dir: pathlib.Path | str) -> list[CertInfo]:
    """The CA, quorumdb-admin and every node certificate, in that order."""
    certs_dir = pathlib.Path(certs_dir)
    if not (certs_dir / CA_FILE).exists():
        raise CertError(f"no cluster CA in {certs_dir}")
    found = [info_of(certs_dir / CA_FILE)]
    admin, _ = pair_paths(certs_dir, ADMIN)
    if admin.exists():
        found.append(info_of(admin))
    found += [info_of(path) for path in sorted((certs_dir / NODES_DIR).rglob("*.crt"))]
    return found


def read_pair(certs_dir: pathlib.Path | str, name: str) -> tuple[bytes, bytes]:
    """(private key PEM, certificate PEM) of a node or of quorumdb-admin."""
    cert_path, key_path = pair_paths(certs_dir, name)
    try:
        return key_path.read_bytes(), cert_path.read_bytes()
    except FileNotFoundError as error:
        raise CertError(f"no certificate for {name!r} in {certs_dir} ({error.filename} is missing)") from None


def read_ca(certs_dir: pathlib.Path | str) -> bytes:
    try:
        return ca_path(certs_dir).read_bytes()
    except FileNotFoundError:
        raise CertError(f"no cluster CA in {certs_dir}") from None


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929's tls-server-end-point channel binding of a certificate (SCRAM-SHA-256-PLUS): the
    hash of the DER certificate with its signature's hash, SHA-256 when that is MD5 or SHA-1."""
    cert = x509.load_der_x509_certificate(cert_der)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    return hashlib.new(algorithm.name, cert_der).digest()
