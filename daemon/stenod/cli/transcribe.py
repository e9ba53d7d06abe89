"""``stenod transcribe``: the daemon's own pipeline, once, in this process.

The files become one job in an ephemeral journal; the same dispatcher, providers and
writers as the daemon run it to the end. A progress bar is shown on a TTY.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from stenod.jobs import JobState, JobView
from stenod.journal import Journal, NewItem, NewJob
from stenod.output_spec import OutputSpec
from stenod.settings import Settings
from stenod.speakers import Diarization
from stenod.who_spoke.diarization import unavailable_reason
from stenod.wiring.app import build


async def transcribe_files(
    settings: Settings,
    files: Sequence[Path],
    *,
    provider: str,
    language: str | None,
    formats: Sequence[str] | None,
    output_dir: Path | None,
    translate_to: Sequence[str],
    translate_provider: str | None = None,
    options: dict[str, Any],
    print_text: bool,
    diarization: Diarization | None = None,
) -> int:
    missing = [f for f in files if not f.exists()]
    for f in missing:
        print(f"stenod: {f}: no such file", file=sys.stderr)
    if missing:
        return 2
    task = "transcribe"
    targets: tuple[str, ...] = ()
    chain_to: Sequence[str] = ()
    if translate_to:
        if translate_provider is None and provider_translates(provider, translate_to):
            task, targets = "translate", tuple(translate_to)  # the provider translates the input itself
        else:
            chain_to = translate_to
    output = OutputSpec.build(
        dir=os.path.abspath(output_dir) if output_dir else None,  # noqa: ASYNC240 (no I/O)
        formats=formats,
        then_translate_to=chain_to,
        translate_provider=translate_provider,
    )
    stopping = asyncio.Event()
    async with AsyncExitStack() as stack:
        daemon = await build(settings, stack, use_watcher=False)
        daemon.dispatcher.idle = asyncio.Event()
        runtime = daemon.providers.runtimes.get(provider)
        reason = unavailable_reason(provider, runtime.limits) if runtime is not None else None
        if diarization is not None and reason is not None:
            print(f"stenod: --diarize: {reason}", file=sys.stderr)
            return 2
        items = []
        for f in files:
            path = f.absolute()
            st = path.stat()
            items.append(
                NewItem(
                    input=str(path), name=path.name, path=str(path), size=st.st_size, device=st.st_dev, inode=st.st_ino
                )
            )
        job, _ = await daemon.journal.create_job(
            NewJob(
                source="cli",
                task=task,
                provider=provider,
                language=language,
                target_languages=targets,
                options=options,
                output=output,
                items=items,
                diarization=diarization,
            )
        )
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(daemon.dispatcher.run(stopping), name="dispatcher")
            view = await _follow(daemon.journal, job.job_id, runner)
            stopping.set()
    assert view is not None
    return _report(view, print_text)


def provider_translates(provider: str, targets: Sequence[str]) -> bool:
    """Whether ``provider`` translates the input into every one of ``targets`` itself (Whisper
    into English; otherwise the transcript is translated by a second provider)."""
    from stenod.provider import Task
    from stenod.wiring.plugin_discovery import Catalogue

    loaded = Catalogue.discover().available.get(provider)
    if loaded is None or Task.TRANSLATE not in loaded.cls.limits.tasks:
        return False
    return all(loaded.cls.limits.accepts(t, target=True) for t in targets)


async def _follow(journal: Journal, job_id: str, runner: asyncio.Task[None]) -> JobView | None:
    tty = sys.stderr.isatty() and not os.environ.get("STENOD_NO_PROGRESS")
    progress_ctx: Any = None
    bar: Any = None
    if tty:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress_ctx = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            transient=True,
        )
        progress_ctx.start()
        bar = progress_ctx.add_task("transcribing", total=1.0)
    try:
        while True:
            view = await journal.job(job_id)
            if view is None or view.state.terminal or runner.done():
                return view
            if bar is not None:
                progress_ctx.update(bar, completed=view.progress, description=str(view.state))
            await asyncio.sleep(0.25)
    finally:
        if progress_ctx is not None:
            progress_ctx.stop()


def _report(view: JobView, print_text: bool) -> int:
    for item in view.items:
        if item.error:
            print(f"{item.input}: {item.error.code}: {item.error.message}", file=sys.stderr)
            if item.error.hint:
                print(f"  what to do: {item.error.hint}", file=sys.stderr)
            continue
        for out in item.outputs:
            print(out)
        if print_text and item.transcript:
            print(item.transcript.get("text", ""))
    return 0 if view.state == JobState.SUCCEEDED else 1
