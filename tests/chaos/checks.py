"""The chaos invariants, each a pure function of the evidence returning a ``Check``: how
many violations and the first few of them, so a failing run says what went wrong."""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stenod.adapters.folders.writers import ERROR_SUFFIX, safe_stem
from tests.chaos.broker import TappedEvent
from tests.chaos.evidence import TERMINAL, Journal, RemoteJobs
from tests.chaos.workload import Created

_EXAMPLES = 5
_RANK = {"accepted": 0, "submitted": 1, "running": 2, **dict.fromkeys(TERMINAL, 3)}
_SIGNATURE = re.compile(r"sig=(?!\*\*\*)[A-Za-z0-9%+/=_-]{8,}")


@dataclass(slots=True)
class Check:
    """One invariant: it holds when ``count`` is 0."""

    name: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(example)


def lost_jobs(created: Created, journal: Journal) -> Check:
    """Every input and request the workload handed over became a job that finished."""
    check = Check("lost jobs")
    by_input = journal.jobs_by_input()
    for path in created.folder_inputs:
        if path not in by_input:
            check.add(f"{path}: never became a job")
    requests = {job.request_id for job in journal.jobs.values()}
    for request_id in created.requests:
        if request_id not in requests:
            check.add(f"request {request_id}: never became a job")
    for request_id in created.unconfirmed:
        check.add(f"request {request_id}: the broker never confirmed it")
    for job in journal.jobs.values():
        if job.state not in TERMINAL:
            check.add(f"job {job.job_id} ({job.source}, {job.provider}) is still {job.state}")
    return check


def duplicate_jobs(created: Created, journal: Journal) -> Check:
    """A file is one job, however often the daemon restarted and rescanned its folder."""
    check = Check("duplicate jobs")
    for path, jobs in journal.jobs_by_input().items():
        if len(set(jobs)) > 1:
            check.add(f"{path}: jobs {sorted(set(jobs))}")
    return check


def duplicate_submissions(remote: Mapping[str, RemoteJobs]) -> Check:
    """No input ever ran in two remote (billed) provider jobs."""
    check = Check("duplicate submissions")
    for provider, jobs in remote.items():
        for name, ids in sorted(jobs.by_name.items()):
            if len(ids) > 1:
                check.add(f"{provider}: {name} in remote jobs {sorted(ids)}")
    return check


def provider_jobs_per_batch(journal: Journal, remote: Mapping[str, RemoteJobs]) -> tuple[Check, Counter[str]]:
    """Each finished batch ran as exactly one remote job; a failed one as at most one."""
    check = Check("batches not run as exactly one provider job")
    spread: Counter[str] = Counter()
    names = journal.names_by_batch()
    for batch in journal.batches.values():
        jobs = remote.get(batch.provider)
        if jobs is None:
            continue
        ids = set().union(*(jobs.by_name.get(n, set()) for n in names.get(batch.batch_id, ())))
        spread[f"{len(ids)} ({batch.state})"] += 1
        if len(ids) > 1 or (batch.state == "done" and len(ids) != 1):
            check.add(f"{batch.provider} batch {batch.batch_id} ({batch.state}): remote jobs {sorted(ids)}")
    return check, spread


@dataclass(slots=True)
class EventChecks:
    missing: Check
    disorder: Check
    malformed: Check
    unexpected: Check
    redelivered: int = 0


def events(journal: Journal, tapped: Iterable[TappedEvent]) -> EventChecks:
    """Every job's terminal event arrived (at least once), per job in state order."""
    result = EventChecks(
        Check("missing terminal events"),
        Check("events out of order"),
        Check("malformed events"),
        Check("events about unknown jobs"),
    )
    seen: set[str] = set()
    by_job: dict[str, list[str]] = defaultdict(list)
    for t in tapped:
        event = t.event
        if event is None or not isinstance(event.get("data"), dict) or "id" not in event:
            result.malformed.add(t.body[:120].decode("utf-8", "replace"))
            continue
        if event["id"] in seen:
            result.redelivered += 1
            continue
        seen.add(event["id"])
        by_job[str(event.get("subject"))].append(str(event["data"].get("state")))
    for job_id, states in by_job.items():
        if job_id not in journal.jobs:
            result.unexpected.add(f"{job_id}: {states}")
            continue
        ranks = [_RANK.get(s, -1) for s in states]
        if any(r < 0 for r in ranks) or ranks != sorted(ranks):
            result.disorder.add(f"{job_id}: {states}")
    for job in journal.jobs.values():
        if job.state in TERMINAL and job.state not in by_job.get(job.job_id, []):
            result.missing.add(
                f"{job.job_id} ({job.source}, {job.provider}) ended {job.state}; "
                f"events seen: {by_job.get(job.job_id, [])}"
            )
    return result


