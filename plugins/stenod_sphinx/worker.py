"""What runs inside a recognition worker process.

The pool starts each worker with :func:`initialize` (loads the model once) and sends it
one file at a time through :func:`transcribe`. Everything libav or PocketSphinx does
happens here, in a process of its own: a crash or a hang costs a worker, never the
daemon. The worker talks back over one shared pipe with small tuples (each a single
atomic write, so several workers can share it without a lock):

- ``("started", token, pid)`` when it picks a file up;
- ``("audio", token, seconds, fraction)`` at least every ``report_seconds`` of audio.

The parent sets ``cancelled[token % len(cancelled)] = token`` to ask it to stop early,
and holds the only write end of the ``lifeline`` pipe: end-of-file there means the
parent is gone, and the worker exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import av.logging

from stenod.provider import BatchItem, PermanentError, Segment, Transcript, Word
from stenod_sphinx.audio import PcmStream
from stenod_sphinx.recognizer import Piece, Recognizer

__all__ = ["LANGUAGE", "initialize", "transcribe"]

LANGUAGE = "en-US"


@dataclass(slots=True)
class _Worker:
    recognizer: Recognizer
    messages: Connection
    cancelled: Any  # multiprocessing RawArray of signed 64-bit tokens


# One recogniser per worker process, built by the pool's initializer: the model takes
# a noticeable fraction of a second to load and is reused for every file.
_worker: _Worker | None = None


class _Cancelled(Exception):
    pass


def initialize(messages: Connection, lifeline: Connection, cancelled: Any, max_piece_seconds: float) -> None:
    """Pool initializer: follow the parent's life, load the model once for this process."""
    global _worker
    threading.Thread(target=_exit_with_parent, args=(lifeline,), name="lifeline", daemon=True).start()
    # Ctrl-C in a terminal reaches the whole process group; the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    av.logging.set_level(None)
    _worker = _Worker(Recognizer(max_piece_seconds=max_piece_seconds), messages, cancelled)


def _exit_with_parent(lifeline: Connection) -> None:
    # The parent never writes: this returns (EOFError) only when its end is closed,
    # by aclose() or by the parent's death.
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    os._exit(0)


def transcribe(token: int, item: BatchItem, report_seconds: float) -> dict[str, Any]:
    """Recognise one file. Returns ``{"transcript": …, "warnings": […]}``,
    ``{"error": ErrorInfo json}`` for a file that cannot be transcribed, or
    ``{"cancelled": True}``."""
    worker = _worker
    if worker is None:
        raise RuntimeError("stenod_sphinx worker used without its initializer")
    worker.messages.send(("started", token, os.getpid()))
    label = str(item.path)
    try:
        _check_cancelled(worker, token)
        with item.open() as fileobj, PcmStream(fileobj, label) as audio:
            total = item.duration or audio.declared_seconds

            def heartbeat(seconds: float) -> None:
                _check_cancelled(worker, token)
                fraction = min(0.99, seconds / total) if total else min(0.99, audio.read_fraction)
                worker.messages.send(("audio", token, seconds, fraction))

            pieces = []
            for piece in worker.recognizer.pieces(
                audio.chunks(), on_audio=heartbeat, audio_report_seconds=report_seconds
            ):
                pieces.append(piece)
            transcript = _transcript(pieces, audio.decoded_seconds)
            return {"transcript": transcript.to_json(), "warnings": audio.problems}
    except PermanentError as exc:
        return {"error": exc.info().to_json()}
    except _Cancelled:
        return {"cancelled": True}


def _check_cancelled(worker: _Worker, token: int) -> None:
    slots = worker.cancelled
    if slots[token % len(slots)] == token:
        raise _Cancelled


def _transcript(pieces: list[Piece], duration: float) -> Transcript:
    segments = tuple(Segment(p.start, p.end, p.text) for p in pieces)
    words = tuple(Word(w.start, w.end, w.text) for p in pieces for w in p.words)
    return Transcript(
        text="\n".join(s.text for s in segments),
        language=LANGUAGE,
        duration=round(duration, 3),
        segments=segments,
        words=words,
        provider="sphinx",
    )
