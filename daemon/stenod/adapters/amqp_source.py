"""The AMQP source: consumes requests and cancels from the request queue.

A message is acked only after its job is committed to the journal (then the journal
owns it and it runs without holding the message, so the broker's consumer timeout never
fires). A message that can never succeed is published, with the reason in our own
``x-stenod-*`` headers, to the dead-letter exchange (confirmed) and only then acked, and
a ``stenod.job.rejected`` event says why. A transient failure (the journal commit failed)
is rejected with ``requeue=True``, which counts toward the queue's delivery limit.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from ulid import ULID

from stenod.adapters.amqp_acks import AckBatcher
from stenod.adapters.amqp_topology import CANCEL_TYPE, REQUEST_TYPE, BrokerLink, declare_requests
from stenod.adapters.folder_source import FileRefused, open_regular
from stenod.adapters.relay_process import RelayProcess
from stenod.adapters.sqlite_journal import SqliteJournal
from stenod.adapters.thread_lane import ThreadLane
from stenod.adapters.url_fetch import (
    DownloadFailed,
    Resolver,
    UrlDownloader,
    UrlFetchService,
    UrlPolicy,
    UrlRefused,
    name_from_url,
    system_resolve,
)
from stenod.dispatcher import ProviderRuntime
from stenod.events import EventKind, JobEvent, utc_now
from stenod.journal import NewItem, NewJob
from stenod.requests import (
    DEFAULT_TRANSLATE_PROVIDER,
    CancelRequest,
    ProviderInfo,
    Rejected,
    Request,
    check_request,
    parse_body,
)
from stenod.settings import AmqpSettings, Settings

log = structlog.get_logger("stenod.amqp")

FAULT_EXIT_AFTER_COMMIT = "STENOD_FAULT_EXIT_AFTER_COMMIT"
"""Test hook: with this environment variable set to 1 the daemon exits (code 99) right after
committing a new job and before acking its message, to prove the redelivery is harmless."""

_RETRY_PAUSE_SECONDS = 1.0
_CLOSE_SECONDS = 5.0
_DNS_TIMEOUT_SECONDS = 5.0
_AMQP_ERRORS = (aio_pika.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What intake needs from one AMQP message."""

    body: bytes
    message_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    content_encoding: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    job_id: str
    created: bool
    urls: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str


Outcome = Accepted | Rejected | Retry
ProviderLookup = Callable[[], tuple[Mapping[str, ProviderRuntime], Mapping[str, str]]]
"""The current provider runtimes and why others are unavailable (they change on SIGHUP reload)."""


