"""The pure parts of the PostgreSQL endpoint: framing, fuzzing, literals, SCRAM, extended state, limits."""
from __future__ import annotations

import base64
import decimal
import hashlib
import hmac
import random
import struct

import pytest
import sqlglot

from compute_node.pgwire import admission, extended, protocol, scram, settings
from compute_node.sql import pgtypes
from quorumdb import certs, sqllex
from compute_node.pgwire.protocol import Frontend, Phase, ProtocolViolation
from quorumdb.errors import SqlError

MAX = 64 * 1024


def startup(user="admin", database="postgres") -> bytes:
    body = struct.pack("!I", protocol.PROTOCOL_3_0)
    for key, value in (("user", user), ("database", database)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def typed(code: bytes, body: bytes) -> bytes:
    return code + struct.pack("!I", len(body) + 4) + body


def valid_ready_messages() -> list[bytes]:
    bind_body = (b"p1\0s1\0" + struct.pack("!HhH", 1, 0, 2) + struct.pack("!i", 1) + b"5" + struct.pack("!i", -1)
                 + struct.pack("!Hh", 1, 1))
    return [
        typed(b"Q", b"SELECT 1\0"),
        typed(b"P", b"s1\0SELECT $1, $2\0" + struct.pack("!HII", 2, 23, 25)),
        typed(b"B", bind_body),
        typed(b"D", b"S" + b"s1\0"),
        typed(b"E", b"p1\0" + struct.pack("!i", 10)),
        typed(b"C", b"P" + b"p1\0"),
        typed(b"H", b""),
        typed(b"S", b""),
    ]


def ready_frontend() -> Frontend:
    frontend = Frontend(MAX, 10_000)
    frontend.receive_data(startup())
    assert isinstance(frontend.next_message(), protocol.StartupMessage)
    frontend.authenticated()
    return frontend


def test_startup_sequence():
    frontend = Frontend(MAX, 10_000)
    frontend.receive_data(struct.pack("!II", 8, protocol.SSL_REQUEST_CODE))
    assert isinstance(frontend.next_message(), protocol.SSLRequest)
    frontend.receive_data(struct.pack("!II", 8, protocol.GSSENC_REQUEST_CODE))
    assert isinstance(frontend.next_message(), protocol.GSSENCRequest)
    data = startup("alice", "db")
    frontend.receive_data(data[:7])
    assert frontend.next_message() is None, "partial packet waits"
    frontend.receive_data(data[7:])
    message = frontend.next_message()
    assert message.parameters == {"user": "alice", "database": "db"}
    assert frontend.phase is Phase.AUTHENTICATING
    frontend.receive_data(typed(b"Q", b"SELECT 1\0"))
    with pytest.raises(ProtocolViolation, match="unexpected message type"):
        frontend.next_message()
    assert frontend.phase is Phase.CLOSED


def test_cancel_request_closes():
    frontend = Frontend(MAX, 10_000)
    frontend.receive_data(struct.pack("!IIii", 16, protocol.CANCEL_REQUEST_CODE, 77, -5))
    assert frontend.next_message() == protocol.CancelRequest(77, -5)
    assert frontend.phase is Phase.CLOSED


def test_ready_messages_decode():
    frontend = ready_frontend()
    for data in valid_ready_messages():
        frontend.receive_data(data)
    decoded = []
    while (message := frontend.next_message()) is not None:
        decoded.append(message)
    assert [type(m).__name__ for m in decoded] == ["Query", "Parse", "Bind", "Describe", "Execute", "Close", "Flush", "Sync"]
    assert decoded[1] == protocol.Parse("s1", "SELECT $1, $2", (23, 25))
    assert decoded[2] == protocol.Bind("p1", "s1", (0,), (b"5", None), (1,))
    assert decoded[4] == protocol.Execute("p1", 10)


@pytest.mark.parametrize("data, why", [
    (typed(b"Q", b"SELECT 1"), "terminator"),
    (typed(b"Q", b"SELECT 1\0extra"), "too many"),
    (b"Q" + struct.pack("!i", 3), "invalid message length"),
    (b"Q" + struct.pack("!i", MAX + 10), "invalid message length"),
    (typed(b"Z", b""), "invalid frontend message type|unexpected message type"),
    (typed(b"D", b"X" + b"name\0"), "subtype"),
    (typed(b"B", b"p\0s\0" + struct.pack("!H", 3)), "truncated"),
    (typed(b"B", b"p\0s\0" + struct.pack("!HH", 0, 1) + struct.pack("!i", -7) + struct.pack("!H", 0)), "parameter length"),
    (typed(b"Q", b"\xff\xfe\0"), "UTF-8"),
    (typed(b"p", b"x"), "unexpected message type"),
])
def test_malformed_messages_are_protocol_violations(data, why):
    frontend = ready_frontend()
    frontend.receive_data(data)
    with pytest.raises(ProtocolViolation, match=why):
        frontend.next_message()


def test_bad_startup_packets():
    for data in (struct.pack("!i", 4) + b"\0" * 4, struct.pack("!i", 20_000), struct.pack("!II", 8, 0x00020000),
                 startup()[:-1] + b"x", struct.pack("!IIi", 12, protocol.CANCEL_REQUEST_CODE, 1)):
        frontend = Frontend(MAX, 10_000)
        frontend.receive_data(data)
        with pytest.raises(ProtocolViolation):
            while frontend.next_message() is not None:
                pass
            raise AssertionError(f"{data!r} was accepted")  # a truncated packet may just wait: count it as refused


def _mutations(rng: random.Random, samples: list[bytes]) -> bytes:
    choice = rng.randrange(5)
    sample = rng.choice(samples)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if choice == 1:
        return sample[:rng.randrange(len(sample))]
    if choice == 2:
        mutated = bytearray(sample)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        return bytes(mutated)
    if choice == 3:
        return sample + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return b"".join(rng.choice(samples) for _ in range(rng.randrange(1, 5)))


def test_fuzz_frontend_never_crashes_and_stays_bounded():
    seed = random.randrange(1 << 30)
    print(f"fuzz seed {seed}")
    rng = random.Random(seed)
    samples = valid_ready_messages()
    startup_samples = [startup(), struct.pack("!II", 8, protocol.SSL_REQUEST_CODE)]
    outcomes = {"violation": 0, "waiting": 0, "decoded": 0}
    for _ in range(5_000):
        in_startup = rng.random() < 0.3
        frontend = Frontend(MAX, 10_000) if in_startup else ready_frontend()
        data = _mutations(rng, startup_samples if in_startup else samples)
        for start in range(0, len(data), rng.randrange(1, 40)):
            frontend.receive_data(data[start:start + 40])
        try:
            while frontend.phase is not Phase.CLOSED and (message := frontend.next_message()) is not None:
                outcomes["decoded"] += 1
                if isinstance(message, protocol.StartupMessage):
                    frontend.authenticated()
            outcomes["waiting"] += 1
        except ProtocolViolation:
            outcomes["violation"] += 1
            assert frontend.phase is Phase.CLOSED
        assert frontend.buffered_bytes <= MAX + 64
    print("fuzz outcomes:", outcomes)
    assert outcomes["violation"] > 500 and outcomes["decoded"] > 500


def test_backend_encoders():
    assert protocol.ready_for_query("T") == b"Z\0\0\0\x05T"
    row = protocol.data_row([b"1", None])
    assert row == b"D" + struct.pack("!IH", 4 + 2 + 4 + 1 + 4, 2) + struct.pack("!i", 1) + b"1" + struct.pack("!i", -1)
    error = protocol.error_response("42P01", 'relation "x" does not exist', detail="d", hint="h")
    assert b"SERROR\0" in error and b"VERROR\0" in error and b"C42P01\0" in error and b"Dd\0" in error and b"Hh\0" in error
    description = protocol.row_description([protocol.FieldDescription("id", pgtypes.INT4, 4)])
    assert description.startswith(b"T") and b"id\0" in description


# --- statements and literals ----------------------------------------------------------------------
def test_split_statements():
    assert sqllex.split_statements("SELECT 1; SELECT 2;") == ["SELECT 1", "SELECT 2"]
    assert sqllex.split_statements("SELECT ';' ; SELECT $$;$$; SELECT $a$ ; $a$") == \
        ["SELECT ';'", "SELECT $$;$$", "SELECT $a$ ; $a$"]
    assert sqllex.split_statements("SELECT E'\\';' ; SELECT \"a;b\"") == ["SELECT E'\\';'", 'SELECT "a;b"']
    assert sqllex.split_statements("-- only; a comment\n/* ; /* ; */ ; */ ;  ") == []
    assert sqllex.split_statements("SELECT 'a\\'; SELECT 2") == ["SELECT 'a\\'", "SELECT 2"], "backslash is literal"


def test_parameters_are_found_only_outside_quotes():
    sql = "SELECT $1, '$2', \"$3\", a$4, $$ $5 $$, $2 -- $9\n /* $8 */"
    assert sqllex.parameter_count(sql) == 2
    assert sqllex.substitute(sql, ["x", "y"]) == "SELECT x, '$2', \"$3\", a$4, $$ $5 $$, y -- $9\n /* $8 */"


HOSTILE = ["'", "''", "\\", "\\'", "'; DROP TABLE t; --", "$$", "$1", "*/", "/*", "--", "\n--", "E'", "\"",
           "a'b''c", "😀'", "\\x00", "'||'", "');", "\t'", "' OR '1'='1"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("oid", [0, pgtypes.TEXT, pgtypes.VARCHAR])
def test_text_literals_cannot_escape(value, oid):
    literal = pgtypes.param_literal(value.encode(), 0, oid)
    sql = sqllex.substitute("SELECT $1 AS v, 2 AS w", [literal])
    assert sqllex.split_statements(sql) == [sql], "one statement"
    parsed = sqlglot.parse_one(sql, read="postgres")
    assert [e.alias for e in parsed.expressions] == ["v", "w"]
    assert parsed.expressions[0].this.this == value, "the value comes back unchanged"


def test_typed_literals():
    assert pgtypes.param_literal(b"42", 0, pgtypes.INT4) == "42"
    assert pgtypes.param_literal(b"-42", 0, pgtypes.INT8) == "(-42)", "no '--' comment after a minus"
    assert sqllex.substitute("SELECT 1-$1", [pgtypes.param_literal(b"-1", 0, pgtypes.INT4)]) == "SELECT 1-(-1)"
    assert pgtypes.param_literal(struct.pack("!q", -7), 1, pgtypes.INT8) == "(-7)"
    assert pgtypes.param_literal(struct.pack("!d", 2.5), 1, pgtypes.FLOAT8) == "CAST('2.5' AS DOUBLE PRECISION)"
    assert pgtypes.param_literal(b"t", 0, pgtypes.BOOL) == "TRUE"
    assert pgtypes.param_literal(b"\x00", 1, pgtypes.BOOL) == "FALSE"
    assert pgtypes.param_literal(None, 0, pgtypes.INT4) == "NULL"
    assert pgtypes.param_literal(b"\x01\x02", 1, pgtypes.BYTEA) == "CAST('\\x0102' AS BYTEA)"
    assert pgtypes.param_literal(b"12.50", 0, pgtypes.NUMERIC) == "12.50"
    assert pgtypes.param_literal(pgtypes.encode_numeric_binary(decimal.Decimal("-12.5")), 1, pgtypes.NUMERIC) == "(-12.5)"
    for bad, oid in ((b"1; DROP", pgtypes.INT4), (b"1e5", pgtypes.INT8), (b"x", pgtypes.FLOAT8), (b"maybe", pgtypes.BOOL),
                     (b"1)", pgtypes.NUMERIC)):
        with pytest.raises(SqlError) as caught:
            pgtypes.param_literal(bad, 0, oid)
        assert caught.value.sqlstate == "22P02"
    with pytest.raises(SqlError, match="out of range"):
        pgtypes.param_literal(b"70000", 0, pgtypes.INT2)
    with pytest.raises(SqlError) as caught:
        pgtypes.param_literal(b"a\0b", 0, pgtypes.TEXT)
    assert caught.value.sqlstate == "22021"
    with pytest.raises(SqlError) as caught:
        pgtypes.param_literal(b"\x01\x02\x03", 1, pgtypes.INT4)
    assert caught.value.sqlstate == "22P03"


def test_numeric_binary_round_trip():
    rng = random.Random(5)
    values = ["0", "1", "-1", "0.0001", "12345678.9", "-0.5", "10000", "99999999999999999999.123456789", "1E+5"]
    values += [str(decimal.Decimal(rng.randrange(-10**12, 10**12)).scaleb(-rng.randrange(0, 8))) for _ in range(200)]
    for text in values:
        value = decimal.Decimal(text)
        assert pgtypes.decode_numeric_binary(pgtypes.encode_numeric_binary(value)) == value, text


def test_result_text_formats():
    import datetime
    import uuid
    assert pgtypes.encode_text(True, pgtypes.BOOL) == b"t"
    assert pgtypes.encode_text(1.0, pgtypes.FLOAT8) == b"1"
    assert pgtypes.encode_text(float("inf"), pgtypes.FLOAT8) == b"Infinity"
    assert pgtypes.encode_text(b"\x01\xff", pgtypes.BYTEA) == b"\\x01ff"
    assert pgtypes.encode_text(datetime.datetime(2024, 1, 2, 3, 4, 5, 600000), pgtypes.TIMESTAMP) == b"2024-01-02 03:04:05.6"
    aware = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert pgtypes.encode_text(aware, pgtypes.TIMESTAMPTZ) == b"2024-01-02 03:04:05+00"
    assert pgtypes.encode_text(["a", "b c", None], pgtypes.TEXT_ARRAY) == b'{a,"b c",NULL}'
    assert pgtypes.encode_binary(5, pgtypes.INT4) == struct.pack("!i", 5)
    assert pgtypes.encode_binary(datetime.date(2000, 1, 2), pgtypes.DATE) == struct.pack("!i", 1)
    assert pgtypes.encode_binary(uuid.UUID(int=1), pgtypes.UUID) == uuid.UUID(int=1).bytes
    assert pgtypes.oid_of("character varying") == pgtypes.VARCHAR
    assert pgtypes.oid_of("numeric(10,2)") == pgtypes.NUMERIC
    assert pgtypes.oid_of("mystery", 3) == pgtypes.INT8


# --- SCRAM ---------------------------------------------------------------------------------------
def _client_exchange(server: scram.ScramServer, password: str, gs2: str = "n,,",
                     mechanism: str = scram.MECHANISM, binding: bytes = b"") -> tuple[bytes, bytes]:
    client_nonce = "rOprNGfwEbeRWgbNEkqO"
    bare = f"n=,r={client_nonce}"
    server_first = server.server_first(f"{gs2}{bare}".encode(), mechanism).decode()
    attributes = dict(part.split("=", 1) for part in server_first.split(","))
    salt, iterations = base64.b64decode(attributes["s"]), int(attributes["i"])
    without_proof = f"c={base64.b64encode(gs2.encode() + binding).decode()},r={attributes['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    proof = scram.client_proof(password, salt, iterations, auth_message)
    salted = scram.salted_password(password, salt, iterations)
    expected_server = hmac.new(hmac.new(salted, b"Server Key", hashlib.sha256).digest(), auth_message,
                               hashlib.sha256).digest()
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode(), b"v=" + base64.b64encode(expected_server)


def test_scram_accepts_the_right_candidate_and_proves_itself():
    server = scram.ScramServer("servernonce", b"saltsalt", 4096)
    client_final, expected_server_final = _client_exchange(server, "token-2")
    candidates = [scram.keys_for(p, b"saltsalt", 4096) for p in ("token-1", "token-2", "token-3")]
    index, server_final = server.server_final(client_final, candidates)
    assert index == 1
    assert server_final == expected_server_final


def test_scram_refuses_wrong_password_and_bad_messages():
    server = scram.ScramServer("servernonce", b"saltsalt", 4096)
    client_final, _ = _client_exchange(server, "guess")
    index, message = server.server_final(client_final, [scram.keys_for("token", b"saltsalt", 4096)])
    assert index is None and message.startswith(b"e=")
    with pytest.raises(scram.ScramError, match="channel binding"):
        scram.ScramServer("n", b"s", 4096).server_first(b"p=tls-unique,,n=,r=abc")
    for bad in (b"", b"n,,", b"x,,n=,r=a", b"n,,r=abc", b"\xff"):
        with pytest.raises(scram.ScramError):
            scram.ScramServer("n", b"s", 4096).server_first(bad)
    server = scram.ScramServer("servernonce", b"saltsalt", 4096)
    client_final, _ = _client_exchange(server, "token")
    tampered = client_final.replace(b"servernonce", b"othernonce!")
    with pytest.raises(scram.ScramError, match="nonce"):
        server.server_final(tampered, [])


def _binding() -> bytes:
    """tls-server-end-point of a real certificate (the hash of its DER form, SHA-256 for ECDSA-SHA256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import datetime
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "compute1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    binding = certs.tls_server_end_point(der)
    assert binding == hashlib.sha256(der).digest()
    return binding


def test_scram_plus_binds_the_exchange_to_the_certificate():
    binding = _binding()
    assert scram.mechanisms(True) == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    assert scram.mechanisms(False) == ["SCRAM-SHA-256"]
    candidates = [scram.keys_for("token", b"saltsalt", 4096)]
    gs2 = "p=tls-server-end-point,,"
    server = scram.ScramServer("servernonce", b"saltsalt", 4096, binding)
    client_final, expected = _client_exchange(server, "token", gs2, scram.MECHANISM_PLUS, binding)
    assert server.server_final(client_final, candidates) == (0, expected)
    # A man in the middle terminates TLS with another certificate: the client binds to that one.
    server = scram.ScramServer("servernonce", b"saltsalt", 4096, binding)
    client_final, _ = _client_exchange(server, "token", gs2, scram.MECHANISM_PLUS, bytes(32))
    with pytest.raises(scram.ScramError, match="channel binding check failed"):
        server.server_final(client_final, candidates)
    # c= must carry the binding data, not only the header.
    server = scram.ScramServer("servernonce", b"saltsalt", 4096, binding)
    client_final, _ = _client_exchange(server, "token", gs2, scram.MECHANISM_PLUS, b"")
    with pytest.raises(scram.ScramError, match="channel binding check failed"):
        server.server_final(client_final, candidates)


def test_scram_over_tls_without_binding_and_the_refusals():
    binding = _binding()
    candidates = [scram.keys_for("token", b"saltsalt", 4096)]
    # Over TLS a client may still choose plain SCRAM with flag n (it does not bind).
    server = scram.ScramServer("servernonce", b"saltsalt", 4096, binding)
    client_final, expected = _client_exchange(server, "token", "n,,")
    assert server.server_final(client_final, candidates) == (0, expected)
    # Without TLS, flag y (client could bind, believes the server cannot) is fine.
    server = scram.ScramServer("servernonce", b"saltsalt", 4096)
    client_final, expected = _client_exchange(server, "token", "y,,")
    assert server.server_final(client_final, candidates) == (0, expected)
    refusals = [
        (binding, scram.MECHANISM, "y,,", "negotiation error"),                   # PLUS stripped: downgrade
        (None, scram.MECHANISM, "p=tls-server-end-point,,", "not encrypted"),     # no TLS, no binding
        (None, scram.MECHANISM_PLUS, "p=tls-server-end-point,,", "invalid SASL"),  # PLUS never offered
        (binding, scram.MECHANISM_PLUS, "n,,", "does not include channel binding data"),
        (binding, scram.MECHANISM_PLUS, "y,,", "does not include channel binding data"),
        (binding, scram.MECHANISM, "p=tls-server-end-point,,", "includes channel binding data"),
        (binding, scram.MECHANISM_PLUS, "p=tls-unique,,", "unsupported SCRAM channel-binding type"),
        (binding, "SCRAM-SHA-1", "n,,", "invalid SASL"),
    ]
    for channel_binding, mechanism, gs2, message in refusals:
        with pytest.raises(scram.ScramError, match=message):
            scram.ScramServer("n", b"s", 4096, channel_binding).server_first(f"{gs2}n=,r=abc".encode(), mechanism)


def test_verifier_cache_is_bounded():
    cache = scram.VerifierCache(entries_max=10)
    derived = []
    for expiry in range(25):
        cache.keys("u", [expiry], lambda e: derived.append(e) or (b"s", b"k"))
    assert len(cache) <= 10
    cache.keys("u", [24], lambda e: derived.append(e) or (b"s", b"k"))
    assert derived.count(24) == 1, "cached"
    cache.forget_before(100)
    assert len(cache) == 0


# --- extended protocol state ------------------------------------------------------------------------
def test_extended_state_parse_bind_close():
    state = extended.ExtendedState(statements_max=2, portals_max=2)
    state.parse(protocol.Parse("s1", "SELECT * FROM t WHERE id = $1 AND v = $2", (pgtypes.INT4,)))
    statement = state.statement("s1")
    assert statement.param_oids == (pgtypes.INT4, 0)
    portal = state.bind(protocol.Bind("", "s1", (0,), (b"7", b"it's"), ()))
    assert portal.params == ["7", "'it''s'"], "each parameter as the SQL literal it stands for, never pasted"
    assert portal.statement.sql == "SELECT * FROM t WHERE id = $1 AND v = $2"
    with pytest.raises(SqlError) as caught:
        state.parse(protocol.Parse("s1", "SELECT 1", ()))
    assert caught.value.sqlstate == "42P05"
    with pytest.raises(SqlError) as caught:
        state.bind(protocol.Bind("", "s1", (), (b"1",), ()))
    assert caught.value.sqlstate == "08P01"
    with pytest.raises(SqlError) as caught:
        state.bind(protocol.Bind("", "nope", (), (), ()))
    assert caught.value.sqlstate == "26000"
    with pytest.raises(SqlError) as caught:
        state.portal("missing")
    assert caught.value.sqlstate == "34000"
    with pytest.raises(SqlError, match="multiple commands"):
        state.parse(protocol.Parse("", "SELECT 1; SELECT 2", ()))
    state.parse(protocol.Parse("s2", "SELECT 2", ()))
    with pytest.raises(SqlError) as caught:
        state.parse(protocol.Parse("s3", "SELECT 3", ()))
    assert caught.value.sqlstate == "54000"
    state.close(protocol.Close("S", "s2"))
    state.close(protocol.Close("S", "never-existed"))
    state.end_transaction()
    assert state.portals == {}


# --- admission and settings ---------------------------------------------------------------------------
def test_admission_cap_and_rate():
    gate = admission.Admission(connections_max=3, rate_per_s=2.0, burst=2, now_s=0.0)
    assert gate.admit(0.0) is None and gate.admit(0.0) is None
    refused = gate.admit(0.0)
    assert refused is not None and refused[0] == "53400"
    assert gate.admit(0.5) is None, "one token refilled after 0.5 s at 2/s"
    assert gate.admit(10.0)[0] == "53300", "three open connections is the cap"
    gate.release()
    assert gate.admit(10.0) is None


def test_settings():
    values = settings.Settings("admin", "app")
    assert values.get("server_version").startswith("15")
    assert values.get("TimeZone") == "UTC" and values.get("timezone") == "UTC"
    assert values.set("application_name", "x") == [("application_name", "x")]
    assert values.set("datestyle", "ISO, DMY") == [("DateStyle", "ISO, DMY")]
    assert values.set("my.custom", "1") == [] and values.get("my.custom") == "1"
    for name, value, sqlstate in (("client_encoding", "LATIN1", "0A000"), ("timezone", "Europe/Paris", "22023"),
                                  ("transaction_isolation", "serializable", "0A000"), ("nonsense", "1", "42704"),
                                  ("server_version", "1", "55P02")):
        with pytest.raises(SqlError) as caught:
            values.set(name, value)
        assert caught.value.sqlstate == sqlstate
    values.set("statement_timeout", "250ms")
    assert values.statement_timeout_s() == 0.25
    values.reset_all()
    assert values.statement_timeout_s() is None
