"""A scriptable third-party provider for tests, installed from its own distribution.

It imports only ``stenod.provider``, like any third-party plugin. Each remote job it
"creates" is appended to ``<ledger_dir>/created.log`` (one line per creation), so tests
in another process can count provider runs across daemon crashes.

Asked who spoke (``Batch.diarization``), it answers from a script, deterministically: an
input named ``…voices-ann-bob-ann….wav`` has turns by the voices ann, bob, ann (otherwise
as many voices as the request's count, or 2, named after the file). Each voice has a
voiceprint of its own (``echo-voice-1``: a unit vector made from the voice's name), so a
voiceprint remembered from one recording matches the same voice in the next; known
speakers by reference clip label the voices in order of first appearance. The request it
received goes to ``<ledger_dir>/diarization.log``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import httpx
from pydantic import BaseModel, ConfigDict

from stenod.provider import (
    Batch,
    Diarization,
    ErrorInfo,
    Handle,
    ItemResult,
    Limits,
    ProviderSettings,
    RemoteState,
    Segment,
    Speaker,
    Status,
    StepContext,
    Task,
    Transcript,
    TranslatedDocument,
    Voiceprint,
    Word,
)


class EchoSettings(ProviderSettings):
    submit_delay_seconds: float = 0.0
    job_seconds: float = 0.0  # how long the remote job "runs" after submit
    max_files: int = 1
    max_file_bytes: int | None = None
    fail_marker: str = "FAIL"  # input names containing this fail with a per-item error
    ledger_dir: str | None = None
    diarization: bool = True  # false: as an engine whose optional part is not installed


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shout: bool = False


class EchoProvider:
    name: ClassVar[str] = "echo"
    Settings: ClassVar[type[ProviderSettings]] = EchoSettings
    Options: ClassVar[type[BaseModel]] = EchoOptions
    limits: Limits = Limits(
        tasks=frozenset({Task.TRANSCRIBE, Task.TRANSLATE}),
        formats=frozenset({"wav", "mp3", "flac", "ogg", "txt", "html"}),
        max_files=1,
        min_poll_seconds=0.0,
    )

    def __init__(self, settings: EchoSettings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self.limits = Limits(
            tasks=self.limits.tasks,
            formats=self.limits.formats,
            max_files=settings.max_files,
            max_file_bytes=settings.max_file_bytes,
            min_poll_seconds=0.0,
            diarization=settings.diarization,
            diarization_missing=None if settings.diarization else "pip install 'stenod-echo[voices]'",
        )

    def _ledger(self, line: str) -> None:
        if self._settings.ledger_dir:
            path = Path(self._settings.ledger_dir) / "created.log"
            with path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        saved = ctx.saved
        if saved is None:
            remote_id = f"echo-{batch.batch_id}"
            self._ledger(f"{remote_id} {' '.join(i.name for i in batch.items)}")
            await ctx.checkpoint({"remote_id": remote_id})
            if batch.diarization is not None and self._settings.ledger_dir:
                with (Path(self._settings.ledger_dir) / "diarization.log").open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"batch": remote_id, **batch.diarization.to_json()}) + "\n")
        else:
            remote_id = saved["remote_id"]
        if self._settings.submit_delay_seconds:
            for step in range(10):
                ctx.progress(step / 10)
                await asyncio.sleep(self._settings.submit_delay_seconds / 10)
        items = []
        for item in batch.items:
            with item.open() as fh:
                head = fh.read(64)
            items.append(
                {
                    "item_id": item.item_id,
                    "name": item.name,
                    "size": item.size,
                    "text": head.decode("utf-8", "replace") if item.extension in ("txt", "html") else None,
                }
            )
        return {
            "remote_id": remote_id,
            "done_at": time.time() + self._settings.job_seconds,
            "items": items,
            "task": str(batch.task),
            "targets": list(batch.target_languages),
            "shout": bool(getattr(batch.options, "shout", False)),
            "diarization": batch.diarization.to_json() if batch.diarization is not None else None,
        }

    async def poll(self, handle: Handle) -> Status:
        remaining = float(handle["done_at"]) - time.time()
        if remaining > 0:
            return Status(RemoteState.RUNNING, progress=0.5, retry_after=remaining)
        return Status(RemoteState.DONE, progress=1.0)

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        results = []
        for item in handle["items"]:
            if self._settings.fail_marker and self._settings.fail_marker in item["name"]:
                results.append(
                    ItemResult(
                        item["item_id"],
                        error=ErrorInfo("provider_rejected", f"echo refused {item['name']}", hint="rename the file"),
                    )
                )
                continue
            if handle["task"] == "translate":
                docs = tuple(
                    TranslatedDocument(lang, f"[{lang}] {item['text'] or ''}".encode(), item["name"].rsplit(".", 1)[-1])
                    for lang in handle["targets"]
                )
                results.append(ItemResult(item["item_id"], documents=docs))
                continue
            if handle["diarization"] is not None:
                transcript = _who_spoke(item["name"], Diarization.from_json(handle["diarization"]))
                results.append(ItemResult(item["item_id"], transcript=transcript))
                continue
            text = f"echo {item['name']} {item['size']} bytes"
            if handle["shout"]:
                text = text.upper()
            transcript = Transcript(
                text=text,
                language="en",
                duration=2.0,
                segments=(Segment(0.0, 1.0, text, speaker="0"), Segment(1.0, 2.0, "second & <last>", speaker="1")),
                provider="echo",
                provider_job_id=handle["remote_id"],
            )
            results.append(ItemResult(item["item_id"], transcript=transcript))
        return results

    async def cancel(self, handle: Handle) -> None:
        return None


VOICE_MODEL = "echo-voice-1"
_MATCH = 0.8  # cosine similarity from which a voiceprint is taken for the same voice


def voiceprint_of(voice: str) -> Voiceprint:
    """The scripted voice's embedding: a unit vector from its name (the same every time)."""
    raw = [b - 127.5 for b in hashlib.sha256(voice.encode()).digest()[:16]]
    norm = math.sqrt(sum(v * v for v in raw))
    return Voiceprint(VOICE_MODEL, tuple(v / norm for v in raw))


