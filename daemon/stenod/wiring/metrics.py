"""Prometheus metrics: what stenod counts and measures, on a registry of its own.

The composition root creates one :class:`PrometheusMetrics` and hands it to the parts that report;
``/metrics`` (:mod:`stenod.adapters.http.health`) exposes ``metrics.registry``. Nothing is
registered on prometheus-client's global default registry, so tests and several daemons
in one process never collide. Label values must come from bounded sets (provider names,
job states, error codes, ignore reasons), never from file names or ids.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import stenod
from stenod.jobs import JobState

__all__ = ["CALL_BUCKETS", "PrometheusMetrics"]

# Provider calls range from sub-second status polls to multi-minute uploads.
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class PrometheusMetrics:
    """The daemon's metrics, with one plain method per fact the core reports.

    Satisfies the dispatcher's ``DispatchMetrics`` protocol. Methods never raise on odd values (a
    negative duration from a provider is ignored): metrics must not be able to fail a job.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, version: str = stenod.__version__) -> None:
        """Define every metric on ``registry`` (a new private registry by default)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._jobs = Counter("stenod_jobs", "Jobs that entered each public state.", ["provider", "state"], registry=r)
        self._items = Counter(
            "stenod_items",
            "Items (input files) that finished, by provider and final state.",
            ["provider", "state"],
            registry=r,
        )
        self._in_flight = Gauge(
            "stenod_jobs_in_flight",
            "Jobs accepted and not yet in a terminal state.",
            ["provider"],
            registry=r,
        )
        self._call_seconds = Histogram(
            "stenod_provider_call_duration_seconds",
            "Duration of provider plugin calls (submit, poll, fetch, cancel), failures included.",
            ["provider", "operation"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self._errors = Counter(
            "stenod_provider_errors",
            "Provider call failures by error code.",
            ["provider", "code"],
            registry=r,
        )
        self._retries = Counter(
            "stenod_retries", "Provider steps scheduled for another attempt.", ["provider"], registry=r
        )
        self._outbox = Gauge("stenod_outbox_depth", "Events committed but not yet confirmed by the broker.", registry=r)
        self._consumer = Gauge(
            "stenod_queue_consumer_connected",
            "1 while the AMQP request consumer is connected, else 0.",
            registry=r,
        )
        self._files_seen = Counter("stenod_files_seen", "Files noticed in watched folders.", registry=r)
        self._results_removed = Counter(
            "stenod_results_removed", "HTTP upload jobs removed with their files after keep_results_days.", registry=r
        )
        self._results_removed_bytes = Counter(
            "stenod_results_removed_bytes",
            "Bytes of HTTP uploads and results removed after keep_results_days.",
            registry=r,
        )
        self._files_ignored = Counter(
            "stenod_files_ignored",
            "Files in watched folders that were not taken, by reason.",
            ["reason"],
            registry=r,
        )
        self._audio = Counter(
            "stenod_audio_seconds", "Seconds of audio transcribed successfully.", ["provider"], registry=r
        )
        self._cost = Counter(
            "stenod_cost",
            "Cost reported by providers, in each currency's unit.",
            ["provider", "currency"],
            registry=r,
        )
        Gauge("stenod_build_info", "Always 1; the version is in the label.", ["version"], registry=r).labels(
            version
        ).set(1)
        self._in_flight_providers: set[str] = set()
        self._instance = Gauge(
            "stenod_instance_info", "Always 1; this daemon's instance id is in the label.", ["instance"], registry=r
        )
        self._leases = Gauge("stenod_leases_held", "Provider jobs this instance holds a lease on.", registry=r)
        self._claimed = Counter(
            "stenod_leases_claimed",
            "Provider jobs this instance claimed: its own after a restart, or another's whose lease expired.",
            registry=r,
        )
        self._lost = Counter(
            "stenod_leases_lost", "Provider jobs another instance took over from this one.", registry=r
        )

    def instance(self, instance_id: str) -> None:
        """Name this daemon among the instances sharing its journal (once, at start)."""
        self._instance.labels(instance_id).set(1)

    def leases(self, held: int, *, claimed: int = 0, lost: int = 0) -> None:
        """After each lease round: how many this instance holds, claimed and lost."""
        self._leases.set(max(0, held))
        if claimed > 0:
            self._claimed.inc(claimed)
        if lost > 0:
            self._lost.inc(lost)

    def job_state(self, provider: str, state: str) -> None:
        """Count a job entering a public state (``accepted`` … ``cancelled``); call once per transition."""
        self._jobs.labels(provider, str(state)).inc()

    def jobs_entered(self, entered: Sequence[tuple[str, str]]) -> None:
        """Count the states a commit's jobs entered, ``(provider, state)`` each (the journal
        tells them after the commit: a transition that was rolled back is not counted)."""
        for provider, state in entered:
            self.job_state(provider, state)

    def set_job_counts(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Set jobs in flight from the journal's ``{provider: {state: jobs}}`` (``journal.counts()``).

        Jobs in a non-terminal state are in flight; providers missing from ``counts`` drop to 0.
        Call at start-up and then periodically: the journal, not this object, knows what
        survived a restart.
        """
        for provider in self._in_flight_providers - counts.keys():
            self._in_flight.labels(provider).set(0)
        for provider, states in counts.items():
            in_flight = sum(n for state, n in states.items() if state in _IN_FLIGHT)
            self._in_flight.labels(provider).set(max(0, in_flight))
        self._in_flight_providers |= counts.keys()

    def item_finished(
        self, provider: str, state: str, audio_seconds: float | None, cost: Mapping[str, Any] | None
    ) -> None:
        """Count a finished item, with its audio duration and ``{"amount", "currency"}`` cost if known.

        Non-finite or negative durations and amounts are ignored rather than raised.
        """
        self._items.labels(provider, str(state)).inc()
        if audio_seconds is not None and _positive(audio_seconds):
            self._audio.labels(provider).inc(audio_seconds)
        if cost is not None:
            amount, currency = cost.get("amount"), cost.get("currency") or "USD"
            if isinstance(amount, int | float) and _positive(amount):
                self._cost.labels(provider, str(currency).upper()).inc(amount)

    @contextmanager
    def provider_call(self, provider: str, operation: str) -> Iterator[None]:
        """Time one plugin call (``submit``, ``poll``, ``fetch``, ``cancel``), successful or not."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._call_seconds.labels(provider, operation).observe(time.perf_counter() - started)

    def provider_error(self, provider: str, code: str) -> None:
        """Count one failed provider call by its ``ErrorInfo.code``."""
        self._errors.labels(provider, code).inc()

    def retry(self, provider: str) -> None:
        """Count one provider step scheduled for another attempt after a retryable error."""
        self._retries.labels(provider).inc()

    def set_outbox_depth(self, depth: int) -> None:
        """Record how many events wait in the outbox (after each relay pass)."""
        self._outbox.set(max(0, depth))

    def set_consumer_connected(self, connected: bool) -> None:
        """Record whether the AMQP request consumer is connected (on connect and on loss)."""
        self._consumer.set(1 if connected else 0)

    def results_removed(self, jobs: int, removed_bytes: int) -> None:
        """Uploads' jobs forgotten after ``[http] keep_results_days``, and the bytes their files took."""
        self._results_removed.inc(jobs)
        self._results_removed_bytes.inc(removed_bytes)

    def file_seen(self) -> None:
        """Count a file noticed in a watched folder (before any filtering)."""
        self._files_seen.inc()

    def file_ignored(self, reason: str) -> None:
        """Count a file not taken, by a short fixed reason (``dotfile``, ``symlink``, ``duplicate`` …)."""
        self._files_ignored.labels(reason).inc()


_IN_FLIGHT = frozenset(state.value for state in JobState if not state.terminal)


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0
