"""A full disk (issue #24, item 10), on small tmpfs filesystems filled on purpose: with the
journal on it, and with only an output folder on it. A write that fails for want of space
fails nothing that was accepted: the journal's commits wait (SQLITE_FULL), an item's outputs
wait and are retried, new uploads get 507, ``/healthz`` names the full filesystem, and all
of it resumes by itself once there is room. The same with the journal in PostgreSQL, on a
throw-away cluster whose data directory is such a filesystem. Needs root (``mount -t tmpfs``)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stenod.adapters.folders.disk_space import DiskSpace
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.journal import NewItem, NewJob
from support.harness import wait_for
from support.postgres import throwaway_cluster
from tests.e2e.http_support import HttpDaemon, http_daemon

MIN_FREE = 1 << 20


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s filesystem; removing the file gives them back."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for block in (1 << 16, 512, 1):
            with contextlib.suppress(OSError):
                while out.write(b"\0" * block):
                    pass
    return filler


def _job(n: int) -> NewJob:
    item = NewItem(input=f"/in/{n}.wav", name=f"{n}.wav", path=f"/in/{n}.wav", size=n, options={"pad": "x" * 4000})
    return NewJob(source="test", task="transcribe", provider="echo", items=[item])


async def test_a_journal_whose_disk_is_full_holds_its_commits_and_resumes_when_room_returns(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "4m") as fs:
        journal = SqliteJournal.open(fs / "journal.db")
        try:
            filler = fill(fs)
            pending: list[asyncio.Task[object]] = []
            for n in range(400):  # until a commit needs a page the disk has no room for
                task = asyncio.create_task(journal.create_job(_job(n)))
                done, _ = await asyncio.wait({task}, timeout=3)
                if not done:
                    pending.append(task)
                    break
                task.result()  # none fails: they commit, or they wait
            assert pending, "the journal never ran out of room"
            assert not await journal.ping() and await journal.alive()  # /healthz: false; the watchdog: fine
            filler.unlink()
            await asyncio.wait_for(pending[0], timeout=10)
            assert await journal.ping()
            assert len(await journal.jobs(limit=1000)) == n + 1  # every job, once
        finally:
            journal.close()


@pytest.fixture
def state_on_tmpfs(tmp_path: Path) -> Iterator[HttpDaemon]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with (
        tmpfs(tmp_path / "state", "16m"),
        http_daemon(
            tmp_path,
            top={"min_free_bytes": MIN_FREE, "warn_free_bytes": 4 * MIN_FREE},
            providers={"echo": {}, "whisper": {"workers": 1, "model_dir": str(tmp_path / "models")}},
            sections={"retry": {"max_seconds": 1}},
            watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.2, "output_dir": tmp_path / "out"}],
        ) as running,
    ):
        yield running


def test_with_the_journal_on_a_full_disk_uploads_get_507_files_wait_and_all_resumes(
    state_on_tmpfs: HttpDaemon,
) -> None:
    server = state_on_tmpfs
    filler = fill(server.state)
    with server.client() as http:
        health = http.get("/healthz")
        assert health.status_code == 503 and str(server.state) in str(health.json()["checks"]["disk"]["full"])
        refused = http.post("/v1/jobs", files={"file": ("call.txt", b"spoken words")}, data={"request": "{}"})
        assert refused.status_code == 507 and "disk is full" in refused.json()["error"]["message"]
        # A JSON request is answered as an upload is, at once, and nothing of it is kept.
        (server.roots / "note.txt").write_text("spoken words")
        request = {"provider": "echo", "inputs": [{"path": str(server.roots / "note.txt")}], "request_id": "full-1"}
        answered = http.post("/v1/jobs", json=request, timeout=10)
        assert answered.status_code == 507, answered.text
        assert "disk is full" in answered.json()["error"]["message"] and answered.headers["Retry-After"]
        (server.state.parent / "inbox" / "memo.wav").write_bytes(b"kept for later")
        time.sleep(3)
        assert server.daemon.alive
        filler.unlink()
        wait_for(lambda: http.get("/healthz").status_code == 200, "health after space returns", timeout=30)
        wait_for(lambda: (server.state.parent / "out" / "memo.json").exists(), "the waiting file's outputs", 60)
        again = http.post(
            "/v1/jobs", files={"file": ("call.txt", b"spoken words")}, data={"request": '{"provider": "echo"}'}
        )
        assert again.status_code == 202, again.text
        assert server.finished(again.json()["job_id"])["state"] == "succeeded"
        taken = http.post("/v1/jobs", json=request)
        assert taken.status_code == 202, taken.text  # 202, not 200: the refused request left no job behind
        assert server.finished(taken.json()["job_id"])["state"] == "succeeded"


def test_with_the_journal_on_a_full_disk_changes_get_507_at_once_and_work_when_room_returns(
    state_on_tmpfs: HttpDaemon,
) -> None:
    """A cancel, a speaker's name, a rename or a forgotten voice is a journal write too: on a
    full disk it is refused at once (507), never left waiting for its commit."""
    server = state_on_tmpfs
    with server.client() as http:
        made = http.post(
            "/v1/jobs",
            files={"file": ("voices-ann-bob-ann.wav", b"RIFF" + b"\0" * 64)},
            data={"request": '{"provider": "echo", "diarize": true}'},
        )
        assert made.status_code == 202, made.text
        job = server.finished(made.json()["job_id"])
        label = job["items"][0]["transcript"]["speakers"][0]["label"]
        naming = f"/v1/jobs/{job['job_id']}/items/0/speakers/{label}"
        filler = fill(server.state)
        for method, path, body in (
            ("PUT", naming, {"name": "Ann"}),
            ("DELETE", f"/v1/jobs/{job['job_id']}", None),
            ("PATCH", "/v1/speakers/Ann", {"name": "Anne"}),
            ("DELETE", "/v1/speakers/Ann", None),
        ):
            answer = http.request(method, path, json=body, timeout=10)
            assert answer.status_code == 507, (method, path, answer.text)
            assert "disk is full" in answer.json()["error"]["message"] and answer.headers["Retry-After"]
        filler.unlink()
        wait_for(lambda: http.get("/healthz").status_code == 200, "health after space returns", timeout=30)
        named = http.put(naming, json={"name": "Ann"}, timeout=30)
        assert named.status_code == 200 and named.json()["name"] == "Ann", named.text
        assert http.delete("/v1/speakers/Ann", timeout=30).status_code == 204


def test_outputs_on_a_full_disk_wait_instead_of_failing_and_are_written_when_room_returns(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with (
        tmpfs(tmp_path / "out", "2m") as out,
        http_daemon(
            tmp_path,
            top={"min_free_bytes": MIN_FREE},
            providers={"echo": {}},
            sections={"retry": {"max_seconds": 1}},
            watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.2, "output_dir": out}],
        ) as server,
    ):
        filler = fill(out)
        (inbox / "memo.wav").write_bytes(b"spoken words")
        with server.client() as http:
            wait_for(lambda: http.get("/v1/jobs").json()["jobs"], "the file's job", timeout=30)
            time.sleep(4)  # several write attempts
            [job] = http.get("/v1/jobs").json()["jobs"]
            assert job["state"] not in ("failed", "partial", "succeeded"), job
            health = http.get("/healthz").json()["checks"]["disk"]
            assert not health["ok"] and str(out) in str(health["full"])
            filler.unlink()
            done = server.finished(job["job_id"], timeout=60)
        assert done["state"] == "succeeded" and (out / "memo.json").exists() and not (out / "memo.error.json").exists()


async def test_health_warns_below_the_threshold_and_fails_when_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "8m") as fs:
        disk = DiskSpace(tmp_path, lambda: [fs / "out"], min_free_bytes=MIN_FREE, warn_free_bytes=4 * MIN_FREE)
        assert await disk.check() == {"ok": True}
        (fs / "big").write_bytes(b"\0" * (5 * MIN_FREE))
        low = await disk.check()
        assert low["ok"] and str(fs / "out") in low["warning"] and "full" not in low
        fill(fs)
        full = await disk.check()
        assert not full["ok"] and full["full"][0]["folders"] == [str(fs / "out")] and str(fs / "out") in full["error"]


@pytest.mark.slow
def test_a_postgresql_journal_whose_disk_is_full_holds_its_commits_answers_507_and_resumes(tmp_path: Path) -> None:
    """The same promises on PostgreSQL's own full disk (SQLSTATE 53100), on a throw-away
    cluster whose data directory is a small tmpfs: found by the first commit that needs room,
    waited for, and over by itself."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    journal = {"backend": "postgresql", "reconnect_seconds": 5}
    with (
        throwaway_cluster() as (url, fs),
        http_daemon(
            tmp_path,
            top={"min_free_bytes": MIN_FREE},
            providers={"echo": {}},
            sections={"journal": {**journal, "url": url}, "retry": {"max_seconds": 1}},
            watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.2}],
        ) as server,
        server.client() as http,
    ):
        (inbox / "before.wav").write_bytes(b"spoken words")
        wait_for(lambda: (inbox / "before.json").exists(), "a job before the disk fills", 30)
        filler = fill(fs)
        dropped = []
        for n in range(60):  # until a commit needs a page the database's disk has no room for
            dropped.append(inbox / f"{n:02d}-{'x' * 200}.wav")
            dropped[-1].write_bytes(b"spoken words %d" % n)
            if _unhealthy_within(http, 4):
                break
        health = http.get("/healthz").json()["checks"]
        assert health["journal"]["ok"] is False, health
        assert url.rsplit("@", 1)[1] in health["disk"]["full"][-1]["journal"], health["disk"]  # host:port/database
        assert server.daemon.named("journal.disk_full")
        upload = http.post("/v1/jobs", files={"file": ("call.txt", b"spoken words")}, data={"request": "{}"})
        assert upload.status_code == 507 and "journal" in upload.json()["error"]["message"], upload.text
        (server.roots / "note.txt").write_text("spoken words")
        request = {"provider": "echo", "inputs": [{"path": str(server.roots / "note.txt")}], "request_id": "pg-full"}
        answered = http.post("/v1/jobs", json=request, timeout=10)
        assert answered.status_code == 507, answered.text
        time.sleep(3)
        assert server.daemon.alive
        assert not [j for j in http.get("/v1/jobs").json()["jobs"] if j["state"] in ("failed", "partial")]
        filler.unlink()
        wait_for(lambda: http.get("/healthz").status_code == 200, "health after space returns", timeout=30)

        def states() -> list[str]:
            return sorted(j["state"] for j in http.get("/v1/jobs", params={"limit": 500}).json()["jobs"])

        every = ["succeeded"] * (len(dropped) + 1)  # each file once, none failed
        wait_for(lambda: states() == every, "every waiting file's job to finish", 60)
        assert len(list(inbox.glob("*.json"))) == len(every)
        taken = http.post("/v1/jobs", json=request)
        assert taken.status_code == 202, taken.text
        assert server.finished(taken.json()["job_id"])["state"] == "succeeded"


def _unhealthy_within(http: httpx.Client, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if http.get("/healthz").status_code == 503:
            return True
        time.sleep(0.2)
    return False
