"""The HTTP front door against the folder and against faster-whisper alone (issue 14).
Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_http [--quick] [--only http|folder|small|healthz]
                                         [--small N] [--webservice-url URL]
                                         [--speech-dir DIR] [--model-dir DIR]

One ``stenod run`` daemon with its default whisper settings (one single-threaded worker
process per core), ``[http] listen`` on a free loopback port with an API key, the ``echo``
test provider, and a watched inbox (``settle_seconds = 0.5``). The model comes from a
shared cache (``--model-dir``, assembled once); a short clip sent before the clock runs
makes both workers load it. The speech set is ``bench/whisper_speech.py``'s (about
8 minutes of Festival English in 8 files, mixed formats; ``--quick``: three of its ~30 s
files). In one run, side by side:

- direct faster-whisper (``bench/whisper_direct.py``), one file at a time: 1 process ×
  all cores over the set (the baseline when no webservice is given), and 1 process ×
  1 thread over the ~30 s files (what one stenod worker does with one file);
- ``--webservice-url``: a running whisper-asr-webservice, the same files through its
  ``POST /asr`` (``vad_filter=true``), one client and two, ``/openapi.json`` probed while
  two clients wait;
- HTTP: ``POST /v1/audio/transcriptions`` (multipart ``file`` + ``model=whisper-1``, as
  the openai SDK sends it, with httpx), files one after another from one client, then from
  two clients at once sharing the list; ``GET /healthz`` every 50 ms (start to start)
  during the two-client run, over one kept-alive connection and over a new connection each
  time, as a monitor would (only samples sent while both requests were in flight count),
  and the same for 2 s before it, idle;
- folder: the same files renamed into the inbox one at a time (each waits for its
  ``.txt``), then all at once;
- small requests to ``echo``: ``POST /v1/jobs`` (a tiny ``.txt`` path input under
  ``[amqp] allowed_roots``), N sequential and N with 8 at once; requests per second and
  the daemon tree's CPU per request; the same through the OpenAI route (``model=echo``,
  a tiny ``.txt`` upload), N/5 each way.

stenod reuses the result of audio it already transcribed with the same settings (by the
file's SHA-256), so each configuration gets its own copies of the files: remuxed with a
different metadata tag (the decoded samples are checked equal to the original's).
The first run synthesises the speech set into ``--speech-dir`` (about 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import platform
import queue
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import av
import httpx
import numpy as np
import psutil

from bench.bench_whisper import cpu_model
from bench.decoding import whole_file
from bench.whisper_direct import Direct, FileRun, Run, run_direct, tree_of
from bench.whisper_speech import SHORT, Clip, SpeechSet, speech_set
from stenod_whisper.model import assemble_bundled
from support.harness import Daemon, wait_for, write_config
from support.server import free_port

CACHE: Final = Path.home() / ".cache" / "stenod-bench"
KEY: Final = "bench-http-key-0123456789"
MB: Final = 1024 * 1024
SETTLE_SECONDS: Final = 0.5
HEALTH_EVERY: Final = 0.05
HEALTH_SAMPLES: Final = 200
TIMEOUT: Final = httpx.Timeout(3600.0, connect=10.0)
MIME: Final = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
}
# The anchors, measured on this kind of machine before (not in this run).
ANCHOR_WEBSERVICE: Final = 8.9  # audio-s/s, with one client and the same with two
ANCHOR_DIRECT: Final = 11.1  # faster-whisper directly, one file at a time
GOAL_HTTP_OVERHEAD: Final = 0.05
GOAL_OVER_WEBSERVICE: Final = 2.0
GOAL_HEALTHZ_P99_MS: Final = 50.0


class RunFailed(RuntimeError):
    """A configuration could not be measured (a request failed, the daemon stopped)."""


def cores() -> int:
    return len(os.sched_getaffinity(0))


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- files -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Copies:
    """One configuration's own copies of the clips: same audio, different bytes."""

    paths: dict[str, Path]
    hashes: dict[str, str]  # name → SHA-256 (how the journal knows the item)


def _remux(source: Path, target: Path, tag: str) -> None:
    with av.open(str(source)) as inp:
        guessed = target.suffix in (".m4a", ".opus")  # their demuxer names are families
        fmt = None if guessed else inp.format.name.split(",")[0]
        with av.open(str(target), "w", format=fmt) as out:
            stream = inp.streams.audio[0]
            copy = out.add_stream_from_template(stream)
            out.metadata["comment"] = tag
            for packet in inp.demux(stream):
                if packet.dts is None:  # the demuxer's final empty packet
                    continue
                packet.stream = copy
                out.mux(packet)


