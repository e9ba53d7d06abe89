"""A provider's request to wait, kept for every instance: when a provider answers a call
with "too many requests, try again after N seconds", that holds for the account, not for
the one provider job whose call got the answer, so every instance sharing the journal
holds back its calls to that provider until then."""

from __future__ import annotations

from stenod.adapters.sql.statements import All, Exec, Op


def pause(provider: str, until: float) -> Op[None]:
    """No call to ``provider`` before ``until`` (the later of this and an earlier pause)."""
    yield Exec(
        "INSERT INTO provider_slots (provider, paused_until) VALUES (?, ?) ON CONFLICT (provider) DO UPDATE "
        "SET paused_until = CASE WHEN provider_slots.paused_until IS NULL "
        "OR provider_slots.paused_until < excluded.paused_until "
        "THEN excluded.paused_until ELSE provider_slots.paused_until END",
        (provider, until),
    )


def pauses(now: float) -> Op[dict[str, float]]:
    """The providers paused after ``now``, and until when."""
    rows = yield All("SELECT provider, paused_until FROM provider_slots WHERE paused_until > ?", (now,))
    return {r["provider"]: float(r["paused_until"]) for r in rows}
