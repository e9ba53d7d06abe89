"""What only the PostgreSQL journal does: its schema versions, a database that is away or
refuses us, sessions cut under a running journal, and the CLI reading it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
from typing import Any

import psycopg
import pytest

from stenod.adapters.postgres.journal import PostgresJournal, PostgresOutbox
from stenod.adapters.postgres.schema import MIGRATIONS, SCHEMA_VERSION
from stenod.errors import ConfigError, JournalError, LeaseLost, SchemaTooNew
from stenod.journal import NewItem, NewJob
from support.amqp import BrokerDoor
from support.harness import STENOD, write_config
from support.postgres import ADMIN_URL, database_url, fresh_database, terminate_sessions
from support.server import free_port


def new_job(request_id: str | None = None) -> NewJob:
    return NewJob(
        source="test",
        task="transcribe",
        provider="echo",
        request_id=request_id,
        items=[NewItem(input="/in/a.wav", name="a.wav", path="/in/a.wav")],
    )


def first_value(conn: psycopg.Connection[Any], sql: str) -> Any:
    """The first column of the first row ``sql`` returns (which must return one)."""
    row = conn.execute(sql.encode()).fetchone()
    assert row is not None, sql
    return row[0]


def schema_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(first_value(conn, "SELECT version FROM stenod_schema"))


async def test_a_new_database_gets_the_schema_and_a_reopened_one_keeps_its_jobs():
    with fresh_database() as url:
        journal = await PostgresJournal.open(url)
        view, _ = await journal.create_job(new_job("kept"))
        await journal.aclose()
        assert schema_version(url) == SCHEMA_VERSION == len(MIGRATIONS)
        again = await PostgresJournal.open(url)
        try:
            kept = await again.job_by_request("kept")
            assert kept is not None and kept.job_id == view.job_id
        finally:
            await again.aclose()
        assert schema_version(url) == SCHEMA_VERSION


async def test_instances_starting_together_migrate_once():
    with fresh_database() as url:
        journals = await asyncio.gather(*(PostgresJournal.open(url) for _ in range(4)))
        for journal in journals:
            await journal.aclose()
        with psycopg.connect(url) as conn:
            assert first_value(conn, "SELECT count(*) FROM stenod_schema") == 1


async def test_a_database_from_a_newer_stenod_is_refused_clearly():
    with fresh_database() as url:
        (await PostgresJournal.open(url)).__class__  # noqa: B018 (create the schema)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE stenod_schema SET version = %s", (SCHEMA_VERSION + 1,))
        with pytest.raises(SchemaTooNew) as info:
            await PostgresJournal.open(url)
        assert isinstance(info.value, ConfigError) and "newer stenod" in str(info.value)


async def test_a_missing_database_is_named_at_once_and_the_password_never_shown():
    url = database_url("stenod_no_such_db").replace("postgres@", "postgres:s3cret@")
    started = time.monotonic()
    with pytest.raises(JournalError) as info:
        await PostgresJournal.open(url, reconnect_seconds=30)
    assert time.monotonic() - started < 10  # the server's own refusal is final, no waiting
    assert "stenod_no_such_db" in str(info.value) and "does not exist" in str(info.value)
    assert "s3cret" not in str(info.value)


async def test_a_server_that_is_not_there_is_waited_for_then_reported():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/stenod"
    started = time.monotonic()
    with pytest.raises(JournalError, match=r"cannot be used: .*refused"):
        await PostgresJournal.open(url, reconnect_seconds=2)
    assert 1.5 < time.monotonic() - started < 15


async def test_sessions_cut_under_a_running_journal_cost_nothing():
    # What a restart of the server (or a failover) does to the pool's connections.
    with fresh_database() as url:
        journal = await PostgresJournal.open(url, reconnect_seconds=10)
        try:
            await journal.create_job(new_job("before"))
            assert terminate_sessions(url) >= 1
            _, created = await journal.create_job(new_job("after"))
            assert created and await journal.ping()
            assert {v.request_id for v in await journal.jobs()} == {"before", "after"}
        finally:
            await journal.aclose()


async def test_a_dropped_database_fails_the_health_check():
    with fresh_database() as url:
        journal = await PostgresJournal.open(url, reconnect_seconds=1)
        try:
            assert await journal.ping()
            with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{url.rpartition("/")[2]}" WITH (FORCE)'.encode())
            assert not await journal.ping()
            with pytest.raises(JournalError):
                await journal.create_job(new_job())
        finally:
            await journal.aclose()


async def test_the_cli_lists_jobs_from_the_database_with_the_instance_holding_each(tmp_path, clean_env):
    with fresh_database() as url:
        journal = await PostgresJournal.open(url, instance_id="node-7", lease_seconds=600)
        view, _ = await journal.create_job(new_job("cli"))
        idle, _ = await journal.create_job(new_job("cli-2"))
        await journal.create_batch("echo", [view.items[0].item_id], next_at=0)
        await journal.aclose()
        cfg = write_config(
            tmp_path / "stenod.toml",
            top={"state_dir": tmp_path / "state"},
            sections={"journal": {"backend": "postgresql", "url": url}},
        )
        listed = subprocess.run(  # noqa: ASYNC221 (the CLI, as a person runs it)
            [*STENOD, "jobs", "--config", str(cfg)], capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0 and view.job_id in listed.stdout, listed.stderr
        lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
        assert lines[view.job_id].endswith("@node-7") and "@" not in lines[idle.job_id]
        shown = subprocess.run(  # noqa: ASYNC221
            [*STENOD, "job", view.job_id, "--json", "--config", str(cfg)], capture_output=True, text=True, timeout=60
        )
        data = json.loads(shown.stdout)
        assert data["state"] == "accepted", shown.stderr
        (holder,) = data["held_by"]
        assert holder["instance"] == "node-7" and 500 < holder["lease_until"] - time.time() <= 600
        text = subprocess.run(  # noqa: ASYNC221
            [*STENOD, "job", view.job_id, "--config", str(cfg)], capture_output=True, text=True, timeout=60
        )
        assert "held by node-7: lease for" in text.stdout, text.stderr


def test_postgresql_without_a_url_is_a_configuration_error(tmp_path, clean_env):
    cfg = write_config(
        tmp_path / "stenod.toml", top={"state_dir": tmp_path}, sections={"journal": {"backend": "postgresql"}}
    )
    proc = subprocess.run([*STENOD, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "journal.url" in proc.stderr, proc.stderr[-2000:]


def test_the_url_comes_from_a_credential_and_is_masked_in_the_config(tmp_path, clean_env, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "journal.url").write_text("postgresql://stenod:hunter2@db.lan/stenod\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = write_config(
        tmp_path / "stenod.toml", top={"state_dir": tmp_path}, sections={"journal": {"backend": "postgresql"}}
    )
    proc = subprocess.run([*STENOD, "config", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "db.lan" in proc.stdout and "hunter2" not in proc.stdout


async def test_one_relay_publishes_at_a_time_and_the_next_takes_over_when_it_goes():
    with fresh_database() as url:
        journal = await PostgresJournal.open(url, instance_id="a")
        first, second = PostgresOutbox(url), PostgresOutbox(url)
        try:
            await journal.create_job(new_job("relay-1"))
            assert len(await first.read(0, 10)) == 1  # the leader reads
            assert await second.read(0, 10) == []  # the other stands by
            await first.aclose()  # the leader goes (its session, and the lock, with it)
            # the server frees the lock when its backend has seen the session end: moments later
            for _ in range(50):
                if rows := await second.read(0, 10):
                    break
                await asyncio.sleep(0.1)
            assert len(rows) == 1
        finally:
            await second.aclose()
            await journal.aclose()


async def test_the_relay_reads_rows_that_committed_late_below_one_already_read():
    with fresh_database() as url:
        journal = await PostgresJournal.open(url, instance_id="a")
        outbox = PostgresOutbox(url)
        try:
            with psycopg.connect(url, autocommit=False) as late:
                # a transaction takes a sequence number first and commits last
                late.execute(
                    "INSERT INTO outbox (event_id, job_id, routing_key, body, created_at) "
                    "VALUES ('e-late', 'j-late', 'job.accepted.x', '{}', 'now')"
                )
                await journal.create_job(new_job("relay-2"))
                (row,) = await outbox.read(0, 10)
                late.commit()
            rows = await outbox.read(row.seq, 10)  # "after" a row already published
            assert {r.event_id for r in rows} >= {"e-late"}
        finally:
            await outbox.aclose()
            await journal.aclose()


async def test_a_commit_of_events_by_any_instance_wakes_the_relay():
    with fresh_database() as url:
        other = await PostgresJournal.open(url, instance_id="other")
        outbox = PostgresOutbox(url)
        ready, stopping = asyncio.Event(), asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(outbox.wake_on_commits(ready, stopping))
                await asyncio.wait_for(ready.wait(), 10)  # set once when it starts listening
                ready.clear()
                started = time.monotonic()
                await other.create_job(new_job("wake-1"))
                await asyncio.wait_for(ready.wait(), 5)
                print(f"relay woken {time.monotonic() - started:.3f} s after the commit")
                assert time.monotonic() - started < 1.0
                stopping.set()
        finally:
            await outbox.aclose()
            await other.aclose()


async def test_a_confirmed_event_is_not_published_again_before_the_daemon_deletes_it():
    # Found by the cluster chaos run: every event reached the broker 3 to 9 times, because
    # the reader forgot confirmed rows that the PostgreSQL outbox still returned.
    from stenod.adapters.amqp.relay_worker import OutboxReader

    with fresh_database() as url:
        journal = await PostgresJournal.open(url, instance_id="a")
        outbox = PostgresOutbox(url)
        try:
            for n in range(3):
                await journal.create_job(new_job(f"again-{n}"))
            reader = OutboxReader(outbox.read, lambda seqs: None, floor=outbox.reads_above_floor)
            first = await reader.batch(500)
            assert len(first) == 3
            await reader.confirmed([r.seq for r in first])
            assert await reader.batch(500) == []  # confirmed, not yet deleted: skipped
            await journal.create_job(new_job("again-3"))
            (new,) = await reader.batch(500)
            await journal.outbox_delete([r.seq for r in first])  # the daemon deletes them
            assert [r.seq for r in await reader.batch(500)] == [new.seq]
        finally:
            await outbox.aclose()
            await journal.aclose()


# -- group commit: writes queued together share one transaction ------------------------------


async def test_writes_queued_together_each_get_their_own_answer_when_one_of_them_fails():
    """A group with a write that fails (a holder that lost its lease) is rolled back and
    run again one by one: the failing write gets its error, the others are committed."""
    with fresh_database() as url:
        a = await PostgresJournal.open(url, instance_id="a", lease_seconds=0.3)
        b = await PostgresJournal.open(url, instance_id="b")
        try:
            view, _ = await a.create_job(new_job("packed"))
            batch = await a.create_batch("echo", [view.items[0].item_id], next_at=0.0)
            assert batch is not None
            await asyncio.sleep(0.5)
            assert [t.batch_id for t in await b.claim_batches(["echo"])] == [batch.batch_id]

            results = await asyncio.gather(
                *(a.create_job(new_job(f"before-{n}")) for n in range(10)),
                a.batch_submitted(batch.batch_id, {"id": "remote"}, next_at=0.0),
                *(a.create_job(new_job(f"after-{n}")) for n in range(10)),
                return_exceptions=True,
            )
            assert isinstance(results[10], LeaseLost)
            created = [r for n, r in enumerate(results) if n != 10]
            assert all(isinstance(r, tuple) and r[1] for r in created), created
            with psycopg.connect(url) as conn:
                assert first_value(conn, "SELECT count(*) FROM jobs") == 21
                assert first_value(conn, "SELECT count(*) FROM outbox WHERE routing_key LIKE 'job.accepted.%'") == 21
                assert first_value(conn, "SELECT handle FROM batches") is None  # the fenced write: nothing
        finally:
            await a.aclose()
            await b.aclose()


async def test_one_request_id_twice_in_one_group_is_one_job():
    with fresh_database() as url:
        journal = await PostgresJournal.open(url)
        try:
            first, second = await asyncio.gather(
                journal.create_job(new_job("twice")), journal.create_job(new_job("twice"))
            )
            assert first[0].job_id == second[0].job_id
            assert sorted([first[1], second[1]]) == [False, True]
        finally:
            await journal.aclose()


async def test_a_caller_cancelled_while_its_write_waits_writes_nothing_and_the_others_go_on():
    with fresh_database() as url:
        journal = await PostgresJournal.open(url)
        try:
            writes = [asyncio.create_task(journal.create_job(new_job(f"w-{n}"))) for n in range(30)]
            await asyncio.sleep(0)  # every write queued; the first group under way
            writes[-1].cancel()  # still queued behind the first group
            done = await asyncio.gather(*writes, return_exceptions=True)
            assert isinstance(done[-1], asyncio.CancelledError)
            assert all(isinstance(r, tuple) for r in done[:-1])
            assert await journal.job_by_request("w-29") is None
            assert (await journal.job_by_request("w-28")) is not None
        finally:
            await journal.aclose()


async def test_a_database_that_goes_away_between_the_schema_and_the_instance_lock_is_reported_as_away():
    """Found by a cluster chaos run (seed 1588157081): the run's database sessions were cut
    while a daemon started, between the schema's connection and the instance lock's; the
    lock's psycopg error escaped, a traceback and an exit 1 that did not say the database
    was away. It is a JournalError now (exit 1, ``journal.unavailable``; the restart tries
    again), as when the server cannot be reached at all."""
    door = BrokerDoor(target=_server_address(), admit=1)  # the schema's connection, then none
    door.open()
    try:
        with fresh_database() as url:
            through = f"postgresql://postgres@127.0.0.1:{door.port}/{url.rpartition('/')[2]}"
            with pytest.raises(JournalError, match="went away while opening the journal"):
                await PostgresJournal.open(through, lock_instance=True, reconnect_seconds=1)
    finally:
        door.close()


def _server_address() -> tuple[str, int]:
    url = urllib.parse.urlsplit(ADMIN_URL)
    return url.hostname or "127.0.0.1", url.port or 5432
