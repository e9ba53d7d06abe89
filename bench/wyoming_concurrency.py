"""Satellites speaking at once: ``[wyoming] workers`` 1 vs 2 (and 1 with ``keep`` on), for
``bench/bench_wyoming.py --concurrency``.

One ``stenod run`` per configuration, all started before the first command, on the bundled
model, nothing else asked of them. For 1, 4 and 10 clients, every round sends that many
commands at the same moment to one daemon, the daemons taking turns round by round, so
that the machine's noise falls on each alike; each command's time from ``audio-stop`` to
``transcript`` is one sample. Memory is each live worker's resident and unique set (USS:
what the process holds that no other does). With ``keep`` on, the journal write of each
command (``wyoming.command_kept``) is reported beside the latency it is not part of: the
answer goes out first. Prints figures; asserts none.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.wyoming_servers import Answer, ask, start_stenod, wait_serving
from support.harness import Daemon

__all__ = ["Config", "compare"]

CLIENTS = (1, 4, 10)
SAMPLES = 20  # per configuration and client count (rounds = SAMPLES / clients, at least 2)


@dataclass(frozen=True, slots=True)
class Config:
    workers: int
    keep: bool = False

    @property
    def label(self) -> str:
        return f"workers={self.workers} keep={'on' if self.keep else 'off'}"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def _round(port: int, commands: list[tuple[str, bytes]], clients: int, n: int) -> list[Answer | None]:
    batch = [commands[(n * clients + c) % len(commands)][1] for c in range(clients)]
    results = await asyncio.gather(*(ask(port, pcm) for pcm in batch), return_exceptions=True)
    return [r if isinstance(r, Answer) else None for r in results]


def _memory(daemon: Daemon) -> str:
    [ready] = daemon.named("whisper.live_worker_ready")
    parts = []
    for pid in ready["pids"]:
        info = psutil.Process(pid).memory_full_info()
        parts.append(f"{info.rss / 2**20:.0f}/{info.uss / 2**20:.0f}")
    return ", ".join(parts) + " MB (RSS/USS per live worker)"


def _row(label: str, answers: list[Answer | None]) -> str:
    seconds = [a.seconds for a in answers if a is not None]
    failed = sum(a is None for a in answers)
    if not seconds:
        return f"  {label:<22} no answers ({failed} failed)"
    return (
        f"  {label:<22} {len(seconds):>4} {statistics.median(seconds):>9.3f} {p95(seconds):>7.3f} "
        f"{max(seconds):>7.3f} {failed:>6}"
    )


async def compare(tmp: Path, models: Path, commands: list[tuple[str, bytes]], *, beam: int) -> None:
    """Start every configuration, measure them in turns, print a table per client count."""
    configs = (Config(1), Config(2), Config(1, keep=True))
    print(f"\nconcurrent commands: {', '.join(map(str, CLIENTS))} clients speaking at once; "
          f"{psutil.cpu_count()} cores, load {psutil.getloadavg()[0]:.1f} at start")  # fmt: skip
    with contextlib.ExitStack() as stack:
        ports: dict[Config, tuple[Daemon, int]] = {}
        for config in configs:
            folder = tmp / f"stenod-w{config.workers}-{'keep' if config.keep else 'nokeep'}"
            (folder / "inbox").mkdir(parents=True)
            daemon, port, _ = start_stenod(
                folder, models, folder / "inbox", beam_size=beam, workers=config.workers, keep=config.keep
            )
            stack.callback(daemon.terminate, 60)
            await wait_serving(port)
            ports[config] = (daemon, port)
        for config, (daemon, port) in ports.items():
            await _round(port, commands, config.workers, 0)  # first answers (lazy allocations) not counted
            print(f"  {config.label}: {_memory(daemon)}")
        for clients in CLIENTS:
            answers: dict[Config, list[Answer | None]] = {config: [] for config in configs}
            for n in range(max(2, SAMPLES // clients)):
                for config in configs if n % 2 == 0 else configs[::-1]:
                    answers[config] += await _round(ports[config][1], commands, clients, n)
                    await asyncio.sleep(0.3)
            print(f"\n{clients} client(s) at once; load {psutil.getloadavg()[0]:.1f}")
            print(f"  {'configuration':<22} {'n':>4} {'median s':>9} {'p95 s':>7} {'max s':>7} {'failed':>6}")
            for config in configs:
                print(_row(config.label, answers[config]))
        print()
        for config, (daemon, _) in ports.items():
            print(f"  after: {config.label}: {_memory(daemon)}")
            if config.keep and (writes := [e["journal_seconds"] for e in daemon.named("wyoming.command_kept")]):
                print(f"  journal writes (SQLite) after the answer: {len(writes)}, median "
                      f"{statistics.median(writes) * 1000:.1f} ms, p95 {p95(writes) * 1000:.1f} ms")  # fmt: skip
