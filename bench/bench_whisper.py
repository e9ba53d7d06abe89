"""The offline engine's speed through stenod against faster-whisper alone (issue 13).
Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_whisper [--quick] [--only direct|folder|queue|idle]
                                            [--rounds N] [--speech-dir DIR] [--model-dir DIR]

On one speech set (``bench/whisper_speech.py``: about 8 minutes of Festival English in
8 files of 30 s to 3.7 min, mixed formats; ``--quick``: 3 files, about 2 minutes), with
the bundled Whisper base model, int8 on the CPU:

- direct (``bench/whisper_direct.py``): faster-whisper without stenod, (a) one process on
  all cores, one file at a time, (b) one single-threaded process per core, (c) and (d) the
  same with ``BatchedInferencePipeline`` (batch 8, no timestamps) for files of 60 s or
  more, for what batching alone gives (the goals compare the daemon with (a) and (b));
- folder (``bench/whisper_daemon.py``): ``stenod run`` with its default whisper settings
  (watch rule: ``settle_seconds = 0.5``), every file renamed into the watched inbox at once,
  timed from the drop to the last ``.txt``;
- queue: the same daemon fed through RabbitMQ (127.0.0.1:5672, guest), one request per
  file, timed from the first publish to the last ``succeeded`` event;
- idle: the daemon's memory before any file, with the model loaded, and after the idle
  unload (``idle_unload_seconds = 5``).

Per configuration: throughput (audio seconds per wall second), real-time factor per file,
WER over the set and per file, peak RSS summed over the process tree (the daemon with its
workers, relay and multiprocessing's resource tracker; for direct runs the workers only),
and cores busy (CPU seconds of that tree per wall second). The daemons are started, and given a short clip that starts their workers,
before the clock runs: model loading is reported apart in both cases. Files are handed out
longest first everywhere (the daemon's own start order is printed). With ``--rounds N``
everything runs N times interleaved and the round of median throughput is shown. The
first run synthesises the speech set into ``--speech-dir`` (about 20 s); later runs reuse it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Final

from bench.whisper_daemon import MB, IdleMemory, Memory, RunFailed, run_folder, run_idle, run_queue
from bench.whisper_direct import FileRun, Run, configurations, cores, run_direct
from bench.whisper_speech import SpeechSet, speech_set, word_error_rate
from stenod_whisper.model import assemble_bundled

CACHE: Final = Path.home() / ".cache" / "stenod-bench"
GOAL_OF_BEST: Final = 0.95
GOAL_OVER_SERIAL: Final = 1.5
GOAL_IDLE_MB: Final = 30.0


# -- report ----------------------------------------------------------------------------


def cpu_model() -> str:
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown CPU",
    )


def machine() -> list[str]:
    model = cpu_model()
    libraries = ", ".join(f"{d} {version(d)}" for d in ("faster-whisper", "ctranslate2", "av", "onnxruntime"))
    return [
        f"machine: {cores()} cores (affinity), {model}; load average at the start {os.getloadavg()[0]:.2f}",
        f"Python {platform.python_version()}; {libraries}; model: Whisper base (bundled), int8, CPU",
    ]


def _median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.throughput)[(len(runs) - 1) // 2]


def table(runs: list[Run], speech: SpeechSet) -> list[str]:
    serial = runs[0].throughput if runs and runs[0].label.startswith("(a)") else None
    head = f"{'configuration':52} {'audio s':>8} {'wall s':>7} {'audio s/s':>9} {'× (a)':>6} {'WER':>6} "
    lines = [head + f"{'peak RSS MB':>11} {'cores busy':>10}"]
    for run in runs:
        ratio = f"{run.throughput / serial:6.2f}" if serial else f"{'–':>6}"
        lines.append(
            f"{run.label:52} {run.audio:8.1f} {run.wall:7.1f} {run.throughput:9.1f} {ratio} {run.wer(speech):6.3f} "
            f"{run.peak_rss / MB:11.0f} {run.cores_busy:10.2f}"
        )
    return lines + [f"  {run.label.split(' ', 1)[0]} {note}" for run in runs for note in run.notes]


def _grid(title: str, runs: list[Run], speech: SpeechSet, cell: Callable[[FileRun], str]) -> list[str]:
    tags = [run.label.split(",")[0].split(":")[0] for run in runs]
    lines = [title, f"{'file':18} {'audio s':>7} " + " ".join(f"{t:>13}" for t in tags)]
    for clip in speech.clips:
        cells = [cell(next(f for f in run.files if f.name == clip.name)) for run in runs]
        lines.append(f"{clip.name:18} {clip.seconds:7.1f} " + " ".join(f"{c:>13}" for c in cells))
    return lines


def per_file(runs: list[Run], speech: SpeechSet) -> list[str]:
    def rtf(f: FileRun) -> str:
        value = f.busy / f.seconds
        return f"{value:6.3f} {f.latency:5.1f}s" if f.latency is not None else f"{value:.3f}"

    def wer(f: FileRun) -> str:
        return f"{word_error_rate([speech.text_of(f.name)], [f.text]):.3f}"

    title = (
        "real-time factor per file: seconds on a worker / audio seconds (daemon: then the seconds from the "
        "drop or publish to its result, waiting for a worker included)"
    )
    return [*_grid(title, runs, speech, rtf), "", *_grid("WER per file", runs, speech, wer)]


def idle_lines(idle: IdleMemory) -> list[str]:
    growth = (idle.unloaded.rss - idle.before.rss) / MB
    met = "yes" if growth <= GOAL_IDLE_MB else "no"

    def line(what: str, m: Memory) -> str:
        return f"  {what:44} {m.rss / MB:7.1f} MB ({' + '.join(m.processes)})"

    return [
        "idle memory of the daemon tree (RSS summed; idle_unload_seconds = 5)",
        line("(a) after daemon.ready, before any file", idle.before),
        line("(b) right after the work, model loaded", idle.loaded),
        line("(c) after whisper.workers_unloaded", idle.unloaded),
        f"  (c) − (a) = {growth:+.1f} MB (goal within {GOAL_IDLE_MB:.0f} MB of a daemon without the model): {met}",
    ]


def goals(runs: list[Run]) -> list[str]:
    """The issue's goals: the daemon against the best plain direct configuration, (a) or
    (b); the batched ones, (c) and (d), are shown beside it for what batching itself gives."""
    direct = [r for r in runs if r.label.startswith("(")]
    serial = next((r for r in direct if r.label.startswith("(a)")), None)
    plain = [r for r in direct if r.label.startswith(("(a)", "(b)"))]
    batched = [r for r in direct if r.label.startswith(("(c)", "(d)"))]
    best = max(plain, key=lambda r: r.throughput) if plain else None
    best_batched = max(batched, key=lambda r: r.throughput) if batched else None
    lines = []
    if best is not None:
        lines.append(f"best plain direct: {best.label}: {best.throughput:.1f} audio-s/s")
    if best_batched is not None:
        lines.append(f"best batched direct: {best_batched.label}: {best_batched.throughput:.1f} audio-s/s")
    for run in (r for r in runs if not r.label.startswith("(")):
        kind = run.label.split(":")[0]
        if best is not None:
            share = run.throughput / best.throughput
            met = "yes" if share >= GOAL_OF_BEST else "no"
            lines.append(
                f"daemon {kind} throughput = {run.throughput:.1f} = {share:.0%} of best plain direct "
                f"(goal ≥ {GOAL_OF_BEST:.0%}): {met}"
            )
        if best_batched is not None:
            lines.append(f"daemon {kind} = {run.throughput / best_batched.throughput:.0%} of best batched direct")
        if serial is not None:
            over = run.throughput / serial.throughput
            met = "yes" if over >= GOAL_OVER_SERIAL else "no"
            lines.append(f"daemon {kind} ≥ {GOAL_OVER_SERIAL} × one-at-a-time (a): {over:.2f} × — {met}")
        lines.append(f"daemon {kind} cores busy while files wait: {run.cores_busy:.2f} of {cores()}")
    return lines


def report(runs: list[Run], idle: IdleMemory | None, speech: SpeechSet, rounds: int) -> list[str]:
    """Everything after the machine lines: the table, per-file figures, idle memory, goals."""
    lines: list[str] = []
    if runs:
        if rounds > 1:
            lines.append(f"(each row: the round of median throughput of {rounds})")
        lines += [*table(runs, speech), "", *per_file(runs, speech)]
    if idle is not None:
        lines += ["", *idle_lines(idle)]
    if runs:
        lines += ["", *goals(runs)]
    return [*lines, ""]


# -- main ------------------------------------------------------------------------------


def _rounds(args: argparse.Namespace, speech: SpeechSet, model_path: str, failures: list[str]) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {}
    for n in range(args.rounds):
        if args.only in (None, "direct"):
            for config in configurations(cores()):
                print(f"round {n + 1}: {config.label} …", flush=True)
                results.setdefault(config.label, []).append(run_direct(config, model_path, speech))
        for kind, runner in (("folder", run_folder), ("queue", run_queue)):
            if args.only in (None, kind):
                print(f"round {n + 1}: daemon, {kind} …", flush=True)
                try:
                    with tempfile.TemporaryDirectory(prefix=f"stenod-bench-{kind}-") as tmp:
                        run = runner(speech, args.model_dir, Path(tmp))
                except RunFailed as exc:
                    failures.append(f"round {n + 1}: daemon, {kind}: left out, {exc}")
                    print(failures[-1], flush=True)
                    continue
                results.setdefault(run.label, []).append(run)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 files, about 2 minutes of speech")
    parser.add_argument("--only", choices=["direct", "folder", "queue", "idle"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--speech-dir", type=Path, default=CACHE / "whisper-speech-v1")
    parser.add_argument("--model-dir", type=Path, default=CACHE / "models", help="shared model cache")
    args = parser.parse_args(argv)
    if not Path("bench").is_dir() or not Path("tests").is_dir():
        raise SystemExit("run from the repository root: .venv/bin/python -m bench.bench_whisper")
    speech = speech_set(args.speech_dir, quick=args.quick)
    model = assemble_bundled(args.model_dir)
    lines = machine()
    kinds = sorted({c.path.suffix.lstrip(".") for c in speech.clips})
    lines.append(
        f"speech set: {len(speech.clips)} files, {speech.seconds:.1f} s ({', '.join(kinds)}), longest first: "
        + ", ".join(f"{c.name} {c.seconds:.0f} s" for c in speech.clips)
    )
    print("\n".join(lines), flush=True)
    failures: list[str] = []
    runs = [_median(group) for group in _rounds(args, speech, model.path, failures).values()]
    idle = None
    if args.only in (None, "idle"):
        print("idle memory …", flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix="stenod-bench-idle-") as tmp:
                idle = run_idle(speech, args.model_dir, Path(tmp))
        except RunFailed as exc:
            failures.append(f"idle memory: left out, {exc}")
            print(failures[-1], flush=True)
    print()
    print("\n".join([*lines, *report(runs, idle, speech, args.rounds), *failures]))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (timings on a busy machine are not representative)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
