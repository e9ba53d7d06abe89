"""Zeroconf (mDNS): announce ``_wyoming._tcp`` so Home Assistant discovers the listener.

The service is withdrawn at shutdown (Home Assistant then stops offering it). An address
for a listener on every interface is the one the default route leaves from, as the
``wyoming`` package's own helper picks it; a machine with no network announces nothing
and says so in the log: discovery is a convenience, the listener works without it.
"""

from __future__ import annotations

import socket

import structlog
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

__all__ = ["SERVICE_TYPE", "Announcement", "announced_address"]

log = structlog.get_logger("stenod.wyoming")

SERVICE_TYPE = "_wyoming._tcp.local."
_MDNS_GROUP = "224.0.0.251"


def announced_address(host: str) -> str:
    """The IPv4 address to announce for a listener on ``host``."""
    if host not in ("", "0.0.0.0", "::"):
        return socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((_MDNS_GROUP, 1))  # UDP: no packet is sent, only a route chosen
        address: str = probe.getsockname()[0]
        return address


class Announcement:
    """One registered service; :meth:`withdraw` unregisters it and closes zeroconf."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(announced_address(host))],
            port=port,
            server=f"{socket.gethostname()}.local.",
        )
        self._zeroconf: AsyncZeroconf | None = None

    async def publish(self) -> None:
        """Register the service (raises OSError when no interface can multicast)."""
        self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
        await self._zeroconf.async_register_service(self._info)
        log.info("wyoming.announced", name=self.name, service=SERVICE_TYPE, port=self._info.port)

    async def withdraw(self) -> None:
        """Unregister and close. Idempotent."""
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is not None:
            await zeroconf.async_unregister_all_services()
            await zeroconf.async_close()
