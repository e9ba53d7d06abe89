"""The docs site builds with ``mkdocs build --strict`` (a broken link, a missing page or a
dead anchor fails it), and its generated pages say what the code says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stenod.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def _text(page: Path) -> str:
    return re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))


def test_the_front_page_is_the_readme(site: Path) -> None:
    first_heading = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("# "))
    assert first_heading[2:] in _text(site / "index.html")


def test_the_configuration_reference_lists_every_key_with_its_environment_variable(site: Path) -> None:
    text = _text(site / "configuration-reference" / "index.html")
    for name in Settings.model_fields:
        assert f"STENOD_{name.upper()}" in text, name
    assert "STENOD_HTTP__LISTEN" in text and "STENOD_PROVIDERS__WHISPER__MODEL" in text


def test_the_module_map_names_every_module(site: Path) -> None:
    text = _text(site / "architecture" / "index.html")
    for path in (ROOT / "daemon" / "stenod").rglob("*.py"):
        if path.name != "__init__.py":
            assert path.name in text, path
