"""Fuzzing request messages (reliability R3): random JSON, wrong types, huge strings, deep
nesting, invalid UTF-8, random bytes and odd AMQP properties. Each class runs many
examples against the real intake (``RequestIntake`` on a real journal, no broker), and a
few through the real broker into ``stenod run``. For every one: the intake answers (never
raises), a refusal carries a known code and a reason, nothing is written outside the
journal, and a valid request is still accepted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stenod.adapters.downloads.url_policy import UrlPolicy
from stenod.adapters.folders.local_inputs import LocalInputs
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.dispatch.stepper import ProviderRuntime
from stenod.errors import Rejected
from stenod.intake.request_intake import CANCEL_TYPE, REQUEST_TYPE, Accepted, Delivery, RequestIntake, Retry
from support.amqp import QueueDaemon, queue_daemon
from tests.chaos.fuzzing import Tally, fuzz_settings, tree
from tests.fakes.scripted import ScriptedProvider

MAX_BODY = 256 * 1024
CODES = {
    "body_too_large",
    "invalid_json",
    "invalid_request",
    "unknown_provider",
    "provider_unavailable",
    "unsupported_task",
    "missing_target_language",
    "unsupported_language",
    "invalid_options",
    "path_not_allowed",
    "input_refused",
    "input_missing",
    "input_unreadable",
    "output_not_allowed",
    "url_not_allowed",
    "unsupported_encoding",
    "unknown_message_type",
    "unknown_job",
}
FIELDS: list[tuple[Any, ...]] = [
    ("request_id",),
    ("task",),
    ("provider",),
    ("inputs",),
    ("inputs", 0),
    ("inputs", 0, "path"),
    ("language",),
    ("target_language",),
    ("options",),
    ("options", "tag"),
    ("output",),
    ("output", "dir"),
    ("output", "formats"),
    ("output", "formats", 0),
]
STRING_FIELDS: list[tuple[Any, ...]] = [
    ("request_id",),
    ("provider",),
    ("inputs", 0, "path"),
    ("language",),
    ("options", "tag"),
    ("output", "dir"),
]
INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
]

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5), max_leaves=25
)


def valid(roots: Path, **changes: Any) -> dict[str, Any]:
    return {
        "request_id": "r-valid",
        "provider": "scripted",
        "inputs": [{"path": str(roots / "ok.wav")}],
        "language": "en",
        "options": {},
        "output": {"formats": ["txt"]},
        **changes,
    }


def put(body: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """``body`` (deep-copied) with the value at ``where`` replaced."""
    out: dict[str, Any] = json.loads(json.dumps(body))
    node = out
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return out


def nested(depth: int, shape: str) -> bytes:
    if shape == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


class IntakeRig:
    """The real request intake on a real journal in ``tmp``, with one scripted provider."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.roots = tmp / "roots"
        self.roots.mkdir()
        (self.roots / "ok.wav").write_bytes(b"audio bytes")
        (tmp / "outside.wav").write_bytes(b"not for requests")
        self.runner = asyncio.Runner()
        self.journal = SqliteJournal.open(tmp / "state" / "journal.db")
        provider = ScriptedProvider()
        runtime = ProviderRuntime("scripted", provider, provider.limits, 0.0, 4)

        async def resolver(host: str, port: int) -> list[str]:
            return ["93.184.215.14"]  # any name "resolves" to a public address: no DNS from tests

        self.intake = RequestIntake(
            self.journal,
            LocalInputs([self.roots], UrlPolicy(), resolver),
            lambda: ({"scripted": runtime}, {}),
            default_provider="scripted",
            max_body_bytes=MAX_BODY,
        )
        self.before = tree(tmp)
        self.accepted = 0

    def handle(self, body: bytes, **props: Any) -> Accepted | Rejected:
        outcome = self.runner.run(self.intake.handle(Delivery(body=body, **props)))
        assert not isinstance(outcome, Retry), outcome  # the journal never failed here
        if isinstance(outcome, Rejected):
            assert outcome.code in CODES, outcome
            assert outcome.reason.strip(), outcome
        else:
            self.accepted += 1
        return outcome

    def close(self) -> None:
        valid_after = self.handle(json.dumps(valid(self.roots, request_id="r-after-fuzz")).encode())
        self.runner.close()
        self.intake.close()
        self.journal.close()
        assert isinstance(valid_after, Accepted) and valid_after.created, "the intake still accepts valid requests"
        changed = {k for k, v in tree(self.tmp).items() if self.before.get(k) != v}
        assert {k for k in changed if not k.startswith("state/journal.db")} == set(), "written outside the journal"


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[IntakeRig]:
    rig = IntakeRig(tmp_path)
    yield rig
    rig.close()