class RequestIntake:
    """Turns one delivery into a committed job, a cancel, or a rejection (no AMQP here)."""

    def __init__(
        self,
        journal: SqliteJournal,
        amqp: AmqpSettings,
        providers: ProviderLookup,
        *,
        default_provider: str,
        url_policy: UrlPolicy,
        resolver: Resolver = system_resolve,
    ) -> None:
        self._journal = journal
        self._amqp = amqp
        self._providers = providers
        self._default_provider = default_provider
        self._policy = url_policy
        self._resolver = resolver
        # Resolved once: the roots are configuration, and realpath costs a stat per component.
        self._allowed = [Path(os.path.realpath(root)) for root in amqp.allowed_roots]
        # File checks block (a network mount can hang), so they leave the loop; one lane
        # takes the checks of all messages that arrive together in one hand-off.
        self._files: ThreadLane[None] = ThreadLane("intake-files")
        self._infos: tuple[Mapping[str, ProviderRuntime], dict[str, ProviderInfo]] | None = None

    def close(self) -> None:
        """Stop the file-check thread (after the consumer stopped)."""
        self._files.close()

    async def handle(self, delivery: Delivery) -> Outcome:
        """Validate and commit. Returns Accepted, Rejected (never retried) or Retry."""
        try:
            if delivery.content_encoding not in (None, "", "identity", "utf-8", "utf8"):
                raise Rejected(
                    "unsupported_encoding", f"content_encoding {delivery.content_encoding!r} is not supported"
                )
            if delivery.type == CANCEL_TYPE:
                return await self._cancel(delivery)
            if delivery.type not in (None, "", REQUEST_TYPE):
                raise Rejected(
                    "unknown_message_type",
                    f"message type {delivery.type!r} is unknown (use {REQUEST_TYPE!r} or {CANCEL_TYPE!r})",
                )
            job = await self._job(delivery)
        except Rejected as rejected:
            if rejected.request_id is None:
                rejected.request_id = delivery.message_id
            return rejected
        try:
            view, created = await self._journal.create_job(job)
            if not created:  # a redelivery or a client retry: answer with the existing job's events
                await self._journal.emit_for_existing(view.job_id)
        except Exception as exc:  # the journal could not commit: the broker redelivers, up to its limit
            log.error("amqp.commit_failed", error=f"{type(exc).__name__}: {exc}")
            return Retry(f"journal commit failed: {exc}")
        return Accepted(view.job_id, created, urls=any(i.path is None for i in job.items))

    async def _job(self, delivery: Delivery) -> NewJob:
        request: Request = parse_body(delivery.body, Request, max_body_bytes=self._amqp.max_body_bytes)
        request_id = request.request_id or delivery.message_id
        runtimes, unavailable = self._providers()
        if self._infos is None or self._infos[0] is not runtimes:  # new runtimes come with a reload
            infos = {name: ProviderInfo(rt.limits, type(rt.provider).Options) for name, rt in runtimes.items()}
            self._infos = runtimes, infos
        infos = self._infos[1]
        provider, options = check_request(
            request, infos, unavailable, default_provider=self._default_provider, request_id=request_id
        )
        context = {"request_id": request_id, "task": request.task, "provider": provider}
        try:
            items, output_dir = await self._local_checks(request)
        except Rejected as exc:
            raise Rejected(exc.code, exc.reason, **context) from None
        formats = list(request.output.formats) if request.output and request.output.formats else None
        output: dict[str, Any] = {
            "dir": output_dir,
            "formats": formats or ["txt", "json", "srt", "vtt"],
            "after": "keep",
            "resolved": True,
        }  # symlinks resolved: the writer refuses new ones
        if request.output is not None and request.output.chain_languages:
            output["formats"] = sorted({*output["formats"], "txt"})  # the translation step reads the .txt
            output["then_translate_to"] = list(request.output.chain_languages)
            output["translate_provider"] = request.output.translate_provider or DEFAULT_TRANSLATE_PROVIDER
        return NewJob(
            source="amqp",
            task=request.task,
            provider=provider,
            items=items,
            language=request.language,
            target_languages=request.target_languages,
            options=options,
            output=output,
            request_id=request_id,
            reply_to=delivery.reply_to or None,
            correlation_id=delivery.correlation_id if delivery.reply_to else None,
        )

    async def _local_checks(self, request: Request) -> tuple[list[NewItem], str | None]:
        """Items (paths checked on disk, URLs checked by policy) and the output folder."""
        paths = [i.path for i in request.inputs if i.path is not None]
        wants_dir = request.output is not None and request.output.dir is not None
        local: list[NewItem] = []
        output_dir = None
        if paths or wants_dir:  # one trip to a worker thread for all the file-system checks
            local, output_dir = await self._files.call(lambda _: self._file_checks(paths, request))
        found = iter(local)
        items = []
        for ref in request.inputs:
            if ref.path is not None:
                items.append(next(found))
            else:
                assert ref.url is not None
                await self._check_url(ref.url)
                items.append(NewItem(input=ref.url, name=name_from_url(ref.url)))
        return items, output_dir

    def _file_checks(self, paths: Sequence[str], request: Request) -> tuple[list[NewItem], str | None]:
        roots = self._allowed
        return [local_input(raw, roots) for raw in paths], self._output_dir(request, roots)

    def _output_dir(self, request: Request, roots: Sequence[Path]) -> str | None:
        if request.output is None or request.output.dir is None:
            return None
        raw = request.output.dir
        real = Path(os.path.realpath(raw)) if os.path.isabs(raw) else None
        if real is None or not any(real.is_relative_to(root) for root in roots):
            raise Rejected("output_not_allowed", f"output.dir {raw} is not an absolute folder under amqp.allowed_roots")
        return str(real)

    async def _check_url(self, raw: str) -> None:
        try:
            url = self._policy.check_syntax(raw)
            # A name that cannot be resolved now is accepted: the download resolves (and checks) again.
            async with asyncio.timeout(_DNS_TIMEOUT_SECONDS):
                await self._policy.resolve(url, self._resolver)
        except UrlRefused as exc:
            raise Rejected("url_not_allowed", exc.reason) from None
        except (DownloadFailed, TimeoutError):
            pass

    async def _cancel(self, delivery: Delivery) -> Accepted | Retry:
        cancel: CancelRequest = parse_body(delivery.body, CancelRequest, max_body_bytes=self._amqp.max_body_bytes)
        try:
            view = await self._journal.request_cancel(cancel.job_id)
        except Exception as exc:  # the journal could not commit: the broker redelivers, up to its limit
            log.error("amqp.commit_failed", error=f"{type(exc).__name__}: {exc}")
            return Retry(f"journal commit failed: {exc}")
        if view is None:
            raise Rejected("unknown_job", f"no job {cancel.job_id} to cancel")
        log.info("job.cancel_requested", job_id=view.job_id, state=str(view.state))
        return Accepted(view.job_id, created=False)

    async def reject_event(self, rejected: Rejected, delivery: Delivery) -> None:
        """Commit the ``stenod.job.rejected`` event that explains a dead-lettered message."""
        now = utc_now()
        job_id = str(ULID())
        data: dict[str, Any] = {
            "job_id": job_id,
            "request_id": rejected.request_id,
            "task": rejected.task,
            "provider": rejected.provider,
            "state": "rejected",
            "progress": 0.0,
            "items": [],
            "error": {"code": rejected.code, "message": rejected.reason, "retryable": False},
            "cost": None,
            "created_at": now,
            "updated_at": now,
        }
        event = JobEvent.new(EventKind.REJECTED, job_id, rejected.provider or "none", data)
        await self._journal.add_event(
            event,
            reply_to=delivery.reply_to or None,
            correlation_id=delivery.correlation_id if delivery.reply_to else None,
        )


