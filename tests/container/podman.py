"""Rootful podman with runc, in a private configuration, and stenod's image built with it.

What this machine allows, measured: Debian's mirror and PyPI are reachable, no container
registry is; crun refuses its cgroup layout, runc works; podman's default open-files
limit is above the machine's hard limit, so containers fail to start unless the limit is
lowered. Hence a ``containers.conf`` of our own (``CONTAINERS_CONF``: runc, cgroupfs, the
hard ``nofile`` limit), storage of our own (``--root``/``--runroot`` under a cache folder),
and ``debian:bookworm-slim`` made with mmdebstrap and imported instead of pulled.

Kept between runs, in the cache folder: the base image, the dependency wheels and the
image layers (an unchanged tree rebuilds from cache in seconds). Several test sessions may
share the cache: setting it up and building take a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BASE = "docker.io/library/debian:bookworm-slim"
TAG = "localhost/stenod:test"
BUILD_STAGE_TAG = "localhost/stenod-build:test"
# Reproducible wheels (zip timestamps): an unchanged tree gives the same bytes, and so
# podman's layer cache is hit.
SOURCE_DATE_EPOCH = "315532800"
# The path excludes of Debian's official slim images (debuerreotype), so the base and the
# image built on it have the size they would have from the registry.
_SLIM = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
TOOLS = ("podman", "runc", "mmdebstrap")


def cache_dir() -> Path:
    """``$STENOD_CONTAINER_CACHE``, else ``~/.cache/stenod-tests/container``."""
    if explicit := os.environ.get("STENOD_CONTAINER_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stenod-tests" / "container"


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The mirror this machine's apt takes bookworm from (one-line or deb822 sources)."""
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for stanza in text.split("\n\n"):  # deb822: Types, URIs, Suites
            fields: dict[str, list[str]] = {}
            for line in stanza.splitlines():
                key, colon, value = line.partition(":")
                if colon and not line.startswith("#"):
                    fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and "bookworm" in fields.get("suites", []):
                return fields["uris"][0]
        for line in text.splitlines():  # deb [options] URI suite components
            words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                return words[1]
    return "http://deb.debian.org/debian"


