"""Voices remembered: the voiceprints of speakers people named, kept in the journal under
their names (so every daemon sharing it knows them), and handed to providers with later
jobs as :class:`~stenod.speakers.KnownSpeaker` voiceprints.

What is stored is an embedding (``Voiceprint``: a model name and a vector), never audio;
``[diarization] remember_voices = false`` stops both the keeping and the recalling, and
``DELETE /v1/speakers/{name}`` forgets a name's voiceprints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from stenod.speakers import Diarization, KnownSpeaker, Voiceprint

__all__ = ["RememberedVoice", "VoiceJournal", "check_name", "with_remembered"]

MAX_NAME_CHARS = 100


@dataclass(frozen=True, slots=True)
class RememberedVoice:
    """A name and what stenod keeps under it: how many voiceprints, of which models."""

    name: str
    voiceprints: int
    models: tuple[str, ...]
    learnt_at: str  # when the latest was kept (UTC, ISO 8601)


class VoiceJournal(Protocol):
    """The journal's part that keeps voiceprints (both backends, ``adapters/sql/voices.py``)."""

    async def remember_voice(self, name: str, voiceprint: Voiceprint, item_id: str) -> None:
        """Keep ``voiceprint`` under ``name`` (learnt from the item's transcript); the same
        voiceprint named again from the same item replaces its earlier name."""
        ...

    async def known_voices(self) -> list[KnownSpeaker]:
        """Every remembered name with its voiceprints, for a job asking who spoke."""
        ...

    async def voices(self) -> list[RememberedVoice]:
        """The remembered names, in alphabetical order."""
        ...

    async def rename_voice(self, name: str, new_name: str, *, merge: bool = False) -> int:
        """Move the voiceprints of ``name`` to ``new_name``; how many moved (0: no such
        name). Raises NameTaken when ``new_name`` has voiceprints and ``merge`` is false."""
        ...

    async def forget_voice(self, name: str) -> int:
        """Delete every voiceprint of ``name``; how many there were."""
        ...


def check_name(name: str) -> str:
    """A speaker's name as given by a person, trimmed; raises ValueError for an unusable one."""
    trimmed = " ".join(name.split())
    if not trimmed or len(trimmed) > MAX_NAME_CHARS:
        raise ValueError(f"a speaker's name is 1 to {MAX_NAME_CHARS} characters")
    return trimmed


def with_remembered(asked: Diarization | None, remembered: Sequence[KnownSpeaker]) -> Diarization | None:
    """The diarization a job asked for, with the remembered voices added to its known
    speakers (joined by name with a known speaker given by reference clips)."""
    if asked is None or not remembered:
        return asked
    by_name = {k.name: k for k in asked.known}
    for voice in remembered:
        given = by_name.get(voice.name)
        by_name[voice.name] = voice if given is None else replace(given, voiceprints=voice.voiceprints)
    return replace(asked, known=tuple(by_name.values()))
