"""The speech set of ``bench/bench_whisper.py``: English paragraphs spoken by Festival's
``kal`` voice into files of several formats and lengths, with the text kept for WER.

The files are written once into a cache folder and reused while the texts are unchanged
(a manifest records a hash of them). The texts hold no digits and no hyphenated words, so
the word error rate measures recognition, not spelling conventions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jiwer

from support.speech import encode_pcm, festival_pcm

__all__ = ["Clip", "SpeechSet", "normalise", "speech_set", "word_error_rate"]

_RATE: Final = 16000  # Festival's diphone voices speak at 16 kHz, mono s16le
_SENTENCE_PAUSE_SECONDS: Final = 0.8
_PARAGRAPH_PAUSE_SECONDS: Final = 1.6
_MANIFEST: Final = "manifest.json"

SHORT: Final[dict[str, str]] = {
    "bread.wav": "Every Saturday morning my grandmother baked bread in the small kitchen behind the house. She mixed "
    "flour, water, salt and a little yeast in a wide wooden bowl, then covered it with a clean cloth and left it "
    "near the stove. While the dough was rising, she told us stories about the village where she grew up. By "
    "lunchtime the whole street smelled of warm bread, and the neighbors always found a reason to knock on the door.",
    "night-train.mp3": "The night train left the station just after the sun went down. Most of the passengers were "
    "asleep before we reached the mountains, but I sat by the window and watched the lights of small towns slide "
    "past in the darkness. At one stop an old man climbed aboard with a basket of apples and offered one to "
    "everyone in the carriage. When morning came, the snow on the hills was pink in the early light.",
    "garden.flac": "Our garden was a mess when we bought the house. The grass was taller than the fence, and the "
    "roses had not been cut for years. We spent the first spring pulling weeds and carrying stones to the corner "
    "of the yard. Then we planted beans, tomatoes and a row of sunflowers along the wall. By the end of the summer "
    "we had more vegetables than we could eat, so we left boxes of them outside the gate for anyone who walked by.",
    "library.ogg": "The public library in our town is open late on weekdays, and it is usually full of students in "
    "the evening. Some of them come for the books, but many come for the quiet and the warm reading room with its "
    "tall windows. The librarians know most of the regular visitors by name. Last winter they started a reading "
    "group for older people, and now it meets every week to talk about a novel over tea and biscuits.",
    "forecast.m4a": "Tomorrow will begin with heavy clouds and light rain in the north, spreading slowly toward the "
    "coast during the morning. In the afternoon the rain should clear from the west, leaving bright spells and a "
    "fresh breeze. Temperatures will be a little below normal for the time of year. Drivers should take care on "
    "country roads, where there may be standing water, and anyone planning a walk in the hills should bring a "
    "warm coat.",
    "bicycle.opus": "If your bicycle chain keeps slipping, the problem is often easier to fix than you might think. "
    "First, turn the bicycle upside down so that it rests on the seat and the handlebars. Clean the chain with an "
    "old cloth and check it for stiff links. Then look at the back wheel and make sure it sits straight in the "
    "frame. Finally, add a few drops of oil, turn the pedals slowly, and wipe away anything that drips.",
}
"""Six paragraphs of about half a minute each."""

MUSEUM: Final = (
    "Welcome to the river museum. Before we begin the tour, I would like to tell you a little about the building "
    "you are standing in. It was built as a warehouse for grain, at a time when boats carried almost everything "
    "that the city needed. Farmers from the valley brought their harvest down the river, and merchants stored it "
    "here until the prices were good. When the railway arrived, the boats slowly disappeared, and the warehouse "
    "stood empty for many years. Local families used it for dances and markets, and during one hard winter it "
    "even served as a shelter for people who had lost their homes in a flood. The city bought the building much "
    "later and turned it into the museum you see today. On the ground floor you will find models of the old "
    "boats, along with the tools that the sailors used to repair them. Upstairs there is a room full of letters "
    "and photographs given by the families who lived along the river. Please take your time, and feel free to "
    "ask questions as we go."
)
"""About seventy seconds: above stenod's ``batch_min_seconds`` (60), so batched there."""

