"""Configuration sources, clear config errors with exit code 2, and read-only CLI commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stenod.cli.main import main
from stenod.errors import ConfigError
from stenod.settings_loading import load_settings

STENOD = [sys.executable, "-m", "stenod"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_toml_env_and_credentials_are_layered(clean_env, monkeypatch):
    cfg = write(
        clean_env / "s.toml",
        """
state_dir = "/tmp/x"
[amqp]
prefetch = 5
[[watch]]
path = "/srv/a"
provider = "echo"
""",
    )
    monkeypatch.setenv("STENOD_AMQP__PREFETCH", "9")
    monkeypatch.setenv("STENOD_LOG_LEVEL", "debug")
    settings = load_settings(cfg)
    assert settings.amqp.prefetch == 9 and settings.log_level == "debug"
    assert settings.state_dir == Path("/tmp/x") and settings.watch[0].provider == "echo"


def test_no_config_at_all_watches_inbox_with_the_offline_default(clean_env, monkeypatch):
    monkeypatch.chdir(clean_env)
    settings = load_settings(None)
    assert [r.path for r in settings.watch] == [clean_env / "inbox"]
    assert settings.default_provider == "whisper" and settings.watch[0].provider is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state_dir = [1]\n", "state_dir"),
        ("[amqp]\nprefetch = 0\n", "amqp.prefetch"),
        ("[[watch]]\npath = '/x'\ntask = 'translate'\n", "target_language"),
        ("[[watch]]\npath = '/x'\nafter = 'shred'\n", "watch.0.after"),
        ("unknown_key = 1\n", "unknown_key"),
        ("state_dir = \n", "not valid TOML"),
        ("[wyoming]\nlisten = '10300'\n", "wyoming.listen = '10300' is not host:port"),
        ("[wyoming]\nbeam_size = 0\n", "wyoming.beam_size"),
        ("[wyoming]\nworkers = 0\n", "wyoming.workers"),
    ],
)
def test_an_invalid_config_names_the_key(clean_env, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(write(clean_env / "bad.toml", text))


def test_the_cli_exits_2_with_the_reason_on_a_toml_syntax_error(clean_env):
    bad = write(clean_env / "bad.toml", "[[watch]\npath = 1\n")
    result = subprocess.run([*STENOD, "run", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr and str(bad) in result.stderr


def test_config_prints_the_effective_config_with_secrets_masked(clean_env, monkeypatch, capsys):
    creds = clean_env / "creds"
    creds.mkdir()
    (creds / "echo.api_key").write_text("CANARY-KEY-123\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    (clean_env / "in").mkdir()
    cfg = write(
        clean_env / "c.toml",
        f"""
[amqp]
url = "amqp://guest:SECRETPW@localhost/"
[[watch]]
path = "{clean_env / "in"}"
provider = "echo"
[providers.echo]
""",
    )
    assert main(["config", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "SECRETPW" not in out and "CANARY-KEY-123" not in out
    assert json.loads(out)["amqp"]["url"] == "amqp://guest:**********@localhost/"


def test_config_exits_2_for_an_unknown_provider_in_a_rule(clean_env, capsys):
    (clean_env / "in").mkdir()
    cfg = write(clean_env / "c.toml", f'[[watch]]\npath = "{clean_env / "in"}"\nprovider = "nosuch"\n')
    assert main(["config", "--config", str(cfg)]) == 2
    assert "watch.0.provider: unknown provider 'nosuch'" in capsys.readouterr().err


def test_usage_errors_exit_2(clean_env):
    result = subprocess.run([*STENOD, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_transcribe_translate_to_chains_or_translates_directly(clean_env):
    audio = clean_env / "call.wav"
    audio.write_bytes(b"RIFF-call")
    chained = subprocess.run(
        [
            *STENOD,
            "transcribe",
            str(audio),
            "--provider",
            "echo",
            "--translate-to",
            "fr",
            "--translate-provider",
            "echo",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert chained.returncode == 0, chained.stderr
    assert (clean_env / "call.txt").exists() and (clean_env / "call.fr.txt").read_text().startswith("[fr] ")
    doc = clean_env / "notes.txt"
    doc.write_text("hello")
    direct = subprocess.run(
        [*STENOD, "transcribe", str(doc), "--provider", "echo", "--translate-to", "de"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert direct.returncode == 0, direct.stderr
    assert (clean_env / "notes.de.txt").read_text() == "[de] hello"