def make_copies(clips: list[Clip], folder: Path, tag: str, problems: list[str]) -> Copies:
    folder.mkdir(parents=True)
    paths, hashes = {}, {}
    marker = f"stenod bench_http {tag} {uuid.uuid4().hex}"
    for clip in clips:
        target = folder / clip.name
        _remux(clip.path, target, marker)
        if not np.array_equal(whole_file(clip.path), whole_file(target)):
            problems.append(f"{tag}: the copy of {clip.name} decodes differently from the original")
        paths[clip.name] = target
        hashes[clip.name] = hashlib.sha256(target.read_bytes()).hexdigest()
    return Copies(paths, hashes)


# -- the daemon ------------------------------------------------------------------------


@dataclass(slots=True)
class Stenod:
    daemon: Daemon
    url: str
    tmp: Path

    @property
    def pid(self) -> int:
        return self.daemon.process.pid

    @property
    def inbox(self) -> Path:
        return self.tmp / "inbox"

    @property
    def roots(self) -> Path:
        return self.tmp / "roots"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT)

    def journal(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.state / 'journal.db'}?mode=ro", uri=True)) as db:
            return db.execute(query, args).fetchall()


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def stenod(tmp: Path, model_dir: Path) -> Iterator[Stenod]:
    for folder in ("inbox/one", "inbox/all", "roots/small", "state"):
        (tmp / folder).mkdir(parents=True)
    port = free_port()
    config = write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json", "log_level": "info"},
        sections={
            "http": {"listen": f"127.0.0.1:{port}", "api_keys": [KEY]},
            "amqp": {"allowed_roots": [tmp / "roots"]},
        },
        watch=[
            {
                "path": tmp / "inbox",
                "provider": "whisper",
                "recursive": True,
                "settle_seconds": SETTLE_SECONDS,
                "formats": ["txt"],
            }
        ],
        providers={"whisper": {"model_dir": model_dir}, "echo": {}},
    )
    daemon = Daemon(config, tmp / "daemon.log").start()
    try:
        daemon.wait_ready(timeout=180)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(url) or not daemon.alive, "the HTTP server", timeout=60)
        if not daemon.alive:
            raise RunFailed(f"the daemon exited; log: {daemon.log_path}")
        yield Stenod(daemon, url, tmp)
    finally:
        if daemon.alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.terminate(timeout=60)
        daemon.kill()


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


def warm_up(s: Stenod, clip: Clip, copies: Copies) -> float:
    """Send a short clip; wait until every worker holds the model. Seconds it took."""
    started = time.monotonic()
    with s.client() as client:
        _openai_transcribe(client, copies.paths[clip.name])
    ready = s.daemon.named("whisper.ready")
    workers = int(ready[-1]["workers"]) if ready else cores()
    big = 100 * MB  # a worker without the model is a bare interpreter, well under this

    def loaded() -> bool:
        return sum(1 for p in tree_of(s.pid)()[1:] if _rss(p) > big) >= workers

    wait_for(loaded, f"{workers} loaded whisper workers", timeout=180, interval=0.2)
    return time.monotonic() - started


def tree_cpu(pid: int) -> float:
    total = 0.0
    for proc in tree_of(pid)():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


# -- whole files over HTTP ---------------------------------------------------------------