def local_input(raw: str, roots: Sequence[Path]) -> NewItem:
    """A path input as a journal item: absolute, under a root once symlinks are resolved, a
    regular singly-linked file that is not itself a symlink. Raises Rejected."""
    if not roots:
        raise Rejected("path_not_allowed", "path inputs are disabled (amqp.allowed_roots is empty)")
    if not os.path.isabs(raw):
        raise Rejected("path_not_allowed", f"{raw} is not an absolute path")
    real = Path(os.path.realpath(raw))
    if not any(real.is_relative_to(root) for root in roots):
        raise Rejected("path_not_allowed", f"{raw} is not under amqp.allowed_roots")
    try:
        if stat.S_ISLNK(os.lstat(raw).st_mode):
            raise FileRefused("symlink")
        fd, st = open_regular(real)
    except FileRefused as exc:
        raise Rejected("input_refused", f"{raw} is refused: {exc}") from None
    except FileNotFoundError:
        raise Rejected("input_missing", f"{raw} does not exist") from None
    except OSError as exc:
        raise Rejected("input_unreadable", f"{raw} cannot be read: {exc.strerror}") from None
    os.close(fd)
    return NewItem(input=raw, name=real.name, path=str(real), size=st.st_size, device=st.st_dev, inode=st.st_ino)


