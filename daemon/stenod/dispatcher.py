"""The dispatcher: the only component that calls providers.

It packs open items into provider jobs within each provider's limits, submits them
(resumably, through checkpoints), polls on a schedule that honours the minimum poll
interval and Retry-After (with jitter), retries retryable errors with backoff up to a
limit, fails permanent errors at once, fetches results and hands them to the sink.
Between steps it sleeps until the next one is due: no busy polling.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, ValidationError

from stenod.errors import ErrorInfo, JobError, PermanentError, RetryableError
from stenod.jobs import BatchState, ItemState
from stenod.journal import BatchRow, ItemOutcome, JobJournal, NewItem, OpenItem
from stenod.packing import Preflight, created_at, freeze, pack, preflight, start_order
from stenod.provider import (
    Batch,
    BatchItem,
    ItemResult,
    Json,
    Limits,
    Provider,
    RemoteState,
    Segment,
    Status,
    Task,
    is_finished,
)
from stenod.settings import RetrySettings

log = structlog.get_logger("stenod.dispatcher")

_CANCEL_CHECK_SECONDS = 2.0


class OutputSink(Protocol):
    """Writes an item's outputs (or its error file). Called in a worker thread."""

    def write_result(self, item: OpenItem, result: ItemResult, *, sync_folder: bool = True) -> list[str]:
        """With ``sync_folder=False`` the caller calls ``sync_folders`` before relying on the files."""
        ...

    def write_error(self, item: OpenItem, error: ErrorInfo) -> list[str]: ...

    def sync_folders(self, folders: Iterable[Path]) -> None: ...


class Metrics(Protocol):
    def provider_call(self, provider: str, operation: str) -> Any: ...
    def provider_error(self, provider: str, code: str) -> None: ...
    def retry(self, provider: str) -> None: ...
    def item_finished(
        self, provider: str, state: str, audio_seconds: float | None, cost: Mapping[str, Any] | None
    ) -> None: ...


@dataclass(slots=True)
class ProviderRuntime:
    """A configured provider with what the dispatcher needs to pace it."""

    name: str
    provider: Provider
    limits: Limits
    poll_interval: float
    max_concurrent_jobs: int
    in_flight: int = 0


@dataclass(slots=True)
class _Schedule:
    heap: list[tuple[float, str]] = field(default_factory=list)
    due: dict[str, float] = field(default_factory=dict)

    def push(self, batch_id: str, when: float) -> None:
        self.due[batch_id] = when
        heapq.heappush(self.heap, (when, batch_id))

    def pop_due(self, now: float) -> list[str]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            when, batch_id = heapq.heappop(self.heap)
            if self.due.get(batch_id) == when:
                del self.due[batch_id]
                out.append(batch_id)
        return out

    def next_time(self) -> float | None:
        while self.heap and self.due.get(self.heap[0][1]) != self.heap[0][0]:
            heapq.heappop(self.heap)
        return self.heap[0][0] if self.heap else None


class LiveText(Protocol):
    """Where decoded text goes before the job ends (the HTTP streams' watch)."""

    def segment(self, job_id: str, segment: Mapping[str, Any]) -> None: ...
    def finished(self, job_ids: Iterable[str]) -> None: ...


class JournalStepContext:
    """The StepContext handed to ``submit``: checkpoints go to the journal."""

    def __init__(
        self,
        journal: JobJournal,
        batch_id: str,
        saved: Mapping[str, Json] | None,
        on_progress: Callable[[float], None],
        on_segment: Callable[[str, Segment], None] | None = None,
    ) -> None:
        self._journal = journal
        self._batch_id = batch_id
        self._saved = saved
        self._on_progress = on_progress
        self._on_segment = on_segment

    @property
    def saved(self) -> Mapping[str, Json] | None:
        return self._saved

    async def checkpoint(self, data: Mapping[str, Json]) -> None:
        await self._journal.save_checkpoint(self._batch_id, data)
        self._saved = dict(data)

    def progress(self, fraction: float) -> None:
        self._on_progress(fraction)

    def segment(self, item_id: str, segment: Segment) -> None:
        if self._on_segment is not None:
            self._on_segment(item_id, segment)


