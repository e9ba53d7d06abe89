"""Synthesised speech for tests and benchmarks: one helper every test imports.

``synthesise`` speaks English with espeak-ng and encodes it with PyAV into any format
the offline provider reads; ``festival_speech`` speaks with Festival's diphone voices
(English ``kal``, Italian ``pc``: Debian's festvox-kallpc16k and festvox-itapc16k), for
tests about language; ``write_slowly`` writes a file in pieces (a recorder or a slow
copy, for folder-watch tests); ``long_speech`` writes minutes of speech with silences
without holding the audio in memory.

Whisper base recognises both voices well: word error rate 0.0–0.1 on :data:`SENTENCES`
with espeak-ng's ``en-us+f2`` and about 0.05 on Festival's English paragraphs.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
from av.audio.stream import AudioStream

__all__ = [
    "FORMATS",
    "ITALIAN",
    "SENTENCES",
    "encode_pcm",
    "festival_speech",
    "long_speech",
    "synthesise",
    "synthesise_pcm",
    "synthesise_sentences",
    "write_slowly",
    "write_slowly_async",
]

SENTENCES: tuple[str, ...] = (
    "i would like to order a large pizza with cheese and mushrooms for dinner tonight",
    "the children are playing in the garden with their dog",
    "open the window and let some fresh air into the room",
    "my phone number is five five five one two three four",
    "the meeting starts at ten o'clock in the morning",
)
"""Sentences spoken in the tests (each recognised with WER ≤ 0.11 by Whisper base)."""

ITALIAN: tuple[str, ...] = (
    "Buongiorno a tutti. Oggi parliamo della storia di Roma e della cucina italiana.",
    "Il treno per Milano parte alle nove dalla stazione centrale.",
)
"""Italian sentences for Festival's Italian voice (language detection and translation)."""

_FESTIVAL_VOICES = {"english": "(voice_kal_diphone)", "italian": "(voice_pc_diphone)"}
_FESTIVAL_RATE = 16000  # both diphone voices speak at 16 kHz

_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)
# container format, codec, codec sample format, channel layout, sample rates the codec
# accepts (None: any). FFmpeg's own vorbis encoder is experimental and stereo-only.
_CODECS: dict[str, tuple[str, str, str, str, tuple[int, ...] | None]] = {
    "wav": ("wav", "pcm_s16le", "s16", "mono", None),
    "flac": ("flac", "flac", "s16", "mono", None),
    "ogg": ("ogg", "vorbis", "fltp", "stereo", None),
    "opus": ("ogg", "libopus", "s16", "mono", _OPUS_RATES),
    "mp3": ("mp3", "libmp3lame", "s16p", "mono", (44100, 48000, 32000, 22050, 24000, 16000, 11025, 8000)),
    "m4a": ("ipod", "aac", "fltp", "mono", (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000)),
    "webm": ("webm", "libopus", "s16", "mono", _OPUS_RATES),
}
FORMATS: tuple[str, ...] = tuple(_CODECS)
"""Every format :func:`synthesise` can write (the file extension without the dot)."""

_VOICE = ("-v", "en-us+f2")
_ESPEAK_RATE = 22050  # espeak-ng's native output rate


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed; tests/setup-system.sh installs it")
    return exe


def synthesise_pcm(text: str, *, slow: bool = False) -> bytes:
    """Speak ``text`` and return espeak-ng's raw output: mono s16le at 22 050 Hz."""
    speed = "100" if slow else "130"
    with tempfile.TemporaryDirectory(prefix="stenod-speech-") as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([_espeak(), *_VOICE, "-s", speed, "-w", str(wav), text], check=True)
        with av.open(str(wav)) as container:
            stream = container.streams.audio[0]
            return b"".join(_s16_bytes(frame) for frame in container.decode(stream))


def festival_pcm(text: str, *, voice: str = "english") -> bytes:
    """Speak ``text`` with Festival's ``english`` or ``italian`` voice: mono s16le at 16 kHz."""
    exe = shutil.which("text2wave")
    if exe is None:
        raise RuntimeError("festival is not installed; tests/setup-system.sh installs it")
    with tempfile.TemporaryDirectory(prefix="stenod-festival-") as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [exe, "-eval", _FESTIVAL_VOICES[voice], "-o", str(wav)],
            input=text.encode("utf-8" if voice == "english" else "latin-1"),
            check=True,
            capture_output=True,
        )
        with av.open(str(wav)) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=_FESTIVAL_RATE)
            frames = [f for frame in container.decode(stream) for f in resampler.resample(frame)]
            return b"".join(_s16_bytes(frame) for frame in frames)


def festival_speech(
    sentences: tuple[str, ...] | list[str], path: Path | str, *, voice: str = "english", pause_seconds: float = 0.8
) -> Path:
    """Speak each sentence with Festival, a pause after each, into ``path`` (format from its extension)."""
    gap = bytes(int(pause_seconds * _FESTIVAL_RATE) * 2)
    chunks = [c for s in sentences for c in (festival_pcm(s, voice=voice), gap)]
    return encode_pcm(chunks, Path(path), in_rate=_FESTIVAL_RATE)


