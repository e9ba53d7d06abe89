"""A job's output settings: built with their rules in one place, stored as the JSON object
older versions wrote, and read back from rows those versions left."""

from __future__ import annotations

from stenod.output_spec import DEFAULT_TRANSLATE_PROVIDER, OutputSpec


def test_a_plain_request_stores_the_keys_older_versions_wrote() -> None:
    spec = OutputSpec.build(dir="/out", formats=["json", "srt"], after="discard")
    assert spec.to_json() == {"dir": "/out", "formats": ["json", "srt"], "after": "discard"}


def test_no_formats_means_every_transcript_file() -> None:
    assert OutputSpec.build().formats == ("txt", "json", "srt", "vtt")


def test_chaining_adds_the_txt_the_translation_step_reads_and_the_default_translator() -> None:
    spec = OutputSpec.build(formats=["json"], then_translate_to=["fr", "de"])
    assert spec.to_json() == {
        "dir": None,
        "formats": ["json", "txt"],
        "after": "keep",
        "then_translate_to": ["fr", "de"],
        "translate_provider": DEFAULT_TRANSLATE_PROVIDER,
    }


def test_a_translator_without_a_chain_is_not_stored() -> None:
    assert "translate_provider" not in OutputSpec.build(translate_provider="echo").to_json()


def test_a_watch_rule_and_a_queue_request_keep_their_own_keys() -> None:
    folder = OutputSpec.build(after="move", root="/watch", then_translate_to=["fr"], translate_provider="echo")
    queued = OutputSpec.build(dir="/srv/out", resolved=True)
    assert folder.to_json()["root"] == "/watch"
    assert queued.to_json()["resolved"] is True
    assert OutputSpec.from_json(folder.to_json()) == folder
    assert OutputSpec.from_json(queued.to_json()) == queued


def test_rows_of_older_versions_read_back_with_the_defaults() -> None:
    assert OutputSpec.from_json({}) == OutputSpec()
    assert OutputSpec.from_json(None) == OutputSpec()
    older_folder_row = {
        "dir": None,
        "formats": ["txt"],
        "after": "keep",
        "root": "/watch",
        "then_translate_to": ["fr"],
        "translate_provider": None,  # a watch rule that named no translator
    }
    assert OutputSpec.from_json(older_folder_row).translate_provider == DEFAULT_TRANSLATE_PROVIDER
    assert OutputSpec.from_json({"dir": "/x", "formats": None}).formats == ("txt", "json", "srt", "vtt")
