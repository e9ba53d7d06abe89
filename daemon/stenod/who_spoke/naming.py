"""Naming a speaker: for this recording only (a correction of its transcript and files),
or for good (also the voice's voiceprint kept under the name, so that later recordings
say the name by themselves). Used by the job API and the page alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from stenod.corrections import Corrections, EditableItem
from stenod.errors import CorrectionError
from stenod.who_spoke.voices import VoiceJournal, check_name

__all__ = ["Named", "SpeakerNaming"]


class NamingJournal(VoiceJournal, Protocol):
    async def editable_item(self, job_id: str, index: int) -> EditableItem | None: ...


@dataclass(frozen=True, slots=True)
class Named:
    """What naming did: the label the voice had, its name now, and whether its voiceprint
    was kept (``why_not`` says why not, when it was asked for)."""

    label: str
    name: str
    remembered: bool
    why_not: str | None = None


class SpeakerNaming:
    """Names speakers of finished items. ``remember_voices``: ``[diarization] remember_voices``."""

    def __init__(self, corrections: Corrections, journal: NamingJournal, *, remember_voices: bool) -> None:
        self._corrections = corrections
        self._journal = journal
        self.remember_voices = remember_voices

    async def name(self, job_id: str, index: int, label: str, name: str, *, for_good: bool = True) -> Named:
        """Rename ``label`` to ``name`` in the item's transcript and files; with ``for_good``
        keep its voiceprint under ``name``. Raises CorrectionError (no such item or label,
        a bad name)."""
        try:
            name = check_name(name)
        except ValueError as exc:
            raise CorrectionError(str(exc)) from None
        item = await self._journal.editable_item(job_id, index)
        transcript = await self._corrections.rename_speaker(job_id, index, label, name)
        if not for_good:
            return Named(label, name, remembered=False)
        if not self.remember_voices:
            return Named(label, name, remembered=False, why_not="[diarization] remember_voices is off")
        voice = next((s for s in transcript.speakers if s.label == name and s.voiceprint is not None), None)
        if voice is None or voice.voiceprint is None or item is None:
            why = f"the provider gave no voiceprint for {label!r}, so the voice cannot be recognised later"
            return Named(label, name, remembered=False, why_not=why)
        await self._journal.remember_voice(name, voice.voiceprint, item.item_id)
        return Named(label, name, remembered=True)
