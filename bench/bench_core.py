"""Core daemon benchmarks (issue 2). Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_core [--files 1000] [--idle-seconds 30] [--provider whisper]

1. The daemon's CPU use while idle with three watched folders (target: < 1 % of one core).
2. N small audio files dropped at once: each processed exactly once, and the time from
   the last write to the last job accepted.

The offline engine's speed through the daemon against faster-whisper alone is
``bench/bench_whisper.py``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psutil

from support.harness import Daemon, wait_for, write_config
from support.speech import SENTENCES, encode_pcm, synthesise_pcm


def _daemon(tmp: Path, folders: list[Path], provider: str = "whisper", **top: object) -> Daemon:
    cfg = write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json", "log_level": "info", **top},
        watch=[{"path": f, "provider": provider, "settle_seconds": 0.5, "formats": ["txt", "json"]} for f in folders],
    )
    return Daemon(cfg, tmp / "daemon.log").start()


def _cpu_seconds(proc: psutil.Process) -> float:
    total = proc.cpu_times().user + proc.cpu_times().system
    for child in proc.children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def idle_cpu(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        folders = [tmp / f"in{n}" for n in range(3)]
        for f in folders:
            f.mkdir()
        daemon = _daemon(tmp, folders, log_level="info")
        try:
            daemon.wait_ready()
            time.sleep(3)  # let start-up settle (imports, worker pool spawn, first scan)
            proc = psutil.Process(daemon.process.pid)
            before, t0 = _cpu_seconds(proc), time.monotonic()
            time.sleep(seconds)
            used, elapsed = _cpu_seconds(proc) - before, time.monotonic() - t0
        finally:
            daemon.terminate()
    print(
        f"idle CPU, 3 watched folders, {elapsed:.0f} s: {used:.3f} CPU-s = {100 * used / elapsed:.3f} % of one core "
        f"(target < 1 %)"
    )


def _distinct_small_files(directory: Path, count: int) -> list[Path]:
    pcm = synthesise_pcm(SENTENCES[2])
    paths = []
    for n in range(count):
        # A few samples of distinct padding make every file's content (and hash) unique,
        # so no file is answered from another's result.
        pad = n.to_bytes(4, "little") * 4
        path = encode_pcm([pcm + pad], directory / f"clip{n:04d}.wav", fmt="wav")
        paths.append(path)
    return paths


def burst(count: int, provider: str) -> None:
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        staging, inbox = tmp / "staging", tmp / "inbox"
        staging.mkdir()
        inbox.mkdir()
        files = _distinct_small_files(staging, count)
        daemon = _daemon(tmp, [inbox], provider=provider)
        try:
            daemon.wait_ready()
            t0 = time.monotonic()
            for f in files:
                f.rename(inbox / f.name)  # dropped at once: renames, as a copy tool finishing would
            last_write = time.monotonic()
            db = tmp / "state" / "journal.db"

            def counts() -> tuple[int, int]:
                with sqlite3.connect(db) as conn:
                    jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
                    done = conn.execute(
                        "SELECT COUNT(*) FROM jobs WHERE state IN ('succeeded','failed','partial','cancelled')"
                    ).fetchone()[0]
                return jobs, done

            wait_for(lambda: counts()[0] >= count, "all accepted", timeout=600, interval=0.05)
            accepted = time.monotonic()
            wait_for(lambda: counts()[1] >= count, "all finished", timeout=3600, interval=0.5)
            finished = time.monotonic()
            with sqlite3.connect(db) as conn:
                per_input = conn.execute("SELECT input, COUNT(*) FROM items GROUP BY input").fetchall()
                states = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        finally:
            daemon.terminate(timeout=120)
        outputs = sum(1 for p in inbox.iterdir() if p.suffix == ".txt")
        once = sum(1 for _, n in per_input if n == 1)
        print(
            f"burst of {count} small files ({provider}): drop took {last_write - t0:.2f} s; last write → last job "
            f"accepted {accepted - last_write:.2f} s; all finished after {finished - last_write:.1f} s"
        )
        print(
            f"  jobs per input: {once}/{count} exactly once, {len(per_input) - once} more than once; "
            f"states {states}; .txt outputs {outputs}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--provider", default="whisper")
    p.add_argument("--idle-seconds", type=float, default=30)
    p.add_argument("--only", choices=["idle", "burst"])
    args = p.parse_args(argv)
    if args.only in (None, "idle"):
        idle_cpu(args.idle_seconds)
    if args.only in (None, "burst"):
        burst(args.files, args.provider)
    return 0


if __name__ == "__main__":
    sys.exit(main())
