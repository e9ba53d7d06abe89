"""Fuzzing file contents: random bytes with audio extensions, files cut short at any byte,
bytes overwritten in valid recordings, zero-length files and very long silence.

Two places read a file's content: the probe of a container's duration and format
(``media_probe``, run by the daemon in a child process; it should still never crash or
hang), and the offline provider's worker processes (``whisper``). For every example:
the probe answers a duration or "unknown", the provider transcribes the file or fails it
with a known code naming it, the provider still works afterwards, and nothing is written
outside the folder of the inputs. ``stenod transcribe`` is run once over one of each.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stenod.provider import Batch, BatchItem, ItemResult, PermanentError, RetryableError, StartContext, Task
from stenod_whisper import WhisperOptions, WhisperProvider, WhisperSettings
from support.harness import STENOD
from support.speech import encode_pcm, synthesise
from tests.chaos.fuzzing import Tally, fuzz_settings, tree
from tests.fakes.context import MemoryStepContext

AUDIO_EXTENSIONS = ["wav", "mp3", "flac", "ogg", "opus", "m4a", "aac", "webm", "mp4"]
SEED_FORMATS = ["wav", "flac", "ogg", "mp3", "m4a", "opus", "webm"]
ENGINE_CODES = {"empty_file", "not_audio", "corrupt_audio", "no_audio_stream", "unsupported_codec", "input_unreadable"}
_PROBE_CHILD = """
import json, sys
from pathlib import Path
from stenod.adapters.folders.media_probe import probe_duration
for line in sys.stdin:
    print(json.dumps(probe_duration(Path(line.rstrip("\\n")))), flush=True)
"""


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A short spoken sentence in every format stenod's tests can write."""
    folder = tmp_path_factory.mktemp("seeds")
    return {fmt: synthesise("the quick brown fox", folder / f"seed.{fmt}").read_bytes() for fmt in SEED_FORMATS}


def contents(seeds: dict[str, bytes]) -> st.SearchStrategy[tuple[str, str, bytes]]:
    """(kind, extension, bytes) of a bad file."""
    fmt = st.sampled_from(SEED_FORMATS)
    random_bytes = st.tuples(st.just("random_bytes"), st.sampled_from(AUDIO_EXTENSIONS), st.binary(max_size=20_000))
    zero = st.tuples(st.just("zero_length"), st.sampled_from(AUDIO_EXTENSIONS), st.just(b""))
    truncated = fmt.flatmap(
        lambda f: st.integers(1, len(seeds[f]) - 1).map(lambda cut: ("truncated", f, seeds[f][:cut]))
    )

    def overwrite(f: str, spots: list[tuple[int, int]]) -> tuple[str, str, bytes]:
        data = bytearray(seeds[f])
        for at, value in spots:
            data[at % len(data)] = value
        return "corrupted", f, bytes(data)

    corrupted = fmt.flatmap(
        lambda f: st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=40).map(
            lambda spots: overwrite(f, spots)
        )
    )
    wrong_extension = st.tuples(fmt, st.sampled_from(AUDIO_EXTENSIONS)).map(
        lambda pair: ("wrong_extension", pair[1], seeds[pair[0]])
    )
    return st.one_of(random_bytes, zero, truncated, corrupted, wrong_extension)


