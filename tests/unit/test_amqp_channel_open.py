"""Opening a channel: aiormq fails a pending open with a bare ``Exception`` when the
connection drops at that moment (the cluster chaos run saw it stop a daemon). The stand-in
below is aio-pika's connection as it behaves then, nothing of stenod's."""

from __future__ import annotations

import pytest

from stenod.adapters.amqp.topology import open_channel


class DroppingConnection:
    async def channel(self, **_: object) -> object:
        raise Exception  # what aiormq's pending RPC raises once the connection has closed


async def test_a_channel_that_fails_to_open_with_a_bare_exception_is_a_connection_error() -> None:
    with pytest.raises(ConnectionError, match="opening a channel failed"):
        await open_channel(DroppingConnection())  # type: ignore[arg-type]
