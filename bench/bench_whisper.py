"""The offline engine's speed through stenod against faster-whisper alone (issue 13).
Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_whisper [--quick] [--only direct|folder|queue|idle]
                                            [--rounds N] [--speech-dir DIR] [--model-dir DIR]

On one speech set (``bench/whisper_speech.py``: about 8 minutes of Festival English in
8 files of 30 s to 3.7 min, mixed formats; ``--quick``: 3 files, about 2 minutes), with
the bundled Whisper base model, int8 on the CPU:

- direct (``bench/whisper_direct.py``): faster-whisper without stenod, (a) one process on
  all cores, one file at a time, (b) one single-threaded process per core, (c) and (d) the
  same with ``BatchedInferencePipeline`` (batch 8) for files of 60 s or more;
- folder: ``stenod run`` with its default whisper settings, every file renamed into the
  watched inbox at once, timed from the drop to the last ``.txt``;
- queue: the same daemon setup fed through RabbitMQ (127.0.0.1:5672, guest), one request
  per file, timed from the first publish to the last ``succeeded`` event;
- idle: the daemon's memory before any file, with the model loaded, and after the idle
  unload (``idle_unload_seconds = 5``).

Per configuration: throughput (audio seconds per wall second), real-time factor per file,
WER over the set, peak RSS summed over the process tree (the daemon with its workers and
relay; for direct runs the workers only), and cores busy (CPU seconds of that tree per
wall second). The daemons are started, and given a short clip that starts their workers,
before the clock runs: model loading is reported apart in both cases. Files are handed out
longest first everywhere (the daemon's own start order is printed). With ``--rounds N``
everything runs N times interleaved and the round of median throughput is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import psutil

from bench.whisper_direct import FileRun, Run, TreeSampler, configurations, run_direct, tree_of
from bench.whisper_speech import Clip, SpeechSet, speech_set, word_error_rate
from stenod_whisper.model import assemble_bundled
from tests.amqp_support import BROKER_URL, BrokerNames, Client, delete_topology
from tests.e2e.harness import Daemon, wait_for, write_config

CACHE: Final = Path.home() / ".cache" / "stenod-bench"
FORMATS: Final = ["txt", "json"]
GOAL_OF_BEST: Final = 0.95
GOAL_OVER_SERIAL: Final = 1.5
GOAL_IDLE_MB: Final = 30.0
MB: Final = 1024 * 1024


def cores() -> int:
    return len(os.sched_getaffinity(0))


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- daemons -------------------------------------------------------------------------


def _start_daemon(tmp: Path, model_dir: Path, *, whisper: dict[str, Any] | None = None, **config: Any) -> Daemon:
    path = write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json", "log_level": "info"},
        providers={"whisper": {"model_dir": model_dir, **(whisper or {})}},
        **config,
    )
    daemon = Daemon(path, tmp / "daemon.log").start()
    daemon.wait_ready(timeout=180)
    return daemon


def _stop(daemon: Daemon) -> None:
    if daemon.alive:
        try:
            daemon.terminate(timeout=60)
        finally:
            daemon.kill()


def _pid(daemon: Daemon) -> int:
    assert daemon.proc is not None
    return daemon.proc.pid


def _workers_loaded(daemon: Daemon) -> None:
    """Wait until every whisper worker holds the model: a worker loads it when the pool
    starts, and the warm-up file started the pool, but only one worker transcribed it."""
    workers = int(daemon.named("whisper.ready")[-1]["workers"])
    big = 100 * MB  # a worker without the model is a bare interpreter, well under this

    def loaded() -> bool:
        return sum(1 for p in tree_of(_pid(daemon))()[1:] if _rss(p) > big) >= workers

    wait_for(loaded, f"{workers} loaded whisper workers", timeout=120, interval=0.2)


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:  # it just exited
        return 0


def _started_at(state: Path, names: list[str]) -> dict[str, float]:
    """When each file's provider job was created: the dispatcher creates one only when a
    worker is free, so this is when the file stopped waiting."""
    with sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT i.input, b.created_at FROM items i JOIN batches b ON b.id = i.batch_id").fetchall()
    found = {Path(item).name: _epoch(created) for item, created in rows}
    return {name: found[name] for name in names}


def _finished_at(daemon: Daemon, names: list[str]) -> dict[str, float]:
    found = {Path(e["input"]).name: _epoch(e["timestamp"]) for e in daemon.named("item.succeeded")}
    return {name: found[name] for name in names}


def _daemon_run(
    label: str, speech: SpeechSet, daemon: Daemon, state: Path, outputs: Path, timing: tuple[float, dict[str, float]]
) -> Run:
    """A daemon run from its timing (start, output time per file) and its journal and log."""
    t0, done = timing
    names = [c.name for c in speech.clips]
    started, finished = _started_at(state, names), _finished_at(daemon, names)
    files = [
        FileRun(
            c.name,
            c.seconds,
            finished[c.name] - started[c.name],
            (outputs / f"{c.path.stem}.txt").read_text(),
            latency=done[c.name] - t0,
        )
        for c in speech.clips
    ]
    order = ", ".join(sorted(names, key=started.__getitem__))
    return Run(
        label, max(done.values()) - t0, files, 0, 0.0, notes=[f"the daemon started the files in this order: {order}"]
    )


# -- folder ----------------------------------------------------------------------------


def _drop(clip: Clip, staging: Path, inbox: Path) -> None:
    # Copied beside the inbox first, then renamed in: a whole file appears at once.
    shutil.copy2(clip.path, staging / clip.name)
    os.rename(staging / clip.name, inbox / clip.name)


def _outputs(inbox: Path, clips: tuple[Clip, ...] | list[Clip], daemon: Daemon) -> dict[str, float]:
    """Wait for every clip's ``.txt``; when each appeared."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 3600
    while len(seen) < len(clips):
        for clip in clips:
            if clip.name not in seen and (inbox / f"{clip.path.stem}.txt").exists():
                seen[clip.name] = time.time()
            elif (inbox / f"{clip.path.stem}.error.json").exists():
                raise RuntimeError(f"{clip.name} failed: {(inbox / f'{clip.path.stem}.error.json').read_text()}")
        if not daemon.alive or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon stopped or stalled; log: {daemon.log_path}")
        time.sleep(0.05)
    return seen