@dataclass(frozen=True, slots=True)
class Podman:
    """``podman`` with this suite's configuration and storage."""

    cache: Path

    @classmethod
    def create(cls, cache: Path) -> Podman:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} missing: run tests/setup-system.sh (./dev test does)")
        if os.geteuid() != 0:
            raise RuntimeError("the container tests run rootful podman: run them as root")
        cache.mkdir(parents=True, exist_ok=True)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        conf = cache / "containers.conf"
        text = (
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
        )
        if not conf.is_file() or conf.read_text() != text:
            conf.write_text(text)
        return cls(cache)

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.cache / "storage"),
            "--runroot",
            str(self.cache / "run"),
            "--tmpdir",
            str(self.cache / "run" / "libpod"),
            *args,
        ]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.cache / "containers.conf")}
        done = subprocess.run(self.argv(*args), env=env, capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done

    def inspect(self, *names: str, kind: str = "container") -> list[dict[str, Any]]:
        return list(json.loads(self(kind, "inspect", *names).stdout))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One session at a time sets up the base image or builds."""
        with open(self.cache / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_base(podman: Podman) -> float:
    """``debian:bookworm-slim`` in the storage: imported from a cached mmdebstrap tarball,
    made first if need be. Returns the seconds it took (0 when it was there)."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return 0.0
    started = time.monotonic()
    tarball = podman.cache / "bookworm-slim.tar"
    if not tarball.is_file():
        partial = tarball.with_suffix(".part.tar")  # mmdebstrap picks its output format by the extension
        options = [f"--dpkgopt={rule}" for rule in _SLIM]
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",  # merged /usr without the usrmerge package (and perl)
                *options,
                "bookworm",
                str(partial),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        partial.rename(tarball)
    podman("import", "--change", 'CMD ["bash"]', str(tarball), BASE, timeout=300)
    return time.monotonic() - started


def build_wheels(context: Path, extras: str = "") -> float:
    """stenod's wheel, built from a clean copy of the tree, and every dependency's (with
    ``extras``, e.g. "diarize", theirs too), in ``context/wheels``. Dependencies come from
    that folder when they are all there, else from the package index and pip's configured
    find-links (where this machine keeps torch's CPU wheel: the pin in the extra takes it
    before PyPI's CUDA build). A file whose bytes did not change is left alone, so podman's
    cache sees the same context. Returns the seconds it took."""
    started = time.monotonic()
    scratch = context.parent / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    source, fresh = scratch / "source", scratch / "wheel"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("daemon", "plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = context / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}

    def pip_wheel(*args: str, into: Path, offline: bool) -> bool:
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--find-links", str(wheels), "-w", str(into)]
        argv += ["--no-index"] if offline else []
        return subprocess.run([*argv, *args], env=env, capture_output=True, timeout=1800).returncode == 0

    # Building needs setuptools; offline, it must be in the folder (the first run puts it there).
    if not pip_wheel("--no-deps", str(source), into=fresh, offline=True):
        assert pip_wheel("setuptools>=77", "wheel", into=wheels, offline=False), "pip wheel setuptools failed"
        assert pip_wheel("--no-deps", str(source), into=fresh, offline=True), "pip wheel stenod failed"
    (built,) = fresh.glob("stenod-*.whl")
    current = wheels / built.name
    if not current.is_file() or current.read_bytes() != built.read_bytes():
        for old in wheels.glob("stenod-*.whl"):
            old.unlink()
        shutil.move(built, current)
    wanted = f"{current}[{extras}]" if extras else str(current)
    if not pip_wheel(wanted, into=wheels, offline=True):
        assert pip_wheel(wanted, into=wheels, offline=False), "pip wheel of the dependencies failed"
    shutil.rmtree(scratch)
    return time.monotonic() - started


def _mirror(source: Path, target: Path) -> None:
    """Make ``target`` hold what ``source`` holds, touching only files that differ."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in source.iterdir() if p.name != "__pycache__"}
    for extra in {p.name for p in target.iterdir()} - wanted:
        if (target / extra).is_dir():
            shutil.rmtree(target / extra)
        else:
            (target / extra).unlink()
    for name in wanted:
        if (source / name).is_dir():
            _mirror(source / name, target / name)
        elif not (target / name).is_file() or (target / name).read_bytes() != (source / name).read_bytes():
            shutil.copy2(source / name, target / name)


def build_image(podman: Podman, context: Path, extras: str = "") -> str:
    """Build the image from ``Containerfile`` with ``--build-arg WHEELS`` (no index, no
    network but Debian's mirror) and ``EXTRAS``, tagged by its extras. Returns its id.
    Images of earlier builds are pruned; this build's own layers, both stages, stay for the
    next run's cache."""
    _mirror(ROOT / "container", context / "container")
    common = [
        "--pull=never",
        "--format",
        "docker",
        "--build-arg",
        "WHEELS=wheels",
        "--build-arg",
        f"EXTRAS={extras}",
        "--file",
        str(ROOT / "Containerfile"),
    ]
    suffix = f"-{extras}" if extras else ""  # localhost/stenod:test-diarize beside localhost/stenod:test
    iid = context.parent / f"image-id{suffix}"  # not in the context: it would change it
    podman("build", *common, "--iidfile", str(iid), "--tag", TAG + suffix, str(context), timeout=3600)
    # The build stage tagged too (from cache, at once), so pruning keeps it for next time.
    podman("build", *common, "--target", "build", "--tag", BUILD_STAGE_TAG + suffix, str(context), timeout=600)
    podman("image", "prune", "--force")
    return iid.read_text().strip()
