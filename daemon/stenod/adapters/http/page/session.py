"""Signing in to the page, and forms that other sites cannot submit on a person's behalf.

The session cookie (:mod:`stenod.adapters.http.sessions`) is ``SameSite=Strict`` (a browser
never sends it with another site's request) and ``HttpOnly`` (no script reads it). Every
form, the sign-in form too, carries a token only a page served to that session knows; the
front door has already refused a state-changing request whose ``Origin`` is another site.
Forms are small: their bodies are capped (64 KiB) and may hold no file and few fields.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from stenod.adapters.http.auth import client_address, too_many_tries
from stenod.adapters.http.context import Ctx, HttpContext
from stenod.adapters.http.front_door import FORM_BYTES
from stenod.adapters.http.page.render import page
from stenod.adapters.http.sessions import COOKIE, SESSION_SECONDS
from stenod.adapters.http.uploads import refuse_when_full
from stenod.errors import NotSignedIn

__all__ = ["changing_form", "check_form", "read_form", "router", "session_of", "signed_form", "signed_in"]

router = APIRouter(include_in_schema=False)

_MAX_FIELDS = 20


def session_of(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def signed_in(request: Request, ctx: HttpContext) -> None:
    """Raise NotSignedIn unless the request's session is signed in (or no key is needed)."""
    if not ctx.sessions.signed_in(session_of(request)):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise NotSignedIn(target)


async def read_form(request: Request) -> dict[str, str]:
    """A page form's fields: no files, few fields (the front door caps the body's size)."""
    form = await request.form(max_files=0, max_fields=_MAX_FIELDS, max_part_size=FORM_BYTES)
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def signed_form(request: Request, ctx: HttpContext) -> dict[str, str]:
    """A signed-in session's form, with the token its page carried (signed in is checked
    before the body is read)."""
    signed_in(request, ctx)
    values = await read_form(request)
    check_form(request, ctx, values.get("csrf"))
    return values


async def changing_form(request: Request, ctx: HttpContext) -> dict[str, str]:
    """A signed form whose handler writes to the journal: 507 at once when the journal has
    no room (its commit would wait for space), after the session and the token are checked."""
    values = await signed_form(request, ctx)
    await refuse_when_full(ctx, None, what="change")
    return values


def check_form(request: Request, ctx: HttpContext, token: str | None) -> None:
    """A state-changing form must come from a page this session was served."""
    if not ctx.sessions.form_token_matches(session_of(request), token):
        raise PermissionError("this form is out of date; reload the page and try again")


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no ``//host`` or scheme): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login")
async def login_form(request: Request, ctx: Ctx, next: str = "/") -> Response:
    return page(request, ctx, "login.html", next=_safe_next(next))


@router.post("/login")
async def login(request: Request, ctx: Ctx) -> Response:
    client = client_address(request)
    if wait := ctx.keys.throttle.wait_seconds(client):
        raise too_many_tries(wait)
    form = await read_form(request)
    check_form(request, ctx, form.get("csrf"))
    target = _safe_next(form.get("next") or "/")
    if not ctx.keys.required:
        return RedirectResponse(target, status_code=303)  # nothing to sign in to
    key = ctx.keys.matching(form.get("key"))
    if key is None:
        ctx.keys.throttle.failed(client, "/login")
        return page(request, ctx, "login.html", status=401, next=target, error="That is not one of stenod's keys.")
    ctx.keys.throttle.succeeded(client)
    answer = RedirectResponse(target, status_code=303)
    answer.set_cookie(
        COOKIE,
        await ctx.sessions.sign_in(key),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return answer


@router.post("/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    form = await read_form(request)
    check_form(request, ctx, form.get("csrf"))
    await ctx.sessions.sign_out(session_of(request))
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/")
    return answer
