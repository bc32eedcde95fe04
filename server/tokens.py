"""API tokens: created, listed and revoked by `codeloop token`, checked by the server.

Tokens are stored only as sha256 digests in one JSON file (0600) under data_dir; the token
itself is printed once at creation and never again. A token is 32 random bytes, so a plain
sha256 is enough (nothing to brute-force, unlike a password). The file is the only state:
the CLI rewrites it atomically while the server runs, and the server re-reads it when it
changes, so creating and revoking take effect at once, without a restart.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

TOKEN_PREFIX = "cl"
USER_PATTERN = re.compile(r"^[^\x00-\x1f]{1,200}$")  # as the `user` field of a completion request


class TokenError(Exception):
    """A token command cannot be done; the message says why."""


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user: str  # the pseudonym telemetry and A/B assignment use for requests with this token
    admin: bool
    sha256: str
    note: str = ""
    created_at: str = ""
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, once its token checked out."""

    token_id: str
    user: str
    admin: bool


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def read_tokens(path: Path) -> list[TokenRecord]:
    """Every token in the file (revoked ones too); [] when there is no file."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise TokenError(f"cannot read the token file {path}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), list):
        raise TokenError(f"{path} is not a codeloop token file (no 'tokens' list)")
    try:
        return [TokenRecord(**t) for t in raw["tokens"]]
    except TypeError as exc:  # an unknown or missing field: say which file, not a 500 per request
        raise TokenError(f"{path} has a token entry codeloop cannot read ({exc}); fix or remove that entry") from None


def _write_tokens(path: Path, tokens: list[TokenRecord]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"version": 1, "tokens": [asdict(t) for t in tokens]}, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path):
    """One writer at a time (two `codeloop token` commands must not lose each other's token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def create_token(path: Path, user: str, *, admin: bool = False, note: str = "") -> tuple[str, TokenRecord]:
    """Add a token for `user`; returns the token (shown once) and its record."""
    if not USER_PATTERN.match(user):
        raise TokenError("--user must be 1 to 200 printable characters (the pseudonym telemetry records)")
    token_id = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    record = TokenRecord(id=token_id, user=user, admin=admin, sha256=digest(token), note=note,
                         created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    with _locked(path):
        _write_tokens(path, [*read_tokens(path), record])
    return token, record


def revoke_token(path: Path, token_id: str) -> TokenRecord:
    with _locked(path):
        tokens = read_tokens(path)
        found = [t for t in tokens if t.id == token_id]
        if not found:
            raise TokenError(f"no token with id {token_id!r} in {path}; `codeloop token list` shows the ids")
        if not found[0].active:
            raise TokenError(f"token {token_id} was already revoked at {found[0].revoked_at}")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        updated = [TokenRecord(**{**asdict(t), "revoked_at": now}) if t.id == token_id else t for t in tokens]
        _write_tokens(path, updated)
    return next(t for t in updated if t.id == token_id)


class TokenStore:
    """The server's view of the token file, re-read when the file changes (checked at most
    every `recheck_s`). Auth is on once the file has existed; if it disappears later, every
    request is refused rather than let in (fail closed) until the server restarts."""

    def __init__(self, path: Path, recheck_s: float = 1.0):
        self.path, self.recheck_s = path, recheck_s
        self._by_digest: dict[str, TokenRecord] = {}
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._enabled = False
        self.problem: str | None = None  # why the token file cannot be read, when it cannot
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.recheck_s:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._by_digest, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        self.problem = None
        try:
            tokens = read_tokens(self.path)
        except TokenError as exc:
            tokens = []  # a broken file lets nobody in; the 401 and `codeloop token list` say why
            self.problem = str(exc)
        self._enabled = True
        self._by_digest = {t.sha256: t for t in tokens if t.active}
        self._stamp = stamp

    @property
    def enabled(self) -> bool:
        """Whether requests need a token (re-reads the file if it changed)."""
        self._refresh()
        return self._enabled

    def active_count(self) -> int:
        self._refresh()
        return len(self._by_digest)

    def check(self, token: str) -> Principal | None:
        """The principal for a presented token, or None when it is unknown or revoked."""
        self._refresh()
        record = self._by_digest.get(digest(token))
        return Principal(record.id, record.user, record.admin) if record else None
