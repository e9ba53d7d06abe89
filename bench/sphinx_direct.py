"""Benchmark: PocketSphinx called directly, with the sphinx plugin's own decoding.

Measures what the offline engine costs without the daemon around it, so the lead's
through-the-daemon benchmark can be compared with it:

- :func:`generate_files` writes N synthesised speech files (espeak-ng) with their text;
- :func:`measure_direct` decodes and recognises them in this process with the plugin's
  ``PcmStream`` and ``Recognizer`` (the same settings as the workers) and reports the
  real-time factor and word error rate;
- :func:`measure_long_file` runs one long file (default 30 min) through a real
  ``SphinxProvider`` worker and reports the worker's peak RSS against its peak after a
  short file: flat memory means the two are close.

CLI: ``python -m bench.sphinx_direct --files 5 --long-minutes 30`` (from the repo root).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer

from stenod.provider import Batch, BatchItem, NoOptions, Task
from stenod_sphinx import SphinxProvider, SphinxSettings
from stenod_sphinx.audio import PcmStream
from stenod_sphinx.recognizer import Recognizer
from tests.speech import SENTENCES, long_speech, synthesise_sentences

__all__ = [
    "DirectMeasurement",
    "LongFileMeasurement",
    "SpeechFile",
    "generate_files",
    "main",
    "measure_direct",
    "measure_long_file",
]


@dataclass(frozen=True, slots=True)
class SpeechFile:
    path: Path
    text: str
    seconds: float


@dataclass(frozen=True, slots=True)
class DirectMeasurement:
    files: int
    audio_seconds: float
    model_load_seconds: float
    wall_seconds: float
    cpu_seconds: float
    real_time_factor: float  # wall seconds per audio second, one core
    word_error_rate: float


@dataclass(frozen=True, slots=True)
class LongFileMeasurement:
    audio_seconds: float
    wall_seconds: float
    real_time_factor: float
    worker_peak_rss_after_short_mib: float
    worker_peak_rss_after_long_mib: float
    segments: int
    words: int
    word_error_rate: float


def generate_files(folder: Path, count: int, *, sentences_per_file: int = 3, fmt: str = "wav") -> list[SpeechFile]:
    """Write ``count`` files of ``sentences_per_file`` sentences each (rotating through
    the test sentences) into ``folder``; return them with their spoken text."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        chosen = [SENTENCES[(index + k) % len(SENTENCES)] for k in range(sentences_per_file)]
        path = synthesise_sentences(chosen, folder / f"speech-{index:03d}.{fmt}", fmt=fmt)
        files.append(SpeechFile(path, " ".join(chosen), _seconds(path)))
    return files


def _seconds(path: Path) -> float:
    with path.open("rb") as f, PcmStream(f, str(path)) as audio:
        for _ in audio.chunks():
            pass
        return audio.decoded_seconds


def measure_direct(files: Sequence[SpeechFile], *, max_piece_seconds: float = 30.0) -> DirectMeasurement:
    """Recognise ``files`` one after another in this process, as a worker would."""
    started = time.perf_counter()
    recognizer = Recognizer(max_piece_seconds=max_piece_seconds)
    load = time.perf_counter() - started
    hypotheses = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for speech in files:
        with speech.path.open("rb") as f, PcmStream(f, str(speech.path)) as audio:
            hypotheses.append(" ".join(p.text for p in recognizer.pieces(audio.chunks())))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    audio_seconds = sum(s.seconds for s in files)
    return DirectMeasurement(
        files=len(files),
        audio_seconds=round(audio_seconds, 2),
        model_load_seconds=round(load, 3),
        wall_seconds=round(wall, 2),
        cpu_seconds=round(cpu, 2),
        real_time_factor=round(wall / audio_seconds, 4),
        word_error_rate=round(jiwer.wer([s.text for s in files], hypotheses), 4),
    )


class _PrintingContext:
    """A StepContext that prints progress every tenth."""

    def __init__(self) -> None:
        self._shown = -1

    @property
    def saved(self) -> Mapping[str, Any] | None:
        return None

    async def checkpoint(self, data: Mapping[str, Any]) -> None:
        return None

    def progress(self, fraction: float) -> None:
        tenth = int(fraction * 10)
        if tenth > self._shown:
            self._shown = tenth
            print(f"  long file: {fraction:.0%}", flush=True)


def _item(path: Path) -> BatchItem:
    st = path.stat()
    return BatchItem(path.name, path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


async def measure_long_file(
    folder: Path, minutes: float, *, short: SpeechFile, max_piece_seconds: float = 30.0
) -> LongFileMeasurement:
    """Transcribe ``short`` then a ``minutes``-long file in one sphinx worker; report the
    worker's peak RSS after each and the long file's real-time factor."""
    path, text = long_speech(folder / "long.flac", minutes * 60)
    seconds = _seconds(path)
    settings = SphinxSettings(workers=1, max_piece_seconds=max_piece_seconds)
    async with SphinxProvider(settings) as provider:
        await provider.submit(_batch(short.path), _PrintingContext())
        (pid,) = provider.worker_pids()
        after_short = _peak_rss_mib(pid)
        started = time.perf_counter()
        handle = await provider.submit(_batch(path), _PrintingContext())
        wall = time.perf_counter() - started
        after_long = _peak_rss_mib(pid)
        (result,) = await provider.fetch(handle)
    transcript = result.transcript
    assert transcript is not None
    return LongFileMeasurement(
        audio_seconds=round(seconds, 1),
        wall_seconds=round(wall, 1),
        real_time_factor=round(wall / seconds, 4),
        worker_peak_rss_after_short_mib=round(after_short, 1),
        worker_peak_rss_after_long_mib=round(after_long, 1),
        segments=len(transcript.segments),
        words=len(transcript.words or ()),
        word_error_rate=round(jiwer.wer(text, transcript.text.replace("\n", " ")), 4),
    )


def _batch(path: Path) -> Batch:
    return Batch(f"bench-{path.stem}", Task.TRANSCRIBE, (_item(path),), "en-US", (), NoOptions())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the figures as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5, help="speech files for the direct run")
    parser.add_argument("--sentences", type=int, default=3, help="sentences per file")
    parser.add_argument("--format", default="wav", help="file format (wav, flac, mp3, ...)")
    parser.add_argument("--long-minutes", type=float, default=30.0, help="0 skips the long-file run")
    parser.add_argument("--dir", type=Path, default=None, help="keep the files here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stenod-bench-") as tmp:
        folder = args.dir or Path(tmp)
        files = generate_files(folder, args.files, sentences_per_file=args.sentences, fmt=args.format)
        direct = measure_direct(files)
        print(json.dumps({"direct": asdict(direct), "cpus": os.cpu_count()}), flush=True)
        if args.long_minutes > 0:
            long = asyncio.run(measure_long_file(folder, args.long_minutes, short=files[0]))
            print(json.dumps({"long_file": asdict(long)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
