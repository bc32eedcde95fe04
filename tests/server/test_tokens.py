"""The token file and the per-user rate limiter, as plain functions (the HTTP side is in test_auth.py)."""
from __future__ import annotations

import json
import stat

import pytest

from server.ratelimit import RateLimiter
from server.tokens import TokenError, TokenStore, create_token, read_tokens, revoke_token


def test_tokens_are_stored_hashed_and_checked(tmp_path):
    path = tmp_path / "auth_tokens.json"
    store = TokenStore(path, recheck_s=0)
    assert not store.enabled and store.check("anything") is None
    token, record = create_token(path, "alice", note="laptop")
    assert token.startswith(f"cl_{record.id}_") and len(token) > 40
    assert token not in path.read_text() and record.sha256 in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.enabled and store.check(token).user == "alice" and not store.check(token).admin
    assert store.check(token + "x") is None
    admin, _ = create_token(path, "ops", admin=True)
    assert store.check(admin).admin and store.active_count() == 2
    revoke_token(path, record.id)
    assert store.check(token) is None and store.check(admin) is not None
    with pytest.raises(TokenError, match="already revoked"):
        revoke_token(path, record.id)
    assert [t.user for t in read_tokens(path)] == ["alice", "ops"]  # revoked ones stay listed


def test_auth_fails_closed_when_the_file_breaks_or_disappears(tmp_path):
    path = tmp_path / "auth_tokens.json"
    token, _ = create_token(path, "alice")
    store = TokenStore(path, recheck_s=0)
    path.write_text(json.dumps({"tokens": "nope"}))
    assert store.enabled and store.check(token) is None
    path.unlink()
    assert store.enabled and store.check(token) is None


def test_rate_limiter_refills_per_user_and_says_how_long_to_wait():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0  # users have their own buckets
    now[0] = 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)  # a refused request does not cost a token
    now[0] = 1.0
    assert limiter.acquire("a") == 0
    assert RateLimiter(per_minute=0, burst=1).acquire("a") == 0  # 0 = off
