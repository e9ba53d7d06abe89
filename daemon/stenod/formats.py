"""A transcript as the files people open: plain text, JSON, SRT, WebVTT and TSV.

Pure functions (no I/O), shared by the folder writers and the HTTP answers, so a
subtitle file and an ``/asr?output=srt`` answer are the same bytes.

Subtitle cues are kept readable: at most two lines of 42 characters and 7 seconds
(the common broadcast guidance). A longer segment is split at word boundaries,
preferring the end of a sentence or clause; with word timestamps each cue takes its
words' times, otherwise times are shared out by the length of the text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pysubs2

from stenod.jsontext import dumps_pretty
from stenod.provider import Segment, Transcript, Word
from stenod.who_spoke.views import public_transcript

__all__ = ["Cue", "cues", "render_json", "render_srt", "render_tsv", "render_txt", "render_vtt", "turns"]

LINE_CHARS = 42
CUE_CHARS = 2 * LINE_CHARS
CUE_SECONDS = 7.0
_MAX_CUE_SECONDS = 359_999.0  # 99:59:59, the latest time an SRT cue can carry
_BREAK_AFTER = (".", "?", "!", "…", "。", "？", "！")
_PAUSE_AFTER = (",", ";", ":", "、", "，")


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    text: str
    speaker: str | None = None


def speaker_label(label: str | None) -> str:
    """How a speaker is named in text: ``Speaker 2`` for a bare number, the label otherwise."""
    if label is None:
        return ""
    return label if not label.isdigit() else f"Speaker {label}"


def turns(t: Transcript) -> list[tuple[str | None, str]]:
    """The transcript in speaker turns: consecutive segments of one speaker joined."""
    out: list[tuple[str | None, list[str]]] = []
    for s in t.segments:
        if not (text := s.text.strip()):
            continue
        if out and out[-1][0] == s.speaker:
            out[-1][1].append(text)
        else:
            out.append((s.speaker, [text]))
    return [(speaker, " ".join(texts)) for speaker, texts in out]


def render_txt(t: Transcript) -> bytes:
    if any(s.speaker for s in t.segments):
        lines = [f"{speaker_label(speaker)}: {text}" if speaker else text for speaker, text in turns(t)]
        return ("\n".join(lines) + "\n").encode()
    return (t.text.strip() + "\n").encode()


def render_json(t: Transcript, *, source: str) -> bytes:
    """The normalised transcript, speakers listed without their voiceprints."""
    return dumps_pretty({"source": source, **public_transcript(t.to_json())}) + b"\n"


def _seconds(value: float) -> float:
    """A provider's NaN, negative, infinite or absurd time, clamped so the cue is still written."""
    if not math.isfinite(value) or value < 0:
        return 0.0
    return min(value, _MAX_CUE_SECONDS)


def _chunks(text: str) -> list[str]:
    """``text`` in pieces of at most CUE_CHARS, cut at spaces, preferring sentence ends."""
    pieces: list[str] = []
    rest = text
    while len(rest) > CUE_CHARS:
        window = rest[: CUE_CHARS + 1]
        cut = max((window.rfind(p + " ") + len(p) for p in _BREAK_AFTER), default=-1)
        if cut < CUE_CHARS // 2:
            cut = max((window.rfind(p + " ") + len(p) for p in _PAUSE_AFTER), default=-1)
        if cut < CUE_CHARS // 2:
            cut = window.rfind(" ")
        if cut <= 0:  # one unbroken word longer than a cue (a URL, a script without spaces)
            cut = CUE_CHARS
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def _by_text(segment: Segment, text: str) -> Iterator[Cue]:
    pieces = _chunks(text)
    start, end = _seconds(segment.start), _seconds(segment.end)
    total = sum(len(p) for p in pieces) or 1
    done = 0
    for piece in pieces:
        begin = start + (end - start) * done / total
        done += len(piece)
        yield Cue(begin, start + (end - start) * done / total, piece, segment.speaker)


