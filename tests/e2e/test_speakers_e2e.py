"""Who spoke, asked at every entry point of a ``stenod run`` process: the job API (queue
body and upload), ``/asr`` as whisper-asr-webservice spells it, a folder rule, the
queue's ``stenod submit`` command line and ``stenod transcribe --diarize``. The echo
plugin answers from a script (``voices-ann-bob-ann`` in the name: turns by those voices)
and records the ``Batch.diarization`` it received."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stenod.cli.schemas import EventData
from support.amqp import queue_daemon
from support.harness import STENOD, running, wait_for, write_config, write_wav
from tests.e2e.http_support import HttpDaemon, http_daemon


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    tmp = tmp_path_factory.mktemp("speakers")
    ledger = tmp / "ledger"
    ledger.mkdir()
    providers = {"echo": {"ledger_dir": ledger, "max_files": 10}}
    with http_daemon(tmp, providers=providers, top={"default_provider": "echo", "pack_window_seconds": 1.0}) as running:
        yield running


def received(server: HttpDaemon) -> list[dict[str, Any]]:
    """The diarization requests the echo provider received, one per provider job."""
    path = server.state.parent / "ledger" / "diarization.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wav(server: HttpDaemon, name: str) -> Path:
    path = server.roots / name
    write_wav(path, seconds=0.2)
    return path


def test_the_job_api_asks_who_spoke_and_the_job_lists_its_speakers(server: HttpDaemon) -> None:
    path = wav(server, "voices-ann-bob-ann.wav")
    body = {"provider": "echo", "diarize": True, "min_speakers": 2, "max_speakers": 3, "inputs": [{"path": str(path)}]}
    with server.client() as http:
        job = server.finished(http.post("/v1/jobs", json=body).json()["job_id"])
    item = job["items"][0]
    assert [s["label"] for s in item["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert [s["speaker"] for s in item["transcript"]["segments"]] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
    assert all("voiceprint" not in s for s in item["transcript"]["speakers"])  # biometric: never shown
    assert {"min_speakers": 2, "max_speakers": 3, "num_speakers": None, "known": []}.items() <= received(server)[
        -1
    ].items()


def test_requests_asking_differently_never_share_a_provider_job(server: HttpDaemon) -> None:
    before = len((server.state.parent / "ledger" / "created.log").read_text().splitlines())
    paths = [wav(server, f"pack-{n}.wav") for n in range(3)]
    asks: list[dict[str, Any]] = [{}, {"diarize": True}, {"diarize": True, "num_speakers": 2}]
    with server.client() as http:
        ids = [
            http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(p)}], **ask}).json()["job_id"]
            for p, ask in zip(paths, asks, strict=True)
        ]
        jobs = [server.finished(i) for i in ids]
    created = (server.state.parent / "ledger" / "created.log").read_text().splitlines()[before:]
    assert sorted(len(line.split()) - 1 for line in created) == [1, 1, 1]  # three provider jobs of one file
    # Only the two that asked were diarized (the echo plugin's scripted turns).
    assert [j["items"][0]["transcript"]["text"].startswith("turn 0") for j in jobs] == [False, True, True]


@pytest.mark.parametrize(
    ("ask", "says"),
    [
        ({"diarize": True, "min_speakers": 3, "max_speakers": 2}, "min_speakers (3) is more than max_speakers (2)"),
        ({"num_speakers": 2}, "num_speakers needs diarize = true"),
        ({"diarize": True, "num_speakers": 2, "max_speakers": 3}, "not both"),
        ({"diarize": True, "max_speakers": 0}, "greater than or equal to 1"),
    ],
)
def test_a_bad_speaker_request_is_a_400_that_says_why_and_makes_no_job(
    server: HttpDaemon, ask: dict[str, Any], says: str
) -> None:
    path = wav(server, "refused.wav")
    with server.client() as http:
        before = len(http.get("/v1/jobs").json()["jobs"])
        answer = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(path)}], **ask})
        after = len(http.get("/v1/jobs").json()["jobs"])
    assert answer.status_code == 400 and says in answer.json()["error"]["message"]
    assert after == before


def test_an_upload_to_the_job_api_asks_who_spoke_in_its_request_field(server: HttpDaemon) -> None:
    request = json.dumps({"provider": "echo", "diarize": True, "num_speakers": 2})
    with server.client() as http:
        created = http.post("/v1/jobs", files={"file": ("voices-cy-dee.wav", b"RIFF up")}, data={"request": request})
        job = server.finished(created.json()["job_id"])
        vtt = http.get(f"/v1/jobs/{job['job_id']}/outputs/vtt").text
    assert [s["label"] for s in job["items"][0]["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert "<v SPEAKER_00>turn 0 by cy" in vtt and "<v SPEAKER_01>turn 1 by dee" in vtt


def test_asr_takes_diarize_and_the_speaker_range_as_whisper_asr_webservice_spells_them(server: HttpDaemon) -> None:
    path = wav(server, "voices-eve-fay.wav")
    with server.client() as http:
        srt = http.post(
            "/asr",
            params={"diarize": "true", "min_speakers": 1, "max_speakers": 2, "output": "srt"},
            files={"audio_file": (path.name, path.read_bytes())},
        )
        txt = http.post(
            "/asr", params={"diarize": "true", "output": "txt"}, files={"audio_file": (path.name, path.read_bytes())}
        )
        bad = http.post(
            "/asr",
            params={"diarize": "true", "min_speakers": 4, "max_speakers": 2},
            files={"audio_file": (path.name, path.read_bytes())},
        )
    assert (
        srt.status_code == 200 and "SPEAKER_00: turn 0 by eve" in srt.text and "SPEAKER_01: turn 1 by fay" in srt.text
    )
    assert txt.text == "SPEAKER_00: turn 0 by eve\nSPEAKER_01: turn 1 by fay\n"
    assert bad.status_code == 400 and "more than max_speakers" in bad.json()["error"]["message"]
    assert {"min_speakers": 1, "max_speakers": 2}.items() <= next(
        r for r in received(server) if r["min_speakers"] == 1
    ).items()


def test_a_folder_rule_with_diarize_writes_outputs_that_say_who_spoke(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rule = {"path": inbox, "provider": "echo", "diarize": True, "num_speakers": 2, "settle_seconds": 0.2}
    config = write_config(
        tmp_path / "stenod.toml", top={"state_dir": tmp_path / "state", "log_format": "json"}, watch=[rule]
    )
    with running(config, tmp_path / "daemon.log"):
        write_wav(inbox / "voices-gus-hal-gus.wav", seconds=0.2)
        wait_for(lambda: (inbox / "voices-gus-hal-gus.vtt").exists(), "the outputs", timeout=60)
    txt = (inbox / "voices-gus-hal-gus.txt").read_text()
    data = json.loads((inbox / "voices-gus-hal-gus.json").read_text())
    assert txt == "SPEAKER_00: turn 0 by gus\nSPEAKER_01: turn 1 by hal\nSPEAKER_00: turn 2 by gus\n"
    assert [s["label"] for s in data["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert all(w["speaker"] for w in data["words"]) and "voiceprint" not in data["speakers"][0]
    assert "<v SPEAKER_01>turn 1 by hal" in (inbox / "voices-gus-hal-gus.vtt").read_text()
    assert "SPEAKER_00: turn 0 by gus" in (inbox / "voices-gus-hal-gus.srt").read_text()


def test_a_folder_rule_asking_a_provider_that_cannot_diarize_stops_the_start_naming_the_install(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        watch=[{"path": inbox, "provider": "echo", "diarize": True}],
        providers={"echo": {"diarization": False}},
    )
    result = subprocess.run([*STENOD, "run", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"watch rule {inbox}: diarize = true" in result.stderr
    assert "pip install 'stenod-echo[voices]'" in result.stderr


def test_transcribe_diarize_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    audio = tmp_path / "in" / "voices-ivy-jo.wav"
    write_wav(audio, seconds=0.2)
    done = subprocess.run(
        [*STENOD, "transcribe", str(audio), "-p", "echo", "--diarize", "--max-speakers", "2", "-f", "txt"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    bad = subprocess.run(
        [*STENOD, "transcribe", str(audio), "-p", "echo", "--num-speakers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        tmp_path / "in" / "voices-ivy-jo.txt"
    ).read_text() == "SPEAKER_00: turn 0 by ivy\nSPEAKER_01: turn 1 by jo\n"
    assert bad.returncode == 2 and "num_speakers needs diarize = true" in bad.stderr


def test_a_queue_request_from_stenod_submit_asks_who_spoke_and_its_events_list_the_speakers(
    tmp_path: Path, journal_backend: str
) -> None:
    with queue_daemon(tmp_path, "speakers") as q:
        audio = q.roots / "voices-kim-lee.wav"
        audio.write_bytes(b"RIFF fake audio")
        events = q.client.bind_events()
        submit = [*STENOD, "submit", "--config", str(q.config), str(audio), "-p", "echo", "--diarize"]
        done = subprocess.run([*submit, "--num-speakers", "2", "--request-id", "who-1"], capture_output=True, text=True)
        bad = subprocess.run([*submit, "--min-speakers", "5", "--max-speakers", "2", "--request-id", "who-2"])
        got = q.client.events(
            events, lambda got: {e["type"] for e in got} >= {"stenod.job.succeeded", "stenod.job.rejected"}
        )
    assert done.returncode == 0 and bad.returncode == 0  # published; the daemon judges the request
    final = next(e["data"] for e in got if e["type"] == "stenod.job.succeeded")
    rejected = next(e["data"] for e in got if e["type"] == "stenod.job.rejected")
    EventData.model_validate(final)
    assert [s["label"] for s in final["items"][0]["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert (q.roots / "voices-kim-lee.txt").read_text() == "SPEAKER_00: turn 0 by kim\nSPEAKER_01: turn 1 by lee\n"
    assert (
        rejected["request_id"] == "who-2"
        and "min_speakers (5) is more than max_speakers (2)" in rejected["error"]["message"]
    )
