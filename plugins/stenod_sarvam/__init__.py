"""Sarvam AI batch speech-to-text (and speech-to-text-translate) provider for stenod."""

from .options import SarvamOptions, SarvamSettings
from .provider import SarvamProvider

__all__ = ["SarvamOptions", "SarvamProvider", "SarvamSettings"]
