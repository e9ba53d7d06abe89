"""Sign-in throttling: wrong keys from one address, on the page's sign-in form or in a
Bearer header, are answered 429 with ``Retry-After`` after a few, for longer each time.

Each failure is logged as one ``http.auth_failed`` line naming the client's address (the real
peer, or the client a trusted proxy names), the line fail2ban's filter (docs/security.md) matches.
Addresses are counted per IPv4 address and per IPv6 /64 (one host holds a whole /64), and at
most ``max_clients`` of them are remembered, the oldest forgotten first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import structlog

__all__ = ["SignInThrottle"]

log = structlog.get_logger("stenod.http")

_FREE_FAILURES = 5  # a person mistyping a key a few times is not held back
_FIRST_WAIT_SECONDS = 2.0
_MAX_WAIT_SECONDS = 900.0
_FORGET_SECONDS = 3600.0  # an address without a failure for this long starts afresh


@dataclass(slots=True)
class _Record:
    failures: int
    last: float
    blocked_until: float


def _bucket(client: str) -> str:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class SignInThrottle:
    """Failures per client address; a client over ``_FREE_FAILURES`` waits, doubling each time."""

    def __init__(self, *, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._max_clients = max_clients
        self._clock = clock

    def wait_seconds(self, client: str | None) -> int:
        """Seconds this client must still wait before a key is tried again (0: none)."""
        record = self._records.get(_bucket(client or ""))
        if record is None:
            return 0
        left = record.blocked_until - self._clock()
        return int(left) + 1 if left > 0 else 0

    def failed(self, client: str | None, route: str) -> None:
        """Count a wrong key from ``client`` and log it; a client past the free tries waits."""
        now, bucket = self._clock(), _bucket(client or "")
        record = self._records.pop(bucket, None)
        if record is None or now - record.last > _FORGET_SECONDS:
            record = _Record(0, now, 0.0)
        record.failures += 1
        record.last = now
        over = record.failures - _FREE_FAILURES
        if over > 0:
            record.blocked_until = now + min(_MAX_WAIT_SECONDS, _FIRST_WAIT_SECONDS * 2 ** (over - 1))
        self._records[bucket] = record
        while len(self._records) > self._max_clients:
            self._records.popitem(last=False)
        log.warning("http.auth_failed", client=client or "-", route=route, failures=record.failures)

    def succeeded(self, client: str | None) -> None:
        """A right key: the client's count starts again."""
        self._records.pop(_bucket(client or ""), None)
