"""The chaos plan: which jobs arrive and which faults strike, and when, all from one seed.

The plan is pure data, computed before anything runs, so a seed always names the same
workload and the same fault schedule (times are seconds from the start of the run).
What the daemon does in between is not deterministic, but a failing seed replays the
same pressure.

A run has four phases: *warm-up* (jobs, no faults: the memory baseline), *storm* (every
fault kind), *soak* (no daemon kills, so one daemon process runs a long stretch; broker
and provider faults go on) and *drain* (no new jobs, no faults, until everything is
finished).

With ``cluster=N`` (N > 1) the plan is for N daemons sharing one PostgreSQL journal: the
daemon faults name the daemon they strike, and more kinds strike in the storm: a daemon
paused (SIGSTOP of its main process, or of its whole process tree: a frozen machine) past
its lease then woken (SIGCONT), the database server restarted, and the run's database
sessions cut. ``cluster=1`` is the single daemon on
SQLite, and gives exactly the plan it always gave for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

JOB_KINDS: dict[str, float] = {
    # kind: share of the jobs
    "folder_echo": 0.30,
    "folder_sarvam": 0.20,
    "folder_vachana": 0.15,
    "queue_echo": 0.20,
    "queue_sarvam": 0.15,
}

DAEMON_FAULTS = ("daemon_kill", "daemon_term", "crash_after_commit")
PAUSE_FAULTS = ("daemon_pause", "daemon_freeze")  # cluster only: the main process / its whole tree
DATABASE_FAULTS = ("db_restart", "db_cut")  # cluster only
CLUSTER_FAULTS = PAUSE_FAULTS + DATABASE_FAULTS
BROKER_FAULTS = ("broker_restart", "broker_cut")
PROVIDER_FAULTS = (
    "provider_429",
    "provider_500",
    "provider_503",
    "provider_hang",
    "provider_reset",
    "provider_malformed",
    "provider_key_echo",
)

DEFAULT_EVERY: dict[str, float] = {
    # kind: mean seconds between two faults of that kind (a Poisson process per kind)
    "daemon_kill": 12.0,
    "daemon_term": 40.0,
    "crash_after_commit": 45.0,
    "broker_restart": 40.0,
    "broker_cut": 25.0,
    "provider_429": 30.0,
    "provider_500": 30.0,
    "provider_503": 30.0,
    "provider_hang": 35.0,
    "provider_reset": 30.0,
    "provider_malformed": 30.0,
    "provider_key_echo": 90.0,
}

CLUSTER_EVERY: dict[str, float] = {
    "daemon_pause": 25.0,
    "daemon_freeze": 25.0,
    "db_restart": 25.0,
    "db_cut": 30.0,
}
# A short lease, so that takeovers happen within a run: a daemon killed and kept down, or
# paused, loses its provider jobs after this (another claims them within a third more).
CLUSTER_LEASE_SECONDS = 3.0
# The database stays away well below the daemons' reconnect_seconds (30): a daemon whose
# commit was in doubt exits 1 by design and is restarted, none gives up waiting.
DB_AWAY_SECONDS = (0.5, 3.0)

ROUTES: dict[str, tuple[str, ...]] = {
    "sarvam": ("init", "upload_files", "blob_put", "start", "status", "status", "download_files", "blob_get"),
    # Vachana's submit is not idempotent: a lost answer fails the files by design (no second
    # bill), so most of its faults go to the status call.
    "vachana": ("submit", "status", "status", "status"),
}

BAD_MARKER = "bad"  # input names with it fail at the provider (echo's fail_marker, the fakes' fail_files)


@dataclass(frozen=True, slots=True)
class Phases:
    warmup: float
    storm: float
    soak: float

    @property
    def intake_end(self) -> float:
        return self.warmup + self.storm + self.soak


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job the workload creates: a file in a watched folder or a queue request."""

    at: float
    index: int
    kind: str
    names: tuple[str, ...]
    renamed: bool  # folder jobs: written as a dot-file and renamed into place (else: settle)

    @property
    def request_id(self) -> str:
        return f"chaos-{self.index:06d}"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    at: float
    kind: str
    target: str | None = None  # the fake provider, for provider faults
    route: str | None = None
    times: int = 1
    seconds: float = 0.0  # how long a broker or the database stays away, a daemon stays killed or paused


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    phases: Phases
    jobs: tuple[JobSpec, ...]
    faults: tuple[FaultSpec, ...] = field(default=())
    cluster: int = 1  # daemons sharing one PostgreSQL journal (1: one daemon on SQLite)

    def faults_of(self, kinds: tuple[str, ...]) -> list[FaultSpec]:
        return [f for f in self.faults if f.kind in kinds]


