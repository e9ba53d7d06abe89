"""Compact JSON text for the journal and the log: orjson, with the standard library for
what orjson refuses (integers beyond 64 bits; ``NaN`` in rows written by older versions).

orjson writes ``NaN`` and infinities as ``null``, so every event body is valid JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """Compact UTF-8 JSON text (no ASCII escaping)."""
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dumps_pretty(value: Any) -> bytes:
    """Indented UTF-8 JSON for files people open; NaN and infinities become null (orjson's
    rule, which every JSON reader accepts)."""
    try:
        return orjson.dumps(value, option=_OPTIONS | orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False, indent=2).encode()
