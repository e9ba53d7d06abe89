"""stenod: a pluggable home-lab daemon that turns audio (and documents) into text."""

__version__ = "0.1.0"
