"""Who spoke, as stenod shows it outside the journal: the speakers list of a transcript
without voiceprints.

The journal keeps a transcript's voiceprints (so that a voice a person names later can
be remembered); events, the job API and the ``.json`` file never carry them: a
voiceprint is biometric data, and nothing a reader of a transcript needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["public_speakers", "public_transcript"]


def public_speakers(transcript: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Each voice of a transcript (JSON): its label, the name it matched and how closely."""
    return [
        {"label": s["label"], "name": s.get("name"), "similarity": s.get("similarity")}
        for s in (transcript or {}).get("speakers") or ()
    ]


def public_transcript(transcript: Mapping[str, Any]) -> dict[str, Any]:
    """The transcript (JSON) as events, the job API and the ``.json`` file give it."""
    if not transcript.get("speakers"):
        return dict(transcript)
    return {**transcript, "speakers": public_speakers(transcript)}
