"""Queue interface benchmarks (issue 3). Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_queue [--requests 2000] [--jobs 2000] [--rounds 3]

1. Raw aio-pika on this machine: consume a persistent message from a quorum queue,
   publish one persistent confirmed message, ack; no stenod code (the ceiling).
2. Requests per second the daemon accepts (message in, job committed, ``accepted``
   event confirmed and received), with ``--requests`` requests waiting in the queue when
   the daemon starts, timed from its first commit (start-up not counted). Target: at
   least 50 % of (1).
3. Full job round trips per second with the instant ``echo`` provider (request in →
   ``succeeded`` event out). Target: at least 500/s on 2 cores.

CPU per message is the daemon's with its relay process, and the broker's. The three run
interleaved ``--rounds`` times; the last line gives the medians.

Requires the real RabbitMQ on localhost and the echo test plugin
(``pip install -e tests/plugins/stenod-echo``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import psutil

from support.amqp import BROKER_URL, BrokerNames, delete_topology, queue_config
from support.harness import Daemon, wait_for

# The instant provider packs up to 50 inputs into one "remote job", 16 jobs at a time.
PACKED = {"max_files": 50, "max_concurrent_jobs": 16}
# For the intake figure the provider holds its one job: accepted jobs wait instead of running,
# so the figure is intake alone (message in, job committed, accepted event confirmed).
HELD = {"max_files": 50, "max_concurrent_jobs": 1, "submit_delay_seconds": 3600}
TERMINAL = ["job.succeeded.#", "job.partial.#", "job.failed.#", "job.cancelled.#", "job.rejected.#"]


def broker_pids() -> list[int]:
    """The RabbitMQ node's processes (the Erlang VM) on this machine."""
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"]


