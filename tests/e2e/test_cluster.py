"""Several daemons on one PostgreSQL journal, watching one folder, against the fake Sarvam
server: a file becomes one job; an instance killed mid-job has its job finished by
another from its checkpoint, with no second submission; an instance paused past its lease
writes nothing for the job it lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from stenod.fault_points import PAUSE_AT
from support.harness import Daemon, fake_server, start, wait_for, write_config, write_wav
from support.postgres import fresh_database
from tests.e2e.test_sarvam_e2e import KEY, inject, stats

pytestmark = pytest.mark.slow

LEASE = 3.0


@pytest.fixture
def sarvam_url() -> Iterator[str]:
    with fake_server("tests.fakes.sarvam", "--api-key", KEY) as url:
        yield url


@pytest.fixture
def database(clean_env) -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def cluster(tmp_path: Path, sarvam_url: str, database: str) -> Iterator[dict[str, Daemon]]:
    """Three instances on two config files, as docs/cluster.md starts them:
    node-a from its own, node-b and node-c from one shared file, node-c with its name and
    state directory from the environment. One database; all watch ``tmp_path/inbox``."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    def config(name: str) -> Path:
        home = tmp_path / name
        home.mkdir()
        return write_config(
            home / "stenod.toml",
            top={"state_dir": home / "state", "instance_id": name, "log_format": "json", "pack_window_seconds": 0.2},
            sections={"journal": {"backend": "postgresql", "url": database, "lease_seconds": LEASE}},
            watch=[
                {
                    "path": inbox,
                    "provider": "sarvam",
                    "language": "hi-IN",
                    "formats": ["txt", "json"],
                    "settle_seconds": 0.3,
                }
            ],
            providers={"sarvam": {"api_key": KEY, "base_url": sarvam_url, "poll_interval_seconds": 0.2}},
        )

    first, shared = config("node-a"), config("node-b")
    (tmp_path / "node-c").mkdir()
    daemons = {
        "node-a": Daemon(first, tmp_path / "node-a" / "daemon.log"),
        "node-b": Daemon(shared, tmp_path / "node-b" / "daemon.log"),
        "node-c": Daemon(
            shared,
            tmp_path / "node-c" / "daemon.log",
            env={"STENOD_INSTANCE_ID": "node-c", "STENOD_STATE_DIR": str(tmp_path / "node-c" / "state")},
        ),
    }
    yield daemons
    for daemon in daemons.values():
        if daemon.proc is not None and daemon.proc.poll() is None:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        daemon.kill()


def query(url: str, sql: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql.encode()).fetchall()


def holder(url: str) -> str | None:
    rows = query(url, "SELECT DISTINCT b.holder FROM batches b JOIN items i ON i.batch_id = b.id")
    return rows[0]["holder"] if rows else None


def job_event_kinds(url: str) -> list[str]:
    return [r["kind"] for r in query(url, "SELECT kind FROM job_events ORDER BY seq")]


def assert_one_job_finished_once(url: str, sarvam_url: str) -> None:
    # The outputs are written before the journal records them: the job may end a moment later.
    wait_for(lambda: [r["state"] for r in query(url, "SELECT state FROM jobs")] == ["succeeded"], "the job to end", 30)
    counts = stats(sarvam_url)
    assert (counts["jobs_created"], counts["jobs_started"]) == (1, 1)
    kinds = job_event_kinds(url)
    assert kinds[0] == "accepted" and kinds.count("accepted") == 1
    assert kinds[-1] == "succeeded" and kinds.count("succeeded") == 1


def test_a_file_in_a_shared_folder_becomes_one_job_whichever_instance_sees_it(cluster, database, sarvam_url, tmp_path):
    for daemon in cluster.values():
        start(daemon)
    for n in range(3):
        write_wav(tmp_path / "inbox" / f"call{n}.wav")
    for n in range(3):
        wait_for((tmp_path / "inbox" / f"call{n}.json").exists, f"call{n}.json")
    states = lambda: [r["state"] for r in query(database, "SELECT state FROM jobs")]  # noqa: E731
    wait_for(lambda: states() == ["succeeded"] * 3, "the three jobs to end", 30)
    uploaded = [name for job in stats(sarvam_url)["jobs"].values() for name in job["uploads"]]
    assert sorted(uploaded) == ["call0.wav", "call1.wav", "call2.wav"]  # each file sent once


