"""Provider discovery (entry-point group ``stenod.providers``), validation and the registry.

Discover → load → validate → register, all at start-up. A plugin that fails to import
or validate is reported (``stenod providers``, the log) and skipped; two plugins with
one name is a configuration error. Built-in providers are found the same way as
third-party ones.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from stenod.errors import ConfigError, PluginError
from stenod.provider import Limits, Provider, ProviderSettings
from stenod.settings_loading import credential

GROUP = "stenod.providers"
_REQUIRED_METHODS = ("submit", "poll", "fetch", "cancel")


@dataclass(frozen=True, slots=True)
class Loaded:
    name: str
    cls: type[Provider]
    distribution: str


@dataclass(frozen=True, slots=True)
class Broken:
    name: str
    target: str
    distribution: str
    reason: str


Discovered = Loaded | Broken


def _dist_of(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def check_provider_class(name: str, cls: Any) -> None:
    """Raise PluginError unless ``cls`` looks like a Provider registered as ``name``."""
    if not inspect.isclass(cls):
        raise PluginError(f"{cls!r} is not a class")
    if getattr(cls, "name", None) != name:
        raise PluginError(
            f"class {cls.__qualname__} declares name {getattr(cls, 'name', None)!r}, registered as {name!r}"
        )
    settings = getattr(cls, "Settings", None)
    if not (inspect.isclass(settings) and issubclass(settings, ProviderSettings)):
        raise PluginError(f"{cls.__qualname__}.Settings must subclass stenod.provider.ProviderSettings")
    options = getattr(cls, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, BaseModel)):
        raise PluginError(f"{cls.__qualname__}.Options must be a pydantic model")
    if not isinstance(getattr(cls, "limits", None), Limits):
        raise PluginError(f"{cls.__qualname__}.limits must be a stenod.provider.Limits")
    for method in _REQUIRED_METHODS:
        if not inspect.iscoroutinefunction(getattr(cls, method, None)):
            raise PluginError(f"{cls.__qualname__}.{method} must be an async method")


def discover(group: str = GROUP) -> Iterator[Discovered]:
    for ep in importlib.metadata.entry_points(group=group):
        try:
            cls = ep.load()
            check_provider_class(ep.name, cls)
        except Exception as exc:  # a broken plugin must not stop the daemon
            yield Broken(ep.name, ep.value, _dist_of(ep), reason=f"{type(exc).__name__}: {exc}")
        else:
            yield Loaded(ep.name, cls, _dist_of(ep))


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What discovery found: loadable provider classes by name, and the broken ones."""

    available: Mapping[str, Loaded]
    broken: Mapping[str, Broken]

    @classmethod
    def build(cls, found: Iterable[Discovered]) -> Catalogue:
        available: dict[str, Loaded] = {}
        broken: dict[str, Broken] = {}
        for entry in found:
            if entry.name in available or entry.name in broken:
                other = available.get(entry.name) or broken[entry.name]
                raise ConfigError(
                    f"two plugins are named {entry.name!r}: {other.distribution} and {entry.distribution}; "
                    "uninstall one of them"
                )
            if isinstance(entry, Loaded):
                available[entry.name] = entry
            else:
                broken[entry.name] = entry
        return cls(available, broken)

    @classmethod
    def discover(cls) -> Catalogue:
        return cls.build(discover())

    def require(self, name: str) -> Loaded:
        if name in self.available:
            return self.available[name]
        if name in self.broken:
            b = self.broken[name]
            raise ConfigError(f"provider {name!r} ({b.distribution}) failed to load: {b.reason}")
        known = ", ".join(sorted(self.available)) or "none"
        raise ConfigError(f"unknown provider {name!r} (available: {known})")


def secret_fields(model: type[ProviderSettings]) -> list[str]:
    return [name for name, info in model.model_fields.items() if "SecretStr" in repr(info.annotation)]


def provider_settings(loaded: Loaded, raw: Mapping[str, Any] | None) -> ProviderSettings:
    """Validate ``[providers.<name>]`` with the plugin's own model; ConfigError names the key.

    Secret keys missing from the table are read from ``$CREDENTIALS_DIRECTORY/<name>.<key>``
    (systemd ``LoadCredential=``), e.g. ``sarvam.api_key``.
    """
    data = dict(raw or {})
    for key in secret_fields(loaded.cls.Settings):
        if key not in data and (value := credential(f"{loaded.name}.{key}")) is not None:
            data[key] = value
    try:
        return loaded.cls.Settings.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"providers.{loaded.name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {details}") from exc


def instantiate(loaded: Loaded, settings: ProviderSettings, http: httpx.AsyncClient) -> Provider:
    try:
        return loaded.cls(settings, http)  # type: ignore[call-arg]
    except Exception as exc:
        raise ConfigError(f"provider {loaded.name!r} could not start: {type(exc).__name__}: {exc}") from exc
