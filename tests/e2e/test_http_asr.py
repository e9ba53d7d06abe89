"""whisper-asr-webservice's routes as Bazarr's Whisper provider calls them.

Bazarr (custom_libs/subliminal_patch/providers/whisperai.py) decodes the video's audio with
ffmpeg into raw 16 kHz mono s16le and posts it with ``requests``: a part named
``audio_file`` whose file name is also ``audio_file``, no part content type, query
``encode=false``; ``/detect-language`` first when the track's language is unknown, then
``/asr?task=…&language=…&output=srt&encode=false``. It cannot send a header, so these
routes admit its address when it is in ``[http] keyless_networks``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pysubs2
import pytest

from support.speech import ITALIAN, SENTENCES, festival_pcm, festival_speech, synthesise_sentences
from tests.e2e.http_support import HttpDaemon, http_daemon

BAZARR = "127.0.0.2"  # Bazarr's address: in keyless_networks; the tests' own 127.0.0.1 is not


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    http = {"listen": "0.0.0.0:0", "keyless_networks": [f"{BAZARR}/32"]}
    with http_daemon(tmp_path_factory.mktemp("asr"), http=http) as running:
        yield running


def bazarr(server: HttpDaemon) -> httpx.Client:
    """A client as Bazarr is: no key, from its own address."""
    transport = httpx.HTTPTransport(local_address=BAZARR)
    return httpx.Client(base_url=server.url.replace("127.0.0.1", BAZARR), transport=transport, timeout=120)


@pytest.fixture(scope="module")
def italian_pcm() -> bytes:
    return b"".join(festival_pcm(s, voice="italian") + bytes(16000) for s in ITALIAN)


def as_bazarr_sends(pcm: bytes) -> dict[str, tuple[str, bytes]]:
    return {"audio_file": ("audio_file", pcm)}  # requests' files={'audio_file': out}


def test_detect_language_reads_raw_pcm_from_bazarr(server: HttpDaemon, italian_pcm: bytes) -> None:
    with bazarr(server) as http:
        answer = http.post("/detect-language", params={"encode": "false"}, files=as_bazarr_sends(italian_pcm))
    assert answer.status_code == 200
    body = answer.json()
    assert (body["detected_language"], body["language_code"]) == ("italian", "it") and body["confidence"] > 0.8


def test_asr_translates_raw_pcm_into_an_srt_subtitle(server: HttpDaemon, italian_pcm: bytes) -> None:
    params = {"task": "translate", "language": "it", "output": "srt", "encode": "false"}
    with bazarr(server) as http:
        answer = http.post("/asr", params=params, files=as_bazarr_sends(italian_pcm))
    subtitle = pysubs2.SSAFile.from_string(answer.text, format_="srt")
    text = " ".join(e.plaintext for e in subtitle).lower()
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["content-disposition"] == 'attachment; filename="audio_file.srt"'
    assert len(subtitle) >= 1 and "good morning" in text


def test_asr_transcribes_an_encoded_file_in_every_output(server: HttpDaemon, tmp_path: Path) -> None:
    wav = synthesise_sentences(SENTENCES[:2], tmp_path / "talk.wav").read_bytes()
    answers = {}
    with server.client() as http:
        for output in ("txt", "vtt", "srt", "tsv", "json"):
            answers[output] = http.post("/asr", params={"output": output}, files={"audio_file": ("talk.wav", wav)})
    assert all(a.status_code == 200 for a in answers.values())
    assert "pizza" in answers["txt"].text and answers["txt"].text.count("\n") == 2
    assert answers["vtt"].text.startswith("WEBVTT") and "-->" in answers["srt"].text
    assert answers["tsv"].text.startswith("start\tend\ttext\n0\t")
    assert "pizza" in answers["json"].json()["text"] and answers["json"].json()["segments"]


def test_status_answers_bazarrs_test_connection_with_a_version(server: HttpDaemon) -> None:
    with bazarr(server) as http:
        status = http.get("/status")
    assert status.status_code == 200 and status.json()["version"].startswith("stenod ")


def test_without_a_key_other_addresses_are_refused(server: HttpDaemon, italian_pcm: bytes) -> None:
    with server.client(key=None) as http:
        answers = [
            http.post("/asr", params={"encode": "false"}, files=as_bazarr_sends(italian_pcm[:32000])),
            http.get("/status"),
        ]
    assert [a.status_code for a in answers] == [401, 401]


def test_keyless_networks_open_only_the_whisper_asr_routes(server: HttpDaemon) -> None:
    with bazarr(server) as http:
        answers = [http.get("/v1/models"), http.get("/v1/jobs")]
    assert [a.status_code for a in answers] == [401, 401]


def test_a_file_with_no_audio_in_it_is_a_clear_400(server: HttpDaemon) -> None:
    with bazarr(server) as http:
        answer = http.post("/asr", files={"audio_file": ("audio_file", b"\x00\x01garbage" * 300)})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "not_audio"


def test_the_same_pcm_twice_is_transcribed_once(server: HttpDaemon, tmp_path: Path) -> None:
    pcm = festival_pcm("The train to the city was delayed because of heavy snow.")
    with bazarr(server) as http:
        first = http.post("/asr", params={"encode": "false", "language": "en"}, files=as_bazarr_sends(pcm))
        second = http.post("/asr", params={"encode": "false", "language": "en"}, files=as_bazarr_sends(pcm))
    assert first.text == second.text and "train" in first.text.lower()
    assert len(server.daemon.named("item.reused")) >= 1


def test_italian_speech_file_is_detected_with_encode_true(server: HttpDaemon, tmp_path: Path) -> None:
    path = festival_speech(ITALIAN[:1], tmp_path / "ciao.wav", voice="italian")
    with bazarr(server) as http:
        answer = http.post("/detect-language", files={"audio_file": ("ciao.wav", path.read_bytes())})
    assert answer.json()["language_code"] == "it"