@pytest.mark.parametrize("route", ["upload_files", "start", "status", "download_files"])
def test_an_instance_killed_mid_job_has_it_finished_by_another_without_a_second_submission(
    cluster, database, sarvam_url, tmp_path, route
):
    inject(sarvam_url, {"route": route, "delay": 4})
    for daemon in cluster.values():
        start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for(lambda: stats(sarvam_url)["calls"].get(route), f"an instance to reach {route}")
    victim = holder(database)
    assert victim in cluster
    killed_at = time.monotonic()
    cluster[victim].kill()
    wait_for(lambda: holder(database) not in (None, victim), "another instance to take the job over", 30)
    taken_after = time.monotonic() - killed_at
    wait_for((tmp_path / "inbox" / "call.json").exists, "call.json, finished by another instance", 60)
    assert_one_job_finished_once(database, sarvam_url)
    survivor = cluster[holder(database)]
    assert survivor.named("batch.claimed")
    print(f"taken over {taken_after:.1f} s after the kill (lease {LEASE} s)")
    assert taken_after < LEASE + LEASE / 3 + 5  # lease + one renewal interval, with room for a busy machine


def test_an_instance_paused_past_its_lease_writes_nothing_for_the_job_it_lost(cluster, database, sarvam_url, tmp_path):
    inject(sarvam_url, {"route": "status", "delay": 2})
    for daemon in cluster.values():
        start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for(lambda: stats(sarvam_url)["calls"].get("status"), "the job to be polled")
    paused_name = holder(database)
    paused = cluster[paused_name]
    os.kill(paused.process.pid, signal.SIGSTOP)
    try:
        outputs = tmp_path / "inbox" / "call.json"
        wait_for(outputs.exists, "call.json, finished by another instance", 60)
        written = outputs.stat().st_mtime_ns
        kinds_before = job_event_kinds(database)
    finally:
        os.kill(paused.process.pid, signal.SIGCONT)
    wait_for(lambda: paused.named("batch.lease_lost"), "the paused instance to learn it lost the job", 30)
    time.sleep(3)  # whatever it was doing when it was paused has run its course
    assert outputs.stat().st_mtime_ns == written
    assert job_event_kinds(database) == kinds_before
    assert not paused.named("item.succeeded")
    assert paused.alive
    assert_one_job_finished_once(database, sarvam_url)


def test_a_holder_frozen_between_renewing_its_lease_and_writing_the_outputs_writes_and_reports_nothing(
    cluster, database, sarvam_url, tmp_path
):
    """Found by the cluster chaos run (seed 368875535): node-a renewed its lease to write a
    job's outputs, its process was frozen for 7.6 s (lease 3 s), node-b took the job over
    and finished it; thawed, node-a went on writing the files (replacing node-b's) and
    logged ``item.succeeded`` before the journal refused the outcome. Here node-a stops
    itself at that very point (the ``outputs`` fault point), node-b finishes the job."""
    frozen = cluster["node-a"]
    frozen.env[PAUSE_AT] = "outputs"
    start(frozen)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for(lambda: psutil.Process(frozen.process.pid).status() == psutil.STATUS_STOPPED, "node-a to freeze", 60)
    assert holder(database) == "node-a"
    try:
        start(cluster["node-b"])
        outputs = [tmp_path / "inbox" / "call.txt", tmp_path / "inbox" / "call.json"]
        wait_for(lambda: all(o.exists() for o in outputs), "the outputs, written by node-b", 60)
        assert holder(database) == "node-b"
        written = [(o.stat().st_ino, o.stat().st_mtime_ns) for o in outputs]
        kinds_before = job_event_kinds(database)
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)
    wait_for(lambda: frozen.named("batch.lease_lost"), "node-a to learn it lost the job", 30)
    time.sleep(2)  # whatever node-a was doing when it froze has run its course
    assert [(o.stat().st_ino, o.stat().st_mtime_ns) for o in outputs] == written
    assert not list((tmp_path / "inbox").glob(".*.stenod-tmp"))
    assert not frozen.named("item.succeeded") and not frozen.named("item.failed")
    assert job_event_kinds(database) == kinds_before
    assert frozen.alive
    assert_one_job_finished_once(database, sarvam_url)


def test_a_second_daemon_under_the_same_instance_id_is_refused(cluster, database, tmp_path):
    first = start(cluster["node-a"])
    twin = Daemon(cluster["node-a"].config, tmp_path / "twin.log").start()
    assert twin.process.wait(timeout=120) == 2
    text = (tmp_path / "twin.log").read_text()
    assert "instance_id 'node-a' is already running" in text and f"pid {first.process.pid}" in text
    assert first.alive


