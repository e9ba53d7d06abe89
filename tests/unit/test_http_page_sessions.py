"""The page's sessions, kept in the state directory: what survives a restart and what ends one."""

from __future__ import annotations

from pathlib import Path

from stenod.adapters.http.auth import Keys
from stenod.adapters.http.sessions import PageSessions

KEY = "page-key-0123456789"


async def test_a_signed_in_session_survives_a_restart_and_ends_when_its_key_is_removed(tmp_path: Path) -> None:
    session = await PageSessions(tmp_path, Keys([KEY])).sign_in(KEY.encode())
    assert PageSessions(tmp_path, Keys([KEY, "another-key-0123456789"])).signed_in(session)
    assert not PageSessions(tmp_path, Keys(["another-key-0123456789"])).signed_in(session)


async def test_a_signed_out_session_stays_out_and_the_file_never_holds_a_token(tmp_path: Path) -> None:
    sessions = PageSessions(tmp_path, Keys([KEY]))
    session = await sessions.sign_in(KEY.encode())
    await sessions.sign_out(session)
    assert not PageSessions(tmp_path, Keys([KEY])).signed_in(session)
    signed_in_again = await sessions.sign_in(KEY.encode())
    stored = (tmp_path / "sessions.json").read_text()
    assert signed_in_again not in stored and KEY not in stored


def test_a_damaged_sessions_file_signs_everyone_out_and_nothing_more(tmp_path: Path) -> None:
    (tmp_path / "sessions.json").write_text("[1, 2]")
    sessions = PageSessions(tmp_path, Keys([KEY]))
    assert not sessions.signed_in("anything")
    assert sessions.form_token("a") != sessions.form_token("b")