def run_folder(speech: SpeechSet, model_dir: Path, tmp: Path) -> Run:
    inbox, staging = tmp / "inbox", tmp / "staging"
    inbox.mkdir(parents=True)
    staging.mkdir()
    rule = {"path": inbox, "provider": "whisper", "settle_seconds": 0.5, "formats": FORMATS}
    daemon = _start_daemon(tmp, model_dir, watch=[rule])
    try:
        cold = time.time()
        _drop(speech.warmup, staging, inbox)
        warm = _outputs(inbox, [speech.warmup], daemon)[speech.warmup.name] - cold
        _workers_loaded(daemon)
        for clip in speech.clips:
            shutil.copy2(clip.path, staging / clip.name)
        with TreeSampler(tree_of(_pid(daemon))) as sampler:
            t0 = time.time()
            for clip in speech.clips:
                os.rename(staging / clip.name, inbox / clip.name)
            done = _outputs(inbox, speech.clips, daemon)
        run = _daemon_run("folder: stenod run, inbox", speech, daemon, tmp / "state", inbox, (t0, done))
    finally:
        _stop(daemon)
    run.peak_rss, run.cpu_seconds = sampler.peak_rss, sampler.cpu_seconds
    run.notes.append(f"warm-up clip ({speech.warmup.seconds:.0f} s, starts the workers): {warm:.1f} s from drop")
    return run


# -- queue -----------------------------------------------------------------------------


def _request(client: Client, request_id: str, path: Path) -> None:
    client.publish(
        {"request_id": request_id, "inputs": [{"path": str(path)}], "output": {"formats": FORMATS}},
        content_type="application/json",
    )