def _s16_bytes(frame: av.AudioFrame) -> bytes:
    return bytes(frame.planes[0])[: frame.samples * 2]


def encode_pcm(
    chunks: Iterator[bytes] | list[bytes],
    path: Path,
    *,
    fmt: str | None = None,
    in_rate: int = _ESPEAK_RATE,
    rate: int = 16000,
) -> Path:
    """Encode mono s16le PCM chunks (at ``in_rate``) into ``path`` as ``fmt`` at ``rate``.

    Streams: memory stays flat however many chunks there are. Raises KeyError for an
    unknown format.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "wav").lower()
    container_fmt, codec, sample_fmt, layout, rates = _CODECS[fmt]
    out_rate = rate if rates is None or rate in rates else min(rates, key=lambda r: abs(r - rate))
    with av.open(str(path), "w", format=container_fmt) as out:
        options = {"strict": "experimental"} if codec == "vorbis" else {}
        stream = out.add_stream(codec, rate=out_rate, options=options)
        assert isinstance(stream, AudioStream)
        stream.layout = layout
        stream.format = sample_fmt
        if codec not in ("pcm_s16le", "flac"):
            stream.bit_rate = 64000  # a typical voice-recording rate; lame's default is far lower
        stream.codec_context.open()
        frame_size = stream.codec_context.frame_size or None
        resampler = av.AudioResampler(format=sample_fmt, layout=layout, rate=out_rate, frame_size=frame_size)
        pts = 0
        for chunk in _pcm_frames(chunks, in_rate):
            for frame in resampler.resample(chunk):
                frame.pts = pts
                pts += frame.samples
                out.mux(stream.encode(frame))
        for frame in resampler.resample(None):
            frame.pts = pts
            pts += frame.samples
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _pcm_frames(chunks: Iterator[bytes] | list[bytes], rate: int) -> Iterator[av.AudioFrame]:
    for chunk in chunks:
        samples = len(chunk) // 2
        if not samples:
            continue
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(chunk[: samples * 2])
        frame.sample_rate = rate
        yield frame


def synthesise(text: str, path: Path | str, *, fmt: str | None = None, rate: int = 16000, slow: bool = False) -> Path:
    """Speak ``text`` in English into ``path``.

    ``fmt`` is one of :data:`FORMATS` (default: from the file's extension, else wav);
    ``rate`` is the output sample rate (codecs with fixed rates use the nearest they
    accept); ``slow`` speaks more slowly (longer audio, a little less recognisable).
    Returns the path.
    """
    return encode_pcm([synthesise_pcm(text, slow=slow)], Path(path), fmt=fmt, rate=rate)


def synthesise_sentences(
    sentences: tuple[str, ...] | list[str],
    path: Path | str,
    *,
    fmt: str | None = None,
    rate: int = 16000,
    pause_seconds: float = 1.0,
) -> Path:
    """Speak each sentence followed by ``pause_seconds`` of silence (so voice activity
    detection sees separate utterances) into ``path``. Returns the path."""
    gap = bytes(int(pause_seconds * _ESPEAK_RATE) * 2)
    chunks = [c for s in sentences for c in (synthesise_pcm(s), gap)]
    return encode_pcm(chunks, Path(path), fmt=fmt, rate=rate)


def long_speech(
    path: Path | str,
    seconds: float,
    *,
    fmt: str | None = None,
    silence_seconds: float = 1.5,
    sentences: tuple[str, ...] = SENTENCES,
) -> tuple[Path, str]:
    """Write about ``seconds`` of speech: ``sentences`` over and over, each followed by
    silence. Returns the path and the text that was spoken.

    Only one sentence's audio is held at a time (each is synthesised once and reused).
    """
    spoken = [synthesise_pcm(s) for s in sentences]
    gap = bytes(int(silence_seconds * _ESPEAK_RATE) * 2)
    words: list[str] = []

    def chunks() -> Iterator[bytes]:
        total = 0.0
        i = 0
        while total < seconds:
            pcm = spoken[i % len(spoken)]
            words.append(sentences[i % len(sentences)])
            yield pcm
            yield gap
            total += (len(pcm) + len(gap)) / 2 / _ESPEAK_RATE
            i += 1

    out = encode_pcm(chunks(), Path(path), fmt=fmt)
    return out, " ".join(words)


def write_slowly(path: Path | str, data: bytes, chunks: int, delay: float) -> None:
    """Write ``data`` to ``path`` in ``chunks`` pieces, flushing each and sleeping
    ``delay`` seconds between them (a slow copy or a recorder still writing)."""
    size = max(1, -(-len(data) // max(1, chunks)))
    with open(path, "wb") as f:
        for i in range(0, max(len(data), 1), size):
            if i:
                time.sleep(delay)
            f.write(data[i : i + size])
            f.flush()


async def write_slowly_async(path: Path | str, data: bytes, chunks: int, delay: float) -> None:
    """:func:`write_slowly` without blocking the event loop."""
    await asyncio.to_thread(write_slowly, path, data, chunks, delay)
