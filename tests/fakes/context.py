"""An in-memory StepContext for driving a provider's submit() directly in tests.

It behaves like the journal-backed context: ``saved`` is the last checkpoint, and a
"crash" is simulated by building a new context from the checkpoints of the old one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any


class MemoryStepContext:
    def __init__(self, saved: Mapping[str, Any] | None = None, *, crash_after_checkpoints: int | None = None) -> None:
        self._saved = copy.deepcopy(dict(saved)) if saved is not None else None
        self.checkpoints: list[dict[str, Any]] = []
        self.progress_reports: list[float] = []
        self.segments: list[tuple[str, Any]] = []
        self._crash_after = crash_after_checkpoints

    @property
    def saved(self) -> Mapping[str, Any] | None:
        return self._saved

    async def checkpoint(self, data: Mapping[str, Any]) -> None:
        # Round-trip through JSON: the journal stores checkpoints as JSON text.
        self._saved = json.loads(json.dumps(dict(data)))
        self.checkpoints.append(self._saved)
        if self._crash_after is not None and len(self.checkpoints) >= self._crash_after:
            raise SimulatedCrash(f"crash after checkpoint {len(self.checkpoints)}")

    def progress(self, fraction: float) -> None:
        self.progress_reports.append(fraction)

    def segment(self, item_id: str, segment: Any) -> None:
        self.segments.append((item_id, segment))

    def resumed(self) -> MemoryStepContext:
        """A fresh context as the restarted daemon would build it."""
        return MemoryStepContext(self._saved)


class SimulatedCrash(BaseException):
    """Raised by a context told to crash: not an Exception, so providers cannot swallow it."""
