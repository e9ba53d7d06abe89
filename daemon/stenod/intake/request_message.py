"""The request message: its strict schema and the rules that need no I/O.

A body is checked in this order, and the first failure is the answer: size (before any
parsing), JSON syntax and the schema (one pydantic pass in Rust, so deep nesting, huge
numbers and invalid UTF-8 are errors, never crashes), then the provider (known and
available), its task, the translate target, the language, and finally the options
against the plugin's own ``Options`` model. File and URL checks need I/O: :mod:`stenod.intake.request_intake`
runs them through the checks the composition root gives it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, ValidationError, model_validator

from stenod.errors import ConfigError, Rejected
from stenod.output_spec import DEFAULT_TRANSLATE_PROVIDER
from stenod.provider import Limits, Task
from stenod.settings import languages
from stenod.speakers import Diarization, KnownSpeaker
from stenod.who_spoke.diarization import MAX_SPEAKERS, diarization_of, unavailable_reason

MAX_INPUTS = 100
_TEXT = r"^[^\x00-\x1f\x7f]*$"  # no control characters (they end up in logs and file names)

RequestId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_TEXT)]
Language = Annotated[
    str, StringConstraints(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
]
ProviderName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
PathText = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=_TEXT)]
UrlText = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")]
Format = Literal["txt", "json", "srt", "vtt"]
SpeakerCount = Annotated[int, Field(ge=1, le=MAX_SPEAKERS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputRef(_Strict):
    """One input: a local ``path`` under ``amqp.allowed_roots``, or a ``url`` the daemon fetches."""

    path: PathText | None = Field(default=None, description="Absolute path under one of amqp.allowed_roots.")
    url: UrlText | None = Field(default=None, description="https URL the daemon downloads (size-capped).")

    @model_validator(mode="after")
    def _exactly_one(self) -> InputRef:
        if (self.path is None) == (self.url is None):
            raise ValueError("each input needs exactly one of 'path' or 'url'")
        return self


class OutputSpec(_Strict):
    """Where results go. Without ``dir``: beside a path input, or under the state directory for URLs."""

    dir: PathText | None = Field(default=None, description="Absolute folder under one of amqp.allowed_roots.")
    formats: list[Format] | None = Field(default=None, min_length=1, max_length=4)
    then_translate_to: Language | list[Language] | None = Field(
        default=None, description="Transcribe, then translate the transcript (one job; both results in its events)."
    )
    translate_provider: ProviderName | None = Field(
        default=None, description="Provider of the translation step (default: azure)."
    )

    @property
    def chain_languages(self) -> tuple[str, ...]:
        return languages(self.then_translate_to)

    @model_validator(mode="after")
    def _unique(self) -> OutputSpec:
        if self.formats is not None and len(set(self.formats)) != len(self.formats):
            raise ValueError("formats must not repeat")
        return self


class JobSpec(_Strict):
    """What to do with the inputs: everything of a request but the inputs themselves (an
    upload over HTTP brings its input as a file)."""

    request_id: RequestId | None = Field(
        default=None,
        description="Idempotency key: a repeated request_id never runs twice. Defaults to the AMQP message_id.",
    )
    task: Literal["transcribe", "translate"] = "transcribe"
    provider: ProviderName | None = Field(default=None, description="Defaults to the daemon's default_provider.")
    language: Language | None = None
    target_language: Language | list[Language] | None = Field(
        default=None, description="Required for task 'translate'; one language or a list (at most 10)."
    )
    options: dict[Annotated[str, StringConstraints(max_length=100)], JsonValue] = Field(
        default_factory=dict, max_length=64, description="Validated by the provider plugin's Options model."
    )
    output: OutputSpec | None = None
    diarize: bool = Field(default=False, description="Say who spoke: segments and words carry `speaker`.")
    num_speakers: SpeakerCount | None = Field(default=None, description="Exactly this many voices (with diarize).")
    min_speakers: SpeakerCount | None = Field(default=None, description="At least this many voices (with diarize).")
    max_speakers: SpeakerCount | None = Field(default=None, description="At most this many voices (with diarize).")

    @property
    def target_languages(self) -> tuple[str, ...]:
        return languages(self.target_language)

    def diarization(self, known: tuple[KnownSpeaker, ...] = ()) -> Diarization | None:
        """Who spoke, as asked (with ``known`` voices to label by name), or None."""
        return diarization_of(
            self.diarize,
            num_speakers=self.num_speakers,
            min_speakers=self.min_speakers,
            max_speakers=self.max_speakers,
            known=known,
        )

    @model_validator(mode="after")
    def _bounded_targets(self) -> Self:
        if isinstance(self.target_language, list) and not 1 <= len(self.target_language) <= 10:
            raise ValueError("target_language lists hold 1 to 10 languages")
        self.diarization()  # the speaker counts, checked as every entry point checks them
        return self


class Request(JobSpec):
    """A job request published to the request queue (``content_type: application/json``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="stenod request")

    inputs: list[InputRef] = Field(min_length=1, max_length=MAX_INPUTS)


