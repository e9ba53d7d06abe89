"""The journal's share of a job round trip, without a broker. Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_journal [--jobs 4000] [--batch 50]

Drives jobs through the life a queue job with an instant provider has in the journal:
created with its ``accepted`` event, packed into batches, submitted, finished with a
transcript, and its events read from the outbox and deleted, as the relay does. Prints
jobs per second of wall time and the process CPU (writer thread included) per job, the
figure that bounds the daemon's round trips before the broker takes its part.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, NewItem, NewJob

_TRANSCRIPT = {
    "transcript": {
        "text": "hello world, this is a short transcript of a voice memo",
        "language": "en",
        "duration": 3.2,
        "segments": [{"start": 0.0, "end": 3.2, "text": "hello world, this is a short transcript of a voice memo"}],
    }
}


async def run(jobs: int, batch: int, folder: Path) -> tuple[float, float, int]:
    journal = SqliteJournal.open(folder / "journal.db")
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
                            output={"formats": ["txt"]},
                        )
                    )
                    for n in range(start, min(jobs, start + batch))
                )
            )
            item_ids = [view.items[0].item_id for view, _ in created]
            row = await journal.create_batch("echo", item_ids, next_at=0.0)
            await journal.batch_submitted(row.batch_id, {"id": row.batch_id}, next_at=0.0)
            await journal.finish_items(
                [
                    ItemOutcome(i, ItemState.SUCCEEDED, outputs=(f"/srv/in/{n}.txt",), result=_TRANSCRIPT)
                    for n, i in enumerate(item_ids)
                ],
                batch_id=row.batch_id,
            )
            while rows := await journal.outbox_batch(100):
                await journal.outbox_delete([r.seq for r in rows])
                published += len(rows)
        return time.perf_counter() - wall, time.process_time() - cpu, published
    finally:
        journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stenod-bench-journal-") as tmp:
        wall, cpu, events = asyncio.run(run(args.jobs, args.batch, Path(tmp)))
    print(f"journal: {args.jobs} jobs, {events} events in {wall:.2f} s = {args.jobs / wall:.0f} jobs/s")
    print(f"journal CPU per job (event loop + writer thread): {cpu / args.jobs * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
