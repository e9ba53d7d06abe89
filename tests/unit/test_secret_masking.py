"""Secrets in every spelling stay out of ``stenod config``, log lines and error messages
(issue #24, item 6): a URL's password (also percent-encoded), ``?password=``,
``?sslpassword=``, conninfo ``password=``, and any key whose name says it is a secret."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from stenod import logging as stenod_logging
from stenod.errors import ErrorInfo
from stenod.masking import is_secret_name, mask_text

STENOD = [sys.executable, "-m", "stenod"]
SPELLINGS = [
    ("postgresql://stenod:PW-A1@db.lan:5432/stenod", "postgresql://stenod:**********@db.lan:5432/stenod"),
    ("postgresql://stenod:p%40PW-A2@db.lan/stenod", "postgresql://stenod:**********@db.lan/stenod"),
    ("postgresql://stenod:p@PW-A3@db.lan/stenod", "postgresql://stenod:**********@db.lan/stenod"),  # as printed
    ("postgresql://db.lan/stenod?user=s&password=PW-A4&sslmode=require", "password=**********&sslmode=require"),
    ("postgresql://db.lan/stenod?sslmode=verify-full&sslpassword=PW-A5", "sslpassword=**********"),
    ("host=db.lan user=stenod password='PW A6' dbname=stenod", "password=********** dbname=stenod"),
    ("amqps://guest:PW-A7@broker/?heartbeat=30", "amqps://guest:**********@broker/"),
    ("https://acct.blob.core.windows.net/c?sv=2024&sig=PW-A8%3D&se=2030", "sig=**********"),
    ('{"error": "bad", "access_token": "PW-A9"}', '"access_token": "**********"'),
    ("Authorization: Bearer PW-A10.x", "Bearer **********"),
]


@pytest.mark.parametrize(("text", "shown"), SPELLINGS, ids=[s[0][:28] for s in SPELLINGS])
def test_every_spelling_of_a_password_is_masked_in_text(text: str, shown: str) -> None:
    out = mask_text(text)
    assert "PW" not in out and shown in out


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_keys", True),
        ("sslpassword", True),
        ("client_secret", True),
        ("refresh-token", True),
        ("apiKey", True),
        ("container_sas_url", True),
        ("Authorization", True),
        ("keyless_networks", False),
        ("keep_results_days", False),
        ("max_audio_seconds", False),
        ("instance_id", False),
    ],
)
def test_a_name_is_secret_when_one_of_its_words_says_so(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_an_error_message_quoting_a_url_keeps_no_password() -> None:
    error = ErrorInfo("journal_unavailable", "cannot connect to postgresql://u:p%40PW-B1@db/x?sslpassword=PW-B2")
    assert "PW" not in error.message and "postgresql://u:**********@db/x" in error.message


def test_a_log_line_never_carries_a_registered_urls_password_in_any_spelling() -> None:
    stream = io.StringIO()
    stenod_logging.configure(fmt="json", level="debug", stream=stream)
    stenod_logging.REDACTOR.add_secrets(["postgresql://stenod:s%40PW-C1@db.lan/stenod?sslpassword=PW-C2"])
    log = structlog.get_logger("test")
    log.warning("journal.retry", reason="password for stenod is s@PW-C1", detail="sslpassword PW-C2 rejected")
    log.info("provider.call", client_secret="PW-C3", settings={"ssl_password": "PW-C4", "hotwords": "keep"})
    out = stream.getvalue()
    assert "PW" not in out and "keep" in out


def _config(tmp: Path) -> Path:
    (tmp / "in").mkdir()
    path = tmp / "stenod.toml"
    path.write_text(
        f"""state_dir = "{tmp / "state"}"
[amqp]
url = "amqp://guest:p%40PW-D1@localhost/?password=PW-D2"
[journal]
url = "postgresql://db.lan/stenod?sslpassword=PW-D3&password=PW-D4"
[http]
keyless_networks = ["192.168.1.20/32"]
[[watch]]
path = "{tmp / "in"}"
provider = "echo"
[providers.echo]
api_key = "PW-D5"
base_url = "https://u:PW-D6@fake.example/v1?token=PW-D7"
"""
    )
    return path


def test_stenod_config_masks_passwords_in_every_url_form_and_secret_named_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STENOD_")}
    done = subprocess.run(
        [*STENOD, "config", "--config", str(_config(tmp_path))], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "PW-" not in done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert shown["amqp"]["url"] == "amqp://guest:**********@localhost/?password=**********"
    assert shown["journal"]["url"] == "postgresql://db.lan/stenod?sslpassword=**********&password=**********"
    assert shown["http"]["keyless_networks"] == ["192.168.1.20/32"]  # a legitimate key, shown
