"""The names the HTTP front door answers to, as a browser writes them in ``Host``."""

from __future__ import annotations

import socket

import pytest

from stenod.adapters.http.front_door import HostNames, host_of

NAMES = HostNames("127.0.0.1", ["stenod.lan"])


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8000", "[::1]:8000", "[::1]", "localhost:8000", "LOCALHOST", "stenod.lan", "stenod.lan.:443",
     "192.168.1.5:8000", f"{socket.gethostname()}:8000"],
)  # fmt: skip
def test_this_servers_names_and_any_address_are_accepted(host: str) -> None:
    assert NAMES.allows(host_of(host))


@pytest.mark.parametrize(
    "host", ["attacker.example", "stenod.lan.attacker.example", "localhost.attacker.example:8000", "127.0.0.1:x", ""]
)
def test_other_names_and_malformed_hosts_are_refused(host: str) -> None:
    assert not NAMES.allows(host_of(host))
