"""The daemon under test, supervised the way systemd would (``Restart=on-failure``): killed
and restarted on request, restarted after any other exit, and every exit it did not
cause recorded as a crash. In a cluster there is one supervisor per daemon; a daemon that
exits 1 saying its journal database is unavailable while the database was being
restarted or cut off did what it must (a commit in doubt stops it: its restart reads what
was really committed) and is restarted without counting as a crash."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from stenod.adapters.amqp.source import FAULT_EXIT_AFTER_COMMIT
from support.harness import Daemon
from tests.chaos.postgres import Outages

_READY_SECONDS = 90.0
STOP_SECONDS = 30.0  # shutdown_grace_seconds is 3 in the chaos config


@dataclass(slots=True)
class Incarnation:
    """One daemon process: when it started, whether it became ready, how it ended."""

    pid: int
    started: float
    ready: bool = False
    exit_code: int | None = None
    children: set[tuple[int, float]] = field(default_factory=set)  # (pid, create time): pids get reused


class Supervisor:
    """Runs ``stenod run``; kills and restarts it on request; restarts it after any other
    exit, recording that exit as a crash (exit 99 is the crash-after-commit fault hook)."""

    def __init__(
        self, config: Path, log_path: Path, env: dict[str, str], *, name: str = "daemon", outages: Outages | None = None
    ) -> None:
        self.name = name
        self._config = config
        self._log = log_path
        self._env = env
        self._outages = outages
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._daemon: Daemon | None = None
        self.incarnations: list[Incarnation] = []
        self.crashes: list[str] = []
        self.not_ready: list[int] = []
        self.hook_exits = 0
        self.journal_exits = 0  # exits 1 while the database was away: expected, restarted
        self.peak_rss = 0
        self._thread = threading.Thread(target=self._watch, name=f"chaos:supervisor:{name}", daemon=True)

    def start(self, *, crash_after_commit: bool = False) -> None:
        with self._lock:
            env = {FAULT_EXIT_AFTER_COMMIT: "1"} if crash_after_commit else {}
            self._daemon = Daemon(self._config, self._log, env={**self._env, **env}).start()
            self.incarnations.append(Incarnation(self._daemon.process.pid, time.monotonic()))
        self._wait_ready()
        if not self._thread.is_alive():
            self._thread.start()

    def kill_and_restart(self, *, crash_after_commit: bool = False, down_seconds: float = 0.0) -> None:
        """SIGKILL (no warning, no cleanup), then start again after ``down_seconds`` (held
        under the lock: the watcher must not restart it sooner)."""
        with self._lock:
            self._kill()
            time.sleep(down_seconds)
            self.start(crash_after_commit=crash_after_commit)

    def pause(self, *, tree: bool = False) -> list[psutil.Process]:
        """SIGSTOP the daemon; with ``tree`` its child processes too (a frozen machine),
        else the main process alone (``kill -STOP``: its event relay, a child, goes on).
        It keeps its sockets and believes it holds its leases. Returns what to ``resume``."""
        with self._lock:
            if self._daemon is None or not self._daemon.alive:
                return []
            try:
                main = psutil.Process(self.pid)
                procs = [main, *(main.children(recursive=True) if tree else [])]
            except psutil.Error:
                return []
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGSTOP)
            return procs

    @staticmethod
    def resume(procs: list[psutil.Process]) -> None:
        """SIGCONT; psutil signals no process that ended meanwhile (it checks the pid was not reused)."""
        for proc in reversed(procs):
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)

    def stop_and_restart(self) -> None:
        """SIGTERM, as ``systemctl restart`` does: the daemon must exit 0 within
        ``STOP_SECONDS`` (else it is recorded as a crash and killed), then it starts again."""
        with self._lock:
            if self._daemon is not None and self._daemon.alive:
                self._remember_children()
                try:
                    code = self._daemon.terminate(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    self.crashes.append(f"pid {self.pid} did not stop within {STOP_SECONDS:.0f} s of SIGTERM")
                    self._daemon.kill()
                    code = -9
                else:
                    if code == 99 and FAULT_EXIT_AFTER_COMMIT in self._daemon.env:
                        self.hook_exits += 1  # a request in flight at SIGTERM is finished: the hook fired
                    elif self._journal_exit(code, self._daemon):
                        self.journal_exits += 1
                    elif code != 0:
                        self.crashes.append(f"pid {self.pid} exited {code} after SIGTERM")
                    self._check_no_intake_after_stop()
                self.incarnations[-1].exit_code = code
            self.start()

    def _check_no_intake_after_stop(self) -> None:
        """Once stopping has begun, no consumer may start (it would take requests it must then finish)."""
        assert self._daemon is not None
        events = [e.get("event") for e in self._daemon.events(since_start=True)]
        if "dispatcher.draining" in events and "amqp.consuming" in events[events.index("dispatcher.draining") :]:
            self.crashes.append(f"pid {self.pid} started consuming requests after SIGTERM")

    def rss(self) -> int:
        with self._lock:
            try:
                return int(psutil.Process(self.pid).memory_info().rss)
            except (psutil.Error, AssertionError):
                return 0

    @property
    def pid(self) -> int:
        assert self._daemon is not None
        return self._daemon.process.pid

    def stop(self) -> int | None:
        """SIGTERM, as systemd stops it; returns the exit code."""
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            if self._daemon is None or not self._daemon.alive:
                return None
            self._remember_children()
            try:
                self._daemon.process.send_signal(signal.SIGCONT)  # a paused daemon would not see SIGTERM
                code = self._daemon.terminate(timeout=60)
            finally:
                self._daemon.kill()
            self.incarnations[-1].exit_code = code
            return code

    def orphans(self) -> list[int]:
        """Child processes of earlier incarnations that are still running."""
        live = []
        for inc in self.incarnations:
            for pid, created in inc.children:
                try:
                    proc = psutil.Process(pid)
                    if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                        live.append(pid)
                except psutil.Error:
                    continue
        return live

    def _kill(self) -> None:
        if self._daemon is not None and self._daemon.alive:
            self._remember_children()
            self._daemon.kill()
            self.incarnations[-1].exit_code = -9

    def _remember_children(self) -> None:
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return
        for kid in kids:
            try:
                self.incarnations[-1].children.add((kid.pid, kid.create_time()))
            except psutil.Error:
                continue

    def _wait_ready(self) -> None:
        daemon, inc = self._daemon, self.incarnations[-1]
        assert daemon is not None
        deadline = time.monotonic() + _READY_SECONDS
        while time.monotonic() < deadline and daemon.alive:
            if daemon.named("daemon.ready", since_start=True):
                inc.ready = True
                return
            time.sleep(0.1)
        if daemon.alive:
            self.not_ready.append(inc.pid)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                daemon = self._daemon
                if daemon is None or daemon.proc is None:
                    continue
                code = daemon.proc.poll()
                if code is None:
                    self.peak_rss = max(self.peak_rss, self.rss())
                    continue
                self.incarnations[-1].exit_code = code
                if code == 99 and FAULT_EXIT_AFTER_COMMIT in daemon.env:
                    self.hook_exits += 1
                elif self._journal_exit(code, daemon):
                    self.journal_exits += 1
                else:
                    tail = "\n".join(self._log.read_text(errors="replace").splitlines()[-40:])
                    self.crashes.append(f"pid {daemon.proc.pid} exited with {code}:\n{tail}")
                self.start()

    def _journal_exit(self, code: int, daemon: Daemon) -> bool:
        """Exit 1 for a journal database that was away (``journal.unavailable``) while the
        run had it restarted or cut off; any other exit 1 is still a crash."""
        if code != 1 or self._outages is None or not self._outages.near(time.monotonic()):
            return False
        return any(e.get("event") == "journal.unavailable" for e in daemon.events(since_start=True))
