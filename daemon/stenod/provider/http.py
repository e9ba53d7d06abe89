"""Helpers for providers that speak HTTP: ``Retry-After`` parsing, the useful text of an
error answer, and the one translation of httpx failures into the error tree. Part of the
plugin API: plugins import these names from :mod:`stenod.provider`."""

from __future__ import annotations

import contextlib
import email.utils
import math
import time
from collections.abc import Iterator, Mapping

import httpx

from stenod.errors import AuthError, PermanentError, RetryableError
from stenod.provider.jobs import Json

__all__ = ["error_text", "provider_http_errors", "retry_after_seconds"]


# What a network failure means, for the person reading the error (a voice assistant's user
# among them); the exception's own text is left out: it may quote an address with a token.
_NETWORK_FAILURES = {
    "ConnectError": "no connection could be made (is the address right, is it up?)",
    "ReadError": "the connection broke while it answered",
    "WriteError": "the connection broke while the request was sent",
    "RemoteProtocolError": "it closed the connection before answering",
    "ProxyError": "the proxy refused the connection",
}


def retry_after_seconds(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``; None if absent."""
    raw_ms = response.headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            value = float(raw_ms) / 1000.0
            if math.isfinite(value):
                return max(0.0, value)
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return max(0.0, when - (time.time() if now is None else now))
    return max(0.0, value) if math.isfinite(value) else None


def error_text(response: httpx.Response, *, limit: int = 500) -> str:
    """The most useful human text of an error response, whatever envelope the
    provider uses (``{"error": {"message"}}``, ``{"detail": …}``, ``{"message"}``,
    plain text). Never raises."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text[:limit].strip() or response.reason_phrase
    parts: list[str] = []

    def walk(node: Json) -> None:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, Mapping):
            for key in ("code", "error_code", "type", "message", "error", "detail"):
                if key in node:
                    walk(node[key])

    walk(body)
    text = ": ".join(dict.fromkeys(p for p in parts if p)) or response.text
    return text[:limit]


@contextlib.contextmanager
def provider_http_errors(provider: str, *, request_id_header: str | None = None) -> Iterator[None]:
    """Translate httpx failures into the stenod error taxonomy, once, at the edge.

    401/403 → AuthError; 408, 429 and 5xx → RetryableError (with Retry-After);
    other 4xx → PermanentError carrying the provider's message and request id;
    timeouts, network errors, malformed answers and unusable URLs → RetryableError.
    """
    try:
        yield
    except httpx.HTTPStatusError as exc:
        response = exc.response
        code = response.status_code
        detail = error_text(response)
        rid = response.headers.get(request_id_header) if request_id_header else None
        suffix = f" (request id {rid})" if rid else ""
        if code in (401, 403):
            raise AuthError(
                f"{provider} rejected the API key ({code}: {detail}); check [providers.{provider}] "
                f"api_key or $CREDENTIALS_DIRECTORY/{provider}.api_key{suffix}"
            ) from exc
        if code in (408, 429) or code >= 500:
            raise RetryableError(
                f"{provider} answered {code}: {detail}{suffix}",
                retry_after=retry_after_seconds(response),
                code=f"http_{code}",
            ) from exc
        raise PermanentError(f"{provider} refused the request ({code}): {detail}{suffix}", code=f"http_{code}") from exc
    except httpx.TimeoutException as exc:
        raise RetryableError(f"{provider} did not answer in time ({type(exc).__name__})", code="timeout") from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        why = _NETWORK_FAILURES.get(type(exc).__name__, "the connection failed")
        raise RetryableError(f"{provider} unreachable: {why} ({type(exc).__name__})", code="network") from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # A URL built from the provider's own answer (a job id, a presigned URL) that cannot be
        # requested. Left out of the message: a presigned URL is a credential.
        raise RetryableError(
            f"{provider} sent an unusable address ({type(exc).__name__})", code="malformed_response"
        ) from exc
    except ValueError as exc:
        # Malformed JSON (json.JSONDecodeError) or a response body of the wrong shape:
        # providers sometimes answer garbage during incidents; try again later.
        raise RetryableError(f"{provider} sent a malformed answer: {exc}", code="malformed_response") from exc
