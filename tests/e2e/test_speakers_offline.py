"""Voices remembered with the offline engine, through one ``stenod run`` process: the whisper
provider diarizes synthesised conversations of two voices (Festival's ``kal`` and an
espeak-ng voice); the test names ``kal`` "Host" with ``PUT …/speakers/{label}``; the next
recording, ``kal`` saying other sentences beside another voice, comes back with "Host" and
the similarity in its ``.json``; after ``DELETE /v1/speakers/Host`` a third recording
(through the official ``openai`` SDK, ``diarized_json``) names nobody. ``GET /v1/speakers``
is read after each step.

The echo plugin's version of these steps is ``test_speakers_remembered.py``; this one
proves the real voiceprints (CAM++, in the whisper worker) carry a name from one
recording to the next. Needs the ``diarize`` extra (``./dev test`` installs it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.audio import TranscriptionDiarized

from stenod_whisper.diarization import KNOWN_VOICE, MODEL
from support.conversations import Conversation, Turn, write_conversation
from tests.e2e.http_support import KEY, HttpDaemon, http_daemon

# One daemon for every step: loading Whisper and the diarization models once takes most of it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HOST = "kal"
# Short recordings (about 15 s, two sentences a voice). The seeds pick the sentences: kal
# says other ones in each recording, so a match is the voice's, not the words'.
FIRST = Conversation("first", (HOST, "f2"), 4, overlap=False, seed=1)
SECOND = Conversation("second", ("scot", HOST), 4, overlap=False, seed=13)
THIRD = Conversation("third", (HOST, "f2"), 3, overlap=False, seed=21)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    with http_daemon(tmp_path_factory.mktemp("voices-offline"), top={"default_provider": "whisper"}) as running:
        yield running


def recorded(server: HttpDaemon, conversation: Conversation) -> tuple[Path, list[Turn]]:
    path = server.roots / f"{conversation.name}.wav"
    return path, write_conversation(conversation, path)


def diarized(server: HttpDaemon, http: httpx.Client, path: Path) -> dict[str, Any]:
    body = {"diarize": True, "language": "en", "inputs": [{"path": str(path)}]}
    answer = http.post("/v1/jobs", json=body)
    assert answer.status_code == 202, answer.text
    job = server.finished(answer.json()["job_id"], timeout=400)
    assert job["state"] == "succeeded", job
    return job


def label_of(voice: str, turns: list[Turn], segments: list[dict[str, Any]]) -> str:
    """The speaker label most of ``voice``'s segments carry (a segment is the voice's when its
    middle falls inside one of the voice's reference turns)."""
    spans = [(t.start, t.end) for t in turns if t.speaker == voice]
    labels = Counter(
        s["speaker"] for s in segments if any(a <= (s["start"] + s["end"]) / 2 <= b for a, b in spans)
    ).most_common(1)
    assert labels, f"no segment of {voice}'s turns in {segments}"
    return str(labels[0][0])


def remembered(http: httpx.Client) -> list[tuple[str, int, list[str]]]:
    listed = http.get("/v1/speakers").json()
    return [(v["name"], v["voiceprints"], v["models"]) for v in listed["speakers"]]


def test_a_voice_named_once_is_recognised_in_the_next_recording_until_it_is_forgotten(
    server: HttpDaemon, tmp_path: Path
) -> None:
    first, first_turns = recorded(server, FIRST)
    second, second_turns = recorded(server, SECOND)
    third, _ = recorded(server, THIRD)
    with (
        server.client(timeout=400) as http,
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=400) as sdk,
    ):
        before = remembered(http)
        job = diarized(server, http, first)
        item = job["items"][0]
        host = label_of(HOST, first_turns, item["transcript"]["segments"])
        named = http.put(f"/v1/jobs/{job['job_id']}/items/0/speakers/{host}", json={"name": "Host"})
        after_naming = remembered(http)

        job = diarized(server, http, second)
        recognised = http.get(f"/v1/jobs/{job['job_id']}/outputs/json").json()
        after_recognising = remembered(http)

        forgotten = http.delete("/v1/speakers/Host")
        after_forgetting = remembered(http)
        with third.open("rb") as audio:
            unnamed = sdk.audio.transcriptions.create(
                file=audio, model="gpt-4o-transcribe-diarize", response_format="diarized_json", language="en"
            )

    assert before == []
    assert sorted(s["label"] for s in item["speakers"]) == ["SPEAKER_00", "SPEAKER_01"]
    assert named.status_code == 200 and named.json()["remembered"] is True, named.text
    assert after_naming == [("Host", 1, [MODEL])]

    # The second recording: kal's turns carry "Host", the other voice a label; the .json says how alike.
    assert label_of(HOST, second_turns, recognised["segments"]) == "Host"
    assert label_of("scot", second_turns, recognised["segments"]).startswith("SPEAKER_")
    (host,) = [s for s in recognised["speakers"] if s["name"] == "Host"]
    assert host["label"] == "Host" and KNOWN_VOICE <= host["similarity"] <= 1.0
    assert "voiceprint" not in host
    assert after_recognising == after_naming  # recognising a voice keeps nothing new

    assert forgotten.status_code == 204 and after_forgetting == []
    assert isinstance(unnamed, TranscriptionDiarized)
    assert {s.speaker for s in unnamed.segments} == {"A", "B"}  # two voices, lettered, neither named
