"""A daemon killed again and again with a request in flight (a crash loop) does not have
the broker dead-letter that request: RabbitMQ 3.x counts each such return toward the
queue's delivery limit, and stenod starts the count again when a delivery arrives on its
last allowed attempt for returns it did not cause (found by the single-daemon chaos run on
seed 1179383388: 32 requests dead-lettered, 10 never run). The journal has no part in it: SQLite alone."""

from __future__ import annotations

import json
import time

import psutil
import psycopg

from stenod.fault_points import PAUSE_AT, REQUEST_DELIVERED
from support.amqp import created_jobs, queue_daemon
from support.harness import wait_for
from support.postgres import fresh_database
from tests.journal_rows import rows

LIMIT = 3
KILLS = 2 * LIMIT  # twice as many deaths with the request in flight as the limit allows


def test_a_request_outlives_a_crash_loop_longer_than_the_delivery_limit(tmp_path):
    paused = {PAUSE_AT: REQUEST_DELIVERED}
    with queue_daemon(tmp_path, "crash-loop", env=paused, amqp={"delivery_limit": LIMIT}) as q:
        (q.roots / "a.wav").write_bytes(b"audio")
        events_queue = q.client.bind_events()
        q.client.publish({"request_id": "r-loop", "inputs": [{"path": str(q.roots / "a.wav")}]})
        for attempt in range(KILLS):
            # Each daemon has the request delivered, stops right there, and is killed.
            wait_for(
                lambda: psutil.Process(q.daemon.process.pid).status() == psutil.STATUS_STOPPED,
                f"the request to be delivered to daemon {attempt + 1} (not dead-lettered)",
                timeout=30,
            )
            q.restart(env=paused if attempt < KILLS - 1 else None)
        events = q.client.events(events_queue, lambda got: any(e["data"]["state"] == "succeeded" for e in got))
        renewed = q.daemon.named("amqp.delivery_count_renewed")  # the log of every daemon of the loop
        time.sleep(0.5)
        method, _, _ = q.client.ch.basic_get(q.names.dead, auto_ack=True)
    jobs = rows(tmp_path / "state", "SELECT id, state FROM jobs WHERE request_id = ?", ("r-loop",))
    assert [state for _, state in jobs] == ["succeeded"]
    assert len(created_jobs(tmp_path)) == 1
    assert {e["subject"] for e in events} == {jobs[0][0]}
    assert method is None, "nothing was dead-lettered"
    assert renewed, "the count was started again"


def test_a_request_the_journal_keeps_refusing_is_dead_lettered_after_the_limit_not_renewed(tmp_path, monkeypatch):
    """Reliability R4: a transient failure this daemon sees (here the journal refuses the
    job's row) is retried up to the delivery limit, then dead-lettered by the broker with
    its ``x-death``; the renewal is only for returns no daemon chose."""
    with fresh_database() as url:
        monkeypatch.setenv("STENOD_JOURNAL__BACKEND", "postgresql")
        monkeypatch.setenv("STENOD_JOURNAL__URL", url)
        with queue_daemon(tmp_path, "refused", amqp={"delivery_limit": LIMIT}) as q:
            with psycopg.connect(url, autocommit=True) as db:  # the daemon made its schema when it started
                db.execute(REFUSE_POISON)
            (q.roots / "a.wav").write_bytes(b"audio")
            q.client.publish({"request_id": "r-poison", "inputs": [{"path": str(q.roots / "a.wav")}]})
            q.client.publish({"request_id": "r-fine", "inputs": [{"path": str(q.roots / "a.wav")}]})
            dead = q.client.take(q.names.dead, lambda got: len(got) >= 1, timeout=60)
            failures = q.daemon.named("intake.commit_failed")
            assert q.daemon.alive
            renewed = q.daemon.named("amqp.delivery_count_renewed")
        monkeypatch.delenv("STENOD_JOURNAL__URL")
        with psycopg.connect(url) as db:
            states: dict[str, str] = dict(db.execute("SELECT request_id, state FROM jobs").fetchall())
    _, props, body = dead[0]
    assert json.loads(body)["request_id"] == "r-poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    assert len(failures) == LIMIT + 1  # delivered limit + 1 times, each refused
    assert not renewed
    assert "r-poison" not in states and states["r-fine"] in {"accepted", "running", "succeeded"}


REFUSE_POISON = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.request_id = 'r-poison' THEN
        RAISE EXCEPTION 'refused by the test';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""
