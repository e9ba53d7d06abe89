"""What a provider's ``submit`` gets: the provider job as a :class:`Batch`, and a context
to keep its place in (checkpoints go to the journal, in the transaction that also renews
the lease on the provider job; progress and decoded text to the dispatcher)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, ValidationError

from stenod.errors import PermanentError
from stenod.journal import BatchRow, JobJournal
from stenod.provider import Batch, BatchItem, Json, Provider, Segment, Task

__all__ = ["JournalStepContext", "batch_value"]


def batch_value(name: str, provider: Provider, batch: BatchRow) -> Batch:
    """The provider job as the provider ``name`` sees it; its items share task, languages,
    options and who-spoke request (packing grouped them so), which the provider's option
    model checks."""
    first = batch.items[0]
    options_model: type[BaseModel] = type(provider).Options
    try:
        options = options_model.model_validate(dict(first.options))
    except ValidationError as exc:
        raise PermanentError(f"invalid options for {name}: {exc.errors()[0]['msg']}", code="invalid_options") from exc
    return Batch(
        batch_id=batch.batch_id,
        task=Task(first.task),
        items=tuple(
            BatchItem(
                item_id=i.item_id,
                path=Path(i.path or ""),
                name=i.name,
                size=i.size or 0,
                device=i.device,
                inode=i.inode,
            )
            for i in batch.items
        ),
        language=first.language,
        target_languages=first.target_languages,
        options=options,
        diarization=first.diarization,
    )


class JournalStepContext:
    """The StepContext handed to ``submit``: checkpoints go to the journal."""

    def __init__(
        self,
        journal: JobJournal,
        batch_id: str,
        saved: Mapping[str, Json] | None,
        on_progress: Callable[[float], None],
        on_segment: Callable[[str, Segment], None] | None = None,
    ) -> None:
        self._journal = journal
        self._batch_id = batch_id
        self._saved = saved
        self._on_progress = on_progress
        self._on_segment = on_segment

    @property
    def saved(self) -> Mapping[str, Json] | None:
        return self._saved

    async def checkpoint(self, data: Mapping[str, Json]) -> None:
        await self._journal.save_checkpoint(self._batch_id, data)
        self._saved = dict(data)

    def progress(self, fraction: float) -> None:
        self._on_progress(fraction)

    def segment(self, item_id: str, segment: Segment) -> None:
        if self._on_segment is not None:
            self._on_segment(item_id, segment)
