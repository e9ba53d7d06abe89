"""The Azure-Blob side of the fake Sarvam server: SAS-like signed URLs that expire, and
"Put Blob" / "Get Blob" rules with Azure's error answers (XML bodies, ``x-ms-error-code``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import uuid
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class SasSigner:
    """Issues and checks signed, expiring blob URLs (``se`` expiry, ``sp`` permissions, ``sig``)."""

    def __init__(self) -> None:
        self._secret = uuid.uuid4().bytes

    def _signature(self, permissions: str, expiry: str, path: str) -> str:
        digest = hmac.new(self._secret, f"{permissions}\n{expiry}\n{path}".encode(), "sha256").digest()
        return base64.b64encode(digest).decode()

    def url(self, base: str, path: str, permissions: str, ttl_seconds: float) -> str:
        """``base + path`` with a SAS query valid for ``ttl_seconds`` (negative: already expired)."""
        se = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl_seconds)).strftime(_FORMAT)
        sig = quote(self._signature(permissions, se, path), safe="")
        return f"{base.rstrip('/')}{path}?sv=2024-11-04&se={quote(se)}&sr=b&sp={permissions}&sig={sig}"

    def refusal(self, request: Request, path: str, needed: str) -> Response | None:
        """Azure's 403 if the request's SAS is missing, tampered with, expired or lacks ``needed``."""
        q = request.query_params
        se, sp, sig = q.get("se"), q.get("sp", ""), q.get("sig")
        if not (se and sig):
            return azure_error(403, "AuthenticationFailed", "Server failed to authenticate the request.")
        if not hmac.compare_digest(self._signature(sp, se, path), sig):
            return azure_error(403, "AuthenticationFailed", "Signature did not match.")
        if dt.datetime.strptime(se, _FORMAT).replace(tzinfo=dt.UTC) <= dt.datetime.now(dt.UTC):
            return azure_error(403, "AuthenticationFailed", f"Signed expiry time [{se}] has passed.")
        if needed not in sp:
            return azure_error(403, "AuthorizationPermissionMismatch", "This request is not authorized.")
        return None


async def receive_put_blob(request: Request) -> tuple[int, Response]:
    """Read a Put Blob request: (bytes received, Azure's answer). Enforces the headers Azure
    requires (``x-ms-blob-type: BlockBlob``, ``Content-Length``); the size is -1 if refused."""
    blob_type = request.headers.get("x-ms-blob-type")
    if blob_type is None:
        return -1, azure_error(400, "MissingRequiredHeader", "An HTTP header that's mandatory is missing.")
    if blob_type != "BlockBlob":
        return -1, azure_error(400, "InvalidHeaderValue", "The value for x-ms-blob-type is not valid.")
    if "content-length" not in request.headers:
        return -1, azure_error(411, "MissingContentLengthHeader", "Content-Length must be specified.")
    digest, size = hashlib.md5(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    headers = {
        "ETag": f'"0x{digest.hexdigest()[:16].upper()}"',
        "Content-MD5": base64.b64encode(digest.digest()).decode(),
        "x-ms-request-server-encrypted": "true",
        "x-ms-version": "2024-11-04",
    }
    return size, Response(status_code=201, headers=headers)


def azure_error(status: int, code: str, message: str) -> Response:
    xml = f'<?xml version="1.0"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(xml, status_code=status, media_type="application/xml", headers={"x-ms-error-code": code})
