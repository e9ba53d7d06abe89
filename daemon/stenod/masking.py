"""Secrets masked wherever text leaves stenod: log lines, error messages, ``stenod config``.

Two rules, one place: a value under a name that says it is a secret (``password``,
``sslpassword``, ``api_keys``, ``container_sas_url``, ``Authorization``) is masked whole;
in any text, the password of a URL (``scheme://user:pass@``, also percent-encoded), a
secret-named query or conninfo parameter (``?password=``, ``&sslpassword=``,
``password='x y'``, ``"token": "…"``, ``sig=``) and a bearer token are masked where they
stand.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["MASK", "is_secret_name", "mask_text", "masked", "secrets_in_url"]

MASK = "**********"

# A name is split into words (snake, kebab, dotted, camelCase): "keyless_networks" names no
# key, "sslpassword" and "apiKey" do.
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_ENDINGS = ("password", "passwd", "passphrase", "secret", "token", "key", "credential", "signature")
_SECRET_WORDS = frozenset({"sas", "authorization", "auth", "pwd", "sig", "cookie"})

_SECRET_PARAM = (
    r"[\w.-]*?(?:password|passwd|passphrase|secret|token|key|credential|signature)s?"
    r"|sig|se|sp|sv|skoid|sktid|pwd|pass"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host: the password runs to the last "@" before the path
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/]*(@)"), rf"\g<1>{MASK}\g<2>"),
    # ?password=…, &sslpassword=…, conninfo password='…' (quoted values may hold spaces)
    (
        re.compile(rf"""(?i)(?<![\w-])({_SECRET_PARAM})(\s*=\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^&\s"',;]+)"""),
        rf"\g<1>\g<2>{MASK}",
    ),
    # "password": "…" in a JSON body quoted back by a server
    (re.compile(rf'(?i)("(?:{_SECRET_PARAM})"\s*:\s*)"(?:[^"\\]|\\.)*"'), rf'\g<1>"{MASK}"'),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<1>{MASK}"),
)
# One scan that finds every text a pattern above would change: most text has no secret.
_ANY = re.compile("|".join(f"(?:{p.pattern.removeprefix('(?i)')})" for p, _ in _PATTERNS), re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether a key, field or header called ``name`` holds a secret."""
    for word in (w.lower() for w in _WORDS.findall(name)):
        stem = word.removesuffix("s")
        if stem.endswith(_SECRET_ENDINGS) or stem in _SECRET_WORDS or word in _SECRET_WORDS:
            return True
    return False


def mask_text(text: str) -> str:
    """``text`` with every URL password, secret parameter and bearer token masked."""
    if _ANY.search(text) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def masked(value: Any, *, name: str = "") -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with secrets masked, under its ``name``.

    A secret-named value is masked whole (each element of a list of them); an empty one
    stays empty, so ``stenod config`` still shows that it is unset.
    """
    if name and is_secret_name(name):
        if isinstance(value, list | tuple):
            return [MASK if v else v for v in value]
        return MASK if value else value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: masked(v, name=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


def secrets_in_url(url: str) -> list[str]:
    """The secret parts of ``url`` as a library may print them: its password (as written
    and percent-decoded: ``p%40ss`` is shown as ``p@ss``) and its secret-named parameters."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    found += [value for key, value in parse_qsl(parts.query) if is_secret_name(key) and value]
    return found
