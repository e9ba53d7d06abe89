"""PrometheusMetrics: each method moves the sample it names, on the object's own registry."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY, generate_latest

from stenod.jobs import JobState
from stenod.wiring.metrics import PrometheusMetrics

# The series docs/service.md builds its Grafana queries on: renaming one breaks dashboards.
DOCUMENTED_SERIES = (
    "stenod_jobs_total",
    "stenod_items_total",
    "stenod_jobs_in_flight",
    "stenod_provider_call_duration_seconds_bucket",
    "stenod_provider_errors_total",
    "stenod_retries_total",
    "stenod_outbox_depth",
    "stenod_queue_consumer_connected",
    "stenod_files_seen_total",
    "stenod_files_ignored_total",
    "stenod_audio_seconds_total",
    "stenod_cost_total",
    "stenod_build_info",
)


def value(metrics: PrometheusMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_job_state_counts_every_entry_into_a_state() -> None:
    metrics = PrometheusMetrics()
    metrics.job_state("sarvam", JobState.ACCEPTED)
    metrics.job_state("sarvam", "accepted")
    metrics.job_state("sarvam", JobState.SUCCEEDED)
    assert value(metrics, "stenod_jobs_total", provider="sarvam", state="accepted") == 2
    assert value(metrics, "stenod_jobs_total", provider="sarvam", state="succeeded") == 1


def test_jobs_in_flight_count_only_non_terminal_states() -> None:
    metrics = PrometheusMetrics()
    metrics.set_job_counts({"sarvam": {"accepted": 1, "submitted": 2, "running": 3, "succeeded": 40, "failed": 5}})
    assert value(metrics, "stenod_jobs_in_flight", provider="sarvam") == 6


def test_jobs_in_flight_are_replaced_and_absent_providers_drop_to_zero() -> None:
    metrics = PrometheusMetrics()
    metrics.set_job_counts({"sarvam": {"running": 3}, "whisper": {"accepted": 1}})
    metrics.set_job_counts({"whisper": {"running": 2}})
    assert value(metrics, "stenod_jobs_in_flight", provider="sarvam") == 0
    assert value(metrics, "stenod_jobs_in_flight", provider="whisper") == 2


def test_has_every_method_the_dispatcher_calls() -> None:
    from stenod.dispatch import outcomes

    wanted = {name for name in vars(outcomes.DispatchMetrics) if not name.startswith("_")}
    assert wanted
    assert {name for name in wanted if not callable(getattr(PrometheusMetrics(), name, None))} == set()


def test_provider_call_is_timed_when_it_succeeds_and_when_it_raises() -> None:
    metrics = PrometheusMetrics()
    with metrics.provider_call("sarvam", "poll"):
        pass
    with pytest.raises(TimeoutError), metrics.provider_call("sarvam", "poll"):
        raise TimeoutError
    count = value(metrics, "stenod_provider_call_duration_seconds_count", provider="sarvam", operation="poll")
    assert count == 2


def test_errors_and_retries_are_counted_by_their_labels() -> None:
    metrics = PrometheusMetrics()
    metrics.provider_error("vachana", "rate_limited")
    metrics.provider_error("vachana", "rate_limited")
    metrics.retry("vachana")
    assert value(metrics, "stenod_provider_errors_total", provider="vachana", code="rate_limited") == 2
    assert value(metrics, "stenod_retries_total", provider="vachana") == 1


def test_outbox_depth_and_consumer_state_are_gauges() -> None:
    metrics = PrometheusMetrics()
    metrics.set_outbox_depth(7)
    metrics.set_consumer_connected(True)
    metrics.set_outbox_depth(0)
    metrics.set_consumer_connected(False)
    assert value(metrics, "stenod_outbox_depth") == 0
    assert value(metrics, "stenod_queue_consumer_connected") == 0


def test_files_seen_and_ignored_by_reason() -> None:
    metrics = PrometheusMetrics()
    metrics.file_seen()
    metrics.file_seen()
    metrics.file_ignored("symlink")
    assert value(metrics, "stenod_files_seen_total") == 2
    assert value(metrics, "stenod_files_ignored_total", reason="symlink") == 1


def test_finished_items_add_up_audio_seconds_and_cost() -> None:
    metrics = PrometheusMetrics()
    metrics.item_finished("sarvam", "succeeded", 12.5, {"amount": 0.25, "currency": "inr"})
    metrics.item_finished("sarvam", "succeeded", 2.5, None)
    metrics.item_finished("sarvam", "failed", None, None)
    assert value(metrics, "stenod_items_total", provider="sarvam", state="succeeded") == 2
    assert value(metrics, "stenod_items_total", provider="sarvam", state="failed") == 1
    assert value(metrics, "stenod_audio_seconds_total", provider="sarvam") == 15.0
    assert value(metrics, "stenod_cost_total", provider="sarvam", currency="INR") == 0.25


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_nonsense_amounts_from_a_provider_are_ignored_not_raised(bad: float) -> None:
    metrics = PrometheusMetrics()
    metrics.item_finished("sarvam", "succeeded", 1.0, None)
    metrics.item_finished("sarvam", "succeeded", bad, {"amount": bad, "currency": "USD"})
    assert value(metrics, "stenod_audio_seconds_total", provider="sarvam") == 1.0
    assert value(metrics, "stenod_cost_total", provider="sarvam", currency="USD") is None


def test_each_metrics_object_has_a_private_registry() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.file_seen()
    assert value(second, "stenod_files_seen_total") == 0
    assert REGISTRY.get_sample_value("stenod_files_seen_total") is None


def test_build_info_carries_the_version() -> None:
    assert value(PrometheusMetrics(version="9.9.9"), "stenod_build_info", version="9.9.9") == 1


def test_exposition_has_every_documented_series() -> None:
    metrics = PrometheusMetrics()
    metrics.job_state("whisper", "accepted")
    metrics.set_job_counts({"whisper": {"running": 1}})
    with metrics.provider_call("whisper", "submit"):
        pass
    metrics.provider_error("whisper", "internal_error")
    metrics.retry("whisper")
    metrics.file_ignored("dotfile")
    metrics.item_finished("whisper", "succeeded", 1.0, {"amount": 1.0, "currency": "USD"})
    text = generate_latest(metrics.registry).decode()
    missing = [name for name in DOCUMENTED_SERIES if f"\n{name}" not in "\n" + text]
    assert missing == []
