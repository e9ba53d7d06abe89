"""schemathesis against the served OpenAPI document: every route, fed what the document
allows (and what it does not), answers in the shapes the document states and never with a
server error.

The operations are run one by one from the test (schemathesis' own pytest fixture loader
does not support this pytest); each is a Hypothesis test of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
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
        operation = result.ok()
        tried.append(operation.label)

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, timeout=60, checks=CHECKS)

        check()
    assert len(tried) >= 12, tried
