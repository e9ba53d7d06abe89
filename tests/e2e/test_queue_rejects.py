"""Every kind of bad message is dead-lettered with its reason, explained by a rejected event,
and the daemon (same process) goes on serving the next valid request."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stenod.cli.schemas import EventData
from support.amqp import QueueDaemon, queue_daemon

BIG = 1024 * 1024


@pytest.fixture(scope="module")
def q(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueDaemon]:
    tmp = tmp_path_factory.mktemp("rejects")
    with queue_daemon(tmp, "rejects") as daemon:
        roots = daemon.roots
        (roots / "ok.wav").write_bytes(b"fine audio")
        (roots / "other.wav").write_bytes(b"two names")
        os.link(roots / "other.wav", roots / "hard.wav")
        (roots / "out.wav").symlink_to("/etc/hostname")
        (roots / "in.wav").symlink_to(roots / "ok.wav")
        os.mkfifo(roots / "pipe.wav")
        (tmp / "secret.wav").write_bytes(b"not yours")
        daemon.pid = daemon.daemon.process.pid  # type: ignore[attr-defined]
        yield daemon


def _request(roots: Path, **fields: object) -> dict[str, Any]:
    return {"provider": "echo", "inputs": [{"path": str(roots / "ok.wav")}], **fields}


def _path(name: str) -> dict[str, Any]:
    return {"__path__": name}


CASES: dict[str, tuple[object, dict[str, Any], str]] = {
    # name: (body, extra AMQP properties, expected code)
    "random_bytes": (bytes(range(256)) * 3, {}, "invalid_json"),
    "not_utf8": (b'{"inputs": [{"path": "/x\xff\xfe"}]}', {}, "invalid_json"),
    "nested_100000_deep": (b"[" * 100_000 + b"]" * 100_000, {}, "invalid_json"),
    "ten_thousand_digit_integer": (b'{"inputs": [], "options": {"n": ' + b"9" * 10_000 + b"}}", {}, "invalid_json"),
    "one_mebibyte_body": (b'{"inputs": [' + b" " * BIG + b"]}", {}, "body_too_large"),
    "wrong_types": ({"inputs": "call.wav"}, {}, "invalid_request"),
    "extra_field": ({"inputs": [{"path": "/x"}], "colour": "red"}, {}, "invalid_request"),
    "no_inputs": ({"inputs": []}, {}, "invalid_request"),
    "unknown_provider": ({"provider": "nosuch", "inputs": [{"path": "/x"}]}, {}, "unknown_provider"),
    "untranslatable_target": (
        {"provider": "whisper", "task": "translate", "target_language": "de", "inputs": [{"path": "/x"}]},
        {},
        "unsupported_language",
    ),
    "translate_without_target": (
        {"provider": "echo", "task": "translate", "inputs": [{"path": "/x"}]},
        {},
        "missing_target_language",
    ),
    "options_refused_by_plugin": ({"__ok__": True, "options": {"shout": "very"}}, {}, "invalid_options"),
    "path_outside_roots": ({"inputs": [{"path": "/etc/hostname"}]}, {}, "path_not_allowed"),
    "relative_path": ({"inputs": [{"path": "roots/ok.wav"}]}, {}, "path_not_allowed"),
    "dotdot_escape": ({"inputs": [_path("../secret.wav")]}, {}, "path_not_allowed"),
    "symlink_leading_outside": ({"inputs": [_path("out.wav")]}, {}, "path_not_allowed"),
    "symlink_inside_roots": ({"inputs": [_path("in.wav")]}, {}, "input_refused"),
    "hard_link": ({"inputs": [_path("hard.wav")]}, {}, "input_refused"),
    "fifo": ({"inputs": [_path("pipe.wav")]}, {}, "input_refused"),
    "missing_file": ({"inputs": [_path("gone.wav")]}, {}, "input_missing"),
    "output_dir_outside_roots": ({"__ok__": True, "output": {"dir": "/tmp"}}, {}, "output_not_allowed"),
    "http_url": ({"inputs": [{"url": "http://example.org/a.mp3"}]}, {}, "url_not_allowed"),
    "loopback_url": ({"inputs": [{"url": "https://127.0.0.1:5672/a.mp3"}]}, {}, "url_not_allowed"),
    "ipv6_loopback_url": ({"inputs": [{"url": "https://[::1]/a.mp3"}]}, {}, "url_not_allowed"),
    "hex_loopback_url": ({"inputs": [{"url": "https://0x7f000001/a.mp3"}]}, {}, "url_not_allowed"),
    "metadata_url": ({"inputs": [{"url": "https://169.254.169.254/latest/meta-data/"}]}, {}, "url_not_allowed"),
    "localhost_url": ({"inputs": [{"url": "https://localhost:15672/"}]}, {}, "url_not_allowed"),
    "file_url": ({"inputs": [{"url": "file:///etc/hostname"}]}, {}, "url_not_allowed"),
    "credentials_in_url": ({"inputs": [{"url": "https://user:pw@example.org/a.mp3"}]}, {}, "url_not_allowed"),
    "unknown_message_type": ({"__ok__": True}, {"type": "stenod.frobnicate"}, "unknown_message_type"),
    "cancel_of_unknown_job": ({"job_id": "01NOSUCHJOB"}, {"type": "stenod.cancel"}, "unknown_job"),
    "cancel_with_bad_body": ({"job": 1}, {"type": "stenod.cancel"}, "invalid_request"),
}


def _body(raw: object, roots: Path) -> bytes:
    if isinstance(raw, bytes):
        return raw
    assert isinstance(raw, dict)
    data = dict(raw)
    if data.pop("__ok__", False):
        data = _request(roots, **data)
    if "inputs" in data and isinstance(data["inputs"], list):
        data["inputs"] = [{"path": str(roots / i["__path__"])} if "__path__" in i else i for i in data["inputs"]]
    return json.dumps(data).encode()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_message_is_dead_lettered_with_its_reason_and_the_next_request_is_served(q, case):
    raw, props, code = CASES[case]
    body = _body(raw, q.roots)
    reply = q.client.reply_queue()
    q.client.publish(body, message_id=f"m-{case}", reply_to=reply, correlation_id=case, **props)

    dead = q.client.take(
        q.names.dead, lambda got: any((p.headers or {}).get("x-original-message-id") == f"m-{case}" for _, p, _ in got)
    )
    _, props_dead, body_dead = next(d for d in dead if d[1].headers.get("x-original-message-id") == f"m-{case}")
    assert props_dead.headers["x-stenod-error-code"] == code, props_dead.headers
    assert props_dead.headers["x-stenod-reason"]
    assert props_dead.headers.get("x-delivery-count", 0) == 0  # refused on its first delivery, not looped
    assert body_dead == body and props_dead.delivery_mode == 2

    rejected = q.client.events(reply, lambda got: len(got) >= 1)[0]
    assert rejected["type"] == "stenod.job.rejected" and rejected["_amqp"]["correlation_id"] == case
    assert rejected["data"]["error"]["code"] == code
    assert rejected["data"]["request_id"] == f"m-{case}"  # the AMQP message_id stands in for a request_id
    EventData.model_validate(rejected["data"])

    q.client.publish(_request(q.roots, request_id=f"after-{case}"), reply_to=reply, correlation_id="after")
    served = q.client.events(reply, lambda got: len(got) >= 1)[0]
    assert served["data"]["request_id"] == f"after-{case}" and served["data"]["state"] == "succeeded"
    assert q.daemon.alive and q.daemon.process.pid == q.pid