class Prober:
    """``probe_duration`` in a child process: libav crashing on a file must show up as a
    failed test, not take the whole test run down."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def probe(self, path: Path) -> float | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the probe process died on {path} (exit {self.proc.wait()})"
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


def test_the_duration_probe_answers_for_any_content(seeds: dict[str, bytes], tmp_path: Path) -> None:
    tally = Tally("files/duration probe (in the daemon's process)")
    prober = Prober()
    counter = iter(range(10**9))

    @fuzz_settings(300)
    @given(contents(seeds))
    def check(case: tuple[str, str, bytes]) -> None:
        kind, ext, data = case
        path = tmp_path / f"probe-{next(counter)}.{ext}"
        path.write_bytes(data)
        duration = prober.probe(path)
        path.unlink()
        assert duration is None or (math.isfinite(duration) and duration >= 0), (kind, duration)
        tally.record(f"{kind}: {'unknown' if duration is None else 'a duration'}")

    try:
        check()
    finally:
        prober.close()
    tally.report()


class Whisper:
    """The offline provider with one worker process, driven directly."""

    def __init__(self, models: Path) -> None:
        self.runner = asyncio.Runner()
        self.provider = WhisperProvider(WhisperSettings(workers=1, model_dir=models))
        self.runner.run(self.provider.start(StartContext(state_dir=models.parent)))
        self.count = 0

    def transcribe(self, path: Path) -> ItemResult:
        """Raises PermanentError or RetryableError as submit does."""
        self.count += 1
        st_ = path.stat()
        item = BatchItem(f"i{self.count}", path, path.name, st_.st_size, device=st_.st_dev, inode=st_.st_ino)
        batch = Batch(f"b{self.count}", Task.TRANSCRIBE, (item,), "en", (), WhisperOptions())

        async def run() -> ItemResult:
            handle = await self.provider.submit(batch, MemoryStepContext())
            (result,) = await self.provider.fetch(handle)
            return result

        return self.runner.run(run())

    def close(self) -> None:
        self.runner.run(self.provider.aclose())
        self.runner.close()


@pytest.fixture(scope="module")
def whisper(whisper_models: Path) -> Iterator[Whisper]:
    engine = Whisper(whisper_models)
    yield engine
    engine.close()


def test_the_offline_provider_transcribes_or_fails_each_bad_file_clearly(
    seeds: dict[str, bytes], whisper: Whisper, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tally = Tally("files/offline provider (whisper workers)")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    before = tree(tmp_path.parent)
    counter = iter(range(10**9))

    @fuzz_settings(40, cap=400)
    @given(contents(seeds))
    def check(case: tuple[str, str, bytes]) -> None:
        kind, ext, data = case
        path = inputs / f"{kind}-{next(counter)}.{ext}"
        path.write_bytes(data)
        try:
            result = whisper.transcribe(path)
        except PermanentError as exc:
            assert exc.code in ENGINE_CODES, exc
            assert path.name in exc.message, exc.message  # the message names the file
            tally.record(f"{kind}: {exc.code}")
        except RetryableError as exc:  # a worker crashed or hung: contained, retried by the dispatcher
            tally.record(f"{kind}: {exc.code}")
        else:
            assert result.error is None and result.transcript is not None
            tally.record(f"{kind}: transcribed")
        finally:
            path.unlink()

    check()
    tally.report()
    good = tmp_path / "good.wav"
    good.write_bytes(seeds["wav"])
    assert "fox" in whisper.transcribe(good).transcript.text  # type: ignore[union-attr]  # still works
    after = {k: v for k, v in tree(tmp_path.parent).items() if not k.startswith(tmp_path.name + "/")}
    assert after == {k: v for k, v in before.items() if not k.startswith(tmp_path.name + "/")}


@pytest.mark.parametrize("fraction", [0.5, 0.6, 0.75, 0.9])
def test_a_recording_cut_off_in_mid_speech_is_transcribed_up_to_the_cut(
    seeds: dict[str, bytes], whisper: Whisper, tmp_path: Path, fraction: float
) -> None:
    """Found by the fuzzer: an Ogg file cut while the speaker is talking ended the stream
    in speech with no partial frame left, and the worker raised IndexError (an internal
    error for the job) instead of transcribing what was there."""
    path = tmp_path / "cut.ogg"
    path.write_bytes(seeds["ogg"][: int(len(seeds["ogg"]) * fraction)])
    try:
        result = whisper.transcribe(path)
    except PermanentError as exc:  # no whole audio packet before the cut: a clear refusal is right
        assert exc.code in ENGINE_CODES and path.name in exc.message
    else:
        assert result.error is None and result.transcript is not None


def test_ten_minutes_of_silence_gives_an_empty_transcript(whisper: Whisper, tmp_path: Path) -> None:
    silence = [b"\0\0" * 16_000] * 600
    path = encode_pcm(silence, tmp_path / "silence.flac", in_rate=16_000)
    result = whisper.transcribe(path)
    assert result.transcript is not None and result.transcript.text.strip() == ""
    assert result.transcript.duration == pytest.approx(600, abs=1)
    tally = Tally("files/very long silence (10 min)")
    tally.record("transcribed, empty text")
    tally.report()


def test_stenod_transcribe_fails_each_bad_file_with_an_error_file_beside_it(
    seeds: dict[str, bytes], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = {
        "zero.wav": b"",
        "noise.mp3": bytes(range(256)) * 40,
        "cut.ogg": seeds["ogg"][:300],
        "text.flac": b"these are not the samples you are looking for\n" * 50,
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / "good.wav").write_bytes(seeds["wav"])
    outside = tree(tmp_path)
    cwd = tmp_path / "cwd"  # with no config at all, stenod creates ./inbox
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STENOD_")}
    proc = subprocess.run(
        [
            *STENOD,
            "transcribe",
            *sorted(str(folder / n) for n in [*bad, "good.wav"]),
            "--provider",
            "whisper",
            "--format",
            "txt",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**env, "STENOD_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1, proc.stderr  # a job with failed files
    for name in bad:
        error = json.loads((folder / name).with_suffix(".error.json").read_text())
        assert error["error"]["code"] in ENGINE_CODES and error["input"].endswith(name)
    assert "fox" in (folder / "good.txt").read_text()
    written = set(tree(tmp_path)) - set(outside)
    expected = {f"in/{Path(n).stem}.error.json" for n in bad} | {"in/good.txt"}
    assert {w for w in written if not w.startswith(("state/", "cwd/"))} == expected
    tally = Tally("files/stenod transcribe (one of each)")
    for name in bad:
        tally.record(json.loads((folder / name).with_suffix(".error.json").read_text())["error"]["code"])
    tally.report()
