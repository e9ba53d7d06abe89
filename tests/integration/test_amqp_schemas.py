"""The shipped JSON Schemas and AsyncAPI document are exactly what the models generate."""

from __future__ import annotations

from pathlib import Path

from stenod.cli import schemas

SHIPPED = Path(__file__).resolve().parents[2] / "schemas"


def test_shipped_schemas_match_the_models():
    stale = [
        name
        for name, text in schemas.render().items()
        if not (SHIPPED / name).exists() or (SHIPPED / name).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"regenerate with: python -m stenod.cli.schemas schemas  (stale: {stale})"


def test_check_mode_fails_when_a_shipped_file_differs(tmp_path):
    assert schemas.main([str(tmp_path)]) == 0
    assert schemas.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "request.schema.json").write_text("{}\n")
    assert schemas.main(["--check", str(tmp_path)]) == 1


def test_asyncapi_names_every_event_kind_and_the_cancel_message_type():
    doc = schemas.asyncapi()
    assert doc["channels"]["events"]["parameters"]["state"]["enum"] == list(schemas.EVENT_KINDS)
    cancel = doc["components"]["messages"]["cancel"]["bindings"]["amqp"]["messageType"]
    assert cancel == "stenod.cancel"
