"""The chaos faults: carries out the plan's faults at their times, one thread per domain
(the daemons, the broker, the fake providers; in a cluster also the pauses and the
database) so a slow broker restart does not delay a provider fault, nor a paused daemon a
killed one, and counts what was actually injected."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from tests.chaos import postgres
from tests.chaos.broker import restart_broker
from tests.chaos.plan import (
    BROKER_FAULTS,
    DAEMON_FAULTS,
    DATABASE_FAULTS,
    PAUSE_FAULTS,
    PROVIDER_FAULTS,
    FaultSpec,
    Plan,
)
from tests.chaos.rig import HANG_SECONDS, Rig


def provider_rule(fault: FaultSpec, key: str) -> dict[str, Any]:
    """The fake's fault rule for one provider fault (see tests/fakes/faultscript.py)."""
    rule: dict[str, Any] = {"route": fault.route, "times": fault.times}
    match fault.kind:
        case "provider_429":
            rule |= {"status": 429, "retry_after": 1}
        case "provider_500":
            rule |= {"status": 500}
        case "provider_503":
            rule |= {"status": 503, "retry_after": 1}
        case "provider_hang":
            rule |= {"delay": HANG_SECONDS}
        case "provider_reset":
            rule |= {"reset": True}
        case "provider_malformed":
            rule |= {"malformed": True}
        case "provider_key_echo":
            # An error body quoting the API key back (R17): it must not reach a log or event.
            rule |= {"status": 401, "message": f"invalid key {key} for this account", "times": 1}
        case _:
            raise ValueError(f"not a provider fault: {fault.kind}")
    return rule


class FaultInjector:
    """Injects the plan's faults from ``t0`` on; ``injected`` counts them by kind."""

    def __init__(self, rig: Rig, plan: Plan, t0: float) -> None:
        self._rig = rig
        self._t0 = t0
        self._stop = threading.Event()
        self.injected: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._run, args=(plan.faults_of(kinds),), name=f"chaos:faults:{domain}", daemon=True
            )
            for domain, kinds in (
                ("daemon", DAEMON_FAULTS),
                ("broker", BROKER_FAULTS),
                ("providers", PROVIDER_FAULTS),
                ("pause", PAUSE_FAULTS),
                ("database", DATABASE_FAULTS),
            )
            if plan.faults_of(kinds)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """No new faults; waits for the ones under way (a broker always gets started again)."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        for provider in self._rig.fakes:
            self._rig.fake_faults(provider, [])

    def _run(self, faults: list[FaultSpec]) -> None:
        for fault in faults:
            if self._stop.wait(max(0.0, self._t0 + fault.at - time.monotonic())):
                return
            self._note("start", fault)
            try:
                self._inject(fault)
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                self.errors.append(f"{fault}: {type(exc).__name__}: {exc}")
                self._note("failed", fault)
                continue
            self._note("end", fault)
            with self._lock:
                self.injected[fault.kind] += 1

    def _note(self, what: str, fault: FaultSpec) -> None:
        """``faults.log`` in the run folder: when each fault struck, in the daemons' log time
        (UTC), so a violation can be set beside what was being done to the daemons then."""
        at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        line = f"{at} {what:<6} {fault.kind} {fault.target or ''} {fault.route or ''} {fault.seconds or ''}".rstrip()
        with self._lock, (self._rig.dirs.root / "faults.log").open("a") as out:
            out.write(line + "\n")

    def _inject(self, fault: FaultSpec) -> None:
        rig = self._rig
        supervisor = rig.node(fault.target).supervisor  # daemon faults: the one named (or the only one)
        match fault.kind:
            case "daemon_kill":
                supervisor.kill_and_restart(down_seconds=fault.seconds)
            case "daemon_term":
                supervisor.stop_and_restart()
            case "crash_after_commit":
                supervisor.kill_and_restart(crash_after_commit=True)
            case "daemon_pause" | "daemon_freeze":
                paused = supervisor.pause(tree=fault.kind == "daemon_freeze")
                if not paused:
                    raise RuntimeError(f"{supervisor.name} was not running")
                try:
                    time.sleep(fault.seconds)
                finally:
                    supervisor.resume(paused)
            case "db_restart":
                token = rig.outages.begin()
                try:
                    postgres.restart(fault.seconds)
                finally:
                    rig.outages.end(token)
            case "db_cut":
                assert isinstance(rig.journal, str)
                token = rig.outages.begin()
                try:
                    postgres.cut_sessions(rig.journal)
                finally:
                    rig.outages.end(token)
            case "broker_restart":
                restart_broker(fault.seconds)
            case "broker_cut":
                rig.door.close()
                try:
                    time.sleep(fault.seconds)
                finally:
                    rig.door.open()
            case _:
                assert fault.target is not None
                rig.fake_faults(fault.target, [provider_rule(fault, rig.keys[fault.target])])
