"""``stenod run`` under the whisper benchmark (``bench/bench_whisper.py``): the folder run,
the queue run and the idle memory, each with a daemon of its own in a temporary folder.

The daemons use the default whisper settings with the shared model cache as ``model_dir``.
Before the clock starts each gets a short clip, which starts its worker pool (workers load
the model at pool start), and the bench waits until every worker holds the model. A file's
own time is measured from its provider job's creation in the journal (the dispatcher
creates one only when a worker is free) to its ``item.succeeded`` log line; its latency
from the drop or publish to its ``.txt`` or ``succeeded`` event.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pika
import pika.exceptions
import psutil

from bench.whisper_direct import FileRun, Run, TreeSampler, cores, tree_of
from bench.whisper_speech import Clip, SpeechSet
from support.amqp import BROKER_URL, BrokerNames, Client
from support.harness import Daemon, wait_for, write_config

__all__ = ["IdleMemory", "Memory", "RunFailed", "run_folder", "run_idle", "run_queue"]

FORMATS: Final = ["txt", "json"]
MB: Final = 1024 * 1024


class RunFailed(Exception):
    """A daemon run could not finish (the daemon died, a file failed, the broker went
    away); the other runs can go on."""


@contextlib.contextmanager
def _run_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (AssertionError, OSError, pika.exceptions.AMQPError) as exc:  # AssertionError: a wait_for timed out
        raise RunFailed(f"{what}: {type(exc).__name__}: {exc}") from exc


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- daemons -------------------------------------------------------------------------


def _start_daemon(tmp: Path, model_dir: Path, *, whisper: dict[str, Any] | None = None, **config: Any) -> Daemon:
    path = write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json", "log_level": "info"},
        providers={"whisper": {"model_dir": model_dir, **(whisper or {})}},
        **config,
    )
    daemon = Daemon(path, tmp / "daemon.log").start()
    try:
        daemon.wait_ready(timeout=180)
    except BaseException:
        daemon.kill()
        raise
    return daemon


def _stop(daemon: Daemon) -> None:
    if daemon.alive:
        try:
            daemon.terminate(timeout=60)
        finally:
            daemon.kill()


def _state(daemon: Daemon) -> Path:
    return daemon.config.parent / "state"  # as _start_daemon wrote it


def _pid(daemon: Daemon) -> int:
    return daemon.process.pid


def _workers_loaded(daemon: Daemon) -> None:
    """Wait until every whisper worker holds the model: a worker loads it when the pool
    starts, and the warm-up file started the pool, but only one worker transcribed it."""
    workers = int(daemon.named("whisper.ready")[-1]["workers"])
    big = 100 * MB  # a worker without the model is a bare interpreter, well under this

    def loaded() -> bool:
        return sum(1 for p in tree_of(_pid(daemon))()[1:] if _rss(p) > big) >= workers

    wait_for(loaded, f"{workers} loaded whisper workers", timeout=120, interval=0.2)


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:  # it just exited
        return 0


def _started_at(state: Path, names: list[str]) -> dict[str, float]:
    """When each file's provider job was created: the dispatcher creates one only when a
    worker is free, so this is when the file stopped waiting."""
    with sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT i.input, b.created_at FROM items i JOIN batches b ON b.id = i.batch_id").fetchall()
    found = {Path(item).name: _epoch(created) for item, created in rows}
    return {name: found[name] for name in names}


def _finished_at(daemon: Daemon, names: list[str]) -> dict[str, float]:
    found = {Path(e["input"]).name: _epoch(e["timestamp"]) for e in daemon.named("item.succeeded")}
    return {name: found[name] for name in names}


def _files(speech: SpeechSet, daemon: Daemon, outputs: Path, t0: float, done: dict[str, float]) -> list[FileRun]:
    """Per-file times from the journal and the log, transcripts from the ``.txt`` outputs."""
    names = [c.name for c in speech.clips]
    started = _started_at(_state(daemon), names)
    finished = _finished_at(daemon, names)
    return [
        FileRun(
            c.name,
            c.seconds,
            finished[c.name] - started[c.name],
            (outputs / f"{c.path.stem}.txt").read_text(),
            latency=done[c.name] - t0,
        )
        for c in speech.clips
    ]


def _start_order(daemon: Daemon, speech: SpeechSet) -> str:
    started = _started_at(_state(daemon), [c.name for c in speech.clips])
    return "the daemon started the files in this order: " + ", ".join(sorted(started, key=started.__getitem__))


# -- folder ----------------------------------------------------------------------------


def _drop(clip: Clip, staging: Path, inbox: Path) -> None:
    # Copied beside the inbox first, then renamed in: a whole file appears at once.
    shutil.copy2(clip.path, staging / clip.name)
    os.rename(staging / clip.name, inbox / clip.name)


def _outputs(inbox: Path, clips: tuple[Clip, ...] | list[Clip], daemon: Daemon) -> dict[str, float]:
    """Wait for every clip's ``.txt``; when each appeared."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 3600
    while len(seen) < len(clips):
        for clip in clips:
            if clip.name not in seen and (inbox / f"{clip.path.stem}.txt").exists():
                seen[clip.name] = time.time()
            elif (inbox / f"{clip.path.stem}.error.json").exists():
                raise RunFailed(f"{clip.name} failed: {(inbox / f'{clip.path.stem}.error.json').read_text()}")
        if not daemon.alive or time.monotonic() > deadline:
            raise RunFailed(f"the daemon stopped or stalled; log: {daemon.log_path}")
        time.sleep(0.05)
    return seen


