"""``[providers.whisper]`` and the per-job ``options`` of the offline Whisper engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stenod.provider import ProviderSettings

__all__ = ["WhisperOptions", "WhisperSettings", "cpu_count"]


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, which containers and systemd's
    ``CPUAffinity=`` narrow), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class WhisperSettings(ProviderSettings):
    """The engine, the model, and how many files run at once.

    ``workers``, ``cpu_threads`` and ``max_concurrent_jobs`` left at 0 are chosen from the
    device and the cores: on a CPU one worker process per core with one thread each
    (measured: two single-threaded processes give 1.5× the throughput of one process on two
    threads on 2 cores; ``bench/bench_whisper.py``), on a GPU one worker.
    """

    model: str = Field(
        default="",
        description='"" = the bundled multilingual base model; a folder holding a CTranslate2 Whisper '
        "model; or a faster-whisper model name (tiny.en, small, large-v3, distil-large-v3, …), "
        "downloaded into model_dir once when the machine is online",
    )
    model_dir: Path | None = Field(default=None, description="model cache; default <state_dir>/models")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    device_index: int = Field(default=0, ge=0)
    compute_type: str = Field(default="auto", description="auto: int8 on CPU, float16 on CUDA")
    cpu_threads: int = Field(default=0, ge=0, description="threads per worker; 0: cores / workers")
    workers: int = Field(default=0, ge=0, description="worker processes; 0: one per core (CPU), 1 (GPU)")
    max_concurrent_jobs: int = Field(default=0, ge=0, description="0: same as workers")
    beam_size: int = Field(default=5, ge=1, le=20)
    batch_size: int = Field(
        default=8,
        ge=0,
        le=64,
        description="batched decoding of files of batch_min_seconds or more; 0 or 1: off "
        "(measured on 2 cores: a 219 s lecture 1.4x faster, 72 s no gain)",
    )
    batch_min_seconds: float = Field(default=120.0, ge=0)
    vad_filter: bool = Field(default=True, description="skip silence and music (no invented text over them)")
    word_timestamps: bool = False
    idle_unload_seconds: float = Field(default=300.0, ge=0, description="free the model when idle; 0: never")
    max_audio_seconds: float = Field(
        default=21600.0, gt=0, description="longer files fail with too_long (6 h; duration, not size, costs memory)"
    )
    stall_timeout_seconds: float = Field(
        default=900.0, gt=0, description="a worker silent this long on one file is stopped"
    )

    @field_validator("model")
    @classmethod
    def _trimmed(cls, value: str) -> str:
        return value.strip()

    @field_validator("model_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value in ("", None) else value


class WhisperOptions(BaseModel):
    """Per-job ``options``: decoding choices that override ``[providers.whisper]``."""

    model_config = ConfigDict(extra="forbid")

    beam_size: int | None = Field(default=None, ge=1, le=20)
    vad_filter: bool | None = None
    word_timestamps: bool | None = None
    initial_prompt: str | None = Field(default=None, max_length=2000)
    temperature: float | list[float] | None = None
    hotwords: str | None = Field(default=None, max_length=2000)
    detect_language_only: bool = Field(
        default=False, description="only detect the spoken language (from the first 30 s); the text stays empty"
    )

    @field_validator("temperature")
    @classmethod
    def _temperatures(cls, value: float | list[float] | None) -> float | list[float] | None:
        values = value if isinstance(value, list) else [value] if value is not None else []
        if any(not 0.0 <= t <= 1.0 for t in values) or (isinstance(value, list) and not value):
            raise ValueError("temperature is a number from 0 to 1, or a non-empty list of them")
        return value
