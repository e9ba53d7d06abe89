"""schemathesis against the served OpenAPI document: every route, fed what the document
allows (and what it does not), answers in the shapes the document states and never with a
server error.

The operations are run one by one from the test (schemathesis' own pytest fixture loader
does not support this pytest); each is a Hypothesis test of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.http_support import KEY, HttpDaemon, http_daemon

CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    with http_daemon(tmp_path_factory.mktemp("schema"), http={"sync_timeout_seconds": 20}) as running:
        yield running


def test_every_route_answers_as_documented(server: HttpDaemon) -> None:
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    tried = []
    for result in api.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        tried.append(operation.label)

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, timeout=60, checks=CHECKS)

        check()
    assert len(tried) >= 12, tried


# What a hostile browser page, a rebinding name, a spoofing client or a broken proxy may put
# in the headers the front door judges, alone or together.
HOSTILE = st.fixed_dictionaries(
    {},
    optional={
        "Host": st.sampled_from(["evil.example", "evil.example:1", "[::1", "localhost:x", "127.0.0.1:0", "a" * 300]),
        "Origin": st.sampled_from(["null", "http://evil.example", "file://", "http://[::1", "javascript:x", "http://"]),
        "Sec-Fetch-Site": st.sampled_from(["cross-site", "same-site", "same-origin", "none", "bogus"]),
        "X-Forwarded-For": st.sampled_from(["127.0.0.2", "203.0.113.7, 10.0.0.1", "not-an-address", "::1", ""]),
        "X-Forwarded-Proto": st.sampled_from(["https", "gopher", ""]),
        "Content-Type": st.sampled_from(
            [
                "text/plain",
                "application/json; charset=utf-7",
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "application/x-www-form-urlencoded",
                "*/*",
                "",
            ]
        ),
        "Cookie": st.sampled_from(["stenod_session=", "stenod_session=" + "a" * 4000, "stenod_key=" + KEY]),
        "Authorization": st.sampled_from(["Bearer ", "Bearer wrong", "Basic Zm9vOmJhcg==", f"bearer  {KEY}"]),
    },
)


def test_hostile_headers_on_every_route_never_make_a_server_error(server: HttpDaemon) -> None:
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    for result in api.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()

        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(), hostile=HOSTILE)
        def check(case: schemathesis.Case[Any], hostile: dict[str, str]) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {KEY}", **hostile}, timeout=60, checks=[not_a_server_error]
            )

        check()
    assert server.daemon.alive
