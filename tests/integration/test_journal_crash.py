"""R21: the journal stays consistent across kill -9, and committed state is never lost to one."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

WRITER = """
import asyncio, sys
from pathlib import Path
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.journal import NewItem, NewJob

async def main(path, start):
    journal = SqliteJournal.open(Path(path), outbox=True)
    n = start
    while True:
        batch = [journal.create_job(NewJob(source="crash", task="transcribe", provider="echo",
                                           request_id=f"req-{n + k}",
                                           items=[NewItem(input=f"/in/{n + k}-{i}.wav", name="x.wav")
                                                  for i in range(3)]))
                 for k in range(5)]
        for view, created in await asyncio.gather(*batch):
            print(view.request_id, flush=True)   # only after its COMMIT returned
        n += 5

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_every_reported_commit_survives_random_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    rng = random.Random(20261123)
    reported: set[str] = set()
    start = 0
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(start)], stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.4, 1.2))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        lines = out.split()
        reported.update(lines)
        start += 10_000
    assert len(reported) > 100
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in conn.execute("SELECT request_id FROM jobs")}
        items_per_job = {r[0] for r in conn.execute("SELECT COUNT(*) FROM items GROUP BY job_id")}
        accepted_events = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    assert reported <= stored  # nothing reported committed was lost
    assert items_per_job == {3}  # no job without all its items
    assert accepted_events == jobs  # and none without its accepted event
