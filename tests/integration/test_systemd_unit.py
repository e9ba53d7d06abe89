"""The shipped systemd unit, sysusers and tmpfiles snippets, checked with systemd's own tools.

These run without systemd as PID 1: ``systemd-analyze verify`` and ``security --offline``
read the unit file, ``systemd-sysusers``/``systemd-tmpfiles --root`` act on a scratch root,
and ``systemd/sandbox-exec.py`` applies the unit's seccomp filter to a Python workload.
Restart and watchdog behaviour need a real service manager and are not covered here.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stenod.settings import Settings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "stenod.service"
SYSUSERS = REPO / "systemd" / "stenod.sysusers"
TMPFILES = REPO / "systemd" / "stenod.tmpfiles"
SANDBOX_EXEC = REPO / "systemd" / "sandbox-exec.py"
SHIPPED_EXEC = "ExecStart=/opt/stenod/bin/stenod "
MAX_EXPOSURE = 1.5


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run tests/setup-system.sh (Debian package 'systemd')")
    return path


def service_settings() -> dict[str, list[str]]:
    """``Key=value`` pairs of the unit's [Service] section, repeated keys kept in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart= exists; point it at this checkout's console script.
    stenod = Path(sys.executable).with_name("stenod")
    assert stenod.is_file(), "the stenod console script is not installed in this venv"
    text = UNIT.read_text()
    assert text.count(SHIPPED_EXEC) == 1
    unit = tmp_path / "stenod.service"
    unit.write_text(text.replace(SHIPPED_EXEC, f"ExecStart={stenod} "))
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    # Unknown or misspelt keys are only warnings (exit 0), so the output must be clean as well.
    complaints = [line for line in result.stderr.splitlines() if "stenod.service" in line]
    assert (result.returncode, complaints) == (0, [])


def test_unit_exposure_is_at_most_1_5() -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for stenod\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE


def test_unit_is_notify_with_watchdog_and_no_restart_loop_on_config_errors() -> None:
    settings = service_settings()
    assert settings["Type"] == ["notify"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == ["2"]  # ConfigError exits 2
    assert seconds(settings["WatchdogSec"][0]) > 0
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_stop_timeout_leaves_room_for_the_shutdown_grace() -> None:
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    assert seconds(service_settings()["TimeoutStopSec"][0]) >= 2 * grace


def test_credentials_are_loaded_by_name_so_missing_ones_do_not_block_start() -> None:
    # "ID" alone searches /etc/credstore etc. and skips absent files; "ID:/path" would be fatal.
    credentials = service_settings()["LoadCredential"]
    assert credentials, "no LoadCredential= lines"
    assert all(":" not in entry for entry in credentials)
    assert all(
        entry.endswith(".api_key") or entry in ("amqp.url", "http.api_keys", "journal.url") for entry in credentials
    )
    assert {"http.api_keys", "journal.url"} <= set(credentials)


def test_sysusers_snippet_creates_a_system_user_without_a_login_shell(tmp_path: Path) -> None:
    root = _scratch_root(tmp_path)
    subprocess.run([tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)], check=True, capture_output=True)
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    _, _, uid, gid, _, home, shell = users["stenod"]
    assert int(uid) < 1000  # a system account
    assert groups["stenod"][2] == gid
    assert (home, shell) == ("/var/lib/stenod", "/usr/sbin/nologin")


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles needs root to chown in the scratch root")
def test_tmpfiles_snippet_creates_a_group_shared_inbox(tmp_path: Path) -> None:
    root = _scratch_root(tmp_path)
    subprocess.run([tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)], check=True, capture_output=True)
    subprocess.run(
        [tool("systemd-tmpfiles"), f"--root={root}", "--create", str(TMPFILES)],
        check=True,
        capture_output=True,
    )
    uid, gid = next(
        line.split(":")[2:4] for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("stenod:")
    )
    for directory in (root / "srv/stenod", root / "srv/stenod/inbox"):
        info = directory.stat()
        assert (info.st_uid, info.st_gid) == (int(uid), int(gid))
        assert stat.S_IMODE(info.st_mode) == 0o2770


def _scratch_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root


WORKLOAD = textwrap.dedent(
    """
    import asyncio, concurrent.futures, multiprocessing, os, sqlite3, sys, wave

    def decode(path, model):
        # The encoder's convolutions are oneDNN kernels generated at run time: this is what
        # needs MemoryDenyWriteExecute=no. Two threads: OpenMP's set-up runs too.
        from faster_whisper import WhisperModel
        whisper = WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=2, local_files_only=True)
        segments, info = whisper.transcribe(path, vad_filter=False, language="en")
        list(segments)
        return "decoded"

    async def main(workdir, model):
        import av, httpx
        from fastapi import FastAPI
        from stenod.adapters.http.server import HttpServer
        try:
            os.sched_setaffinity(0, os.sched_getaffinity(0))  # in @resources: must be refused
            sys.exit("the sandbox is not active")
        except PermissionError:
            pass
        db = sqlite3.connect(os.path.join(workdir, "journal.db"))
        db.execute("pragma journal_mode=wal")
        db.execute("create table t (x)")
        db.commit()
        audio = os.path.join(workdir, "silence.wav")
        with wave.open(audio, "wb") as w:
            w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(bytes(32000))
        with av.open(audio) as container:
            assert sum(frame.samples for frame in container.decode(audio=0)) == 16000
        app = FastAPI()
        app.get("/metrics")(lambda: {"ok": True})
        server = HttpServer(app, "127.0.0.1:0")
        host, port = server.bind()
        stopping = asyncio.Event()
        serving = asyncio.ensure_future(server.run(stopping))
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    assert (await http.get(f"http://{host}:{port}/metrics")).status_code == 200
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            else:
                sys.exit("the HTTP server did not answer")
        stopping.set()
        await serving
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            result = await asyncio.get_running_loop().run_in_executor(pool, decode, audio, model)
        print("workload", result)

    if __name__ == "__main__":
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_python_runtime_and_local_engine_live_with_the_units_syscall_filter(
    tmp_path: Path, whisper_models: Path
) -> None:
    """Imports, SQLite WAL, the HTTP server on loopback, PyAV and a spawned faster-whisper worker
    under the filter."""
    system_python = "/usr/bin/python3"
    probe = subprocess.run([system_python, "-c", "import seccomp"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-seccomp is not installed (apt-get install python3-seccomp)")
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    result = subprocess.run(
        [
            system_python,
            str(SANDBOX_EXEC),
            "--unit",
            str(UNIT),
            "--",
            sys.executable,
            str(script),
            str(tmp_path),
            str(whisper_models / "whisper-base"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("workload decoded")
