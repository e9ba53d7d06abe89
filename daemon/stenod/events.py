"""Typed job events and their CloudEvents 1.0 envelope (structured JSON).

``type`` is ``stenod.job.<kind>``, ``subject`` the job id, routing key
``job.<kind>.<provider>``. Consumers dedupe on ``id`` (delivery is at least once).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ulid import ULID

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION = "1.0"


class EventKind(StrEnum):
    ACCEPTED = "accepted"
    SUBMITTED = "submitted"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in (
            EventKind.SUCCEEDED,
            EventKind.PARTIAL,
            EventKind.FAILED,
            EventKind.CANCELLED,
            EventKind.REJECTED,
        )


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_SOURCE = f"stenod://{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event about one job, ready for the outbox."""

    kind: EventKind
    job_id: str
    provider: str
    data: dict[str, Any]
    id: str = ""
    time: str = ""

    @classmethod
    def new(cls, kind: EventKind, job_id: str, provider: str, data: dict[str, Any]) -> JobEvent:
        return cls(kind, job_id, provider or "none", data, id=str(ULID()), time=utc_now())

    @property
    def routing_key(self) -> str:
        # Provider names are validated identifiers; guard anyway so a key never gains levels.
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in self.provider)
        return f"job.{self.kind}.{safe}"

    def envelope(self) -> dict[str, Any]:
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": _SOURCE,
            "type": f"stenod.job.{self.kind}",
            "subject": self.job_id,
            "time": self.time,
            "datacontenttype": "application/json",
            "data": self.data,
        }
