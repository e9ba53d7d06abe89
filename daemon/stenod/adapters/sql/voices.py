"""Voices remembered (``voices``): a voiceprint per row, under the name a person gave it,
with the item it was learnt from. Each operation is written once for both backends."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from stenod.adapters.sql.reads import SqlReads
from stenod.adapters.sql.statements import All, Count, Exec, One, Op, dumps, loads
from stenod.errors import NameTaken
from stenod.events import utc_now
from stenod.speakers import KnownSpeaker, Voiceprint
from stenod.who_spoke.voices import RememberedVoice

__all__ = ["SqlVoices"]

T = TypeVar("T")

# One row per voiceprint of an item (its id: a digest of both): naming a voice again from
# the same recording renames it rather than keeping it twice.
_KEEP = (
    "INSERT INTO voices (id, name, model, vector, item_id, learnt_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET name = excluded.name, learnt_at = excluded.learnt_at"
)


def keep(name: str, voiceprint: Voiceprint, item_id: str) -> Op[None]:
    vector = dumps(list(voiceprint.vector))
    key = hashlib.sha256(f"{item_id}\n{voiceprint.model}\n{vector}".encode()).hexdigest()
    yield Exec(_KEEP, (key, name, voiceprint.model, vector, item_id, utc_now()))


def known() -> Op[list[KnownSpeaker]]:
    rows = yield All("SELECT name, model, vector FROM voices ORDER BY seq")
    prints: dict[str, list[Voiceprint]] = {}
    for r in rows:
        prints.setdefault(r["name"], []).append(Voiceprint(r["model"], tuple(loads(r["vector"]))))
    # Sorted here, not by the database: SQLite and PostgreSQL collate names differently.
    return [KnownSpeaker(name, voiceprints=tuple(prints[name])) for name in sorted(prints)]


def listed() -> Op[list[RememberedVoice]]:
    rows = yield All("SELECT name, model, learnt_at FROM voices ORDER BY seq")
    out: dict[str, RememberedVoice] = {}
    for r in rows:
        seen = out.get(r["name"])
        if seen is None:
            out[r["name"]] = RememberedVoice(r["name"], 1, (r["model"],), r["learnt_at"])
            continue
        models = seen.models if r["model"] in seen.models else (*seen.models, r["model"])
        out[r["name"]] = RememberedVoice(seen.name, seen.voiceprints + 1, models, max(seen.learnt_at, r["learnt_at"]))
    return [out[name] for name in sorted(out)]


def rename(name: str, new_name: str, merge: bool) -> Op[int]:
    found = yield One("SELECT 1 AS found FROM voices WHERE name = ? LIMIT 1", (name,))
    if found is None:
        return 0
    if new_name != name and not merge:
        taken = yield One("SELECT 1 AS taken FROM voices WHERE name = ? LIMIT 1", (new_name,))
        if taken is not None:
            raise NameTaken(f"{new_name!r} already has voiceprints; merge the two to join them")
    moved = yield Count("UPDATE voices SET name = ? WHERE name = ?", (new_name, name))
    return int(moved)


def forget(name: str) -> Op[int]:
    gone = yield Count("DELETE FROM voices WHERE name = ?", (name,))
    return int(gone)


class SqlVoices(SqlReads):
    """The journal's voiceprints (see :class:`stenod.who_spoke.voices.VoiceJournal`)."""

    async def _keep_write(self, make: Callable[[], Op[T]]) -> T:
        return await self._driver.run(make, write=True)

    async def remember_voice(self, name: str, voiceprint: Voiceprint, item_id: str) -> None:
        await self._keep_write(lambda: keep(name, voiceprint, item_id))

    async def known_voices(self) -> list[KnownSpeaker]:
        return await self._read(known)

    async def voices(self) -> list[RememberedVoice]:
        return await self._read(listed)

    async def rename_voice(self, name: str, new_name: str, *, merge: bool = False) -> int:
        return await self._keep_write(lambda: rename(name, new_name, merge))

    async def forget_voice(self, name: str) -> int:
        return await self._keep_write(lambda: forget(name))
