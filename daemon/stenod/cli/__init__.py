"""The ``stenod`` commands."""

from stenod.cli.main import main

__all__ = ["main"]
