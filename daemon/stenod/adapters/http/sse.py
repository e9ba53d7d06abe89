"""Server-Sent Events answers, encoded with FastAPI's own SSE writer.

A producer yields :class:`Sse` values, or None when it woke with nothing to say; a None
becomes a comment line, which keeps proxies from closing a quiet stream and lets the
server notice a client that has gone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

__all__ = ["Sse", "event_stream"]


@dataclass(frozen=True, slots=True)
class Sse:
    data: str  # JSON text
    event: str | None = None
    id: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any], *, event: str | None = None, id: str | None = None) -> Sse:
        return cls(json.dumps(data, ensure_ascii=False, separators=(",", ":")), event, id)


async def _encoded(events: AsyncIterator[Sse | None]) -> AsyncIterator[bytes]:
    async for event in events:
        if event is None:
            yield b": keep-alive\n\n"
        else:
            yield format_sse_event(data_str=event.data, event=event.event, id=event.id)


def event_stream(events: AsyncIterator[Sse | None]) -> StreamingResponse:
    return StreamingResponse(
        _encoded(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
