"""Core settings: one TOML file overlaid by ``STENOD_…`` environment variables.

The models, a section each. Sources, highest priority first: init arguments, environment
(``STENOD_`` prefix, ``__`` for nesting), the TOML file, built-in defaults; reading them
is :mod:`stenod.settings_loading`'s. Provider sections are passed through raw here; each
plugin validates its own with its ``Settings`` model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stenod.provider import Task
from stenod.speakers import Diarization
from stenod.who_spoke.diarization import diarization_of

OutputFormat = Literal["txt", "json", "srt", "vtt"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("txt", "json", "srt", "vtt")


def default_state_dir() -> Path:
    """systemd's StateDirectory= if set, else the XDG state home."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stenod"


def languages(value: str | list[str] | None) -> tuple[str, ...]:
    """One language, a list of them, or none, as a tuple (the config and request shape)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WatchRule(_Section):
    """A ``[[watch]]`` rule: a folder, and what to do with files dropped into it."""

    path: Path
    provider: str | None = None  # None: default_provider
    task: Task = Task.TRANSCRIBE
    language: str | None = None
    target_language: str | list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    formats: list[OutputFormat] = Field(default_factory=lambda: list(OUTPUT_FORMATS))
    output_dir: Path | None = None
    after: Literal["keep", "move", "delete"] = "keep"
    recursive: bool = False
    settle_seconds: float = Field(default=2.0, ge=0)
    then_translate_to: str | list[str] | None = None  # chain: transcribe, then translate the transcript
    translate_provider: str | None = None
    diarize: bool = False  # say who spoke (the provider must be able to: checked at start)
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    @field_validator("output_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @property
    def target_languages(self) -> tuple[str, ...]:
        return languages(self.target_language)

    @property
    def chain_languages(self) -> tuple[str, ...]:
        return languages(self.then_translate_to)

    @property
    def diarization(self) -> Diarization | None:
        return diarization_of(
            self.diarize, num_speakers=self.num_speakers, min_speakers=self.min_speakers, max_speakers=self.max_speakers
        )

    @model_validator(mode="after")
    def _translate_needs_target(self) -> WatchRule:
        if self.task == Task.TRANSLATE and not self.target_languages:
            raise ValueError("task = 'translate' needs target_language")
        self.diarization  # noqa: B018 (the speaker counts, checked as every entry point checks them)
        return self


class AmqpSettings(_Section):
    url: SecretStr | None = None
    request_queue: str = "stenod.requests"
    event_exchange: str = "stenod.events"
    dead_letter_exchange: str = "stenod.dead-letter"
    dead_letter_queue: str = "stenod.requests.dead"
    allowed_roots: list[Path] = Field(default_factory=list)
    prefetch: int = Field(default=32, ge=1, le=10_000)
    delivery_limit: int = Field(default=5, ge=1)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    reconnect_interval_seconds: float = Field(default=2.0, gt=0)
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    progress_interval_seconds: float = Field(default=5.0, ge=0)
    inline_transcript_bytes: int = Field(default=256 * 1024, ge=0)
    allow_http_urls: bool = False
    allow_private_urls: bool = False
    max_download_bytes: int = Field(default=2 * 1024**3, ge=1)
    download_timeout_seconds: float = Field(default=600.0, gt=0)
    downloads_dir: Path | None = None
    connection_name: str = "stenod"


class RetrySettings(_Section):
    max_attempts: int = Field(default=8, ge=1)
    base_seconds: float = Field(default=2.0, gt=0)
    max_seconds: float = Field(default=300.0, gt=0)


class HttpSettings(_Section):
    """``[http]``: stenod's HTTP server (the APIs, the page, health and metrics) and the HTTP
    client it talks to providers with."""

    listen: str | None = None  # "127.0.0.1:8000"; empty: no HTTP server
    api_keys: list[SecretStr] = Field(default_factory=list)  # also $CREDENTIALS_DIRECTORY/http.api_keys
    keyless_networks: list[IPvAnyNetwork] = Field(default_factory=list)  # /asr, /detect-language, /status only
    # Host names accepted besides loopback, IP addresses and this machine's names (a reverse
    # proxy's or a LAN name); any other Host is answered 421: DNS rebinding ends there.
    allowed_hosts: list[str] = Field(default_factory=list)
    # Peers whose X-Forwarded-For/-Proto are believed (a reverse proxy); nobody's by default.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    sync_timeout_seconds: float = Field(default=3600.0, gt=0)  # how long a synchronous call waits for its job
    keep_results_days: float = Field(default=7.0, gt=0)  # outputs of uploads nobody fetched, then removed (410)
    # The client stenod uses for cloud providers.
    timeout_seconds: float = Field(default=60.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=100, ge=1)
    user_agent: str = "stenod/0.1"

    @field_validator("listen", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or any(ch in name for ch in "/:@ *") or name != name.strip():
                raise ValueError(f"{name!r} is not a host name (a name such as 'stenod.lan', without scheme or port)")
        return [name.lower().rstrip(".") for name in names]


class JournalSettings(_Section):
    """Where jobs are kept: SQLite in ``state_dir`` (one machine), or a PostgreSQL database."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    url: SecretStr | None = None  # postgresql://user:password@host/db; better $CREDENTIALS_DIRECTORY/journal.url
    max_connections: int = Field(default=4, ge=2, le=100)
    reconnect_seconds: float = Field(default=30.0, ge=0)  # how long a write waits for a database that went away
    # A holder that has not renewed its lease for this long has its jobs taken over.
    lease_seconds: float = Field(default=30.0, ge=3, le=3600)


