"""Request intake: one request (from the queue or HTTP) becomes a committed job, a cancel,
or a rejection that says why. The sources are thin callers of this; none has job logic.

The order is fixed: parse and validate the body (:mod:`stenod.intake.request_message`), check the
provider, task, languages and options, check files and URLs (through :class:`InputChecks`,
which the composition root implements on the file system and the network), then commit
the job. A repeated ``request_id`` returns the existing job, never a second one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import PurePath
from typing import Any

import structlog
from ulid import ULID

from stenod.dispatch.packing_pass import is_url
from stenod.errors import Rejected
from stenod.events import EventKind, JobEvent, utc_now
from stenod.intake.intake_values import (
    Accepted,
    Delivery,
    InputChecks,
    Outcome,
    ProviderLookup,
    Retry,
    Runtime,
    Upload,
)
from stenod.intake.request_message import CancelRequest, JobSpec, ProviderInfo, Request, check_request, parse_body
from stenod.journal import Journal, NewItem, NewJob
from stenod.output_spec import OutputSpec
from stenod.speakers import Diarization, KnownSpeaker
from stenod.who_spoke.voices import with_remembered

__all__ = [
    "Accepted",
    "Delivery",
    "InputChecks",
    "Outcome",
    "ProviderLookup",
    "RequestIntake",
    "Retry",
    "Upload",
]

log = structlog.get_logger("stenod.intake")

CANCEL_TYPE = "stenod.cancel"
REQUEST_TYPE = "stenod.request"


class RequestIntake:
    """Turns requests into committed jobs, cancels or rejections (no transport here)."""

    def __init__(
        self,
        journal: Journal,
        checks: InputChecks,
        providers: ProviderLookup,
        *,
        default_provider: str,
        max_body_bytes: int,
        recall_voices: bool = True,
    ) -> None:
        self._journal = journal
        self._checks = checks
        self._providers = providers
        self._default_provider = default_provider
        self._max_body_bytes = max_body_bytes
        self._recall_voices = recall_voices  # [diarization] remember_voices
        self._infos: tuple[Mapping[str, Runtime], dict[str, ProviderInfo]] | None = None

    def close(self) -> None:
        """Stop the checks' worker thread (after the sources stopped)."""
        self._checks.close()

    def provider_infos(self) -> tuple[dict[str, ProviderInfo], Mapping[str, str]]:
        """Limits and option models of the available providers, and why others are not."""
        runtimes, unavailable = self._providers()
        if self._infos is None or self._infos[0] is not runtimes:  # new runtimes come with a reload
            infos = {name: ProviderInfo(rt.limits, type(rt.provider).Options) for name, rt in runtimes.items()}
            self._infos = runtimes, infos
        return self._infos[1], unavailable

    @property
    def default_provider(self) -> str:
        return self._default_provider

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
        return await self._commit(job)

    async def accept_upload(
        self,
        spec: JobSpec,
        upload: Upload,
        *,
        output_dir: str,
        source: str = "http",
        keep: bool = False,
        known: tuple[KnownSpeaker, ...] = (),
    ) -> Accepted | Rejected | Retry:
        """A job for one uploaded file. Its outputs go to ``output_dir``; the uploaded file is
        removed when the job ends, unless ``keep`` (the page keeps it, to play it). ``known``:
        voices to label by name (their reference clips already kept for the job). The same
        audio already transcribed with the same settings reuses that result (no second run,
        no second bill)."""
        infos, unavailable = self.provider_infos()
        try:
            provider, options = check_request(
                spec, infos, unavailable, default_provider=self._default_provider, request_id=spec.request_id
            )
            diarization = spec.diarization(known)
        except ValueError as exc:
            return Rejected("invalid_request", str(exc), request_id=spec.request_id, task=spec.task)
        except Rejected as rejected:
            return rejected
        diarization = await self._recalled(diarization)
        extension = PurePath(upload.path).suffix.lower().lstrip(".")
        formats = infos[provider].limits.formats
        if extension not in formats:
            return Rejected(
                "unsupported_format",
                f"{upload.name}: .{extension or '(none)'} files are not supported by {provider} "
                f"(it takes {', '.join(sorted(formats))})",
                request_id=spec.request_id,
                task=spec.task,
                provider=provider,
            )
        reused = await self._journal.reusable_result(
            upload.sha256, provider, spec.task, spec.language, spec.target_languages, options, diarization
        )
        item = NewItem(
            input=upload.name,
            name=upload.name,
            path=upload.path,
            size=upload.size,
            device=upload.device,
            inode=upload.inode,
            content_hash=upload.sha256,
            reused_result=reused,
        )
        output = self._output(spec, output_dir, after="keep" if keep else "discard")
        job = NewJob(
            source=source,
            task=spec.task,
            provider=provider,
            items=[item],
            language=spec.language,
            target_languages=spec.target_languages,
            options=options,
            output=output,
            request_id=spec.request_id,
            diarization=diarization,
        )
        return await self._commit(job)

    async def _commit(self, job: NewJob) -> Accepted | Retry:
        try:
            view, created = await self._journal.create_job(job)
            if not created:  # a redelivery or a client retry: answer with the existing job's events
                await self._journal.emit_for_existing(view.job_id)
        except Exception as exc:  # the journal could not commit: the caller retries (redelivery, 503)
            log.error("intake.commit_failed", error=f"{type(exc).__name__}: {exc}")
            return Retry(f"journal commit failed: {exc}")
        return Accepted(view.job_id, created, urls=any(i.path is None for i in job.items))

    async def _job(self, delivery: Delivery) -> NewJob:
        request: Request = parse_body(delivery.body, Request, max_body_bytes=self._max_body_bytes)
        request_id = request.request_id or delivery.message_id
        infos, unavailable = self.provider_infos()
        provider, options = check_request(
            request, infos, unavailable, default_provider=self._default_provider, request_id=request_id
        )
        context = {"request_id": request_id, "task": request.task, "provider": provider}
        try:
            items, output_dir = await self._local_checks(request)
        except Rejected as exc:
            raise Rejected(exc.code, exc.reason, **context) from None
        output = self._output(request, output_dir, resolved=True)  # symlinks resolved: the writer refuses new ones
        return NewJob(
            source=delivery.source,
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
            diarization=await self._recalled(request.diarization()),
        )

    async def _recalled(self, asked: Diarization | None) -> Diarization | None:
        """A request to say who spoke, with the voices people named before."""
        if asked is None or not self._recall_voices:
            return asked
        return with_remembered(asked, await self._journal.known_voices())

    @staticmethod
    def _output(spec: JobSpec, output_dir: str | None, *, after: str = "keep", resolved: bool = False) -> OutputSpec:
        asked = spec.output
        return OutputSpec.build(
            dir=output_dir,
            formats=asked.formats if asked is not None else None,
            after=after,
            resolved=resolved,
            then_translate_to=asked.chain_languages if asked is not None else (),
            translate_provider=asked.translate_provider if asked is not None else None,
        )

    async def _local_checks(self, request: Request) -> tuple[list[NewItem], str | None]:
        """Items (paths checked on disk, URLs checked by policy) and the output folder."""
        paths = [i.path for i in request.inputs if i.path is not None]
        wanted_dir = request.output.dir if request.output is not None else None
        local: list[NewItem] = []
        output_dir = None
        if paths or wanted_dir is not None:  # one trip to the checks for all the file-system work
            local, output_dir = await self._checks.paths(paths, wanted_dir)
        found = iter(local)
        items = []
        for ref in request.inputs:
            if ref.path is not None:
                items.append(next(found))
            else:
                assert ref.url is not None
                await self._checks.url(ref.url)
                items.append(NewItem(input=ref.url, name=self._checks.name_of(ref.url)))
        return items, output_dir

    async def retry(self, job_id: str) -> Accepted | Rejected | Retry:
        """A new job with the inputs and request of ``job_id``, linked to it. Files are checked
        again (they may have changed or gone); URLs are fetched again."""
        repeat = await self._journal.repeat_of(job_id)
        if repeat is None:
            return Rejected("unknown_job", f"no job {job_id} to retry")
        paths = [i.path for i in repeat.items if i.path is not None and not is_url(i.input)]
        try:
            found = iter(await self._checks.files(paths) if paths else [])
        except Rejected as rejected:
            return Rejected(rejected.code, f"cannot retry job {job_id}: {rejected.reason}")
        items = [
            NewItem(input=i.input, name=i.name) if is_url(i.input) else _again(next(found), i) for i in repeat.items
        ]
        return await self._commit(replace(repeat, items=items, request_id=None, source="retry"))

    async def cancel(self, job_id: str) -> Accepted | Rejected | Retry:
        """Ask for a job to be cancelled (the dispatcher stops it at its next step)."""
        try:
            view = await self._journal.request_cancel(job_id)
        except Exception as exc:  # the journal could not commit
            log.error("intake.commit_failed", error=f"{type(exc).__name__}: {exc}")
            return Retry(f"journal commit failed: {exc}")
        if view is None:
            return Rejected("unknown_job", f"no job {job_id} to cancel")
        log.info("job.cancel_requested", job_id=view.job_id, state=str(view.state))
        return Accepted(view.job_id, created=False)

    async def _cancel(self, delivery: Delivery) -> Accepted | Retry:
        cancel: CancelRequest = parse_body(delivery.body, CancelRequest, max_body_bytes=self._max_body_bytes)
        outcome = await self.cancel(cancel.job_id)
        if isinstance(outcome, Rejected):
            raise outcome
        return outcome

    async def reject_event(self, rejected: Rejected, delivery: Delivery) -> None:
        """Commit the ``stenod.job.rejected`` event that explains a refused request."""
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


def _again(checked: NewItem, recorded: NewItem) -> NewItem:
    """The file as it is now, under the name it was recorded with."""
    return replace(checked, input=recorded.input, name=recorded.name)