class CancelRequest(_Strict):
    """A cancel control message: AMQP ``type`` = ``stenod.cancel`` on the request queue."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="stenod cancel")

    job_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z]+$")]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What intake needs to know about one available provider."""

    limits: Limits
    options_model: type[BaseModel]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def parse_body(body: bytes, model: type[_Strict], *, max_body_bytes: int) -> Any:
    """Size check, then JSON and schema in one pass. Raises Rejected."""
    if len(body) > max_body_bytes:
        raise Rejected("body_too_large", f"the body is {len(body)} bytes; the limit is {max_body_bytes}")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        kinds = {e["type"] for e in exc.errors(include_url=False)}
        if kinds & {"json_invalid", "json_type"}:
            raise Rejected("invalid_json", f"the body is not valid UTF-8 JSON: {_first_error(exc)}") from exc
        raise Rejected("invalid_request", _first_error(exc), request_id=_peek_request_id(body)) from exc
    except (RecursionError, ValueError) as exc:  # defensive: the Rust parser reports these as ValidationError
        raise Rejected("invalid_json", f"the body cannot be parsed: {type(exc).__name__}") from exc


def _peek_request_id(body: bytes) -> str | None:
    """The request_id of a schema-invalid body, so the rejected event can name it."""

    class _Peek(BaseModel):
        model_config = ConfigDict(extra="ignore")
        request_id: RequestId | None = None

    try:
        return _Peek.model_validate_json(body).request_id
    except ValidationError:
        return None


def check_request(
    request: JobSpec,
    providers: Mapping[str, ProviderInfo],
    unavailable: Mapping[str, str],
    *,
    default_provider: str,
    request_id: str | None,
) -> tuple[str, dict[str, Any]]:
    """Provider, task, target language, language and options rules.

    Returns the chosen provider name and the validated options (as given, JSON).
    Raises Rejected with the first rule broken.
    """
    provider = request.provider or default_provider
    context = {"request_id": request_id, "task": request.task, "provider": provider}
    info = providers.get(provider)
    if info is None:
        if provider in unavailable:
            raise Rejected(
                "provider_unavailable", f"provider {provider!r} is not available: {unavailable[provider]}", **context
            )
        known = ", ".join(sorted(providers)) or "none"
        raise Rejected("unknown_provider", f"no provider named {provider!r} (available: {known})", **context)
    if Task(request.task) not in info.limits.tasks:
        can = ", ".join(sorted(str(t) for t in info.limits.tasks))
        raise Rejected("unsupported_task", f"{provider} cannot {request.task} (it can: {can})", **context)
    if request.task == "translate" and not request.target_languages:
        raise Rejected("missing_target_language", "task 'translate' needs target_language", **context)
    if request.language is not None and not info.limits.accepts(request.language):
        raise Rejected("unsupported_language", f"{provider} does not support language {request.language!r}", **context)
    for lang in request.target_languages:
        if not info.limits.accepts(lang, target=True):
            raise Rejected(
                "unsupported_language",
                f"{provider} cannot translate into {lang!r}; transcribe, then translate the transcript with "
                "output.then_translate_to",
                **context,
            )
    if request.diarize and (reason := unavailable_reason(provider, info.limits)) is not None:
        raise Rejected("diarization_unavailable", reason, **context)
    try:
        info.options_model.model_validate(request.options)
    except ValidationError as exc:
        raise Rejected("invalid_options", f"options rejected by {provider}: {_first_error(exc)}", **context) from exc
    if request.output is not None and request.output.chain_languages:
        if request.task != "transcribe":
            raise Rejected("invalid_request", "output.then_translate_to needs task 'transcribe'", **context)
        chained = request.output.translate_provider or DEFAULT_TRANSLATE_PROVIDER
        translator = providers.get(chained)
        if translator is None:
            reason = unavailable.get(chained, "not installed")
            raise Rejected("provider_unavailable", f"translate provider {chained!r}: {reason}", **context)
        if Task.TRANSLATE not in translator.limits.tasks or "txt" not in translator.limits.formats:
            raise Rejected(
                "unsupported_task",
                f"translate provider {chained!r} cannot translate a transcript (a .txt file)",
                **context,
            )
    return provider, dict(request.options)


def options_from_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` arguments as a request's ``options`` (VALUE as JSON when it is)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option needs KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options
