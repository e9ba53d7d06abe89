"""stenod's offline provider: PocketSphinx (US English model shipped in its wheel),
audio decoded with PyAV, recognition in spawned worker processes.

Modules: ``provider`` (the plugin class), ``pool`` (worker processes, progress,
watchdog), ``worker`` (what runs in a worker), ``audio`` (file → 16 kHz PCM),
``recognizer`` (PCM → timed words).
"""

from stenod_sphinx.provider import SphinxProvider, SphinxSettings

__all__ = ["SphinxProvider", "SphinxSettings"]
