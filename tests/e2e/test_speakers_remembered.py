"""Voices remembered, through the job API of a ``stenod run`` process: a speaker named once
(``PUT …/speakers/{label}``) is named again in the next recording with the similarity of
the match, until ``DELETE /v1/speakers/{name}`` forgets the voice; rename and merge; and
``[diarization] remember_voices = false``. The echo plugin gives each scripted voice a
voiceprint of its own and matches the voiceprints a job hands it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.http_support import HttpDaemon, http_daemon


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    with http_daemon(tmp_path_factory.mktemp("voices"), top={"default_provider": "echo"}) as running:
        yield running


def diarized(server: HttpDaemon, http: httpx.Client, name: str) -> dict[str, Any]:
    path = server.roots / name
    path.write_bytes(b"RIFF " + name.encode())
    job_id = http.post("/v1/jobs", json={"diarize": True, "inputs": [{"path": str(path)}]}).json()["job_id"]
    return server.finished(job_id)


def test_a_voice_named_once_is_named_again_in_the_next_recording_until_it_is_forgotten(server: HttpDaemon) -> None:
    with server.client() as http:
        first = diarized(server, http, "voices-rita-sam-rita.wav")
        named = http.put(f"/v1/jobs/{first['job_id']}/items/0/speakers/SPEAKER_00", json={"name": "Rita"})
        renamed_here = server.job(first["job_id"])["items"][0]
        txt = http.get(f"/v1/jobs/{first['job_id']}/outputs/txt").text
        second = diarized(server, http, "voices-tom-rita.wav")["items"][0]
        listed = http.get("/v1/speakers").json()
        forgotten = http.delete("/v1/speakers/Rita")
        third = diarized(server, http, "voices-rita-uma.wav")["items"][0]
        again = http.delete("/v1/speakers/Rita")
    assert named.status_code == 200 and named.json() == {
        "label": "SPEAKER_00",
        "name": "Rita",
        "remembered": True,
        "why_not": None,
    }
    assert [s["speaker"] for s in renamed_here["transcript"]["segments"]] == ["Rita", "SPEAKER_01", "Rita"]
    assert txt.startswith("Rita: turn 0 by rita\n")
    assert second["speakers"][1]["name"] == "Rita" and second["speakers"][1]["similarity"] == 1.0
    assert [s["speaker"] for s in second["transcript"]["segments"]] == ["SPEAKER_00", "Rita"]
    assert [(v["name"], v["voiceprints"], v["models"]) for v in listed["speakers"]] == [("Rita", 1, ["echo-voice-1"])]
    assert forgotten.status_code == 204 and again.status_code == 404
    assert [s["name"] for s in third["speakers"]] == [None, None]


def test_a_speaker_named_for_this_recording_only_is_not_remembered(server: HttpDaemon) -> None:
    with server.client() as http:
        job = diarized(server, http, "voices-vic-wes.wav")
        named = http.put(
            f"/v1/jobs/{job['job_id']}/items/0/speakers/SPEAKER_01", json={"name": "Wes", "remember": False}
        )
        later = diarized(server, http, "voices-wes-xia.wav")["items"][0]
    assert named.json()["remembered"] is False
    assert [s["name"] for s in later["speakers"]] == [None, None]


def test_remembered_voices_are_renamed_merged_and_refused_a_taken_name(server: HttpDaemon) -> None:
    with server.client() as http:
        one = diarized(server, http, "voices-yul-zoe.wav")
        http.put(f"/v1/jobs/{one['job_id']}/items/0/speakers/SPEAKER_00", json={"name": "Yul"})
        http.put(f"/v1/jobs/{one['job_id']}/items/0/speakers/SPEAKER_01", json={"name": "Zoe"})
        taken = http.patch("/v1/speakers/Yul", json={"name": "Zoe"})
        renamed = http.patch("/v1/speakers/Yul", json={"name": "Yuli"})
        merged = http.patch("/v1/speakers/Yuli", json={"name": "Zoe", "merge": True})
        unknown = http.patch("/v1/speakers/Nobody", json={"name": "X"})
        later = diarized(server, http, "voices-yul-zoe-yul.wav")["items"][0]
        names = [v["name"] for v in http.get("/v1/speakers").json()["speakers"]]
        http.delete("/v1/speakers/Zoe")
    assert taken.status_code == 409 and "merge" in taken.json()["error"]["message"]
    assert renamed.json() == {"name": "Yuli", "voiceprints": 1} and merged.json() == {"name": "Zoe", "voiceprints": 1}
    assert unknown.status_code == 404 and "Zoe" in names and "Yuli" not in names
    assert [s["name"] for s in later["speakers"]] == ["Zoe", "Zoe"]  # both voices are now Zoe's


@pytest.mark.parametrize(
    ("label", "body", "status", "says"),
    [
        ("SPEAKER_09", {"name": "Nobody"}, 404, "no segment is spoken by 'SPEAKER_09'"),
        ("SPEAKER_00", {"name": "   "}, 400, "1 to 100 characters"),
        ("SPEAKER_00", {"name": "x" * 101}, 400, None),
        ("SPEAKER_00", {"name": "A", "extra": 1}, 400, None),
    ],
)
def test_naming_a_speaker_badly_is_refused_with_the_reason(
    server: HttpDaemon, label: str, body: dict[str, Any], status: int, says: str | None
) -> None:
    with server.client() as http:
        job = diarized(server, http, f"voices-bad-{label.lower()}-{len(str(body))}.wav")
        answer = http.put(f"/v1/jobs/{job['job_id']}/items/0/speakers/{label}", json=body)
        missing = http.put("/v1/jobs/NOSUCHJOB/items/0/speakers/SPEAKER_00", json={"name": "A"})
    assert answer.status_code == status and (says is None or says in answer.json()["error"]["message"])
    assert missing.status_code == 404


def test_with_remember_voices_off_naming_keeps_nothing(tmp_path: Path) -> None:
    with (
        http_daemon(
            tmp_path, top={"default_provider": "echo"}, sections={"diarization": {"remember_voices": False}}
        ) as server,
        server.client() as http,
    ):
        job = diarized(server, http, "voices-ann-bo.wav")
        named = http.put(f"/v1/jobs/{job['job_id']}/items/0/speakers/SPEAKER_00", json={"name": "Ann"})
        listed = http.get("/v1/speakers").json()
    assert named.json()["remembered"] is False and "remember_voices is off" in named.json()["why_not"]
    assert listed == {"remember_voices": False, "speakers": []}
