"""What the daemons' logs say about the leases on provider jobs in a cluster run: how many
provider jobs one daemon took over from another, how many a daemon learnt it had lost
(fenced), and whether a daemon went on writing for a provider job after it knew it had
lost it (it must write nothing: docs/cluster.md).

(The journal's ``job_events`` cannot show two daemons finishing one job: a redelivered
request re-emits its job's current state, so a job may rightly have two ``accepted`` or
two ``succeeded`` rows.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.chaos.checks import Check

_WRITES = ("item.succeeded", "item.failed")


@dataclass(slots=True)
class LeaseEvidence:
    writes_after_loss: Check
    takeovers: int  # provider jobs claimed by a daemon after another had worked on them
    lost: int  # batch.lease_lost lines: a daemon learnt another had its provider job


def from_logs(logs: Mapping[str, Sequence[dict[str, Any]]]) -> LeaseEvidence:
    """``logs``: each daemon's JSON log events, in the order it wrote them."""
    check = Check("writes for a provider job after its lease was lost")
    first_seen: dict[str, list[tuple[str, str]]] = {}  # batch: (timestamp, node) of each node's first line about it
    for node, events in logs.items():
        seen: set[str] = set()
        for e in events:
            batch = e.get("batch_id")
            if isinstance(batch, str) and batch not in seen:
                seen.add(batch)
                first_seen.setdefault(batch, []).append((str(e.get("timestamp", "")), node))
    takeovers: set[tuple[str, str]] = set()
    lost_lines = 0
    for node, events in logs.items():
        lost: set[str] = set()
        for e in events:
            batch, name = e.get("batch_id"), e.get("event")
            if not isinstance(batch, str):
                continue
            if name == "batch.lease_lost":
                lost_lines += 1
                lost.add(batch)
            elif name == "batch.claimed":
                lost.discard(batch)  # it holds the job again (taken back after the other lost it)
                at = str(e.get("timestamp", ""))
                if any(other != node and ts < at for ts, other in first_seen.get(batch, [])):
                    takeovers.add((batch, node))
            elif name in _WRITES and batch in lost:
                check.add(f"{node}: {name} {e.get('input')} (provider job {batch}) after batch.lease_lost")
    return LeaseEvidence(check, len(takeovers), lost_lines)
