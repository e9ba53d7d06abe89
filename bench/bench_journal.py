"""The journal's share of a job round trip, without a broker, on SQLite and on PostgreSQL
side by side. Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_journal [--jobs 4000] [--batch 50] [--postgres URL]

PostgreSQL: a database of its own is made on the server of ``--postgres`` (default: the
test setup's, postgres@127.0.0.1:5432) and dropped afterwards.

Drives jobs through the life a queue job with an instant provider has in the journal:
created with its ``accepted`` event, packed into batches, submitted, finished with a
transcript, and its events read from the outbox and deleted, as the relay does. Prints
jobs per second of wall time and the process CPU (writer thread included) per job, the
figure that bounds the daemon's round trips before the broker takes its part. On
PostgreSQL the server's own CPU (another process) is not in that figure.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from stenod.adapters.postgres.journal import PostgresJournal
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, Journal, NewItem, NewJob, OutputFile
from stenod.output_spec import OutputSpec


def output_file(path: str) -> OutputFile:
    """A file as the writers report one (these tests write none)."""
    return OutputFile(path, path, size=1, mtime_ns=1)


_TRANSCRIPT = {
    "transcript": {
        "text": "hello world, this is a short transcript of a voice memo",
        "language": "en",
        "duration": 3.2,
        "segments": [{"start": 0.0, "end": 3.2, "text": "hello world, this is a short transcript of a voice memo"}],
    }
}


async def run(jobs: int, batch: int, journal: Journal) -> tuple[float, float, int]:
    published = 0
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, jobs, batch):
            created = await asyncio.gather(
                *(
                    journal.create_job(
                        NewJob(
                            source="amqp",
                            task="transcribe",
                            provider="echo",
                            items=[NewItem(input=f"/srv/in/{n}.wav", name=f"{n}.wav", path=f"/srv/in/{n}.wav", size=1)],
                            request_id=f"r-{n}",
                            reply_to="amq.gen-reply",
                            correlation_id=f"c-{n}",
                            output=OutputSpec(formats=("txt",)),
                        )
                    )
                    for n in range(start, min(jobs, start + batch))
                )
            )
            item_ids = [view.items[0].item_id for view, _ in created]
            row = await journal.create_batch("echo", item_ids, next_at=0.0)
            assert row is not None
            await journal.batch_submitted(row.batch_id, {"id": row.batch_id}, next_at=0.0)
            await journal.finish_items(
                [
                    ItemOutcome(i, ItemState.SUCCEEDED, outputs=(output_file(f"/srv/in/{n}.txt"),), result=_TRANSCRIPT)
                    for n, i in enumerate(item_ids)
                ],
                batch_id=row.batch_id,
            )
            while rows := await journal.outbox_batch(100):
                await journal.outbox_delete([r.seq for r in rows])
                published += len(rows)
        return time.perf_counter() - wall, time.process_time() - cpu, published
    finally:
        await journal.aclose()


async def on_sqlite(jobs: int, batch: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory(prefix="stenod-bench-journal-") as tmp:
        return await run(jobs, batch, SqliteJournal.open(Path(tmp) / "journal.db"))


async def on_postgres(jobs: int, batch: int, admin_url: str) -> tuple[float, float, int]:
    name = f"stenod_bench_{uuid.uuid4().hex[:8]}"
    base = admin_url.rpartition("/")[0]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        return await run(jobs, batch, await PostgresJournal.open(f"{base}/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    results = {
        "sqlite": asyncio.run(on_sqlite(args.jobs, args.batch)),
        "postgresql": asyncio.run(on_postgres(args.jobs, args.batch, args.postgres)),
    }
    print(f"{args.jobs} jobs through the journal, {args.batch} a batch")
    print(f"{'backend':<12} {'jobs/s':>8} {'events':>7} {'CPU ms/job (stenod)':>20}  vs SQLite")
    base = args.jobs / results["sqlite"][0]
    for backend, (wall, cpu, events) in results.items():
        rate = args.jobs / wall
        print(f"{backend:<12} {rate:>8.0f} {events:>7} {cpu / args.jobs * 1e3:>20.3f}  {rate / base:.2f}x")


if __name__ == "__main__":
    main()
