"""The translate task end to end: ``stenod run`` against the fake Azure Translator in its own
process; documents come back translated beside the input, and a recording comes back
transcribed and translated as one job."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.harness import STENOD, fake_server, running, wait_for, write_config
from support.speech import SENTENCES, synthesise_sentences
from tests.fakes.translator import DEFAULT_API_KEY, docx_texts, make_docx


def test_documents_dropped_into_a_translate_rule_come_back_translated_beside_them(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with fake_server("tests.fakes.translator") as url:
        cfg = write_config(
            tmp_path / "stenod.toml",
            top={"state_dir": tmp_path / "state", "log_format": "json"},
            watch=[
                {
                    "path": inbox,
                    "provider": "azure",
                    "task": "translate",
                    "target_language": ["fr", "de"],
                    "settle_seconds": 0.2,
                }
            ],
            providers={"azure": {"api_key": DEFAULT_API_KEY, "base_url": url, "region": "westeurope"}},
        )
        with running(cfg, tmp_path / "daemon.log") as daemon:
            (inbox / "notes.txt").write_text("Buy milk.\nCall the plumber.\n")
            (inbox / "page.html").write_text("<html><body><h1>Welcome</h1><p>Opening hours</p></body></html>")
            (inbox / "letter.docx").write_bytes(make_docx(["Dear neighbour,", "the party is on Friday."]))
            expected = [
                inbox / f"{stem}.{lang}.{ext}"
                for stem, ext in (("notes", "txt"), ("page", "html"), ("letter", "docx"))
                for lang in ("fr", "de")
            ]
            wait_for(lambda: all(p.exists() for p in expected), "six translations", timeout=60)
            assert daemon.alive
    assert (inbox / "notes.fr.txt").read_text().splitlines() == ["[fr] Buy milk.", "[fr] Call the plumber."]
    html = (inbox / "page.de.html").read_text()
    assert "<h1>" in html and "[de] Welcome" in html and "<p>" in html  # markup kept, text translated
    assert docx_texts((inbox / "letter.fr.docx").read_bytes()) == [
        "[fr] Dear neighbour,",
        "[fr] the party is on Friday.",
    ]
    assert not list(inbox.glob("*.fr.fr.*"))  # stenod's own outputs are not translated again


def test_a_recording_in_a_transcribe_then_translate_rule_yields_transcript_and_translation(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with fake_server("tests.fakes.translator") as url:
        cfg = write_config(
            tmp_path / "stenod.toml",
            top={"state_dir": tmp_path / "state", "log_format": "json"},
            watch=[
                {
                    "path": inbox,
                    "provider": "whisper",
                    "then_translate_to": "fr",
                    "translate_provider": "azure",
                    "formats": ["txt", "srt"],
                    "settle_seconds": 0.5,
                }
            ],
            providers={"azure": {"api_key": DEFAULT_API_KEY, "base_url": url}, "whisper": {"workers": 1}},
        )
        with running(cfg, tmp_path / "daemon.log"):
            synthesise_sentences(SENTENCES[:2], tmp_path / "memo.wav")
            (tmp_path / "memo.wav").rename(inbox / "memo.wav")
            wait_for(lambda: (inbox / "memo.fr.txt").exists(), "the translated transcript", timeout=180)
    transcript = (inbox / "memo.txt").read_text()
    translated = (inbox / "memo.fr.txt").read_text()
    assert "pizza" in transcript and translated.startswith("[fr] ") and "pizza" in translated
    listing = subprocess.run(
        [*STENOD, "jobs", "--config", str(cfg), "--json"], capture_output=True, text=True, check=True
    )
    [job] = json.loads(listing.stdout)
    assert job["state"] == "succeeded" and len(job["items"]) == 2
    assert [Path(o).name for o in job["items"][1]["outputs"]] == ["memo.fr.txt"]
