"""Several instances on one queue and one PostgreSQL journal (issue 16). Prints figures;
asserts nothing.

    .venv/bin/python -m bench.bench_cluster [--requests 2000] [--jobs 2000] [--lease 10]

In one run, side by side:
1. Requests accepted per second (message in, job committed, ``accepted`` event confirmed)
   and full round trips per second with the instant ``echo`` provider, for one instance on
   SQLite, and one, two and three instances on one PostgreSQL database, all consuming the
   same queue, which holds every request when they start (timed from the first commit).
   Goal: PostgreSQL with one instance accepts at least half of SQLite's rate.
2. Takeover: two instances on PostgreSQL, the provider job held by one (a submit that
   does not finish); that one is killed with SIGKILL, and the time until the other holds
   the job is measured, against the goal of ``lease_seconds`` plus one renewal interval.

The machine has 2 cores: several instances share them with RabbitMQ and PostgreSQL, so
more instances cannot go faster here; the figures show what sharing costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.bench_queue import HELD, PACKED, TERMINAL, _count_events, _prepublish
from support.amqp import BROKER_URL, BrokerNames, delete_topology
from support.harness import Daemon, wait_for, write_config
from support.postgres import fresh_database

POOL: dict[str, Any] = {}  # [journal] max_connections, when --pool is given


def _config(home: Path, names: BrokerNames, roots: Path, echo: dict[str, Any], journal: dict[str, Any]) -> Path:
    journal = dict(journal)
    instance = journal.pop("instance_id", None)
    home.mkdir(parents=True, exist_ok=True)
    return write_config(
        home / "stenod.toml",
        top={
            "state_dir": home / "state",
            **({"instance_id": instance} if instance else {}),
            "log_format": "json",
            "default_provider": "echo",
            "pack_window_seconds": 0.05,
            "shutdown_grace_seconds": 5,
        },
        sections={"amqp": names.amqp_section(BROKER_URL, allowed_roots=[roots]), "journal": journal},
        providers={"echo": {"ledger_dir": home, **echo}},
    )


def _first_commit(journal: dict[str, Any], home: Path) -> float:
    if journal.get("url"):
        with psycopg.connect(journal["url"]) as conn:
            row = conn.execute("SELECT MIN(created_at) FROM jobs").fetchone()
    else:
        with sqlite3.connect(f"file:{home / 'state' / 'journal.db'}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT MIN(created_at) FROM jobs").fetchone()
    assert row is not None
    return datetime.fromisoformat(str(row[0]).replace("Z", "+00:00")).timestamp()


async def through_cluster(
    tmp: Path, instances: int, url: str | None, count: int, patterns: list[str], echo: dict[str, Any]
) -> float:
    """Requests per second through ``instances`` daemons that find ``count`` requests waiting."""
    names = BrokerNames.new("bench-cluster")
    roots = tmp / "roots"
    roots.mkdir(parents=True)
    for i in range(count):
        (roots / f"{i}.wav").write_bytes(b"RIFF" + b"\0" * 1000)
    journals = [
        {"backend": "postgresql", "url": url, "instance_id": f"node-{n}", **POOL} if url else {"backend": "sqlite"}
        for n in range(instances)
    ]
    configs = [_config(tmp / f"node-{n}", names, roots, echo, journals[n]) for n in range(instances)]
    daemons = [Daemon(cfg, cfg.parent / "daemon.log").start() for cfg in configs]
    try:
        await asyncio.to_thread(wait_for, lambda: all(d.named("amqp.consuming") for d in daemons), "consumers", 90)
        await asyncio.to_thread(wait_for, lambda: any(d.named("amqp.relay_ready") for d in daemons), "relay", 60)
        started = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            counter = tg.create_task(_count_events(names, patterns, count, started))
            await started.wait()
            for d in daemons:
                d.kill()
            await _prepublish(names, roots, count, f"c{instances}")
            daemons = [Daemon(cfg, cfg.parent / "daemon.log").start() for cfg in configs]
            last = await asyncio.wait_for(counter, timeout=900)
        first = _first_commit(journals[0], tmp / "node-0")
        return count / (last - first)
    finally:
        for d in daemons:
            d.kill()
        delete_topology(names)


def takeover_seconds(tmp: Path, url: str, lease: float) -> float:
    """Seconds from SIGKILL of the instance holding a provider job to another holding it."""
    names = BrokerNames.new("bench-takeover")
    roots = tmp / "roots"
    roots.mkdir(parents=True)
    (roots / "0.wav").write_bytes(b"RIFF" + b"\0" * 1000)
    held = {"max_files": 1, "max_concurrent_jobs": 1, "submit_delay_seconds": 3600}
    configs = [
        _config(
            tmp / f"node-{n}",
            names,
            roots,
            held,
            {"backend": "postgresql", "url": url, "instance_id": f"node-{n}", "lease_seconds": lease},
        )
        for n in range(2)
    ]
    daemons = {f"node-{n}": Daemon(cfg, cfg.parent / "daemon.log").start() for n, cfg in enumerate(configs)}

    def holder() -> str | None:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT holder FROM batches WHERE state NOT IN ('done', 'failed')").fetchone()
        return row[0] if row else None

    try:
        wait_for(lambda: all(d.named("amqp.consuming") for d in daemons.values()), "consumers", 90)
        asyncio.run(_prepublish(names, roots, 1, "takeover"))
        first = wait_for(holder, "a provider job", 60)
        killed = time.monotonic()
        daemons[first].kill()
        wait_for(lambda: holder() not in (None, first), "the takeover", lease * 3 + 30, interval=0.05)
        return time.monotonic() - killed
    finally:
        for d in daemons.values():
            d.kill()
        delete_topology(names)


async def rates(tmp: Path, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    rows = []
    setups: list[tuple[str, int]] = [("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3)]
    for n, (backend, instances) in enumerate(setups):
        with fresh_database("stenod_bench") as url:
            accepted = await through_cluster(
                tmp / f"a{n}",
                instances,
                url if backend == "postgresql" else None,
                args.requests,
                ["job.accepted.#"],
                HELD,
            )
        with fresh_database("stenod_bench") as url:
            trips = await through_cluster(
                tmp / f"t{n}", instances, url if backend == "postgresql" else None, args.jobs, TERMINAL, PACKED
            )
        label = (
            f"{instances} instance{'s' if instances > 1 else ''} on {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}"
        )
        print(f"{label:<28} accepted {accepted:7.0f} req/s   round trips {trips:6.0f} jobs/s", flush=True)
        rows.append((label, accepted, trips))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--takeovers", type=int, default=3)
    parser.add_argument("--pool", type=int, default=None, help="[journal] max_connections (default: stenod's)")
    parser.add_argument("--skip-rates", action="store_true", help="only the takeover measurement")
    args = parser.parse_args()
    if args.pool:
        POOL["max_connections"] = args.pool
    print(f"cores: {os.cpu_count()}; {args.requests} requests, {args.jobs} round trips", flush=True)
    with tempfile.TemporaryDirectory(prefix="stenod-bench-cluster-") as tmp:
        if not args.skip_rates:
            rows = asyncio.run(rates(Path(tmp), args))
            sqlite_rate, pg_rate = rows[0][1], rows[1][1]
            print(
                f"PostgreSQL, one instance, accepts {pg_rate / sqlite_rate:.0%} of SQLite's rate (goal >= 50%)",
                flush=True,
            )
        goal = args.lease + max(1.0, args.lease / 3)
        for n in range(args.takeovers):
            with fresh_database("stenod_bench") as url:
                seconds = takeover_seconds(Path(tmp) / f"k{n}", url, args.lease)
            print(
                f"takeover after SIGKILL: {seconds:5.1f} s (lease {args.lease:.0f} s; goal <= lease + renewal "
                f"interval = {goal:.1f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
