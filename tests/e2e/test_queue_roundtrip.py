"""Requests through RabbitMQ to a ``stenod run`` process, and CloudEvents back (real broker)."""

from __future__ import annotations

import subprocess
from typing import Any

from stenod.cli.schemas import EventData
from support.amqp import queue_daemon
from support.harness import STENOD

ORDER = {"accepted": 0, "submitted": 1, "progress": 2, "succeeded": 3}
CLOUDEVENT_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data")


def _kind(event: dict[str, Any]) -> str:
    return str(event["type"]).removeprefix("stenod.job.")


def test_request_published_with_pika_succeeds_and_events_arrive_in_order_as_cloudevents(tmp_path, journal_backend):
    with queue_daemon(tmp_path, "roundtrip") as q:
        audio = q.roots / "call.wav"
        audio.write_bytes(b"RIFF fake audio")
        events_queue = q.client.bind_events()
        reply_queue = q.client.reply_queue()
        q.client.publish(
            {
                "request_id": "r-1",
                "task": "transcribe",
                "provider": "echo",
                "inputs": [{"path": str(audio)}],
                "output": {"formats": ["txt", "json"]},
            },
            content_type="application/json",
            reply_to=reply_queue,
            correlation_id="corr-1",
        )

        events = q.client.events(events_queue, lambda got: any(_kind(e) == "succeeded" for e in got))
        replies = q.client.events(reply_queue, lambda got: len(got) >= 1)

    kinds = [_kind(e) for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "succeeded"
    assert [ORDER[k] for k in kinds] == sorted(ORDER[k] for k in kinds), kinds
    job_id = events[0]["subject"]
    for event in events:
        assert set(CLOUDEVENT_ATTRIBUTES) <= set(event), event
        assert event["specversion"] == "1.0" and event["subject"] == job_id
        assert event["source"].startswith("stenod://") and event["datacontenttype"] == "application/json"
        amqp = event["_amqp"]
        assert amqp["message_id"] == event["id"] and amqp["delivery_mode"] == 2
        assert amqp["content_type"] == "application/cloudevents+json"
        assert amqp["routing_key"] == f"job.{_kind(event)}.echo"
        EventData.model_validate(event["data"])  # the shipped schema describes what is really sent
    final = events[-1]["data"]
    assert final["request_id"] == "r-1" and final["state"] == "succeeded"
    assert final["items"][0]["transcript"]["text"] == "echo call.wav 15 bytes"
    assert sorted(final["items"][0]["outputs"]) == [str(q.roots / "call.json"), str(q.roots / "call.txt")]
    assert "echo call.wav 15 bytes" in (q.roots / "call.txt").read_text()
    assert [(r["id"], r["_amqp"]["correlation_id"]) for r in replies] == [(events[-1]["id"], "corr-1")]


def test_stenod_submit_wait_prints_the_transcript_and_exits_0(tmp_path):
    with queue_daemon(tmp_path, "submit-wait") as q:
        audio = q.roots / "memo.wav"
        audio.write_bytes(b"0123456789")
        done = subprocess.run(
            [*STENOD, "--config", str(q.config), "submit", str(audio), "--wait", "--timeout", "60"],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "echo memo.wav 10 bytes"


def test_stenod_submit_wait_of_a_path_outside_the_allowed_roots_exits_2_with_the_reason(tmp_path):
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(b"secret")
    with queue_daemon(tmp_path, "submit-rejected") as q:
        done = subprocess.run(
            [*STENOD, "--config", str(q.config), "submit", str(outside), "--wait", "--timeout", "60"],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "path_not_allowed" in done.stderr
    assert not (tmp_path / "elsewhere.txt").exists()


def test_stenod_cancel_cancels_a_running_job(tmp_path):
    with queue_daemon(tmp_path, "cancel", echo={"job_seconds": 120}) as q:
        audio = q.roots / "long.wav"
        audio.write_bytes(b"long recording")
        events_queue = q.client.bind_events()
        q.client.publish({"request_id": "r-long", "inputs": [{"path": str(audio)}]})
        started = q.client.events(events_queue, lambda got: any(_kind(e) == "submitted" for e in got))
        job_id = started[0]["subject"]
        done = subprocess.run(
            [*STENOD, "--config", str(q.config), "cancel", job_id], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        ended = q.client.events(events_queue, lambda got: any(_kind(e) == "cancelled" for e in got))
    assert ended[-1]["subject"] == job_id and ended[-1]["data"]["items"][0]["state"] == "cancelled"


def test_url_inputs_are_downloaded_by_the_daemon_and_a_failed_download_fails_its_item(tmp_path):
    from tests.integration.test_amqp_url_fetch import Listener, Routes, serving

    routes: Routes = {"/clip.wav": (200, {}, b"downloaded audio")}
    with (
        serving(Listener(routes=routes)) as web,
        queue_daemon(tmp_path, "url-inputs", amqp={"allow_http_urls": True, "allow_private_urls": True}) as q,
    ):
        reply = q.client.reply_queue()
        q.client.publish({"request_id": "r-url", "inputs": [{"url": web.url("/clip.wav")}]}, reply_to=reply)
        q.client.publish({"request_id": "r-404", "inputs": [{"url": web.url("/nothing.wav")}]}, reply_to=reply)
        done = {e["data"]["request_id"]: e["data"] for e in q.client.events(reply, lambda got: len(got) >= 2)}
    assert done["r-url"]["state"] == "succeeded"
    assert done["r-url"]["items"][0]["transcript"]["text"] == "echo clip.wav 16 bytes"
    assert done["r-url"]["items"][0]["input"] == web.url("/clip.wav")
    assert done["r-404"]["state"] == "failed" and done["r-404"]["items"][0]["error"]["code"] == "http_404"


def test_a_request_can_chain_transcription_and_translation_as_one_job(tmp_path):
    with queue_daemon(tmp_path, "chain") as q:
        audio = q.roots / "memo.wav"
        audio.write_bytes(b"RIFF memo")
        events_queue = q.client.bind_events()
        q.client.publish(
            {
                "request_id": "chain-1",
                "provider": "echo",
                "inputs": [{"path": str(audio)}],
                "output": {"formats": ["json"], "then_translate_to": ["fr"], "translate_provider": "echo"},
            },
            content_type="application/json",
        )
        events = q.client.events(events_queue, lambda got: any(_kind(e) == "succeeded" for e in got))
    final = events[-1]["data"]
    assert final["state"] == "succeeded" and len(final["items"]) == 2
    assert final["items"][0]["transcript"]["text"] == "echo memo.wav 9 bytes"
    assert final["items"][1]["outputs"] == [str(q.roots / "memo.fr.txt")]
    assert (q.roots / "memo.fr.txt").read_text().startswith("[fr] ")


def test_a_chained_request_naming_a_provider_that_cannot_translate_is_rejected(tmp_path):
    with queue_daemon(tmp_path, "chain-bad") as q:
        audio = q.roots / "memo.wav"
        audio.write_bytes(b"RIFF memo")
        events_queue = q.client.bind_events()
        q.client.publish(
            {
                "request_id": "chain-2",
                "provider": "echo",
                "inputs": [{"path": str(audio)}],
                "output": {"then_translate_to": "fr", "translate_provider": "whisper"},
            },
            content_type="application/json",
        )
        [event] = q.client.events(events_queue, lambda got: len(got) >= 1)
    assert _kind(event) == "rejected" and event["data"]["error"]["code"] == "unsupported_task"
