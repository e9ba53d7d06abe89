"""The status page's facts, in words: health checks, the broker link, providers with their
waiting and running jobs, watched folders, and what the metrics have counted."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry

from stenod.adapters.http.context import HttpContext

__all__ = ["system_values"]

_CHECK_SECONDS = 2.0


async def _checks(ctx: HttpContext) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, check in sorted(ctx.checks.items()):
        try:
            async with asyncio.timeout(_CHECK_SECONDS):
                results[name] = {"ok": bool(await check())}
        except TimeoutError:
            results[name] = {"ok": False, "error": "no answer"}
        except Exception as exc:  # a failing check is a fact for the page, not an error of it
            results[name] = {"ok": False, "error": type(exc).__name__}
    return results


def _figures(registry: CollectorRegistry) -> list[str]:
    totals: dict[str, float] = defaultdict(float)
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "stenod_items_total":
                totals[f"items {sample.labels.get('state')}"] += sample.value
            elif sample.name == "stenod_audio_seconds_total":
                totals["audio"] += sample.value
            elif sample.name == "stenod_cost_total":
                totals[f"cost {sample.labels.get('currency')}"] += sample.value
            elif sample.name == "stenod_retries_total":
                totals["retries"] += sample.value
    lines = [
        f"{int(totals.get('items succeeded', 0))} files transcribed or translated, "
        f"{int(totals.get('items failed', 0))} failed",
        f"{totals.get('audio', 0) / 3600:.2f} hours of audio",
        f"{int(totals.get('retries', 0))} provider steps retried",
    ]
    lines += [f"spent {value:.4f} {key.split(' ', 1)[1]}" for key, value in totals.items() if key.startswith("cost ")]
    return lines


async def system_values(ctx: HttpContext) -> dict[str, Any]:
    names, unavailable = ctx.daemon.providers()
    configured = ctx.daemon.configured()
    counts = await ctx.journal.counts()
    providers = []
    for name in sorted(set(names) | set(unavailable) | set(counts)):
        states = counts.get(name, {})
        providers.append(
            {
                "name": name,
                "ready": name in names,
                "configured": name in configured,
                "reason": unavailable.get(name, "not installed"),
                "waiting": states.get("accepted", 0),
                "running": states.get("submitted", 0) + states.get("running", 0),
            }
        )
    return {
        "checks": await _checks(ctx),
        "status_lines": ctx.daemon.status_lines(),
        "providers": providers,
        "watched": ctx.daemon.watched(),
        "figures": _figures(ctx.registry),
    }
