"""The cluster CA (quorumdb/certs.py) and `quorumdb certs list|rotate` (tools/certs_cli.py).

No cluster runs here: certificates are made in temporary directories, checked with the
`cryptography` library's own path validation and with `openssl verify` (an independent
implementation), and the CLI runs as a subprocess on a data directory whose cluster file is
written with quorumdb.config.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quorumdb import certs
from quorumdb import config as config_mod
from quorumdb import regions as regions_mod
from tests.util import require

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
CLI_TIMEOUT_S = 60.0


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_cert(path: pathlib.Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def node_list(cluster: config_mod.ClusterConfig) -> list[tuple[str, list[str]]]:
    return [(cluster.cert_name(n.name), certs.default_hosts(n.name, n.host)) for n in cluster.nodes]


def verify_server(ca_dir: pathlib.Path, cert_path: pathlib.Path, host: str, now: datetime.datetime = NOW) -> None:
    """cryptography's RFC 5280 path validation of a server certificate for `host` (raises on failure)."""
    store = verification.Store([load_cert(certs.ca_path(ca_dir))])
    try:
        subject: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    verifier = verification.PolicyBuilder().store(store).time(now).build_server_verifier(subject)
    verifier.verify(load_cert(cert_path), [])


def openssl_verify(ca_dir: pathlib.Path, cert_path: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    openssl = shutil.which("openssl")
    require(openssl, "openssl", "apt-get install openssl")
    return subprocess.run([openssl, "verify", "-CAfile", str(certs.ca_path(ca_dir)), *extra, str(cert_path)],
                          capture_output=True, text=True, timeout=30)


# --- the library ------------------------------------------------------------------------------------
def test_ensure_makes_the_ca_admin_and_node_certificates_with_safe_modes(tmp_path):
    directory = tmp_path / "certs"
    created = certs.ensure(directory, [("journal-az1", ["journal-az1", "127.0.0.1"]), ("compute-az1", [])], now=NOW)
    assert created == ["ca", certs.ADMIN, "journal-az1", "compute-az1"]
    assert mode(directory) == 0o700 and mode(directory / certs.NODES_DIR) == 0o700
    assert mode(directory / "ca.key") == 0o600 and mode(directory / "ca.crt") == 0o644
    for name in (certs.ADMIN, "journal-az1", "compute-az1"):
        cert_path, key_path = certs.pair_paths(directory, name)
        assert mode(key_path) == 0o600 and mode(cert_path) == 0o644
    # No temporary file is left behind by the atomic writes.
    assert not [p for p in directory.rglob(".*") if p.is_file()]
    # A second ensure keeps everything: certificates are replaced only by rotate.
    before = (directory / "nodes" / "journal-az1.crt").read_bytes()
    assert certs.ensure(directory, [("journal-az1", ["journal-az1"]), ("storage-az1-a", [])], now=NOW) == \
        ["storage-az1-a"]
    assert (directory / "nodes" / "journal-az1.crt").read_bytes() == before


def test_a_cluster_keeps_its_ca(tmp_path):
    certs.make_ca(tmp_path, now=NOW)
    with pytest.raises(certs.CertError, match="keeps its CA"):
        certs.make_ca(tmp_path, now=NOW)


def test_node_certificate_names_hosts_usages_and_cluster(tmp_path):
    certs.ensure(tmp_path, [("storage-az2-b", certs.default_hosts("storage-az2-b", "10.1.2.3"))], now=NOW)
    cert = load_cert(tmp_path / "nodes" / "storage-az2-b.crt")
    ca = load_cert(tmp_path / "ca.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "storage-az2-b"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["storage-az2-b", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3"),
                                                        ipaddress.ip_address("127.0.0.1")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.issuer == ca.subject
    info = certs.info_of(tmp_path / "nodes" / "storage-az2-b.crt")
    assert info.cluster_id == certs.info_of(tmp_path / "ca.crt").cluster_id != ""
    assert info.hosts == ("storage-az2-b", "localhost", "10.1.2.3", "127.0.0.1")


def test_expiry_is_a_year_for_nodes_ten_for_the_ca_and_never_beyond_the_ca(tmp_path):
    certs.ensure(tmp_path, [("compute-az1", [])], now=NOW)
    ca, node = certs.info_of(tmp_path / "ca.crt"), certs.info_of(tmp_path / "nodes" / "compute-az1.crt")
    assert ca.not_after == NOW + datetime.timedelta(days=certs.CA_DAYS)
    assert node.not_after == NOW + datetime.timedelta(days=certs.CERT_DAYS)
    assert node.not_before < NOW  # a little slack for clocks behind the issuer's
    assert node.days_left(NOW) == pytest.approx(certs.CERT_DAYS)
    late = NOW + datetime.timedelta(days=certs.CA_DAYS - 10)
    capped = certs.issue(tmp_path, "compute-az2", now=late)
    assert capped.not_after == ca.not_after
    # An expired certificate fails validation.
    with pytest.raises(verification.VerificationError):
        verify_server(tmp_path, node.path, "compute-az1", now=NOW + datetime.timedelta(days=certs.CERT_DAYS + 1))


def test_node_certificates_verify_against_their_ca_only(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    certs.ensure(ours, [("journal-az1", certs.default_hosts("journal-az1"))], now=NOW)
    certs.ensure(theirs, [("journal-az1", certs.default_hosts("journal-az1"))], now=NOW)
    mine, other = ours / "nodes" / "journal-az1.crt", theirs / "nodes" / "journal-az1.crt"
    for host in ("journal-az1", "localhost", "127.0.0.1"):
        verify_server(ours, mine, host)
    with pytest.raises(verification.VerificationError):
        verify_server(ours, mine, "journal-az2")  # a name the certificate does not carry
    with pytest.raises(verification.VerificationError):
        verify_server(ours, other, "journal-az1")  # the same name, another cluster's CA
    # The same answers from OpenSSL (its own path validation); -attime: the certificates' clock.
    at = ["-attime", str(int(NOW.timestamp()))]
    assert openssl_verify(ours, mine, *at).returncode == 0
    assert openssl_verify(ours, mine, *at, "-verify_hostname", "journal-az1", "-purpose", "sslserver").returncode == 0
    assert openssl_verify(ours, mine, *at, "-purpose", "sslclient").returncode == 0  # mutual TLS: both ends
    refused = openssl_verify(ours, other, *at)
    assert refused.returncode != 0 and "unable to get local issuer certificate" in refused.stdout + refused.stderr
    assert openssl_verify(ours, mine, *at, "-verify_hostname", "journal-az2").returncode != 0


def test_rotate_keeps_the_hosts_and_changes_the_key(tmp_path):
    certs.ensure(tmp_path, [("compute-az3", certs.default_hosts("compute-az3", "compute-az3"))], now=NOW)
    old = certs.info_of(tmp_path / "nodes" / "compute-az3.crt")
    old_key, old_cert = certs.read_pair(tmp_path, "compute-az3")
    later = NOW + datetime.timedelta(days=30)
    new = certs.rotate(tmp_path, "compute-az3", now=later)
    new_key, new_cert = certs.read_pair(tmp_path, "compute-az3")
    assert new.hosts == old.hosts and new.name == old.name == "compute-az3"
    assert new.fingerprint != old.fingerprint and new.serial != old.serial
    assert new.not_after == later + datetime.timedelta(days=certs.CERT_DAYS)
    assert new_key != old_key and new_cert != old_cert
    # The new key is the new certificate's (what a TLS server presenting the pair needs).
    private = serialization.load_pem_private_key(new_key, password=None)
    public = x509.load_pem_x509_certificate(new_cert).public_key()
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert private.public_key().public_bytes(*spki) == public.public_bytes(*spki)
    assert mode(tmp_path / "nodes" / "compute-az3.key") == 0o600
    verify_server(tmp_path, tmp_path / "nodes" / "compute-az3.crt", "compute-az3", now=later)
    with pytest.raises(certs.CertError, match="no certificate"):
        certs.rotate(tmp_path, "compute-az9")


def test_list_certs_ca_first_then_admin_then_nodes(tmp_path):
    with pytest.raises(certs.CertError, match="no cluster CA"):
        certs.list_certs(tmp_path)
    certs.ensure(tmp_path, [("storage-az1-a", []), ("journal-az1", []), ("east/journal-az1", [])], now=NOW)
    names = [info.name for info in certs.list_certs(tmp_path)]
    assert names[:2] == ["ca", certs.ADMIN]
    assert sorted(names[2:]) == ["east/journal-az1", "journal-az1", "storage-az1-a"]


def test_channel_binding_is_the_sha256_of_the_certificate(tmp_path):
    certs.ensure(tmp_path, [("compute-az1", [])], now=NOW)
    der = load_cert(tmp_path / "nodes" / "compute-az1.crt").public_bytes(serialization.Encoding.DER)
    assert certs.tls_server_end_point(der) == hashlib.sha256(der).digest()


# --- quorumdb certs ----------------------------------------------------------------------------------
def run_certs(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("QUORUMDB_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "tools.cli", "certs", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=ROOT, env=env)


def make_cluster(data_dir: pathlib.Path, **settings) -> config_mod.ClusterConfig:
    cluster = config_mod.default_cluster(data_dir, **settings)
    cluster.write()
    if not cluster.insecure:
        certs.ensure(cluster.certs_path, node_list(cluster))
    return cluster


def fingerprints(certs_dir: pathlib.Path) -> dict[str, str]:
    return {info.name: info.fingerprint for info in certs.list_certs(certs_dir)}


def test_certs_list_shows_every_certificate_with_expiry_and_fingerprint(tmp_path):
    cluster = make_cluster(tmp_path / "data")
    result = run_certs("--data-dir", str(cluster.data_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"certificates in {cluster.certs_path} (cluster CA ")
    assert lines[1].split() == ["NAME", "KIND", "NOT", "AFTER", "(UTC)", "DAYS", "LEFT", "SHA-256", "HOSTS"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"ca", certs.ADMIN} | {node.name for node in cluster.nodes}
    found = fingerprints(cluster.certs_path)
    compute = rows["compute-az2"]
    assert compute[1] == "node" and compute[4] in ("364", "365")
    assert compute[5] == found["compute-az2"][:16] + "..."
    assert compute[6] == "compute-az2,localhost,127.0.0.1"
    assert rows["ca"][1] == "ca" and rows[certs.ADMIN][1] == "admin"
    # `certs list --json`: the full fingerprints.
    listed = run_certs("list", "--data-dir", str(cluster.data_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert {entry["name"]: entry["fingerprint_sha256"] for entry in entries} == found
    entry = next(entry for entry in entries if entry["name"] == "journal-az1")
    assert entry["kind"] == "node" and "journal-az1" in entry["hosts"] and entry["not_after"].endswith("Z")
    assert 364 <= entry["days_left"] <= 365


def test_certs_list_without_a_ca_says_why(tmp_path):
    insecure = make_cluster(tmp_path / "insecure", insecure=True)
    result = run_certs("--data-dir", str(insecure.data_dir))
    assert result.returncode == 1 and "--insecure" in result.stderr and "no CA" in result.stderr, result.stderr
    fresh = config_mod.default_cluster(tmp_path / "fresh")
    fresh.write()
    result = run_certs("--data-dir", str(fresh.data_dir))
    assert result.returncode == 1 and "no cluster CA" in result.stderr and "quorumdb up" in result.stderr
    result = run_certs("--data-dir", str(tmp_path / "nothing"))
    assert result.returncode == 1 and "not a cluster's data directory" in result.stderr


def test_certs_rotate_one_node_prints_old_and_new(tmp_path):
    cluster = make_cluster(tmp_path / "data")
    before = fingerprints(cluster.certs_path)
    result = run_certs("rotate", "storage-az3-b", "--data-dir", str(cluster.data_dir))
    assert result.returncode == 0, result.stderr
    after = fingerprints(cluster.certs_path)
    assert after["storage-az3-b"] != before["storage-az3-b"]
    assert {name: f for name, f in after.items() if name != "storage-az3-b"} == \
        {name: f for name, f in before.items() if name != "storage-az3-b"}
    text = result.stdout
    assert f"old: sha256 {before['storage-az3-b']}  expires " in text
    assert f"new: sha256 {after['storage-az3-b']}  expires " in text
    assert "no restart needed" in text


def test_certs_rotate_refuses_an_unknown_node_naming_the_known_ones(tmp_path):
    cluster = make_cluster(tmp_path / "data")
    result = run_certs("rotate", "storage-az9-z", "--data-dir", str(cluster.data_dir))
    assert result.returncode == 2
    assert "no node 'storage-az9-z'" in result.stderr and "compute-az1" in result.stderr
    assert run_certs("rotate", "--data-dir", str(cluster.data_dir)).returncode == 2  # neither NODE nor --all
    assert run_certs("rotate", "compute-az1", "--all", "--data-dir", str(cluster.data_dir)).returncode == 2


def test_certs_rotate_all_rotates_every_node(tmp_path):
    cluster = make_cluster(tmp_path / "data")
    before = fingerprints(cluster.certs_path)
    result = run_certs("rotate", "--all", "--data-dir", str(cluster.data_dir))
    assert result.returncode == 0, result.stderr
    after = fingerprints(cluster.certs_path)
    assert all(after[node.name] != before[node.name] for node in cluster.nodes)
    assert after["ca"] == before["ca"] and after[certs.ADMIN] == before[certs.ADMIN]
    assert result.stdout.count("rotated ") == len(cluster.nodes)


def test_certs_in_a_global_database_share_one_ca_and_name_region_nodes(tmp_path):
    global_cfg = regions_mod.layout(tmp_path / "g", [("east", "primary"), ("west", "secondary")], 20_000)
    global_cfg.write()
    shared = global_cfg.data_dir / "certs"
    for i, region in enumerate(global_cfg.regions):
        cluster = dataclasses.replace(
            config_mod.default_cluster(region.data_dir, base_port=region.base_port), region=region.name,
            global_file=str(global_cfg.path), certs_dir=str(shared))
        cluster.write()
        certs.ensure(cluster.certs_path, node_list(cluster))
    listed = run_certs("list", "--json", "--data-dir", str(global_cfg.data_dir))
    assert listed.returncode == 0, listed.stderr
    names = {entry["name"] for entry in json.loads(listed.stdout)}
    assert {"east/compute-az1", "west/storage-az3-b", "ca", certs.ADMIN} <= names
    assert len(names) == 2 + 2 * len(config_mod.default_nodes())
    before = fingerprints(shared)
    result = run_certs("rotate", "west/compute-az1", "--data-dir", str(global_cfg.data_dir))
    assert result.returncode == 0, result.stderr
    after = fingerprints(shared)
    assert after["west/compute-az1"] != before["west/compute-az1"]
    assert after["east/compute-az1"] == before["east/compute-az1"]
    refused = run_certs("rotate", "compute-az1", "--data-dir", str(global_cfg.data_dir))
    assert refused.returncode == 2 and "east/compute-az1" in refused.stderr


# --- docs/SECURITY.md --------------------------------------------------------------------------------
def role_table() -> str:
    """quorumdb.authz.CALLS as the Markdown table docs/SECURITY.md shows: one row per method."""
    from quorumdb import authz

    methods = sorted(set().union(*authz.CALLS.values()), key=lambda m: (m.split("/")[1], m.split("/")[2]))
    lines = ["| method | " + " | ".join(authz.ROLES) + " |", "| --- |" + " :-: |" * len(authz.ROLES)]
    lines += [f"| `{method}` | " + " | ".join("yes" if method in authz.CALLS[role] else "" for role in authz.ROLES)
              + " |" for method in methods]
    return "\n".join(lines) + "\n"


def test_security_doc_shows_the_role_table_of_the_code():
    text = (ROOT / "docs" / "SECURITY.md").read_text()
    start = text.index("-->\n", text.index("<!-- role table")) + len("-->\n")
    shown = text[start:text.index("<!-- end of role table -->")]
    assert shown == role_table(), "docs/SECURITY.md's role table differs from quorumdb/authz.py: paste role_table()"
    assert "(docs/SECURITY.md)" in (ROOT / "README.md").read_text()
    assert "SECURITY.md" in (ROOT / "docs" / "ARCHITECTURE.md").read_text()
