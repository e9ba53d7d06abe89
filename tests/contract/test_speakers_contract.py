"""Who spoke, in the journal, on SQLite and PostgreSQL alike: a job's request to say who
spoke reaches the dispatcher with its items and a retry, and keeps apart results asked
differently."""

from __future__ import annotations

import pytest

from stenod.errors import NameTaken
from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, NewItem, NewJob
from stenod.speakers import Diarization, KnownSpeaker, Voiceprint

ASKED = Diarization(min_speakers=2, max_speakers=3, known=(KnownSpeaker("Host", references=("/clips/host.wav",)),))


def job(diarization: Diarization | None, content_hash: str | None = None) -> NewJob:
    item = NewItem(input="/in/a.wav", name="a.wav", path="/in/a.wav", size=1, content_hash=content_hash)
    return NewJob(source="t", task="transcribe", provider="echo", items=[item], diarization=diarization)


async def test_the_diarization_a_job_asked_for_comes_back_with_its_open_items(journal):
    asked, _ = await journal.create_job(job(ASKED))
    plain, _ = await journal.create_job(job(None))
    found = {i.job_id: i.diarization for i in await journal.open_items()}
    assert found == {asked.job_id: ASKED, plain.job_id: None}


async def test_a_retry_asks_who_spoke_as_the_job_it_repeats(journal):
    view, _ = await journal.create_job(job(ASKED))
    repeat = await journal.repeat_of(view.job_id)
    assert repeat is not None and repeat.diarization == ASKED


async def test_a_result_without_speakers_does_not_answer_a_request_for_them(journal):
    view, _ = await journal.create_job(job(None, content_hash="h1"))
    result = {"transcript": {"text": "hi", "segments": []}}
    await journal.finish_items([ItemOutcome(view.items[0].item_id, ItemState.SUCCEEDED, result=result)])
    assert await journal.reusable_result("h1", "echo", "transcribe", None, (), {}) == result
    assert await journal.reusable_result("h1", "echo", "transcribe", None, (), {}, Diarization()) is None


# -- voices remembered -------------------------------------------------------------------

HOST = Voiceprint("m1", (0.6, 0.8))
GUEST = Voiceprint("m1", (1.0, 0.0))


async def test_a_named_voice_is_kept_and_known_to_later_jobs_by_its_name(journal):
    await journal.remember_voice("Host", HOST, "item-1")
    await journal.remember_voice("Host", Voiceprint("m2", (0.1, 0.2, 0.3)), "item-2")
    await journal.remember_voice("Guest", GUEST, "item-1")
    assert await journal.known_voices() == [
        KnownSpeaker("Guest", voiceprints=(GUEST,)),
        KnownSpeaker("Host", voiceprints=(HOST, Voiceprint("m2", (0.1, 0.2, 0.3)))),
    ]
    listed = await journal.voices()
    assert [(v.name, v.voiceprints, v.models) for v in listed] == [("Guest", 1, ("m1",)), ("Host", 2, ("m1", "m2"))]


async def test_naming_the_same_voice_of_a_recording_again_renames_it_instead_of_keeping_it_twice(journal):
    await journal.remember_voice("Host", HOST, "item-1")
    await journal.remember_voice("Anna", HOST, "item-1")
    assert await journal.known_voices() == [KnownSpeaker("Anna", voiceprints=(HOST,))]


async def test_a_rename_onto_a_name_in_use_needs_merge(journal):
    await journal.remember_voice("Host", HOST, "item-1")
    await journal.remember_voice("Anna", GUEST, "item-2")
    with pytest.raises(NameTaken):
        await journal.rename_voice("Host", "Anna")
    assert await journal.rename_voice("Host", "Hostess") == 1
    assert await journal.rename_voice("Hostess", "Anna", merge=True) == 1
    assert await journal.rename_voice("Nobody", "Anna") == 0
    assert await journal.known_voices() == [KnownSpeaker("Anna", voiceprints=(HOST, GUEST))]


async def test_forgetting_a_name_deletes_its_voiceprints_everywhere(journal, open_journal):
    other = await open_journal()
    await journal.remember_voice("Host", HOST, "item-1")
    await journal.remember_voice("Guest", GUEST, "item-1")
    assert await other.forget_voice("Host") == 1
    assert await journal.forget_voice("Host") == 0
    assert [k.name for k in await journal.known_voices()] == ["Guest"]
