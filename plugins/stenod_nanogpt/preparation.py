"""What the provider asks of the decoding child: how a recording is uploaded (as it is, or
as transcoded pieces) and the encoded pieces themselves.

These functions run in the core's :class:`~stenod.provider.MediaChild` (a memory-capped
process of its own), never in the daemon: they open an untrusted file with libav. So they
take and return plain picklable values; the provider turns paths into uploads.
"""

from __future__ import annotations

from pathlib import Path

from stenod.provider import BatchItem, Json, audio_too_long

from . import audio

__all__ = ["decode_timeout_seconds", "encode_upload", "plan_upload"]

_SECONDS_PER_AUDIO_SECOND = 0.2  # decoding (and encoding) runs far faster than real time


def decode_timeout_seconds(max_seconds: float) -> float:
    """How long one decoding pass of a recording of at most ``max_seconds`` may take."""
    return 60.0 + max_seconds * _SECONDS_PER_AUDIO_SECOND


def plan_upload(item: BatchItem, max_upload_bytes: int, max_seconds: float) -> dict[str, Json]:
    """Decide how ``item`` is uploaded: as it is, or as transcoded pieces.

    Raises PermanentError: not decodable audio, or ``too_long`` (the header says it lasts
    more than ``max_seconds``, or its decoded audio passes that).
    """
    declared = item.duration or audio.probe_seconds(item.open)
    if declared is not None and declared > max_seconds:
        raise audio_too_long("nanogpt", item.name, declared, max_seconds, declared=True)
    if item.extension in audio.UPLOAD_FORMATS and item.size <= max_upload_bytes:
        if declared:
            samples = round(declared * audio.SAMPLE_RATE)
        else:
            samples = audio.analyse(item.open, max_seconds=max_seconds, label=item.name).total_samples
        return {
            "item_id": item.item_id,
            "name": item.name,
            "original": True,
            "pieces": [{"start": 0, "length": samples}],
        }
    analysis = audio.analyse(item.open, max_seconds=max_seconds, label=item.name)
    pieces = audio.plan_pieces(analysis, audio.max_piece_samples(max_upload_bytes))
    return {
        "item_id": item.item_id,
        "name": item.name,
        "original": False,
        "pieces": [{"start": p.start, "length": p.length} for p in pieces],
    }


def encode_upload(item: BatchItem, pieces: list[tuple[int, int]], directory: Path) -> list[Path]:
    """Encode the planned pieces (start, length in samples) of ``item`` as MP3 files in
    ``directory``. Raises PermanentError if the recording cannot be decoded (or changed)."""
    plan = tuple(audio.Piece(start, length) for start, length in pieces)
    return audio.encode_pieces(item.open, plan, directory)
