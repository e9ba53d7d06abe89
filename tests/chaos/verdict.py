"""The end of a chaos run: gather the evidence (journal, the providers' records, the tap,
the output folders, every daemon's log) and turn it into figures, every invariant a
``Check``. A cluster's daemons are judged together: a job is lost, submitted twice or
missing an event whichever daemon had it."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from dataclasses import dataclass

from support.harness import STENOD
from tests.chaos import checks, evidence, leases
from tests.chaos.broker import TappedEvent, dead_letters, queue_depths
from tests.chaos.faults import FaultInjector
from tests.chaos.figures import Figures, Memory
from tests.chaos.plan import Plan
from tests.chaos.rig import FOLDERS, Rig
from tests.chaos.supervisor import Supervisor
from tests.chaos.workload import Created

TAKEOVERS = "provider jobs taken over"
LEASES_LOST = "leases lost (fenced)"


@dataclass(frozen=True, slots=True)
class Ending:
    """How the run ended: drained in time, each daemon's memory and exit code at SIGTERM."""

    drained: bool
    memory: list[Memory]  # per daemon, in the rig's order
    exit_codes: list[int | None]


def figures(the_rig: Rig, plan: Plan, created: Created, injector: FaultInjector, ending: Ending) -> Figures:
    dirs = the_rig.dirs
    journal = evidence.read_journal(the_rig.journal)
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
    places = _places(the_rig, tapped)
    secrets = checks.leaks({f"{p} API": k for p, k in the_rig.keys.items()}, places)
    if blob_key := int(the_rig.fake_stats("sarvam")["blob_requests_with_api_key"]):
        secrets.add(f"sarvam API key sent to blob storage {blob_key} times")
    logs = {node.name or "daemon": evidence.log_events(node.log) for node in the_rig.nodes}
    lease = leases.from_logs(logs)
    invariants = [
        checks.lost_jobs(created, journal),
        checks.duplicate_jobs(created, journal),
        checks.duplicate_submissions(remote),
        per_batch,
        event_checks.missing,
        event_checks.disorder,
        event_checks.malformed,
        event_checks.unexpected,
        *([lease.writes_after_loss] if plan.cluster > 1 else []),
        output_checks.torn,
        output_checks.duplicate_sets,
        output_checks.temp_files,
        output_checks.stray,
        secrets,
        checks.signatures(places),
        _broker_leftovers(the_rig),
        _journal_state(the_rig, journal, ending.drained),
        *_daemon_checks(the_rig.supervisors, ending.exit_codes),
    ]
    succeeded = Counter(e.get("input") for log in logs.values() for e in log if e.get("event") == "item.succeeded")
    supervisors = the_rig.supervisors
    faults = Counter(
        {
            **injector.injected,
            "crash_after_commit fired": sum(s.hook_exits for s in supervisors),
            "failing files (…bad…)": sum("bad" in i.name for i in journal.items),
        }
    )
    if plan.cluster > 1:  # what the cluster faults led to (names with spaces: not injected kinds)
        faults[TAKEOVERS] = lease.takeovers
        faults[LEASES_LOST] = lease.lost
    info = {
        "daemon incarnations": _per_node(the_rig, [len(s.incarnations) for s in supervisors]),
        "provider jobs per batch (count (batch state): batches)": dict(sorted(spread.items())),
        "remote jobs abandoned, not billed twice (sarvam never started / vachana answer lost)": f"{remote['sarvam'].abandoned} / {remote['vachana'].abandoned}",
        "events received / distinct / redelivered": f"{len(tapped)} / {len(tapped) - event_checks.redelivered} / {event_checks.redelivered}",
        "outputs rewritten (same content, atomically) after a crash": sum(n - 1 for n in succeeded.values() if n > 1),
        "publish retries (broker away)": the_rig.publisher.retries,
        "faults that could not be injected": f"{len(injector.errors)} {injector.errors[:3] or ''}".strip(),
    }
    if plan.cluster > 1:
        info |= {
            "daemons that exited 1 while the database was away (restarted)": sum(s.journal_exits for s in supervisors),
            "jobs accepted per daemon": dict(sorted(Counter(str(j.instance) for j in journal.jobs.values()).items())),
        }
    return Figures(
        seed=plan.seed,
        jobs=Counter(spec.kind for spec in [*created.folder_inputs.values(), *created.requests.values()]),
        inputs=len(journal.items),
        outcomes=Counter(job.state for job in journal.jobs.values()),
        item_errors=Counter(i.error_code or "?" for i in journal.items if i.state == "failed"),
        faults=faults,
        invariants=invariants,
        info=info,
        memory=_worst(ending.memory),
    )


