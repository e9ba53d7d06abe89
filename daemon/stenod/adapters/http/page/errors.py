"""How the page answers what goes wrong: to the sign-in form when there is no key, and an
error page (not the API's JSON) for a person's browser."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.page.render import page
from stenod.errors import NotSignedIn

__all__ = ["install_page_handlers", "wants_html"]

_API_PREFIXES = ("/v1/", "/asr", "/detect-language", "/status", "/healthz", "/metrics", "/openapi.json")


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not an API client, not the page's own scripts)."""
    return "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(_API_PREFIXES)


def install_page_handlers(app: FastAPI) -> None:
    async def not_signed_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NotSignedIn)
        return RedirectResponse(f"/login?next={quote(exc.target)}", status_code=303)

    async def refused(request: Request, exc: Exception) -> Response:
        ctx = request.app.state.stenod
        return page(request, ctx, "error.html", status=403, title="Refused", message=str(exc))

    async def error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if not wants_html(request):
            return exc.response()
        ctx = request.app.state.stenod
        title = {404: "Not found", 400: "That cannot be done", 429: "Too many tries"}.get(
            exc.status, "Something went wrong"
        )
        answer = page(request, ctx, "error.html", status=exc.status, title=title, message=exc.message)
        answer.headers.update(exc.headers)  # Retry-After of a 429 (Connection: close is the front door's)
        return answer

    app.add_exception_handler(NotSignedIn, not_signed_in)
    app.add_exception_handler(PermissionError, refused)
    app.add_exception_handler(ApiError, error)
