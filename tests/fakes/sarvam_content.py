"""What the fake Sarvam server accepts (job parameters, per the API schema) and what it
produces (deterministic result documents derived from the file name and size)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

STT_MODELS = {"saaras:v3", "saaras:v4", "saarika:v2.5"}
MODES = {"transcribe", "translate", "verbatim", "translit", "codemix"}
LANGUAGES = {
    "unknown", "hi-IN", "bn-IN", "kn-IN", "ml-IN", "mr-IN", "od-IN", "pa-IN", "ta-IN", "te-IN", "en-IN",
    "gu-IN", "as-IN", "ur-IN", "ne-IN", "kok-IN", "ks-IN", "sd-IN", "sa-IN", "sat-IN", "mni-IN", "brx-IN",
    "mai-IN", "doi-IN",
}  # fmt: skip
CODECS = {
    "wav", "x-wav", "wave", "mp3", "mpeg", "mpeg3", "x-mp3", "x-mpeg-3", "aac", "x-aac", "aiff", "x-aiff",
    "ogg", "opus", "flac", "x-flac", "mp4", "x-m4a", "amr", "x-ms-wma", "webm", "pcm_s16le", "pcm_l16",
    "pcm_raw",
}  # fmt: skip
_PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "stt": {
        "model": str, "mode": str, "language_code": str, "with_timestamps": bool, "with_diarization": bool,
        "num_speakers": int, "input_audio_codec": str, "keyterms": list,
    },
    "translate": {
        "model": str, "prompt": str, "with_diarization": bool, "num_speakers": int, "input_audio_codec": str,
    },
}  # fmt: skip


def parameter_problem(kind: str, params: dict[str, Any]) -> str | None:
    allowed = _PARAMS[kind]
    for key, value in params.items():
        if key not in allowed:
            return f"body.job_parameters.{key} : Extra inputs are not permitted"
        if value is not None and (not isinstance(value, allowed[key]) or (allowed[key] is int and value is True)):
            return f"body.job_parameters.{key} : Input should be a valid {allowed[key].__name__}"  # type: ignore[union-attr]
    model = params.get("model")
    if kind == "translate":
        if model not in (None, "saaras:v2.5"):
            return f"body.job_parameters.model : Input should be 'saaras:v2.5', got {model!r}"
    else:
        if model is not None and model not in STT_MODELS:
            return f"body.job_parameters.model : Input should be one of {sorted(STT_MODELS)}"
        if params.get("mode") is not None and params["mode"] not in MODES:
            return f"body.job_parameters.mode : Input should be one of {sorted(MODES)}"
        if params.get("language_code") is not None and params["language_code"] not in LANGUAGES:
            return "body.job_parameters.language_code : Input should be a supported language code"
        keyterms = params.get("keyterms")
        if keyterms is not None and (model != "saaras:v4" or len(keyterms) > 50):
            return "body.job_parameters.keyterms : keyterms need model saaras:v4 and at most 50 terms"
    if params.get("input_audio_codec") is not None and params["input_audio_codec"] not in CODECS:
        return "body.job_parameters.input_audio_codec : Input should be a supported codec"
    speakers = params.get("num_speakers")
    if speakers is not None and not 1 <= speakers <= 20:
        return "body.job_parameters.num_speakers : Input should be between 1 and 20"
    return None


def result_document(name: str, size: int, kind: str, p: dict[str, Any]) -> dict[str, Any]:
    """A deterministic result document for one file: 2–4 sentences derived from name and size."""
    stem = name.rsplit(".", 1)[0]
    english = kind == "translate" or p.get("mode") == "translate"
    language = p.get("language_code") if p.get("language_code") not in (None, "unknown") else "hi-IN"
    count = 2 + size % 3
    sentences = [
        f"{'Translated sentence' if english else 'Sentence'} {k + 1} of {stem} ({size} bytes)." for k in range(count)
    ]
    starts = [round(k * 2.5 + 0.01, 2) for k in range(count)]
    ends = [round(k * 2.5 + 2.4, 2) for k in range(count)]
    doc: dict[str, Any] = {
        "request_id": f"{dt.datetime.now(dt.UTC):%Y%m%d}_{uuid.uuid4()}",
        "transcript": " ".join(sentences),
        "language_code": language,
        "language_probability": None if p.get("language_code") not in (None, "unknown") else 0.93,
    }
    if kind == "stt" and p.get("with_timestamps"):
        doc["timestamps"] = {"words": sentences, "start_time_seconds": starts, "end_time_seconds": ends}
    if p.get("with_diarization"):
        speakers = p.get("num_speakers") or 2
        doc["diarized_transcript"] = {
            "entries": [
                {
                    "transcript": s,
                    "start_time_seconds": a,
                    "end_time_seconds": b,
                    "speaker_id": str(k % speakers),
                }
                for k, (s, a, b) in enumerate(zip(sentences, starts, ends, strict=True))
            ]
        }
    return doc
