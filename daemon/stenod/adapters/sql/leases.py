"""Leases on provider jobs: which instance steps which job, and the fence on its writes.

A provider job (a row of ``batches``) is held by one instance (``holder``) until
``lease_until``; ``lease_gen`` rises with every claim. The holder's every write about the
job begins with :func:`fence`, an UPDATE that renews the lease only if the holder and the
generation are still its own. On PostgreSQL that UPDATE also locks the row until the
transaction ends; a takeover (:func:`claim`) selects the expired jobs ``FOR UPDATE SKIP
LOCKED``, so it passes over a job whose holder is writing about it right now (it is alive,
and its write renews the lease) and one that another instance is claiming at the same
moment: two instances never take the same job. A holder that lost the job gets zero rows
from its fence, raises :class:`~stenod.errors.LeaseLost`, and its transaction (with the
events it would have added) is rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stenod.adapters.sql.statements import SKIP_LOCKED, All, Count, Exec, One, Op, chunks, marks
from stenod.adapters.sql.views import ACTIVE_BATCH, batches_where
from stenod.errors import LeaseLost
from stenod.journal import BatchRow


def fence(batch_id: str, holder: str, gen: int, until: float) -> Op[None]:
    """Renew the lease if this instance still holds it at this generation, else raise LeaseLost."""
    count = yield Count(
        "UPDATE batches SET lease_until = ? WHERE id = ? AND holder = ? AND lease_gen = ?",
        (until, batch_id, holder, gen),
    )
    if not count:
        raise LeaseLost(batch_id)


def claim(
    holder: str, providers: Sequence[str], now: float, until: float, *, own: bool, anyone: bool = False
) -> Op[list[BatchRow]]:
    """Take the unfinished provider jobs of these providers that nobody holds or whose lease
    has expired, and with ``own`` (at start) those this instance held before it restarted.
    With ``anyone``, every unfinished provider job, of any provider (a journal no other
    instance uses: whatever name held them, it was this daemon; one of a provider no longer
    configured then fails with a message instead of waiting for good). Returns them with
    their items."""
    if anyone:
        where, args = "", ()
    elif not providers:
        return []
    else:
        who = f"{'holder = ? OR ' if own else ''}holder IS NULL OR lease_until < ?"
        where = f" AND provider IN ({marks(providers)}) AND ({who})"
        args = (*providers, *((holder,) if own else ()), now)
    # Rows another transaction has locked are skipped, not waited for: their holder is
    # writing about them (its fence renews the lease), or another instance is claiming them.
    rows = yield All(
        "UPDATE batches SET holder = ?, lease_until = ?, lease_gen = lease_gen + 1 WHERE id IN "
        f"(SELECT id FROM batches WHERE {ACTIVE_BATCH}{where}{SKIP_LOCKED}) RETURNING id",
        (holder, until, *args),
    )
    found: list[BatchRow] = []
    for chunk in chunks(sorted(r["id"] for r in rows)):
        found.extend((yield from batches_where(f"id IN ({marks(chunk)})", chunk)))
    return found


def renew(holder: str, held: Mapping[str, int], until: float) -> Op[list[str]]:
    """Renew the leases this instance holds; returns the ids of those it no longer holds."""
    kept: set[tuple[str, int]] = set()
    for chunk in chunks(sorted(held)):
        rows = yield All(
            f"UPDATE batches SET lease_until = ? WHERE id IN ({marks(chunk)}) AND holder = ? AND {ACTIVE_BATCH} "
            "RETURNING id, lease_gen",
            (until, *chunk, holder),
        )
        kept.update((r["id"], r["lease_gen"]) for r in rows)
    return [batch_id for batch_id, gen in held.items() if (batch_id, gen) not in kept]


def release(holder: str, held: Mapping[str, int]) -> Op[None]:
    """Let the leases this instance holds expire now (it is stopping): another instance
    takes the jobs over at its next claim instead of after ``lease_seconds``."""
    for chunk in chunks(sorted(held)):
        yield Exec(
            f"UPDATE batches SET lease_until = 0 WHERE id IN ({marks(chunk)}) AND holder = ? AND {ACTIVE_BATCH}",
            (*chunk, holder),
        )


def next_expiry(holder: str, providers: Sequence[str]) -> Op[float | None]:
    """When (epoch seconds) the first lease of another instance on these providers runs out."""
    if not providers:
        return None
    row = yield One(
        f"SELECT MIN(lease_until) AS until FROM batches WHERE {ACTIVE_BATCH} AND provider IN ({marks(providers)}) "
        "AND holder IS NOT NULL AND holder <> ?",
        (*providers, holder),
    )
    return None if row is None or row["until"] is None else float(row["until"])
