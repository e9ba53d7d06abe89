"""API keys: ``Authorization: Bearer <key>`` on every route but ``/healthz`` and ``/metrics``.
With no keys configured the server listens on loopback only (the settings refuse anything
else), so there is nothing to check. The page's cookie is never a key here: the page has
its own sessions (:mod:`stenod.adapters.http.sessions`).

``keyless_networks`` lets clients that cannot send a header at all (Bazarr's Whisper
provider) call ``/asr``, ``/detect-language`` and ``/status`` from those addresses, and
nothing else; the address is the real peer's, or the client a trusted proxy names. Keys are
compared in constant time and never logged or echoed; wrong ones are throttled per address.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from fastapi import Request
from pydantic import IPvAnyNetwork

from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.throttle import SignInThrottle

__all__ = ["Keys", "client_address", "too_many_tries"]

_MISSING = (
    "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
    "(Authorization: Bearer YOUR_KEY); the keys are in [http] api_keys or $CREDENTIALS_DIRECTORY/http.api_keys."
)
_WRONG = "Incorrect API key provided. The keys are in [http] api_keys or $CREDENTIALS_DIRECTORY/http.api_keys."


def client_address(request: Request) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy naming another."""
    return request.client.host if request.client else None


def too_many_tries(seconds: int) -> ApiError:
    return ApiError(
        429,
        f"too many wrong keys from this address; try again in {seconds} s",
        code="too_many_attempts",
        headers={"Retry-After": str(seconds)},
    )


class Keys:
    """The configured keys, the networks that may skip them for the whisper-asr routes, and
    the throttle that wrong keys from one address run into."""

    def __init__(
        self,
        keys: Sequence[str],
        keyless_networks: Sequence[IPvAnyNetwork] = (),
        throttle: SignInThrottle | None = None,
    ) -> None:
        self._keys = [k.encode() for k in keys if k]
        self._keyless = list(keyless_networks)
        self.throttle = throttle or SignInThrottle()

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def valid(self, presented: str | None) -> bool:
        if not self._keys:
            return True
        return self.matching(presented) is not None

    def matching(self, presented: str | None) -> bytes | None:
        """The configured key ``presented`` is, or None."""
        if not presented:
            return None
        given = presented.encode()
        # Compare with every key (no early exit): the time taken says nothing about which is close.
        found = [key for key in self._keys if hmac.compare_digest(given, key)]
        return found[0] if found else None

    def configured(self) -> Sequence[bytes]:
        return tuple(self._keys)

    def keyless(self, request: Request) -> bool:
        host = client_address(request)
        if not host or not self._keyless:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._keyless)

    @staticmethod
    def presented(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None

    def check(self, request: Request, *, keyless_allowed: bool = False) -> None:
        """Raise ApiError (401, or 429 for an address with too many wrong keys) unless the
        request carries a valid key (or may go without)."""
        if not self._keys or (keyless_allowed and self.keyless(request)):
            return
        client = client_address(request)
        if wait := self.throttle.wait_seconds(client):
            raise too_many_tries(wait)
        presented = self.presented(request)
        if presented is None:
            raise ApiError(401, _MISSING, headers={"WWW-Authenticate": "Bearer"})
        if not self.valid(presented):
            self.throttle.failed(client, request.url.path)
            raise ApiError(401, _WRONG, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        self.throttle.succeeded(client)
