"""Run ``stenod run`` as a subprocess, as systemd would, and read its JSON log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from support.server import free_port

ROOT = Path(__file__).resolve().parents[1]
STENOD = [sys.executable, "-m", "stenod"]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def write_config(
    path: Path,
    *,
    top: dict[str, Any],
    watch: list[dict[str, Any]] = (),  # type: ignore[assignment]
    providers: dict[str, dict[str, Any]] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, table in (sections or {}).items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for rule in watch:
        lines.append("[[watch]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in rule.items()]
    for name, table in (providers or {}).items():
        lines.append(f"[providers.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Daemon:
    """One ``stenod run`` process; its stderr (JSON lines) goes to ``log_path``."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.config = config
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.args = args if args is not None else ["--config", str(config)]
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The process :meth:`start` started (an AssertionError before it was started)."""
        assert self.proc is not None, "the daemon was not started"
        return self.proc

    def start(self) -> Daemon:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*STENOD, "run", *self.args], stdout=log, stderr=log, env=self.env, cwd=self.cwd or ROOT
        )
        log.close()
        return self

    def events(self, since_start: bool = False) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        with self.log_path.open("rb") as fh:
            if since_start:
                fh.seek(self._offset)
            lines = fh.read().decode("utf-8", "replace").splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "(non-json)", "text": line})
        return out

    def named(self, event: str, since_start: bool = False) -> list[dict[str, Any]]:
        return [e for e in self.events(since_start) if e.get("event") == event]

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_for(lambda: self.named("daemon.ready", since_start=True) or self._dead(), "daemon.ready", timeout)
        assert self.alive, f"daemon exited early:\n{self.log_path.read_text()[-3000:]}"

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@contextmanager
def running(config: Path, log_path: Path, **kwargs: Any) -> Iterator[Daemon]:
    daemon = Daemon(config, log_path, **kwargs).start()
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        if daemon.alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.terminate(timeout=30)  # graceful, as systemd stops it
        daemon.kill()


@contextmanager
def fake_server(module: str, *args: str, log: Path | None = None, timeout: float = 30.0) -> Iterator[str]:
    """Run ``python -m <module> --port N`` (its output appended to ``log`` if given) and
    yield its URL once it answers."""
    port = free_port()
    with log.open("ab") if log is not None else contextlib.nullcontext() as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port), *args], cwd=ROOT, stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/__fake__/stats", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, f"{module} to listen", timeout=timeout)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_wav(path: Path, seconds: float = 1.0) -> None:
    """A silent 16 kHz mono WAV, written beside the inbox and renamed in (a complete file at once)."""
    staging = path.parent.parent / f".{path.name}"
    with wave.open(str(staging), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * int(16_000 * seconds))
    os.replace(staging, path)


def watch_config(
    tmp_path: Path, provider: str, url: str, key: str, options: dict[str, Any], poll: float, **rule: Any
) -> Path:
    """A config watching ``tmp_path/inbox`` with ``provider`` pointed at its fake (``rule``:
    more keys of the watch rule)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json", "pack_window_seconds": 0.2},
        watch=[
            {
                "path": inbox,
                "provider": provider,
                "language": "hi-IN",
                "options": options,
                "formats": ["txt", "json", "srt"],
                "settle_seconds": 0.3,
                **rule,
            }
        ],
        providers={provider: {"api_key": key, "base_url": url, "poll_interval_seconds": poll}},
    )


def start(daemon: Daemon) -> Daemon:
    daemon.start().wait_ready()
    return daemon