def run_folder(speech: SpeechSet, model_dir: Path, tmp: Path) -> Run:
    """Every file renamed into the watched inbox at once; timed until the last ``.txt``.
    Raises RunFailed."""
    with _run_errors("folder run"):
        return _folder(speech, model_dir, tmp)


def _folder(speech: SpeechSet, model_dir: Path, tmp: Path) -> Run:
    inbox, staging = tmp / "inbox", tmp / "staging"
    inbox.mkdir(parents=True)
    staging.mkdir()
    rule = {"path": inbox, "provider": "whisper", "settle_seconds": 0.5, "formats": FORMATS}
    daemon = _start_daemon(tmp, model_dir, watch=[rule])
    try:
        cold = time.time()
        _drop(speech.warmup, staging, inbox)
        warm = _outputs(inbox, [speech.warmup], daemon)[speech.warmup.name] - cold
        _workers_loaded(daemon)
        for clip in speech.clips:
            shutil.copy2(clip.path, staging / clip.name)
        with TreeSampler(tree_of(_pid(daemon))) as sampler:
            t0 = time.time()
            for clip in speech.clips:
                os.rename(staging / clip.name, inbox / clip.name)
            done = _outputs(inbox, speech.clips, daemon)
        files, order = _files(speech, daemon, inbox, t0, done), _start_order(daemon, speech)
    finally:
        _stop(daemon)
    warmup = f"warm-up clip ({speech.warmup.seconds:.0f} s, starts the workers): {warm:.1f} s from drop"
    wall = max(done.values()) - t0
    return Run("folder: stenod run, inbox", wall, files, sampler.peak_rss, sampler.cpu_seconds, [order, warmup])


# -- queue -----------------------------------------------------------------------------


def _request(client: Client, request_id: str, path: Path) -> None:
    client.publish(
        {"request_id": request_id, "inputs": [{"path": str(path)}], "output": {"formats": FORMATS}},
        content_type="application/json",
    )


def _final_events(client: Client, queue: str, request_ids: set[str], daemon: Daemon) -> dict[str, float]:
    """Wait for the final event of every request; when each arrived."""
    arrived: dict[str, float] = {}
    deadline = time.monotonic() + 3600
    for method, _, body in client.ch.consume(queue, auto_ack=True, inactivity_timeout=0.5):
        if not daemon.alive or time.monotonic() > deadline:
            raise RunFailed(f"the daemon stopped or stalled; log: {daemon.log_path}")
        if method is None:
            continue
        assert body is not None
        data = json.loads(body)["data"]
        if data["request_id"] in request_ids and data["state"] in ("failed", "partial", "cancelled", "rejected"):
            raise RunFailed(f"request {data['request_id']} ended {data['state']}: {data.get('error')}")
        if data["request_id"] in request_ids and data["state"] == "succeeded":
            arrived[data["request_id"]] = time.time()
            if len(arrived) == len(request_ids):
                break
    client.ch.cancel()
    return arrived


