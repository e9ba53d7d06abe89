"""What becomes of an item once its provider job is over: its result written (the files, and
what the journal records), or its failure (an error file saying what to do). Writes run in
worker threads; every folder is synced before the journal records the files in it.

An outcome is reported (``item.succeeded``/``item.failed``, the metrics) by
:meth:`Outcomes.recorded` once the journal has committed it: a write the journal then
refuses (the lease was lost) must not be told as done."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from stenod.errors import ErrorInfo, RetryableError
from stenod.jobs import ItemState
from stenod.journal import Held, ItemOutcome, NewItem, OpenItem, OutputFile, Unsettled
from stenod.output_spec import DEFAULT_TRANSLATE_PROVIDER
from stenod.provider import ItemResult, Task, Transcript
from stenod.who_spoke.diarization import with_speakers_listed

__all__ = ["DISK_FULL", "DispatchMetrics", "Outcomes", "OutputSink", "result_from_json"]

log = structlog.get_logger("stenod.dispatcher")

DISK_FULL = "disk_full"
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class OutputSink(Protocol):
    """Writes an item's outputs (or its error file). Called in a worker thread. ``check``
    is called before each change to a folder; what it raises stops the writes there."""

    def planned(self, item: OpenItem, result: ItemResult | None) -> list[str]:
        """The keys of the files that writing ``result`` (None: an error) may write."""
        ...

    def write_result(
        self, item: OpenItem, result: ItemResult, *, sync_folder: bool = True, check: Callable[[], None] = ...
    ) -> list[OutputFile]:
        """With ``sync_folder=False`` the caller calls ``sync_folders`` before relying on the files."""
        ...

    def write_error(self, item: OpenItem, error: ErrorInfo, *, check: Callable[[], None] = ...) -> list[OutputFile]: ...

    def remove_unsettled(
        self, unsettled: Sequence[Unsettled], written: Sequence[OutputFile], *, check: Callable[[], None] = ...
    ) -> list[str]:
        """Remove the files an earlier, unrecorded attempt wrote that ``written`` does not replace."""
        ...

    def sync_folders(self, folders: Iterable[Path]) -> None: ...


class DispatchMetrics(Protocol):
    def provider_call(self, provider: str, operation: str) -> Any: ...
    def provider_error(self, provider: str, code: str) -> None: ...
    def retry(self, provider: str) -> None: ...
    def item_finished(
        self, provider: str, state: str, audio_seconds: float | None, cost: Mapping[str, Any] | None
    ) -> None: ...


class Outcomes:
    """Writes items' results and failures through the sink, and counts them."""

    def __init__(self, sink: OutputSink, metrics: DispatchMetrics | None = None) -> None:
        self._sink = sink
        self._metrics = metrics

    def planned(self, pairs: Sequence[tuple[OpenItem, ItemResult | None]]) -> dict[str, list[str]]:
        """The files writing these results (None: failures) may write, by item id, for the
        journal to record before they are written. Runs in a worker thread."""
        return {item.item_id: self._sink.planned(item, result) for item, result in pairs}

    async def write(self, item: OpenItem, result: ItemResult, *, unsettled: Sequence[Unsettled] = ()) -> ItemOutcome:
        return await asyncio.to_thread(self.write_now, item, result, unsettled=unsettled)

    def write_now(
        self,
        item: OpenItem,
        result: ItemResult,
        *,
        sync_folder: bool = True,
        held: Held | None = None,
        unsettled: Sequence[Unsettled] = (),
    ) -> ItemOutcome:
        """Write one item's outputs (or error file) and say what happened. Runs in a worker
        thread. With ``held``, nothing goes into place once that lease may have run out
        (LeaseExpired). Then the files an earlier attempt wrote and never recorded
        (``unsettled``, or the ones ``held`` names) go, unless this write replaced them."""
        check = held.check if held is not None else _unchecked
        outcome = self._write_now(item, result, sync_folder=sync_folder, check=check)
        left = held.unsettled.get(item.item_id, ()) if held is not None else unsettled
        if left:
            self._sink.remove_unsettled(left, outcome.outputs, check=check)
        return outcome

    def _write_now(
        self, item: OpenItem, result: ItemResult, *, sync_folder: bool, check: Callable[[], None]
    ) -> ItemOutcome:
        if result.transcript is not None:
            result = replace(result, transcript=with_speakers_listed(result.transcript))
        if result.error is not None and result.documents:
            # Some target languages arrived, others failed: keep what arrived, report the rest.
            written = self._sink.write_result(item, replace(result, error=None), sync_folder=sync_folder, check=check)
            failure = self._write_failure(item, result.error, check)
            return replace(failure, outputs=[*written, *failure.outputs])
        if result.error is not None:
            return self._write_failure(item, result.error, check)
        try:
            outputs = self._sink.write_result(item, result, sync_folder=sync_folder, check=check)
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
            return self._write_failure(
                item,
                ErrorInfo(
                    "output_failed",
                    f"could not write outputs for {item.name}: {exc.strerror or exc}",
                    hint="Check that the output folder exists and is writable.",
                ),
                check,
            )
        payload: dict[str, Any] = {}
        if result.transcript is not None:
            payload["transcript"] = result.transcript.to_json()
        if result.documents:
            payload["documents"] = [d.language for d in result.documents]
        cost = {"amount": result.cost.amount, "currency": result.cost.currency} if result.cost else None
        return ItemOutcome(
            item.item_id,
            ItemState.SUCCEEDED,
            outputs=outputs,
            result=payload,
            cost=cost,
            follow_up=self._chained(item, outputs) if result.transcript is not None else None,
        )

    def write_batch(self, pairs: Sequence[tuple[OpenItem, ItemResult]], held: Held) -> list[ItemOutcome]:
        """All items of one provider job in one worker-thread call, each folder synced once;
        nothing goes into place once ``held`` may have run out (LeaseExpired)."""
        outcomes = []
        for item, result in pairs:
            with structlog.contextvars.bound_contextvars(job_id=item.job_id):
                outcomes.append(self.write_now(item, result, sync_folder=False, held=held))
        # Before the journal records them: the renames must be durable first.
        self._sink.sync_folders({Path(o.path).parent for outcome in outcomes for o in outcome.outputs})
        return outcomes

    def recorded(self, items: Iterable[OpenItem], outcomes: Iterable[ItemOutcome]) -> None:
        """Report outcomes the journal has committed (log lines and metrics), in the order
        of ``outcomes``; ``items`` are the open items they are about."""
        by_id = {item.item_id: item for item in items}
        for outcome in outcomes:
            item = by_id.get(outcome.item_id)
            if item is None:
                continue
            with structlog.contextvars.bound_contextvars(job_id=item.job_id):
                self._report(item, outcome)

    def _report(self, item: OpenItem, outcome: ItemOutcome) -> None:
        if outcome.state == ItemState.SUCCEEDED:
            transcript = (outcome.result or {}).get("transcript") or {}
            if self._metrics is not None:
                self._metrics.item_finished(item.provider, "succeeded", transcript.get("duration"), outcome.cost)
            log.info("item.succeeded", input=item.input, outputs=len(outcome.outputs))
        elif outcome.state == ItemState.FAILED and outcome.error is not None:
            if self._metrics is not None:
                self._metrics.item_finished(item.provider, "failed", None, None)
            log.warning("item.failed", input=item.input, code=outcome.error.code, message=outcome.error.message)

    @staticmethod
    def _chained(item: OpenItem, outputs: Sequence[OutputFile]) -> NewItem | None:
        """Transcribe-then-translate: the transcript becomes a translate item of the same job."""
        languages = item.output.then_translate_to
        text = next((o.path for o in outputs if o.path.endswith(".txt")), None)
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
            provider=item.output.translate_provider or DEFAULT_TRANSLATE_PROVIDER,
            target_languages=languages,
            options={},
        )

    async def write_failure(
        self, item: OpenItem, error: ErrorInfo, *, unsettled: Sequence[Unsettled] = ()
    ) -> ItemOutcome:
        return await asyncio.to_thread(self.write_now, item, ItemResult(item.item_id, error=error), unsettled=unsettled)

    def _write_failure(self, item: OpenItem, error: ErrorInfo, check: Callable[[], None]) -> ItemOutcome:
        try:
            outputs = self._sink.write_error(item, error, check=check)
        except OSError as exc:
            log.error("item.error_file_failed", input=item.input, error=str(exc))
            outputs = []
        return ItemOutcome(item.item_id, ItemState.FAILED, outputs=outputs, error=error)


def _unchecked() -> None:
    """Writes that no lease governs (an item finished without a provider job)."""


def result_from_json(item_id: str, data: Mapping[str, Any]) -> ItemResult:
    """An earlier identical input's stored result, as an item result of this one."""
    transcript = data.get("transcript")
    return ItemResult(item_id, transcript=Transcript.from_json(transcript) if transcript else None)
