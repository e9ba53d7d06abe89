"""Who spoke, as a request asks for it: the speaker counts checked the same way at every
entry point (folder rule, queue request, job API, ``/asr``, OpenAI's API, the command
line), and whether a provider can answer.

A request either asks nothing (``None``), or a :class:`~stenod.speakers.Diarization`
that reaches the provider as ``Batch.diarization``. Counts without ``diarize`` are an
error rather than a silent diarization: a misspelt flag must not bill a cloud provider
for work nobody asked for.
"""

from __future__ import annotations

from dataclasses import replace

from stenod.provider import Limits, Transcript
from stenod.speakers import Diarization, KnownSpeaker, Speaker

__all__ = ["MAX_KNOWN_SPEAKERS", "MAX_SPEAKERS", "diarization_of", "unavailable_reason", "with_speakers_listed"]

MAX_SPEAKERS = 32  # more voices than any meeting a clustering model separates well
MAX_KNOWN_SPEAKERS = 4  # OpenAI's limit on known_speaker_names


def diarization_of(
    diarize: bool,
    *,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    known: tuple[KnownSpeaker, ...] = (),
) -> Diarization | None:
    """The diarization asked for, or None. Raises ValueError with a sentence for a person."""
    counts = {"num_speakers": num_speakers, "min_speakers": min_speakers, "max_speakers": max_speakers}
    if not diarize:
        given = [k for k, v in counts.items() if v is not None]
        if given or known:
            raise ValueError(f"{', '.join(given) or 'known speakers'} needs diarize = true")
        return None
    for key, value in counts.items():
        if value is not None and not 1 <= value <= MAX_SPEAKERS:
            raise ValueError(f"{key} must be between 1 and {MAX_SPEAKERS}, not {value}")
    if num_speakers is not None and (min_speakers is not None or max_speakers is not None):
        raise ValueError("give num_speakers (exactly) or min_speakers/max_speakers (a range), not both")
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise ValueError(f"min_speakers ({min_speakers}) is more than max_speakers ({max_speakers})")
    if len(known) > MAX_KNOWN_SPEAKERS:
        raise ValueError(f"at most {MAX_KNOWN_SPEAKERS} known speakers, not {len(known)}")
    names = [k.name for k in known]
    if len(set(names)) != len(names):
        raise ValueError("known speaker names must not repeat")
    return Diarization(num_speakers, min_speakers, max_speakers, known)


def unavailable_reason(provider: str, limits: Limits) -> str | None:
    """Why ``provider`` cannot say who spoke (naming what to install when that is the
    reason), or None when it can."""
    if limits.diarization:
        return None
    if limits.diarization_missing:
        return f"{provider} cannot say who spoke here: {limits.diarization_missing}"
    return f"{provider} cannot say who spoke; choose a provider that can (see `stenod providers`)"


def with_speakers_listed(t: Transcript) -> Transcript:
    """The transcript with its ``speakers`` list: a provider that labels segments and words
    without listing the voices (the cloud providers' speaker labels) gets the list made
    from the labels, in order of first appearance, so that every output has one shape."""
    if t.speakers:
        return t
    said = [s.speaker for s in t.segments] + [w.speaker for w in t.words or ()]
    labels = dict.fromkeys(label for label in said if label)
    return replace(t, speakers=tuple(Speaker(label) for label in labels)) if labels else t
