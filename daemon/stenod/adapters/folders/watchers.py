"""The watched folders as one source: one FolderSource per ``[[watch]]`` rule, swapped on reload."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from stenod.adapters.folders.source import FolderSource
from stenod.events_wait import first_of
from stenod.settings import WatchRule

log = structlog.get_logger("stenod.app")


class Watchers:
    """Runs one FolderSource per ``[[watch]]`` rule and swaps them on reload: a removed or
    changed rule's source stops taking files; jobs already accepted are not affected."""

    name = "watchers"

    def __init__(self, make: Callable[[WatchRule], FolderSource], rules: list[WatchRule]) -> None:
        self._make = make
        self._rules = rules
        self._changed = asyncio.Event()
        self.sources: dict[str, tuple[WatchRule, FolderSource, asyncio.Event]] = {}

    def replace(self, rules: list[WatchRule]) -> None:
        self._rules = rules
        self._changed.set()

    async def scanned(self) -> None:
        await asyncio.gather(*(source.scanned.wait() for _, source, _ in self.sources.values()))

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                self._reconcile(tg)
                await first_of(stopping, self._changed)
                self._changed.clear()
                if stopping.is_set():
                    for _, _, stop in self.sources.values():
                        stop.set()
                    return

    def _reconcile(self, tg: asyncio.TaskGroup) -> None:
        wanted = {rule.model_dump_json(): rule for rule in self._rules}
        for key in list(self.sources):
            if key not in wanted:
                rule, _, stop = self.sources.pop(key)
                stop.set()
                log.info("watch.removed", path=str(rule.path))
        for key, rule in wanted.items():
            if key in self.sources:
                continue
            source = self._make(rule)
            stop = asyncio.Event()
            self.sources[key] = (rule, source, stop)
            tg.create_task(source.run(stop), name=f"source:{source.name}")
            log.info("watch.added", path=str(rule.path), provider=rule.provider, task=str(rule.task))
