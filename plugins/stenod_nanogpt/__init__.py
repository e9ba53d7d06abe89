"""NanoGPT speech-to-text provider for stenod (sync Whisper-class models and the async
Elevenlabs-STT flow with diarization and word timings)."""

from stenod_nanogpt.provider import NanoGptOptions, NanoGptProvider, NanoGptSettings

__all__ = ["NanoGptOptions", "NanoGptProvider", "NanoGptSettings"]