def _openai_transcribe(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as fh:
        answer = client.post(
            "/v1/audio/transcriptions",
            files={"file": (path.name, fh, MIME.get(path.suffix, "application/octet-stream"))},
            data={"model": "whisper-1", "response_format": "json"},
        )
    if answer.status_code != 200:
        raise RunFailed(f"{path.name}: HTTP {answer.status_code}: {answer.text[:300]}")
    return str(answer.json()["text"])


def _webservice_transcribe(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as fh:
        answer = client.post(
            "/asr",
            params={"task": "transcribe", "output": "txt", "encode": "true", "vad_filter": "true"},
            files={"audio_file": (path.name, fh, MIME.get(path.suffix, "application/octet-stream"))},
        )
    if answer.status_code != 200:
        raise RunFailed(f"{path.name}: HTTP {answer.status_code}: {answer.text[:300]}")
    return answer.text


@dataclass(slots=True)
class InFlight:
    """How many transcription requests are out now."""

    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int) -> None:
        with self.lock:
            self.count += n


@dataclass(slots=True)
class Probe:
    """Latency of small GETs, one every HEALTH_EVERY s (start to start), while files are
    transcribed: over one kept-alive connection, or a new connection each (as a monitor)."""

    path: str
    fresh: bool = False
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (ms, in flight before and after)
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def how(self) -> str:
        return "a new connection each" if self.fresh else "one kept-alive connection"

    def busy_ms(self, clients: int) -> list[float]:
        return [ms for ms, before, after in self.samples if min(before, after) >= clients]

    def all_ms(self) -> list[float]:
        return [ms for ms, _, _ in self.samples]


def _probe_loop(
    make_client: Callable[[], httpx.Client], probe: Probe, inflight: InFlight, stop: threading.Event, limit: int
) -> None:
    headers = {"Connection": "close"} if probe.fresh else {}
    with make_client() as client:
        while not stop.is_set() and len(probe.samples) < limit:
            before = inflight.count
            started = time.perf_counter()
            try:
                status = client.get(probe.path, headers=headers).status_code
            except httpx.HTTPError:
                status = 0
            ms = 1000 * (time.perf_counter() - started)
            probe.samples.append((ms, before, inflight.count))
            probe.statuses[status] += 1
            stop.wait(max(0.0, HEALTH_EVERY - ms / 1000))


def run_clients(
    label: str,
    clips: list[Clip],
    copies: Copies,
    *,
    clients: int,
    make_client: Callable[[], httpx.Client],
    send: Callable[[httpx.Client, Path], str],
    probes: tuple[Probe, ...] = (),
) -> Run:
    """Files sent one after another by each of ``clients`` clients sharing the list
    (longest first); per-file latency from the request's start to its answer."""
    todo: queue.Queue[Clip] = queue.Queue()
    for clip in clips:
        todo.put(clip)
    inflight = InFlight()
    files: list[FileRun] = []
    lock = threading.Lock()

    def client_loop() -> None:
        with make_client() as client:
            while True:
                try:
                    clip = todo.get_nowait()
                except queue.Empty:
                    return
                inflight.add(1)
                started = time.perf_counter()
                try:
                    text = send(client, copies.paths[clip.name])
                finally:
                    inflight.add(-1)
                took = time.perf_counter() - started
                with lock:
                    files.append(FileRun(clip.name, clip.seconds, took, text, latency=took))

    stop = threading.Event()
    probers = [
        threading.Thread(target=_probe_loop, args=(make_client, p, inflight, stop, HEALTH_SAMPLES), daemon=True)
        for p in probes
    ]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients, thread_name_prefix="client") as pool:
        futures = [pool.submit(client_loop) for _ in range(clients)]
        if probers:
            while inflight.count < clients and not all(f.done() for f in futures):
                time.sleep(0.005)  # start probing once every client has a request out
            for prober in probers:
                prober.start()
        for future in futures:
            future.result()
    wall = time.perf_counter() - t0
    stop.set()
    for prober in probers:
        prober.join()
    order = {c.name: i for i, c in enumerate(clips)}
    files.sort(key=lambda f: order[f.name])
    return Run(label, wall, files, 0, 0.0)


# -- the folder --------------------------------------------------------------------------


def _wait_txt(s: Stenod, outputs: dict[str, Path], seen: dict[str, float]) -> None:
    deadline = time.monotonic() + 3600
    while any(name not in seen for name in outputs):
        for name, txt in outputs.items():
            if name in seen:
                continue
            if txt.exists():
                seen[name] = time.perf_counter()
            elif txt.with_suffix(".error.json").exists():
                raise RunFailed(f"{name} failed: {txt.with_suffix('.error.json').read_text()[:300]}")
        if not s.daemon.alive or time.monotonic() > deadline:
            raise RunFailed(f"the daemon stopped or stalled; log: {s.daemon.log_path}")
        time.sleep(0.01)


def run_folder(s: Stenod, label: str, clips: list[Clip], copies: Copies, *, at_once: bool) -> Run:
    inbox = s.inbox / ("all" if at_once else "one")
    outputs = {c.name: inbox / f"{c.path.stem}.txt" for c in clips}
    dropped: dict[str, float] = {}
    seen: dict[str, float] = {}
    t0 = time.perf_counter()
    if at_once:
        for clip in clips:
            dropped[clip.name] = time.perf_counter()
            os.rename(copies.paths[clip.name], inbox / clip.name)
        _wait_txt(s, outputs, seen)
    else:
        for clip in clips:
            dropped[clip.name] = time.perf_counter()
            os.rename(copies.paths[clip.name], inbox / clip.name)
            _wait_txt(s, {clip.name: outputs[clip.name]}, seen)
    wall = max(seen.values()) - t0
    files = [
        FileRun(
            c.name,
            c.seconds,
            seen[c.name] - dropped[c.name],
            outputs[c.name].read_text(),
            latency=seen[c.name] - dropped[c.name],
        )
        for c in clips
    ]
    return Run(label, wall, files, 0, 0.0, notes=[f"settle_seconds = {SETTLE_SECONDS} included in each file's time"])


def worker_seconds(s: Stenod, copies: Copies) -> dict[str, float]:
    """Per file: from its provider job's creation (a worker was free) to the item's end."""
    by_hash = {h: name for name, h in copies.hashes.items()}
    marks = ",".join("?" * len(by_hash))
    rows = s.journal(
        "SELECT i.content_hash, b.created_at, i.updated_at FROM items i JOIN batches b ON b.id = i.batch_id "
        f"WHERE i.content_hash IN ({marks}) AND i.state = 'succeeded'",
        tuple(by_hash),
    )
    return {by_hash[h]: _epoch(done) - _epoch(begun) for h, begun, done in rows}


