"""The long chaos run: the CI chaos suite (``tests/chaos``) for as long as asked, on any seed.

    .venv/bin/python -m tests.chaos.long_run --minutes 30 [--seed N] [--jobs-per-second 2] [--fuzz-examples 2000]
    .venv/bin/python -m tests.chaos.long_run --ci --seed 20261123      # replay the CI test's run
    .venv/bin/python -m tests.chaos.long_run --minutes 30 --cluster 3  # three daemons on one PostgreSQL journal
    .venv/bin/python -m tests.chaos.long_run --ci --cluster 3 --seed 20261124  # replay the CI cluster run

Prints the seed first and the figures at the end: jobs, faults injected by kind, every
invariant (each must be 0), the daemon's memory before and after, and, unless
``--fuzz-examples 0``, how many bad inputs of each class the fuzz tests tried (they run
after the chaos run with that many examples per class). Exits 1 if an invariant broke,
keeping the run's folder (daemon log, journal, outputs) for inspection.

The same seed gives the same jobs and the same fault schedule (kinds, targets, times);
the daemon's own timing is not deterministic, so a replay re-creates the pressure, not
the exact interleaving. It uses the RabbitMQ on 127.0.0.1:5672 (``stop_app``/``start_app``
included), with names unique to the run; on a shared machine give it a broker and a
PostgreSQL of its own (``STENOD_TEST_AMQP_URL`` with ``STENOD_TEST_RABBITMQ_NODE``,
``STENOD_TEST_POSTGRES`` with ``STENOD_TEST_PG_CLUSTER``, docs/reliability.md, "The chaos run"). ``--cluster N`` runs N daemons on a fresh
PostgreSQL database (a 3 s lease) and adds their faults: a daemon paused past its lease,
a daemon kept down, the PostgreSQL server restarted (``pg_ctlcluster``: the machine's
server, shared like the broker, is started again whatever happens) and the run's database
sessions cut.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.chaos.checks import Check
from tests.chaos.plan import Phases, make_plan
from tests.chaos.run import run
from tests.chaos.test_chaos import (
    CI_CLUSTER_JOBS_PER_SECOND,
    CI_CLUSTER_PHASES,
    CI_JOBS_PER_SECOND,
    CI_PHASES,
)

ROOT = Path(__file__).resolve().parents[2]
FUZZ_TESTS = [
    "tests/integration/test_fuzz_requests.py",
    "tests/integration/test_fuzz_files.py",
    "tests/integration/test_fuzz_provider_responses.py",
]
_FUZZ_LINE = re.compile(r"FUZZ (.*)$", re.MULTILINE)
_PROBLEM_LINE = re.compile(r"^(?:FAILED|ERROR) .*$", re.MULTILINE)


def long_phases(minutes: float) -> Phases:
    """Warm-up ~5 % (at most a minute), storm ~80 %, soak ~15 % of the intake time."""
    total = minutes * 60.0
    warmup = min(60.0, total * 0.05)
    soak = total * 0.15
    return Phases(warmup=warmup, storm=total - warmup - soak, soak=soak)


def fuzz_counts(examples: int) -> tuple[list[str], Check]:
    """Run the fuzz tests with ``examples`` per class: their "FUZZ …" count lines, and the
    failing tests as a check (an invariant of the run like the others)."""
    env = {**os.environ, "STENOD_FUZZ_EXAMPLES": str(examples)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-rfE", "-p", "no:cacheprovider", "--timeout=0", *FUZZ_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "(no output)"
    failing = Check("fuzz tests failing")
    for line in _PROBLEM_LINE.findall(proc.stdout):
        failing.add(line)
    if proc.returncode != 0 and not failing.count:
        failing.add(f"pytest exited {proc.returncode}: {summary}")
    return [
        f"bad inputs tried by class (fuzz tests, {examples} examples per class, some capped): {summary}",
        *(f"  {line}" for line in _FUZZ_LINE.findall(proc.stdout)),
        *(f"  {line}" for line in _PROBLEM_LINE.findall(proc.stdout)),
    ], failing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="intake time (jobs and faults), not the drain")
    parser.add_argument("--seed", type=int, default=None, help="replay this seed (default: a new random one)")
    parser.add_argument("--ci", action="store_true", help="the CI test's phases and job rate (ignores --minutes)")
    parser.add_argument(
        "--cluster", type=int, default=1, help="daemons sharing one PostgreSQL journal (1: one daemon on SQLite)"
    )
    parser.add_argument("--jobs-per-second", type=float, default=2.0)
    parser.add_argument(
        "--broker-restart-every",
        type=float,
        default=120.0,
        help="mean seconds between RabbitMQ stop_app/start_app (the broker is shared: keep it rare)",
    )
    parser.add_argument(
        "--db-restart-every",
        type=float,
        default=120.0,
        help="with --cluster: mean seconds between PostgreSQL restarts (the server is shared: keep it rare)",
    )
    parser.add_argument("--fuzz-examples", type=int, default=2000, help="0: skip the fuzz tests")
    parser.add_argument("--dir", type=Path, default=None, help="run folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder even if all invariants hold")
    args = parser.parse_args(argv)

    seed = args.seed if args.seed is not None else secrets.randbits(31)
    print(f"seed {seed}", flush=True)
    if args.ci and args.cluster > 1:
        plan = make_plan(seed, CI_CLUSTER_PHASES, jobs_per_second=CI_CLUSTER_JOBS_PER_SECOND, cluster=args.cluster)
    elif args.ci:
        plan = make_plan(seed, CI_PHASES, jobs_per_second=CI_JOBS_PER_SECOND)
    else:
        plan = make_plan(
            seed,
            long_phases(args.minutes),
            jobs_per_second=args.jobs_per_second,
            every={"broker_restart": args.broker_restart_every, "db_restart": args.db_restart_every},
            cluster=args.cluster,
        )
    root = args.dir or Path(tempfile.mkdtemp(prefix=f"stenod-chaos-{seed}-"))
    root.mkdir(parents=True, exist_ok=True)
    figures = run(root, plan, drain_seconds=600.0, out=lambda line: print(line, flush=True))
    if args.fuzz_examples:
        lines, failing = fuzz_counts(args.fuzz_examples)
        figures.extra += lines
        figures.invariants.append(failing)
    shape = (
        "--ci"
        if args.ci
        else (
            f"--minutes {args.minutes:g} --jobs-per-second {args.jobs_per_second:g} "
            f"--broker-restart-every {args.broker_restart_every:g}"
        )
    )
    if args.cluster > 1:
        shape += f" --cluster {args.cluster}" + ("" if args.ci else f" --db-restart-every {args.db_restart_every:g}")
    command = f".venv/bin/python -m tests.chaos.long_run {shape} --seed {seed} --fuzz-examples {args.fuzz_examples}"
    figures.extra.append(f"reproduce: {command}")
    print(figures.render(), flush=True)
    if figures.violations():
        print(f"run folder kept: {root}")
        return 1
    if args.dir is None and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