def code(outcome: Accepted | Rejected) -> str:
    return outcome.code if isinstance(outcome, Rejected) else "accepted"


def test_random_json_is_refused_with_a_reason(intake: IntakeRig) -> None:
    tally = Tally("requests/random_json")

    @fuzz_settings(300)
    @given(st.one_of(JSON, st.dictionaries(st.sampled_from([f[0] for f in FIELDS]) | st.text(), JSON, max_size=8)))
    def check(value: Any) -> None:
        tally.record(code(intake.handle(json.dumps(value).encode())))

    check()
    tally.report()
    assert intake.accepted == 0  # a random document is never a runnable request


def test_a_field_of_the_wrong_type_is_refused_naming_the_field(intake: IntakeRig) -> None:
    tally = Tally("requests/wrong_types")

    @fuzz_settings(300)
    @given(st.sampled_from(FIELDS), JSON)
    def check(where: tuple[Any, ...], value: Any) -> None:
        outcome = intake.handle(json.dumps(put(valid(intake.roots, request_id=None), where, value)).encode())
        tally.record(code(outcome))
        if isinstance(outcome, Rejected) and outcome.code == "invalid_request":
            assert str(where[0]) in outcome.reason

    check()
    tally.report()


def test_huge_strings_are_refused_before_or_by_the_schema(intake: IntakeRig) -> None:
    tally = Tally("requests/huge_strings")

    @fuzz_settings(60)
    @given(st.sampled_from(STRING_FIELDS), st.characters(), st.integers(4_097, 2 * MAX_BODY))
    def check(where: tuple[Any, ...], char: str, size: int) -> None:
        body = json.dumps(put(valid(intake.roots), where, char * size)).encode()
        outcome = intake.handle(body)
        tally.record(code(outcome))
        # Option values are the plugin's to judge (the scripted one takes any tag); the body
        # limit bounds them. Every other string field has its own length limit.
        assert isinstance(outcome, Rejected) or where == ("options", "tag")
        if len(body) > MAX_BODY:
            assert isinstance(outcome, Rejected) and outcome.code == "body_too_large"

    check()
    tally.report()


def test_deep_nesting_is_refused_without_recursion_errors(intake: IntakeRig) -> None:
    tally = Tally("requests/deep_nesting")

    @fuzz_settings(60)
    @given(st.integers(1, 200_000), st.sampled_from(["list", "dict"]), st.booleans())
    def check(depth: int, shape: str, inside: bool) -> None:
        deep = nested(depth, shape)
        if inside:  # under options, where any JSON value is allowed by the schema
            head = json.dumps(valid(intake.roots, request_id=f"deep-{depth}-{shape}")).encode()
            body = head.replace(b'"options": {}', b'"options": {"x": ' + deep + b"}")
        else:
            body = deep
        outcome = intake.handle(body)
        tally.record(code(outcome))
        assert isinstance(outcome, Rejected) or inside

    check()
    tally.report()


def test_invalid_utf8_anywhere_is_refused_as_invalid_json(intake: IntakeRig) -> None:
    tally = Tally("requests/invalid_utf8")
    body = json.dumps(valid(intake.roots)).encode()

    @fuzz_settings(200)
    @given(st.integers(0, len(body)), st.sampled_from(INVALID_UTF8), st.booleans())
    def check(at: int, bad: bytes, in_string: bool) -> None:
        if in_string:  # inside the path string, where it would otherwise be a valid request
            at = body.index(b"ok.wav")
        outcome = intake.handle(body[:at] + bad + body[at:])
        tally.record(code(outcome))
        assert code(outcome) == "invalid_json"

    check()
    tally.report()


def test_random_bytes_are_refused(intake: IntakeRig) -> None:
    tally = Tally("requests/random_bytes")

    @fuzz_settings(200)
    @given(st.binary(max_size=4096))
    def check(body: bytes) -> None:
        tally.record(code(intake.handle(body)))

    check()
    tally.report()
    assert intake.accepted == 0


PROPERTY_TEXT = (
    st.none()
    | st.sampled_from(
        ["", "gzip", "deflate", "utf-16", "base64", "identity", "utf-8", REQUEST_TYPE, CANCEL_TYPE, "stenod.Request"]
    )
    | st.text(max_size=30)
)


