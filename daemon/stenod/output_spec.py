"""Where a job's outputs go and what becomes of its inputs: the ``OutputSpec`` every source
builds (through ``OutputSpec.build``, the one place its rules live) and the writers read.

The journal stores it as a JSON object in ``jobs.output``, with the keys older versions
wrote (``dir``, ``formats``, ``after``, ``root``, ``resolved``, ``then_translate_to``,
``translate_provider``): rows written before this type existed read back the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stenod.settings import OUTPUT_FORMATS

DEFAULT_TRANSLATE_PROVIDER: Final = "azure"
"""The provider that translates a transcript when a chained request names none."""

TRANSCRIPT_FORMATS: Final[tuple[str, ...]] = OUTPUT_FORMATS  # one list: the watch rules' formats
"""The transcript files written when a request names no formats."""


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """A job's output settings: its folder, the transcript files to write, what happens to
    the input afterwards, and an optional translation step on the transcript."""

    dir: str | None = None  # None: next to the input (or the state folder for downloads)
    formats: tuple[str, ...] = TRANSCRIPT_FORMATS
    after: str = "keep"  # keep, move, delete (watch rules); discard (uploads: our copy)
    root: str | None = None  # the watched folder, for done/ and failed/
    resolved: bool = False  # ``dir`` had its symlinks resolved at intake: the writer refuses new ones
    then_translate_to: tuple[str, ...] = ()  # chain: translate the transcript into these
    translate_provider: str | None = None  # set whenever ``then_translate_to`` is

    @classmethod
    def build(
        cls,
        *,
        dir: str | None = None,
        formats: Sequence[str] | None = None,
        after: str = "keep",
        root: str | None = None,
        resolved: bool = False,
        then_translate_to: Sequence[str] = (),
        translate_provider: str | None = None,
    ) -> OutputSpec:
        """The spec a request, a command or a watch rule asks for, with the defaults applied."""
        wanted = tuple(formats or TRANSCRIPT_FORMATS)
        if then_translate_to:
            wanted = tuple(sorted({*wanted, "txt"}))  # the translation step reads the .txt
        return cls(
            dir=dir,
            formats=wanted,
            after=after,
            root=root,
            resolved=resolved,
            then_translate_to=tuple(then_translate_to),
            translate_provider=(translate_provider or DEFAULT_TRANSLATE_PROVIDER) if then_translate_to else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the journal (the keys older versions wrote, no more)."""
        data: dict[str, Any] = {"dir": self.dir, "formats": list(self.formats), "after": self.after}
        if self.root is not None:
            data["root"] = self.root
        if self.resolved:
            data["resolved"] = True
        if self.then_translate_to:
            data["then_translate_to"] = list(self.then_translate_to)
            data["translate_provider"] = self.translate_provider
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> OutputSpec:
        """The spec a journal row holds; missing keys (older rows, ``{}``) take the defaults."""
        data = data or {}
        chained = tuple(data.get("then_translate_to") or ())
        return cls(
            dir=data.get("dir") or None,
            formats=tuple(data.get("formats") or TRANSCRIPT_FORMATS),
            after=data.get("after") or "keep",
            root=data.get("root") or None,
            resolved=bool(data.get("resolved")),
            then_translate_to=chained,
            translate_provider=(data.get("translate_provider") or DEFAULT_TRANSLATE_PROVIDER) if chained else None,
        )
