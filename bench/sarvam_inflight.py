"""Benchmark: many jobs in flight against the fake Sarvam server.

Starts the fake Sarvam server and ``stenod run`` (watching an inbox) as processes, drops
``--files`` short recordings at once, and keeps every Sarvam job running for
``--job-seconds`` while the daemon polls every ``--poll-seconds``. Prints the daemon's
peak resident memory, its CPU time per status call, and whether any job was polled
more often than the interval allows (from the fake's per-job call timestamps).

    .venv/bin/python -m bench.sarvam_inflight --files 10000 --poll-seconds 5 --job-seconds 60

The issue's targets: under 300 MB resident; no status call sooner than the interval.
Files are packed by the daemon into Sarvam jobs of up to 20, so 10,000 files are 500
Sarvam jobs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
import wave
from collections import Counter
from pathlib import Path

import httpx
import psutil

from support.harness import Daemon, fake_server

KEY = "bench-sarvam-key"


def make_wav(path: Path, index: int, seconds: float = 0.1) -> None:
    """A short WAV whose content is unique (stenod never transcribes the same content twice)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(index.to_bytes(4, "little") + b"\0\0" * int(16_000 * seconds))


def write_config(folder: Path, url: str, poll: float, files: int) -> Path:
    config = folder / "stenod.toml"
    config.write_text(
        f"""
state_dir = "{folder / "state"}"
log_format = "json"

[[watch]]
path = "{folder / "inbox"}"
provider = "sarvam"
language = "hi-IN"
formats = ["json"]
settle_seconds = 0.5

[providers.sarvam]
api_key = "{KEY}"
base_url = "{url}"
poll_interval_seconds = {poll}
max_concurrent_jobs = {max(1, files)}
"""
    )
    return config


def log_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def min_gaps(status_calls: dict[str, list[float]]) -> list[float]:
    gaps = []
    for calls in status_calls.values():
        ordered = sorted(calls)
        gaps += [b - a for a, b in itertools.pairwise(ordered)]
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    parser.add_argument("--job-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="stenod-bench-") as tmp,
        fake_server("tests.fakes.sarvam", "--api-key", KEY) as url,
    ):
        folder = Path(tmp)
        (folder / "inbox").mkdir()
        staging = folder / "staging"
        staging.mkdir()
        httpx.post(f"{url}/__fake__/config", json={"seconds_to_complete": args.job_seconds}).raise_for_status()
        for index in range(args.files):
            make_wav(staging / f"rec{index:05d}.wav", index)
        daemon = Daemon(write_config(folder, url, args.poll_seconds, args.files), folder / "daemon.log")
        try:
            daemon.start().wait_ready()
            process = psutil.Process(daemon.process.pid)
            started = time.monotonic()
            for path in staging.iterdir():
                os.replace(path, folder / "inbox" / path.name)
            peak_rss, done, failed = 0, 0, 0
            while time.monotonic() - started < args.timeout:
                peak_rss = max(peak_rss, process.memory_info().rss)
                outputs = [p.name for p in (folder / "inbox").iterdir() if p.suffix == ".json"]
                failed = sum(1 for name in outputs if name.endswith(".error.json"))
                done = len(outputs) - failed
                if done + failed >= args.files:
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            problems = Counter(
                f"{e.get('event')}: {e.get('error') or e.get('code') or ''}"[:160]
                for e in log_lines(folder / "daemon.log")
                if e.get("level") in ("warning", "error")
            )
            cpu = process.cpu_times()
            cpu_seconds = cpu.user + cpu.system
        finally:
            daemon.kill()
        stats = httpx.get(f"{url}/__fake__/stats", timeout=60).json()
    calls = sum(len(v) for v in stats["status_calls"].values())
    gaps = min_gaps(stats["status_calls"])
    # Gaps are measured at the fake (arrival times), so they include its queueing jitter.
    too_soon = [g for g in gaps if g < args.poll_seconds * 0.99]
    clearly_too_soon = [g for g in gaps if g < args.poll_seconds * 0.9]
    print(f"files: {args.files} (transcribed {done}, failed {failed}) in {elapsed:.0f} s")
    print(f"sarvam jobs created: {stats['jobs_created']}, started: {stats['jobs_started']}")
    print(f"daemon peak resident memory: {peak_rss / 1e6:.0f} MB (target < 300 MB)")
    print(
        f"daemon CPU time: {cpu_seconds:.1f} s for {calls} status calls "
        f"= {1000 * cpu_seconds / max(1, calls):.2f} ms per status call (all daemon work included)"
    )
    shortest = min(gaps) if gaps else float("nan")
    print(
        f"shortest gap between status calls of one job: {shortest:.2f} s (interval {args.poll_seconds} s); "
        f"calls sooner than the interval: {len(too_soon)} (more than 10 % sooner: {len(clearly_too_soon)})"
    )
    for problem, count in problems.most_common(10):
        print(f"daemon {problem} ×{count}")
    sys.exit(0 if done >= args.files else 1)


if __name__ == "__main__":
    main()
