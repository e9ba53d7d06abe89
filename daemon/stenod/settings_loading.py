"""Reading the configuration: the TOML file (``--config`` > ``$STENOD_CONFIG`` >
``/etc/stenod/stenod.toml`` if present), systemd credentials, the checks that span several
keys (API keys, listen addresses), and the effective configuration with secrets masked.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from stenod.errors import ConfigError
from stenod.masking import mask_text, masked
from stenod.settings import Settings, WatchRule

SYSTEM_CONFIG = Path("/etc/stenod/stenod.toml")
DEFAULT_LISTEN = "127.0.0.1:8000"  # the HTTP server of a daemon started with no config at all
MIN_KEY_CHARS = 16


def config_path(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    if env := os.environ.get("STENOD_CONFIG"):
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except PermissionError as exc:
        raise ConfigError(f"config file {path} is not readable: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8: {exc}") from exc


def credential(name: str) -> str | None:
    """A secret from systemd's ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / name
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"credential {path} is not readable: {exc.strerror}") from exc


def _describe(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def load_settings(explicit: Path | None = None, **overrides: Any) -> Settings:
    """Read, merge and validate the configuration. Raises ConfigError (exit 2)."""
    path = config_path(explicit)
    data: dict[str, Any] = _read_toml(path) if path is not None else {}
    data.update(overrides)
    origin = str(path) if path else "built-in defaults"
    try:
        settings = Settings(**data, config_file=path)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin + " + STENOD_* environment")) from exc
    for name, section in settings.providers.items():
        if not isinstance(section, dict):
            raise ConfigError(f"invalid configuration ({origin}):\n  providers.{name}: must be a table")
    if settings.amqp.url is None and (url := credential("amqp.url")):
        settings.amqp.url = SecretStr(url)
    if not settings.http.api_keys and (keys := credential("http.api_keys")):
        settings.http.api_keys = [SecretStr(k.strip()) for k in keys.splitlines() if k.strip()]
    check_key_lengths(settings.http.api_keys, origin)
    if settings.journal.url is None and (url := credential("journal.url")):
        settings.journal.url = SecretStr(url)
    if settings.journal.backend == "postgresql" and not settings.journal_url:
        raise ConfigError(
            f'invalid configuration ({origin}):\n  journal.url: [journal] backend = "postgresql" needs the database: '
            'url = "postgresql://user@host/stenod" (or $CREDENTIALS_DIRECTORY/journal.url)'
        )
    if settings.http.listen is None and settings.health.listen:
        settings.http.listen = settings.health.listen  # [health] listen predates the HTTP server
    if settings.http.listen is not None:
        check_listen(settings.http.listen, keys=bool(settings.http.api_keys))
    if settings.wyoming.listen is not None:
        parse_listen(settings.wyoming.listen, key="wyoming.listen", example="0.0.0.0:10300")
    if not settings.watch and path is None and not settings.amqp_enabled:
        # A new user with no config at all gets a working transcriber: ./inbox, offline, and
        # the page and the APIs on loopback (keyless there: the HTTP front door refuses
        # other sites' pages and rebound names in every mode).
        inbox = Path("inbox").absolute()
        inbox.mkdir(exist_ok=True)
        settings.watch = [WatchRule(path=inbox)]
        if settings.http.listen is None:
            settings.http.listen = DEFAULT_LISTEN
    return settings


def check_key_lengths(keys: list[SecretStr], origin: str) -> None:
    """Refuse API keys short enough to guess (ConfigError); the message never shows a key."""
    for number, key in enumerate(keys, 1):
        if len(key.get_secret_value()) < MIN_KEY_CHARS:
            raise ConfigError(
                f"invalid configuration ({origin}):\n  http.api_keys: key {number} has "
                f"{len(key.get_secret_value())} characters; a key needs at least {MIN_KEY_CHARS} "
                "(make one with: openssl rand -hex 24)"
            )


def parse_listen(listen: str, *, key: str = "http.listen", example: str = "127.0.0.1:8000") -> tuple[str, int]:
    """Split ``"host:port"`` (``"[::1]:8000"`` for IPv6). Raises ConfigError when malformed."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f'{key} = {listen!r} is not host:port (e.g. "{example}")')
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str, *, keys: bool) -> None:
    """Refuse an HTTP server reachable from other machines without API keys (ConfigError)."""
    host, _ = parse_listen(listen)
    if not keys and not is_loopback(host):
        raise ConfigError(
            f"http.listen = {listen!r} is reachable from other machines, but no API key is set: anyone could "
            "run jobs and read transcripts. Set [http] api_keys (better: $CREDENTIALS_DIRECTORY/http.api_keys, "
            'one key a line), or listen on loopback ("127.0.0.1:8000")'
        )


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration with every secret masked (``stenod config``): every value
    under a secret's name, every URL password and secret URL parameter anywhere."""
    data = settings.model_dump(mode="json")
    for name, secret in (("amqp", settings.amqp.url), ("journal", settings.journal.url)):
        if secret is not None and "://" in (url := secret.get_secret_value()):
            data[name]["url"] = mask_text(url)  # the URL's shape helps; a conninfo string stays stars
    return dict(masked(data))
