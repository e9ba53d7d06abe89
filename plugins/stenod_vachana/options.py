"""Vachana's settings section, per-job options and limits (docs: shared/providers/vachana.md §A)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from stenod.provider import Limits, ProviderSettings, Task

DEFAULT_BASE_URL = "https://api.vachana.ai"

# "MB" is not defined by Vachana: 80 × 10^6 bytes is the stricter reading. The limit
# covers the whole multipart body, so the packing limits keep room for its framing.
MAX_BODY_BYTES = 80_000_000
_FRAMING_RESERVE = 64 * 1024

BATCH_LANGUAGES = ("hi-IN", "en-IN", "ta-IN", "te-IN", "kn-IN", "ml-IN", "bn-IN", "gu-IN", "mr-IN", "pa-IN")
LANGUAGES = frozenset({*BATCH_LANGUAGES, "en-hi-IN-latn", "en-hi-in-cm"})
ITN_LANGUAGES = frozenset({"hi-IN", "en-IN"})

LIMITS = Limits(
    tasks=frozenset({Task.TRANSCRIBE}),
    formats=frozenset({"wav", "flac", "aac", "m4a", "ogg", "oga", "opus"}),
    max_files=10,
    max_file_bytes=MAX_BODY_BYTES - _FRAMING_RESERVE,
    max_batch_bytes=MAX_BODY_BYTES - _FRAMING_RESERVE,
    # Documented as "< 1 hour" per file.
    max_audio_seconds=3599.0,
    # At most one status call per job every 60 s; the wait also applies after submit
    # (the docs do not say when the clock starts: the safe reading).
    min_poll_seconds=60.0,
    languages=LANGUAGES | {"auto"},
    diarization=True,  # every result labels its speakers
)


class VachanaSettings(ProviderSettings):
    """``[providers.vachana]``: the common keys, plus what to do after an interrupted submit."""

    base_url: str | None = DEFAULT_BASE_URL
    resubmit_uncertain: bool = False
    """Submitting is not idempotent at Vachana. If stenod stops after the whole upload was
    sent but before Vachana's answer was recorded, the job may exist (and be billed).
    False (default): fail those files with a message naming the request id; True: send
    them again, accepting that the audio may be paid for twice."""

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str:
        url = (value or DEFAULT_BASE_URL).rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"must be an http:// or https:// URL, not {url!r}")
        return url


class VachanaOptions(BaseModel):
    """Per-job options (``options = {...}`` of a watch rule or request)."""

    model_config = ConfigDict(extra="forbid")

    is_multi_channel: bool = False
    format: Literal["verbatim", "transcribe"] = "verbatim"
    """``transcribe`` applies inverse text normalisation (hi-IN and en-IN only)."""
    itn_native_numerals: bool = False

    @model_validator(mode="after")
    def _numerals_need_itn(self) -> VachanaOptions:
        if self.itn_native_numerals and self.format != "transcribe":
            raise ValueError("itn_native_numerals needs format = 'transcribe'")
        return self

    def form_fields(self, language: str | None) -> list[tuple[str, str]]:
        """The submit form's non-file fields for ``language``.

        No language (or ``auto``) sends the comma-separated list of the ten batch languages,
        Vachana's documented (experimental) way to ask for detection. Raises ValueError for
        an option the language does not allow.
        """
        code = ",".join(BATCH_LANGUAGES) if language in (None, "", "auto") else language
        if self.format == "transcribe" and code not in ITN_LANGUAGES:
            raise ValueError(f"format = 'transcribe' is available only for hi-IN and en-IN, not {code}")
        fields = [
            ("language_code", code),
            ("is_multi_channel", _flag(self.is_multi_channel)),
            ("format", self.format),
        ]
        if self.itn_native_numerals:
            fields.append(("itn_native_numerals", "true"))
        return fields


def _flag(value: bool) -> str:
    return "true" if value else "false"
