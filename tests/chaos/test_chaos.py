"""The CI chaos runs: a fixed seed, a few hundred jobs through folders and the queue while
the daemon is SIGKILLed, the broker restarted and cut off, and the fake providers answer
429/500/503, hang, reset, send garbage or quote the API key back. Every invariant must
hold. The long variant is ``python -m tests.chaos.long_run --minutes 30 --seed N``.

The cluster run does the same to three daemons sharing one PostgreSQL journal, one queue
and the same folders, with a 3 s lease, and adds what only a cluster has: a daemon killed
and kept down or paused (SIGSTOP) past its lease, so that another takes its provider jobs
over and the paused one must write nothing more for them, and the database server
restarted or the run's database sessions cut.

Replay a failure of these tests with ``python -m tests.chaos.long_run --seed 20261123 --ci``
(``--seed 20261124 --ci --cluster 3`` for the cluster run).

Seeds on which a long run found a defect are replayed here too, with the CI's phases (the
same seed makes the same kind of schedule, only shorter), so that what they found stays
fixed (docs/chaos-runs.md, "Defects the suite found").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.plan import Phases, make_plan
from tests.chaos.run import run
from tests.chaos.verdict import LEASES_LOST, TAKEOVERS

CI_SEED = 20261123
CI_PHASES = Phases(warmup=15.0, storm=80.0, soak=35.0)
CI_JOBS_PER_SECOND = 2.5
# 1179383388: a crash loop had the broker dead-letter requests no daemon had failed (their
# delivery count used up by kills); 869091928: an output set left beside an error file by
# an attempt killed between writing and recording, then failed.
REPLAYED_SEEDS = (1179383388, 869091928)

CI_CLUSTER = 3
CI_CLUSTER_SEED = 20261124
# 368875535: a holder frozen while writing outputs after its lease ran out; a SIGTERM
# while the consumer was being started.
REPLAYED_CLUSTER_SEEDS = (368875535,)
CI_CLUSTER_PHASES = Phases(warmup=15.0, storm=90.0, soak=20.0)
CI_CLUSTER_JOBS_PER_SECOND = 2.0
# At least this many of each kind that only a cluster has, or the run proved nothing about it.
# Takeovers and lost leases are what kills and pauses led to: the leases were put to the test.
CI_CLUSTER_MINIMUM = {
    "daemon_kill": 3,
    "daemon_pause": 1,
    "daemon_freeze": 1,
    "db_restart": 2,
    "db_cut": 1,
    TAKEOVERS: 1,
    LEASES_LOST: 1,
}


@pytest.mark.timeout(420)  # ~2.5 min on 2 idle cores; room for a busy machine
@pytest.mark.parametrize("seed", [CI_SEED, *REPLAYED_SEEDS])
def test_every_accepted_job_finishes_once_with_its_events_and_outputs_whatever_fails(tmp_path: Path, seed: int) -> None:
    plan = make_plan(seed, CI_PHASES, jobs_per_second=CI_JOBS_PER_SECOND)
    figures = run(tmp_path, plan, drain_seconds=120.0)
    print(figures.render())
    assert sum(figures.faults.values()) >= 20, "the run must actually have been faulty"
    assert not figures.violations(), figures.render()


@pytest.mark.timeout(480)  # ~2.5 min on 2 idle cores; room for a busy machine
@pytest.mark.parametrize("seed", [CI_CLUSTER_SEED, *REPLAYED_CLUSTER_SEEDS])
def test_a_cluster_loses_nothing_and_submits_nothing_twice_whichever_daemon_is_killed_or_paused(
    tmp_path: Path, seed: int
) -> None:
    plan = make_plan(seed, CI_CLUSTER_PHASES, jobs_per_second=CI_CLUSTER_JOBS_PER_SECOND, cluster=CI_CLUSTER)
    figures = run(tmp_path, plan, drain_seconds=120.0)
    print(figures.render())
    short = {
        kind: f"{figures.faults[kind]} < {n}" for kind, n in CI_CLUSTER_MINIMUM.items() if figures.faults[kind] < n
    }
    assert not short, f"too few cluster faults happened: {short}\n{figures.render()}"
    assert not figures.violations(), figures.render()
