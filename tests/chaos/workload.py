"""The chaos workload: creates the plan's jobs at their times, as files dropped into the
watched folders and as requests published to the queue, and remembers what it created."""

from __future__ import annotations

import os
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.plan import JobSpec, Plan
from tests.chaos.rig import FOLDERS, FORMATS, Rig


def write_wav(path: Path, index: int, seconds: float = 0.2) -> None:
    """A short WAV whose content is unique (stenod never transcribes the same content twice)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(index.to_bytes(8, "little") + b"\0\0" * int(16_000 * seconds))


@dataclass(slots=True)
class Created:
    """What the workload created, for the invariants."""

    folder_inputs: dict[str, JobSpec] = field(default_factory=dict)  # input path: its job
    requests: dict[str, JobSpec] = field(default_factory=dict)  # request_id: its job
    queue_inputs: dict[str, JobSpec] = field(default_factory=dict)
    unconfirmed: list[str] = field(default_factory=list)  # requests the broker never confirmed

    @property
    def jobs(self) -> int:
        return len(self.folder_inputs) + len(self.requests)


class Workload:
    """Runs the plan's jobs in one thread, each at its planned time from ``t0``."""

    def __init__(self, rig: Rig, plan: Plan, t0: float) -> None:
        self._rig = rig
        self._plan = plan
        self._t0 = t0
        self.created = Created()
        self._thread = threading.Thread(target=self._run, name="chaos:workload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        for job in self._plan.jobs:
            delay = self._t0 + job.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if job.kind in FOLDERS:
                self._drop(job)
            else:
                self._publish(job)

    def _drop(self, job: JobSpec) -> None:
        (name,) = job.names
        inbox = self._rig.dirs.inbox(FOLDERS[job.kind])
        target = inbox / name
        if job.renamed:  # written elsewhere, renamed into place: taken at once
            staging = inbox / f".{name}.part"
            write_wav(staging, job.index)
            os.replace(staging, target)
        else:  # written in place: taken once it stayed unchanged for the settle time
            write_wav(target, job.index)
        self.created.folder_inputs[str(target)] = job

    def _publish(self, job: JobSpec) -> None:
        provider = job.kind.removeprefix("queue_")
        folder = self._rig.dirs.roots / f"q{job.index // 100:03d}"
        folder.mkdir(exist_ok=True)
        paths = []
        for n, name in enumerate(job.names):
            path = folder / name
            write_wav(path, job.index * 10 + n)
            paths.append(str(path))
            self.created.queue_inputs[str(path)] = job
        request = {
            "request_id": job.request_id,
            "provider": provider,
            "inputs": [{"path": p} for p in paths],
            "output": {"formats": FORMATS[provider]},
        }
        if provider == "sarvam":
            request["language"] = "hi-IN"
        try:
            self._rig.publisher.publish(request)
        except TimeoutError:
            self.created.unconfirmed.append(job.request_id)
            return
        self.created.requests[job.request_id] = job
