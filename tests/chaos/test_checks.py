"""The chaos checker catches what it claims to: each invariant, fed evidence with one
defect planted, counts it (a checker that always says 0 would make the chaos run vacuous)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.chaos import checks, leases
from tests.chaos.broker import TappedEvent
from tests.chaos.evidence import BatchRow, ItemRow, JobRow, Journal, RemoteJobs
from tests.chaos.figures import Memory
from tests.chaos.plan import JobSpec, Phases, make_plan
from tests.chaos.workload import Created

SPEC = JobSpec(0.0, 1, "folder_echo", ("a.wav",), renamed=True)


def journal(tmp: Path, *, state: str = "succeeded", item_state: str = "succeeded") -> Journal:
    job = JobRow("J1", None, "folder", "echo", state, {"formats": ["txt", "json"]})
    item = ItemRow("I1", "J1", str(tmp / "a.wav"), "a.wav", item_state, "B1", (), None)
    return Journal({"J1": job}, [item], {"B1": BatchRow("B1", "echo", "done")}, 0)


def event(subject: str, state: str, event_id: str) -> TappedEvent:
    body = {"id": event_id, "subject": subject, "data": {"state": state}}
    return TappedEvent(json.dumps(body).encode(), body, 0.0)


def test_an_input_that_never_became_a_job_and_an_unfinished_job_are_lost(tmp_path: Path) -> None:
    created = Created(folder_inputs={str(tmp_path / "a.wav"): SPEC, str(tmp_path / "b.wav"): SPEC})
    assert checks.lost_jobs(created, journal(tmp_path)).count == 1
    assert checks.lost_jobs(Created(), journal(tmp_path, state="running")).count == 1


def test_an_input_in_two_remote_jobs_is_a_duplicate_submission() -> None:
    remote = {"echo": RemoteJobs({"a.wav": {"echo-B1", "echo-B2"}, "b.wav": {"echo-B3"}}, 0)}
    assert checks.duplicate_submissions(remote).count == 1


def test_a_finished_batch_without_its_remote_job_is_reported(tmp_path: Path) -> None:
    check, spread = checks.provider_jobs_per_batch(journal(tmp_path), {"echo": RemoteJobs({}, 0)})
    assert check.count == 1 and spread["0 (done)"] == 1


def test_missing_disordered_malformed_and_unknown_events_are_counted_and_redeliveries_are_not(tmp_path: Path) -> None:
    tapped = [
        event("J1", "succeeded", "e2"),
        event("J1", "accepted", "e1"),
        event("J1", "succeeded", "e2"),
        event("J9", "accepted", "e3"),
        TappedEvent(b"not json", None, 0.0),
    ]
    result = checks.events(journal(tmp_path), tapped)
    assert (
        result.missing.count,
        result.disorder.count,
        result.malformed.count,
        result.unexpected.count,
        result.redelivered,
    ) == (0, 1, 1, 1, 1)
    assert checks.events(journal(tmp_path), [event("J1", "accepted", "e1")]).missing.count == 1


def test_torn_duplicate_temporary_and_stray_files_are_found(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"audio")
    (tmp_path / "a.txt").write_text("hello")  # no final newline: cut short
    (tmp_path / "a.json").write_text('{"text": "hel')
    (tmp_path / "a.error.json").write_text('{"error": {}}\n')  # a success with an error file too
    (tmp_path / ".a.txt.1.2.stenod-tmp").write_text("h")
    (tmp_path / "stray.bin").write_bytes(b"?")
    result = checks.outputs(journal(tmp_path), tmp_path, [tmp_path])
    assert (result.torn.count, result.duplicate_sets.count, result.temp_files.count) == (2, 1, 1)
    assert result.stray.examples == [str(tmp_path / ".a.txt.1.2.stenod-tmp"), str(tmp_path / "stray.bin")]


def test_complete_outputs_pass(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"audio")
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "a.json").write_text('{"text": "hello"}\n')
    result = checks.outputs(journal(tmp_path), tmp_path, [tmp_path])
    assert [c.count for c in (result.torn, result.duplicate_sets, result.temp_files, result.stray)] == [0, 0, 0, 0]


def test_a_key_or_a_presigned_signature_anywhere_is_a_leak() -> None:
    places = {"log": "… CANARY-sarvam-1 …", "events": "url?sv=1&sig=abcDEF123456%2B&se=2", "ok": "sig=***&x"}
    assert checks.leaks({"sarvam": "CANARY-sarvam-1", "vachana": "CANARY-vachana-2"}, places).count == 1
    assert checks.signatures(places).count == 1


def test_memory_after_the_run_is_bounded_by_memory_before_it() -> None:
    mib = 1024 * 1024
    assert Memory(80 * mib, 100 * mib, 100 * mib).within_bound
    assert not Memory(80 * mib, 200 * mib, 200 * mib).within_bound
    assert not Memory(80 * mib, 0, 0).within_bound  # no reading is no evidence


def test_a_seed_always_gives_the_same_plan_and_another_seed_another() -> None:
    phases = Phases(warmup=5, storm=60, soak=10)
    assert make_plan(42, phases, jobs_per_second=2) == make_plan(42, phases, jobs_per_second=2)
    assert make_plan(42, phases, jobs_per_second=2) != make_plan(43, phases, jobs_per_second=2)
    plan = make_plan(42, phases, jobs_per_second=2)
    kills = [f.at for f in plan.faults if f.kind == "daemon_kill"]
    assert kills and all(5 <= at < 65 for at in kills)  # no kills in the warm-up or the soak


def test_a_cluster_plan_strikes_named_daemons_and_the_database_only_in_the_storm() -> None:
    phases = Phases(warmup=5, storm=60, soak=10)
    plan = make_plan(42, phases, jobs_per_second=2, cluster=3)
    assert plan == make_plan(42, phases, jobs_per_second=2, cluster=3)
    struck = [f for f in plan.faults if f.kind in ("daemon_kill", "daemon_pause", "daemon_freeze")]
    assert struck and {f.target for f in struck} <= {"node-a", "node-b", "node-c"}
    assert all(f.seconds > 3.0 for f in struck if f.kind != "daemon_kill")  # past the lease
    cluster_kinds = ("daemon_pause", "daemon_freeze", "db_restart", "db_cut")
    cluster_only = [f for f in plan.faults if f.kind in cluster_kinds]
    assert cluster_only and all(5 <= f.at < 65 for f in cluster_only)
    single = make_plan(42, phases, jobs_per_second=2)
    daemon_faults = [f for f in single.faults if f.kind.startswith("daemon") or f.kind == "crash_after_commit"]
    assert single.cluster == 1 and not [f for f in single.faults if f.kind in cluster_kinds]
    assert daemon_faults and not [f for f in daemon_faults if f.target or f.seconds]  # as before clusters


def log(event: str, batch: str, at: str, **extra: str) -> dict[str, str]:
    return {"event": event, "batch_id": batch, "timestamp": f"2026-01-01T00:00:{at}Z", **extra}


def test_a_write_after_a_lost_lease_is_caught_and_a_takeover_counted() -> None:
    logs = {
        "node-a": [
            log("batch.submitted", "B1", "01"),
            log("batch.lease_lost", "B1", "05"),
            log("item.succeeded", "B1", "06", input="a.wav"),  # written after it knew: a violation
        ],
        "node-b": [log("batch.claimed", "B1", "04"), log("item.succeeded", "B1", "05", input="a.wav")],
    }
    evidence = leases.from_logs(logs)
    assert (evidence.writes_after_loss.count, evidence.takeovers, evidence.lost) == (1, 1, 1)
    logs["node-a"].insert(2, log("batch.claimed", "B1", "05"))  # it took the job back first: fine
    assert leases.from_logs(logs).writes_after_loss.count == 0