class WyomingSettings(_Section):
    """``[wyoming]``: Home Assistant's speech-to-text protocol; off while ``listen`` is empty."""

    listen: str | None = None  # "0.0.0.0:10300"
    zeroconf: bool = True  # announce _wyoming._tcp so Home Assistant discovers it
    zeroconf_name: str = Field(default="", max_length=63)  # "": "stenod-<host name>"
    keep: bool = False  # true: each answered command is journaled, a finished job with its transcript (no audio)
    provider: str = ""  # for a command that names none; "": whisper
    language: str = ""  # for a command that names none; "": detected
    beam_size: int = Field(default=5, ge=1, le=20)  # as the Home Assistant add-on on x86; 1 is faster
    vad_filter: bool = False  # Silero VAD before decoding: off, as the add-on (a command is speech)
    streaming: bool = True  # transcript-start/-chunk/-stop before the transcript
    max_command_seconds: float = Field(default=30.0, gt=0, le=600)  # longer: an error, the audio dropped
    command_timeout_seconds: float = Field(default=30.0, gt=0)  # a cloud provider slower than this: an error
    max_clients: int = Field(default=64, ge=1)  # connections served at once; more wait to be accepted
    workers: int = Field(default=1, ge=1, le=8)  # commands the offline engine decodes at once (a process each)

    @field_validator("listen", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if value in ("", None) else value


class DiarizationSettings(_Section):
    """``[diarization]``: what stenod keeps of the voices people name."""

    # A speaker named once (on the page, or PUT .../speakers/{label}) is recognised by name in
    # later recordings: stenod keeps the voice's voiceprint (an embedding, never audio).
    remember_voices: bool = True


class HealthSettings(_Section):
    listen: str | None = None  # kept for old configs: the address of the HTTP server when [http] listen is unset


class Settings(BaseSettings):
    """All core keys. See config/stenod.toml for the annotated example."""

    model_config = SettingsConfigDict(
        env_prefix="STENOD_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    default_provider: str = "whisper"
    # This daemon's name among the instances sharing a PostgreSQL journal ("" = host name
    # and state directory); the provider jobs it holds are kept under its name.
    instance_id: str = Field(default="", max_length=200)
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    rescan_interval_seconds: float = Field(default=60.0, gt=0)
    pack_window_seconds: float = Field(default=1.0, ge=0)
    min_free_bytes: int = Field(default=100 * 1024**2, ge=0)  # less: a filesystem is full (507, /healthz 503)
    warn_free_bytes: int = Field(default=1024**3, ge=0)  # less: /healthz warns
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    wyoming: WyomingSettings = Field(default_factory=WyomingSettings)
    diarization: DiarizationSettings = Field(default_factory=DiarizationSettings)
    watch: list[WatchRule] = Field(default_factory=list)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)

    # Where this configuration came from (for `stenod config` and error messages).
    config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file is read by load_settings() and passed as init data, below env.
        return env_settings, init_settings

    @property
    def amqp_enabled(self) -> bool:
        return self.amqp.url is not None and bool(self.amqp.url.get_secret_value())

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.db"

    @property
    def journal_url(self) -> str | None:
        """The PostgreSQL journal's connection string, when that is the backend."""
        url = self.journal.url.get_secret_value() if self.journal.url is not None else ""
        return (url or None) if self.journal.backend == "postgresql" else None
