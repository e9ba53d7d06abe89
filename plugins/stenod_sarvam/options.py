"""Sarvam's settings section, per-job options and limits (docs: shared/providers/sarvam.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stenod.provider import Limits, ProviderSettings, Task

DEFAULT_BASE_URL = "https://api.sarvam.ai"

STT_LANGUAGES = frozenset(
    {
        "unknown", "hi-IN", "bn-IN", "kn-IN", "ml-IN", "mr-IN", "od-IN", "pa-IN", "ta-IN", "te-IN", "en-IN",
        "gu-IN", "as-IN", "ur-IN", "ne-IN", "kok-IN", "ks-IN", "sd-IN", "sa-IN", "sat-IN", "mni-IN", "brx-IN",
        "mai-IN", "doi-IN",
    }
)  # fmt: skip

AudioCodec = Literal[
    "wav", "x-wav", "wave", "mp3", "mpeg", "mpeg3", "x-mp3", "x-mpeg-3", "aac", "x-aac", "aiff", "x-aiff",
    "ogg", "opus", "flac", "x-flac", "mp4", "x-m4a", "amr", "x-ms-wma", "webm",
    "pcm_s16le", "pcm_l16", "pcm_raw",
]  # fmt: skip

MAX_SPEAKERS = 20  # the most voices Sarvam's diarization separates

LIMITS = Limits(
    tasks=frozenset({Task.TRANSCRIBE, Task.TRANSLATE}),
    formats=frozenset(
        {
            "wav",
            "mp3",
            "m4a",
            "aac",
            "ogg",
            "oga",
            "opus",
            "flac",
            "webm",
            "amr",
            "wma",
            "mp4",
            "aiff",
            "aif",
            "pcm",
        }
    ),
    max_files=20,
    # The docs say 2 h on newer pages and 1 h on older ones: take the stricter reading.
    max_audio_seconds=3600.0,
    # The SDK and Sarvam's notebooks poll every 5 s; the reference's "5 ms" is not a pace to use.
    min_poll_seconds=5.0,
    # "en" names the translate job's only target language.
    languages=STT_LANGUAGES | {"auto", "en"},
    diarization=True,  # with_diarization, asked by a job's diarize (Batch.diarization) or the option
)


class SarvamSettings(ProviderSettings):
    """``[providers.sarvam]``: the common keys, with Sarvam's public API as the default base URL."""

    base_url: str | None = DEFAULT_BASE_URL

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str:
        return absolute_base_url(value, DEFAULT_BASE_URL)


def absolute_base_url(value: str | None, default: str) -> str:
    """``value`` without a trailing slash (``default`` if empty); ValueError unless http(s)."""
    url = (value or default).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"must be an http:// or https:// URL, not {url!r}")
    return url


class SarvamOptions(BaseModel):
    """Per-job options (``options = {...}`` of a watch rule or request).

    ``task = "transcribe"`` runs a speech-to-text job; ``task = "translate"`` runs the
    speech-to-text-translate job (English output, source language auto-detected). For
    saaras:v3/v4 translation use ``task = "transcribe"`` with ``mode = "translate"``.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=64)
    """Default: ``saaras:v3`` for speech-to-text, ``saaras:v2.5`` for the translate job."""
    mode: Literal["transcribe", "translate", "verbatim", "translit", "codemix"] | None = None
    with_timestamps: bool | None = None
    """Default on for speech-to-text (subtitles need it); the translate job has no timestamps."""
    with_diarization: bool = False
    num_speakers: int | None = Field(default=None, ge=1, le=MAX_SPEAKERS)
    prompt: str | None = Field(default=None, max_length=4000)
    keyterms: list[str] | None = Field(default=None, max_length=50)
    input_audio_codec: AudioCodec | None = None

    @field_validator("keyterms")
    @classmethod
    def _short_keyterms(cls, value: list[str] | None) -> list[str] | None:
        for term in value or ():
            if not 0 < len(term) <= 64:
                raise ValueError(f"each keyterm must be 1–64 characters: {term[:70]!r}")
        return value

    @model_validator(mode="after")
    def _keyterms_need_v4(self) -> SarvamOptions:
        if self.keyterms and self.model != "saaras:v4":
            raise ValueError("keyterms are supported only with model = 'saaras:v4'")
        return self

    def job_parameters(self, task: Task, language: str | None) -> tuple[str, dict[str, object]]:
        """The endpoint prefix and ``job_parameters`` for ``task``.

        Raises ValueError naming an option the chosen job kind does not take.
        """
        if task is Task.TRANSLATE:
            for name in ("mode", "keyterms"):
                if getattr(self, name) is not None:
                    raise ValueError(f"option {name!r} applies only to task 'transcribe'")
            if self.with_timestamps:
                raise ValueError("the speech-to-text-translate job has no timestamps; unset with_timestamps")
            params: dict[str, object] = {"model": self.model or "saaras:v2.5", "prompt": self.prompt}
            prefix = "/speech-to-text-translate/job/v1"
        else:
            if self.prompt is not None:
                raise ValueError("option 'prompt' applies only to task 'translate'")
            params = {
                "model": self.model or "saaras:v3",
                "mode": self.mode,
                "language_code": "unknown" if language in (None, "", "auto") else language,
                "with_timestamps": True if self.with_timestamps is None else self.with_timestamps,
                "keyterms": self.keyterms,
            }
            prefix = "/speech-to-text/job/v1"
        params |= {
            "with_diarization": self.with_diarization,
            "num_speakers": self.num_speakers,
            "input_audio_codec": self.input_audio_codec,
        }
        return prefix, {k: v for k, v in params.items() if v is not None}
