"""Whisper's languages, and how stenod's language tags map onto them.

Requests and watch rules name languages as BCP 47 tags (``en-US``, ``hi-IN``, ``it``);
Whisper knows 100 bare codes of its own (``en``, ``hi``, ``jw`` for Javanese). The table
is Whisper's (openai/whisper ``tokenizer.LANGUAGES``), kept here so the daemon can check a
request without importing the engine.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ENGLISH", "LANGUAGES", "UnknownLanguage", "language_name", "whisper_code"]

ENGLISH: Final = "en"

LANGUAGES: Final[dict[str, str]] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian", "mk": "macedonian",
    "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian", "ne": "nepali",
    "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer",
    "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan",
    "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati",
    "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese",
    "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}  # fmt: skip

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


def language_name(code: str) -> str:
    """Whisper's English name of a code (``it`` → ``italian``); the code itself if unknown."""
    return LANGUAGES.get(code, code)
