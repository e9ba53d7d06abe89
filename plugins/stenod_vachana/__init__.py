"""Vachana (Gnani.ai) STT v3 batch speech-to-text provider for stenod."""

from .options import VachanaOptions, VachanaSettings
from .provider import VachanaProvider

__all__ = ["VachanaOptions", "VachanaProvider", "VachanaSettings"]
