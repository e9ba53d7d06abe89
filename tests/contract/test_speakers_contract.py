"""Who spoke, in the journal, on SQLite and PostgreSQL alike: a job's request to say who
spoke reaches the dispatcher with its items and a retry, and keeps apart results asked
differently."""

from __future__ import annotations

from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, NewItem, NewJob
from stenod.speakers import Diarization, KnownSpeaker

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