# -- small requests ----------------------------------------------------------------------


@dataclass(slots=True)
class Small:
    label: str
    n: int
    concurrency: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    daemon_cpu: float = 0.0  # while the requests were answered
    daemon_cpu_done: float | None = None  # until every job they made had ended
    done_wall: float | None = None
    client_cpu: float = 0.0
    first_error: str | None = None

    def line(self) -> str:
        rate = self.n / self.wall if self.wall else math.nan
        ms = [1000 * x for x in self.latencies]
        codes = ", ".join(f"{code}×{count}" for code, count in sorted(self.statuses.items()))
        parts = [
            f"{self.label}, {'sequential' if self.concurrency == 1 else f'{self.concurrency} at once'}, N={self.n}: "
            f"{rate:.0f} requests/s, p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms; "
            f"daemon CPU {1000 * self.daemon_cpu / self.n:.1f} ms/request while answering"
        ]
        if self.daemon_cpu_done is not None and self.done_wall is not None:
            parts.append(
                f"{1000 * self.daemon_cpu_done / self.n:.1f} ms/job until all {self.n} jobs ended "
                f"({self.done_wall:.1f} s after the first request)"
            )
        parts.append(f"the benchmark client's own CPU {1000 * self.client_cpu / self.n:.1f} ms/request")
        parts.append(f"answers {codes}")
        line = "; ".join(parts)
        if self.first_error:
            line += f"\n    first error: {self.first_error}"
        return line


def _open_echo_jobs(s: Stenod) -> int:
    rows = s.journal(
        "SELECT count(*) FROM jobs WHERE provider = 'echo' AND state NOT IN ('succeeded', 'partial', 'failed', 'cancelled')"
    )
    return int(rows[0][0])


def run_small(
    s: Stenod,
    label: str,
    n: int,
    concurrency: int,
    ok: int,
    request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    *,
    wait_jobs: bool,
) -> Small:
    """``n`` requests made by ``request(client, i)``, ``concurrency`` at a time."""
    result = Small(label, n, concurrency)
    me = psutil.Process()

    async def go() -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=s.url, headers=headers, timeout=TIMEOUT, limits=limits) as client:
            counter = iter(range(n))

            async def worker() -> None:
                for i in counter:
                    started = time.perf_counter()
                    answer: httpx.Response = await request(client, i)
                    result.latencies.append(time.perf_counter() - started)
                    result.statuses[answer.status_code] += 1
                    if answer.status_code != ok and result.first_error is None:
                        result.first_error = f"HTTP {answer.status_code}: {answer.text[:300]}"

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    client0 = sum(me.cpu_times()[:2])
    cpu0 = tree_cpu(s.pid)
    t0 = time.perf_counter()
    asyncio.run(go())
    result.wall = time.perf_counter() - t0
    result.daemon_cpu = tree_cpu(s.pid) - cpu0
    result.client_cpu = sum(me.cpu_times()[:2]) - client0
    if wait_jobs:
        with contextlib.suppress(AssertionError):
            wait_for(lambda: _open_echo_jobs(s) == 0, "the echo jobs to end", timeout=600, interval=0.05)
            result.done_wall = time.perf_counter() - t0
            result.daemon_cpu_done = tree_cpu(s.pid) - cpu0
    return result


