"""The figures of a chaos run: what ran, what was injected, each invariant's count (all
must be 0) and the daemon's memory, rendered as the plain text a run prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.checks import Check

MiB = 1024 * 1024
MEMORY_FACTOR = 1.5
MEMORY_SLACK_BYTES = 40 * MiB


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory of the daemon: the first process after the warm-up (before any
    fault) and the last one after the drain (it ran the whole soak phase), and the peak."""

    before: int
    after: int
    peak: int

    @property
    def bound(self) -> int:
        return int(self.before * MEMORY_FACTOR + MEMORY_SLACK_BYTES)

    @property
    def within_bound(self) -> bool:
        return 0 < self.after <= self.bound


@dataclass(slots=True)
class Figures:
    seed: int
    jobs: Counter[str]
    inputs: int
    outcomes: Counter[str]
    item_errors: Counter[str]
    faults: Counter[str]
    invariants: list[Check]
    info: dict[str, Any]
    memory: Memory
    seconds: float = 0.0
    extra: list[str] = field(default_factory=list)

    def violations(self) -> list[Check]:
        broken = [c for c in self.invariants if c.count]
        if not self.memory.within_bound:
            broken.append(Check("memory over bound", 1, [self._memory_line()]))
        return broken

    def _memory_line(self) -> str:
        m = self.memory
        bound = f"after ≤ {MEMORY_FACTOR:g} × before + {MEMORY_SLACK_BYTES // MiB} MiB = {m.bound / MiB:.1f} MiB"
        return (
            f"before {m.before / MiB:.1f} MiB, after {m.after / MiB:.1f} MiB, peak {m.peak / MiB:.1f} MiB "
            f"(bound: {bound})"
        )

    def render(self) -> str:
        lines = [
            f"chaos run, seed {self.seed}: {self.seconds / 60:.1f} min",
            f"jobs: {sum(self.jobs.values())} ({_counts(self.jobs)}); inputs: {self.inputs}",
            f"job outcomes: {_counts(self.outcomes)}",
            f"failed items by error code: {_counts(self.item_errors) or 'none'}",
            f"faults injected: {sum(v for k, v in self.faults.items() if ' ' not in k)} ({_counts(self.faults)})",
            "invariants (each must be 0):",
            *(f"  {c.name:<48} {c.count}" for c in self.invariants),
            f"  {'memory over bound':<48} {0 if self.memory.within_bound else 1}",
            f"memory: {self._memory_line()}",
            "other figures:",
            *(f"  {k}: {v}" for k, v in self.info.items()),
            *self.extra,
        ]
        for check in self.violations():
            lines.append(f"VIOLATED: {check.name} ({check.count}):")
            lines += [f"    {example}" for example in check.examples]
        lines.append("RESULT: " + ("all invariants hold" if not self.violations() else "INVARIANTS VIOLATED"))
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])) if v)
