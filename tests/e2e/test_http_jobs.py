"""The job API: create (queue body or upload), read, follow as Server-Sent Events, download
outputs, cancel; health and metrics on the same server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.http_support import HttpDaemon, http_daemon


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    providers = {"echo": {"job_seconds": 0.5}}
    with http_daemon(tmp_path_factory.mktemp("jobs"), providers=providers) as running:
        yield running


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    """The events of a finished Server-Sent Events answer: id, event name and parsed data."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events


def note(server: HttpDaemon, name: str, text: str = "hello from a test") -> Path:
    path = server.roots / name
    path.write_text(text)
    return path


def test_a_queue_shaped_request_becomes_a_job_that_finishes(server: HttpDaemon) -> None:
    path = note(server, "memo.txt")
    with server.client() as http:
        created = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(path)}]})
    assert created.status_code == 202 and created.headers["location"] == f"/v1/jobs/{created.json()['job_id']}"
    job = server.finished(created.json()["job_id"])
    assert job["state"] == "succeeded" and job["source"] == "http" and job["items"][0]["transcript"]


def test_events_stream_the_jobs_cloudevents_in_order_and_end(server: HttpDaemon) -> None:
    path = note(server, "follow.txt")
    with server.client() as http:
        job_id = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(path)}]}).json()["job_id"]
        with http.stream("GET", f"/v1/jobs/{job_id}/events") as answer:
            events = sse(answer)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "stenod.job.accepted" and kinds[-1] == "stenod.job.succeeded"
    assert all(e["data"]["subject"] == job_id and e["data"]["id"] == e["id"] for e in events)


def test_last_event_id_resumes_after_that_event(server: HttpDaemon) -> None:
    path = note(server, "resume.txt")
    with server.client() as http:
        job_id = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(path)}]}).json()["job_id"]
        server.finished(job_id)
        with http.stream("GET", f"/v1/jobs/{job_id}/events") as answer:
            every = sse(answer)
        with http.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": every[0]["id"]}) as answer:
            rest = sse(answer)
        # After the last event of a finished job: 204, which stops a browser's EventSource reconnecting.
        after_end = http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": every[-1]["id"]})
    assert [e["id"] for e in rest] == [e["id"] for e in every[1:]]
    assert after_end.status_code == 204 and after_end.content == b""


def test_an_upload_with_request_options_runs_and_its_outputs_download(server: HttpDaemon) -> None:
    request = json.dumps({"provider": "echo", "output": {"formats": ["txt", "json"]}})
    with server.client() as http:
        created = http.post(
            "/v1/jobs", files={"file": ("upload.txt", b"uploaded words")}, data={"request": request}
        ).json()
        job = server.finished(created["job_id"])
        txt = http.get(f"/v1/jobs/{created['job_id']}/outputs/txt")
        srt = http.get(f"/v1/jobs/{created['job_id']}/outputs/srt")  # not written: rendered from the journal
    assert job["state"] == "succeeded" and job["items"][0]["input"] == "upload.txt"
    assert txt.status_code == 200 and srt.status_code == 200
    assert not list((server.state / "spool").iterdir())  # the spooled upload went with the job


def test_a_request_that_breaks_a_rule_is_a_400_with_the_reason(server: HttpDaemon) -> None:
    with server.client() as http:
        answer = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": "/etc/passwd"}]})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "path_not_allowed"


def test_the_idempotency_key_returns_the_same_job(server: HttpDaemon) -> None:
    path = note(server, "once.txt")
    body = {"provider": "echo", "inputs": [{"path": str(path)}]}
    with server.client() as http:
        first = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-key-1"})
        second = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-key-1"})
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["job_id"] == second.json()["job_id"] and second.json()["request_id"] == "job-key-1"


