"""Provider pauses as a daemon holds them (on the real SQLite journal)."""

from __future__ import annotations

import asyncio
import time

from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.dispatch.pacing import ProviderPauses


def _seconds_left(pauses: ProviderPauses, provider: str) -> float:
    until = pauses.until(provider)
    assert until is not None, f"{provider} is not paused"
    return until - time.time()


async def test_a_pause_holds_at_once_and_a_restarted_daemon_reads_what_it_recorded(tmp_path):
    journal = SqliteJournal.open(tmp_path / "journal.db")
    try:
        pauses = ProviderPauses(journal)
        await pauses.refresh()
        assert pauses.until("sarvam") is None
        await pauses.pause("sarvam", 30.0)
        assert 25 < _seconds_left(pauses, "sarvam") <= 30
        assert pauses.until("vachana") is None
    finally:
        await journal.aclose()

    again = SqliteJournal.open(tmp_path / "journal.db")  # the daemon restarted within the pause
    try:
        restarted = ProviderPauses(again)
        assert restarted.until("sarvam") is None  # nothing known before the first read
        await restarted.refresh()
        assert 25 < _seconds_left(restarted, "sarvam") <= 30
    finally:
        await again.aclose()


async def test_a_shorter_pause_does_not_cut_a_longer_one_short_and_an_ended_one_is_over(tmp_path):
    journal = SqliteJournal.open(tmp_path / "journal.db")
    try:
        pauses = ProviderPauses(journal)
        await pauses.pause("sarvam", 30.0)
        await pauses.pause("sarvam", 1.0)
        assert _seconds_left(pauses, "sarvam") > 25
        await pauses.pause("vachana", 0.01)
        await asyncio.sleep(0.05)
        assert pauses.until("vachana") is None
    finally:
        await journal.aclose()
