"""MkDocs hooks: the pages that are made from the code, so that they cannot drift from it.

- ``index.md``: the README, its links into ``docs/`` made relative to the site.
- ``<!-- generated: configuration -->``: every configuration key from the settings models
  (the core's and each installed provider's), with its type, default, environment variable
  and the comment beside it in the source.
- ``<!-- generated: module-map -->``: every module of the core and the built-in plugins,
  grouped by folder, with the first sentence of its docstring.
- ``<!-- generated: request-fields -->``: the queue request's fields from its JSON Schema.

Run by ``mkdocs build`` / ``./dev docs`` inside the project's venv (stenod importable).
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)#\s]+)(#[^)\s]*)?\)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme = re.sub(r"\]\(docs/", "](", readme)  # README links into docs/ work on GitHub and here
    files.append(File.generated(config, "index.md", content=readme))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    def render(match: re.Match[str]) -> str:
        return _GENERATORS[match.group(1)]()

    folder = ROOT if page.file.src_uri == "index.md" else (ROOT / "docs" / page.file.src_uri).parent
    return _repository_links(_MARKER.sub(render, markdown), folder)


def _repository_links(markdown: str, folder: Path) -> str:
    """A link to a file of the repository outside the site (``config/stenod.toml``) works on
    GitHub; the site has no copy of it, so it names the file instead. A link to nothing
    stays as it is, for ``--strict`` to report."""

    def name(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        if "://" in target or target.startswith("mailto:"):
            return match.group(0)
        path = (folder / target).resolve()
        inside_site = path.is_relative_to(ROOT / "docs")
        if inside_site or not path.is_relative_to(ROOT) or not path.exists():
            return match.group(0)
        relative = path.relative_to(ROOT)
        return text if text.strip("`") == str(relative) else f"{text} (`{relative}` in the repository)"

    return _LINK.sub(name, markdown)


# -- configuration -------------------------------------------------------------------


def _comments(module: types.ModuleType) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment at the end of the field's line in the module's source."""
    source = Path(module.__file__ or "").read_text(encoding="utf-8")
    tree = ast.parse(source)
    trailing: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            trailing[token.start[0]] = token.string.lstrip("#").strip()
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    end = stmt.end_lineno or stmt.lineno
                    comment = trailing.get(end) or trailing.get(stmt.lineno)
                    if comment:
                        found[(node.name, stmt.target.id)] = comment
    return found


def _type_name(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = re.sub(r"\b(typing|pathlib|pydantic\.\w+|pydantic|stenod\.\w+|ipaddress)\.", "", text)
    return text.replace("NoneType", "None").replace("SecretStr", "secret")


def _default(field: FieldInfo) -> str:
    if (
        field.default_factory is not None
        and field.default_factory.__doc__
        and field.default_factory.__name__ != "<lambda>"
    ):
        if field.default_factory in (list, dict, tuple, set):
            return f"`{json.dumps(field.default_factory())}`"
        return " ".join(field.default_factory.__doc__.split())  # computed where it runs: say how
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "unset"
    return f"`{json.dumps(value, default=str)}`"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _model_of(arg)
        if model is not None:
            return model
    return None


def _rows(model: type[BaseModel], prefix: str, env: str | None, comments: dict[tuple[str, str], str]) -> list[str]:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel], str | None, bool]] = []
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        key = f"{prefix}{name}"
        env_name = f"{env}{name.upper()}" if env is not None else None
        if sub is not None and typing.get_origin(field.annotation) is not list:
            nested.append((key, sub, f"{env_name}__" if env_name else None, False))
            continue
        if sub is not None:  # a list of tables, such as [[watch]]: one JSON list in the environment
            nested.append((key, sub, env_name, True))
            continue
        note = field.description or comments.get((model.__name__, name), "")
        rows.append(
            f"| `{key}` | `{_type_name(field.annotation)}` | {_default(field)} | "
            f"{f'`{env_name}`' if env_name else ''} | {note} |"
        )
    out = []
    if rows:
        out += ["| key | type | default | environment | notes |", "|---|---|---|---|---|", *rows, ""]
    for key, sub, sub_env, many in nested:
        out += [f"### `[{'[' if many else ''}{key}{']' if many else ''}]`", ""]
        if sub.__doc__ and sub.__doc__ is not BaseModel.__doc__:
            out += [" ".join(sub.__doc__.split()), ""]
        if many:
            out += [f"In the environment: `{sub_env}`, the whole list as JSON.", ""] if sub_env else []
            sub_env = None
        out += _rows(sub, "", sub_env, comments)
    return out


def _configuration() -> str:
    import stenod.settings
    from stenod.wiring.plugin_discovery import discover

    comments = _comments(stenod.settings)
    lines = ["### Top level", "", *_rows(stenod.settings.Settings, "", "STENOD_", comments)]
    for found in sorted(discover(), key=lambda d: d.name):
        settings = getattr(getattr(found, "cls", None), "Settings", None)
        if settings is None or found.distribution.split()[0] != "stenod":  # the built-in providers
            continue
        module = __import__(settings.__module__, fromlist=["_"])
        lines += [f"### `[providers.{found.name}]`", ""]
        lines += _rows(settings, "", f"STENOD_PROVIDERS__{found.name.upper()}__", _comments(module))
    return "\n".join(lines)


# -- the module map ----------------------------------------------------------------


def _first_sentence(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    text = " ".join(doc.split())
    match = re.match(r"(.+?[.:])(\s|$)", text)
    return (match.group(1) if match else text).rstrip(":.") + "." if text else ""


def _module_map() -> str:
    out: list[str] = []
    for root, title in ((ROOT / "daemon" / "stenod", "stenod"), (ROOT / "plugins", "plugins")):
        folders: dict[Path, list[Path]] = {}
        for path in sorted(root.rglob("*.py")):
            folders.setdefault(path.parent, []).append(path)
        for folder, modules in sorted(folders.items()):
            rel = folder.relative_to(root.parent)
            init = folder / "__init__.py"
            out += [f"#### `{rel}/`", ""]
            if init.exists() and _first_sentence(init):
                out += [_first_sentence(init), ""]
            out += ["| module | what it holds |", "|---|---|"]
            out += [f"| `{m.name}` | {_first_sentence(m)} |" for m in modules if m.name != "__init__.py"]
            out.append("")
        del title
    return "\n".join(out)


# -- the queue request --------------------------------------------------------------


def _request_fields() -> str:
    schema = json.loads((ROOT / "schemas" / "request.schema.json").read_text(encoding="utf-8"))
    definitions = schema.get("$defs", {})
    rows = ["| field | type | required | notes |", "|---|---|---|---|"]
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        ref = prop.get("$ref") or next((p.get("$ref") for p in prop.get("anyOf", ()) if "$ref" in p), None)
        target = definitions.get(ref.rsplit("/", 1)[-1], {}) if ref else prop
        kind = target.get("type") or " or ".join(p.get("type", "object") for p in prop.get("anyOf", ())) or "object"
        note = " ".join((prop.get("description") or target.get("description") or "").split())
        rows.append(f"| `{name}` | {kind} | {'yes' if name in required else ''} | {note} |")
    return "\n".join(rows)


_GENERATORS = {
    "configuration": _configuration,
    "module-map": _module_map,
    "request-fields": _request_fields,
}