def _per_node(the_rig: Rig, values: list[int]) -> int | str:
    if len(values) == 1:
        return values[0]
    return ", ".join(f"{node.name} {v}" for node, v in zip(the_rig.nodes, values, strict=True))


def _worst(memories: list[Memory]) -> Memory:
    """The daemon closest to (or furthest over) its bound: the one the figure must be about."""
    return max(memories, key=lambda m: (not m.within_bound, m.after - m.bound))


def _daemon_checks(supervisors: list[Supervisor], exit_codes: list[int | None]) -> list[checks.Check]:
    crashes = checks.Check("daemon crashes or failed starts")
    orphans = checks.Check("processes left behind by killed daemons")
    several = len(supervisors) > 1
    for supervisor, exit_code in zip(supervisors, exit_codes, strict=True):
        who = f"{supervisor.name}: " if several else ""
        for crash in supervisor.crashes:
            crashes.add(who + crash)
        for pid in supervisor.not_ready:
            crashes.add(f"{who}pid {pid} never became ready")
        if exit_code != 0:
            crashes.add(f"{who}SIGTERM at the end: exit code {exit_code}")
        for pid in supervisor.orphans():
            orphans.add(f"{who}pid {pid}")
    return [crashes, orphans]


def _journal_state(the_rig: Rig, journal: evidence.Journal, drained: bool) -> checks.Check:
    check = checks.Check("journal damage or unsent events")
    if (result := evidence.integrity(the_rig.journal)) != "ok":
        check.add(f"integrity_check: {result}")
    if journal.outbox:
        check.add(f"{journal.outbox} events still in the outbox")
    if not drained:
        check.add("the run did not drain within the time allowed")
    return check


def _places(the_rig: Rig, tapped: list[TappedEvent]) -> dict[str, str]:
    """Every text a secret must not reach: logs, events, error and output files, journal, `stenod config`."""
    dirs = the_rig.dirs
    several = len(the_rig.nodes) > 1
    places = {
        f"{node.name} log" if several else "daemon log": node.log.read_text(errors="replace") for node in the_rig.nodes
    }
    places["events"] = "\n".join(t.body.decode("utf-8", "replace") for t in tapped)
    places["journal"] = evidence.journal_dump(the_rig.journal)
    own = {*(n.log for n in the_rig.nodes), *(n.config for n in the_rig.nodes), *map(dirs.fake_log, the_rig.fakes)}
    files = [
        p
        for p in dirs.root.rglob("*")
        if p.is_file() and p.parent != dirs.creds and not p.name.startswith("journal.db") and p not in own
    ]
    places["files (outputs, *.error.json, …)"] = "\n".join(p.read_text(errors="replace") for p in files)
    for node in the_rig.nodes:
        config = subprocess.run(
            [*STENOD, "config", "--config", str(node.config)],
            capture_output=True,
            text=True,
            env={**os.environ, **the_rig.env},
            timeout=120,
        )
        places[f"`stenod config` ({node.name})" if several else "`stenod config`"] = config.stdout + config.stderr
    return places


def _broker_leftovers(the_rig: Rig) -> checks.Check:
    check = checks.Check("requests left in the broker or dead-lettered")
    depths = queue_depths(the_rig.names)
    for queue in (the_rig.names.requests, the_rig.names.dead):
        messages, unacked = depths.get(queue, (0, 0))
        if messages or unacked:
            check.add(f"{queue}: {messages} messages, {unacked} unacknowledged")
            if queue == the_rig.names.dead:
                for line in dead_letters(the_rig.names):
                    check.examples.append(f"  dead-lettered {line}")  # detail, not another count
    return check
