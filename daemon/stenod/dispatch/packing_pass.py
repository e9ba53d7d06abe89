"""The packing pass: items waiting in the journal become provider jobs.

Each pass sorts the open items (cancelled, answered by an earlier identical input, not
runnable, or to run), checks the files of new ones before any upload (one worker-thread
call for all of them), and packs the runnable into as few provider jobs as each provider's
limits allow, within its capacity. Items that arrived within the pack window wait a moment
for company, unless their provider job is already full.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stenod.dispatch.packing import Preflight, created_at, freeze, pack, preflight, start_order
from stenod.dispatch.stepper import ProviderRuntime
from stenod.errors import ErrorInfo
from stenod.jobs import ItemState
from stenod.journal import BatchRow, JobJournal, OpenItem, accepted_elsewhere

__all__ = ["PackingPass", "Sorted", "is_url"]

_UNKNOWN = "Check `stenod providers` and the provider's configuration."
# A file another instance accepted but this one cannot see (a folder only that machine
# mounts): the job waits for an instance that can, it does not fail here.
_NOT_HERE = frozenset({"input_missing", "input_unreadable", "input_changed"})


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


@dataclass(slots=True)
class Sorted:
    """One pass's open items, by what happens to them next."""

    cancelled: list[OpenItem] = field(default_factory=list)
    reused: list[OpenItem] = field(default_factory=list)
    failed: list[tuple[OpenItem, ErrorInfo]] = field(default_factory=list)
    groups: dict[tuple[Any, ...], list[OpenItem]] = field(default_factory=dict)


class PackingPass:
    def __init__(self, journal: JobJournal, *, probe: Callable[[Path], float | None], pack_window_seconds: float):
        self._journal = journal
        self._probe = probe
        self._window = pack_window_seconds
        self._checked: dict[str, Preflight] = {}
        self.wakeup: float | None = None  # when items waiting for company must be packed anyway

    def forget(self, item_id: str) -> None:
        """The item finished outside a provider job: its file check is no longer needed."""
        self._checked.pop(item_id, None)

    async def sort(
        self, items: Sequence[OpenItem], runtimes: Mapping[str, ProviderRuntime], finishing: set[str]
    ) -> Sorted:
        found = Sorted()
        runnable: list[tuple[OpenItem, ProviderRuntime]] = []
        for item in items:
            if item.item_id in finishing:
                continue
            if item.cancel_requested:
                found.cancelled.append(item)
            elif item.state == ItemState.FETCHED:
                found.reused.append(item)
            elif item.path is None and is_url(item.input):
                continue  # the URL fetcher attaches the file first
            elif (runtime := runtimes.get(item.provider)) is None:
                if accepted_elsewhere(self._journal, item):
                    continue  # the instance that accepted it has the provider: it waits for one that does
                error = ErrorInfo("unknown_provider", f"provider {item.provider!r} is not available", hint=_UNKNOWN)
                found.failed.append((item, error))
            else:
                runnable.append((item, runtime))
        await self._check_new(runnable)
        groups: dict[tuple[Any, ...], list[OpenItem]] = defaultdict(list)
        for item, _ in runnable:
            check = self._checked.get(item.item_id)
            if check is None:
                continue  # it finished while the files were checked: this snapshot of it is stale
            if check.error is not None:
                if check.error.code in _NOT_HERE and accepted_elsewhere(self._journal, item):
                    self._checked.pop(item.item_id, None)  # looked at again later: a mount may come back
                    continue
                found.failed.append((item, check.error))
                continue
            asked = (item.language, item.target_languages, freeze(item.options), item.diarization)
            groups[(item.provider, item.task, *asked)].append(item)
        found.groups = dict(groups)
        return found

    async def _check_new(self, items: Sequence[tuple[OpenItem, ProviderRuntime]]) -> None:
        """Check the files of items seen for the first time, all in one worker-thread call."""
        todo = [(item, runtime) for item, runtime in items if item.item_id not in self._checked]
        if not todo:
            return

        def check_all() -> list[Preflight]:
            return [
                preflight(
                    runtime.name, runtime.limits, item, self._probe, elsewhere=accepted_elsewhere(self._journal, item)
                )
                for item, runtime in todo
            ]

        for (item, _), check in zip(todo, await asyncio.to_thread(check_all), strict=True):
            self._checked[item.item_id] = check

    async def pack(
        self,
        groups: Mapping[tuple[Any, ...], list[OpenItem]],
        runtimes: Mapping[str, ProviderRuntime],
        adopt: Callable[[BatchRow], None],
    ) -> None:
        """Create provider jobs in the journal and hand each to ``adopt`` (which counts it
        against its provider's capacity)."""
        self.wakeup = None
        now = time.time()
        for key, members in groups.items():
            runtime = runtimes[key[0]]
            if runtime.limits.max_files == 1:
                members = start_order(members)
            batches = pack(runtime.limits, members)
            oldest = min(created_at(m) for m in members)
            filled = len(batches) > 1 or (
                runtime.limits.max_files is not None and len(batches[0]) >= runtime.limits.max_files
            )
            if not filled and now - oldest < self._window:
                wake = oldest + self._window
                self.wakeup = wake if self.wakeup is None else min(self.wakeup, wake)
                continue
            for chunk in batches:
                if runtime.in_flight >= runtime.max_concurrent_jobs:
                    break
                batch = await self._journal.create_batch(
                    runtime.name,
                    [i.item_id for i in chunk],
                    next_at=time.time(),
                    max_jobs=runtime.max_concurrent_jobs,
                )
                if batch is None:  # other instances packed these items, or hold every slot of the provider
                    continue
                for i in chunk:
                    self._checked.pop(i.item_id, None)
                adopt(batch)
