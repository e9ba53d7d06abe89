"""API keys: ``Authorization: Bearer <key>`` on every route but ``/healthz`` and ``/metrics``
(the page also accepts its login cookie). With no keys configured the server listens on
loopback only (the settings refuse anything else), so there is nothing to check.

``keyless_networks`` lets clients that cannot send a header at all (Bazarr's Whisper
provider) call ``/asr``, ``/detect-language`` and ``/status`` from those addresses, and
nothing else. Keys are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from fastapi import Request
from pydantic import IPvAnyNetwork

from stenod.adapters.http.errors import ApiError

__all__ = ["COOKIE", "Keys"]

COOKIE = "stenod_key"
_MISSING = (
    "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
    "(Authorization: Bearer YOUR_KEY); the keys are in [http] api_keys or $CREDENTIALS_DIRECTORY/http.api_keys."
)
_WRONG = "Incorrect API key provided. The keys are in [http] api_keys or $CREDENTIALS_DIRECTORY/http.api_keys."


class Keys:
    """The configured keys and the networks that may skip them for the whisper-asr routes."""

    def __init__(self, keys: Sequence[str], keyless_networks: Sequence[IPvAnyNetwork] = ()) -> None:
        self._keys = [k.encode() for k in keys if k]
        self._keyless = list(keyless_networks)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def valid(self, presented: str | None) -> bool:
        if not self._keys:
            return True
        if not presented:
            return False
        given = presented.encode()
        # Compare with every key (no early exit): the time taken says nothing about which is close.
        return any([hmac.compare_digest(given, key) for key in self._keys])

    def keyless(self, request: Request) -> bool:
        host = request.client.host if request.client else None
        if not host or not self._keyless:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._keyless)

    def presented(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return request.cookies.get(COOKIE)

    def check(self, request: Request, *, keyless_allowed: bool = False) -> None:
        """Raise ApiError(401) unless the request carries a valid key (or may go without)."""
        if not self._keys or (keyless_allowed and self.keyless(request)):
            return
        presented = self.presented(request)
        if presented is None:
            raise ApiError(401, _MISSING, headers={"WWW-Authenticate": "Bearer"})
        if not self.valid(presented):
            raise ApiError(401, _WRONG, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