def test_an_instance_killed_while_creating_the_remote_job_leaves_at_most_an_empty_unstarted_one(
    cluster, database, sarvam_url, tmp_path
):
    inject(sarvam_url, {"route": "init", "delay": 4})
    for daemon in cluster.values():
        start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for(lambda: stats(sarvam_url)["calls"].get("init"), "an instance to create the remote job")
    victim = holder(database)
    cluster[victim].kill()
    wait_for((tmp_path / "inbox" / "call.json").exists, "call.json, finished by another instance", 60)
    jobs = stats(sarvam_url)["jobs"].values()
    assert sum(job["starts"] for job in jobs) == 1
    assert all(job["starts"] or (job["state"] == "Accepted" and not job["uploads"]) for job in jobs)
    (job,) = query(database, "SELECT state FROM jobs")
    assert job["state"] == "succeeded"
    assert job_event_kinds(database).count("succeeded") == 1


LANGUAGES = ["hi-IN", "ta-IN", "te-IN", "bn-IN"]  # one folder each: one provider job each


def test_a_rate_limit_answer_holds_back_every_instance_for_the_time_the_provider_asked(database, sarvam_url, tmp_path):
    """Four provider jobs, two held by each of two instances, polled every 0.2 s; the
    provider answers one status call with 429 and Retry-After: 3. No instance calls it again
    until then (give or take the half second an instance takes to hear of it), then all
    four finish, each submitted once."""

    def node(name: str, max_jobs: int) -> Daemon:
        home = tmp_path / name
        home.mkdir()
        config = write_config(
            home / "stenod.toml",
            top={"state_dir": home / "state", "instance_id": name, "log_format": "json", "pack_window_seconds": 0.2},
            sections={"journal": {"backend": "postgresql", "url": database, "lease_seconds": 10}},
            watch=[
                {
                    "path": tmp_path / lang,
                    "provider": "sarvam",
                    "language": lang,
                    "formats": ["json"],
                    "settle_seconds": 0.3,
                }
                for lang in LANGUAGES
            ],
            providers={
                "sarvam": {
                    "api_key": KEY,
                    "base_url": sarvam_url,
                    "poll_interval_seconds": 0.2,
                    "max_concurrent_jobs": max_jobs,  # counted over the cluster: a takes two, b the rest
                }
            },
        )
        return Daemon(config, home / "daemon.log")

    httpx.post(f"{sarvam_url}/__fake__/config", json={"polls_to_complete": 10_000}).raise_for_status()
    for lang in LANGUAGES:
        (tmp_path / lang).mkdir()
    a, b = node("node-a", 2), node("node-b", 4)
    try:
        start(a)
        for lang in LANGUAGES:
            write_wav(tmp_path / lang / "call.wav")
        wait_for(lambda: len(stats(sarvam_url)["status_calls"]) == 2, "node-a polling two provider jobs")
        start(b)
        wait_for(lambda: len(stats(sarvam_url)["status_calls"]) == 4, "node-b polling the other two")
        holders = [r["holder"] for r in query(database, "SELECT holder FROM batches ORDER BY holder")]
        assert holders == ["node-a", "node-a", "node-b", "node-b"]

        loaded = time.time()
        inject(sarvam_url, {"route": "status", "status": 429, "retry_after": 3, "times": 1})
        wait_for(lambda: not stats(sarvam_url)["faults_pending"], "the provider's 429")
        time.sleep(3.5)
        calls = sorted(t for times in stats(sarvam_url)["status_calls"].values() for t in times if t >= loaded)
        refused = calls[0]  # the first status call after the fault was loaded got the 429
        held_back = [round(t - refused, 2) for t in calls if refused + 0.8 < t < refused + 2.9]
        assert held_back == [], f"status calls during the provider's Retry-After: {held_back}"
        assert any(t >= refused + 2.9 for t in calls), "polling resumed after the pause"
        assert (a.named("provider.paused") or b.named("provider.paused")) and a.alive and b.alive

        httpx.post(f"{sarvam_url}/__fake__/config", json={"polls_to_complete": 1}).raise_for_status()
        for lang in LANGUAGES:
            wait_for((tmp_path / lang / "call.json").exists, f"{lang}/call.json", 60)
        counts = stats(sarvam_url)
        assert (counts["jobs_created"], counts["jobs_started"]) == (4, 4)
        assert [r["state"] for r in query(database, "SELECT state FROM jobs")] == ["succeeded"] * 4
    finally:
        a.kill()
        b.kill()
