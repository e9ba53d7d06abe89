"""stenod's offline engine: Whisper through faster-whisper (CTranslate2), with the
multilingual base model bundled, so transcription works with no account and no download."""

from stenod_whisper.provider import WhisperProvider
from stenod_whisper.settings import WhisperOptions, WhisperSettings

__all__ = ["WhisperOptions", "WhisperProvider", "WhisperSettings"]
