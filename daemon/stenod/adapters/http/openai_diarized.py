"""OpenAI's diarization contract, as ``gpt-4o-transcribe-diarize`` answers it: the form's
``known_speaker_names[]`` / ``known_speaker_references[]`` (data URLs of 2–10 s clips, up
to 4) and ``chunking_strategy``, the ``diarized_json`` answer, and the
``transcript.text.segment`` events of a stream.

A reference clip is decoded into the upload's spool folder (``known/``) and handed to the
provider as a :class:`~stenod.speakers.KnownSpeaker`'s ``references``; it goes with the
upload when the job ends. Speakers that matched no known name are lettered ``A``, ``B``, …
in order of first appearance, as OpenAI labels them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
from pathlib import Path
from typing import Any

from stenod.adapters.folders.media_probe import probe_duration
from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.spool import SpooledForm
from stenod.provider import Segment, Transcript
from stenod.speakers import KnownSpeaker
from stenod.who_spoke.diarization import MAX_KNOWN_SPEAKERS

__all__ = ["DIARIZED", "check_chunking", "diarized_body", "known_speakers", "segment_events"]

DIARIZED = "diarized_json"
CLIP_SECONDS = (2.0, 10.0)  # OpenAI's bounds on a known speaker's reference
_DATA_URL = re.compile(r"^data:(audio/[A-Za-z0-9.+-]+)?(;[^,]*)?;base64,", re.ASCII)
_EXTENSION = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mpeg": "mp3", "audio/mp3": "mp3"}


def _listed(form: SpooledForm, name: str) -> list[str]:
    return form.fields.get(f"{name}[]", []) + form.fields.get(name, [])


def check_chunking(form: SpooledForm) -> None:
    """``chunking_strategy``: ``auto`` or a ``server_vad`` object. Accepted and not needed:
    stenod's engines find their own boundaries."""
    raw = form.value("chunking_strategy")
    if raw in (None, "", "auto"):
        return
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise ApiError(400, "chunking_strategy must be 'auto' or a server_vad object", param="chunking_strategy")


async def known_speakers(form: SpooledForm) -> tuple[KnownSpeaker, ...]:
    """The known speakers of the form, each clip decoded into the spool folder and checked
    (audio, 2–10 s). Raises ApiError 400 naming the field at fault."""
    names, clips = _listed(form, "known_speaker_names"), _listed(form, "known_speaker_references")
    if len(names) != len(clips):
        raise ApiError(
            400,
            f"known_speaker_names[] has {len(names)} names and known_speaker_references[] {len(clips)} clips; "
            "give one clip for each name",
            param="known_speaker_references",
        )
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise ApiError(400, f"at most {MAX_KNOWN_SPEAKERS} known speakers", param="known_speaker_names")
    known = []
    for index, (name, clip) in enumerate(zip(names, clips, strict=True)):
        if not name.strip() or len(name) > 100:
            raise ApiError(
                400, f"known_speaker_names[{index}] must be 1 to 100 characters", param="known_speaker_names"
            )
        path = await _clip_file(form.folder / "known", index, clip)
        known.append(KnownSpeaker(name.strip(), references=(str(path),)))
    return tuple(known)


async def _clip_file(folder: Path, index: int, clip: str) -> Path:
    where = f"known_speaker_references[{index}]"
    found = _DATA_URL.match(clip)
    if found is None:
        raise ApiError(400, f"{where} must be a data URL of audio (data:audio/wav;base64,…)", param=where)
    try:
        audio = base64.b64decode(clip[found.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where} is not valid base64", param=where) from None
    path = folder / f"{index}.{_EXTENSION.get(found.group(1) or '', 'audio')}"

    def write() -> float | None:
        folder.mkdir(exist_ok=True)
        path.write_bytes(audio)
        return probe_duration(path)

    seconds = await asyncio.to_thread(write)
    if seconds is None:
        raise ApiError(400, f"{where} is not audio stenod can read", param=where, code="not_audio")
    low, high = CLIP_SECONDS
    if not low <= seconds <= high:
        raise ApiError(400, f"{where} lasts {seconds:.1f} s; a reference lasts {low:.0f} to {high:.0f} s", param=where)
    return path


def _letters(t: Transcript) -> dict[str, str]:
    """Each speaker label as OpenAI shows it: a known name as it is, others A, B, …"""
    named = {s.label for s in t.speakers if s.name}
    out: dict[str, str] = {}
    for segment in t.segments:
        label = segment.speaker or ""
        if label not in out:
            out[label] = label if label in named else _letter(sum(1 for v in out if v not in named))
    return out


def _letter(n: int) -> str:
    text = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        text = chr(65 + rest) + text
    return text


def _segment(index: int, s: Segment, letters: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"seg_{index}",
        "type": "transcript.text.segment",
        "start": s.start,
        "end": s.end,
        "speaker": letters.get(s.speaker or "", "A"),
        "text": s.text.strip(),
    }


def segment_events(t: Transcript) -> list[dict[str, Any]]:
    """The ``transcript.text.segment`` events of a finished transcript."""
    letters = _letters(t)
    return [_segment(i, s, letters) for i, s in enumerate(t.segments) if s.text.strip()]


def diarized_body(t: Transcript) -> dict[str, Any]:
    """OpenAI's ``TranscriptionDiarized``."""
    return {
        "task": "transcribe",
        "duration": t.duration or 0.0,
        "text": t.text,
        "segments": segment_events(t),
        "usage": {"type": "duration", "seconds": math.ceil(t.duration or 0)},
    }
