"""Synthesised conversations with known turns, for the diarization tests and benchmark.

Each voice is a different synthesiser or a different speaker of one: Festival's English
``kal_diphone`` and Italian ``pc_diphone`` (male diphone voices of two languages),
espeak-ng's ``en-us+f2`` (female formant voice) and ``en-gb-scotland+m3``. Turns are
placed one after another with silences between them, and one turn starts before the
previous one has ended (an overlap). The reference says when each voice actually makes
sound (its own track, 10 ms frames above a floor, pauses under 0.3 s bridged), so a
sentence-final silence inside a turn is not counted as speech.

Besides them, one real recording with a reference annotation (:func:`real_recording`:
pyannote-audio's tutorial sample, kept with its licence in ``tests/data/pyannote_sample``).

Shared by the tests and the benchmark (both import it from ``support``; it reads that data
folder, it imports nothing of either).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from support.der import read_rttm

__all__ = [
    "CONVERSATIONS",
    "RATE",
    "VOICES",
    "Conversation",
    "Turn",
    "conversation_files",
    "real_recording",
    "speak",
    "write_conversation",
]

RATE = 16000
VOICES: dict[str, tuple[str, str]] = {
    "kal": ("festival", "(voice_kal_diphone)"),
    "pc": ("festival", "(voice_pc_diphone)"),
    "f2": ("espeak", "en-us+f2"),
    "scot": ("espeak", "en-gb-scotland+m3"),
}
"""Voice name → (synthesiser, voice). ``pc`` speaks Italian."""

_ENGLISH = (
    "good morning, i wanted to talk about the plans for the garden this spring",
    "we could plant tomatoes along the fence where the sun is strongest",
    "the water bill last month was much higher than the one before",
    "i think the pipe under the kitchen sink has been leaking again",
    "let us call the plumber tomorrow morning before ten o'clock",
    "the children will be home from school at half past three",
    "could you pick up some bread and milk on the way back",
    "the train to the city was late again this morning",
    "my sister is coming to visit us next weekend with her dog",
    "we should clean the spare room before she arrives on friday",
    "the library closes early on saturdays during the summer",
    "i finished reading the book you gave me for my birthday",
)
_ITALIAN = (
    "buongiorno, oggi parliamo della cucina italiana e dei suoi piatti",
    "il treno per milano parte alle nove dalla stazione centrale",
    "domani andiamo al mercato a comprare frutta e verdura fresca",
    "la riunione è stata spostata a giovedì pomeriggio alle tre",
    "mia nonna prepara la pasta fatta in casa ogni domenica",
    "il museo resta aperto fino alle sette di sera in estate",
)


@dataclass(frozen=True, slots=True)
class Turn:
    """A stretch of one voice's speech in the reference (seconds)."""

    speaker: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Conversation:
    """A recording to diarize: its voices, the number of turns, whether one overlaps, its seed."""

    name: str
    voices: tuple[str, ...]
    turns: int
    overlap: bool = True
    seed: int = 1


CONVERSATIONS: tuple[Conversation, ...] = (
    Conversation("two_voices", ("kal", "f2"), 14),
    Conversation("three_voices", ("kal", "f2", "pc"), 18, seed=2),
    Conversation("four_voices", ("kal", "f2", "pc", "scot"), 26, seed=3),
    Conversation("one_voice", ("kal",), 14, overlap=False, seed=4),
)
"""Two to four voices over about 1–3 minutes, and one voice alone."""


def speak(voice: str, text: str) -> np.ndarray:
    """``text`` spoken by ``voice`` (a key of :data:`VOICES`): float32 mono at 16 kHz."""
    engine, name = VOICES[voice]
    with tempfile.TemporaryDirectory(prefix="stenod-conversation-") as tmp:
        wav = Path(tmp) / "turn.wav"
        if engine == "festival":
            exe = shutil.which("text2wave") or "text2wave"
            encoding = "latin-1" if voice == "pc" else "utf-8"
            subprocess.run([exe, "-eval", name, "-o", str(wav)], input=text.encode(encoding), check=True)
        else:
            exe = shutil.which("espeak-ng") or "espeak-ng"
            subprocess.run([exe, "-v", name, "-s", "150", "-w", str(wav), text], check=True)
        return _read(wav)


