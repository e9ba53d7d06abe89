"""When each provider job's next step is due: a heap with lazy deletion (a job rescheduled
or forgotten leaves its old entry behind, skipped when it surfaces)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(slots=True)
class Schedule:
    heap: list[tuple[float, str]] = field(default_factory=list)
    due: dict[str, float] = field(default_factory=dict)

    def push(self, batch_id: str, when: float) -> None:
        self.due[batch_id] = when
        heapq.heappush(self.heap, (when, batch_id))

    def pop_due(self, now: float) -> list[str]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            when, batch_id = heapq.heappop(self.heap)
            if self.due.get(batch_id) == when:
                del self.due[batch_id]
                out.append(batch_id)
        return out

    def next_time(self) -> float | None:
        while self.heap and self.due.get(self.heap[0][1]) != self.heap[0][0]:
            heapq.heappop(self.heap)
        return self.heap[0][0] if self.heap else None
