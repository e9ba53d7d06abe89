"""faster-whisper called directly, without stenod, for ``bench/bench_whisper.py``; and the
measurements every configuration shares (:class:`Run`, :class:`TreeSampler`).

Each configuration runs in fresh ``spawn`` worker processes that load the model before
the clock starts (load time reported apart). Files go out through one shared queue in the
set's order (longest first), so a free worker takes the next file. Audio is decoded
inside the worker with stenod's own decoder (``stenod_whisper.audio.decode``): decoding
costs every configuration, and the daemon, the same, and counts in the wall time.
Decoding options are the daemon's defaults: beam 5, VAD on, language detected.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Final, Self

import psutil

from bench.whisper_speech import SpeechSet, word_error_rate

__all__ = ["Direct", "FileRun", "Run", "TreeSampler", "configurations", "cores", "run_direct", "tree_of"]

BEAM_SIZE: Final = 5
BATCH_SIZE: Final = 8
BATCH_MIN_SECONDS: Final = 60.0  # stenod's batch_min_seconds default
_RESULT_TIMEOUT_SECONDS: Final = 1800.0


def cores() -> int:
    """Cores this process may use (the affinity mask, as stenod counts them)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True, slots=True)
class FileRun:
    """One file of one run."""

    name: str
    seconds: float  # audio length
    busy: float  # on a worker: decode + transcribe (daemon: from its provider job's start to its result)
    text: str
    latency: float | None = None  # daemon only: from the drop or publish to the result, waiting included


@dataclass(slots=True)
class Run:
    """One configuration over the whole speech set."""

    label: str
    wall: float
    files: list[FileRun]
    peak_rss: int
    cpu_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def audio(self) -> float:
        return sum(f.seconds for f in self.files)

    @property
    def throughput(self) -> float:
        """Audio seconds per wall second."""
        return self.audio / self.wall

    @property
    def cores_busy(self) -> float:
        return self.cpu_seconds / self.wall

    def wer(self, speech: SpeechSet) -> float:
        return word_error_rate([speech.text_of(f.name) for f in self.files], [f.text for f in self.files])


class TreeSampler:
    """Peak summed RSS and CPU seconds of a group of processes, sampled every ``every`` s in a
    thread between ``__enter__`` and ``__exit__``. CPU counts from ``__enter__`` for processes
    alive then, from birth for later ones; a process that exits keeps its last sample."""

    def __init__(self, processes: Callable[[], list[psutil.Process]], every: float = 0.1) -> None:
        self._processes = processes
        self._every = every
        self._baseline: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def sample(self) -> tuple[int, dict[int, float]]:
        """Summed RSS now and CPU seconds per pid."""
        rss, cpu = 0, {}
        for proc in self._processes():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            cpu[proc.pid] = times.user + times.system
        return rss, cpu

    def _record(self) -> None:
        rss, cpu = self.sample()
        self.peak_rss = max(self.peak_rss, rss)
        self._last.update(cpu)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._record()

    @property
    def cpu_seconds(self) -> float:
        return sum(last - self._baseline.get(pid, 0.0) for pid, last in self._last.items())

    def __enter__(self) -> Self:
        self.peak_rss, self._baseline = self.sample()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._record()


def tree_of(pid: int) -> Callable[[], list[psutil.Process]]:
    """A process and all its descendants, looked up afresh at each sample."""
    root = psutil.Process(pid)

    def processes() -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    return processes


@dataclass(frozen=True, slots=True)
class Direct:
    """A way of calling faster-whisper directly."""

    label: str
    processes: int
    threads: int
    batched: bool  # BatchedInferencePipeline for files of BATCH_MIN_SECONDS or more, as stenod does


def configurations(cores: int) -> list[Direct]:
    """(a)–(d) of issue 13 for a machine with ``cores`` cores."""
    one, many = f"1 process × {cores} threads", f"{cores} processes × 1 thread"
    return [
        Direct(f"(a) direct, {one}, plain", 1, cores, batched=False),
        Direct(f"(b) direct, {many}, plain", cores, 1, batched=False),
        Direct(f"(c) direct, {one}, batched ≥ 60 s", 1, cores, batched=True),
        Direct(f"(d) direct, {many}, batched ≥ 60 s", cores, 1, batched=True),
    ]


def _serve(model_path: str, threads: int, batched: bool, tasks: Any, results: Any) -> None:
    """A worker process: load the model, say so, then transcribe files until ``None``."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # as in stenod's workers; before onnxruntime (the VAD) loads
    import av.logging
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from bench.decoding import whole_file
    from stenod_whisper.audio import SAMPLE_RATE

    av.logging.set_level(None)
    started = time.perf_counter()
    model = WhisperModel(
        model_path, device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1, local_files_only=True
    )
    pipeline = BatchedInferencePipeline(model) if batched else None
    results.put(("ready", os.getpid(), time.perf_counter() - started))
    while (task := tasks.get()) is not None:
        name, path = task
        begun = time.time()
        audio = whole_file(path)
        if pipeline is not None and len(audio) / SAMPLE_RATE >= BATCH_MIN_SECONDS:
            segments, _ = pipeline.transcribe(
                audio, batch_size=BATCH_SIZE, without_timestamps=True, beam_size=BEAM_SIZE, vad_filter=True
            )
        else:
            segments, _ = model.transcribe(audio, beam_size=BEAM_SIZE, vad_filter=True)
        text = "".join(s.text for s in segments).strip()  # the generator does the work
        results.put(("done", name, text, begun, time.time()))


def _next(results: Any, workers: Sequence[BaseProcess]) -> tuple[Any, ...]:
    deadline = time.monotonic() + _RESULT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            message: tuple[Any, ...] = results.get(timeout=1.0)
        except queue.Empty:
            dead = [w for w in workers if not w.is_alive()]
            if dead:
                raise RuntimeError(f"a direct worker died (exit code {dead[0].exitcode})") from None
            continue
        return message
    raise TimeoutError("no result from the direct workers")


def run_direct(config: Direct, model_path: str, speech: SpeechSet) -> Run:
    """Transcribe the set with ``config``; the clock starts once every worker has the model."""
    context = multiprocessing.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    workers = [
        context.Process(target=_serve, args=(model_path, config.threads, config.batched, tasks, results))
        for _ in range(config.processes)
    ]
    for worker in workers:
        worker.start()
    try:
        loads = [_next(results, workers)[2] for _ in workers]
        tree = [psutil.Process(w.pid) for w in workers if w.pid is not None]
        done: dict[str, tuple[str, float, float]] = {}
        with TreeSampler(lambda: tree) as sampler:
            t0 = time.time()
            for clip in speech.clips:
                tasks.put((clip.name, str(clip.path)))
            while len(done) < len(speech.clips):
                _, name, text, begun, finished = _next(results, workers)
                done[name] = (text, begun, finished)
        wall = max(finished for _, _, finished in done.values()) - t0
    finally:
        for _ in workers:
            tasks.put(None)
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    files = []
    for clip in speech.clips:
        text, begun, finished = done[clip.name]
        files.append(FileRun(clip.name, clip.seconds, finished - begun, text))
    load = f"model load {max(loads):.2f} s per worker ({config.processes} in parallel), not counted"
    return Run(config.label, wall, files, sampler.peak_rss, sampler.cpu_seconds, notes=[load])
