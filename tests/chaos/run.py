"""One chaos run, start to end: build the rig, run the workload and the faults, drain,
stop the daemon(s) gracefully, gather the evidence and turn it into figures (verdict.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos import evidence, verdict
from tests.chaos.broker import queue_depths
from tests.chaos.faults import FaultInjector
from tests.chaos.figures import Figures, Memory
from tests.chaos.plan import Plan
from tests.chaos.rig import Rig, rig
from tests.chaos.supervisor import Supervisor
from tests.chaos.workload import Created, Workload

MiB = 1024 * 1024


def run(root: Path, plan: Plan, *, drain_seconds: float = 240.0, out: Callable[[str], None] = print) -> Figures:
    """Run ``plan`` in ``root`` and return its figures (printing progress through ``out``)."""
    who = f"{plan.cluster} daemons on one PostgreSQL journal" if plan.cluster > 1 else "one daemon"
    out(
        f"chaos seed {plan.seed}, {who}: {len(plan.jobs)} jobs, {len(plan.faults)} faults planned over "
        f"{plan.phases.intake_end:.0f} s (warm-up {plan.phases.warmup:.0f} s, storm {plan.phases.storm:.0f} s, "
        f"soak {plan.phases.soak:.0f} s)"
    )
    started = time.monotonic()
    with rig(root, cluster=plan.cluster) as the_rig:
        t0 = time.monotonic()
        workload = Workload(the_rig, plan, t0)
        injector = FaultInjector(the_rig, plan, t0)
        workload.start()
        injector.start()
        try:
            time.sleep(max(0.0, t0 + plan.phases.warmup - time.monotonic()))
            rss_before = [s.rss() for s in the_rig.supervisors]
            out(f"warm-up done: {workload.created.jobs} jobs created, daemon {_mib(rss_before)}")
            _report_until(t0 + plan.phases.intake_end, the_rig, workload, out)
            workload.join()
        finally:
            # Also when the run fails: every fault under way ends (a paused daemon is woken,
            # the broker and the database are started again) before the rig is torn down.
            injector.stop()
        out(f"intake done: {workload.created.jobs} jobs created; faults {dict(injector.injected)}; draining")
        drained = _drain(the_rig, workload.created, drain_seconds)
        rss_after = [s.rss() for s in the_rig.supervisors]
        exit_codes = _stop_all(the_rig.supervisors)
        time.sleep(1.0)  # let the tap take the last confirmed events
        the_rig.tap.stop()
        memory = [
            Memory(before, after, s.peak_rss)
            for before, after, s in zip(rss_before, rss_after, the_rig.supervisors, strict=True)
        ]
        figures = verdict.figures(
            the_rig, plan, workload.created, injector, verdict.Ending(drained, memory, exit_codes)
        )
    figures.seconds = time.monotonic() - started
    return figures


def _mib(sizes: list[int]) -> str:
    return " / ".join(f"{size / MiB:.1f}" for size in sizes) + " MiB"


def _stop_all(supervisors: list[Supervisor]) -> list[int | None]:
    """SIGTERM every daemon at once (as systemd stops a machine's services); their exit codes."""
    codes: list[int | None] = [None] * len(supervisors)

    def stop(n: int) -> None:
        codes[n] = supervisors[n].stop()

    threads = [threading.Thread(target=stop, args=(n,)) for n in range(len(supervisors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def _report_until(deadline: float, the_rig: Rig, workload: Workload, out: Callable[[str], None]) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(30.0, left))
        total, open_, outbox = evidence.progress(the_rig.journal)
        incarnations = "/".join(str(len(s.incarnations)) for s in the_rig.supervisors)
        out(
            f"  {workload.created.jobs} created, {total} in the journal, {open_} open, {outbox} events waiting; "
            f"daemon incarnation {incarnations}"
        )


def _drain(the_rig: Rig, created: Created, seconds: float) -> bool:
    """Wait until every job finished, its events left the outbox and reached the tap, and the
    request queue is empty: a request requeued by a broker cut (a duplicate of a committed
    job) still has to be answered by a daemon before it stops."""
    journal = the_rig.journal
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        total, open_, outbox = evidence.progress(journal)
        if total >= created.jobs and open_ == 0 and outbox == 0:
            subjects = {
                t.event.get("subject")
                for t in the_rig.tap.snapshot()
                if t.event
                and isinstance(t.event.get("data"), dict)
                and t.event["data"].get("state") in evidence.TERMINAL
            }
            waiting, _ = queue_depths(the_rig.names).get(the_rig.names.requests, (0, 0))
            if len(subjects) >= total and waiting == 0:
                return True
        time.sleep(0.5)
    return False