def test_odd_message_types_and_encodings_are_refused_or_the_body_decides(intake: IntakeRig) -> None:
    tally = Tally("requests/message_properties")
    body = json.dumps(valid(intake.roots, request_id=None)).encode()

    @fuzz_settings(200)
    @given(PROPERTY_TEXT, PROPERTY_TEXT, st.text(max_size=20))
    def check(encoding: str | None, kind: str | None, message_id: str) -> None:
        outcome = intake.handle(body, content_encoding=encoding, type=kind, message_id=f"m-{message_id}")
        tally.record(code(outcome))
        if encoding not in (None, "", "identity", "utf-8", "utf8"):
            expected = "unsupported_encoding"
        elif kind == CANCEL_TYPE:
            expected = "invalid_request"  # a request body is not a cancel body
        elif kind not in (None, "", REQUEST_TYPE):
            expected = "unknown_message_type"
        else:
            expected = "accepted"
        assert code(outcome) == expected

    check()
    tally.report()


# -- through the broker into `stenod run`: a few examples of each class --------------------------------


@pytest.fixture(scope="module")
def q(tmp_path_factory: pytest.TempPathFactory, echo_plugin: None) -> Iterator[QueueDaemon]:
    tmp = tmp_path_factory.mktemp("fuzz-broker")
    with queue_daemon(tmp, "fuzz-requests") as daemon:
        (daemon.roots / "ok.wav").write_bytes(b"audio")
        daemon.pid = daemon.daemon.process.pid  # type: ignore[attr-defined]
        daemon.reply = daemon.client.reply_queue()  # type: ignore[attr-defined]
        yield daemon


BROKER_CLASSES = {
    "random_json": JSON.map(lambda v: json.dumps(v).encode()),
    "wrong_types": st.tuples(st.sampled_from(FIELDS), JSON),
    "huge_strings": st.integers(MAX_BODY // 2, 2 * MAX_BODY),
    "deep_nesting": st.tuples(st.integers(1_000, 200_000), st.sampled_from(["list", "dict"])).map(lambda a: nested(*a)),
    "invalid_utf8": st.sampled_from(INVALID_UTF8),
    "content_types": st.sampled_from(["text/plain", "application/xml", "", "application/octet-stream"]),
}


def _broker_body(case: str, drawn: Any, roots: Path, mid: str) -> tuple[bytes, dict[str, Any]]:
    base = {**valid(roots, request_id=mid, provider="echo")}
    match case:
        case "wrong_types":
            where, value = drawn
            return json.dumps(put({**base, "request_id": None}, where, value)).encode(), {}
        case "huge_strings":
            return json.dumps({**base, "language": "x" * drawn}).encode(), {}
        case "invalid_utf8":
            return json.dumps(base).encode().replace(b"ok.wav", b"ok" + drawn + b".wav"), {}
        case "content_types":
            return json.dumps({**base, "language": None}).encode(), {"content_type": drawn}
        case _:
            return drawn, {}


@pytest.mark.parametrize("case", list(BROKER_CLASSES))
def test_through_the_broker_each_bad_message_is_answered_and_the_daemon_stays_up(q: QueueDaemon, case: str) -> None:
    tally = Tally(f"requests via broker/{case}")
    counter = iter(range(1_000_000))

    @fuzz_settings(6, cap=150)
    @given(BROKER_CLASSES[case])
    def check(drawn: Any) -> None:
        mid = f"fz-{case}-{next(counter)}-{os.getpid()}"
        body, props = _broker_body(case, drawn, q.roots, mid)
        q.client.publish(body, message_id=mid, reply_to=q.reply, correlation_id=mid, **props)  # type: ignore[attr-defined]
        answer = q.client.events(q.reply, lambda got: any(e["_amqp"]["correlation_id"] == mid for e in got))  # type: ignore[attr-defined]
        event = next(e for e in answer if e["_amqp"]["correlation_id"] == mid)
        state = event["data"]["state"]
        tally.record(event["data"]["error"]["code"] if state == "rejected" else state)
        if case == "content_types":
            assert state == "succeeded"  # the body decides; content_type is not checked
        elif case != "wrong_types":
            assert state == "rejected" and event["data"]["error"]["code"] in CODES

    check()
    tally.report()
    assert q.daemon.alive and q.daemon.process.pid == q.pid  # type: ignore[attr-defined]
