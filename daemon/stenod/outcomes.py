"""What becomes of an item once its provider job is over: its result written (the files, and
what the journal records), or its failure (an error file saying what to do). Writes run in
worker threads; every folder is synced before the journal records the files in it."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from stenod.errors import ErrorInfo, RetryableError
from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, NewItem, OpenItem
from stenod.provider import ItemResult, Task, Transcript

__all__ = ["DISK_FULL", "Metrics", "Outcomes", "OutputSink", "result_from_json"]

log = structlog.get_logger("stenod.dispatcher")

DISK_FULL = "disk_full"
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class OutputSink(Protocol):
    """Writes an item's outputs (or its error file). Called in a worker thread."""

    def write_result(self, item: OpenItem, result: ItemResult, *, sync_folder: bool = True) -> list[str]:
        """With ``sync_folder=False`` the caller calls ``sync_folders`` before relying on the files."""
        ...

    def write_error(self, item: OpenItem, error: ErrorInfo) -> list[str]: ...

    def sync_folders(self, folders: Iterable[Path]) -> None: ...


class Metrics(Protocol):
    def provider_call(self, provider: str, operation: str) -> Any: ...
    def provider_error(self, provider: str, code: str) -> None: ...
    def retry(self, provider: str) -> None: ...
    def item_finished(
        self, provider: str, state: str, audio_seconds: float | None, cost: Mapping[str, Any] | None
    ) -> None: ...


class Outcomes:
    """Writes items' results and failures through the sink, and counts them."""

    def __init__(self, sink: OutputSink, metrics: Metrics | None = None) -> None:
        self._sink = sink
        self._metrics = metrics

    async def write(self, item: OpenItem, result: ItemResult) -> ItemOutcome:
        return await asyncio.to_thread(self.write_now, item, result)

    def write_now(self, item: OpenItem, result: ItemResult, *, sync_folder: bool = True) -> ItemOutcome:
        """Write one item's outputs (or error file) and say what happened. Runs in a worker thread."""
        if result.error is not None and result.documents:
            # Some target languages arrived, others failed: keep what arrived, report the rest.
            written = self._sink.write_result(item, replace(result, error=None), sync_folder=sync_folder)
            failure = self.write_failure_now(item, result.error)
            return replace(failure, outputs=[*written, *failure.outputs])
        if result.error is not None:
            return self.write_failure_now(item, result.error)
        try:
            outputs = self._sink.write_result(item, result, sync_folder=sync_folder)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                # Nothing is wrong with the item: it waits (retried, attempts not counted)
                # until there is room, and no other item of its provider job is recorded.
                raise RetryableError(
                    f"no space left to write the outputs of {item.name} ({exc.filename or 'its output folder'}); "
                    "they are written once there is room",
                    code=DISK_FULL,
                    hint="Free space on that filesystem; stenod retries by itself.",
                ) from exc
            return self.write_failure_now(
                item,
                ErrorInfo(
                    "output_failed",
                    f"could not write outputs for {item.name}: {exc.strerror or exc}",
                    hint="Check that the output folder exists and is writable.",
                ),
            )
        payload: dict[str, Any] = {}
        if result.transcript is not None:
            payload["transcript"] = result.transcript.to_json()
        if result.documents:
            payload["documents"] = [d.language for d in result.documents]
        cost = {"amount": result.cost.amount, "currency": result.cost.currency} if result.cost else None
        if self._metrics is not None:
            self._metrics.item_finished(
                item.provider, "succeeded", result.transcript.duration if result.transcript else None, cost
            )
        log.info("item.succeeded", input=item.input, outputs=len(outputs))
        return ItemOutcome(
            item.item_id,
            ItemState.SUCCEEDED,
            outputs=outputs,
            result=payload,
            cost=cost,
            follow_up=self._chained(item, outputs) if result.transcript is not None else None,
        )

    def write_batch(self, pairs: Sequence[tuple[OpenItem, ItemResult]]) -> list[ItemOutcome]:
        """All items of one provider job in one worker-thread call, each folder synced once."""
        outcomes = []
        for item, result in pairs:
            with structlog.contextvars.bound_contextvars(job_id=item.job_id):
                outcomes.append(self.write_now(item, result, sync_folder=False))
        # Before the journal records them: the renames must be durable first.
        self._sink.sync_folders({Path(o).parent for outcome in outcomes for o in outcome.outputs})
        return outcomes

    @staticmethod
    def _chained(item: OpenItem, outputs: Sequence[str]) -> NewItem | None:
        """Transcribe-then-translate: the transcript becomes a translate item of the same job."""
        languages = item.output.get("then_translate_to")
        text = next((o for o in outputs if o.endswith(".txt")), None)
        if not languages or text is None or item.task != Task.TRANSCRIBE:
            return None
        st = Path(text).stat()
        return NewItem(
            input=text,
            name=Path(text).name,
            path=text,
            size=st.st_size,
            device=st.st_dev,
            inode=st.st_ino,
            task=str(Task.TRANSLATE),
            provider=item.output.get("translate_provider") or "azure",
            target_languages=tuple(languages),
            options={},
        )

    async def write_failure(self, item: OpenItem, error: ErrorInfo) -> ItemOutcome:
        return await asyncio.to_thread(self.write_failure_now, item, error)

    def write_failure_now(self, item: OpenItem, error: ErrorInfo) -> ItemOutcome:
        try:
            outputs = self._sink.write_error(item, error)
        except OSError as exc:
            log.error("item.error_file_failed", input=item.input, error=str(exc))
            outputs = []
        if self._metrics is not None:
            self._metrics.item_finished(item.provider, "failed", None, None)
        log.warning("item.failed", input=item.input, code=error.code, message=error.message)
        return ItemOutcome(item.item_id, ItemState.FAILED, outputs=outputs, error=error)


def result_from_json(item_id: str, data: Mapping[str, Any]) -> ItemResult:
    """An earlier identical input's stored result, as an item result of this one."""
    transcript = data.get("transcript")
    return ItemResult(item_id, transcript=Transcript.from_json(transcript) if transcript else None)
