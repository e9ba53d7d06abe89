"""One chaos run, start to end: build the rig, run the workload and the faults, drain,
stop the daemon gracefully, gather the evidence and turn it into figures."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.chaos import checks, evidence
from tests.chaos.broker import TappedEvent, queue_depths
from tests.chaos.faults import FaultInjector
from tests.chaos.figures import Figures, Memory
from tests.chaos.plan import Plan
from tests.chaos.rig import FOLDERS, Rig, rig
from tests.chaos.supervisor import Supervisor
from tests.chaos.workload import Created, Workload
from tests.e2e.harness import STENOD

MiB = 1024 * 1024


def run(root: Path, plan: Plan, *, drain_seconds: float = 240.0, out: Callable[[str], None] = print) -> Figures:
    """Run ``plan`` in ``root`` and return its figures (printing progress through ``out``)."""
    out(
        f"chaos seed {plan.seed}: {len(plan.jobs)} jobs, {len(plan.faults)} faults planned over "
        f"{plan.phases.intake_end:.0f} s (warm-up {plan.phases.warmup:.0f} s, storm {plan.phases.storm:.0f} s, "
        f"soak {plan.phases.soak:.0f} s)"
    )
    started = time.monotonic()
    with rig(root) as the_rig:
        t0 = time.monotonic()
        workload = Workload(the_rig, plan, t0)
        injector = FaultInjector(the_rig, plan, t0)
        workload.start()
        injector.start()
        time.sleep(max(0.0, t0 + plan.phases.warmup - time.monotonic()))
        rss_before = the_rig.supervisor.rss()
        out(f"warm-up done: {workload.created.jobs} jobs created, daemon {rss_before / MiB:.1f} MiB")
        _report_until(t0 + plan.phases.intake_end, the_rig, workload, out)
        workload.join()
        injector.stop()
        out(f"intake done: {workload.created.jobs} jobs created; faults {dict(injector.injected)}; draining")
        drained = _drain(the_rig, workload.created, drain_seconds)
        rss_after = the_rig.supervisor.rss()
        exit_code = the_rig.supervisor.stop()
        time.sleep(1.0)  # let the tap take the last confirmed events
        the_rig.tap.stop()
        figures = _figures(
            the_rig,
            plan,
            workload.created,
            injector,
            drained=drained,
            memory=Memory(rss_before, rss_after, the_rig.supervisor.peak_rss),
            exit_code=exit_code,
        )
    figures.seconds = time.monotonic() - started
    return figures


def _report_until(deadline: float, the_rig: Rig, workload: Workload, out: Callable[[str], None]) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(30.0, left))
        total, open_, outbox = evidence.progress(the_rig.dirs.state / "journal.db")
        out(
            f"  {workload.created.jobs} created, {total} in the journal, {open_} open, {outbox} events waiting; "
            f"daemon incarnation {len(the_rig.supervisor.incarnations)}"
        )


def _drain(the_rig: Rig, created: Created, seconds: float) -> bool:
    """Wait until every job finished, its events left the outbox and reached the tap, and the
    request queue is empty: a request requeued by a broker cut (a duplicate of a committed
    job) still has to be answered by a daemon before it stops."""
    journal = the_rig.dirs.state / "journal.db"
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


def _figures(
    the_rig: Rig,
    plan: Plan,
    created: Created,
    injector: FaultInjector,
    *,
    drained: bool,
    memory: Memory,
    exit_code: int | None,
) -> Figures:
    dirs = the_rig.dirs
    db = dirs.state / "journal.db"
    journal = evidence.read_journal(db)
    finished = {b.batch_id for b in journal.batches.values() if b.state == "done"}
    remote = {
        "echo": evidence.echo_jobs(dirs.ledger),
        "sarvam": evidence.sarvam_jobs(the_rig.fake_stats("sarvam")),
        "vachana": evidence.vachana_jobs(the_rig.fake_stats("vachana"), finished),
    }
    tapped = the_rig.tap.snapshot()
    event_checks = checks.events(journal, tapped)
    input_dirs = [dirs.inbox(p) for p in FOLDERS.values()] + sorted(p for p in dirs.roots.iterdir() if p.is_dir())
    output_checks = checks.outputs(journal, dirs.root, input_dirs)
    per_batch, spread = checks.provider_jobs_per_batch(journal, remote)
    places = _places(the_rig, db, tapped)
    secrets = checks.leaks({f"{p} API": k for p, k in the_rig.keys.items()}, places)
    if blob_key := int(the_rig.fake_stats("sarvam")["blob_requests_with_api_key"]):
        secrets.add(f"sarvam API key sent to blob storage {blob_key} times")
    invariants = [
        checks.lost_jobs(created, journal),
        checks.duplicate_jobs(created, journal),
        checks.duplicate_submissions(remote),
        per_batch,
        event_checks.missing,
        event_checks.disorder,
        event_checks.malformed,
        event_checks.unexpected,
        output_checks.torn,
        output_checks.duplicate_sets,
        output_checks.temp_files,
        output_checks.stray,
        secrets,
        checks.signatures(places),
        _broker_leftovers(the_rig),
        _journal_state(db, journal, drained),
        *_daemon_checks(the_rig.supervisor, exit_code),
    ]
    log = evidence.log_events(dirs.log)
    rewrites = sum(
        n - 1 for n in Counter(e.get("input") for e in log if e.get("event") == "item.succeeded").values() if n > 1
    )
    return Figures(
        seed=plan.seed,
        jobs=Counter(spec.kind for spec in [*created.folder_inputs.values(), *created.requests.values()]),
        inputs=len(journal.items),
        outcomes=Counter(job.state for job in journal.jobs.values()),
        item_errors=Counter(i.error_code or "?" for i in journal.items if i.state == "failed"),
        faults=Counter(
            {
                **injector.injected,
                "crash_after_commit fired": the_rig.supervisor.hook_exits,
                "failing files (…bad…)": sum("bad" in i.name for i in journal.items),
            }
        ),
        invariants=invariants,
        info={
            "daemon incarnations": len(the_rig.supervisor.incarnations),
            "provider jobs per batch (count (batch state): batches)": dict(sorted(spread.items())),
            "remote jobs abandoned, not billed twice (sarvam never started / vachana answer lost)": f"{remote['sarvam'].abandoned} / {remote['vachana'].abandoned}",
            "events received / distinct / redelivered": f"{len(tapped)} / {len(tapped) - event_checks.redelivered} / {event_checks.redelivered}",
            "outputs rewritten (same content, atomically) after a crash": rewrites,
            "publish retries (broker away)": the_rig.publisher.retries,
            "faults that could not be injected": f"{len(injector.errors)} {injector.errors[:3] or ''}".strip(),
        },
        memory=memory,
    )


def _daemon_checks(supervisor: Supervisor, exit_code: int | None) -> list[checks.Check]:
    crashes = checks.Check("daemon crashes or failed starts")
    for crash in supervisor.crashes:
        crashes.add(crash)
    for pid in supervisor.not_ready:
        crashes.add(f"pid {pid} never became ready")
    if exit_code != 0:
        crashes.add(f"SIGTERM at the end: exit code {exit_code}")
    orphans = checks.Check("processes left behind by killed daemons")
    for pid in supervisor.orphans():
        orphans.add(f"pid {pid}")
    return [crashes, orphans]


def _journal_state(db: Path, journal: evidence.Journal, drained: bool) -> checks.Check:
    check = checks.Check("journal damage or unsent events")
    if (result := evidence.integrity(db)) != "ok":
        check.add(f"integrity_check: {result}")
    if journal.outbox:
        check.add(f"{journal.outbox} events still in the outbox")
    if not drained:
        check.add("the run did not drain within the time allowed")
    return check


def _places(the_rig: Rig, db: Path, tapped: list[TappedEvent]) -> dict[str, str]:
    """Every text a secret must not reach: log, events, error and output files, journal, `stenod config`."""
    dirs = the_rig.dirs
    places = {
        "daemon log": dirs.log.read_text(errors="replace"),
        "events": "\n".join(t.body.decode("utf-8", "replace") for t in tapped),
        "journal": evidence.journal_dump(db),
    }
    own = {dirs.log, the_rig.config, *(dirs.fake_log(p) for p in the_rig.fakes)}  # not the daemon's writing
    files = [
        p
        for p in dirs.root.rglob("*")
        if p.is_file() and p.parent != dirs.creds and not p.name.startswith("journal.db") and p not in own
    ]
    places["files (outputs, *.error.json, …)"] = "\n".join(p.read_text(errors="replace") for p in files)
    config = subprocess.run(
        [*STENOD, "config", "--config", str(the_rig.config)],
        capture_output=True,
        text=True,
        env={**os.environ, **the_rig.env},
        timeout=120,
    )
    places["`stenod config`"] = config.stdout + config.stderr
    return places


def _broker_leftovers(the_rig: Rig) -> checks.Check:
    check = checks.Check("requests left in the broker or dead-lettered")
    depths = queue_depths(the_rig.names)
    for queue in (the_rig.names.requests, the_rig.names.dead):
        messages, unacked = depths.get(queue, (0, 0))
        if messages or unacked:
            check.add(f"{queue}: {messages} messages, {unacked} unacknowledged")
    return check