LECTURE: Final = (
    "Good evening, and thank you all for coming out on such a cold night. Tonight I want to talk about something "
    "that almost everyone in this room has tried at least once, and that most of us have given up on at least "
    "once: learning a new language as an adult.",
    "Many people believe that children learn languages easily and that adults simply cannot. There is some truth "
    "in this, but the story is more interesting than that. Young children have a lot of time, very few "
    "responsibilities, and a world full of people who are happy to repeat the same simple words again and again. "
    "Adults rarely have any of those things. We are busy, we are tired, and we are often embarrassed to make "
    "mistakes in front of other people.",
    "On the other hand, adults have real advantages. We already understand how a language works. We know what a "
    "verb is, even if we never use the word. We can read, we can take notes, and we can plan our learning. Most "
    "importantly, we can choose what we want to say. A child has to learn whatever the family happens to talk "
    "about, while an adult can focus on the words and phrases that matter for work, for travel, or for talking "
    "with friends.",
    "So what actually helps? The first thing is regular practice. A little practice every day is worth far more "
    "than a long lesson once a week. The brain needs to meet a new word many times, in different places, before "
    "it really belongs to you. If you only study on Sunday afternoons, you spend most of the time remembering "
    "what you forgot since the last Sunday.",
    "The second thing is listening. Before you can speak well, you need to hear the language as it is really "
    "spoken, with all its speed and its untidy sentences. Radio programs, films and podcasts are wonderful for "
    "this, even when you understand only a part of what you hear. Over time, the sounds that seemed like a single "
    "stream begin to separate into words, and the words begin to carry meaning.",
    "The third thing is courage. At some point you have to open your mouth and speak to a real person, knowing "
    "that you will make mistakes. Most people are kind when they see that you are trying. They will slow down, "
    "they will help you find the word you are looking for, and very often they will be delighted that you made "
    "the effort at all.",
    "Finally, be patient with yourself. Progress in a language is not a straight line. There will be weeks when "
    "you feel that you are learning nothing, followed by a morning when you suddenly understand a whole "
    "conversation on the bus. Those mornings are worth waiting for. Keep a small notebook, celebrate the little "
    "victories, and remember that every fluent speaker you admire was once a beginner who felt exactly the way "
    "you feel now.",
    "Thank you for listening. We have some time left, so I would be glad to answer your questions.",
)
"""A talk of three to four minutes, paragraphs separated by longer pauses."""

WARMUP: Final = ("Hello, this short clip only wakes the engine up.",)

FULL: Final[dict[str, tuple[str, ...]]] = {
    **{name: (text,) for name, text in SHORT.items()},
    "museum-tour.flac": (MUSEUM,),
    "lecture.mp3": LECTURE,
}
QUICK: Final[dict[str, tuple[str, ...]]] = {
    name: FULL[name] for name in ("bread.wav", "night-train.mp3", "museum-tour.flac")
}


@dataclass(frozen=True, slots=True)
class Clip:
    """One spoken file of the set."""

    path: Path
    seconds: float
    text: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True, slots=True)
class SpeechSet:
    """The files to transcribe (longest first) and a short clip to start the engines with."""

    clips: tuple[Clip, ...]
    warmup: Clip

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.clips)

    def text_of(self, name: str) -> str:
        return next(c.text for c in self.clips if c.name == name)


def _sentences(paragraph: str) -> list[str]:
    # Festival reads a whole paragraph in one breath group; a pause per sentence is closer to
    # how people speak and gives the VAD something to split on.
    parts = paragraph.replace("? ", "?|").replace(". ", ".|").split("|")
    return [p.strip() for p in parts if p.strip()]


def _speak(paragraphs: tuple[str, ...], path: Path) -> float:
    """Synthesise ``paragraphs`` into ``path``; returns the audio's length in seconds."""
    sentence_gap = bytes(int(_SENTENCE_PAUSE_SECONDS * _RATE) * 2)
    paragraph_gap = bytes(int((_PARAGRAPH_PAUSE_SECONDS - _SENTENCE_PAUSE_SECONDS) * _RATE) * 2)
    chunks: list[bytes] = []
    for paragraph in paragraphs:
        for sentence in _sentences(paragraph):
            chunks += [festival_pcm(sentence), sentence_gap]
        chunks.append(paragraph_gap)
    encode_pcm(chunks, path, in_rate=_RATE)
    return sum(len(c) for c in chunks) / 2 / _RATE


def _fingerprint(texts: dict[str, tuple[str, ...]]) -> str:
    return hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()[:16]


def _load(folder: Path, texts: dict[str, tuple[str, ...]]) -> dict[str, float] | None:
    """Durations from the manifest, if it was written for these very texts and files."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != _fingerprint(texts):
        return None
    seconds: dict[str, float] = manifest["seconds"]
    return seconds if all((folder / n).is_file() for n in seconds) else None


def speech_set(folder: Path, *, quick: bool = False) -> SpeechSet:
    """The speech set in ``folder``, synthesised first if missing or out of date."""
    texts = {**FULL, "warmup.wav": WARMUP}
    folder.mkdir(parents=True, exist_ok=True)
    seconds = _load(folder, texts)
    if seconds is None:
        print(f"synthesising the speech set into {folder} (once) …", flush=True)
        seconds = {name: _speak(paragraphs, folder / name) for name, paragraphs in texts.items()}
        manifest = {"fingerprint": _fingerprint(texts), "seconds": seconds}
        (folder / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    chosen = QUICK if quick else FULL
    clips = [Clip(folder / name, seconds[name], " ".join(chosen[name])) for name in chosen]
    clips.sort(key=lambda c: c.seconds, reverse=True)
    return SpeechSet(tuple(clips), Clip(folder / "warmup.wav", seconds["warmup.wav"], WARMUP[0]))


def normalise(text: str) -> str:
    """Lower case, words only: punctuation (but apostrophes) and line breaks become spaces."""
    text = text.lower().replace("\u2019", "'")
    return " ".join("".join(ch if ch.isalnum() or ch == "'" else " " for ch in text).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """WER over the whole set (errors over all reference words, not a mean of per-file rates)."""
    return float(jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses]))
