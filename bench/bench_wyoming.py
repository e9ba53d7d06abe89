"""Voice-command latency: stenod's Wyoming listener vs. the Home Assistant add-on
(``wyoming-faster-whisper`` 3.8.1), side by side in one run, on the bundled model.

Each command (2–4 s, spoken by Festival) goes to both servers in turn, alternating which
goes first, so machine noise falls on both alike. The time is from ``audio-stop`` written
to ``transcript`` read. Two phases: idle, then busy (stenod transcribing a long file from
a watched folder, which loads the machine for both servers). Prints figures; asserts none.

    .venv/bin/python -m bench.bench_wyoming [--rounds 20] [--long-seconds 600]

``--concurrency`` measures instead what several satellites speaking at once get from stenod
with one or two live workers (and with ``keep`` on): :mod:`bench.wyoming_concurrency`.

    .venv/bin/python -m bench.bench_wyoming --concurrency
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from bench.wyoming_concurrency import compare
from bench.wyoming_servers import (
    ADDON_VERSION,
    Addon,
    Answer,
    ask,
    ask_pool,
    ensure_addon_venv,
    start_stenod,
    wait_serving,
)
from stenod_whisper.model import BUNDLED, assemble_bundled
from stenod_whisper.settings import cpu_count
from support.harness import Daemon, wait_for
from support.speech import SENTENCES, festival_pcm, long_speech

COMMANDS = (
    "turn on the kitchen light",
    "make the living room warmer",
    "what is the weather like tomorrow",
    "open the garage door",
    "play some music in the living room",
    "switch off all the lights downstairs",
    "lock the front door",
    "start the vacuum cleaner in the hallway",
    "close the curtains in the bedroom",
    "turn the television off",
    "remind me to water the plants",
    "dim the lights in the dining room",
)


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


def spoken() -> list[tuple[str, bytes]]:
    """The commands that last 2–4 s in Festival's voice."""
    out = [(text, festival_pcm(text)) for text in COMMANDS]
    return [(t, pcm) for t, pcm in out if 2.0 <= len(pcm) / 32000 <= 4.0] or out


async def phase(
    servers: dict[str, int], commands: list[tuple[str, bytes]], rounds: int, until: float | None = None
) -> dict[str, list[Answer | None]]:
    """``rounds`` commands to each server, alternating the order; stops early at ``until``."""
    results: dict[str, list[tuple[str, Answer | None]]] = {name: [] for name in servers}
    names = list(servers)
    for n in range(rounds):
        if until is not None and time.monotonic() > until:
            break
        text, pcm = commands[n % len(commands)]
        for name in names if n % 2 == 0 else names[::-1]:
            try:
                answer: Answer | None = await ask(servers[name], pcm)
            except (RuntimeError, ConnectionError, TimeoutError) as exc:
                print(f"  {name}: {exc}")
                answer = None
            results[name].append((text, answer))
            await asyncio.sleep(0.2)
    for name, rows in results.items():
        wrong = [(t, a.text) for t, a in rows if a is not None and words(a.text) != t]
        if wrong:
            print(f"  {name}: {len(wrong)} of {len(rows)} heard differently, e.g. {wrong[0]}")
    return {name: [a for _, a in rows] for name, rows in results.items()}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def summary(title: str, results: dict[str, list[Answer | None]]) -> dict[str, float]:
    print(f"\n{title}")
    print(f"  {'server':<28} {'n':>3} {'median s':>9} {'p95 s':>7} {'failed':>6}")
    medians = {}
    for name, answers in results.items():
        seconds = [a.seconds for a in answers if a is not None]
        if not seconds:
            print(f"  {name:<28} no answers")
            continue
        medians[name] = statistics.median(seconds)
        failed = sum(a is None for a in answers)
        print(f"  {name:<28} {len(seconds):>3} {medians[name]:>9.3f} {p95(seconds):>7.3f} {failed:>6}")
    return medians


async def busy_files(daemon: Daemon, inbox: Path, tmp: Path, seconds: float, count: int) -> None:
    """Drop ``count`` long recordings (each different: stenod would reuse a copy's result) into
    stenod's folder and wait until workers are on them."""
    for n in range(count):
        path, _ = long_speech(tmp / f"lecture-{n}.flac", seconds, sentences=SENTENCES[n:] + SENTENCES[:n])
        path.rename(inbox / path.name)
    await asyncio.to_thread(
        wait_for, lambda: len(daemon.named("job.accepted", since_start=True)) >= count, "the long files taken", 120
    )
    await asyncio.sleep(3.0)  # the files decoded and the engines on them


