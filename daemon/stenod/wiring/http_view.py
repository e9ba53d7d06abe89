"""The running daemon as the HTTP routes see it (``stenod.adapters.http.context.DaemonView``):
read at each request, so a reload's providers and watch rules show at once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stenod.wiring.app import Daemon


class DaemonHttpView:
    """A DaemonView over the composition root's ``Daemon``."""

    def __init__(self, daemon: Daemon, *, wake_urls: Callable[[], None], queue_roots: Sequence[Path]) -> None:
        self._daemon = daemon
        self._wake_urls = wake_urls
        self._queue_roots = queue_roots  # [amqp] allowed_roots: not reloaded

    def providers(self) -> tuple[Sequence[str], Mapping[str, str]]:
        return sorted(self._daemon.providers.runtimes), self._daemon.providers.unavailable

    def configured(self) -> set[str]:
        settings = self._daemon.settings
        return {*settings.providers, settings.default_provider}

    def watched(self) -> list[dict[str, Any]]:
        settings = self._daemon.settings
        return [
            {"path": str(r.path), "provider": r.provider or settings.default_provider, "language": r.language}
            for r in settings.watch
        ]

    def status_lines(self) -> list[str]:
        return [part() for part in self._daemon.status_parts.values()]

    def audio_roots(self) -> Sequence[Path]:
        return [r.path for r in self._daemon.settings.watch] + list(self._queue_roots)

    def probe_format(self, path: Path) -> str | None:
        return self._daemon.media.audio_format(path)

    def state_full(self) -> str | None:
        return self._daemon.disk.state_full()

    def notify(self) -> None:
        self._daemon.dispatcher.notify()

    def wake_urls(self) -> None:
        self._wake_urls()