def _final_events(client: Client, queue: str, request_ids: set[str]) -> dict[str, float]:
    """Wait for the final event of every request; when each arrived."""
    arrived: dict[str, float] = {}
    deadline = time.monotonic() + 3600
    for method, _, body in client.ch.consume(queue, auto_ack=True, inactivity_timeout=0.5):
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the final events")
        if method is None:
            continue
        data = json.loads(body)["data"]
        if data["request_id"] in request_ids and data["state"] in ("failed", "partial", "cancelled", "rejected"):
            raise RuntimeError(f"request {data['request_id']} ended {data['state']}: {data.get('error')}")
        if data["request_id"] in request_ids and data["state"] == "succeeded":
            arrived[data["request_id"]] = time.time()
            if len(arrived) == len(request_ids):
                break
    client.ch.cancel()
    return arrived


def run_queue(speech: SpeechSet, model_dir: Path, tmp: Path) -> Run:
    roots = tmp / "roots"
    roots.mkdir(parents=True)
    for clip in (*speech.clips, speech.warmup):
        shutil.copy2(clip.path, roots / clip.name)
    names = BrokerNames.new("bench-whisper")
    amqp = names.amqp_section(BROKER_URL, allowed_roots=[roots])
    daemon = _start_daemon(tmp, model_dir, sections={"amqp": amqp})
    client: Client | None = None
    try:
        wait_for(lambda: daemon.named("amqp.consuming") and daemon.named("amqp.relay_ready"), "the queue", 120)
        client = Client(names)
        events = client.bind_events("job.#")
        tag = uuid.uuid4().hex[:8]
        cold = time.time()
        _request(client, f"{tag}-warmup", roots / speech.warmup.name)
        warm = _final_events(client, events, {f"{tag}-warmup"})[f"{tag}-warmup"] - cold
        _workers_loaded(daemon)
        ids = {f"{tag}-{clip.name}": clip.name for clip in speech.clips}
        with TreeSampler(tree_of(_pid(daemon))) as sampler:
            t0 = time.time()
            for request_id, name in ids.items():
                _request(client, request_id, roots / name)
            arrived = _final_events(client, events, set(ids))
        done = {ids[request_id]: at for request_id, at in arrived.items()}
        run = _daemon_run("queue: stenod run, RabbitMQ", speech, daemon, tmp / "state", roots, (t0, done))
    finally:
        if client is not None:
            client.close()
        _stop(daemon)
        delete_topology(names)
    run.peak_rss, run.cpu_seconds = sampler.peak_rss, sampler.cpu_seconds
    run.notes.append(f"warm-up clip ({speech.warmup.seconds:.0f} s, starts the workers): {warm:.1f} s from publish")
    return run


# -- idle memory -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    rss: int
    processes: tuple[str, ...]  # what each process of the tree is


@dataclass(frozen=True, slots=True)
class IdleMemory:
    before: Memory  # after daemon.ready, before any file: no model
    loaded: Memory  # right after the work
    unloaded: Memory  # after whisper.workers_unloaded


def _kind(proc: psutil.Process) -> str:
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    for marker, kind in (("stenod run", "daemon"), ("spawn_main", "worker"), ("resource_tracker", "resource tracker")):
        if marker in command:
            return kind
    return str(proc.name())


def _memory(pid: int) -> Memory:
    """Median of five samples of the tree's summed RSS, 0.2 s apart."""
    totals = []
    for _ in range(5):
        totals.append(sum(_rss(p) for p in tree_of(pid)()))
        time.sleep(0.2)
    return Memory(int(statistics.median(totals)), tuple(_kind(p) for p in tree_of(pid)()))


