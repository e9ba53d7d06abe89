"""The page's sessions: who is signed in, and the token each of its forms carries.

Every browser gets a random session token in an ``HttpOnly``, ``SameSite=Strict`` cookie the
first time it is served a page (before signing in too, so the sign-in form is protected).
A form's token is an HMAC of that session token under a secret generated at first start and
kept in the state directory: another site can neither read nor compute it, keys or not.

Signing in gives a fresh token (a token planted before sign-in is worth nothing after it),
recorded by its hash with the key it was given for; the cookie never holds the key itself.
A session ends when it is signed out, after 30 days, or when its key leaves the
configuration. Sessions are kept in the state directory, so a restart signs nobody out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from stenod.adapters.http.auth import Keys

__all__ = ["COOKIE", "SESSION_SECONDS", "PageSessions"]

COOKIE = "stenod_session"
SESSION_SECONDS = 30 * 24 * 3600
_MAX_SESSIONS = 1000  # signed-in browsers remembered; the oldest is signed out past this


def _read_or_create_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
    secret = secrets.token_bytes(32)
    descriptor = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(secret)
        out.flush()
        os.fsync(out.fileno())
    os.replace(path.with_suffix(".tmp"), path)
    return secret


class PageSessions:
    """Session tokens, their form tokens, and the signed-in ones (kept in ``folder``)."""

    def __init__(self, folder: Path, keys: Keys) -> None:
        self._keys = keys
        self._secret = _read_or_create_secret(folder / "secret")
        self._path = folder / "sessions.json"
        self._signed_in: dict[str, tuple[str, float]] = {}  # hash of token -> (key's mark, expiry)
        self._saving = asyncio.Lock()  # one writer of the file at a time
        # A missing or damaged file signs everyone out; it never stops the daemon.
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError, AttributeError):
            stored = json.loads(self._path.read_text())
            self._signed_in = {h: (str(mark), float(expiry)) for h, (mark, expiry) in stored.items()}

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    def form_token(self, session: str) -> str:
        """What the forms served to this session carry."""
        return hmac.new(self._secret, b"form:" + session.encode(), hashlib.sha256).hexdigest()[:40]

    def form_token_matches(self, session: str | None, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(token.encode(), self.form_token(session).encode())

    def _mark(self, key: bytes) -> str:
        return hmac.new(self._secret, b"key:" + key, hashlib.sha256).hexdigest()

    def _hash(self, session: str) -> str:
        return hmac.new(self._secret, b"session:" + session.encode(), hashlib.sha256).hexdigest()

    def signed_in(self, session: str | None) -> bool:
        """Whether this session may see the page (always, when no keys are configured)."""
        if not self._keys.required:
            return True
        entry = self._signed_in.get(self._hash(session)) if session else None
        if entry is None or entry[1] < time.time():
            return False
        return any(hmac.compare_digest(entry[0], self._mark(key)) for key in self._keys.configured())

    async def sign_in(self, key: bytes) -> str:
        """A new session token, signed in with ``key`` (a configured key)."""
        session = self.new_token()
        self._signed_in[self._hash(session)] = (self._mark(key), time.time() + SESSION_SECONDS)
        now = time.time()
        live = sorted(((h, e) for h, e in self._signed_in.items() if e[1] > now), key=lambda item: item[1][1])
        self._signed_in = dict(live[-_MAX_SESSIONS:])
        await self._save()
        return session

    async def sign_out(self, session: str | None) -> None:
        if session and self._signed_in.pop(self._hash(session), None) is not None:
            await self._save()

    async def _save(self) -> None:
        async with self._saving:
            await asyncio.to_thread(self._write, json.dumps(self._signed_in))

    def _write(self, text: str) -> None:
        temporary = self._path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self._path)