class AmqpSource:
    """Consumes the request queue with a callback consumer on the shared robust connection."""

    name = "amqp"

    def __init__(
        self,
        link: BrokerLink,
        intake: RequestIntake,
        amqp: AmqpSettings,
        *,
        notify: Callable[[], None],
        on_urls: Callable[[], None] | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        self._link = link
        self._intake = intake
        self._amqp = amqp
        self._notify = notify
        self._on_urls = on_urls
        self._grace = grace_seconds
        self._fault_exit = os.environ.get(FAULT_EXIT_AFTER_COMMIT) == "1"
        # Strong references: aio-pika tracks robust channels and queues weakly.
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._dlx: AbstractExchange | None = None
        self._acks = AckBatcher()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping``; then cancel the consumer and let in-flight messages settle."""
        self._stopping = stopping
        connection = await self._link.wait_connected(stopping)
        if connection is None:
            return
        tag = await self._start(connection, stopping)
        await stopping.wait()
        if self._channel is None:
            return
        if tag is None:  # stopped while the channel was being opened: nothing was consumed
            await self._close_channel(self._channel)
            return
        assert self._queue is not None
        try:
            # aio-pika's own timeout does not cover waiting for a robust channel to be
            # restored: with the broker away that wait never ends, and neither would we.
            async with asyncio.timeout(_CLOSE_SECONDS):
                await self._queue.cancel(tag, timeout=_CLOSE_SECONDS)
        except (*_AMQP_ERRORS, TimeoutError) as exc:
            log.warning("amqp.cancel_consumer_failed", error=str(exc) or type(exc).__name__)
        try:
            async with asyncio.timeout(self._grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("amqp.intake_grace_expired", in_flight=self._in_flight)
        await self._close_channel(self._channel)
        log.info("amqp.consumer_stopped")

    @staticmethod
    async def _close_channel(channel: AbstractRobustChannel) -> None:
        # Unsettled deliveries go back to the queue when the channel closes.
        try:
            async with asyncio.timeout(_CLOSE_SECONDS):
                await channel.close()
        except (*_AMQP_ERRORS, TimeoutError) as exc:
            log.debug("amqp.channel_close_failed", error=str(exc) or type(exc).__name__)

    async def _start(self, connection: Any, stopping: asyncio.Event) -> str | None:
        """Open the channel, declare the topology and start consuming; retried until it works."""
        while not stopping.is_set():
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await channel.set_qos(prefetch_count=self._amqp.prefetch)
                queue, dlx = await declare_requests(channel, self._amqp)
                self._channel, self._queue, self._dlx = channel, queue, dlx
                if stopping.is_set():  # SIGTERM came while the channel opened: take no request now
                    return None
                tag = await queue.consume(self._on_message)
                log.info("amqp.consuming", queue=self._amqp.request_queue, prefetch=self._amqp.prefetch)
                return str(tag)
            except (*_AMQP_ERRORS, TimeoutError) as exc:
                log.error(
                    "amqp.declare_failed",
                    queue=self._amqp.request_queue,
                    error=str(exc) or type(exc).__name__,
                    hint="if the queue exists with other arguments, delete it or change amqp.request_queue",
                )
                try:
                    async with asyncio.timeout(max(5.0, self._amqp.reconnect_interval_seconds)):
                        await stopping.wait()
                except TimeoutError:
                    pass
        return None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._acks.delivered(message)
        if self._stopping.is_set():
            # Delivered after SIGTERM (prefetched, or the consumer started just before it): do
            # not start it. Left unsettled, it returns to the queue when the channel closes.
            return
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._process(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one message take the consumer down; the broker redelivers it
            log.exception("amqp.message_failed", message_id=message.message_id)
            await self._settle(message, "requeue")
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _process(self, message: AbstractIncomingMessage) -> None:
        delivery = Delivery(
            body=message.body,
            message_id=message.message_id,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            type=message.type,
            content_encoding=message.content_encoding,
        )
        outcome = await self._intake.handle(delivery)
        if isinstance(outcome, Accepted):
            if outcome.created and self._fault_exit:
                os._exit(99)
            await self._settle(message, "ack")
            log.info(
                "job.accepted" if outcome.created else "amqp.request_seen",
                job_id=outcome.job_id,
                redelivered=message.redelivered,
            )
            self._notify()
            if outcome.urls and self._on_urls is not None:
                self._on_urls()
        elif isinstance(outcome, Rejected):
            await self._dead_letter(message, delivery, outcome)
        else:
            await asyncio.sleep(_RETRY_PAUSE_SECONDS)
            await self._settle(message, "requeue")

    async def _dead_letter(self, message: AbstractIncomingMessage, delivery: Delivery, rejected: Rejected) -> None:
        log.warning(
            "amqp.request_rejected",
            code=rejected.code,
            reason=rejected.reason,
            request_id=rejected.request_id,
            message_id=message.message_id,
            redelivered=message.redelivered,
        )
        try:
            await self._intake.reject_event(rejected, delivery)
        except Exception as exc:
            log.error("amqp.commit_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(_RETRY_PAUSE_SECONDS)
            await self._settle(message, "requeue")
            return
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-stenod-error-code": rejected.code,
                "x-stenod-reason": rejected.reason[:1000],
                "x-stenod-rejected-at": utc_now(),
                "x-original-queue": self._amqp.request_queue,
                "x-original-message-id": message.message_id or "",
            }
        )
        copy = aio_pika.Message(
            body=message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            type=message.type,
            message_id=str(ULID()),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        assert self._dlx is not None
        try:
            await self._dlx.publish(
                copy,
                routing_key=self._amqp.dead_letter_queue,
                mandatory=True,
                timeout=self._amqp.publish_timeout_seconds,
            )
        except (*_AMQP_ERRORS, TimeoutError) as exc:
            # Not acked: the broker redelivers it and the next attempt dead-letters it again.
            log.error("amqp.dead_letter_failed", error=str(exc) or type(exc).__name__)
            await self._settle(message, "requeue")
            return
        await self._settle(message, "ack")

    async def _settle(self, message: AbstractIncomingMessage, how: str) -> None:
        try:
            if how == "ack":
                await self._acks.ack(message)
            else:
                try:
                    await message.reject(requeue=True)
                finally:
                    self._acks.settled(message)
        except _AMQP_ERRORS as exc:
            # The channel was replaced by a reconnect: the broker has requeued this delivery
            # and will redeliver it; request_id idempotency makes that harmless.
            log.info("amqp.settle_after_reconnect", how=how, error=type(exc).__name__)


@dataclass(frozen=True, slots=True)
class AmqpParts:
    """The queue interface's components, for the composition root."""

    link: BrokerLink
    intake: RequestIntake
    source: AmqpSource
    relay: RelayProcess
    fetcher: UrlFetchService

    async def aclose(self) -> None:
        """After the TaskGroup ended: close the broker connection and the intake's thread."""
        try:
            await self.link.aclose()
        finally:
            self.intake.close()

    @property
    def services(self) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
        return [self.link.run, self.relay.run, self.fetcher.run]


def build_amqp(
    settings: Settings,
    journal: SqliteJournal,
    providers: ProviderLookup,
    notify: Callable[[], None],
    *,
    metrics: Any = None,
) -> AmqpParts:
    """Wire the broker link, request consumer, outbox relay and URL fetcher from the settings.

    The caller runs ``services`` in its TaskGroup, adds ``source`` to its sources and calls
    ``aclose`` after the TaskGroup ended.
    """
    amqp = settings.amqp
    link = BrokerLink(amqp, on_state=getattr(metrics, "set_consumer_connected", None))
    policy = UrlPolicy(allow_http=amqp.allow_http_urls, allow_private=amqp.allow_private_urls)
    downloader = UrlDownloader(
        policy,
        max_bytes=amqp.max_download_bytes,
        timeout_seconds=amqp.download_timeout_seconds,
        min_free_bytes=settings.min_free_bytes,
        user_agent=settings.http.user_agent,
    )
    fetcher = UrlFetchService(journal, downloader, notify, amqp.downloads_dir or settings.state_dir / "downloads")
    intake = RequestIntake(journal, amqp, providers, default_provider=settings.default_provider, url_policy=policy)
    source = AmqpSource(
        link,
        intake,
        amqp,
        notify=notify,
        on_urls=fetcher.wake,
        grace_seconds=min(10.0, settings.shutdown_grace_seconds),
    )
    relay = RelayProcess(settings, journal, metrics=metrics)
    return AmqpParts(link, intake, source, relay, fetcher)
