"""Scripted faults for the fake provider servers (loaded through ``POST /__fake__/faults``).

A script is a list of rules; each call of a fake asks :meth:`FaultScript.next` for the
rule that applies to it. Rule keys (JSON):

``route``        the fake's name for the call (``"status"``, ``"submit"``, …) or ``"*"``
``match``        optional glob on the call's subject (a file name or a job id)
``after``        let this many matching calls through first (default 0)
``times``        how many calls the rule hits (default 1; ``null`` = every call)
``status``       answer with this HTTP status and the provider's error body
``code``, ``message``, ``retry_after``, ``shape``   details of that error answer
``delay``        seconds to wait before answering (alone: then answer normally)
``malformed``    answer 200 with a body that is not valid JSON
``reset``        drop the connection in the middle of the answer
``expired_urls`` (fakes with presigned URLs) issue URLs that have already expired
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


@dataclass
class FaultRule:
    route: str = "*"
    match: str | None = None
    after: int = 0
    times: int | None = 1
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    shape: str | None = None
    delay: float = 0.0
    malformed: bool = False
    reset: bool = False
    expired_urls: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        return cls(**data)


class FaultScript:
    """The rules currently loaded, consumed as calls hit them."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []

    def load(self, rules: list[Mapping[str, Any]]) -> None:
        self._rules = [FaultRule.from_json(r) for r in rules]

    def clear(self) -> None:
        self._rules = []

    def next(self, route: str, subject: str | None = None) -> FaultRule | None:
        """The rule hitting this call, if any (one per call: the first that applies)."""
        for rule in self._rules:
            if rule.route not in ("*", route):
                continue
            if rule.match is not None and not fnmatch.fnmatch(subject or "", rule.match):
                continue
            if rule.times is not None and rule.times <= 0:
                continue
            if rule.after > 0:
                rule.after -= 1
                continue
            if rule.times is not None:
                rule.times -= 1
            return rule
        return None

    def pending(self) -> list[dict[str, Any]]:
        return [vars(r).copy() for r in self._rules if r.times is None or r.times > 0]


async def generic_fault(rule: FaultRule | None) -> Response | None:
    """Apply the provider-independent parts of ``rule``: wait, then maybe answer garbage
    or drop the connection. None means "answer normally" (or the fake's own error)."""
    if rule is None:
        return None
    if rule.delay:
        await asyncio.sleep(rule.delay)
    if rule.reset:
        return ResetResponse()
    if rule.malformed:
        return Response(b'{"job_id": "cut sho', status_code=200, media_type="application/json")
    return None


class ResetResponse(Response):
    """Promises a body, sends part of it, then fails: the server closes the connection
    mid-answer, which the client sees as a dropped connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"partial": ', "more_body": True})
        raise ConnectionResetError("fault injection: connection dropped mid-answer")
