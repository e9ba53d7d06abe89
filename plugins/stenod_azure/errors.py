"""Azure's error answers (Translator JSON and Blob Storage XML) mapped to stenod errors.

Messages never include request URLs: the Blob ones carry a SAS signature.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

import httpx

from stenod.provider import AuthError, ErrorInfo, Json, PermanentError, RetryableError, retry_after_seconds

NAME = "azure"


def translation_error(error: Json) -> tuple[str, str]:
    """``(code, message)`` of a ``TranslationError`` object, preferring the inner, more
    specific one when present."""
    if not isinstance(error, Mapping):
        return "UnknownError", "no reason given"
    inner = error.get("innerError")
    chosen = inner if isinstance(inner, Mapping) and inner.get("code") else error
    code = str(chosen.get("code") or error.get("code") or "UnknownError")
    message = str(chosen.get("message") or error.get("message") or "no reason given")
    return code, message[:500]


def error_info(error: Json, what: str) -> ErrorInfo:
    """An Azure ``TranslationError`` as stenod error data about ``what``."""
    code, message = translation_error(error)
    return ErrorInfo(code=code, message=f"Azure could not translate {what} ({code}): {message}")


def raise_for_translator(response: httpx.Response) -> None:
    """Raise the stenod error for a failed Translator call; no-op on success."""
    status = response.status_code
    if status < 400:
        return
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    code, message = (
        translation_error(body["error"])
        if isinstance(body, Mapping) and "error" in body
        else (
            response.headers.get("x-ms-error-code") or f"http_{status}",
            response.text[:300] or "no details",
        )
    )
    detail = f"{code}: {message}"
    if status in (401, 403):
        raise AuthError(
            f"azure rejected the Translator key ({status} {detail}); check [providers.azure] api_key, "
            "region and base_url"
        )
    if status in (408, 429) or status >= 500:
        raise RetryableError(
            f"azure answered {status} ({detail})", retry_after=retry_after_seconds(response), code=code
        )
    raise PermanentError(f"azure refused the request ({status} {detail})", code=code)


def raise_for_storage(response: httpx.Response, action: str) -> None:
    """Raise the stenod error for a failed Blob Storage call; ``action`` says what we
    were doing (``"upload a.docx"``)."""
    status = response.status_code
    if status < 400:
        return
    code = response.headers.get("x-ms-error-code") or f"http_{status}"
    message = _storage_message(response.text)
    detail = f"{code}: {message}" if message else code
    if status == 403:
        raise AuthError(
            f"azure Blob Storage refused to {action} ({detail}); the container SAS URL in "
            "[providers.azure] container_sas_url may have expired or lack read/write/list/delete rights"
        )
    if status in (408, 429) or status >= 500:
        raise RetryableError(
            f"azure Blob Storage answered {status} to {action} ({detail})",
            retry_after=retry_after_seconds(response),
            code=code,
        )
    raise PermanentError(f"azure Blob Storage could not {action} ({status} {detail})", code=code)


def _storage_message(text: str) -> str:
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return text[:200].strip()
    message = root.findtext("Message") or ""
    return message.splitlines()[0][:200] if message else ""
