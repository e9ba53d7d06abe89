"""Corrections by hand: a segment's text fixed, a speaker named, and back to the engine's.

The engine's transcript stays in the journal as it came; a correction is stored beside it
and becomes the item's transcript everywhere (the job API, events of later changes, the
page). Every change rewrites the item's output files (txt, json, srt, vtt, wherever they
were written) atomically, so the folder and the journal say the same. Revert drops the
correction and rewrites the files from the engine's transcript.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from stenod.errors import CorrectionError
from stenod.provider import Transcript

if TYPE_CHECKING:  # stenod.journal imports this module
    from stenod.journal import OutputFile, Unsettled

__all__ = ["Corrections", "EditableItem"]

MAX_TEXT = 10_000
MAX_SPEAKER = 100


@dataclass(frozen=True, slots=True)
class EditableItem:
    item_id: str
    input: str
    name: str
    path: str | None
    outputs: tuple[str, ...]
    original: Mapping[str, Any] | None  # the engine's transcript
    edited: Mapping[str, Any] | None  # the correction, if any

    @property
    def current(self) -> Mapping[str, Any] | None:
        return self.edited if self.edited is not None else self.original


class EditJournal(Protocol):
    async def editable_item(self, job_id: str, index: int) -> EditableItem | None: ...
    async def save_edit(self, item_id: str, transcript: Mapping[str, Any] | None) -> None: ...
    async def expect_outputs(self, outputs: Mapping[str, Sequence[str]]) -> Mapping[str, Sequence[Unsettled]]: ...
    async def record_outputs(self, item_id: str, files: Sequence[OutputFile]) -> None: ...


class OutputRewriter(Protocol):
    def planned_rewrite(self, outputs: Sequence[str], *, name: str) -> list[str]:
        """The keys of the files ``rewrite`` would write (called in a worker thread)."""
        ...

    def rewrite(self, outputs: Sequence[str], transcript: Transcript, *, name: str, source: str) -> list[OutputFile]:
        """Write ``transcript`` over the transcript files of input ``name`` among ``outputs``
        (called in a worker thread)."""
        ...


class Corrections:
    """The page's corrections, one item at a time."""

    def __init__(self, journal: EditJournal, rewriter: OutputRewriter) -> None:
        self._journal = journal
        self._rewriter = rewriter
        self._lock = asyncio.Lock()  # two saves of one item must not interleave their file writes

    async def _item(self, job_id: str, index: int) -> EditableItem:
        item = await self._journal.editable_item(job_id, index)
        if item is None:
            raise CorrectionError(f"job {job_id} has no item {index}")
        if item.current is None:
            raise CorrectionError(f"item {index} of job {job_id} has no transcript yet")
        return item

    async def _save(self, item: EditableItem, transcript: Transcript | None) -> Transcript:
        await self._journal.save_edit(item.item_id, transcript.to_json() if transcript is not None else None)
        final = transcript if transcript is not None else Transcript.from_json(item.original or {"text": ""})
        # The files get a new size and mtime: recorded before and after, as any output, so a
        # watched folder does not take them for a user's.
        keys = await asyncio.to_thread(self._rewriter.planned_rewrite, item.outputs, name=item.name)
        await self._journal.expect_outputs({item.item_id: keys})
        written = await asyncio.to_thread(
            self._rewriter.rewrite, item.outputs, final, name=item.name, source=item.input
        )
        await self._journal.record_outputs(item.item_id, written)
        return final

    async def edit_segment(self, job_id: str, index: int, segment: int, text: str) -> Transcript:
        text = " ".join(text.split())
        if not text or len(text) > MAX_TEXT:
            raise CorrectionError(f"a segment's text must be 1 to {MAX_TEXT} characters")
        async with self._lock:
            item = await self._item(job_id, index)
            assert item.current is not None
            current = Transcript.from_json(item.current)
            if not 0 <= segment < len(current.segments):
                raise CorrectionError(f"the transcript has no segment {segment}")
            segments = list(current.segments)
            segments[segment] = replace(segments[segment], text=text)
            return await self._save(item, _with_segments(current, segments))

    async def rename_speaker(self, job_id: str, index: int, old: str, new: str) -> Transcript:
        new = " ".join(new.split())
        if not new or len(new) > MAX_SPEAKER:
            raise CorrectionError(f"a speaker's name must be 1 to {MAX_SPEAKER} characters")
        async with self._lock:
            item = await self._item(job_id, index)
            assert item.current is not None
            current = Transcript.from_json(item.current)
            if not any(s.speaker == old for s in current.segments):
                raise CorrectionError(f"no segment is spoken by {old!r}")
            segments = [replace(s, speaker=new) if s.speaker == old else s for s in current.segments]
            words = (
                tuple(replace(w, speaker=new) if w.speaker == old else w for w in current.words)
                if current.words is not None
                else None
            )
            # The voice keeps its voiceprint under the new label: it can still be remembered.
            speakers = tuple(
                replace(s, label=new, name=new, similarity=None) if s.label == old else s for s in current.speakers
            )
            renamed = replace(_with_segments(current, segments), words=words, speakers=speakers)
            return await self._save(item, renamed)

    async def revert(self, job_id: str, index: int) -> Transcript:
        async with self._lock:
            item = await self._item(job_id, index)
            return await self._save(item, None)


def _with_segments(transcript: Transcript, segments: Sequence[Any]) -> Transcript:
    # The text follows the segments, as the engines write it: one line of text per segment.
    text = " ".join(s.text.strip() for s in segments if s.text.strip())
    return replace(transcript, segments=tuple(segments), text=text)
