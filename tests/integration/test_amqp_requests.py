"""The request schema and the rules that need no I/O (stenod.intake.request_message)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from stenod.errors import Rejected
from stenod.intake.request_message import ProviderInfo, Request, check_request, parse_body
from stenod.provider import Limits, Task


class ShoutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shout: bool = False


PROVIDERS = {
    "both": ProviderInfo(
        Limits(tasks=frozenset({Task.TRANSCRIBE, Task.TRANSLATE}), formats=frozenset({"wav"})), ShoutOptions
    ),
    "hindi": ProviderInfo(
        Limits(tasks=frozenset({Task.TRANSCRIBE}), formats=frozenset({"wav"}), languages=frozenset({"hi-IN"})),
        ShoutOptions,
    ),
}


def _check(body: dict[str, Any], unavailable: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    request = parse_body(json.dumps(body).encode(), Request, max_body_bytes=10_000)
    return check_request(request, PROVIDERS, unavailable or {}, default_provider="both", request_id=None)


def test_a_body_over_the_limit_is_refused_before_parsing():
    with pytest.raises(Rejected) as info:
        parse_body(b"{" * 20_000, Request, max_body_bytes=10_000)
    assert info.value.code == "body_too_large"


def test_the_default_provider_is_used_when_none_is_named():
    assert _check({"inputs": [{"url": "https://example.org/a.wav"}]})[0] == "both"


def test_an_unconfigured_provider_is_named_with_the_reason():
    with pytest.raises(Rejected) as info:
        _check({"provider": "sarvam", "inputs": [{"path": "/a"}]}, {"sarvam": "not configured (api_key)"})
    assert info.value.code == "provider_unavailable" and "api_key" in info.value.reason


def test_a_language_the_provider_does_not_list_is_refused():
    with pytest.raises(Rejected) as info:
        _check({"provider": "hindi", "language": "ta-IN", "inputs": [{"path": "/a"}]})
    assert info.value.code == "unsupported_language"


def test_options_are_passed_through_once_the_plugin_accepts_them():
    assert _check({"options": {"shout": True}, "inputs": [{"path": "/a"}]}) == ("both", {"shout": True})


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"path": "/a"}], "request_id": "bad\nid"},
        {"inputs": [{"path": "/a"}], "language": "english please"},
        {"inputs": [{"path": "/a"}], "provider": "../etc"},
        {"inputs": [{"path": "/a"}], "output": {"formats": ["txt", "txt"]}},
        {"inputs": [{"path": "/a"}], "output": {"formats": ["exe"]}},
        {"inputs": [{"path": "/a"}] * 101},
        {"inputs": [{"path": "/a"}], "task": 1},
        {"inputs": [{"path": "/a"}], "target_language": []},
    ],
)
def test_schema_violations_are_invalid_requests(body):
    with pytest.raises(Rejected) as info:
        parse_body(json.dumps(body).encode(), Request, max_body_bytes=100_000)
    assert info.value.code == "invalid_request"
