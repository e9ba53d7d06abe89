"""libav looks at untrusted containers in a child process, never in the daemon: a file that
hangs it, or kills it, costs that child and answers "unknown"; the next file is probed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stenod.adapters.folders.media_probe import MediaProbe
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
