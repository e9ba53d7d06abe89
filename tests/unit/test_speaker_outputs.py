"""Who spoke, in every output: turns in ``.txt``, voices in ``.vtt``, names before ``.srt``
cues, and a ``.json`` whose speakers list says who matched whom without a voiceprint."""

from __future__ import annotations

import json

from stenod.formats import render_json, render_srt, render_txt, render_vtt
from stenod.jobs import ItemId, ItemState, ItemView, JobId, JobState, JobView
from stenod.provider import Segment, Speaker, Transcript, Voiceprint, Word

SPEAKERS = (
    Speaker("SPEAKER_00", voiceprint=Voiceprint("m", (1.0, 0.0))),
    Speaker("Asha", name="Asha", similarity=0.91, voiceprint=Voiceprint("m", (0.0, 1.0))),
)
TALK = Transcript(
    "Hello there. How are you? Fine, thanks.",
    segments=(
        Segment(0.0, 1.0, "Hello there.", speaker="SPEAKER_00"),
        Segment(1.0, 2.0, "How are you?", speaker="SPEAKER_00"),
        Segment(2.5, 3.5, "Fine, thanks.", speaker="Asha"),
    ),
    words=(Word(2.5, 3.0, "Fine,", speaker="Asha"), Word(3.0, 3.5, "thanks.", speaker="Asha")),
    speakers=SPEAKERS,
)


def test_txt_is_written_in_speaker_turns() -> None:
    assert render_txt(TALK).decode() == "SPEAKER_00: Hello there. How are you?\nAsha: Fine, thanks.\n"


def test_vtt_marks_each_cue_with_its_voice_and_srt_prefixes_the_name() -> None:
    vtt, srt = render_vtt(TALK).decode(), render_srt(TALK).decode()
    assert "<v SPEAKER_00>Hello there." in vtt and "<v Asha>Fine, thanks." in vtt
    assert "SPEAKER_00: How are you?" in srt and "Asha: Fine, thanks." in srt


def test_json_lists_the_speakers_with_their_match_but_never_a_voiceprint() -> None:
    data = json.loads(render_json(TALK, source="talk.wav"))
    assert data["speakers"] == [
        {"label": "SPEAKER_00", "name": None, "similarity": None},
        {"label": "Asha", "name": "Asha", "similarity": 0.91},
    ]
    assert [s["speaker"] for s in data["segments"]] == ["SPEAKER_00", "SPEAKER_00", "Asha"]
    assert [w["speaker"] for w in data["words"]] == ["Asha", "Asha"]


def test_events_carry_the_speakers_list_also_when_the_transcript_is_too_long_to_inline() -> None:
    item = ItemView(ItemId("i"), 0, "talk.wav", ItemState.SUCCEEDED, transcript=TALK.to_json())
    view = JobView(JobId("j"), None, "transcribe", "echo", JobState.SUCCEEDED, 1.0, (item,), None, None, "t", "t")
    inline, bare = view.to_data()["items"][0], view.to_data(inline_transcript_bytes=0)["items"][0]
    assert bare["speakers"] == inline["speakers"] == inline["transcript"]["speakers"]
    assert "transcript" not in bare and "voiceprint" not in inline["transcript"]["speakers"][1]
