"""MkDocs hook: the HTTP API's OpenAPI document and the queue's AsyncAPI document, rendered as
Markdown tables when the site is built, from the code that serves them, so they cannot drift
and need no script from the internet to read.

- ``<!-- generated: openapi -->``: every route of the HTTP app (``openapi_document``, the
  document ``/openapi.json`` serves), its parameters, body fields and answers.
- ``<!-- generated: asyncapi -->``: the queue's channels, operations and messages
  (``stenod.cli.schemas.asyncapi``, the document committed as ``schemas/asyncapi.yaml``).

Listed before ``generated.py`` in ``mkdocs.yml``: that hook then turns the repository links
written here into names.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

_MARKER = re.compile(r"<!-- generated: (openapi|asyncapi) -->")
_METHODS = ("get", "post", "put", "patch", "delete")


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return _MARKER.sub(lambda match: _openapi() if match.group(1) == "openapi" else _asyncapi(), markdown)


def _cell(text: str | None) -> str:
    """Prose from a document, safe in a table cell (``<kind>`` is text, not an HTML tag)."""
    text = " ".join((text or "").split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _notes(text: str | None, schema: dict[str, Any]) -> str:
    """A field's description, and its default when it has one."""
    note = _cell(text)
    if schema.get("default") not in (None, "", [], {}):
        note += f"{' ' if note else ''}Default: `{json.dumps(schema['default'])}`."
    return note


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words: ``string``, ``file``, ``array of string``, ``Error``, ``a | b``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(dict.fromkeys(_type(s) for s in schema[key]))
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind == "string" and schema.get("format") == "binary":
        return "file"
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    return str(kind)


# -- OpenAPI ------------------------------------------------------------------------


def _openapi() -> str:
    from stenod import __version__
    from stenod.adapters.http.app import openapi_document

    document = openapi_document(__version__)
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    operations = [
        (method, path, operation)
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if method in _METHODS
    ]
    # The error answers every route may give are listed once, not under each route.
    everywhere = Counter(
        (status, answer.get("description"))
        for _, _, operation in operations
        for status, answer in operation.get("responses", {}).items()
    )
    common = {key for key, count in everywhere.items() if count == len(operations) and key[0] >= "400"}
    out = [
        f"stenod {document['info']['version']}: {_cell(document['info'].get('summary'))}",
        "",
        "### Routes",
        "",
        "| route | what | key |",
        "|---|---|---|",
    ]
    for method, path, operation in operations:
        key = "yes" if operation.get("security") else "no"
        out.append(
            f"| [`{method.upper()} {path}`](#{_anchor(method, path)}) | {_cell(operation.get('summary'))} | {key} |"
        )
    out += ["", 'Answers any route may give (an error body is `Error`: `{"error": {message, type, param, code}}`):', ""]
    out += ["| status | meaning |", "|---|---|"]
    out += [f"| {status} | {_cell(text)} |" for status, text in sorted(common)]
    for method, path, operation in operations:
        out += ["", f"### `{method.upper()} {path}` {{#{_anchor(method, path)}}}", ""]
        if operation.get("summary"):
            out += [_cell(operation["summary"]) + ".", ""]
        if operation.get("description"):
            out += [operation["description"].strip(), ""]
        out += _parameters(operation.get("parameters", []))
        out += _body(operation.get("requestBody"), schemas)
        answers = [
            (status, answer)
            for status, answer in operation.get("responses", {}).items()
            if (status, answer.get("description")) not in common
        ]
        if answers:
            out += ["| answer | meaning | content |", "|---|---|---|"]
            for status, answer in answers:
                content = ", ".join(f"`{kind}`" for kind in answer.get("content", {}))
                out.append(f"| {status} | {_cell(answer.get('description'))} | {content} |")
            out.append("")
    return "\n".join(out)


def _anchor(method: str, path: str) -> str:
    return f"{method}-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _parameters(parameters: list[dict[str, Any]]) -> list[str]:
    if not parameters:
        return []
    out = ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
    for p in parameters:
        schema = p.get("schema", {})
        notes = _notes(p.get("description") or schema.get("description"), schema)
        required = "yes" if p.get("required") else ""
        out.append(f"| `{p['name']}` | {p['in']} | {_type(schema)} | {required} | {notes} |")
    return [*out, ""]


def _body(body: dict[str, Any] | None, schemas: dict[str, Any]) -> list[str]:
    if not body:
        return []
    out: list[str] = []
    for kind, content in body.get("content", {}).items():
        schema = content.get("schema", {})
        if "$ref" in schema:
            name = _type(schema)
            schema = schemas.get(name, {})
            out += [f"Body `{kind}`: `{name}`.", ""]
        else:
            out += [f"Body `{kind}`:", ""]
        properties = schema.get("properties", {})
        if properties:
            required = set(schema.get("required", ()))
            out += ["| field | type | required | notes |", "|---|---|---|---|"]
            for name, field in properties.items():
                yes = "yes" if name in required else ""
                out.append(f"| `{name}` | {_type(field)} | {yes} | {_notes(field.get('description'), field)} |")
            out.append("")
    return out


# -- AsyncAPI -----------------------------------------------------------------------


def _asyncapi() -> str:
    from stenod.cli.schemas import asyncapi

    document = asyncapi()
    messages: dict[str, Any] = document["components"]["messages"]
    out = [_cell(document["info"].get("description")), "", "### Channels", ""]
    out += ["| channel | address | what | messages |", "|---|---|---|---|"]
    for name, channel in document["channels"].items():
        what = _cell(channel.get("description"))
        for parameter, spec in channel.get("parameters", {}).items():
            values = ", ".join(f"`{v}`" for v in spec.get("enum", ()))
            one_of = f" One of {values}." if values else ""
            what += f"<br>`{{{parameter}}}`: {_cell(spec.get('description'))}{one_of}"
        names = ", ".join(f"[`{m}`](#message-{m.lower()})" for m in channel.get("messages", {}))
        out.append(f"| `{name}` | `{channel['address']}` | {what} | {names} |")
    out += ["", "### Operations", "", "| operation | stenod | channel | messages |", "|---|---|---|---|"]
    for name, operation in document["operations"].items():
        action = "receives" if operation["action"] == "receive" else "sends"
        channel = operation["channel"]["$ref"].rsplit("/", 1)[-1]
        names = ", ".join(f"`{m['$ref'].rsplit('/', 1)[-1]}`" for m in operation.get("messages", ()))
        out.append(f"| `{name}` | {action} | `{channel}` | {names} |")
    out += ["", "### Messages"]
    for name, message in messages.items():
        out += ["", f"#### `{name}`: {_cell(message.get('title'))} {{#message-{name.lower()}}}", ""]
        if message.get("description"):
            out += [_cell(message["description"]), ""]
        rows = []
        if "contentType" in message:
            rows.append(f"| content type | `{message['contentType']}` |")
        payload = message.get("payload", {}).get("$ref")
        if payload:
            path = "schemas/" + payload.removeprefix("./")
            rows.append(f"| payload | [`{path}`](../{path}) |")
        amqp = message.get("bindings", {}).get("amqp", {})
        if "messageType" in amqp:
            rows.append(f"| AMQP `type` | `{amqp['messageType']}` |")
        if amqp.get("deliveryMode") == 2:
            rows.append("| AMQP delivery mode | 2 (persistent) |")
        for header, spec in message.get("headers", {}).get("properties", {}).items():
            note = f": {_cell(spec['description'])}" if spec.get("description") else ""
            rows.append(f"| header `{header}` | {_type(spec)}{note} |")
        out += ["| | |", "|---|---|", *rows]
    return "\n".join(out)