def renice_batch_workers(daemon: Daemon, niceness: int) -> list[int]:
    """Set the batch workers' niceness (an experiment: stenod runs them at 10 beside the live
    worker); lowering it needs root. Returns their pids."""
    [ready] = daemon.named("whisper.live_worker_ready")
    workers = [p for p in psutil.Process(daemon.process.pid).children() if p.pid not in ready["pids"]]
    for worker in workers:
        worker.nice(niceness)
    return [w.pid for w in workers]


async def through_the_pool(url: str, commands: list[tuple[str, bytes]], rounds: int) -> None:
    """A few commands through the batch workers (``/asr``), for the priority-lane comparison."""
    seconds = []
    for n in range(rounds):
        answer = await ask_pool(url, commands[n % len(commands)][1], patience_seconds=60.0)
        seconds.append(answer.seconds if answer else None)
    shown = ", ".join(f"{s:.2f}" if s is not None else "> 60" for s in seconds)
    print(f"  stenod /asr (a job on the batch workers, as a priority lane would run it): {shown} s")


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="stenod-bench-wyoming-"))
    models = tmp / "models"
    assemble_bundled(models)
    model = models / BUNDLED.folder
    threads = cpu_count()
    if args.concurrency:
        try:
            await compare(tmp, models, spoken(), beam=args.beam_size)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        return
    python = ensure_addon_venv(Path(args.addon_venv))
    inbox = tmp / "inbox"
    inbox.mkdir()
    print(f"model {model}; {os.cpu_count()} cores; beam {args.beam_size}; {threads} threads each; int8")
    commands = spoken()
    print(f"{len(commands)} commands, {min(len(p) for _, p in commands) / 32000:.1f}–"
          f"{max(len(p) for _, p in commands) / 32000:.1f} s")  # fmt: skip
    (tmp / "stenod").mkdir()
    daemon, port, url = start_stenod(tmp / "stenod", models, inbox, beam_size=args.beam_size)
    addon = Addon(python, model, tmp / "addon", beam_size=args.beam_size, threads=threads, log=tmp / "addon.log")
    try:
        await wait_serving(addon.port)
        servers = {f"wyoming-faster-whisper {ADDON_VERSION}": addon.port, "stenod [wyoming]": port}
        await phase(servers, commands, 2)  # first answers (lazy allocations) not counted
        idle = summary("idle", await phase(servers, commands, args.rounds))
        await busy_files(daemon, inbox, tmp, args.long_seconds, args.long_files)
        if args.batch_nice is not None:
            print(f"  batch workers {renice_batch_workers(daemon, args.batch_nice)} reniced to {args.batch_nice}")
        until = time.monotonic() + args.long_seconds / 8  # well before the files are done
        results = await phase(servers, commands, args.rounds, until=until)
        if any(inbox.glob("lecture-*.txt")):
            print("  (a long file finished during the busy phase: raise --long-seconds)")
        busy = summary(f"busy: stenod transcribing {args.long_files} long file(s) from a folder", results)
        if args.pool_rounds:
            await through_the_pool(url, commands, args.pool_rounds)
    finally:
        addon.stop()
        daemon.terminate(timeout=60)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    stenod, theirs = "stenod [wyoming]", f"wyoming-faster-whisper {ADDON_VERSION}"
    if stenod in idle and theirs in idle and stenod in busy and theirs in busy:
        print(f"\ngoal idle: stenod median {idle[stenod]:.3f} s ≤ add-on {idle[theirs]:.3f} s: "
              f"{'met' if idle[stenod] <= idle[theirs] else 'not met'}")  # fmt: skip
        for what, reference in (("idle", idle[theirs]), ("busy", busy[theirs])):
            print(f"goal busy: stenod busy median {busy[stenod]:.3f} s ≤ 1.5 × add-on {what} {reference:.3f} s: "
                  f"{'met' if busy[stenod] <= 1.5 * reference else 'not met'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="commands per server and phase")
    parser.add_argument("--beam-size", type=int, default=5, help="both servers (the add-on's default on x86)")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="the long files of the busy phase")
    parser.add_argument("--long-files", type=int, default=1, help="long files at once (2 fills both workers)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, the model)")
    parser.add_argument("--batch-nice", type=int, help="experiment: renice stenod's batch workers (root)")
    parser.add_argument("--concurrency", action="store_true", help="1 vs 2 live workers, 1/4/10 clients at once")
    parser.add_argument("--pool-rounds", type=int, default=3, help="busy commands through /asr (0: none)")
    parser.add_argument(
        "--addon-venv", default=str(Path(tempfile.gettempdir()) / "stenod-bench-addon-venv"),
        help="where the add-on is installed from PyPI (reused between runs)",
    )  # fmt: skip
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
