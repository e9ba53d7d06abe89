"""Shared by the fuzz tests (``tests/integration/test_fuzz_*.py``): how many examples to
try, and a tally that prints how many bad inputs of a class were tried, with what outcome.

``STENOD_FUZZ_EXAMPLES=N`` raises every class to N examples (``tests/chaos/long_run.py`` does so
for the long run); the tally line starts with ``FUZZ`` so it can be collected from
``pytest -s`` output.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings


def examples(default: int, cap: int | None = None) -> int:
    """Examples per class: ``default`` in CI, ``$STENOD_FUZZ_EXAMPLES`` when set (at most
    ``cap`` for classes where one example costs seconds)."""
    wanted = int(os.environ.get("STENOD_FUZZ_EXAMPLES") or default)
    return min(wanted, cap) if cap is not None else wanted


def fuzz_settings(default: int, cap: int | None = None) -> settings:
    """Hypothesis settings for a fuzz class: no deadline (I/O), no example database; the
    same examples on every CI run (a red CI run is a regression, not bad luck), fresh
    ones when ``$STENOD_FUZZ_EXAMPLES`` asks for a long exploration."""
    return settings(
        max_examples=examples(default, cap),
        deadline=None,
        database=None,
        derandomize="STENOD_FUZZ_EXAMPLES" not in os.environ,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


@dataclass
class Tally:
    """Counts the examples of one class of bad input and what became of each."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)

    def record(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    @property
    def tried(self) -> int:
        return sum(self.outcomes.values())

    def report(self) -> str:
        detail = ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common())
        line = f"FUZZ {self.name}: {self.tried} examples ({detail})"
        print(line)
        return line


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` (path: size), to prove nothing was written where it must not be."""
    out: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file() or path.is_symlink():
            out[str(path.relative_to(root))] = path.lstat().st_size
    return out
