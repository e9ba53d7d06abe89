"""libav looks at untrusted containers in a child process, never in the daemon: a file that
hangs it, or kills it, costs that child and answers "unknown"; the next file is probed. The
same child (``MediaChild``) serves a plugin's own decoding: its errors arrive whole, and a
file that wants all memory fails that call, not the host."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stenod.adapters.folders.media_probe import MediaProbe
from stenod.provider import PermanentError
from stenod.provider.media_child import MediaChild, MediaChildFailed
from tests.audio_bombs import opus_silence


def test_a_container_that_hangs_libav_is_unknown_and_the_next_one_is_probed(tmp_path: Path) -> None:
    never_written = tmp_path / "stuck.opus"
    os.mkfifo(never_written)  # opening it blocks until a writer comes: libav hangs
    probe = MediaProbe(timeout_seconds=2.0)
    try:
        started = time.monotonic()
        assert probe.duration(never_written) is None
        assert time.monotonic() - started < 10
        assert probe.duration(opus_silence(tmp_path / "hour.opus", 3600)) == pytest.approx(3600, abs=0.1)
        assert probe.audio_format(opus_silence(tmp_path / "x", 1, declared=False)) == "webm"
    finally:
        probe.close()


def _refuse(label: str) -> None:
    raise PermanentError(f"{label} is too long", code="too_long", hint="Split it.")


def _allocate(size: int) -> int:
    return len(bytearray(size))


def test_a_plugins_decoding_child_passes_its_errors_whole_and_survives_a_file_that_wants_all_memory() -> None:
    child = MediaChild(memory_bytes=1 << 30, timeout_seconds=30.0)
    try:
        with pytest.raises(PermanentError) as refused:
            child.call(_refuse, "call.webm", label="call.webm")
        assert (refused.value.code, refused.value.hint, str(refused.value)) == (
            "too_long",
            "Split it.",
            "call.webm is too long",
        )
        with pytest.raises(MediaChildFailed, match=r"bomb\.opus needed more than 1024 MiB"):
            child.call(_allocate, 2 << 30, label="bomb.opus")
        assert child.call(_allocate, 1 << 20, label="next.wav") == 1 << 20
    finally:
        child.close()
