"""The shapes of OpenAI's transcription answers (``json``, ``text``, ``srt``,
``verbose_json``, ``vtt``, ``diarized_json``), as the ``openai`` SDK's types parse them."""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from stenod.adapters.http.openai_diarized import DIARIZED, diarized_body
from stenod.formats import render_srt, render_vtt
from stenod.provider import Transcript, language_name

__all__ = ["FORMATS", "answer"]

FORMATS = ("json", "text", "srt", "verbose_json", "vtt", DIARIZED)


def _segments(t: Transcript) -> list[dict[str, Any]]:
    out = []
    for index, s in enumerate(t.segments):
        extra = dict(s.extra)
        logprob = extra.get("avg_logprob")
        if logprob is None:
            logprob = math.log(s.confidence) if s.confidence else 0.0
        out.append(
            {
                "id": index,
                "seek": int(extra.get("seek") or 0),
                "start": s.start,
                "end": s.end,
                "text": " " + s.text.strip() if s.text.strip() else "",
                "tokens": list(extra.get("tokens") or []),
                "temperature": float(extra.get("temperature") or 0.0),
                "avg_logprob": float(logprob),
                "compression_ratio": float(extra.get("compression_ratio") or 0.0),
                "no_speech_prob": float(extra.get("no_speech_prob") or 0.0),
            }
        )
    return out


def _usage(t: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(t.duration or 0)}


def answer(t: Transcript, response_format: str, *, words: bool, translate: bool) -> Response:
    """The transcript as OpenAI answers in ``response_format``."""
    if response_format == "text":
        return PlainTextResponse(t.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(render_srt(t).decode())
    if response_format == "vtt":
        return PlainTextResponse(render_vtt(t).decode(), media_type="text/vtt")
    if response_format == "json":
        return JSONResponse({"text": t.text, "usage": _usage(t)})
    if response_format == DIARIZED:
        return JSONResponse(diarized_body(t))
    body: dict[str, Any] = {
        "task": "translate" if translate else "transcribe",
        "language": "english" if translate else (language_name(t.language) or "unknown"),
        "duration": t.duration or 0.0,
        "text": t.text,
        "segments": _segments(t),
    }
    if words:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in t.words or ()]
    body["usage"] = _usage(t)
    return JSONResponse(body)
