"""What the Wyoming listener counts, on the daemon's Prometheus registry. Labels are
provider names and outcome codes: bounded sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WyomingMetrics"]

# A voice command's answer is expected in tenths of a second, never minutes.
_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class WyomingMetrics:
    """Commands by outcome, their latency from ``audio-stop`` to ``transcript``, clients."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._commands = Counter(
            "stenod_wyoming_commands",
            "Voice commands received over Wyoming, by provider and outcome (ok or an error code).",
            ["provider", "outcome"],
            registry=registry,
        )
        self._latency = Histogram(
            "stenod_wyoming_latency_seconds",
            "Seconds from a command's audio-stop to its transcript.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._audio = Counter(
            "stenod_wyoming_audio_seconds", "Seconds of command audio transcribed.", ["provider"], registry=registry
        )
        self._clients = Gauge("stenod_wyoming_clients", "Wyoming connections open now.", registry=registry)
        self._listening = Gauge(
            "stenod_wyoming_listening", "1 while the Wyoming listener accepts connections.", registry=registry
        )

    def answered(self, provider: str, seconds: float, audio_seconds: float) -> None:
        self._commands.labels(provider, "ok").inc()
        self._latency.labels(provider).observe(max(0.0, seconds))
        self._audio.labels(provider).inc(max(0.0, audio_seconds))

    def failed(self, provider: str, code: str) -> None:
        self._commands.labels(provider, code).inc()

    def client(self, delta: int) -> None:
        self._clients.inc(delta)

    def listening(self, on: bool) -> None:
        self._listening.set(1 if on else 0)
