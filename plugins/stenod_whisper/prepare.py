"""Get the engine ready before the daemon takes work: the model on disk, the device chosen.

Runs as a short-lived child process (:func:`main`, a JSON request on
stdin, one JSON answer on stdout) because deciding the device and fetching a named model
import CTranslate2 and the Hub client, some 50 MB the daemon itself should not carry.
The parent side is :func:`prepare`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stenod_whisper.model import ModelError, ModelInfo, assemble_bundled, folder_model, is_model_name

__all__ = ["Engine", "prepare"]


@dataclass(frozen=True, slots=True)
class Engine:
    """A model ready on disk and where it runs."""

    model: ModelInfo
    device: str  # "cpu" | "cuda"
    compute_type: str
    cuda_devices: int


def _device(device: str) -> tuple[str, int]:
    import ctranslate2

    count = int(ctranslate2.get_cuda_device_count())
    if device == "cuda" and count == 0:
        raise ModelError(
            "[providers.whisper] device = 'cuda', but CTranslate2 sees no CUDA device; install the NVIDIA "
            "driver and CUDA 12's cuBLAS (pip install nvidia-cublas-cu12; docs/offline-engine.md says how), or set "
            "device = 'auto'"
        )
    chosen = device if device != "auto" else ("cuda" if count else "cpu")
    return chosen, count


def _compute_type(compute_type: str, device: str) -> str:
    if compute_type != "auto":
        import ctranslate2

        supported = ctranslate2.get_supported_compute_types(device)
        if compute_type not in supported and compute_type != "default":
            raise ModelError(
                f"[providers.whisper] compute_type = {compute_type!r} is not supported on {device} "
                f"(supported here: {', '.join(sorted(supported))}; 'auto' picks one)"
            )
        return compute_type
    return "float16" if device == "cuda" else "int8"


def _hub_model(name: str, cache: Path) -> ModelInfo:
    from faster_whisper.utils import available_models, download_model

    if "/" not in name and name not in available_models():
        raise ModelError(
            f"[providers.whisper] model = {name!r} is not a model faster-whisper knows "
            f"(names: {', '.join(available_models())}; or a Hub id like 'Systran/faster-whisper-small', "
            "or a folder, or empty for the bundled base model)"
        )
    try:
        path = download_model(name, cache_dir=str(cache), local_files_only=True)
    except Exception:  # not cached yet: the Hub client raises its own tree of errors
        try:
            path = download_model(name, cache_dir=str(cache))
        except Exception as exc:
            raise ModelError(
                f"[providers.whisper] model = {name!r} is not in the model cache {cache} and could not be "
                f"downloaded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Start "
                "stenod once with a connection to huggingface.co, or copy a CTranslate2 model folder onto this "
                "machine and set model to its path, or leave model empty for the bundled base model"
            ) from exc
    return folder_model(Path(path), name=name, source="hub")


def resolve(request: dict[str, Any]) -> Engine:
    """Do the work in this process (the child's side, and directly in tests)."""
    model: str = request["model"]
    cache = Path(request["cache"])
    if not model:
        info = assemble_bundled(cache)
    elif is_model_name(model):
        info = _hub_model(model, cache)
    else:
        info = folder_model(Path(model))
    device, count = _device(request["device"])
    return Engine(info, device, _compute_type(request["compute_type"], device), count)


async def prepare(*, model: str, cache: Path, device: str, compute_type: str) -> Engine:
    """Run :func:`resolve` in a child process; raises ModelError with its message."""
    request = json.dumps({"model": model, "cache": str(cache), "device": device, "compute_type": compute_type})
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from stenod_whisper.prepare import main; main()",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate(request.encode())
    try:
        answer = json.loads(out)
    except ValueError:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise ModelError(
            f"the Whisper engine could not be prepared (exit status {child.returncode}): {' | '.join(tail)}"
        ) from None
    if "error" in answer:
        raise ModelError(answer["error"])
    return Engine(ModelInfo.from_json(answer["model"]), answer["device"], answer["compute_type"], answer["cuda"])


def main() -> None:
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # as in the workers: no device id, no usage reports
    request = json.loads(sys.stdin.read())
    try:
        engine = resolve(request)
    except ModelError as exc:
        answer: dict[str, Any] = {"error": str(exc)}
    else:
        answer = {
            "model": engine.model.to_json(),
            "device": engine.device,
            "compute_type": engine.compute_type,
            "cuda": engine.cuda_devices,
        }
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
