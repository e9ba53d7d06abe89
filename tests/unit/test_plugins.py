"""Plugin discovery: third-party plugins are peers of built-ins; broken ones are reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import stenod.provider
from stenod.errors import ConfigError
from stenod.wiring.plugin_discovery import Broken, Catalogue, Loaded, check_provider_class
from tests.fakes.scripted import ScriptedProvider

STENOD = [sys.executable, "-m", "stenod"]


def test_a_third_party_provider_from_its_own_distribution_is_found_and_used_like_a_built_in(echo_plugin, clean_env):
    catalogue = Catalogue.discover()
    echo, whisper = catalogue.available["echo"], catalogue.available.get("whisper")
    assert echo.distribution == "stenod-echo 1.1.0"
    assert whisper is None or whisper.distribution.startswith("stenod ")
    inbox = clean_env / "in"
    inbox.mkdir()
    audio = inbox / "hello.wav"
    audio.write_bytes(b"RIFF....")
    result = subprocess.run(
        [*STENOD, "transcribe", str(audio), "--provider", "echo", "--print"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "echo hello.wav 8 bytes" in result.stdout
    assert sorted(p.name for p in inbox.iterdir()) == ["hello.json", "hello.srt", "hello.txt", "hello.vtt", "hello.wav"]


def test_providers_command_lists_plugins_with_their_distribution_and_limits(echo_plugin, clean_env):
    result = subprocess.run([*STENOD, "providers"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "stenod-echo 1.1.0" in result.stdout and "tasks: transcribe, translate" in result.stdout


def test_two_plugins_with_one_name_are_an_error():
    entries = [Loaded("echo", ScriptedProvider, "one 1.0"), Loaded("echo", ScriptedProvider, "two 2.0")]
    with pytest.raises(ConfigError, match=r"two plugins are named 'echo': one 1.0 and two 2.0"):
        Catalogue.build(entries)


def test_a_broken_plugin_is_reported_and_only_fatal_when_asked_for():
    catalogue = Catalogue.build([Broken("bad", "bad:Provider", "bad 0.1", "ImportError: no module named x")])
    assert catalogue.available == {}
    with pytest.raises(ConfigError, match=r"provider 'bad' \(bad 0.1\) failed to load: ImportError"):
        catalogue.require("bad")


def test_a_class_that_is_not_a_provider_is_refused_with_the_reason():
    class Half:
        name = "half"

    with pytest.raises(Exception, match="Settings must subclass"):
        check_provider_class("half", Half)


def test_the_public_plugin_api_is_pinned():
    assert sorted(stenod.provider.__all__) == sorted(
        [
            "AuthError",
            "Batch",
            "BatchItem",
            "ConfigError",
            "Cost",
            "Diarization",
            "ErrorInfo",
            "FileUpload",
            "Handle",
            "ItemResult",
            "ItemStatus",
            "JobError",
            "Json",
            "KnownSpeaker",
            "LANGUAGES",
            "Limits",
            "LiveAudio",
            "LiveTranscriber",
            "MediaChild",
            "MultipartBody",
            "NoOptions",
            "PermanentError",
            "Provider",
            "ProviderSettings",
            "RemoteState",
            "RetryableError",
            "Segment",
            "Speaker",
            "StartContext",
            "Status",
            "StepContext",
            "Task",
            "TranslatedDocument",
            "Transcript",
            "Voiceprint",
            "Word",
            "audio_too_long",
            "error_text",
            "file_chunks",
            "finished",
            "is_finished",
            "language_name",
            "provider_http_errors",
            "retry_after_seconds",
        ]
    )


def test_built_in_plugins_import_nothing_from_stenod_but_the_plugin_api():
    root = Path(__file__).resolve().parents[2] / "plugins"
    offenders = []
    for source in root.rglob("*.py"):
        for line in source.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import stenod", "from stenod")) and not stripped.startswith(
                ("from stenod.provider import", "from stenod_", "import stenod_")
            ):
                offenders.append(f"{source.relative_to(root)}: {stripped}")
    assert offenders == []
