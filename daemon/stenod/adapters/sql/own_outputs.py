"""stenod's own files in the journal (``own_outputs``): each path recorded before it is
written, with no size yet, then with the size and mtime the write gave it. A watched folder
reads it to tell stenod's files from a user's (:func:`own_output`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from stenod.adapters.sql.statements import All, Exec, Many, One, Op, chunks, marks
from stenod.events import utc_now
from stenod.journal import OutputFile, OwnOutput, Unsettled

# A path written again (a new input of the same name, a correction) starts again with no
# size: until the new write is recorded, the file on disk is neither the old one nor a user's.
_EXPECT = (
    "INSERT INTO own_outputs (path, item_id, size, mtime_ns, recorded_at) VALUES (?, ?, NULL, NULL, ?) "
    "ON CONFLICT (path) DO UPDATE SET item_id = excluded.item_id, size = NULL, mtime_ns = NULL, "
    "recorded_at = excluded.recorded_at"
)
_RECORD = (
    "INSERT INTO own_outputs (path, item_id, size, mtime_ns, recorded_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (path) DO UPDATE SET item_id = excluded.item_id, size = excluded.size, "
    "mtime_ns = excluded.mtime_ns, recorded_at = excluded.recorded_at"
)


def expect(outputs: Mapping[str, Sequence[str]]) -> Op[dict[str, list[Unsettled]]]:
    """The files about to be written, by item id (their keys: see ``OutputFile.key``).

    Returns, by item id, the files an earlier attempt at the same items announced and never
    recorded as written (it ended between the two): the writer removes those this attempt
    does not write again, so an item's files are those of the outcome the journal records."""
    now = utc_now()
    unsettled: dict[str, list[Unsettled]] = {}
    for ids in chunks(list(outputs)):
        found = yield All(
            f"SELECT path, item_id, recorded_at FROM own_outputs WHERE size IS NULL AND item_id IN ({marks(ids)}) "
            "ORDER BY path",
            ids,
        )
        for row in found:
            since = datetime.fromisoformat(row["recorded_at"].replace("Z", "+00:00")).timestamp()
            unsettled.setdefault(row["item_id"], []).append(Unsettled(row["path"], since))
    rows = [(key, item_id, now) for item_id, keys in outputs.items() for key in keys]
    if rows:
        yield Many(_EXPECT, rows)
    return unsettled


def record(item_id: str, files: Sequence[OutputFile]) -> Op[None]:
    """The files written for an item, with the size and mtime each has now."""
    now = utc_now()
    if files:
        yield Many(_RECORD, [(f.key, item_id, f.size, f.mtime_ns, now) for f in files])


def settle(item_id: str, files: Sequence[OutputFile]) -> Op[None]:
    """The item is over: the files it wrote are recorded, the ones it expected and did not
    write are forgotten (a path nobody wrote must not be held back as stenod's for good)."""
    yield from record(item_id, files)
    yield Exec("DELETE FROM own_outputs WHERE item_id = ? AND size IS NULL", (item_id,))


def own_output(key: str) -> Op[OwnOutput | None]:
    row = yield One("SELECT size, mtime_ns FROM own_outputs WHERE path = ?", (key,))
    return OwnOutput(row["size"], row["mtime_ns"]) if row else None
