"""The docs site builds with ``mkdocs build --strict`` (a broken link, a missing page or a
dead anchor fails it), and its generated pages say what the code says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stenod import __version__
from stenod.adapters.http.app import openapi_document
from stenod.cli.schemas import asyncapi
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


# The topic pages the README was split into (issue 27); each is in the nav and linked from the README.
PAGES = (
    "getting-started.md",
    "configuration.md",
    "configuration-reference.md",
    "folders.md",
    "offline-engine.md",
    "who-spoke.md",
    "cloud-providers.md",
    "http-api.md",
    "web-page.md",
    "home-assistant.md",
    "queue.md",
    "service.md",
    "container.md",
    "cluster.md",
    "security.md",
    "reliability.md",
    "chaos-runs.md",
    "performance.md",
    "architecture.md",
    "writing-a-provider.md",
)


def _nav_pages(nav: list[Any]) -> list[str]:
    found: list[str] = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            found += _nav_pages(value) if isinstance(value, list) else [value]
    return found


def test_the_front_page_is_the_readme(site: Path) -> None:
    first_heading = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("# "))
    assert first_heading[2:] in _text(site / "index.html")


def test_every_page_is_in_the_nav_once_and_every_nav_entry_is_a_page(site: Path) -> None:
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    written = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert sorted(nav) == sorted(set(nav)), "a page twice in the nav"
    assert set(nav) == written | {"index.md"}, "a page outside the nav, or a nav entry with no page"
    assert set(PAGES) <= written
    for page in nav:
        assert (site / ("index.html" if page == "index.md" else f"{page[:-3]}/index.html")).exists(), page


def test_the_readme_is_a_front_page_that_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 150 <= len(readme.splitlines()) <= 250
    for page in PAGES:
        assert f"](docs/{page})" in readme, page
    # the two commands, exactly as CI (.ci/run) and a newcomer call them
    assert "\n./dev run " in readme and "\n./dev test " in readme
    assert "./dev test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_http_api_page_renders_every_route_of_the_app(site: Path) -> None:
    text = _text(site / "http-api" / "index.html")
    document = openapi_document(__version__)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert f"{method.upper()} {path}" in text, (method, path)
            for parameter in operation.get("parameters", []):
                assert parameter["name"] in text, (path, parameter["name"])


def test_the_queue_page_renders_the_asyncapi_document(site: Path) -> None:
    text = _text(site / "queue" / "index.html")
    document = asyncapi()
    for channel in document["channels"].values():
        assert channel["address"] in text
    for name in [*document["operations"], *document["components"]["messages"]]:
        assert name in text


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
