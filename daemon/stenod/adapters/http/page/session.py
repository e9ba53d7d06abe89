"""Signing in to the page: the API key in an HttpOnly cookie, and forms that other sites
cannot submit on a person's behalf.

The cookie is ``SameSite=Strict`` (a browser never sends it with another site's request)
and ``HttpOnly`` (no script reads it). Every form also carries a token derived from the key,
and a state-changing request whose ``Origin`` is another site is refused.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from stenod.adapters.http.auth import COOKIE
from stenod.adapters.http.context import Ctx, HttpContext
from stenod.adapters.http.page.render import csrf_token, page

__all__ = ["NotSignedIn", "check_form", "router", "signed_in"]

router = APIRouter(include_in_schema=False)

_MONTH = 30 * 24 * 3600


class NotSignedIn(Exception):
    """The page needs a key: answered with a redirect to the sign-in form."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def signed_in(request: Request, ctx: HttpContext) -> None:
    """Raise NotSignedIn unless the request carries a valid key (cookie or header)."""
    if ctx.keys.required and not ctx.keys.valid(ctx.keys.presented(request)):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise NotSignedIn(target)


def check_form(request: Request, ctx: HttpContext, token: str | None) -> None:
    """A state-changing form must come from this site's own page."""
    signed_in(request, ctx)
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise PermissionError("this form was sent from another site")
    expected = csrf_token(ctx.keys.presented(request))
    if not token or not hmac.compare_digest(token, expected):
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
    form = await request.form()
    key, target = str(form.get("key") or ""), _safe_next(str(form.get("next") or "/"))
    if not ctx.keys.valid(key) or not key:
        return page(request, ctx, "login.html", status=401, next=target, error="That is not one of stenod's keys.")
    answer = RedirectResponse(target, status_code=303)
    answer.set_cookie(
        COOKIE,
        key,
        max_age=_MONTH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return answer


@router.post("/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    form = await request.form()
    check_form(request, ctx, str(form.get("csrf") or ""))
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/")
    return answer
