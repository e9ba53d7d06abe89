"""The queue interface's published contract: JSON Schemas and the AsyncAPI document.

``python -m stenod.cli.schemas [DIR]`` writes them (default ``schemas/``); ``--check`` exits 1
if the files in DIR differ from what the models generate (CI keeps them in sync). The
event ``data`` model mirrors :meth:`stenod.jobs.JobView.to_data` (plus the ``rejected``
shape); tests validate real events against it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue

import stenod
from stenod.intake.request_message import CancelRequest, Request
from stenod.settings import AmqpSettings

JobStateName = Literal["accepted", "submitted", "running", "succeeded", "partial", "failed", "cancelled", "rejected"]
EVENT_KINDS = ("accepted", "submitted", "progress", "succeeded", "partial", "failed", "cancelled", "rejected")


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorData(_Data):
    code: str = Field(description="Stable machine-readable code, e.g. 'over_limit', 'path_not_allowed'.")
    message: str = Field(description="What went wrong, for a person.")
    retryable: bool
    hint: str | None = Field(default=None, description="What a person can do about it (absent when unknown).")


class SegmentData(_Data):
    start: float
    end: float
    text: str
    speaker: str | None
    confidence: float | None
    extra: dict[str, JsonValue] | None = None


class WordData(_Data):
    start: float
    end: float
    text: str
    speaker: str | None
    confidence: float | None


class SpeakerData(_Data):
    label: str = Field(description="What the speaker's segments and words carry in `speaker`.")
    name: str | None = Field(description="The known or remembered speaker this voice matched, if any.")
    similarity: float | None = Field(description="How closely it matched (cosine similarity of voiceprints).")


class TranscriptData(_Data):
    text: str
    language: str | None
    language_probability: float | None = Field(
        default=None, description="How sure the provider is of a language it detected (0..1); null when given."
    )
    duration: float | None
    segments: list[SegmentData]
    words: list[WordData] | None
    provider: str | None
    provider_job_id: str | None
    speakers: list[SpeakerData] | None = Field(default=None, description="Each voice heard, when asked who spoke.")


class ItemData(_Data):
    input: str = Field(description="The path or URL as requested.")
    state: Literal["pending", "submitted", "running", "fetched", "succeeded", "failed", "cancelled"]
    outputs: list[str] = Field(description="Files written for this input.")
    error: ErrorData | None
    transcript: TranscriptData | None = Field(
        default=None, description="Inlined in terminal events up to amqp.inline_transcript_bytes; else absent."
    )
    speakers: list[SpeakerData] | None = Field(
        default=None, description="Each voice heard, when the job asked who spoke (inlined transcript or not)."
    )


class CostData(_Data):
    amount: float | None = None
    currency: str | None = None
    amounts: dict[str, float] | None = Field(default=None, description="Per currency, when several were reported.")


class EventData(_Data):
    """The ``data`` of every ``stenod.job.*`` event: a snapshot of the job."""

    model_config = ConfigDict(extra="forbid", title="stenod job event data")

    job_id: str = Field(description="Also the CloudEvents 'subject'. For 'rejected', a fresh id.")
    request_id: str | None
    task: str | None = Field(description="'transcribe' or 'translate'; null for a rejected unparseable body.")
    provider: str | None
    state: JobStateName
    progress: float = Field(ge=0, le=1)
    items: list[ItemData]
    error: ErrorData | None
    cost: CostData | None
    created_at: str
    updated_at: str


class CloudEvent(_Data):
    """The CloudEvents 1.0 structured-mode envelope of every event."""

    model_config = ConfigDict(extra="forbid", title="stenod job event (CloudEvents 1.0)")

    specversion: Literal["1.0"]
    id: str = Field(description="Unique per event; the AMQP message_id too. Dedupe on it (at-least-once).")
    source: str = Field(description="stenod://<hostname>")
    type: Literal[tuple(f"stenod.job.{k}" for k in EVENT_KINDS)]  # type: ignore[valid-type]
    subject: str = Field(description="The job id.")
    time: str
    datacontenttype: Literal["application/json"]
    data: EventData


MODELS: dict[str, type[BaseModel]] = {
    "request.schema.json": Request,
    "cancel.schema.json": CancelRequest,
    "event-data.schema.json": EventData,
    "event.schema.json": CloudEvent,
}


def json_schema(model: type[BaseModel], file_name: str) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://stenod.invalid/schemas/{file_name}",
        **schema,
    }


def asyncapi(amqp: AmqpSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 description of queue, exchanges, routing keys and messages (default names)."""
    amqp = amqp or AmqpSettings()
    exchange = {"name": amqp.event_exchange, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"}
    queue_binding = {"name": amqp.request_queue, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"}
    rejected_headers = {
        "type": "object",
        "properties": {
            "x-stenod-error-code": {"type": "string", "description": "Why it was refused (e.g. invalid_json)."},
            "x-stenod-reason": {"type": "string", "description": "The same, for a person."},
            "x-stenod-rejected-at": {"type": "string", "format": "date-time"},
            "x-original-queue": {"type": "string"},
            "x-original-message-id": {"type": "string"},
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "stenod queue interface",
            "version": stenod.__version__,
            "description": (
                "Programs ask stenod for transcriptions by publishing a request to a durable quorum queue, and "
                "follow the job through CloudEvents 1.0 events on a topic exchange. Delivery is at least once: "
                "dedupe events on 'id' (= AMQP message_id). A repeated request_id never runs twice. Names below "
                "are the defaults ([amqp] request_queue, event_exchange, dead_letter_exchange/queue)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "The broker in [amqp] url.",
            },
        },
        "channels": {
            "requests": {
                "address": amqp.request_queue,
                "description": (
                    f"Quorum queue with x-delivery-limit and dead-lettering to '{amqp.dead_letter_exchange}'. "
                    "Publish persistent messages through the default exchange with routing key = the queue "
                    "name. AMQP reply_to + correlation_id: the terminal event is also sent to reply_to."
                ),
                "messages": {
                    "request": {"$ref": "#/components/messages/request"},
                    "cancel": {"$ref": "#/components/messages/cancel"},
                },
                "bindings": {"amqp": {"is": "queue", "queue": queue_binding, "bindingVersion": "0.3.0"}},
            },
            "deadLetters": {
                "address": amqp.dead_letter_queue,
                "description": (
                    f"Messages that can never succeed, routed by '{amqp.dead_letter_exchange}' (direct). Refused "
                    "bodies carry x-stenod-* headers; messages over the delivery limit carry RabbitMQ's x-death."
                ),
                "messages": {"rejectedRequest": {"$ref": "#/components/messages/rejectedRequest"}},
                "bindings": {
                    "amqp": {
                        "is": "queue",
                        "queue": {**queue_binding, "name": amqp.dead_letter_queue},
                        "bindingVersion": "0.3.0",
                    }
                },
            },
            "events": {
                "address": "job.{state}.{provider}",
                "description": (
                    f"Topic exchange '{amqp.event_exchange}' (durable). Bind e.g. 'job.#' or 'job.succeeded.*'. "
                    f"Events no queue is bound for go to the alternate exchange '{amqp.event_exchange}.unrouted'."
                ),
                "parameters": {
                    "state": {"enum": list(EVENT_KINDS), "description": "The event kind."},
                    "provider": {"description": "The provider name ('none' for a rejected unparseable body)."},
                },
                "messages": {"jobEvent": {"$ref": "#/components/messages/jobEvent"}},
                "bindings": {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": "0.3.0"}},
            },
            "replies": {
                "address": "{replyTo}",
                "description": "The requester's reply_to queue (default exchange): terminal events only.",
                "parameters": {"replyTo": {"description": "The AMQP reply_to of the request."}},
                "messages": {"jobEvent": {"$ref": "#/components/messages/jobEvent"}},
            },
        },
        "operations": {
            "receiveRequest": {
                "action": "receive",
                "channel": {"$ref": "#/channels/requests"},
                "messages": [
                    {"$ref": "#/channels/requests/messages/request"},
                    {"$ref": "#/channels/requests/messages/cancel"},
                ],
            },
            "sendEvent": {
                "action": "send",
                "channel": {"$ref": "#/channels/events"},
                "messages": [{"$ref": "#/channels/events/messages/jobEvent"}],
            },
            "sendReply": {
                "action": "send",
                "channel": {"$ref": "#/channels/replies"},
                "messages": [{"$ref": "#/channels/replies/messages/jobEvent"}],
            },
            "deadLetter": {
                "action": "send",
                "channel": {"$ref": "#/channels/deadLetters"},
                "messages": [{"$ref": "#/channels/deadLetters/messages/rejectedRequest"}],
            },
        },
        "components": {
            "messages": {
                "request": {
                    "name": "request",
                    "title": "Job request",
                    "contentType": "application/json",
                    "payload": {"$ref": "./request.schema.json"},
                    "correlationId": {"location": "$message.header#/correlation_id"},
                    "bindings": {
                        "amqp": {"deliveryMode": 2, "messageType": "stenod.request", "bindingVersion": "0.3.0"}
                    },
                    "description": "AMQP type absent or 'stenod.request'. message_id is the default request_id.",
                },
                "cancel": {
                    "name": "cancel",
                    "title": "Cancel a job",
                    "contentType": "application/json",
                    "payload": {"$ref": "./cancel.schema.json"},
                    "bindings": {
                        "amqp": {"deliveryMode": 2, "messageType": "stenod.cancel", "bindingVersion": "0.3.0"}
                    },
                    "description": "AMQP type 'stenod.cancel' on the request queue. Unknown job ids are dead-lettered.",
                },
                "rejectedRequest": {
                    "name": "rejectedRequest",
                    "title": "A refused message, unchanged, with the reason",
                    "headers": rejected_headers,
                },
                "jobEvent": {
                    "name": "jobEvent",
                    "title": "Job event",
                    "contentType": "application/cloudevents+json",
                    "payload": {"$ref": "./event.schema.json"},
                    "correlationId": {"location": "$message.header#/correlation_id"},
                    "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}},
                    "description": (
                        "AMQP message_id = CloudEvents id; type = stenod.job.<kind>. Events of one job "
                        "arrive in order; progress events are rate-limited per job."
                    ),
                },
            },
        },
    }


# Wider than any line of the document: a long description stays on one line instead of
# being folded at column 80.
_YAML_WIDTH = 1 << 16
# PyYAML writes these raw inside quotes, and reads a raw U+0085 back as a space.
_LINE_SEPARATORS = frozenset("\x85\u2028\u2029")


class _Dumper(yaml.SafeDumper):
    """``yaml.safe_dump``'s dumper, with strings holding a Unicode line separator
    double-quoted, where PyYAML escapes it (``\\N``, ``\\L``, ``\\P``)."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = '"' if _LINE_SEPARATORS.intersection(text) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(value: Any) -> str:
    """``value`` as block-style YAML that ``yaml.safe_load`` reads back equal: key order kept,
    non-ASCII text as it is, and strings that YAML 1.1 would read as something else
    (``on``, ``null``, ``1.0``) quoted. Raises ``yaml.representer.RepresenterError`` for a
    value ``safe_dump`` refuses (anything but dicts, lists and scalars)."""
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=_YAML_WIDTH)


def render() -> dict[str, str]:
    """Every contract file, by file name, as it should be on disk."""
    files = {
        name: json.dumps(json_schema(model, name), indent=2, ensure_ascii=False) + "\n"
        for name, model in MODELS.items()
    }
    files["asyncapi.yaml"] = "# Generated by `python -m stenod.cli.schemas`; do not edit.\n" + to_yaml(asyncapi())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stenod.cli.schemas", description=__doc__)
    parser.add_argument("dir", nargs="?", type=Path, default=Path("schemas"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the models")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.dir / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            args.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run python -m stenod.cli.schemas {args.dir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