def _delete_topology(names: BrokerNames) -> None:
    """Remove what the run's daemon declared: the broker is shared."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        try:
            channel = connection.channel()
            for queue in (names.requests, names.dead, names.unrouted):
                channel.queue_delete(queue)
            for exchange in (names.events, names.unrouted, names.dlx):
                channel.exchange_delete(exchange)
        finally:
            if connection.is_open:
                connection.close()
    except pika.exceptions.AMQPError as exc:
        print(f"  could not delete the queues and exchanges {names.prefix}.*: {exc!r}", flush=True)


def run_queue(speech: SpeechSet, model_dir: Path, tmp: Path) -> Run:
    """One request per file, published at once; timed until the last ``succeeded`` event.
    Raises RunFailed."""
    with _run_errors("queue run"):
        return _queue(speech, model_dir, tmp)


def _queue(speech: SpeechSet, model_dir: Path, tmp: Path) -> Run:
    roots = tmp / "roots"
    roots.mkdir(parents=True)
    for clip in (*speech.clips, speech.warmup):
        shutil.copy2(clip.path, roots / clip.name)
    names = BrokerNames.new("bench-whisper")
    amqp = names.amqp_section(BROKER_URL, allowed_roots=[roots])
    daemon = _start_daemon(tmp, model_dir, sections={"amqp": amqp})
    client: Client | None = None
    try:
        wait_for(lambda: daemon.named("amqp.consuming") and daemon.named("amqp.relay_ready"), "the queue", 120)
        client = Client(names)
        events = client.bind_events("job.#")
        tag = uuid.uuid4().hex[:8]
        cold = time.time()
        _request(client, f"{tag}-warmup", roots / speech.warmup.name)
        warm = _final_events(client, events, {f"{tag}-warmup"}, daemon)[f"{tag}-warmup"] - cold
        _workers_loaded(daemon)
        ids = {f"{tag}-{clip.name}": clip.name for clip in speech.clips}
        with TreeSampler(tree_of(_pid(daemon))) as sampler:
            t0 = time.time()
            for request_id, name in ids.items():
                _request(client, request_id, roots / name)
            arrived = _final_events(client, events, set(ids), daemon)
        done = {ids[request_id]: at for request_id, at in arrived.items()}
        files, order = _files(speech, daemon, roots, t0, done), _start_order(daemon, speech)
    finally:
        if client is not None:
            client.close()
        _stop(daemon)
        _delete_topology(names)
    warmup = f"warm-up clip ({speech.warmup.seconds:.0f} s, starts the workers): {warm:.1f} s from publish"
    wall = max(done.values()) - t0
    return Run("queue: stenod run, RabbitMQ", wall, files, sampler.peak_rss, sampler.cpu_seconds, [order, warmup])


# -- idle memory -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """The summed RSS of the daemon's process tree at one moment."""

    rss: int
    processes: tuple[str, ...]  # what each process of the tree is


@dataclass(frozen=True, slots=True)
class IdleMemory:
    """The three moments of the idle-memory goal."""

    before: Memory  # after daemon.ready, before any file: no model
    loaded: Memory  # right after the work
    unloaded: Memory  # after whisper.workers_unloaded


def _kind(proc: psutil.Process) -> str:
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    for marker, kind in (("stenod run", "daemon"), ("spawn_main", "worker"), ("resource_tracker", "resource tracker")):
        if marker in command:
            return kind
    return str(proc.name())


def _memory(pid: int) -> Memory:
    """Median of five samples of the tree's summed RSS, 0.2 s apart."""
    totals = []
    for _ in range(5):
        totals.append(sum(_rss(p) for p in tree_of(pid)()))
        time.sleep(0.2)
    return Memory(int(statistics.median(totals)), tuple(_kind(p) for p in tree_of(pid)()))


def run_idle(speech: SpeechSet, model_dir: Path, tmp: Path) -> IdleMemory:
    """The daemon tree's RSS before any file, right after one file per worker, and after
    the idle unload. Raises RunFailed."""
    with _run_errors("idle memory run"):
        return _idle(speech, model_dir, tmp)


def _idle(speech: SpeechSet, model_dir: Path, tmp: Path) -> IdleMemory:
    inbox, staging = tmp / "inbox", tmp / "staging"
    inbox.mkdir(parents=True)
    staging.mkdir()
    rule = {"path": inbox, "provider": "whisper", "settle_seconds": 0.5, "formats": FORMATS}
    daemon = _start_daemon(tmp, model_dir, watch=[rule], whisper={"idle_unload_seconds": 5})
    try:
        time.sleep(3)  # start-up settles: first scan, imports done lazily
        before = _memory(_pid(daemon))
        work = sorted(speech.clips, key=lambda c: c.seconds)[: cores()]
        for clip in work:
            _drop(clip, staging, inbox)
        _outputs(inbox, work, daemon)
        loaded = _memory(_pid(daemon))
        wait_for(lambda: daemon.named("whisper.workers_unloaded"), "the idle unload", timeout=120)
        time.sleep(2)  # the pool is stopped and joined off the event loop
        unloaded = _memory(_pid(daemon))
    finally:
        _stop(daemon)
    return IdleMemory(before, loaded, unloaded)
