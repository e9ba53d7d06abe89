"""``compose.yaml`` against the Compose Specification's JSON schema, and what it must wire.

A full ``compose up`` needs the RabbitMQ and PostgreSQL images from a registry, which this
machine cannot reach; the stenod service is the image the other tests build and run.

``compose-spec.json`` is ``schema/compose-spec.json`` of github.com/compose-spec/compose-spec
at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6 (last changed in a08f8d5, 2025-10-21),
Apache License 2.0, vendored unchanged: the tests run offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.container.podman import ROOT

pytestmark = pytest.mark.container

SCHEMA = Path(__file__).with_name("compose-spec.json")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_compose_file_follows_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    assert [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)] == []


def test_the_schema_check_can_fail(compose: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["stenod"]["depends_on"]["rabbitmq"]["condition"] = "healthy"  # not a condition
    broken["services"]["stenod"]["stop_grace_period"] = 30  # a duration is a string
    assert len(list(validator.iter_errors(broken))) == 2


def test_stenod_waits_for_a_healthy_broker_and_gets_its_secrets_as_files(compose: dict[str, Any]) -> None:
    stenod = compose["services"]["stenod"]
    assert stenod["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    assert "healthcheck" in compose["services"]["rabbitmq"]
    # Mounted as /run/secrets/<name>: the image's $CREDENTIALS_DIRECTORY.
    assert set(stenod["secrets"]) == {"http.api_keys", "amqp.url"}
    assert not any("KEY" in name or "PASS" in name or "URL" in name for name in stenod.get("environment", {}))


def test_state_is_a_named_volume_and_the_inbox_a_folder_of_the_host(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["stenod"]["volumes"]
    assert "state:/var/lib/stenod" in volumes
    assert "./inbox:/inbox" in volumes
    assert set(compose["volumes"]) == {"state", "rabbitmq", "postgres"}


def test_postgres_starts_only_with_its_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["profiles"] == ["postgres"]
    assert [name for name, service in services.items() if "profiles" not in service] == ["stenod", "rabbitmq"]


def test_stop_grace_period_is_longer_than_the_daemon_grace(compose: dict[str, Any]) -> None:
    grace = compose["services"]["stenod"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > 20  # shutdown_grace_seconds' default