def broker_cpu(pids: list[int] | None = None) -> float:
    """CPU seconds used so far by the RabbitMQ node."""
    total = 0.0
    for pid in pids if pids is not None else broker_pids():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def tree_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its live children (the relay process)."""
    user = system = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        user, system = user + times.user, system + times.system
    return user, system


async def raw_aio_pika(count: int, prefetch: int) -> tuple[float, dict[str, float]]:
    """Messages per second for consume + one persistent confirmed publish + ack."""
    names = BrokerNames.new("bench-raw")
    connection = await aio_pika.connect_robust(BROKER_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(names.requests, durable=True, arguments={"x-queue-type": "quorum"})
        sink = await channel.declare_queue(names.dead, durable=True)
        exchange = await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
        await sink.bind(exchange, "job.#")
        body = json.dumps({"request_id": "x" * 26, "inputs": [{"path": "/srv/in/a.wav"}]}).encode()
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=names.requests
                )
                for _ in range(count)
            )
        )
        event = b"e" * 600  # about the size of an accepted event
        worker = await connection.channel(publisher_confirms=True)
        await worker.set_qos(prefetch_count=prefetch)
        out = await worker.get_exchange(names.events)
        queue = await worker.get_queue(names.requests)
        done = asyncio.Event()
        handled = 0
        first = 0.0
        cpu_first: tuple[float, float] = (0.0, 0.0)

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal handled, first, cpu_first
            if not first:
                first = time.perf_counter()
                cpu_first = (time.process_time(), broker_cpu())
            await out.publish(
                aio_pika.Message(event, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message.message_id),
                routing_key="job.accepted.raw",
            )
            await message.ack()
            handled += 1
            if handled == count:
                done.set()

        await queue.consume(handle)
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - first
        client, broker = time.process_time() - cpu_first[0], broker_cpu() - cpu_first[1]
        await worker.close()
        return count / elapsed, {"client_ms": client / count * 1e3, "broker_ms": broker / count * 1e3}
    finally:
        ch = await connection.channel()
        for queue_name in (names.requests, names.dead):
            await ch.queue_delete(queue_name)
        await ch.exchange_delete(names.events)
        await connection.close()


async def _prepublish(names: BrokerNames, roots: Path, count: int, tag: str) -> None:
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(names.requests, durable=True, passive=True)
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            json.dumps(
                                {
                                    "request_id": f"{tag}-{i}",
                                    "inputs": [{"path": str(roots / f"{i}.wav")}],
                                    "output": {"formats": ["txt"]},
                                }
                            ).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=names.requests,
                    )
                    for i in range(start, min(count, start + 500))
                )
            )


Sample = tuple[float, tuple[float, float], float]  # (wall clock, daemon tree (user, system) CPU s, broker CPU s)
_SAMPLE_EVERY_SECONDS = 0.02


async def _count_events(names: BrokerNames, patterns: list[str], count: int, started: asyncio.Event) -> float:
    """Wait for events of ``count`` requests; returns the wall-clock time of the last one."""
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(names.events)
        queue = await channel.declare_queue(exclusive=True)
        for pattern in patterns:
            await queue.bind(exchange, pattern)
        started.set()
        seen: set[str] = set()
        failed: set[str] = set()
        async with queue.iterator(no_ack=True) as messages:
            async for message in messages:
                data = json.loads(message.body)["data"]
                seen.add(data["request_id"])
                if data["state"] in ("failed", "partial", "cancelled", "rejected"):
                    failed.add(data["request_id"])
                if len(seen) >= count:
                    if failed:
                        print(f"  ({len(failed)} of {count} jobs did not succeed)", flush=True)
                    return time.time()
    raise AssertionError("unreachable")


async def _sample_until(done: asyncio.Future[float], pid: int, samples: list[Sample]) -> None:
    """CPU of the daemon (with its relay process) and of the broker, every 20 ms."""
    beam = broker_pids()
    while not done.done():
        samples.append((time.time(), tree_cpu(pid), broker_cpu(beam)))
        await asyncio.sleep(_SAMPLE_EVERY_SECONDS)
    samples.append((time.time(), tree_cpu(pid), broker_cpu(beam)))


def _first_commit(state: Path) -> float:
    """Wall-clock time of the first job the daemon committed."""
    with sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True) as conn:
        (first,) = conn.execute("SELECT MIN(created_at) FROM jobs").fetchone()
    return datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp()


async def through_daemon(
    tmp: Path, count: int, patterns: list[str], tag: str, echo: dict[str, Any]
) -> tuple[float, dict[str, float]]:
    """Requests per second from a daemon that finds ``count`` requests waiting when it starts:
    from its first job commit to the last event received (its start-up is not counted), with
    the CPU per request of the daemon (its relay process included) and of the broker."""
    names = BrokerNames.new(f"bench-{tag}")
    os.makedirs(tmp, exist_ok=True)
    config = queue_config(tmp, names, echo=echo)
    for i in range(count):  # one file per request: each job writes its own outputs
        (tmp / "roots" / f"{i}.wav").write_bytes(b"RIFF" + b"\0" * 1000)
    daemon = Daemon(config, tmp / f"{tag}.log").start()
    try:
        # The relay process declares the event exchange the counter binds to.
        await asyncio.to_thread(
            wait_for, lambda: daemon.named("amqp.consuming") and daemon.named("amqp.relay_ready"), "ready", 60
        )
        started = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            counter = tg.create_task(_count_events(names, patterns, count, started))
            await started.wait()
            daemon.kill()  # stop it, fill the queue, start it again: the run starts with a full queue
            await _prepublish(names, tmp / "roots", count, tag)
            daemon = Daemon(config, tmp / f"{tag}.log").start()
            samples: list[Sample] = []
            tg.create_task(_sample_until(counter, daemon.process.pid, samples))
            last = await asyncio.wait_for(counter, timeout=900)
        first = _first_commit(tmp / "state")
        before = max((s for s in samples if s[0] <= first), default=samples[0], key=lambda s: s[0])
        after = samples[-1]
        user, system = after[1][0] - before[1][0], after[1][1] - before[1][1]
        return count / (last - first), {
            "daemon_ms": (user + system) / count * 1e3,
            "daemon user_ms": user / count * 1e3,
            "daemon system_ms": system / count * 1e3,
            "broker_ms": (after[2] - before[2]) / count * 1e3,
        }
    finally:
        daemon.kill()
        delete_topology(names)


def _cpu_text(cpu: dict[str, float]) -> str:
    return "CPU per message: " + ", ".join(f"{k.removesuffix('_ms')} {v:.2f} ms" for k, v in cpu.items())


async def main_async(args: argparse.Namespace) -> None:
    print(f"cores: {os.cpu_count()}; broker: {BROKER_URL.rsplit('@', 1)[-1]}; {args.rounds} rounds", flush=True)
    raws, accepts, trips = [], [], []
    with tempfile.TemporaryDirectory(prefix="stenod-bench-") as tmp:
        for n in range(args.rounds):  # interleaved, so a busy moment of the machine touches all three
            raw, cpu = await raw_aio_pika(args.requests, args.prefetch)
            raws.append(raw)
            print(f"raw aio-pika consume + persistent confirmed publish + ack: {raw:8.0f} msg/s; {_cpu_text(cpu)}")
            accepted, cpu = await through_daemon(
                Path(tmp) / f"accept{n}", args.requests, ["job.accepted.#"], "accept", HELD
            )
            accepts.append(accepted)
            print(
                f"stenod accepted requests (committed, event confirmed):  {accepted:8.0f} req/s "
                f"= {accepted / raw:5.1%} of raw; {_cpu_text(cpu)}"
            )
            trip, cpu = await through_daemon(Path(tmp) / f"trip{n}", args.jobs, TERMINAL, "trip", PACKED)
            trips.append(trip)
            print(f"stenod full round trips with the instant echo provider: {trip:8.0f} jobs/s; {_cpu_text(cpu)}")
    raw, accepted, trip = (statistics.median(v) for v in (raws, accepts, trips))
    print(
        f"median of {args.rounds}: raw {raw:.0f} msg/s; accepted {accepted:.0f} req/s = {accepted / raw:.1%} of raw "
        f"(target >= 50%); round trips {trip:.0f} jobs/s (target >= 500)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for path in (Path("bench"), Path("tests")):
        if not path.is_dir():
            raise SystemExit("run from the repository root: .venv/bin/python -m bench.bench_queue")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
