"""Doors of issue #24 opened as an attacker would, against a running daemon, and the
legitimate client beside each: hostile text in subtitles, URLs that tunnel to this machine.

(Bounded decoding: tests/e2e/test_audio_bombs.py; secrets, ``stenod config`` run as a program:
tests/unit/test_secret_masking.py; results nobody fetched: tests/e2e/test_results_retention.py;
a full disk: tests/e2e/test_full_disk.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pysubs2
import pytest

from tests.e2e.http_support import HttpDaemon, form_token, http_daemon, sign_in

HOSTILE_NAME = "a<b>{\\an8}\\Nx --> y.txt"
HOSTILE_SPEAKER = "Eve</v><c.red>\\N{\\an8}<font color=red>&amp;"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    with http_daemon(tmp_path_factory.mktemp("security"), providers={"echo": {}}) as running:
        yield running


def _finished_echo_job(server: HttpDaemon, name: str) -> str:
    (server.roots / name).write_text("spoken words")
    with server.client() as http:
        created = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(server.roots / name)}]})
    assert created.status_code == 202, created.text
    job_id = str(created.json()["job_id"])
    assert server.finished(job_id)["state"] == "succeeded"
    return job_id


def _rename_speaker_on_the_page(server: HttpDaemon, job_id: str, old: str, new: str) -> None:
    with server.client(key=None) as page:
        assert sign_in(page).status_code in (302, 303)
        token = form_token(page.get(f"/jobs/{job_id}/items/0").text)
        renamed = page.post(
            f"/jobs/{job_id}/items/0/speaker", data={"csrf": token, "old": old, "new": new}, follow_redirects=False
        )
    assert renamed.status_code == 303, renamed.text


def _outputs(server: HttpDaemon, job_id: str) -> tuple[str, str]:
    with server.client() as http:
        return http.get(f"/v1/jobs/{job_id}/outputs/srt").text, http.get(f"/v1/jobs/{job_id}/outputs/vtt").text


def test_hostile_speaker_names_and_text_stay_text_in_subtitles(server: HttpDaemon) -> None:
    job_id = _finished_echo_job(server, HOSTILE_NAME)  # echo speaks the file's name
    _rename_speaker_on_the_page(server, job_id, "0", HOSTILE_SPEAKER)
    srt, vtt = _outputs(server, job_id)

    cues = vtt.split("\n\n")[1:]
    assert len([c for c in cues if c.strip()]) == 2  # nothing broke a cue in two or added one
    first = cues[0].splitlines()[2]
    assert first.startswith("<v Eve&lt;/v&gt;&lt;c.red&gt;") and "<" not in first[2:].split(">", 1)[1]
    assert "&amp;amp;" in first and "-->" not in "".join(c.splitlines()[2] for c in cues if c.strip())
    assert "\\" not in vtt and "{\\" not in srt

    parsed = pysubs2.SSAFile.from_string(srt, format_="srt", keep_html_tags=True)
    assert len(parsed) == 2
    assert "<" not in srt.replace("-->", "") and ">" not in srt.replace("-->", "")
    assert parsed[0].text.startswith("Eve\u2039/v\u203a\u2039c.red\u203a")  # ‹/v›: visible, inert


def test_a_plain_speaker_name_and_text_read_as_before(server: HttpDaemon) -> None:
    job_id = _finished_echo_job(server, "meeting.txt")
    _rename_speaker_on_the_page(server, job_id, "0", "Asha")
    srt, vtt = _outputs(server, job_id)
    assert "Asha: echo meeting.txt 12 bytes" in srt and "Speaker 1: second & \u2039last\u203a" in srt
    assert "<v Asha>echo meeting.txt 12 bytes" in vtt and "<v Speaker 1>second &amp; &lt;last&gt;" in vtt


@pytest.mark.parametrize(
    "url",
    [
        "https://[2002:7f00:1::]/a.mp3",  # 6to4 of 127.0.0.1
        "https://[2002:a9fe:a9fe::1]/latest/meta-data/",  # 6to4 of 169.254.169.254
        "https://[2002:c0a8:101::]:8443/a.mp3",  # 6to4 of 192.168.1.1
        "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/a.mp3",  # Teredo, client 127.0.0.1
        "https://[2001:0:808:808:8000:63bf:f5ff:fefe]/a.mp3",  # Teredo, public server, client 10.0.1.1
    ],
)
def test_a_url_tunnelling_to_a_private_ipv4_is_refused(server: HttpDaemon, url: str) -> None:
    with server.client() as http:
        answer = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"url": url}]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "url_not_allowed"


def test_a_6to4_url_of_a_public_address_is_accepted(server: HttpDaemon) -> None:
    with server.client() as http:
        answer = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"url": "https://[2002:808:808::]/a.mp3"}]})
        assert answer.status_code == 202, answer.text
        http.delete(f"/v1/jobs/{answer.json()['job_id']}")  # no route here: it would only retry
