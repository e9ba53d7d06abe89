"""structlog configuration: JSON lines when not on a TTY (systemd's journal), a readable
console otherwise; ``job_id``/``provider`` bound through contextvars; secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from stenod import jsontext
from stenod.masking import MASK, is_secret_name, mask_text, secrets_in_url


class Redactor:
    """The last processor before rendering: masks secret-named keys and known secret values."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add_secrets(self, values: Iterable[str | None]) -> None:
        """Mask these values wherever they appear; a URL's password and secret parameters too."""
        for value in values:
            if value:
                self._values.update(v for v in (value, *secrets_in_url(value)) if len(v) >= 4)

    def scrub(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return mask_text(text)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: MASK if self._secret_key(k) else self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    @staticmethod
    def _secret_key(key: object) -> bool:
        return isinstance(key, str) and is_secret_name(key)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            if self._secret_key(key):
                event_dict[key] = MASK
            else:
                event_dict[key] = self._clean(value)
        return event_dict


REDACTOR = Redactor()


class _LineHandler(logging.Handler):
    """Routes stdlib records (aio-pika, httpx) to the same writer, under the same lock."""

    def __init__(self, writer: structlog.WriteLogger) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _json_line(event: Any, **kw: Any) -> str:
    return jsontext.dumps(event, default=kw.get("default", repr))


def configure(*, fmt: str | None = None, level: str = "info", stream: Any = None) -> None:
    """Configure structlog and route stdlib logging (httpx, aio-pika) through it.

    stenod's own lines go straight from structlog's processors to the stream: no stdlib
    ``LogRecord`` and formatter per line (that path cost twice the CPU).
    """
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if stream.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
        final = [structlog.processors.format_exc_info, REDACTOR, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        final = [REDACTOR, renderer]
    writer = structlog.WriteLogger(stream)
    structlog.configure(
        processors=[*shared, *final],
        logger_factory=lambda *args: writer,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = _LineHandler(writer)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # httpx logs full URLs (presigned ones are credentials) at INFO: keep it quiet.
    for noisy in ("httpx", "httpcore", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # aiormq/aio-pika log a traceback for every broker restart, psycopg's pool a line for
    # every failed reconnection; stenod reports connection state itself (amqp.*, journal.*).
    for noisy in ("aiormq", "aio_pika", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