def node_names(cluster: int) -> tuple[str, ...]:
    """The daemons' instance ids: ``node-a``, ``node-b``, …"""
    if not 1 <= cluster <= 26:
        raise ValueError(f"cluster must be 1 to 26 daemons, not {cluster}")
    return tuple(f"node-{chr(ord('a') + n)}" for n in range(cluster))


def make_plan(
    seed: int,
    phases: Phases,
    *,
    jobs_per_second: float,
    bad_share: float = 0.08,
    every: dict[str, float] | None = None,
    cluster: int = 1,
) -> Plan:
    """The jobs and faults of a run; the same arguments always give the same plan."""
    rng = random.Random(seed)
    nodes = node_names(cluster)
    means = {**DEFAULT_EVERY, **(CLUSTER_EVERY if cluster > 1 else {}), **(every or {})}
    if cluster == 1:  # a single daemon cannot be taken over, and its journal is SQLite
        means = {k: v for k, v in means.items() if k not in CLUSTER_FAULTS}
    return Plan(
        seed,
        phases,
        _jobs(rng, phases, jobs_per_second, bad_share),
        tuple(sorted(_faults(rng, phases, means, nodes), key=lambda f: f.at)),
        cluster,
    )


def _jobs(rng: random.Random, phases: Phases, rate: float, bad_share: float) -> tuple[JobSpec, ...]:
    kinds, weights = zip(*JOB_KINDS.items(), strict=True)
    jobs: list[JobSpec] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= phases.intake_end:
            return tuple(jobs)
        index = len(jobs)
        kind = rng.choices(kinds, weights)[0]
        count = 1 if kind.startswith("folder") else rng.randint(1, 3 if kind == "queue_sarvam" else 2)
        names = tuple(
            f"j{index:05d}-{n}{'-' + BAD_MARKER if rng.random() < bad_share else ''}.wav" for n in range(count)
        )
        jobs.append(JobSpec(round(t, 3), index, kind, names, renamed=rng.random() < 0.5))


def _faults(rng: random.Random, phases: Phases, every: dict[str, float], nodes: tuple[str, ...]) -> list[FaultSpec]:
    storm = (phases.warmup, phases.warmup + phases.storm)
    storm_and_soak = (phases.warmup, phases.intake_end)
    out: list[FaultSpec] = []
    for kind, mean in sorted(every.items()):
        if mean <= 0:
            continue
        # The soak keeps its daemon processes (the memory figure): whatever can end one, a
        # database restart included (a commit in doubt stops a daemon), strikes in the storm.
        start, end = storm if kind in DAEMON_FAULTS + CLUSTER_FAULTS else storm_and_soak
        t = start
        while (t := t + rng.expovariate(1.0 / mean)) < end:
            at = round(t, 3)
            out.append(_cluster_fault(rng, at, kind, nodes) if len(nodes) > 1 else _fault(rng, at, kind))
    return out


def _cluster_fault(rng: random.Random, at: float, kind: str, nodes: tuple[str, ...]) -> FaultSpec:
    lease = CLUSTER_LEASE_SECONDS
    if kind == "daemon_kill":
        # Half come back at once (a restart takes its own provider jobs back), half stay
        # down past the lease (the others take them over).
        down = round(rng.uniform(1.5 * lease, 3.0 * lease), 2) if rng.random() < 0.5 else 0.0
        return FaultSpec(at, kind, target=rng.choice(nodes), seconds=down)
    if kind in PAUSE_FAULTS:
        # Past the lease and the others' next claim (a third of it later): the job is taken
        # over while the paused daemon still believes it holds it.
        return FaultSpec(at, kind, target=rng.choice(nodes), seconds=round(rng.uniform(1.7 * lease, 3.0 * lease), 2))
    if kind in DAEMON_FAULTS:
        return FaultSpec(at, kind, target=rng.choice(nodes))
    if kind in DATABASE_FAULTS:
        return FaultSpec(at, kind, seconds=round(rng.uniform(*DB_AWAY_SECONDS), 2))
    return _fault(rng, at, kind)


def _fault(rng: random.Random, at: float, kind: str) -> FaultSpec:
    if kind == "broker_restart":
        return FaultSpec(at, kind, seconds=round(rng.uniform(0.5, 2.0), 2))
    if kind == "broker_cut":
        return FaultSpec(at, kind, seconds=round(rng.uniform(0.5, 4.0), 2))
    if kind in PROVIDER_FAULTS:
        target = rng.choice(sorted(ROUTES))
        # A 2xx answer to a blob PUT means the blob is stored, whatever its body says; the
        # fake's "malformed" answer skips storing it, which no real storage does.
        routes = [r for r in ROUTES[target] if not (kind == "provider_malformed" and r == "blob_put")]
        return FaultSpec(at, kind, target=target, route=rng.choice(routes), times=rng.randint(1, 3))
    return FaultSpec(at, kind)
