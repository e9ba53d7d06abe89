"""A deliberately slow upload endpoint: it reads request bodies at a capped rate.

The rate cap makes a large upload last (the client's socket buffer fills and its sends
wait), so a test can watch what the client's event loop does meanwhile. Every POST or
PUT is answered, once its whole body has arrived, with ``state.answer`` as JSON; the
size and the first bytes of each body are recorded.

Run it in its own process with ``python -m tests.fakes.slow_upload --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.server import run_forever

_HEAD_BYTES = 4096


@dataclass
class SlowUploadState:
    """The rate cap, the answer, and what arrived."""

    bytes_per_second: float = 64 * 1024 * 1024
    answer: dict[str, Any] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)


def create_app(state: SlowUploadState) -> Starlette:
    """The ASGI app serving ``state``; ``GET /__fake__/stats`` reports what arrived."""

    async def upload(request: Request) -> Response:
        started = time.monotonic()
        size, head = 0, bytearray()
        async for chunk in request.stream():
            if len(head) < _HEAD_BYTES:
                head += chunk[: _HEAD_BYTES - len(head)]
            size += len(chunk)
            ahead = size / state.bytes_per_second - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        state.sizes.append(size)
        state.heads.append(bytes(head))
        return JSONResponse(state.answer)

    async def stats(request: Request) -> Response:
        return JSONResponse({"sizes": state.sizes, "heads": [h.decode("latin-1") for h in state.heads]})

    return Starlette(
        routes=[
            Route("/__fake__/stats", stats, methods=["GET"]),
            Route("/{path:path}", upload, methods=["POST", "PUT"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes-per-second", type=float, default=SlowUploadState.bytes_per_second)
    args = parser.parse_args()
    run_forever(create_app(SlowUploadState(args.bytes_per_second)), args.port)


if __name__ == "__main__":
    main()
