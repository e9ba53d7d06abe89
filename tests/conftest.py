"""Fixtures shared by every test layer."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

ROOT = Path(__file__).resolve().parent.parent
ECHO_DIST = ROOT / "tests" / "plugins" / "stenod-echo"
WHISPER_CACHE_ENV = "STENOD_PROVIDERS__WHISPER__MODEL_DIR"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--journal-backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the journal of every daemon the tests start (postgresql: a database of its own for each test)",
    )


@contextlib.contextmanager
def _use_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from support.postgres import fresh_database

    with fresh_database() as url:
        monkeypatch.setenv("STENOD_JOURNAL__BACKEND", "postgresql")
        monkeypatch.setenv("STENOD_JOURNAL__URL", url)
        yield url
        monkeypatch.delenv("STENOD_JOURNAL__URL", raising=False)  # before the database is dropped


@pytest.fixture(autouse=True)
def _journal_backend_of_the_run(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``--journal-backend postgresql``: every daemon a test starts keeps its jobs in PostgreSQL."""
    if request.config.getoption("--journal-backend") == "postgresql" and "journal_backend" not in request.fixturenames:
        with _use_postgres(monkeypatch):
            yield
    else:
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A test that takes this runs twice: its daemons on SQLite, then on PostgreSQL."""
    if request.param == "postgresql":
        with _use_postgres(monkeypatch):
            yield "postgresql"
    else:
        yield "sqlite"


def install_echo_plugin() -> None:
    """Install the third-party test provider from its own distribution (not editable: a
    plain install is importable at once, without restarting the interpreter)."""
    wanted = tomllib.loads((ECHO_DIST / "pyproject.toml").read_text())["project"]["version"]
    try:
        if importlib.metadata.version("stenod-echo") == wanted:
            return
    except importlib.metadata.PackageNotFoundError:
        pass
    # Not installed, or an older one (the plugin learnt something): install this one.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ECHO_DIST)], check=True
    )
    importlib.invalidate_caches()


@pytest.fixture(scope="session", autouse=True)
def echo_plugin() -> None:
    """Many tests (and every daemon they start) use the third-party ``echo`` provider."""
    install_echo_plugin()


@pytest.fixture(scope="session", autouse=True)
def whisper_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache for the whole run, with the bundled model assembled once, for the
    provider under test and every daemon the tests start (through the environment)."""
    from stenod_whisper.model import assemble_bundled

    cache = tmp_path_factory.mktemp("whisper-models")
    assemble_bundled(cache)
    previous = os.environ.get(WHISPER_CACHE_ENV)
    os.environ[WHISPER_CACHE_ENV] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop(WHISPER_CACHE_ENV, None)
    else:
        os.environ[WHISPER_CACHE_ENV] = previous


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No STENOD_* or systemd variables from the caller's environment; HOME in tmp."""
    for key in list(os.environ):
        if key.startswith("STENOD_") or key in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NOTIFY_SOCKET"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    return tmp_path
