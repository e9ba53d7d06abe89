"""Every file path and module a comment or docstring names still exists (issue 27: pointers
went stale when modules moved, e.g. ``stenod.adapters.health_http`` after the HTTP adapter
became a package).

Checked, in every tracked Python file and in CONTRIBUTING.md: file paths under ``tests/``,
``bench/``, ``support/``, ``daemon/``, ``plugins/``, ``stenod/`` (the core) and ``adapters/``
(the core's adapters); dotted names in Sphinx roles (``:mod:`stenod.x```, ``:class:`…```);
dotted names in double backquotes that name one of our modules or a module that moved into
a subpackage. Other dotted names are often queue, event or logger names
(``stenod.requests``, ``stenod.job.accepted``) and are left alone. The docs pages have
their own check (``mkdocs build --strict``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = ("stenod", "stenod_whisper", "stenod_sarvam", "stenod_vachana", "stenod_nanogpt", "stenod_azure")
_PATH = re.compile(
    r"(?<![\w/.-])((?:tests|bench|support|daemon|plugins|stenod|stenod_[a-z]+|adapters)/[\w./-]*\.(?:py|toml|sh|ya?ml|json|html))\b"
)
_ROLE = re.compile(r":(?:mod|class|func|meth|data|attr|exc|obj):`~?([\w.]+)`")
_QUOTED = re.compile(r"``((?:" + "|".join(_PACKAGES) + r"|tests|bench|support)(?:\.\w+)+)(?:\(\))?``")


def _tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    this = Path(__file__).resolve()  # names stale references on purpose, as examples
    return [ROOT / n for n in names if (n.endswith(".py") or n == "CONTRIBUTING.md") and ROOT / n != this]


def _path_exists(path: str) -> bool:
    path = path.rstrip(".")
    bases = [ROOT, ROOT / "daemon", ROOT / "plugins", ROOT / "daemon" / "stenod"]
    return any((base / path).exists() for base in bases)


def _source_root(package: str) -> Path:
    """The core lives under daemon/, the plugins under plugins/, tests, bench and support at the root."""
    if package == "stenod":
        return ROOT / "daemon"
    return ROOT / "plugins" if package in _PACKAGES else ROOT


def _module_file(parts: list[str]) -> Path | None:
    stem = _source_root(parts[0]).joinpath(*parts)
    for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _resolves(dotted: str) -> bool:
    """A module, or a name defined in one (``stenod.jobs.Job``, ``stenod.jobs.Job.moved_to``)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        module = _module_file(parts[:n])
        if module is not None:
            rest = parts[n:]
            return not rest or re.search(rf"\b{re.escape(rest[0])}\b", module.read_text()) is not None
    return False


def _names_code(dotted: str) -> bool:
    """Whether a name in double backquotes means a module of ours rather than a queue, an
    event type or an entry-point group: its first two parts are a module or package, or its
    second part is the name of a module that lives in a subpackage now (it moved)."""
    first, second = dotted.split(".")[:2]
    if _module_file([first, second]) is not None:
        return True
    base = _source_root(first) / first
    return any(base.glob(f"*/{second}.py")) or any(base.glob(f"*/{second}/__init__.py"))


def stale_references(files: list[Path]) -> list[str]:
    """``file:line: reference`` for every path or module named in ``files`` that does not exist."""
    stale: list[str] = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}:{number}"
            for path in _PATH.findall(line):
                if not _path_exists(path):
                    stale.append(f"{where}: {path}")
            for dotted in _ROLE.findall(line):
                if dotted.split(".")[0] in (*_PACKAGES, "tests", "bench", "support") and not _resolves(dotted):
                    stale.append(f"{where}: {dotted}")
            for dotted in _QUOTED.findall(line):
                if _names_code(dotted) and not _resolves(dotted):
                    stale.append(f"{where}: {dotted}")
    return stale


def test_every_path_and_module_named_in_the_code_exists() -> None:
    assert stale_references(_tracked()) == []


def test_a_moved_module_and_a_missing_file_are_reported_and_an_event_name_is_not(tmp_path: Path) -> None:
    note = tmp_path / "note.py"
    note.write_text(
        '"""See :mod:`stenod.adapters.health_http`, ``tests/unit/test_nothing_here.py``,\n'
        '``stenod.dispatcher.Dispatcher`` (now in stenod.dispatch) and the event ``stenod.job.accepted``."""\n'
    )
    found = [f.split(": ", 1)[1] for f in stale_references([note])]
    assert found == ["tests/unit/test_nothing_here.py", "stenod.adapters.health_http", "stenod.dispatcher.Dispatcher"]
