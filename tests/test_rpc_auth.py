"""Who may call a node (quorumdb/rpc.py's authorization, pure): certificate roles, tokens, refusals."""
from __future__ import annotations

import grpc
import pytest

from quorumdb import authz, rpc, tokens

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
SERVICES = {"journal-az1": "journal", "adjudicator-az1": "adjudicator", "storage-az1-a": "storage",
            "compute-az1": "compute"}
NOW = 1_800_000_000


def authorizer(secret: bytes | None = SECRET) -> rpc.Authorizer:
    return rpc.Authorizer(SERVICES, rpc.TokenCheck(lambda: secret), clock=lambda: NOW)


def by_cert(method: str, cn: str | None):
    context = {} if cn is None else {"x509_common_name": [cn.encode()], "transport_security_type": [b"ssl"]}
    return authorizer().for_method(method).decide(context, None, NOW)


def by_token(method: str, metadata, auth: rpc.Authorizer | None = None, now: float = NOW):
    return (auth or authorizer()).for_method(method).decide(None, metadata, now)


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


def test_certificate_roles_decide_what_a_peer_may_call():
    assert by_cert("/quorumdb.Journal/Append", "adjudicator-az1") is None
    assert by_cert("/quorumdb.Journal/Fence", "adjudicator-az1") is None
    for method in ("/quorumdb.Journal/Append", "/quorumdb.Journal/Fence", "/quorumdb.Journal/AppendStream"):
        code, text = by_cert(method, "compute-az1")
        assert code == grpc.StatusCode.PERMISSION_DENIED and "compute" in text and method in text
    assert by_cert("/quorumdb.Journal/Fence", "storage-az1-a")[0] == grpc.StatusCode.PERMISSION_DENIED
    assert by_cert("/quorumdb.Adjudicator/Commit", "storage-az1-a")[0] == grpc.StatusCode.PERMISSION_DENIED
    assert by_cert("/quorumdb.Adjudicator/Commit", "compute-az1") is None
    for service in ("Journal", "Adjudicator", "Storage"):
        assert by_cert(f"/quorumdb.{service}/Status", "quorumdb-admin") is None
        assert by_cert(f"/quorumdb.{service}/Status", "journal-az1") is None


def test_a_region_qualified_name_has_its_node_s_role_and_strangers_none():
    assert by_cert("/quorumdb.Journal/Fence", "us-east/adjudicator-az1") is None
    assert rpc.cert_role("eu/storage-az1-a", SERVICES) == "storage"
    code, text = by_cert("/quorumdb.Journal/Status", None)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not authenticated" in text
    assert by_cert("/quorumdb.Journal/Status", "someone-else")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert rpc.common_name({"x509_common_name": [b"journal-az1"]}) == "journal-az1"
    assert rpc.common_name({}) is None


def test_token_services_want_a_valid_token_and_ignore_certificates():
    token, _ = tokens.issue(SECRET, "admin", 900, NOW)
    assert by_token("/quorumdb.Compute/Execute", bearer(token)) is None
    assert by_token("/quorumdb.Supervisor/Kill", bearer(token)) is None
    code, text = by_token("/quorumdb.Compute/Execute", ())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "no token" in text
    # A certificate's CN means nothing on a port that does not verify client certificates.
    check = authorizer().for_method("/quorumdb.Compute/Execute")
    assert check.decide({"x509_common_name": [b"quorumdb-admin"]}, (), NOW)[0] == grpc.StatusCode.UNAUTHENTICATED
    # A client's token does not reach the node-to-node methods.
    assert by_token("/quorumdb.Compute/Status", bearer(token)) is None


