"""The AsyncAPI document's YAML reads back as exactly the dict it was written from."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stenod.cli import schemas

SHIPPED = Path(__file__).resolve().parents[2] / "schemas" / "asyncapi.yaml"

# Words YAML 1.1 reads as booleans or null when they go out unquoted, and Unicode line
# separators a reader may turn into line breaks or spaces.
TRICKY: dict[str, Any] = {
    "on": "yes",
    "yes": "on",
    "null": "true",
    "true": "null",
    "off": ["no", "false", "~", "Null", "NO", "y", "n", "", "=", "<<"],
    "numbers as text": ["1.0", "1e3", ".nan", ".inf", "0x1f", "017", "1_000", "12:30", "2024-01-01"],
    "separators": ["a\u2028b", "a\u0085b", "a\u2029b", "\u2028", "end\u0085"],
    "markup": ["a: b", "a #b", "- x", "#/components/messages/x", "'quoted'", '"double"', " lead", "trail "],
    "unicode": "naïve — ✓ 日本語 🎙",
    "control": "bell\x07 tab\t cr\r lf\n",
    "long": "a long description " * 20,
    "numbers": [0, -1, 1.5, -0.0, 1e300, math.inf, -math.inf, True, False, None],
    "empty": [{}, []],
}


def test_tricky_strings_and_numbers_read_back_as_written() -> None:
    data = {**TRICKY, "nan": math.nan}
    back = yaml.safe_load(schemas.to_yaml(data))
    assert math.isnan(back.pop("nan"))
    assert back == TRICKY
    assert list(back) == list(TRICKY)


def test_no_raw_line_separator_reaches_the_file() -> None:
    text = schemas.to_yaml({"k": ["a\u2028b", "a\u0085b", "a\u2029b"]})
    assert not {"\u2028", "\u0085", "\u2029"} & set(text)


def test_a_long_string_stays_on_one_line() -> None:
    text = schemas.to_yaml({"description": "word " * 100})
    assert len(text.splitlines()) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_any_json_document_reads_back_equal(data: dict[str, Any]) -> None:
    assert yaml.safe_load(schemas.to_yaml(data)) == data


def test_the_shipped_asyncapi_document_reads_back_as_the_one_the_code_builds() -> None:
    assert yaml.safe_load(SHIPPED.read_text(encoding="utf-8")) == schemas.asyncapi()
