"""What runs inside a transcription worker process.

The pool starts each worker with :func:`initialize`, which connects back to the daemon
over a Unix socket and loads the model once; then it hands the worker one file at a time
through :func:`transcribe`. Everything libav and CTranslate2 do happens here: a crash or
an out-of-memory kill costs this worker and the one file it held, never the daemon.

The socket carries JSON lines to the daemon, each naming the file's ``token``:
``started`` (with the pid), ``alive`` (decoding), ``segment`` (a decoded segment and the
share of the audio done). It is also the worker's lifeline: the daemon never writes to
it, so a read returns only when the daemon closed it or died, and then the worker exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from dataclasses import dataclass, replace
from typing import Any

from stenod.provider import BatchItem, PermanentError, Segment, Transcript, Word
from stenod_whisper.audio import SAMPLE_RATE, decode
from stenod_whisper.segments import segment_json, segment_of, sentences, words_of

__all__ = ["initialize", "transcribe"]


@dataclass(slots=True)
class _Worker:
    model: Any  # faster_whisper.WhisperModel
    channel: socket.socket
    batched: Any = None  # faster_whisper.BatchedInferencePipeline, made on first use

    def send(self, message: dict[str, Any]) -> None:
        # One sendall per line from this (the only writing) thread: lines never interleave.
        self.channel.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")


# One model per worker process, loaded by the pool's initializer and reused for every file.
_worker: _Worker | None = None


def initialize(address: str, engine: dict[str, Any]) -> None:
    """Pool initializer: connect to the daemon, follow its life, load the model."""
    global _worker
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.connect(address)
    threading.Thread(target=_exit_with_daemon, args=(channel,), name="lifeline", daemon=True).start()
    # Ctrl-C in a terminal reaches the whole process group; the daemon decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # onnxruntime (the VAD) otherwise keeps a device id under ~/.cache and reports usage to
    # Microsoft; it must be off before the library loads.
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    try:
        import av.logging
        from faster_whisper import WhisperModel

        av.logging.set_level(None)
        model = WhisperModel(
            engine["path"],
            device=engine["device"],
            device_index=engine["device_index"],
            compute_type=engine["compute_type"],
            cpu_threads=engine["cpu_threads"],
            num_workers=1,
            local_files_only=True,  # prepared before the daemon started: never a download here
        )
    except Exception as exc:
        message = {"init_failed": os.getpid(), "error": f"{type(exc).__name__}: {exc}"}
        channel.sendall(json.dumps(message).encode() + b"\n")
        raise
    _worker = _Worker(model, channel)
    _worker.send({"ready": os.getpid()})


def _exit_with_daemon(channel: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while channel.recv(1):
            pass
    os._exit(0)


def transcribe(token: int, item: BatchItem, request: dict[str, Any]) -> dict[str, Any]:
    """Transcribe (or translate to English) one file.

    Returns ``{"transcript": …, "warnings": […]}`` or ``{"error": ErrorInfo json}`` for a
    file that cannot be transcribed.
    """
    worker = _worker
    if worker is None:
        raise RuntimeError("stenod_whisper worker used without its initializer")
    worker.send({"token": token, "kind": "started", "pid": os.getpid()})
    try:
        with item.open() as fileobj:
            audio, warnings = decode(
                fileobj,
                str(item.path),
                on_progress=lambda share: worker.send({"token": token, "kind": "alive", "decoded": share}),
            )
        transcript = _recognise(worker, token, audio, request)
        return {"transcript": transcript.to_json(), "warnings": warnings}
    except PermanentError as exc:
        return {"error": exc.info().to_json()}
    finally:
        # The result travels on pebble's channel, these messages on ours: "done" tells the
        # daemon it has every segment before it takes the result.
        worker.send({"token": token, "kind": "done"})


def _recognise(worker: _Worker, token: int, audio: Any, request: dict[str, Any]) -> Transcript:
    duration = len(audio) / SAMPLE_RATE
    if request.get("detect_only"):
        language, probability, _ = worker.model.detect_language(audio[: 30 * SAMPLE_RATE])
        return Transcript(
            text="",
            language=language,
            language_probability=round(probability, 4),
            duration=round(duration, 3),
            provider="whisper",
        )
    options: dict[str, Any] = {
        "language": request["language"],
        "task": request["task"],
        "beam_size": request["beam_size"],
        "vad_filter": request["vad_filter"],
        "word_timestamps": request["word_timestamps"],
        "initial_prompt": request["initial_prompt"],
        "hotwords": request["hotwords"],
    }
    if request["temperature"] is not None:
        options["temperature"] = request["temperature"]
    batch_size = request["batch_size"]
    batched = batch_size > 1 and duration >= request["batch_min_seconds"]
    if batched:
        if worker.batched is None:
            from faster_whisper import BatchedInferencePipeline

            worker.batched = BatchedInferencePipeline(worker.model)
        # Timestamps off (with them on, the batched path drops whole sentences: faster-whisper's
        # issue #1427; measured here WER 0.051 → 0.094), word times on: a chunk is then cut into
        # sentences timed by their words (segments.sentences), as the plain decoder would give.
        options["word_timestamps"] = True
        pieces, info = worker.batched.transcribe(audio, batch_size=batch_size, without_timestamps=True, **options)
    else:
        pieces, info = worker.model.transcribe(audio, **options)
    segments: list[Segment] = []
    words: list[Word] = []
    raw: list[str] = []  # as the model wrote them: a leading space where the script uses spaces
    for piece in pieces:
        raw.append(piece.text)
        words.extend(words_of(piece))
        done = min(0.99, piece.end / duration) if duration else 0.99
        for part in sentences(piece) if batched else [segment_of(piece)]:
            segment = replace(part, extra={**part.extra, "id": len(segments)}) if batched else part
            segments.append(segment)
            worker.send({"token": token, "kind": "segment", "done": done, "segment": segment_json(segment)})
    detected = request["language"] is None
    return Transcript(
        text="".join(raw).strip(),
        language=("en" if request["task"] == "translate" else request["language_tag"] or info.language),
        language_probability=round(info.language_probability, 4) if detected else None,
        duration=round(duration, 3),
        segments=tuple(segments),
        words=tuple(words) if request["word_timestamps"] else None,
        provider="whisper",
    )