def run_idle(speech: SpeechSet, model_dir: Path, tmp: Path) -> IdleMemory:
    inbox, staging = tmp / "inbox", tmp / "staging"
    inbox.mkdir(parents=True)
    staging.mkdir()
    rule = {"path": inbox, "provider": "whisper", "settle_seconds": 0.5, "formats": FORMATS}
    daemon = _start_daemon(tmp, model_dir, watch=[rule], whisper={"idle_unload_seconds": 5})
    try:
        time.sleep(3)  # start-up settles: first scan, imports done lazily
        before = _memory(_pid(daemon))
        work = sorted(speech.clips, key=lambda c: c.seconds)[: cores()]
        for clip in work:
            _drop(clip, staging, inbox)
        _outputs(inbox, work, daemon)
        loaded = _memory(_pid(daemon))
        wait_for(lambda: daemon.named("whisper.workers_unloaded"), "the idle unload", timeout=120)
        time.sleep(2)  # the pool is stopped and joined off the event loop
        unloaded = _memory(_pid(daemon))
    finally:
        _stop(daemon)
    return IdleMemory(before, loaded, unloaded)


# -- report ----------------------------------------------------------------------------


def machine() -> list[str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown CPU",
    )
    libraries = ", ".join(f"{d} {version(d)}" for d in ("faster-whisper", "ctranslate2", "av", "onnxruntime"))
    return [
        f"machine: {cores()} cores (affinity), {model}; load average now {os.getloadavg()[0]:.2f}",
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
    direct = [r for r in runs if r.label.startswith("(")]
    serial = next((r for r in direct if r.label.startswith("(a)")), None)
    lines = []
    best = max(direct, key=lambda r: r.throughput) if direct else None
    if best is not None:
        lines.append(f"best direct: {best.label}: {best.throughput:.1f} audio-s/s")
    for run in (r for r in runs if not r.label.startswith("(")):
        kind = run.label.split(":")[0]
        if best is not None:
            share = run.throughput / best.throughput
            met = "yes" if share >= GOAL_OF_BEST else "no"
            lines.append(
                f"daemon {kind} throughput = {run.throughput:.1f} = {share:.0%} of best direct "
                f"(goal ≥ {GOAL_OF_BEST:.0%}): {met}"
            )
        if serial is not None:
            over = run.throughput / serial.throughput
            met = "yes" if over >= GOAL_OVER_SERIAL else "no"
            lines.append(f"daemon {kind} ≥ {GOAL_OVER_SERIAL} × one-at-a-time (a): {over:.2f} × — {met}")
        lines.append(f"daemon {kind} cores busy while files wait: {run.cores_busy:.2f} of {cores()}")
    return lines


# -- main ------------------------------------------------------------------------------


def _rounds(args: argparse.Namespace, speech: SpeechSet, model_path: str) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {}
    for n in range(args.rounds):
        if args.only in (None, "direct"):
            for config in configurations(cores()):
                print(f"round {n + 1}: {config.label} …", flush=True)
                results.setdefault(config.label, []).append(run_direct(config, model_path, speech))
        for kind, runner in (("folder", run_folder), ("queue", run_queue)):
            if args.only in (None, kind):
                print(f"round {n + 1}: daemon, {kind} …", flush=True)
                with tempfile.TemporaryDirectory(prefix=f"stenod-bench-{kind}-") as tmp:
                    run = runner(speech, args.model_dir, Path(tmp))
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
    runs = [_median(group) for group in _rounds(args, speech, model.path).values()]
    idle = None
    if args.only in (None, "idle"):
        print("idle memory …", flush=True)
        with tempfile.TemporaryDirectory(prefix="stenod-bench-idle-") as tmp:
            idle = run_idle(speech, args.model_dir, Path(tmp))
    print()
    print("\n".join(lines))
    if runs:
        if args.rounds > 1:
            print(f"(each row: the round of median throughput of {args.rounds})")
        print("\n".join(table(runs, speech)), "", "\n".join(per_file(runs, speech)), sep="\n")
    if idle is not None:
        print("", "\n".join(idle_lines(idle)), sep="\n")
    if runs:
        print("", "\n".join(goals(runs)), sep="\n")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (timings on a busy machine are not representative)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
