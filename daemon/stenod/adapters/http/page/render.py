"""Templates (Jinja2, autoescaped: file names and transcript text are shown as text, never
as markup) and the small formatting helpers they use."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from stenod.adapters.http.context import HttpContext
from stenod.adapters.http.sessions import COOKIE, SESSION_SECONDS
from stenod.formats import speaker_label

__all__ = ["STATIC", "age", "clock", "fragment", "page"]

_HERE = Path(__file__).parent
STATIC = _HERE / "static"
_VERSION = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(STATIC.iterdir()))).hexdigest()[:10]

_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def clock(seconds: float | None) -> str:
    """``1:02:03`` or ``2:03`` for a time in the recording."""
    total = int(seconds or 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def age(stamp: str, now: datetime | None = None) -> str:
    """How long ago an ISO time was, the way a person says it."""
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


# Only this site's own files run, load or receive forms: a file name or transcript line that
# slipped past escaping still could not run a script.
_POLICY = "default-src 'self'; media-src 'self'; frame-ancestors 'none'; form-action 'self'"

_env.globals.update(clock=clock, speaker=speaker_label, static=lambda name: f"/ui/static/{name}?v={_VERSION}")


def page(request: Request, ctx: HttpContext, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """Render ``template`` with what every page needs (sign-in state, the form token); a browser
    without a session yet is given one, so that even the sign-in form carries a token."""
    session = request.cookies.get(COOKIE)
    fresh = session is None
    if session is None:
        session = ctx.sessions.new_token()
    body = _env.get_template(template).render(
        signed_in=ctx.sessions.signed_in(session),
        keys_required=ctx.keys.required,
        csrf=ctx.sessions.form_token(session),
        **values,
    )
    answer = HTMLResponse(
        body,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": _POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )
    if fresh:
        secure = request.url.scheme == "https"
        answer.set_cookie(COOKIE, session, max_age=SESSION_SECONDS, httponly=True, samesite="strict", secure=secure)
    return answer


def fragment(template: str, **values: Any) -> HTMLResponse:
    """A piece of a page, for live updates."""
    return HTMLResponse(_env.get_template(template).render(**values), headers={"Cache-Control": "no-store"})
