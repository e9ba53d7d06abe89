"""``stenod submit`` and ``stenod cancel``: talk to a running daemon through RabbitMQ.

``submit`` publishes one request (persistent, confirmed, with absolute paths and a
client-generated request_id). With ``--wait`` it first binds an exclusive queue to the
event exchange and sets it as ``reply_to``, so no event of the job can be missed, then
follows the job (a progress bar on a terminal) and prints the transcript or the error.
Exit codes: 0 succeeded, 1 failed/partial/cancelled (or gave up waiting), 2 usage,
configuration or broker problem, or the request was rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue
from ulid import ULID

from stenod.adapters.amqp.topology import declare_events, declare_requests
from stenod.errors import ConfigError
from stenod.intake.request_intake import CANCEL_TYPE, REQUEST_TYPE
from stenod.intake.request_message import options_from_pairs
from stenod.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_TERMINAL = {
    "succeeded": EXIT_OK,
    "partial": EXIT_FAILED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_FAILED,
    "rejected": EXIT_USAGE,
}
_QUIET_HINT_SECONDS = 10.0


def build_request(args: argparse.Namespace, settings: Settings, request_id: str) -> dict[str, Any]:
    """The request body from the command line. Raises ConfigError on a usage problem."""
    inputs: list[dict[str, str]] = []
    for file in args.files:
        path = Path(os.path.abspath(file))  # absolute, not resolved: the daemon applies its own symlink policy
        if not path.is_file():
            raise ConfigError(f"{file} is not a file")
        inputs.append({"path": str(path)})
    inputs.extend({"url": url} for url in args.url)
    if not inputs:
        raise ConfigError("nothing to submit: give FILE… or --url URL")
    body: dict[str, Any] = {"request_id": request_id, "task": args.task, "inputs": inputs}
    if args.provider:
        body["provider"] = args.provider
    if args.language:
        body["language"] = args.language
    if args.target_language:
        body["target_language"] = args.target_language
    if args.option:
        body["options"] = options_from_pairs(args.option)
    if args.diarize:
        body["diarize"] = True
    for count in ("num_speakers", "min_speakers", "max_speakers"):
        if getattr(args, count) is not None:
            body[count] = getattr(args, count)  # checked by the daemon, which answers with a rejection
    output: dict[str, Any] = {}
    if args.output_dir:
        output["dir"] = os.path.abspath(args.output_dir)
    if args.formats:
        output["formats"] = list(dict.fromkeys(args.formats))
    if output:
        body["output"] = output
    return body


def _amqp_url(settings: Settings) -> str:
    if not settings.amqp_enabled or settings.amqp.url is None:
        raise ConfigError("the queue interface is off: set [amqp] url (or STENOD_AMQP__URL)")
    return settings.amqp.url.get_secret_value()


def submit(args: argparse.Namespace, settings: Settings) -> int:
    """``stenod submit``: publish a request; with ``--wait`` follow it to the end."""
    url = _amqp_url(settings)
    request_id = args.request_id or str(ULID())
    body = build_request(args, settings, request_id)
    return asyncio.run(_submit(url, settings, body, request_id, wait=args.wait, wait_seconds=args.timeout))


def cancel(args: argparse.Namespace, settings: Settings) -> int:
    """``stenod cancel ID``: publish a cancel control message for job ID."""
    url = _amqp_url(settings)
    if not args.job_id.isalnum() or len(args.job_id) > 64:
        raise ConfigError(f"{args.job_id!r} is not a job id")
    body = json.dumps({"job_id": args.job_id}).encode()
    return asyncio.run(_cancel(url, settings, body, args.job_id))


@contextlib.asynccontextmanager
async def _channel(url: str, settings: Settings, purpose: str) -> Any:
    try:
        connection = await aio_pika.connect(url, timeout=10, client_properties={"connection_name": f"stenod {purpose}"})
    except (aio_pika.exceptions.AMQPError, OSError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach the broker ({exc or type(exc).__name__}); is RabbitMQ running and [amqp] url right?"
        ) from exc
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_requests(channel, settings.amqp)
        yield channel


async def _publish(channel: AbstractChannel, settings: Settings, message: aio_pika.Message) -> None:
    await channel.default_exchange.publish(
        message, routing_key=settings.amqp.request_queue, mandatory=True, timeout=settings.amqp.publish_timeout_seconds
    )


async def _cancel(url: str, settings: Settings, body: bytes, job_id: str) -> int:
    async with _channel(url, settings, "cancel") as channel:
        await _publish(
            channel,
            settings,
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                type=CANCEL_TYPE,
                message_id=str(ULID()),
            ),
        )
    print(f"cancel requested for {job_id}")
    return EXIT_OK


async def _submit(
    url: str, settings: Settings, body: dict[str, Any], request_id: str, *, wait: bool, wait_seconds: float | None
) -> int:
    async with _channel(url, settings, "submit") as channel:
        events: AbstractQueue | None = None
        if wait:
            exchange = await declare_events(channel, settings.amqp)
            events = await channel.declare_queue(exclusive=True, auto_delete=True)
            await events.bind(exchange, routing_key="job.#")
        await _publish(
            channel,
            settings,
            aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=request_id,
                type=REQUEST_TYPE,
                reply_to=events.name if events else None,
                correlation_id=request_id if events else None,
            ),
        )
        if events is None:
            print(request_id)
            return EXIT_OK
        print(f"submitted request {request_id}", file=sys.stderr)
        try:
            async with asyncio.timeout(wait_seconds):
                data = await _follow(events, request_id)
        except TimeoutError:
            print(
                f"stenod: gave up waiting after {wait_seconds:g} s; the job goes on (request {request_id})",
                file=sys.stderr,
            )
            return EXIT_FAILED
    return _report(data)


async def _follow(queue: AbstractQueue, request_id: str) -> dict[str, Any]:
    """Events of our request until a terminal one; returns its ``data``."""
    seen: set[str] = set()
    started = time.monotonic()
    hinted = False
    with _progress() as show:
        async with queue.iterator() as messages:
            while True:
                try:
                    async with asyncio.timeout(1.0):
                        message = await anext(messages)
                except TimeoutError:
                    if not hinted and not seen and time.monotonic() - started > _QUIET_HINT_SECONDS:
                        print("stenod: no events yet; is the stenod daemon running?", file=sys.stderr)
                        hinted = True
                    continue
                await message.ack()
                try:
                    event = json.loads(message.body)
                    data: dict[str, Any] = dict(event["data"])
                except (ValueError, KeyError, TypeError):
                    continue
                if data.get("request_id") != request_id or event.get("id") in seen:
                    continue
                seen.add(event["id"])
                show(data)
                if data.get("state") in _TERMINAL:
                    return data


@contextlib.contextmanager
def _progress() -> Iterator[Any]:
    if not sys.stderr.isatty():
        yield lambda data: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("waiting", total=1.0)

        def show(data: dict[str, Any]) -> None:
            bar.update(
                task,
                completed=float(data.get("progress") or 0.0),
                description=f"{data.get('job_id', '')} {data.get('state', '')}",
            )

        yield show


def _report(data: dict[str, Any]) -> int:
    state = str(data.get("state"))
    for item in data.get("items") or []:
        transcript = item.get("transcript")
        if transcript is not None:
            print(transcript.get("text", "").strip())
        elif item.get("state") == "succeeded":
            text = _read_txt(item.get("outputs") or [])
            print(text if text is not None else "\n".join(item.get("outputs") or []))
        if item.get("error"):
            print(f"stenod: {item['input']}: {item['error']['code']}: {item['error']['message']}", file=sys.stderr)
    error = data.get("error")
    if error and state != "succeeded":
        print(f"stenod: job {data.get('job_id')} {state}: {error.get('code')}: {error.get('message')}", file=sys.stderr)
    elif state != "succeeded":
        print(f"stenod: job {data.get('job_id')} {state}", file=sys.stderr)
    return _TERMINAL.get(state, EXIT_FAILED)


def _read_txt(outputs: list[str]) -> str | None:
    for output in outputs:
        if output.endswith(".txt"):
            try:
                return Path(output).read_text(encoding="utf-8").strip()
            except OSError:
                return None
    return None