def test_expired_forged_and_foreign_tokens_are_refused_with_why():
    expired = tokens.token_for(SECRET, "admin", NOW - 60)
    assert by_token("/quorumdb.Compute/Execute", bearer(expired)) == (
        grpc.StatusCode.UNAUTHENTICATED, "/quorumdb.Compute/Execute: token expired")
    forged = f"qdb1.{NOW + 600}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    code, text = by_token("/quorumdb.Compute/Execute", bearer(forged))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "invalid token" in text
    foreign, _ = tokens.issue(OTHER_SECRET, "admin", 900, NOW)
    assert "invalid token" in by_token("/quorumdb.Compute/Execute", bearer(foreign))[1]
    assert "invalid token" in by_token("/quorumdb.Compute/Execute", bearer("not-a-token"))[1]
    # Bound to its user: another user's token is not admin's.
    bob, _ = tokens.issue(SECRET, "bob", 900, NOW)
    assert "invalid token" in by_token("/quorumdb.Compute/Execute", bearer(bob))[1]
    assert by_token("/quorumdb.Compute/Execute", (*bearer(bob), ("x-quorumdb-user", "bob"))) is None
    # No secret yet: nothing verifies.
    assert "invalid token" in by_token("/quorumdb.Compute/Execute", bearer(bob), authorizer(None))[1]


def test_a_verified_token_is_cached_until_it_expires():
    loads = []

    def load():
        loads.append(1)
        return SECRET

    auth = rpc.Authorizer(SERVICES, rpc.TokenCheck(load), clock=lambda: NOW)
    token, expiry = tokens.issue(SECRET, "admin", 300, NOW)
    for _ in range(3):
        assert by_token("/quorumdb.Compute/Execute", bearer(token), auth) is None
    assert len(loads) == 1 and auth.token_check._verified == {("admin", token): expiry}
    assert by_token("/quorumdb.Compute/Execute", bearer(token), auth, now=expiry)[1].endswith("token expired")
    assert auth.token_check._verified == {}


def test_bearer_token_parsing():
    assert rpc.bearer_token((("authorization", "Bearer abc"),)) == ("abc", rpc.TOKEN_USER)
    assert rpc.bearer_token((("authorization", "bearer abc"), ("x-quorumdb-user", "u"))) == ("abc", "u")
    assert rpc.bearer_token((("authorization", "Basic abc"),)) == (None, rpc.TOKEN_USER)
    assert rpc.bearer_token(None) == (None, rpc.TOKEN_USER)


@pytest.mark.parametrize("role", authz.ROLES)
def test_every_method_a_role_may_call_passes(role):
    auth = authorizer()
    token, _ = tokens.issue(SECRET, "admin", 900, NOW)
    for method in authz.CALLS[role]:
        check = auth.for_method(method)
        if check.by_token:
            if role == authz.CLIENT:
                assert check.decide(None, bearer(token), NOW) is None, method
        elif role != authz.CLIENT:
            cn = "quorumdb-admin" if role == authz.ADMIN else next(n for n, s in SERVICES.items() if s == role)
            assert check.decide({"x509_common_name": [cn.encode()]}, None, NOW) is None, (role, method)


def test_a_started_cluster_is_remembered_until_it_stops(tmp_path):
    from quorumdb import config as config_mod
    from tools.launcher import ensure_certs

    secure = config_mod.default_cluster(tmp_path / "a", base_port=21_000)
    plain = config_mod.default_cluster(tmp_path / "b", base_port=21_000, insecure=True)
    address = secure.node("journal-az1").address
    ensure_certs(secure)
    assert ensure_certs(plain) == [] and not (plain.certs_path / "ca.crt").exists()
    try:
        rpc.remember_cluster(secure)
        credentials = rpc.known_credentials(address)
        assert credentials.ca_pem and credentials.cert_pem and credentials.token
        assert rpc.known_credentials(address) is credentials  # minted once, reused
        rpc.forget_cluster(plain)  # another cluster's stop forgets nothing of this one
        assert rpc.known_credentials(address) is credentials
        rpc.remember_cluster(plain)  # a plaintext cluster now listens there
        assert rpc.known_credentials(address) is None
        rpc.remember_cluster(secure)
        rpc.forget_cluster(secure)
        assert rpc.known_credentials(address) is None
    finally:
        rpc.forget_cluster(secure)
