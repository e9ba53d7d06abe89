"""What one translation job asks for, resolved from the batch, its options and settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stenod.provider import Batch, FileUpload, PermanentError

from .settings import BATCH_MAX_TARGETS, GLOSSARY_FORMATS, AzureOptions, AzureSettings

_REGIONAL = frozenset({"pt-br", "pt-pt", "fr-ca"})


@dataclass(frozen=True, slots=True)
class Glossary:
    """An operator-configured glossary file."""

    name: str
    path: Path
    format: str
    content_type: str
    size: int

    def upload(self) -> FileUpload:
        return FileUpload(self.path.name, self.size, lambda: self.path.open("rb"), self.content_type)


@dataclass(frozen=True, slots=True)
class TranslationRequest:
    """``targets`` maps each requested language tag to the code sent to Azure."""

    targets: dict[str, str]
    source_language: str | None
    category: str | None
    glossary: Glossary | None


def resolve(batch: Batch, settings: AzureSettings) -> TranslationRequest:
    """Check the job's targets and options against the settings.

    Raises PermanentError for no/too many target languages or an unknown glossary.
    """
    options = batch.options if isinstance(batch.options, AzureOptions) else AzureOptions()
    if not batch.target_languages:
        raise PermanentError("azure translation needs at least one target language", code="no_target_language")
    if len(batch.target_languages) > BATCH_MAX_TARGETS:
        raise PermanentError(
            f"azure translates into at most {BATCH_MAX_TARGETS} languages per job, "
            f"{len(batch.target_languages)} were asked for",
            code="too_many_targets",
        )
    source = options.source_language or batch.language
    return TranslationRequest(
        targets={tag: azure_language(tag) for tag in batch.target_languages},
        source_language=azure_language(source) if source else None,
        category=options.category,
        glossary=_glossary(options.glossary, settings) if options.glossary else None,
    )


def azure_language(tag: str) -> str:
    """Azure's code for a language tag: ``hi-IN`` → ``hi``, but ``pt-BR``, ``fr-CA``,
    ``zh-Hans`` and ``sr-Latn`` stay (Azure knows those variants, few regional ones)."""
    base, _, rest = tag.partition("-")
    if not rest or tag.lower() in _REGIONAL or len(rest) > 2:
        return tag
    return base


def _glossary(name: str, settings: AzureSettings) -> Glossary:
    path = settings.glossaries.get(name)
    if path is None:
        known = ", ".join(sorted(settings.glossaries)) or "none configured"
        raise PermanentError(
            f"unknown glossary {name!r}; [providers.azure.glossaries] has: {known}", code="unknown_glossary"
        )
    extension = path.suffix.lower().lstrip(".")
    if extension not in GLOSSARY_FORMATS:
        raise PermanentError(f"glossary {name!r} must be a .csv, .tsv or .xlf file", code="bad_glossary")
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise PermanentError(f"glossary {name!r} ({path}) cannot be read: {exc.strerror}", code="bad_glossary") from exc
    kind, content_type = GLOSSARY_FORMATS[extension]
    return Glossary(name, path, kind, content_type, size)
