"""The service that fetches URL inputs: pending URL items found in the journal, downloaded
a few at a time by the :class:`UrlDownloader`, attached to their items (or failed with an
error a person can act on), and the dispatcher woken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from stenod.adapters.downloads.url_downloader import UrlDownloader
from stenod.adapters.downloads.url_policy import DownloadFailed, UrlRefused
from stenod.errors import ErrorInfo
from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, Journal, OpenItem, accepted_elsewhere

log = structlog.get_logger("stenod.url_fetch")


def _extension(item: OpenItem) -> str:
    ext = item.name.rsplit(".", 1)[-1].lower() if "." in item.name else ""
    return ext if ext.isalnum() and len(ext) <= 8 else "bin"


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    not_before: float = 0.0


@dataclass(slots=True)
class UrlFetchService:
    """Finds pending URL items in the journal and downloads them, a few at a time.

    A downloaded item gets its local file (``attach_download``) and the dispatcher is
    notified; a refused or failed download fails the item with an error a person can
    act on. Interrupted downloads restart from scratch on the next run.
    """

    journal: Journal
    downloader: UrlDownloader
    notify: Callable[[], None]
    root: Path
    concurrency: int = 4
    max_attempts: int = 3
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _active: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _attempts: dict[str, _Attempts] = field(default_factory=dict)

    def wake(self) -> None:
        """New URL items were committed."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Download until ``stopping``; in-flight downloads are then abandoned (they restart later)."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._relay_stop(stopping), name="url-fetch:stop")
                while not stopping.is_set():
                    self._wake.clear()
                    delay = await self._launch(tg)
                    try:
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                for task in self._active.values():
                    task.cancel()
        finally:
            await self.downloader.aclose()

    async def _relay_stop(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._wake.set()

    async def _launch(self, tg: asyncio.TaskGroup) -> float:
        """Start due downloads; returns seconds until the next retry is due (or a rescan)."""
        now = time.monotonic()
        wait = 60.0
        for item in await self.journal.open_items():
            if item.path is not None or not item.input.startswith(("http://", "https://")) or item.cancel_requested:
                continue
            if accepted_elsewhere(self.journal, item):
                continue  # the instance that accepted the job downloads it: the file lands where it is packed
            if item.item_id in self._active:
                continue
            due = self._attempts.get(item.item_id, _Attempts()).not_before
            if due > now:
                wait = min(wait, due - now)
                continue
            if len(self._active) >= self.concurrency:
                break
            self._active[item.item_id] = tg.create_task(self._download(item), name=f"url-fetch:{item.item_id}")
        return wait

    async def _download(self, item: OpenItem) -> None:
        target = self.root / item.job_id / f"{item.item_id}.{_extension(item)}"
        try:
            with structlog.contextvars.bound_contextvars(job_id=item.job_id, item_id=item.item_id):
                try:
                    got = await self.downloader.fetch(item.input, target)
                except UrlRefused as exc:
                    await self._fail(
                        item,
                        ErrorInfo(
                            "url_not_allowed",
                            exc.reason,
                            hint="Use a public https URL, or change amqp.allow_* settings.",
                        ),
                    )
                    return
                except DownloadFailed as exc:
                    await self._failed_attempt(item, exc)
                    return
                except OSError as exc:
                    await self._failed_attempt(
                        item, DownloadFailed("download_io", f"cannot write {target}: {exc}", retryable=True)
                    )
                    return
                await self.journal.attach_download(item.item_id, str(got.path), got.size, got.device, got.inode)
                self._attempts.pop(item.item_id, None)
                log.info("url.downloaded", bytes=got.size)
                self.notify()
        finally:
            self._active.pop(item.item_id, None)
            self._wake.set()

    async def _failed_attempt(self, item: OpenItem, exc: DownloadFailed) -> None:
        attempts = self._attempts.setdefault(item.item_id, _Attempts())
        attempts.count += 1
        if exc.retryable and attempts.count < self.max_attempts:
            delay = 2.0 * 2 ** (attempts.count - 1)
            attempts.not_before = time.monotonic() + delay
            log.warning(
                "url.retry_scheduled", code=exc.code, error=exc.message, attempt=attempts.count, delay_seconds=delay
            )
            return
        self._attempts.pop(item.item_id, None)
        message = exc.message if not exc.retryable else f"gave up after {attempts.count} attempts: {exc.message}"
        await self._fail(
            item,
            ErrorInfo(
                exc.code, message, retryable=exc.retryable, hint="Check that the URL is reachable from the stenod host."
            ),
        )

    async def _fail(self, item: OpenItem, error: ErrorInfo) -> None:
        log.warning("url.failed", code=error.code, error=error.message)
        await self.journal.finish_items([ItemOutcome(item.item_id, ItemState.FAILED, error=error)])
