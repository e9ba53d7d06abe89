"""The folder source: turns files dropped into a watched folder into accepted jobs.

A file is taken once its size and mtime have been stable for the settle time, or at
once when it was renamed into place from a partial name. watchfiles can miss events
(overflow, network mounts, the daemon being down), so a start-up scan and a periodic
rescan back it up; intake is idempotent (seen files are keyed by inode, size and
mtime in the journal) and duplicates by content are answered from the earlier result.
stenod's own files are known from the journal, not by their names alone (a translating
folder takes ``.txt`` files): it records each before writing it, then with its size and
mtime, so none is ever taken back as an input, by this daemon or another.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
import watchfiles

from stenod.adapters.folders.atomic import output_key
from stenod.adapters.folders.files import PARTIAL_SUFFIXES, FileRefused, hash_file, is_ignored_name
from stenod.errors import JournalError
from stenod.journal import Journal, NewItem, NewJob
from stenod.output_spec import OutputSpec
from stenod.settings import WatchRule
from stenod.who_spoke.voices import with_remembered

log = structlog.get_logger("stenod.folder")

DONE_DIRS = ("done", "failed")
_OWN_OUTPUT_RECHECK_SECONDS = 0.5  # a file stenod is writing right now: look again this soon


@dataclass(frozen=True, slots=True)
class Candidate:
    size: int
    mtime_ns: int
    since: float
    immediate: bool = False


class FolderSource:
    """Watches one ``[[watch]]`` rule's folder and commits a job per complete file."""

    def __init__(
        self,
        rule: WatchRule,
        journal: Journal,
        notify: Callable[[], None],
        *,
        provider: str,
        rescan_seconds: float = 60.0,
        use_watcher: bool = True,
        metrics: object | None = None,
        recall_voices: bool = True,
    ) -> None:
        self.rule = rule
        self._recall_voices = recall_voices  # [diarization] remember_voices
        self.root = rule.path
        self.name = f"folder:{rule.path}"
        self._journal = journal
        self._notify = notify
        self._provider = provider
        self._rescan_seconds = rescan_seconds
        self._use_watcher = use_watcher
        self._metrics = metrics
        self._candidates: dict[Path, Candidate] = {}
        self._changed = asyncio.Event()
        self._reported: set[tuple[Path, str]] = set()
        self._known: dict[Path, tuple[int, int]] = {}  # taken or refused: (size, mtime_ns)
        self._rule_key = str(rule.path)
        self.scanned = asyncio.Event()  # the start-up scan is done (readiness)

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._wake_on(stopping), name=f"{self.name}:stop-relay")
            tg.create_task(self._settle_loop(stopping), name=f"{self.name}:settle")
            tg.create_task(self._rescan_loop(stopping), name=f"{self.name}:rescan")
            if self._use_watcher:
                tg.create_task(self._watch_loop(stopping), name=f"{self.name}:watch")

    async def _wake_on(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._changed.set()

    # -- discovery ---------------------------------------------------------------

    def _scan(self) -> list[tuple[Path, int, int]]:
        found: list[tuple[Path, int, int]] = []
        try:
            iterator: Iterable[Path] = self._walk(self.root)
            for path in iterator:
                try:
                    st = path.lstat()
                except OSError:
                    continue
                found.append((path, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            pass
        return found

    def _walk(self, directory: Path) -> Iterable[Path]:
        with os.scandir(directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    if self.rule.recursive and entry.name not in DONE_DIRS and not entry.name.startswith("."):
                        yield from self._walk(path)
                    continue
                yield path

    async def _rescan_loop(self, stopping: asyncio.Event) -> None:
        missing_logged = False
        while not stopping.is_set():
            if not self.root.is_dir():
                if not missing_logged:
                    log.error(
                        "watch.path_missing",
                        path=str(self.root),
                        hint="create the folder or fix [[watch]] path; stenod keeps checking",
                    )
                    missing_logged = True
            else:
                if missing_logged:
                    log.info("watch.path_appeared", path=str(self.root))
                    missing_logged = False
                for path, size, mtime in await asyncio.to_thread(self._scan):
                    self._consider(path, size, mtime)
            self.scanned.set()
            try:
                async with asyncio.timeout(self._rescan_seconds):
                    await stopping.wait()
            except TimeoutError:
                pass

    async def _watch_loop(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            if not self.root.is_dir():
                try:
                    async with asyncio.timeout(min(self._rescan_seconds, 5.0)):
                        await stopping.wait()
                except TimeoutError:
                    pass
                continue
            try:
                async for changes in watchfiles.awatch(
                    self.root,
                    stop_event=stopping,
                    recursive=self.rule.recursive,
                    watch_filter=None,
                    debounce=200,
                    step=50,
                    rust_timeout=5_000,
                    yield_on_timeout=False,
                ):
                    self._on_changes(changes)
            except (FileNotFoundError, OSError, RuntimeError) as exc:
                log.warning("watch.watcher_failed", path=str(self.root), error=str(exc))
                try:
                    async with asyncio.timeout(5.0):
                        await stopping.wait()
                except TimeoutError:
                    pass

    def _on_changes(self, changes: set[tuple[watchfiles.Change, str]]) -> None:
        deleted = {Path(p) for c, p in changes if c == watchfiles.Change.deleted}
        for change, raw in changes:
            if change == watchfiles.Change.deleted:
                self._candidates.pop(Path(raw), None)
                self._known.pop(Path(raw), None)
                continue
            path = Path(raw)
            if not self.rule.recursive and path.parent != self.root:
                continue
            try:
                st = path.lstat()
            except OSError:
                continue
            renamed = any(d.parent == path.parent and self._is_partial_of(d.name, path.name) for d in deleted)
            self._consider(path, st.st_size, st.st_mtime_ns, immediate=renamed)

    @staticmethod
    def _is_partial_of(old: str, new: str) -> bool:
        if old.startswith(".") and old.lstrip(".").startswith(new):
            return True
        return old.lower().startswith(new.lower()) and old.lower().endswith(PARTIAL_SUFFIXES)

    def _consider(self, path: Path, size: int, mtime_ns: int, *, immediate: bool = False) -> None:
        if any(part in DONE_DIRS for part in path.relative_to(self.root).parts[:-1]):
            return
        reason = is_ignored_name(self.rule, path)
        if reason is not None:
            self._report_ignored(path, reason)
            return
        if self._known.get(path) == (size, mtime_ns):
            return
        current = self._candidates.get(path)
        if current is not None and (current.size, current.mtime_ns) == (size, mtime_ns):
            if immediate and not current.immediate:
                self._candidates[path] = Candidate(size, mtime_ns, current.since, True)
                self._changed.set()
            return
        self._candidates[path] = Candidate(size, mtime_ns, time.monotonic(), immediate)
        self._changed.set()

    def _report_ignored(self, path: Path, reason: str) -> None:
        key = (path, reason)
        if key in self._reported:
            return
        self._reported.add(key)
        if len(self._reported) > 10_000:
            self._reported.clear()
        if "rename" in reason:
            log.warning("file.ignored", path=str(path), reason=reason)
        else:
            log.debug("file.ignored", path=str(path), reason=reason)
        if self._metrics is not None:
            self._metrics.file_ignored(reason)  # type: ignore[attr-defined]

    # -- settling and intake -----------------------------------------------------------

    async def _settle_loop(self, stopping: asyncio.Event) -> None:
        settle = self.rule.settle_seconds
        while not stopping.is_set():
            now = time.monotonic()
            due = [p for p, c in self._candidates.items() if c.immediate or now - c.since >= settle]
            for path in due:
                if stopping.is_set():
                    return
                candidate = self._candidates.pop(path, None)
                if candidate is not None:
                    await self._take_guarded(path, candidate)
            waits = [c.since + settle - time.monotonic() for c in self._candidates.values()]
            timeout = max(0.05, min(waits)) if waits else None
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass
            self._changed.clear()

    async def _take_guarded(self, path: Path, candidate: Candidate) -> None:
        """One file's intake failing for an unforeseen reason must not stop the folder."""
        try:
            await self._take(path, candidate)
        except (asyncio.CancelledError, JournalError):
            raise
        except Exception:
            log.exception("file.intake_failed", path=str(path), hint="this is a bug; the file is skipped")
            self._known[path] = (candidate.size, candidate.mtime_ns)

    async def _take(self, path: Path, candidate: Candidate) -> None:
        try:
            st = await asyncio.to_thread(path.lstat)  # a network mount can block
        except FileNotFoundError:
            log.info("file.vanished", path=str(path))
            return
        if (st.st_size, st.st_mtime_ns) != (candidate.size, candidate.mtime_ns):
            self._consider(path, st.st_size, st.st_mtime_ns)  # still being written
            return
        if not await asyncio.to_thread(self._inside_root, path):
            self._refuse(path, st, "reached through a symlinked folder that leads outside the watched folder")
            return
        try:
            if await self._journal.seen(self._rule_key, str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
                self._known[path] = (st.st_size, st.st_mtime_ns)
                return
            if await self._own_output(path, st):
                return
            content_hash, fst = await asyncio.to_thread(hash_file, path)
        except FileRefused as exc:
            self._refuse(path, st, str(exc))
            return
        except FileNotFoundError:
            log.info("file.vanished", path=str(path))
            return
        except PermissionError as exc:
            log.error(
                "file.unreadable",
                path=str(path),
                error=exc.strerror,
                hint="give the stenod user read permission on the file",
            )
            return
        if (fst.st_size, fst.st_mtime_ns) != (candidate.size, candidate.mtime_ns):
            self._consider(path, fst.st_size, fst.st_mtime_ns)
            return
        rule = self.rule
        options = dict(rule.options)
        asked = rule.diarization
        if asked is not None and self._recall_voices:
            asked = with_remembered(asked, await self._journal.known_voices())
        reused = await self._journal.reusable_result(
            content_hash,
            self._provider,
            str(rule.task),
            rule.language,
            rule.target_languages,
            options,
            asked,
        )
        output = OutputSpec.build(
            dir=str(rule.output_dir) if rule.output_dir else None,
            formats=rule.formats,
            after=rule.after,
            root=str(self.root),
            then_translate_to=rule.chain_languages,
            translate_provider=rule.translate_provider,
        )
        job, created = await self._journal.create_job(
            NewJob(
                source="folder",
                task=str(rule.task),
                provider=self._provider,
                language=rule.language,
                target_languages=rule.target_languages,
                options=options,
                output=output,
                items=[
                    NewItem(
                        input=str(path),
                        name=path.name,
                        path=str(path),
                        size=fst.st_size,
                        device=fst.st_dev,
                        inode=fst.st_ino,
                        content_hash=content_hash,
                        reused_result=reused,
                    )
                ],
                seen=(self._rule_key, str(path), fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns),
                diarization=asked,
            )
        )
        self._known[path] = (fst.st_size, fst.st_mtime_ns)
        if not created:  # another instance watching the same (shared) folder took it first
            log.info("file.taken_elsewhere", job_id=job.job_id, input=str(path))
            return
        if self._metrics is not None:
            self._metrics.file_seen()  # type: ignore[attr-defined]
        log.info("job.accepted", job_id=job.job_id, provider=self._provider, input=str(path), reused=reused is not None)
        self._notify()

    async def _own_output(self, path: Path, st: os.stat_result) -> bool:
        """Is the file one stenod wrote (this daemon or another sharing the journal, now or
        before a restart)? Its name says nothing: a translating folder takes ``.txt`` files,
        and stenod writes them. One being written is looked at again shortly; one a user put
        in its place since (another size or mtime) is new work."""
        own = await self._journal.own_output(await asyncio.to_thread(output_key, path))
        if own is None:
            return False
        if own.size is None:
            self._candidates[path] = Candidate(
                st.st_size, st.st_mtime_ns, time.monotonic() - self.rule.settle_seconds + _OWN_OUTPUT_RECHECK_SECONDS
            )
            self._changed.set()
            return True
        if own.matches(st.st_size, st.st_mtime_ns):
            self._known[path] = (st.st_size, st.st_mtime_ns)
            self._report_ignored(path, "stenod output")
            return True
        return False

    def _inside_root(self, path: Path) -> bool:
        """The file's real folder is the watched folder or one below it: a recursive watch
        reports files under a symlinked subfolder (the watcher follows it), which may lead anywhere."""
        return Path(os.path.realpath(path.parent)).is_relative_to(os.path.realpath(self.root))

    def _refuse(self, path: Path, st: os.stat_result, reason: str) -> None:
        self._known[path] = (st.st_size, st.st_mtime_ns)
        log.warning(
            "file.refused",
            path=str(path),
            reason=reason,
            hint="stenod reads only regular files with a single name inside the watched folder",
        )
        if self._metrics is not None:
            self._metrics.file_ignored(reason.split(" (")[0])  # type: ignore[attr-defined]