def _voices(name: str, asked: Diarization) -> list[str]:
    """Who speaks each turn, in order."""
    found = re.search(r"voices((?:-[a-z0-9]+)+)", name.lower())
    if found:
        return found.group(1).strip("-").split("-")
    count = asked.num_speakers or asked.min_speakers or 2
    stem = name.rsplit(".", 1)[0]
    return [f"{stem}-{i}" for i in range(count)]


def _who_spoke(name: str, asked: Diarization) -> Transcript:
    turns = _voices(name, asked)
    order = list(dict.fromkeys(turns))
    speakers: dict[str, Speaker] = {}
    for index, voice in enumerate(order):
        vp = voiceprint_of(voice)
        label, best, similarity = f"SPEAKER_{index:02d}", None, None
        for known in asked.known:
            if known.references and index < len(asked.known) and asked.known[index] is known:
                best, similarity = known.name, 1.0  # a reference clip: the voices in order
            for remembered in known.voiceprints:
                score = vp.similarity(remembered)
                if score is not None and score >= _MATCH and (similarity is None or score > similarity):
                    best, similarity = known.name, round(score, 4)
        speakers[voice] = Speaker(best or label, best, similarity, vp)
    segments, words = [], []
    for turn, voice in enumerate(turns):
        label = speakers[voice].label
        start = turn * 2.0
        text = f"turn {turn} by {voice}"
        segments.append(Segment(start, start + 1.5, text, speaker=label))
        for n, word in enumerate(text.split()):
            words.append(Word(start + n * 0.3, start + n * 0.3 + 0.25, word, speaker=label))
    return Transcript(
        text=" ".join(s.text for s in segments),
        language="en",
        duration=len(turns) * 2.0,
        segments=tuple(segments),
        words=tuple(words),
        provider="echo",
        speakers=tuple(speakers[v] for v in order),
    )