def small_requests(s: Stenod, n: int) -> list[Small]:
    notes = s.roots / "small"
    results = []
    for concurrency in (1, 8):
        paths = []
        for i in range(n):
            path = notes / f"c{concurrency}-{i:05d}.txt"
            path.write_text(f"note {i} for the small-request benchmark\n")
            paths.append(path)

        def job(client: httpx.AsyncClient, i: int, paths: list[Path] = paths) -> Awaitable[httpx.Response]:
            return client.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(paths[i])}]})

        results.append(run_small(s, "POST /v1/jobs (echo, path input)", n, concurrency, 202, job, wait_jobs=True))
    m = max(n // 5, 1)
    for concurrency in (1, 8):
        tag = uuid.uuid4().hex[:8]

        def upload(client: httpx.AsyncClient, i: int, tag: str = tag) -> Awaitable[httpx.Response]:
            body = f"upload {tag} {i}\n".encode()
            return client.post(
                "/v1/audio/transcriptions", files={"file": ("note.txt", body, "text/plain")}, data={"model": "echo"}
            )

        label = "POST /v1/audio/transcriptions (model=echo, .txt upload; waits for the job)"
        results.append(run_small(s, label, m, concurrency, 200, upload, wait_jobs=False))
    return results


# -- report ------------------------------------------------------------------------------


def machine() -> list[str]:
    import stenod

    model = cpu_model()
    libraries = ", ".join(
        f"{d} {version(d)}" for d in ("faster-whisper", "ctranslate2", "fastapi", "uvicorn", "httpx", "av")
    )
    load = os.getloadavg()
    lines = [
        f"machine: {cores()} cores (affinity), {model}, {psutil.virtual_memory().total / 1024**3:.0f} GiB; "
        f"load average at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"Python {platform.python_version()}; {libraries}; stenod from {Path(stenod.__file__).parent}",
        "model: Whisper base (bundled), int8, CPU; stenod: default whisper settings "
        f"({cores()} workers × 1 thread), beam 5, VAD on, language detected",
    ]
    if load[0] > 0.5:
        lines.append(
            f"WARNING: load average {load[0]:.2f} > 0.5 at the start: something else is running; "
            "the timings below are not representative"
        )
    return lines


def _latency_cells(run: Run) -> tuple[str, str]:
    values = [f.latency if f.latency is not None else f.busy for f in run.files]
    return f"{percentile(values, 0.5):.1f}s", f"{percentile(values, 0.99):.1f}s"


def table(runs: list[Run], speech: SpeechSet, baseline: Run | None) -> list[str]:
    head = (
        f"{'configuration':58} {'files':>5} {'audio s':>8} {'wall s':>7} {'audio s/s':>9} "
        f"{'p50':>6} {'p99':>6} {'WER':>6} {'× baseline':>10}"
    )
    lines = [head]
    for run in runs:
        p50, p99 = _latency_cells(run)
        ratio = f"{run.throughput / baseline.throughput:10.2f}" if baseline is not None else f"{'–':>10}"
        lines.append(
            f"{run.label:58} {len(run.files):5} {run.audio:8.1f} {run.wall:7.1f} {run.throughput:9.2f} "
            f"{p50:>6} {p99:>6} {run.wer(speech):6.3f} {ratio}"
        )
    lines.append(
        "  p50/p99: per-file time (HTTP and webservice: request to answer; folder: rename into the inbox to the "
        ".txt; direct: decode + transcribe of each file)"
    )
    lines += [f"  {run.label}: {note}" for run in runs for note in run.notes]
    return lines


def per_file(columns: list[tuple[str, dict[str, float]]], clips: list[Clip]) -> list[str]:
    lines = [f"{'file':18} {'audio s':>7} " + " ".join(f"{title:>15}" for title, _ in columns)]
    for clip in clips:
        cells = [f"{values[clip.name]:15.2f}" if clip.name in values else f"{'–':>15}" for _, values in columns]
        lines.append(f"{clip.name:18} {clip.seconds:7.1f} " + " ".join(cells))
    medians = [
        f"{statistics.median(v):15.2f}" if (v := [values[c.name] for c in clips if c.name in values]) else f"{'–':>15}"
        for _, values in columns
    ]
    lines.append(f"{'median':18} {'':7} " + " ".join(medians))
    return lines


def _ms(values: list[float]) -> str:
    slow = sum(1 for v in values if v >= 40)
    return (
        f"p50 {percentile(values, 0.5):.1f} ms, p99 {percentile(values, 0.99):.1f} ms, max {max(values):.1f} ms "
        f"over {len(values)} ({slow} took ≥ 40 ms)"
    )


def probe_lines(what: str, probe: Probe, clients: int, idle: Probe | None = None) -> list[str]:
    busy, every = probe.busy_ms(clients), probe.all_ms()
    codes = ", ".join(f"{code}×{count}" for code, count in sorted(probe.statuses.items()))
    lines = [f"{what}, {probe.how}, one every {1000 * HEALTH_EVERY:.0f} ms:"]
    if idle is not None and idle.samples:
        lines.append(f"  idle: {_ms(idle.all_ms())}")
    if busy:
        lines.append(f"  while {clients} transcriptions were in flight: {_ms(busy)}")
    else:
        lines.append(f"  no sample while {clients} transcriptions were in flight")
    lines.append(f"  ({len(every)} sent during the {clients}-client run; answers {codes})")
    return lines


def _median(values: dict[str, float], names: list[str]) -> float | None:
    chosen = [values[n] for n in names if n in values]
    return statistics.median(chosen) if chosen else None


def _yes(met: bool) -> str:
    return "yes" if met else "NO"


@dataclass(slots=True)
class Results:
    speech: SpeechSet
    short: list[Clip]
    direct: Run | None = None  # 1 process × all cores, one file at a time: the baseline
    direct1: Run | None = None  # 1 process × 1 thread, the ~30 s files
    webservice: list[Run] = field(default_factory=list)
    webservice_probes: list[Probe] = field(default_factory=list)
    http: list[Run] = field(default_factory=list)
    http_worker: dict[str, float] = field(default_factory=dict)
    folder: list[Run] = field(default_factory=list)
    folder_worker: dict[str, float] = field(default_factory=dict)
    health: list[Probe] = field(default_factory=list)  # during the 2-client run
    health_idle: list[Probe] = field(default_factory=list)  # the same, before it
    small: list[Small] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(self, runs: list[Run], prefix: str) -> Run | None:
        return next((r for r in runs if r.label.startswith(prefix)), None)


def goals(r: Results) -> list[str]:
    lines = ["goals:"]
    names = [c.name for c in r.short]
    http1 = r.run(r.http, "HTTP, 1 client")
    http2 = r.run(r.http, "HTTP, 2 clients")
    folder1 = r.run(r.folder, "folder, one at a time")
    times = {
        name: {f.name: f.latency or f.busy for f in run.files}
        for name, run in (("http", http1), ("folder", folder1), ("direct", r.direct1))
        if run is not None
    }
    http_ms = _median(times.get("http", {}), names)
    if http_ms is not None:
        for other, what in (("folder", "through the folder"), ("direct", "direct faster-whisper, 1 thread")):
            base = _median(times.get(other, {}), names)
            if base is not None:
                added = http_ms / base - 1
                lines.append(
                    f"  HTTP adds < {GOAL_HTTP_OVERHEAD:.0%} to a ~30 s file's time vs {what}: median {http_ms:.2f} s "
                    f"vs {base:.2f} s = {added:+.1%}: {_yes(added < GOAL_HTTP_OVERHEAD)}"
                )
        on_worker = _median(r.http_worker, names)
        if on_worker is not None:
            lines.append(
                f"    (of the HTTP time, {on_worker:.2f} s median was on the worker: request, upload, queue and "
                f"answer took {http_ms - on_worker:.2f} s = {http_ms / on_worker - 1:+.1%})"
            )
    if http2 is not None:
        ws2 = r.run(r.webservice, "whisper-asr-webservice, 2 clients")
        if ws2 is not None:
            over = http2.throughput / ws2.throughput
            lines.append(
                f"  2 clients: stenod ≥ {GOAL_OVER_WEBSERVICE:g} × whisper-asr-webservice: {http2.throughput:.2f} vs "
                f"{ws2.throughput:.2f} audio-s/s = {over:.2f} ×: {_yes(over >= GOAL_OVER_WEBSERVICE)}"
            )
        if r.direct is not None:
            over = http2.throughput / r.direct.throughput
            lines.append(
                f"  2 clients: stenod vs direct faster-whisper one file at a time (at least what the webservice does: "
                f"the same call behind one lock): {http2.throughput:.2f} vs {r.direct.throughput:.2f} audio-s/s = "
                f"{over:.2f} × (goal vs the webservice ≥ {GOAL_OVER_WEBSERVICE:g} ×): {_yes(over >= GOAL_OVER_WEBSERVICE)}"
            )
            if ws2 is None:
                estimate = r.direct.throughput * ANCHOR_WEBSERVICE / ANCHOR_DIRECT
                over = http2.throughput / estimate
                lines.append(
                    f"    against the webservice estimated from the issue's anchors (direct here × "
                    f"{ANCHOR_WEBSERVICE}/{ANCHOR_DIRECT} = {estimate:.2f} audio-s/s): {over:.2f} ×: "
                    f"{_yes(over >= GOAL_OVER_WEBSERVICE)}"
                )
    for probe in r.health:
        busy = probe.busy_ms(2)
        if busy:
            p99 = percentile(busy, 0.99)
            lines.append(
                f"  /healthz p99 < {GOAL_HEALTHZ_P99_MS:.0f} ms while both workers transcribe ({probe.how}): "
                f"{p99:.1f} ms: {_yes(p99 < GOAL_HEALTHZ_P99_MS)}"
            )
    return lines if len(lines) > 1 else []


def report(r: Results) -> list[str]:
    lines: list[str] = []
    runs = [x for x in (r.direct, r.direct1) if x is not None] + r.webservice + r.http + r.folder
    ws1 = r.run(r.webservice, "whisper-asr-webservice, 1 client")
    baseline = ws1 or r.direct
    if runs:
        if ws1 is not None:
            which = "throughput over whisper-asr-webservice, 1 client"
        elif r.direct is not None:
            which = "throughput over direct faster-whisper, 1 process × all cores, one file at a time"
        else:
            which = "none: no baseline ran (--only)"
        lines += [f"× baseline: {which}", *table(runs, r.speech, baseline), ""]
        lines.append(
            f"issue's anchors (measured before on this kind of machine, not in this run): whisper-asr-webservice "
            f"{ANCHOR_WEBSERVICE} audio-s/s with one client and {ANCHOR_WEBSERVICE} with two; faster-whisper direct "
            f"{ANCHOR_DIRECT} one file at a time"
        )
        if not r.webservice:
            lines.append(
                "whisper-asr-webservice: not measured in this run (it is not on PyPI and this machine reaches no "
                "other source; give --webservice-url of a running one); the baseline is direct faster-whisper one "
                "file at a time (1 process × all cores), which does at least what the webservice does"
            )
        lines.append("")
    columns: list[tuple[str, dict[str, float]]] = []
    if r.direct1 is not None:
        columns.append(("direct 1 thr", {f.name: f.busy for f in r.direct1.files}))
    http1 = r.run(r.http, "HTTP, 1 client")
    if http1 is not None:
        columns.append(("HTTP", {f.name: f.latency or f.busy for f in http1.files}))
        columns.append(("HTTP on worker", r.http_worker))
    folder1 = r.run(r.folder, "folder, one at a time")
    if folder1 is not None:
        columns.append(("folder", {f.name: f.latency or f.busy for f in folder1.files}))
        columns.append(("folder on worker", r.folder_worker))
    if len(columns) > 1:
        lines += [
            "per-file seconds, ~30 s files one at a time (on worker: from the daemon's provider job to the item's end)",
            *per_file(columns, r.short),
            "",
        ]
    for probe in r.health:
        idle = next((p for p in r.health_idle if p.fresh == probe.fresh), None)
        lines += [*probe_lines("GET /healthz", probe, 2, idle), ""]
    for probe in r.webservice_probes:
        lines += [*probe_lines("whisper-asr-webservice GET /openapi.json", probe, 2), ""]
    if r.small:
        lines += ["small requests (no audio):", *[f"  {s.line()}" for s in r.small], ""]
    lines += goals(r)
    lines += r.notes
    return lines


# -- main --------------------------------------------------------------------------------


def _direct(r: Results, model_path: str) -> None:
    n = cores()
    config = Direct(f"direct faster-whisper, 1 process × {n} threads", 1, n, batched=False)
    print(f"{config.label}, one file at a time …", flush=True)
    r.direct = run_direct(config, model_path, r.speech)
    short = SpeechSet(tuple(r.short), r.speech.warmup)
    config = Direct("direct faster-whisper, 1 process × 1 thread, ~30 s files", 1, 1, batched=False)
    print(f"{config.label} …", flush=True)
    r.direct1 = run_direct(config, model_path, short)


def _webservice(r: Results, url: str, tmp: Path) -> None:
    clips = list(r.speech.clips)

    def make_client() -> httpx.Client:
        return httpx.Client(base_url=url, timeout=TIMEOUT)

    for clients in (1, 2):
        print(f"whisper-asr-webservice, {clients} client(s) …", flush=True)
        copies = make_copies(clips, tmp / f"ws{clients}", f"ws{clients}", r.notes)
        probes = (Probe("/openapi.json"), Probe("/openapi.json", fresh=True)) if clients == 2 else ()
        label = f"whisper-asr-webservice, {clients} client{'s' if clients > 1 else ''}"
        r.webservice.append(
            run_clients(
                label,
                clips,
                copies,
                clients=clients,
                make_client=make_client,
                send=_webservice_transcribe,
                probes=probes,
            )
        )
        r.webservice_probes += probes


def _idle_health(s: Stenod, n: int = 40) -> list[Probe]:
    """The probes of the 2-client run, first with nothing to transcribe."""
    probes = [Probe("/healthz"), Probe("/healthz", fresh=True)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=_probe_loop, args=(s.client, p, InFlight(), stop, n), daemon=True) for p in probes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return probes


def _daemon_runs(r: Results, args: argparse.Namespace, tmp: Path) -> None:
    clips = list(r.speech.clips)
    only = args.only
    with stenod(tmp / "daemon", args.model_dir) as s:
        print(f"daemon up at {s.url} (log {s.daemon.log_path})", flush=True)
        if only != "small":
            copies = make_copies([r.speech.warmup], tmp / "warm", "warm-up", r.notes)
            took = warm_up(s, r.speech.warmup, copies)
            r.notes.append(
                f"warm-up: {r.speech.warmup.seconds:.0f} s clip over HTTP, workers loaded after {took:.1f} s"
            )
        if only in (None, "http"):
            print("HTTP, 1 client …", flush=True)
            copies = make_copies(clips, tmp / "http1", "http1", r.notes)
            r.http.append(
                run_clients(
                    "HTTP, 1 client (POST /v1/audio/transcriptions)",
                    clips,
                    copies,
                    clients=1,
                    make_client=s.client,
                    send=_openai_transcribe,
                )
            )
            r.http_worker = worker_seconds(s, copies)
        if only in (None, "http", "healthz"):
            print("HTTP, 2 clients, /healthz probed …", flush=True)
            r.health_idle = _idle_health(s)
            copies = make_copies(clips, tmp / "http2", "http2", r.notes)
            r.health = [Probe("/healthz"), Probe("/healthz", fresh=True)]
            r.http.append(
                run_clients(
                    "HTTP, 2 clients at once",
                    clips,
                    copies,
                    clients=2,
                    make_client=s.client,
                    send=_openai_transcribe,
                    probes=tuple(r.health),
                )
            )
        if only in (None, "folder"):
            print("folder, one at a time …", flush=True)
            copies = make_copies(clips, tmp / "folder1", "folder1", r.notes)
            r.folder.append(run_folder(s, "folder, one at a time", clips, copies, at_once=False))
            r.folder_worker = worker_seconds(s, copies)
            print("folder, all at once …", flush=True)
            copies = make_copies(clips, tmp / "folder2", "folder2", r.notes)
            r.folder.append(run_folder(s, "folder, all at once", clips, copies, at_once=True))
        if only in (None, "small"):
            print(f"small requests, N={args.small} …", flush=True)
            r.small = small_requests(s, args.small)
        r.notes += aftermath(s)


def aftermath(s: Stenod) -> list[str]:
    """What the runs left in the daemon's state folder, and what its log complained of."""
    spool = [p for p in (s.state / "spool").glob("*") if p.is_dir()]
    results = [p for p in (s.state / "results").glob("*") if p.is_dir()]
    files = [f for folder in results for f in folder.iterdir()]
    size = sum(f.stat().st_size for f in files)
    levels: Counter[str] = Counter()
    first: dict[str, str] = {}
    for event in s.daemon.events():
        level = str(event.get("level", "?"))
        if level in ("info", "debug"):
            continue
        levels[level] += 1
        first.setdefault(level, str(event.get("event", "")) + " " + str(event.get("text", ""))[:120])
    complaints = "; ".join(f"{n} {level} (first: {first[level].strip()})" for level, n in levels.items()) or "none"
    return [
        f"daemon state after the runs: {len(spool)} spool folder(s) left; results/ holds {len(results)} folder(s), "
        f"{len(files)} files, {size / 1024:.0f} KiB (every upload's outputs: {', '.join(sorted({f.suffix for f in files}))})",
        f"daemon log, warnings and errors before shutdown: {complaints}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three ~30 s files; N=100 small requests")
    parser.add_argument("--only", choices=["http", "folder", "small", "healthz"])
    parser.add_argument("--small", type=int, help="small requests each way (default 500; --quick 100)")
    parser.add_argument(
        "--webservice-url", help="a running whisper-asr-webservice to compare with, e.g. http://127.0.0.1:9000"
    )
    parser.add_argument("--speech-dir", type=Path, default=CACHE / "whisper-speech-v1")
    parser.add_argument("--model-dir", type=Path, default=CACHE / "models", help="shared model cache")
    args = parser.parse_args(argv)
    if args.small is None:
        args.small = 100 if args.quick else 500
    if not Path("bench").is_dir() or not Path("tests").is_dir():
        raise SystemExit("run from the repository root: .venv/bin/python -m bench.bench_http")
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # as in stenod's workers; the direct workers inherit it
    full = speech_set(args.speech_dir)
    short = [c for c in full.clips if c.name in SHORT]
    if args.quick:
        short = short[:3]
        speech = SpeechSet(tuple(short), full.warmup)
    else:
        speech = full
    model = assemble_bundled(args.model_dir)
    lines = machine()
    kinds = sorted({c.path.suffix.lstrip(".") for c in speech.clips})
    lines.append(
        f"speech set: {len(speech.clips)} files, {speech.seconds:.1f} s ({', '.join(kinds)}), longest first: "
        + ", ".join(f"{c.name} {c.seconds:.0f} s" for c in speech.clips)
    )
    print("\n".join(lines), flush=True)
    r = Results(speech, short)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stenod-bench-http-") as tmp:
        if args.only in (None, "http", "folder"):
            _direct(r, model.path)
        if args.webservice_url and args.only in (None, "http"):
            try:
                _webservice(r, args.webservice_url.rstrip("/"), Path(tmp))
            except (RunFailed, httpx.HTTPError) as exc:
                failures.append(f"whisper-asr-webservice: left out, {exc}")
                print(failures[-1], flush=True)
        try:
            _daemon_runs(r, args, Path(tmp))
        except (RunFailed, httpx.HTTPError, AssertionError) as exc:
            failures.append(f"stenod: stopped early, {type(exc).__name__}: {exc}")
            print(failures[-1], flush=True)
    load = os.getloadavg()
    print()
    print("\n".join([*lines, "", *report(r), *failures]))
    print(
        f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(timings on a busy machine are not representative)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