def _by_words(segment: Segment, words: Sequence[Word]) -> Iterator[Cue]:
    group: list[Word] = []

    def flush() -> Cue:
        text = " ".join(w.text.strip() for w in group)
        return Cue(_seconds(group[0].start), _seconds(group[-1].end), text, segment.speaker)

    for word in words:
        if group:
            text = " ".join(w.text.strip() for w in [*group, word])
            too_long = len(text) > CUE_CHARS or word.end - group[0].start > CUE_SECONDS
            sentence_end = group[-1].text.rstrip().endswith(_BREAK_AFTER) and len(text) > CUE_CHARS // 2
            if too_long or sentence_end:
                yield flush()
                group = []
        group.append(word)
    if group:
        yield flush()


def cues(t: Transcript) -> list[Cue]:
    """The transcript's subtitle cues, each short enough to read."""
    segments = t.segments
    if not segments and t.text.strip():
        segments = (Segment(0.0, t.duration or 0.0, t.text),)
    words = sorted(t.words or (), key=lambda w: w.start)
    out: list[Cue] = []
    for seg in segments:
        text = " ".join(seg.text.split())
        if not text:
            continue
        if len(text) <= CUE_CHARS and seg.end - seg.start <= CUE_SECONDS:
            out.append(Cue(_seconds(seg.start), _seconds(seg.end), text, seg.speaker))
            continue
        inside = [w for w in words if seg.start - 0.01 <= w.start < seg.end + 0.01 and w.text.strip()]
        if inside and abs(len(" ".join(w.text.strip() for w in inside)) - len(text)) <= len(text) // 10 + 2:
            out.extend(_by_words(seg, inside))
        else:
            out.extend(_by_text(seg, text))
    return out


def _two_lines(text: str) -> str:
    """A cue's text on two balanced lines when it is longer than one."""
    if len(text) <= LINE_CHARS:
        return text
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut] + "\n" + text[cut + 1 :]


# User text reaches subtitles (a provider's words, a speaker named on the page): it must
# stay text. WebVTT has escapes; SRT has none, so the characters that would start a tag are
# swapped for lookalikes. A backslash never reaches pysubs2, which reads \N, \n and \h in
# any text as line breaks and spaces.
_SRT_PLAIN = str.maketrans({"<": "\u2039", ">": "\u203a", "\\": "\uff3c"})
_BACKSLASH = str.maketrans({"\\": "\uff3c"})


def _srt_text(text: str) -> str:
    """``text`` with nothing an SRT player reads as markup (tags, ``{\\an8}``, ``\\N``)."""
    return text.translate(_SRT_PLAIN)


def _vtt_text(text: str) -> str:
    """``text`` escaped for a WebVTT cue or a voice annotation."""
    return html.escape(text, quote=False).translate(_BACKSLASH)


def _subtitles(t: Transcript, *, vtt: bool) -> pysubs2.SSAFile:
    plain = _vtt_text if vtt else _srt_text
    subs = pysubs2.SSAFile()
    for cue in cues(t):
        lines = _two_lines(" ".join(cue.text.split())).split("\n")
        text = "\n".join(plain(line) for line in lines)
        if cue.speaker:
            name = plain(" ".join(speaker_label(cue.speaker).split()))
            text = f"<v {name}>{text}" if vtt else f"{name}: {text}"
        start = round(cue.start * 1000)
        end = max(round(cue.end * 1000), start + 1)
        subs.append(pysubs2.SSAEvent(start=start, end=end, text=text))
    return subs


def render_srt(t: Transcript) -> bytes:
    # keep_ssa_tags: the text is written as it is, not read as ASS override tags ({...})
    return _subtitles(t, vtt=False).to_string("srt", keep_ssa_tags=True).encode()


def render_vtt(t: Transcript) -> bytes:
    return _subtitles(t, vtt=True).to_string("vtt", keep_ssa_tags=True).encode()


def render_tsv(t: Transcript) -> bytes:
    """Whisper's TSV: ``start``, ``end`` (integer milliseconds) and ``text`` per segment."""
    rows = ["start\tend\ttext"]
    for seg in t.segments:
        text = " ".join(seg.text.split()).replace("\t", " ")
        if text:
            rows.append(f"{round(_seconds(seg.start) * 1000)}\t{round(_seconds(seg.end) * 1000)}\t{text}")
    return ("\n".join(rows) + "\n").encode()