@dataclass(slots=True)
class OutputChecks:
    torn: Check
    duplicate_sets: Check
    temp_files: Check
    stray: Check


def outputs(journal: Journal, root: Path, input_dirs: Iterable[Path]) -> OutputChecks:
    """Each finished input has one complete output set (or one error file), nothing else."""
    result = OutputChecks(
        Check("torn or missing outputs"),
        Check("duplicate output sets"),
        Check("leftover temp files"),
        Check("files outside the expected set"),
    )
    expected: dict[Path, set[str]] = defaultdict(set)
    listings: dict[Path, dict[str, set[str]]] = {}
    for item in journal.items:
        job = journal.jobs[item.job_id]
        folder, stem = Path(item.input).parent, safe_stem(item.name)
        formats = job.output.get("formats") or []
        transcript = {f"{stem}.{fmt}" for fmt in formats}
        expected[folder] |= {item.name, *transcript, stem + ERROR_SUFFIX}
        if folder not in listings:
            listings[folder] = _by_stem(folder)
        present = listings[folder].get(stem, set()) - {item.name}
        if item.state == "succeeded":
            wanted = transcript
        elif item.state == "failed":
            wanted = {stem + ERROR_SUFFIX}
        else:
            continue
        if present != wanted:
            result.duplicate_sets.add(f"{folder / stem}: {item.state}, files {sorted(present)}")
        for name in sorted(wanted):
            problem = _incomplete(folder / name)
            if problem:
                result.torn.add(f"{folder / name}: {problem}")
    for temp in root.rglob("*.stenod-tmp"):
        result.temp_files.add(str(temp))
    for folder in input_dirs:
        for path in sorted(folder.iterdir()):
            if path.name not in expected[folder]:
                result.stray.add(str(path))
    return result


def _by_stem(folder: Path) -> dict[str, set[str]]:
    """The folder's file names under every stem they could belong to (``a.b.c``: ``a``, ``a.b``)."""
    index: dict[str, set[str]] = defaultdict(set)
    for name in os.listdir(folder) if folder.is_dir() else ():
        for at, char in enumerate(name):
            if char == "." and at:
                index[name[:at]].add(name)
    return index


def _incomplete(path: Path) -> str | None:
    """Why the output file is not a complete one of its kind (None: it is)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    name = path.name
    if name.endswith(".json"):
        try:
            value = json.loads(text)
        except ValueError:
            return "not valid JSON"
        key = "error" if name.endswith(ERROR_SUFFIX) else "text"
        return None if isinstance(value, dict) and key in value else f"JSON without {key!r}"
    if not text.endswith("\n"):
        return "does not end with a newline (cut short?)"
    if name.endswith(".srt") and "-->" not in text:
        return "SRT without a cue"
    if name.endswith(".vtt") and not text.startswith("WEBVTT"):
        return "VTT without its header"
    return None if text.strip() else "empty"


def leaks(secrets: Mapping[str, str], places: Mapping[str, str]) -> Check:
    """No secret appears in any of the places (name: text)."""
    check = Check("API key leaks")
    for place, text in places.items():
        for name, secret in secrets.items():
            if secret in text:
                check.add(f"{name} key in {place}")
    return check


def signatures(places: Mapping[str, str]) -> Check:
    """No presigned-URL signature (a bearer credential for the blob) is written anywhere."""
    check = Check("presigned URL signatures written")
    for place, text in places.items():
        if match := _SIGNATURE.search(text):
            check.add(f"{place}: …{match.group(0)[:16]}…")
    return check
