"""Configuration, per-job options and limits of the ``azure`` provider."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from stenod.provider import Limits, ProviderSettings, Task

DEFAULT_API_VERSION = "2024-05-01"
# Azure states its caps in "MB"; the decimal reading is the smaller, hence the safe one.
SYNC_MAX_BYTES = 10_000_000
SYNC_MAX_GLOSSARY_BYTES = 1_000_000
BATCH_MAX_FILE_BYTES = 40_000_000
BATCH_MAX_BYTES = 250_000_000
BATCH_MAX_FILES = 1000
BATCH_MAX_TARGETS = 10
SYNC_JOB_MAX_FILES = 10
SYNC_JOB_MAX_BYTES = 20_000_000

BATCH_FORMATS = frozenset(
    {
        "pdf",
        "csv",
        "dita",
        "html",
        "htm",
        "md",
        "markdown",
        "mdown",
        "mkdn",
        "mkd",
        "mdwn",
        "mdtxt",
        "mdtext",
        "rmd",
        "mhtml",
        "mht",
        "xls",
        "xlsx",
        "msg",
        "ppt",
        "pptx",
        "doc",
        "docx",
        "odp",
        "ods",
        "odt",
        "rtf",
        "tsv",
        "tab",
        "txt",
        "xlf",
        "xliff",
        "xml",
    }
)
SYNC_CONTENT_TYPES = {
    "txt": "text/plain",
    "tsv": "text/tab-separated-values",
    "tab": "text/tab-separated-values",
    "csv": "text/csv",
    "html": "text/html",
    "htm": "text/html",
    "mhtml": "message/rfc822",
    "mht": "message/rfc822",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "msg": "application/vnd.ms-outlook",
    "xlf": "application/xliff+xml",
}
GLOSSARY_FORMATS = {
    "csv": ("CSV", "text/csv"),
    "tsv": ("TSV", "text/tab-separated-values"),
    "tab": ("TSV", "text/tab-separated-values"),
    "xlf": ("XLIFF", "application/xliff+xml"),
}

BATCH_LIMITS = Limits(
    tasks=frozenset({Task.TRANSLATE}),
    formats=BATCH_FORMATS,
    max_files=BATCH_MAX_FILES,
    max_file_bytes=BATCH_MAX_FILE_BYTES,
    max_batch_bytes=BATCH_MAX_BYTES,
    min_poll_seconds=2.0,
)


def sync_only_limits(sync_max_bytes: int) -> Limits:
    """What the provider accepts when no Blob container is configured. Jobs stay small
    because synchronous translations travel (base64) in checkpoints and handles."""
    return Limits(
        tasks=frozenset({Task.TRANSLATE}),
        formats=frozenset(SYNC_CONTENT_TYPES),
        max_files=SYNC_JOB_MAX_FILES,
        max_file_bytes=sync_max_bytes,
        max_batch_bytes=max(sync_max_bytes, SYNC_JOB_MAX_BYTES),
        min_poll_seconds=2.0,
    )


class AzureSettings(ProviderSettings):
    """``[providers.azure]``.

    ``base_url`` is the Translator resource's endpoint
    (``https://<resource>.cognitiveservices.azure.com``). ``container_sas_url`` is a
    Blob container SAS URL with read, write, list and delete rights; without it only
    the synchronous single-document endpoint is used (files up to ``sync_max_bytes``).
    ``glossaries`` names glossary files (csv, tsv, xlf) that jobs may pick by name: a
    job can only choose among files the operator listed here, never pass a path.
    """

    region: str | None = Field(default=None, max_length=64)
    container_sas_url: SecretStr | None = None
    sync_max_bytes: int = Field(default=SYNC_MAX_BYTES, ge=1, le=SYNC_MAX_BYTES)
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^\d{4}-\d{2}-\d{2}(-preview)?$")
    glossaries: dict[str, Path] = Field(default_factory=dict)


class AzureOptions(BaseModel):
    """Per-job options: ``source_language`` (default: the job's language, else
    auto-detect), ``glossary`` (a name from ``[providers.azure.glossaries]``) and
    ``category`` (a Custom Translator category id)."""

    model_config = ConfigDict(extra="forbid")

    source_language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    glossary: str | None = Field(default=None, max_length=100)
    category: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,100}$")