def test_a_running_job_can_be_cancelled(tmp_path: Path) -> None:
    with http_daemon(tmp_path, providers={"echo": {"job_seconds": 60}}) as server:
        path = note(server, "long.txt")
        with server.client() as http:
            job_id = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(path)}]}).json()["job_id"]
            cancelled = http.delete(f"/v1/jobs/{job_id}")
            job = server.finished(job_id, timeout=30)
            gone = http.delete("/v1/jobs/NOSUCHJOB")
    assert cancelled.status_code == 202 and job["state"] == "cancelled" and gone.status_code == 404


def test_jobs_list_newest_first_filtered_by_state(server: HttpDaemon) -> None:
    with server.client() as http:
        listing = http.get("/v1/jobs", params={"state": "succeeded", "limit": 2}).json()
        older = http.get("/v1/jobs", params={"state": "succeeded", "before": listing["next"]}).json()
    ids = [j["job_id"] for j in listing["jobs"]]
    assert (
        len(ids) == 2 and ids == sorted(ids, reverse=True) and all(j["state"] == "succeeded" for j in listing["jobs"])
    )
    assert older["jobs"] and all(j["job_id"] < ids[-1] for j in older["jobs"])


def test_an_unknown_job_is_a_404_in_openais_error_shape(server: HttpDaemon) -> None:
    with server.client() as http:
        answer = http.get("/v1/jobs/01NOSUCHJOB")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_job"


def test_health_and_metrics_need_no_key(server: HttpDaemon) -> None:
    with server.client(key=None) as http:
        health, metrics = http.get("/healthz"), http.get("/metrics")
    assert health.status_code == 200 and health.json()["checks"]["journal"]["ok"] is True
    assert metrics.status_code == 200 and "stenod_jobs_total" in metrics.text


def test_every_other_route_needs_the_key(server: HttpDaemon) -> None:
    with server.client(key=None) as http:
        answers = [http.get("/v1/jobs"), http.get("/v1/models"), http.post("/v1/jobs", json={})]
    assert {a.status_code for a in answers} == {401} and all(a.json()["error"]["message"] for a in answers)


def test_the_key_never_reaches_the_log(server: HttpDaemon) -> None:
    with server.client() as http:
        http.get("/v1/jobs")
    assert server.key not in server.daemon.log_path.read_text()


def test_the_openapi_document_is_served(server: HttpDaemon) -> None:
    with server.client() as http:
        document = http.get("/openapi.json").json()
    assert {"/v1/audio/transcriptions", "/asr", "/v1/jobs", "/healthz"} <= set(document["paths"])


def test_events_of_http_jobs_reach_the_exchange_when_amqp_is_on(tmp_path: Path) -> None:
    from support.amqp import BROKER_URL, BrokerNames, Client, delete_topology
    from support.harness import wait_for

    names = BrokerNames.new("http-events")
    amqp = names.amqp_section(BROKER_URL, allowed_roots=[tmp_path / "roots"])
    client: Client | None = None
    try:
        with http_daemon(tmp_path, sections={"amqp": amqp}) as server:
            wait_for(lambda: server.daemon.named("amqp.relay_ready"), "the outbox relay", timeout=60)
            client = Client(names)
            queue = client.bind_events()
            job_id = server.finished(
                _created(server, {"provider": "echo", "inputs": [{"path": str(note(server, "broker.txt"))}]})
            )["job_id"]
            events = client.events(queue, lambda got: any(e["type"] == "stenod.job.succeeded" for e in got))
        assert {e["subject"] for e in events} == {job_id}
        assert events[0]["type"] == "stenod.job.accepted"
    finally:
        if client is not None:
            client.close()
        delete_topology(names)


def _created(server: HttpDaemon, body: dict[str, Any]) -> str:
    with server.client() as http:
        answer = http.post("/v1/jobs", json=body)
        answer.raise_for_status()
        return str(answer.json()["job_id"])


def test_a_lan_address_without_keys_stops_the_start(tmp_path: Path) -> None:
    import subprocess

    from support.harness import STENOD, write_config

    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state"},
        sections={"http": {"listen": "0.0.0.0:18999"}},
    )
    proc = subprocess.run([*STENOD, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no API key is set" in proc.stderr
