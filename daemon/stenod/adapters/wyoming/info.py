"""The ``info`` answer to ``describe``: one ``asr`` program, a model per provider that
answers voice commands (the offline whisper first)."""

from __future__ import annotations

from wyoming.info import AsrModel, AsrProgram, Attribution, Info

import stenod
from stenod.voice.commands import LiveModel

__all__ = ["describe"]

_STENOD = Attribution(name="stenod", url="https://github.com/stenod/stenod")


def describe(models: list[LiveModel], *, streaming: bool) -> Info:
    """The ``info`` event's content for these models."""
    return Info(
        asr=[
            AsrProgram(
                name="stenod",
                description="stenod speech to text: offline Whisper and cloud providers",
                attribution=_STENOD,
                installed=True,
                version=stenod.__version__,
                models=[
                    AsrModel(
                        name=model.name,
                        description=model.description,
                        attribution=_STENOD,
                        installed=True,
                        languages=list(model.languages),
                        version=None,
                    )
                    for model in models
                ],
                supports_transcript_streaming=streaming,
            )
        ]
    )