def backoff_delay(attempt: int, policy: RetrySettings, retry_after: float | None) -> float:
    """Exponential backoff with equal jitter; Retry-After, when given, is a floor."""
    cap = min(policy.max_seconds, policy.base_seconds * 2 ** max(0, attempt - 1))
    delay: float = cap / 2 + random.uniform(0, cap / 2)
    if retry_after is not None:
        delay = max(retry_after, min(delay, retry_after + policy.base_seconds))
        delay += random.uniform(0, min(1.0, retry_after * 0.1))
    return delay


class Dispatcher:
    def __init__(
        self,
        journal: JobJournal,
        runtimes: Mapping[str, ProviderRuntime],
        sink: OutputSink,
        policy: RetrySettings,
        *,
        probe: Callable[[Path], float | None],
        pack_window_seconds: float = 1.0,
        progress_interval_seconds: float = 5.0,
        grace_seconds: float = 20.0,
        metrics: Metrics | None = None,
        idle: asyncio.Event | None = None,
        live: LiveText | None = None,
    ) -> None:
        self._journal = journal
        self._runtimes = runtimes
        self._sink = sink
        self._policy = policy
        self._probe = probe
        self._pack_window = pack_window_seconds
        self._progress_interval = progress_interval_seconds
        self._grace = grace_seconds
        self._metrics = metrics
        self._live = live
        self._wake = asyncio.Event()
        self._dirty = True
        self._schedule = _Schedule()
        self._batches: dict[str, BatchRow] = {}
        self._running: set[str] = set()
        self._preflight: dict[str, Preflight] = {}
        self._finishing: set[str] = set()
        self._last_progress: dict[str, float] = {}
        self._pack_wakeup: float | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = False
        self.idle = idle  # set whenever nothing is left to do (tests, `stenod transcribe`)

    # -- called by sources ----------------------------------------------------------

    def notify(self) -> None:
        """New work was committed to the journal (a job accepted, a cancel requested)."""
        self._dirty = True
        self._wake.set()

    def replace_runtimes(self, runtimes: Mapping[str, ProviderRuntime]) -> None:
        """A reload: steps already running keep the provider they started with."""
        for name, runtime in runtimes.items():
            old = self._runtimes.get(name)
            if old is not None and old is not runtime:
                runtime.in_flight = old.in_flight
        self._runtimes = runtimes
        self.notify()

    @property
    def active_jobs(self) -> int:
        return len(self._batches) + len(self._running)

    # -- main loop ------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        for batch in await self._journal.active_batches():
            self._adopt(batch)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    tg.create_task(self._relay_stop(stopping), name="dispatcher:stop-relay")
                    while not stopping.is_set():
                        if self._dirty:
                            self._dirty = False
                            await self._intake(tg)
                        self._launch_due(tg)
                        await self._sleep()
                    self._stopping = True
                    log.info("dispatcher.draining", in_flight=len(self._running), grace_seconds=self._grace)
                    deadline.reschedule(loop.time() + self._grace)
        except TimeoutError:
            log.warning("dispatcher.grace_expired", interrupted=len(self._running))
        finally:
            self._tg = None

    async def _relay_stop(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._wake.set()

    async def _sleep(self) -> None:
        now = time.time()
        candidates = [t for t in (self._schedule.next_time(), self._pack_wakeup) if t is not None]
        if self._batches or self._running:
            candidates.append(now + _CANCEL_CHECK_SECONDS)
        timeout = max(0.0, min(candidates) - now) if candidates else None
        if (
            self.idle is not None
            and not self._batches
            and not self._running
            and not self._finishing
            and self._pack_wakeup is None
            and not self._dirty
        ):
            self.idle.set()
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()
        if self._pack_wakeup is not None and time.time() >= self._pack_wakeup:
            self._pack_wakeup = None
            self._dirty = True
        if self._batches or self._running:
            self._dirty = True  # re-check cancellations and freed capacity

    def _adopt(self, batch: BatchRow) -> None:
        self._batches[batch.batch_id] = batch
        runtime = self._runtimes.get(batch.provider)
        if runtime is not None:
            runtime.in_flight += 1
        self._schedule.push(batch.batch_id, batch.next_at)

    def _launch_due(self, tg: asyncio.TaskGroup) -> None:
        if self._stopping:
            return
        for batch_id in self._schedule.pop_due(time.time()):
            batch = self._batches.pop(batch_id, None)
            if batch is None:
                continue
            self._running.add(batch_id)
            tg.create_task(self._step(batch), name=f"batch:{batch_id}")

    # -- intake: preflight, cancel, pack --------------------------------------------

    async def _intake(self, tg: asyncio.TaskGroup) -> None:
        full = [name for name, rt in self._runtimes.items() if rt.in_flight >= rt.max_concurrent_jobs]
        items = await self._journal.open_items(skip_providers=full)
        cancelled = set(await self._journal.cancel_requested_jobs())
        if cancelled:
            await self._cancel_batches(cancelled)
        failures: list[tuple[OpenItem, ErrorInfo]] = []
        packable: list[tuple[OpenItem, ProviderRuntime]] = []
        for item in items:
            if item.item_id in self._finishing:
                continue
            if item.cancel_requested:
                self._finish_later(tg, [item], cancelled=True)
                continue
            if item.state == ItemState.FETCHED:
                self._finish_later(tg, [item], reused=True)
                continue
            if item.path is None and is_url(item.input):
                continue  # the URL fetcher attaches the file first
            runtime = self._runtimes.get(item.provider)
            if runtime is None:
                failures.append(
                    (
                        item,
                        ErrorInfo(
                            "unknown_provider",
                            f"provider {item.provider!r} is not available",
                            hint="Check `stenod providers` and the provider's configuration.",
                        ),
                    )
                )
                continue
            packable.append((item, runtime))
        await self._preflight_new(packable)
        groups: dict[tuple[Any, ...], list[OpenItem]] = defaultdict(list)
        for item, _ in packable:
            check = self._preflight.get(item.item_id)
            if check is None:
                continue  # it finished while the files were checked: this snapshot of it is stale
            if check.error is not None:
                failures.append((item, check.error))
                continue
            key = (item.provider, item.task, item.language, item.target_languages, freeze(item.options))
            groups[key].append(item)
        if failures:
            for item, error in failures:
                self._finish_later(tg, [item], error=error)
        self._pack_wakeup = None
        now = time.time()
        for key, members in groups.items():
            runtime = self._runtimes[key[0]]
            if runtime.limits.max_files == 1:
                members = start_order(members)
            batches = pack(runtime.limits, members)
            oldest = min(created_at(m) for m in members)
            filled = len(batches) > 1 or (
                runtime.limits.max_files is not None and len(batches[0]) >= runtime.limits.max_files
            )
            if not filled and now - oldest < self._pack_window:
                wake = oldest + self._pack_window
                self._pack_wakeup = wake if self._pack_wakeup is None else min(self._pack_wakeup, wake)
                continue
            for chunk in batches:
                if runtime.in_flight >= runtime.max_concurrent_jobs:
                    break
                batch = await self._journal.create_batch(runtime.name, [i.item_id for i in chunk], next_at=time.time())
                for i in chunk:
                    self._preflight.pop(i.item_id, None)
                self._adopt(batch)

    async def _preflight_new(self, items: Sequence[tuple[OpenItem, ProviderRuntime]]) -> None:
        """Check the files of items seen for the first time, all in one worker-thread call."""
        todo = [(item, runtime) for item, runtime in items if item.item_id not in self._preflight]
        if not todo:
            return

        def check_all() -> list[Preflight]:
            return [preflight(runtime.name, runtime.limits, item, self._probe) for item, runtime in todo]

        for (item, _), check in zip(todo, await asyncio.to_thread(check_all), strict=True):
            self._preflight[item.item_id] = check

    async def _cancel_batches(self, job_ids: set[str]) -> None:
        for batch_id, batch in list(self._batches.items()):
            mine = [i for i in batch.items if i.job_id in job_ids]
            if not mine:
                continue
            runtime = self._runtimes.get(batch.provider)
            if len(mine) == len(batch.items) and batch.handle is not None and runtime is not None:
                try:
                    await runtime.provider.cancel(batch.handle)
                except JobError as exc:
                    log.warning("provider.cancel_failed", provider=batch.provider, error=exc.message)
            outcomes = [
                ItemOutcome(i.item_id, ItemState.CANCELLED, error=ErrorInfo("cancelled", "cancelled on request"))
                for i in mine
            ]
            done = len(mine) == len(batch.items)
            await self._journal.finish_items(
                outcomes, batch_id=batch_id if done else None, batch_state=BatchState.FAILED if done else None
            )
            if done:
                self._forget(batch_id, batch.provider)

    def _forget(self, batch_id: str, provider: str) -> None:
        self._batches.pop(batch_id, None)
        self._schedule.due.pop(batch_id, None)
        runtime = self._runtimes.get(provider)
        if runtime is not None:
            runtime.in_flight = max(0, runtime.in_flight - 1)

    # -- finishing items outside a provider job -------------------------------------

    def _finish_later(
        self,
        tg: asyncio.TaskGroup,
        items: list[OpenItem],
        *,
        error: ErrorInfo | None = None,
        reused: bool = False,
        cancelled: bool = False,
    ) -> None:
        for item in items:
            self._finishing.add(item.item_id)
        tg.create_task(
            self._finish_direct(items, error=error, reused=reused, cancelled=cancelled),
            name=f"finish:{items[0].item_id}",
        )

    async def _finish_direct(
        self, items: list[OpenItem], *, error: ErrorInfo | None, reused: bool, cancelled: bool
    ) -> None:
        try:
            outcomes = []
            for item in items:
                with structlog.contextvars.bound_contextvars(job_id=item.job_id, provider=item.provider):
                    if cancelled:
                        outcomes.append(
                            ItemOutcome(
                                item.item_id, ItemState.CANCELLED, error=ErrorInfo("cancelled", "cancelled on request")
                            )
                        )
                    elif reused and item.result is not None:
                        result = _result_from_json(item.item_id, item.result)
                        outcomes.append(await self._write(item, result))
                        log.info("item.reused", input=item.input)
                    else:
                        info = error or ErrorInfo("internal_error", "item could not be processed")
                        outcomes.append(await self._write_failure(item, info))
            await self._journal.finish_items(outcomes)
        finally:
            for item in items:
                self._finishing.discard(item.item_id)
                self._preflight.pop(item.item_id, None)
            self._dirty = True
            self._wake.set()

    async def _write(self, item: OpenItem, result: ItemResult) -> ItemOutcome:
        return await asyncio.to_thread(self._write_now, item, result)

    def _write_now(self, item: OpenItem, result: ItemResult, *, sync_folder: bool = True) -> ItemOutcome:
        """Write one item's outputs (or error file) and say what happened. Runs in a worker thread."""
        if result.error is not None and result.documents:
            # Some target languages arrived, others failed: keep what arrived, report the rest.
            written = self._sink.write_result(item, replace(result, error=None), sync_folder=sync_folder)
            failure = self._write_failure_now(item, result.error)
            return replace(failure, outputs=[*written, *failure.outputs])
        if result.error is not None:
            return self._write_failure_now(item, result.error)
        try:
            outputs = self._sink.write_result(item, result, sync_folder=sync_folder)
        except OSError as exc:
            return self._write_failure_now(
                item,
                ErrorInfo(
                    "output_failed",
                    f"could not write outputs for {item.name}: {exc.strerror or exc}",
                    hint="Check that the output folder exists and is writable.",
                ),
            )
        payload: dict[str, Any] = {}
        if result.transcript is not None:
            payload["transcript"] = result.transcript.to_json()
        if result.documents:
            payload["documents"] = [d.language for d in result.documents]
        cost = {"amount": result.cost.amount, "currency": result.cost.currency} if result.cost else None
        if self._metrics is not None:
            self._metrics.item_finished(
                item.provider, "succeeded", result.transcript.duration if result.transcript else None, cost
            )
        log.info("item.succeeded", input=item.input, outputs=len(outputs))
        return ItemOutcome(
            item.item_id,
            ItemState.SUCCEEDED,
            outputs=outputs,
            result=payload,
            cost=cost,
            follow_up=self._chained(item, outputs) if result.transcript is not None else None,
        )

    def _write_batch(self, pairs: Sequence[tuple[OpenItem, ItemResult]]) -> list[ItemOutcome]:
        """All items of one provider job in one worker-thread call, each folder synced once."""
        outcomes = []
        for item, result in pairs:
            with structlog.contextvars.bound_contextvars(job_id=item.job_id):
                outcomes.append(self._write_now(item, result, sync_folder=False))
        # Before the journal records them: the renames must be durable first.
        self._sink.sync_folders({Path(o).parent for outcome in outcomes for o in outcome.outputs})
        return outcomes

    @staticmethod
    def _chained(item: OpenItem, outputs: Sequence[str]) -> NewItem | None:
        """Transcribe-then-translate: the transcript becomes a translate item of the same job."""
        languages = item.output.get("then_translate_to")
        text = next((o for o in outputs if o.endswith(".txt")), None)
        if not languages or text is None or item.task != Task.TRANSCRIBE:
            return None
        st = Path(text).stat()
        return NewItem(
            input=text,
            name=Path(text).name,
            path=text,
            size=st.st_size,
            device=st.st_dev,
            inode=st.st_ino,
            task=str(Task.TRANSLATE),
            provider=item.output.get("translate_provider") or "azure",
            target_languages=tuple(languages),
            options={},
        )

    async def _write_failure(self, item: OpenItem, error: ErrorInfo) -> ItemOutcome:
        return await asyncio.to_thread(self._write_failure_now, item, error)

    def _write_failure_now(self, item: OpenItem, error: ErrorInfo) -> ItemOutcome:
        try:
            outputs = self._sink.write_error(item, error)
        except OSError as exc:
            log.error("item.error_file_failed", input=item.input, error=str(exc))
            outputs = []
        if self._metrics is not None:
            self._metrics.item_finished(item.provider, "failed", None, None)
        log.warning("item.failed", input=item.input, code=error.code, message=error.message)
        return ItemOutcome(item.item_id, ItemState.FAILED, outputs=outputs, error=error)

    # -- provider steps ---------------------------------------------------------------

    async def _step(self, batch: BatchRow) -> None:
        runtime = self._runtimes.get(batch.provider)
        keep = True
        with structlog.contextvars.bound_contextvars(
            batch_id=batch.batch_id,
            provider=batch.provider,
            job_id=",".join(sorted({i.job_id for i in batch.items})),
        ):
            try:
                if runtime is None:
                    raise PermanentError(f"provider {batch.provider!r} is not available", code="unknown_provider")
                if not batch.items:
                    keep = False
                    await self._journal.finish_items([], batch_id=batch.batch_id, batch_state=BatchState.FAILED)
                else:
                    keep = await self._advance(runtime, batch)
            except RetryableError as exc:
                keep = await self._retry(batch, exc)
            except JobError as exc:
                keep = False
                await self._fail_batch(batch, exc.info())
            except asyncio.CancelledError:
                log.info("batch.interrupted", state=str(batch.state))
                raise
            except Exception as exc:  # a bug in a plugin or here: the job fails, the daemon carries on
                log.exception("batch.internal_error")
                keep = False
                await self._fail_batch(
                    batch,
                    ErrorInfo(
                        "internal_error",
                        f"{type(exc).__name__}: {exc}",
                        hint="This is a bug; please report it with the log.",
                    ),
                )
            finally:
                self._running.discard(batch.batch_id)
                if self._live is not None:  # results (or the error) are in the journal now, or it runs again
                    self._live.finished({i.job_id for i in batch.items})
                if not keep:
                    self._forget(batch.batch_id, batch.provider)
                self._dirty = True
                self._wake.set()

    async def _advance(self, runtime: ProviderRuntime, batch: BatchRow) -> bool:
        """Run steps of one provider job while they are due; False once it is finished."""
        provider = runtime.provider
        if batch.state == BatchState.SUBMITTING:
            value = self._batch_value(runtime, batch)
            ctx = JournalStepContext(
                self._journal,
                batch.batch_id,
                batch.checkpoint,
                lambda f: self._local_progress(batch, f),
                self._segment_sink(batch),
            )
            handle = await self._call(runtime, "submit", provider.submit(value, ctx))
            done = is_finished(handle)
            next_at = time.time() + (0.0 if done else runtime.poll_interval)
            await self._journal.batch_submitted(batch.batch_id, handle, next_at=next_at)
            log.info("batch.submitted", items=len(batch.items))
            batch = _replace(batch, state=BatchState.POLLING, handle=dict(handle), attempts=0, next_at=next_at)
            if not done and runtime.poll_interval > 0:
                self._reschedule(batch, next_at)
                return True
        if batch.state == BatchState.POLLING:
            assert batch.handle is not None
            status = await self._call(runtime, "poll", provider.poll(batch.handle))
            # The interval runs from the answer, not the request: a call delayed on its way
            # (a busy loop, a full connection pool) must not make the next one arrive early.
            poll_time = time.time()
            if status.state in (RemoteState.PENDING, RemoteState.RUNNING):
                delay = max(runtime.poll_interval, status.retry_after or 0.0)
                next_at = poll_time + delay + random.uniform(0, max(0.05, delay * 0.1))
                changed = await self._journal.batch_polled(
                    batch.batch_id,
                    running=status.state == RemoteState.RUNNING,
                    progress=status.progress,
                    next_at=next_at,
                    poll_time=poll_time,
                )
                await self._maybe_progress_events(changed)
                self._reschedule(_replace(batch, attempts=0, last_poll_at=poll_time), next_at)
                return True
            return await self._conclude(runtime, batch, status)
        if batch.state == BatchState.FETCHING:
            return await self._fetch(runtime, batch)
        return False

    async def _conclude(self, runtime: ProviderRuntime, batch: BatchRow, status: Status) -> bool:
        if status.state == RemoteState.DONE:
            await self._journal.batch_state(batch.batch_id, BatchState.FETCHING)
            return await self._fetch(runtime, _replace(batch, state=BatchState.FETCHING))
        if status.state == RemoteState.CANCELLED:
            outcomes = [
                ItemOutcome(
                    i.item_id,
                    ItemState.CANCELLED,
                    error=status.error or ErrorInfo("cancelled", "the provider cancelled the job"),
                )
                for i in batch.items
            ]
            await self._journal.finish_items(outcomes, batch_id=batch.batch_id, batch_state=BatchState.FAILED)
            return False
        await self._fail_batch(
            batch, status.error or ErrorInfo("provider_failed", f"{runtime.name} reported the job failed")
        )
        return False

    async def _fetch(self, runtime: ProviderRuntime, batch: BatchRow) -> bool:
        assert batch.handle is not None
        results = await self._call(runtime, "fetch", runtime.provider.fetch(batch.handle))
        by_id = {r.item_id: r for r in results}
        pairs = [
            (
                item,
                by_id.get(item.item_id)
                or ItemResult(
                    item.item_id,
                    error=ErrorInfo("missing_result", f"{runtime.name} returned no result for {item.name}"),
                ),
            )
            for item in batch.items
            if not item.state.terminal
        ]
        outcomes = await asyncio.to_thread(self._write_batch, pairs)
        await self._journal.finish_items(outcomes, batch_id=batch.batch_id, batch_state=BatchState.DONE)
        release = getattr(runtime.provider, "release", None)
        if release is not None:
            try:
                await release(batch.handle)
            except JobError as exc:  # results are safe; leftovers are the provider's to expire
                log.warning("provider.release_failed", error=exc.message)
        return False

    async def _call(self, runtime: ProviderRuntime, operation: str, awaitable: Any) -> Any:
        if self._metrics is None:
            return await awaitable
        with self._metrics.provider_call(runtime.name, operation):
            try:
                return await awaitable
            except JobError as exc:
                self._metrics.provider_error(runtime.name, exc.code)
                raise

    def _reschedule(self, batch: BatchRow, when: float) -> None:
        self._batches[batch.batch_id] = batch
        self._schedule.push(batch.batch_id, when)

    async def _retry(self, batch: BatchRow, exc: RetryableError) -> bool:
        # The journal, not our copy, has the checkpoints the failed step committed.
        batch = await self._journal.batch(batch.batch_id) or batch
        # A status call the provider asked us to delay (429 + Retry-After) is pacing, not a
        # failure: it does not use up an attempt, or a long job would fail for being polled.
        pacing = batch.state == BatchState.POLLING and exc.retry_after is not None
        attempts = batch.attempts if pacing else batch.attempts + 1
        if attempts >= self._policy.max_attempts:
            await self._fail_batch(
                batch,
                ErrorInfo(exc.code, f"gave up after {attempts} attempts: {exc.message}", retryable=True, hint=exc.hint),
            )
            return False
        delay = backoff_delay(attempts, self._policy, exc.retry_after)
        runtime = self._runtimes.get(batch.provider)
        next_at = time.time() + delay
        if batch.state == BatchState.POLLING and runtime is not None:
            # A refused or failed status call still counts as a call for the provider's pacing.
            next_at = max(next_at, time.time() + runtime.poll_interval)
        await self._journal.batch_retry(batch.batch_id, attempts=attempts, next_at=next_at, error=exc.info())
        if self._metrics is not None:
            self._metrics.retry(batch.provider)
        log.warning(
            "provider.retry_scheduled",
            attempt=attempts,
            delay_seconds=round(delay, 2),
            error=exc.message,
            retry_after=exc.retry_after,
        )
        self._reschedule(_replace(batch, attempts=attempts), next_at)
        return True

    async def _fail_batch(self, batch: BatchRow, error: ErrorInfo) -> None:
        log.warning("batch.failed", code=error.code, message=error.message)
        outcomes = [await self._write_failure(i, error) for i in batch.items if not i.state.terminal]
        await self._journal.finish_items(
            outcomes, batch_id=batch.batch_id, batch_state=BatchState.FAILED, batch_error=error
        )

    def _batch_value(self, runtime: ProviderRuntime, batch: BatchRow) -> Batch:
        first = batch.items[0]
        options_model: type[BaseModel] = type(runtime.provider).Options
        try:
            options = options_model.model_validate(dict(first.options))
        except ValidationError as exc:
            raise PermanentError(
                f"invalid options for {runtime.name}: {exc.errors()[0]['msg']}", code="invalid_options"
            ) from exc
        return Batch(
            batch_id=batch.batch_id,
            task=Task(first.task),
            items=tuple(
                BatchItem(
                    item_id=i.item_id,
                    path=Path(i.path or ""),
                    name=i.name,
                    size=i.size or 0,
                    device=i.device,
                    inode=i.inode,
                )
                for i in batch.items
            ),
            language=first.language,
            target_languages=first.target_languages,
            options=options,
        )

    # -- progress -------------------------------------------------------------------

    def _segment_sink(self, batch: BatchRow) -> Callable[[str, Segment], None] | None:
        live = self._live
        if live is None:
            return None
        jobs = {i.item_id: i.job_id for i in batch.items}

        def sink(item_id: str, segment: Segment) -> None:
            job_id = jobs.get(item_id)
            if job_id is not None:
                live.segment(job_id, {"start": segment.start, "end": segment.end, "text": segment.text})

        return sink

    def _local_progress(self, batch: BatchRow, fraction: float) -> None:
        jobs = sorted({i.job_id for i in batch.items})
        now = time.monotonic()
        due = [j for j in jobs if now - self._last_progress.get(j, 0.0) >= self._progress_interval]
        if not due or self._tg is None:
            return
        for j in due:
            self._last_progress[j] = now
        self._tg.create_task(self._record_progress(due, fraction), name=f"progress:{batch.batch_id}")

    async def _record_progress(self, jobs: list[str], fraction: float) -> None:
        await self._journal.set_progress(jobs, max(0.0, min(0.99, fraction)))
        for job_id in jobs:
            await self._journal.emit_progress(job_id)

    async def _maybe_progress_events(self, job_ids: list[str]) -> None:
        now = time.monotonic()
        for job_id in job_ids:
            if now - self._last_progress.get(job_id, 0.0) >= self._progress_interval:
                self._last_progress[job_id] = now
                await self._journal.emit_progress(job_id)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _replace(batch: BatchRow, **changes: Any) -> BatchRow:
    return replace(batch, **changes)


def _result_from_json(item_id: str, data: Mapping[str, Any]) -> ItemResult:
    from stenod.provider import Transcript

    transcript = data.get("transcript")
    return ItemResult(item_id, transcript=Transcript.from_json(transcript) if transcript else None)
