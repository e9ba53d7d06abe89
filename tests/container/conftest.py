"""The image, built once per session, and containers of it that clean up after themselves."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.harness import wait_for
from tests.container.podman import Podman, build_image, build_wheels, cache_dir, ensure_base

UID = 10001  # the image's user (Containerfile)


@dataclass(frozen=True, slots=True)
class Image:
    id: str
    timings: dict[str, float]


@pytest.fixture(scope="session")
def podman() -> Podman:
    try:
        return Podman.create(cache_dir())
    except RuntimeError as exc:
        pytest.skip(str(exc))


def built(podman: Podman, extras: str = "") -> Image:
    """The image with ``extras`` (e.g. "diarize"), from wheels in a build context of its own
    (so that the default image's context does not carry the extra's wheels)."""
    with podman.locked():
        base = ensure_base(podman)
        context = podman.cache / (f"context-{extras}" if extras else "context")
        wheels = build_wheels(context, extras)
        started = time.monotonic()
        image_id = build_image(podman, context, extras)
        build = time.monotonic() - started
    return Image(image_id, {"base": base, "wheels": wheels, "build": build})


@pytest.fixture(scope="session")
def image(podman: Podman) -> Image:
    return built(podman)


@pytest.fixture(scope="session")
def diarize_image(podman: Podman) -> Image:
    """The image built with ``--build-arg EXTRAS=diarize`` (who spoke, offline)."""
    return built(podman, "diarize")


@dataclass(slots=True)
class Container:
    """One ``podman run -d`` of the image; its JSON log lines, its fate."""

    podman: Podman
    name: str
    args: list[str] = field(default_factory=list)

    def start(self, image: str) -> Container:
        self.podman("run", "--detach", "--name", self.name, *self.args, image)
        return self

    def events(self) -> list[dict[str, Any]]:
        done = self.podman("logs", self.name, check=False)
        lines = (line for line in done.stderr.splitlines() if line.startswith("{"))  # the daemon logs to stderr
        return [json.loads(line) for line in lines]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def ready(self, timeout: float = 60) -> Container:
        wait_for(lambda: self.named("daemon.ready") or not self.running, "daemon.ready", timeout=timeout, interval=0.3)
        assert self.running, self.podman("logs", self.name, check=False).stderr[-3000:]
        return self

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.podman.inspect(self.name)[0]["State"])

    @property
    def running(self) -> bool:
        return bool(self.state["Running"])

    def exec(self, *argv: str, check: bool = True) -> str:
        return self.podman("exec", self.name, *argv, check=check).stdout

    def stop(self, timeout: int = 30) -> float:
        """SIGTERM (the image's STOPSIGNAL), SIGKILL after ``timeout``; seconds it took."""
        started = time.monotonic()
        self.podman("stop", "--time", str(timeout), self.name, timeout=timeout + 30)
        return time.monotonic() - started


@dataclass(slots=True)
class Containers:
    """Starts containers of the image; names volumes and secrets for them (``prefix``)."""

    podman: Podman
    image: str
    prefix: str = field(default_factory=lambda: f"stenod-test-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    made: list[Container] = field(default_factory=list)

    def __call__(self, *args: str) -> Container:
        container = Container(self.podman, f"{self.prefix}-{len(self.made)}", list(args))
        self.made.append(container)
        return container.start(self.image)

    def remove(self) -> None:
        """Every container started here, and the volumes and secrets named with ``prefix``."""
        for container in self.made:
            self.podman("rm", "--force", "--time", "0", container.name, check=False)
        for kind in ("volume", "secret"):
            for name in self.podman(kind, "ls", "--format", "{{.Name}}", check=False).stdout.split():
                if name.startswith(self.prefix):
                    self.podman(kind, "rm", name, check=False)


@pytest.fixture(scope="module")
def containers(podman: Podman, image: Image) -> Iterator[Containers]:
    made = Containers(podman, image.id)
    yield made
    made.remove()


def inbox_for(path: Path) -> Path:
    """A folder the image's user may write to, as docs/container.md says to make one."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, -1, UID)
    path.chmod(0o2775)
    return path
