"""Templates (Jinja2, autoescaped: file names and transcript text are shown as text, never
as markup) and the small formatting helpers they use."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from stenod.adapters.http.context import HttpContext
from stenod.formats import speaker_label

__all__ = ["STATIC", "age", "clock", "csrf_token", "fragment", "page"]

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


def csrf_token(key: str | None) -> str:
    """The token every form of the page carries: only a page served to this key knows it
    (the cookie itself is never readable by a script)."""
    return hmac.new((key or "").encode(), b"stenod-page-csrf", hashlib.sha256).hexdigest()[:32]


# Only this site's own files run, load or receive forms: a file name or transcript line that
# slipped past escaping still could not run a script.
_POLICY = "default-src 'self'; media-src 'self'; frame-ancestors 'none'; form-action 'self'"

_env.globals.update(clock=clock, speaker=speaker_label, static=lambda name: f"/ui/static/{name}?v={_VERSION}")


def page(request: Request, ctx: HttpContext, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """Render ``template`` with what every page needs (sign-in state, the form token)."""
    key = ctx.keys.presented(request)
    body = _env.get_template(template).render(
        signed_in=not ctx.keys.required or ctx.keys.valid(key),
        keys_required=ctx.keys.required,
        csrf=csrf_token(key),
        **values,
    )
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": _POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def fragment(template: str, **values: Any) -> HTMLResponse:
    """A piece of a page, for live updates."""
    return HTMLResponse(_env.get_template(template).render(**values), headers={"Cache-Control": "no-store"})
