"""The CI chaos run: a fixed seed, a few hundred jobs through folders and the queue while
the daemon is SIGKILLed, the broker restarted and cut off, and the fake providers answer
429/500/503, hang, reset, send garbage or quote the API key back. Every invariant must
hold. The long variant is ``python -m bench.chaos --minutes 30 --seed N``.

Replay a failure of this test with ``python -m bench.chaos --seed 20261123 --ci``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.plan import Phases, make_plan
from tests.chaos.run import run

CI_SEED = 20261123
CI_PHASES = Phases(warmup=15.0, storm=80.0, soak=35.0)
CI_JOBS_PER_SECOND = 2.5


@pytest.mark.timeout(420)  # ~2.5 min on 2 idle cores; room for a busy machine
def test_every_accepted_job_finishes_once_with_its_events_and_outputs_whatever_fails(tmp_path: Path) -> None:
    plan = make_plan(CI_SEED, CI_PHASES, jobs_per_second=CI_JOBS_PER_SECOND)
    figures = run(tmp_path, plan, drain_seconds=120.0)
    print(figures.render())
    assert sum(figures.faults.values()) >= 20, "the run must actually have been faulty"
    assert not figures.violations(), figures.render()
