"""A scriptable third-party provider for tests, installed from its own distribution.

It imports only ``stenod.provider``, like any third-party plugin. Each remote job it
"creates" is appended to ``<ledger_dir>/created.log`` (one line per creation), so tests
in another process can count provider runs across daemon crashes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import httpx
from pydantic import BaseModel, ConfigDict

from stenod.provider import (
    Batch,
    ErrorInfo,
    Handle,
    ItemResult,
    Limits,
    ProviderSettings,
    RemoteState,
    Segment,
    Status,
    StepContext,
    Task,
    Transcript,
    TranslatedDocument,
)


class EchoSettings(ProviderSettings):
    submit_delay_seconds: float = 0.0
    job_seconds: float = 0.0  # how long the remote job "runs" after submit
    max_files: int = 1
    max_file_bytes: int | None = None
    fail_marker: str = "FAIL"  # input names containing this fail with a per-item error
    ledger_dir: str | None = None


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shout: bool = False


class EchoProvider:
    name: ClassVar[str] = "echo"
    Settings: ClassVar[type[ProviderSettings]] = EchoSettings
    Options: ClassVar[type[BaseModel]] = EchoOptions
    limits: Limits = Limits(
        tasks=frozenset({Task.TRANSCRIBE, Task.TRANSLATE}),
        formats=frozenset({"wav", "mp3", "flac", "ogg", "txt", "html"}),
        max_files=1,
        min_poll_seconds=0.0,
    )

    def __init__(self, settings: EchoSettings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self.limits = Limits(
            tasks=self.limits.tasks,
            formats=self.limits.formats,
            max_files=settings.max_files,
            max_file_bytes=settings.max_file_bytes,
            min_poll_seconds=0.0,
        )

    def _ledger(self, line: str) -> None:
        if self._settings.ledger_dir:
            path = Path(self._settings.ledger_dir) / "created.log"
            with path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        saved = ctx.saved
        if saved is None:
            remote_id = f"echo-{batch.batch_id}"
            self._ledger(f"{remote_id} {' '.join(i.name for i in batch.items)}")
            await ctx.checkpoint({"remote_id": remote_id})
        else:
            remote_id = saved["remote_id"]
        if self._settings.submit_delay_seconds:
            for step in range(10):
                ctx.progress(step / 10)
                await asyncio.sleep(self._settings.submit_delay_seconds / 10)
        items = []
        for item in batch.items:
            with item.open() as fh:
                head = fh.read(64)
            items.append(
                {
                    "item_id": item.item_id,
                    "name": item.name,
                    "size": item.size,
                    "text": head.decode("utf-8", "replace") if item.extension in ("txt", "html") else None,
                }
            )
        return {
            "remote_id": remote_id,
            "done_at": time.time() + self._settings.job_seconds,
            "items": items,
            "task": str(batch.task),
            "targets": list(batch.target_languages),
            "shout": bool(getattr(batch.options, "shout", False)),
        }

    async def poll(self, handle: Handle) -> Status:
        remaining = float(handle["done_at"]) - time.time()
        if remaining > 0:
            return Status(RemoteState.RUNNING, progress=0.5, retry_after=remaining)
        return Status(RemoteState.DONE, progress=1.0)

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        results = []
        for item in handle["items"]:
            if self._settings.fail_marker and self._settings.fail_marker in item["name"]:
                results.append(
                    ItemResult(
                        item["item_id"],
                        error=ErrorInfo("provider_rejected", f"echo refused {item['name']}", hint="rename the file"),
                    )
                )
                continue
            if handle["task"] == "translate":
                docs = tuple(
                    TranslatedDocument(lang, f"[{lang}] {item['text'] or ''}".encode(), item["name"].rsplit(".", 1)[-1])
                    for lang in handle["targets"]
                )
                results.append(ItemResult(item["item_id"], documents=docs))
                continue
            text = f"echo {item['name']} {item['size']} bytes"
            if handle["shout"]:
                text = text.upper()
            transcript = Transcript(
                text=text,
                language="en",
                duration=2.0,
                segments=(Segment(0.0, 1.0, text, speaker="0"), Segment(1.0, 2.0, "second & <last>", speaker="1")),
                provider="echo",
                provider_job_id=handle["remote_id"],
            )
            results.append(ItemResult(item["item_id"], transcript=transcript))
        return results

    async def cancel(self, handle: Handle) -> None:
        return None
