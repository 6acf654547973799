"""Auth tokens: issue, verify, the expiry grid the SCRAM check relies on, the secret file."""
from __future__ import annotations

import os
import stat
import threading

import pytest

from quorumdb import limits, tokens

SECRET = bytes(range(32))
NOW = 1_700_000_123.4


def test_issue_then_verify():
    token, expiry = tokens.issue(SECRET, "admin", 900, NOW)
    assert token.startswith("qdb1.")
    assert NOW + 900 <= expiry <= NOW + 900 + 300, "lives at least as asked, at most one grid step more"
    assert tokens.verify(SECRET, "admin", token, NOW).ok
    assert tokens.verify(SECRET, "admin", token, expiry - 1).ok


def test_expired_forged_wrong_user_wrong_cluster():
    token, expiry = tokens.issue(SECRET, "admin", 900, NOW)
    expired = tokens.verify(SECRET, "admin", token, expiry)
    assert not expired.ok and "expired" in expired.reason
    assert not tokens.verify(SECRET, "bob", token, NOW).ok
    assert not tokens.verify(bytes(32), "admin", token, NOW).ok
    prefix, expiry_text, mac = token.split(".")
    assert not tokens.verify(SECRET, "admin", f"{prefix}.{int(expiry_text) + 300}.{mac}", NOW).ok, "expiry is signed"
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    assert not tokens.verify(SECRET, "admin", f"{prefix}.{expiry_text}.{flipped}", NOW).ok
    for garbage in ("", "qdb1", "qdb1..", "x.1.2", "qdb1.-5.abc", "qdb1.99999999999999999.a"):
        assert not tokens.verify(SECRET, "admin", garbage, NOW).ok


def test_lifetimes_bounded():
    with pytest.raises(tokens.TokenError, match="one week"):
        tokens.issue(SECRET, "admin", limits.TOKEN_LIFETIME_MAX_S + 1, NOW)
    with pytest.raises(tokens.TokenError):
        tokens.issue(SECRET, "admin", 0, NOW)
    with pytest.raises(tokens.TokenError):
        tokens.issue(SECRET, "", 60, NOW)
    token, expiry = tokens.issue(SECRET, "admin", limits.TOKEN_LIFETIME_MAX_S, NOW)
    assert tokens.verify(SECRET, "admin", token, NOW).ok


@pytest.mark.parametrize("lifetime_s", [1, 59, 60, 299, 900, 3600, 3601, 7200, 86_400, 86_401, 5 * 86_400,
                                        limits.TOKEN_LIFETIME_MAX_S])
def test_every_issued_expiry_is_a_candidate_until_it_expires(lifetime_s):
    for now in (NOW, NOW + 1, 1_700_003_599.0, 1_700_003_600.0):
        _, expiry = tokens.issue(SECRET, "u", lifetime_s, now)
        for later in (now, now + lifetime_s / 2, expiry - 1):
            assert expiry in tokens.candidate_expiries(later), (lifetime_s, now, later)
        assert expiry not in tokens.candidate_expiries(expiry)
        assert expiry in tokens.recently_expired(expiry + 10) or lifetime_s > 86_400


def test_candidate_set_is_small():
    candidates = tokens.candidate_expiries(NOW)
    print(f"candidate expiries: {len(candidates)}, recently expired: {len(tokens.recently_expired(NOW))}")
    assert len(candidates) < 100
    assert all(c > NOW for c in candidates)
    assert max(candidates) <= NOW + limits.TOKEN_LIFETIME_MAX_S + tokens.GRID_STEPS[-1][1]


def test_parse_duration():
    assert tokens.parse_duration("15m") == 900
    assert tokens.parse_duration("900") == 900
    assert tokens.parse_duration("2h") == 7200
    assert tokens.parse_duration("1w") == 604_800
    for bad in ("", "15x", "m", "-5m", "1.5h"):
        with pytest.raises(tokens.TokenError):
            tokens.parse_duration(bad)


def test_secret_file_created_once_0600_and_shared(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(tokens.load_or_create_secret(tmp_path)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 8 and len(set(results)) == 1, "concurrent creators agree on one secret"
    path = tokens.secret_path(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [tokens.SECRET_FILE], "no temporary files left"
    assert tokens.load_or_create_secret(tmp_path) == results[0]


def test_cli_token(tmp_path, capsys):
    from tools import cli

    assert cli.main(["token", "--user", "alice", "--data-dir", str(tmp_path), "--expires", "1h"]) == 0
    token = capsys.readouterr().out.strip()
    secret = tokens.load_secret(tmp_path)
    import time
    assert tokens.verify(secret, "alice", token, time.time()).ok
    assert cli.main(["token", "--user", "alice", "--data-dir", str(tmp_path), "--expires", "8d"]) == 1
    assert "one week" in capsys.readouterr().err
