"""HTTP jobs are journaled jobs: an oversized upload is refused without filling memory, a
client that goes away loses nothing, and a daemon killed mid-job finishes it after the
restart with its result still retrievable."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from support.harness import Daemon, wait_for
from support.server import free_port
from support.speech import long_speech
from tests.e2e.http_support import KEY, http_config, http_daemon, up

MB = 1024 * 1024


def zeros(total: int, chunk: int = MB) -> Iterator[bytes]:
    """A multipart body of ``total`` bytes, generated as it is sent (no Content-Length)."""
    yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="huge.wav"\r\n\r\n'
    block = bytes(chunk)
    for _ in range(total // chunk):
        yield block
    yield b"\r\n--b--\r\n"


def declared_only(url: str, headers: dict[str, str], length: int) -> bytes:
    """Send only the head of a request announcing ``length`` bytes, and read the answer: the
    server must refuse before any of the body arrives."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        while b"}}" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    return answer


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_a_2_gb_upload_is_refused_by_size_without_memory_growth(tmp_path: Path) -> None:
    with http_daemon(tmp_path, http={"max_upload_bytes": 64 * MB}) as server:
        pid = server.daemon.process.pid
        before = rss(pid)
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data; boundary=b"}
        declared = declared_only(server.url, headers, 2048 * MB)
        with httpx.Client(base_url=server.url, timeout=120) as http:
            try:
                streamed = http.post("/v1/audio/transcriptions", headers=headers, content=zeros(2048 * MB))
                status = streamed.status_code
            except httpx.TransportError:  # the server may close the connection once it has answered
                status = 413
        after = rss(pid)
        print(f"daemon RSS {before / MB:.0f} MB before, {after / MB:.0f} MB after refusing a 2 GB upload")
        assert declared.startswith(b"HTTP/1.1 413") and b"upload_too_large" in declared
        assert status == 413 and after - before < 50 * MB
        assert not list((server.state / "spool").iterdir())


def test_a_client_that_goes_away_does_not_cancel_its_job(tmp_path: Path) -> None:
    lecture, _ = long_speech(tmp_path / "lecture.mp3", 40)
    with http_daemon(tmp_path) as server:
        with server.client(timeout=1.0) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.post(
                "/v1/audio/transcriptions",
                data={"model": "whisper-1"},
                files={"file": ("lecture.mp3", lecture.read_bytes())},
                headers={"Idempotency-Key": "gone-away"},
            )
        with server.client() as http:
            [job] = [j for j in http.get("/v1/jobs").json()["jobs"] if j["request_id"] == "gone-away"]
            done = server.finished(job["job_id"])
            text = http.get(f"/v1/jobs/{job['job_id']}/outputs/txt").text
    assert done["state"] == "succeeded" and "pizza" in text


def test_kill_9_during_an_http_job_then_restart_finishes_it_once(tmp_path: Path) -> None:
    lecture, _ = long_speech(tmp_path / "lecture.flac", 60)
    port = free_port()
    cfg = http_config(tmp_path, port, providers={"whisper": {"workers": 1, "batch_size": 0}})
    url = f"http://127.0.0.1:{port}"
    first = Daemon(cfg, tmp_path / "daemon.log").start()
    answers: list[httpx.Response | Exception] = []

    def client() -> None:
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as http:
                answers.append(
                    http.post(
                        "/v1/audio/transcriptions",
                        data={"model": "whisper-1"},
                        files={"file": ("lecture.flac", lecture.read_bytes())},
                        headers={"Idempotency-Key": "survives-kill"},
                    )
                )
        except httpx.TransportError as exc:
            answers.append(exc)

    try:
        first.wait_ready()
        wait_for(lambda: up(url), "the HTTP server", timeout=30)
        caller = threading.Thread(target=client, name="http-client")
        caller.start()
        wait_for(lambda: first.named("whisper.workers_started"), "transcription to start", timeout=60)
        time.sleep(1.0)
        os.kill(first.process.pid, signal.SIGKILL)
        caller.join(timeout=30)
    finally:
        first.kill()
    assert answers and isinstance(answers[0], Exception)  # the connection died with the daemon
    second = Daemon(cfg, tmp_path / "daemon.log").start()
    try:
        second.wait_ready()
        wait_for(lambda: up(url), "the HTTP server", timeout=30)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            [job] = [j for j in http.get("/v1/jobs").json()["jobs"] if j["request_id"] == "survives-kill"]
            done = wait_for(
                lambda: (j := http.get(f"/v1/jobs/{job['job_id']}").json())["state"] == "succeeded" and j,
                "the job after the restart",
                timeout=180,
            )
            again = http.post(  # the client retries with its key: the finished job answers
                "/v1/audio/transcriptions",
                data={"model": "whisper-1"},
                files={"file": ("lecture.flac", lecture.read_bytes())},
                headers={"Idempotency-Key": "survives-kill"},
            )
    finally:
        second.terminate()
    assert "pizza" in done["items"][0]["transcript"]["text"] and again.status_code == 200
    assert again.json()["text"] == done["items"][0]["transcript"]["text"]
    assert not list((tmp_path / "state" / "spool").iterdir())
