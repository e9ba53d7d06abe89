"""Whisper's languages, and how stenod's language tags map onto them.

Requests and watch rules name languages as BCP 47 tags (``en-US``, ``hi-IN``, ``it``);
Whisper knows 100 bare codes of its own (``en``, ``hi``, ``jw`` for Javanese). The table
of them is stenod's (``stenod.provider.LANGUAGES``, Whisper's own list), so the daemon can
check a request without importing the engine.
"""

from __future__ import annotations

from typing import Final

from stenod.provider import LANGUAGES, PermanentError

__all__ = ["ENGLISH", "LANGUAGES", "UnknownLanguage", "language_to_decode", "whisper_code"]

ENGLISH: Final = "en"

# Standard codes (and old ones still in use) that Whisper spells differently.
_ALIASES: Final[dict[str, str]] = {"jv": "jw", "iw": "he", "nb": "no", "fil": "tl", "in": "id", "ji": "yi"}
# Whisper's own English names are accepted too ("italian"), as OpenAI's API answers them.
_BY_NAME: Final[dict[str, str]] = {name: code for code, name in LANGUAGES.items()}


class UnknownLanguage(ValueError):
    """A language tag that names none of Whisper's languages."""


def whisper_code(tag: str) -> str:
    """Whisper's code for a language tag: ``en-US`` → ``en``, ``zh-Hant-TW`` → ``zh``,
    ``jv`` → ``jw``, ``Italian`` → ``it``. Raises UnknownLanguage."""
    clean = tag.strip().replace("_", "-").lower()
    if clean in _BY_NAME:
        return _BY_NAME[clean]
    primary = clean.split("-", 1)[0]
    primary = _ALIASES.get(primary, primary)
    if clean.startswith(("zh-yue", "yue")):
        return "yue"
    if primary not in LANGUAGES:
        raise UnknownLanguage(f"{tag!r} is not a language Whisper knows")
    return primary


def language_to_decode(tag: str | None, *, multilingual: bool, model: str, hint: str | None = None) -> str | None:
    """Whisper's code for the language a file or a command asks for (None: detected), for a
    batch and a voice command alike. PermanentError (``unsupported_language``) for a tag
    Whisper does not know, or a language an English-only ``model`` cannot transcribe."""
    if not tag:
        return None
    try:
        code = whisper_code(tag)
    except UnknownLanguage as exc:
        raise PermanentError(str(exc), code="unsupported_language") from exc
    if not multilingual and code != ENGLISH:
        raise PermanentError(
            f"the model {model} is English-only; it cannot transcribe {tag!r}", code="unsupported_language", hint=hint
        )
    return code