def _read(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        frames += resampler.resample(None)
    audio = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
    peak = float(np.abs(audio).max()) or 1.0
    return audio * (0.5 / peak)  # every voice at one loudness: loudness must not give a voice away


def write_conversation(conversation: Conversation, path: Path) -> list[Turn]:
    """Synthesise ``conversation`` into ``path`` (16 kHz mono; format from the suffix) and
    return the reference turns."""
    rng = random.Random(conversation.seed)
    texts = {v: list(_ITALIAN if v == "pc" else _ENGLISH) for v in conversation.voices}
    for pool in texts.values():
        rng.shuffle(pool)
    placed: list[tuple[str, int, np.ndarray]] = []
    cursor = int(0.5 * RATE)
    overlap_at = conversation.turns // 2 if conversation.overlap else -1
    for index in range(conversation.turns):
        voice = conversation.voices[index % len(conversation.voices)]
        if len(conversation.voices) > 2 and rng.random() < 0.3:
            voice = rng.choice(conversation.voices)  # not always in the same order
        pool = texts[voice]
        audio = speak(voice, pool[index % len(pool)])
        start = cursor - int(1.2 * RATE) if index == overlap_at else cursor
        placed.append((voice, max(0, start), audio))
        cursor = max(cursor, start + len(audio)) + int(rng.uniform(0.4, 1.4) * RATE)
    mix = np.zeros(cursor, dtype=np.float32)
    tracks: dict[str, np.ndarray] = {v: np.zeros(cursor, dtype=np.float32) for v in conversation.voices}
    for voice, start, audio in placed:
        mix[start : start + len(audio)] += audio
        tracks[voice][start : start + len(audio)] += audio
    _write(np.clip(mix, -1.0, 1.0), path)
    return sorted((t for v, track in tracks.items() for t in _activity(v, track)), key=lambda t: t.start)


def conversation_files(folder: Path) -> dict[str, tuple[Path, list[tuple[str, float, float]]]]:
    """Every conversation as a wav file in ``folder`` with its reference turns, made once
    (kept beside it as JSON) and reused by later runs."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, list[tuple[str, float, float]]]] = {}
    for conversation in CONVERSATIONS:
        path, kept = folder / f"{conversation.name}.wav", folder / f"{conversation.name}.json"
        if not path.exists() or not kept.exists():
            turns = write_conversation(conversation, path)
            kept.write_text(json.dumps([[t.speaker, t.start, t.end] for t in turns]))
        files[conversation.name] = (path, [(str(a), float(b), float(c)) for a, b, c in json.loads(kept.read_text())])
    return files


REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "pyannote_sample"


def real_recording() -> tuple[Path, list[tuple[str, float, float]]]:
    """pyannote-audio's sample (30 s of a telephone call, two real voices, overlaps) and its
    reference turns."""
    return REAL / "sample.wav", read_rttm(REAL / "sample.rttm")


def _activity(voice: str, track: np.ndarray) -> list[Turn]:
    frame = RATE // 100
    energy = np.abs(track[: len(track) // frame * frame].reshape(-1, frame)).max(axis=1)
    active = energy > 0.02
    turns: list[Turn] = []
    start: int | None = None
    silent = 0
    for index, on in enumerate(active):
        if on:
            start = index if start is None else start
            silent = 0
        elif start is not None:
            silent += 1
            if silent >= 30:
                turns.append(Turn(voice, start / 100, (index - silent + 1) / 100))
                start = None
    if start is not None:
        turns.append(Turn(voice, start / 100, (len(active) - silent) / 100))
    return turns


def _write(audio: np.ndarray, path: Path) -> None:
    pcm = (audio * 32767).astype("<i2")
    fmt = path.suffix.lstrip(".") or "wav"
    codec = {"wav": "pcm_s16le", "flac": "flac"}[fmt]
    with av.open(str(path), "w", format=fmt) as out:
        stream: Any = out.add_stream(codec, rate=RATE)
        stream.layout = "mono"
        stream.format = "s16"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
