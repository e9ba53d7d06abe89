"""Keys, the page's sessions, throttling and forwarded headers against a running daemon,
tried as an attacker would (issue #24): a stolen or replayed page cookie used as an
API key, a sign-in form posted without its token, a brute force of keys (Bearer and the
sign-in form) from one address, ``X-Forwarded-For`` sent from loopback to pass for a
keyless address, and the route list read without a key. Clients use their own loopback
source addresses (127.0.0.x), so each test's failures are counted apart.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.harness import ROOT, Daemon, wait_for, write_config
from tests.e2e.http_support import KEY, HttpDaemon, form_token, http_daemon, raw_request, sign_in, up

BAZARR = "127.0.0.2"
FAIL2BAN = ROOT / "config" / "fail2ban" / "stenod.conf"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    http = {"keyless_networks": [f"{BAZARR}/32"]}
    with http_daemon(tmp_path_factory.mktemp("sign-in"), http=http) as running:
        yield running


def client_from(server: HttpDaemon, source: str, **kwargs: object) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=server.url, transport=transport, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_an_upload_without_a_key_is_answered_at_once_and_the_connection_closed(keyed: HttpDaemon) -> None:
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\nHost: 127.0.0.1\n"
        "Content-Type: multipart/form-data; boundary=x\nContent-Length: 2000000000\n\n"
    )
    answer = raw_request(keyed, head, [b"--x\r\n" + b"\0" * 60_000] * 100)
    assert answer.status == 401 and answer.closed and answer.seconds < 5, answer  # the rest is never read


def test_the_page_cookie_is_a_session_and_no_api_key(keyed: HttpDaemon) -> None:
    with client_from(keyed, "127.0.0.10") as browser:
        assert sign_in(browser).status_code == 303
        cookies = dict(browser.cookies)
        page = browser.get("/system")
        api_with_cookie = browser.get("/v1/jobs")
        api_delete_with_cookie = browser.delete("/v1/jobs/01JXXXXXXXXXXXXXXXXXXXXXXX")
    assert page.status_code == 200
    assert KEY not in json.dumps(cookies)
    assert (api_with_cookie.status_code, api_delete_with_cookie.status_code) == (401, 401)


def test_the_sign_in_form_needs_the_token_its_page_carried(keyed: HttpDaemon) -> None:
    with client_from(keyed, "127.0.0.11") as attacker:
        without_token = attacker.post("/login", data={"key": KEY, "next": "/"})
    with client_from(keyed, "127.0.0.11") as other, client_from(keyed, "127.0.0.11") as victim:
        stolen = form_token(other.get("/login").text)  # a token of another session
        victim.get("/login")
        with_anothers_token = victim.post("/login", data={"key": KEY, "next": "/", "csrf": stolen})
    assert (without_token.status_code, with_anothers_token.status_code) == (403, 403)
    assert "stenod_session" not in with_anothers_token.headers.get("set-cookie", "")


def test_form_tokens_are_random_per_session_and_unknown_to_other_daemons(keyed: HttpDaemon, tmp_path: Path) -> None:
    with client_from(keyed, "127.0.0.12") as first, client_from(keyed, "127.0.0.12") as second:
        tokens = {form_token(first.get("/login").text), form_token(second.get("/login").text)}
    with http_daemon(tmp_path) as other, httpx.Client(base_url=other.url) as third:
        third.cookies.set("stenod_session", "same-session-value")
        first_daemon = httpx.Client(base_url=keyed.url, cookies={"stenod_session": "same-session-value"})
        tokens |= {form_token(third.get("/login").text), form_token(first_daemon.get("/login").text)}
        first_daemon.close()
    assert len(tokens) == 4  # a secret of each daemon's own, in its state directory
    assert (keyed.state / "page" / "secret").stat().st_mode & 0o077 == 0


def test_wrong_bearer_keys_are_throttled_growing_and_logged_for_fail2ban(keyed: HttpDaemon) -> None:
    source = "127.0.0.13"
    with client_from(keyed, source, headers={"Authorization": "Bearer wrong-key-0123456789"}) as attacker:
        first = [attacker.get("/v1/jobs").status_code for _ in range(6)]
        held = attacker.get("/v1/jobs")
        with client_from(keyed, source, headers={"Authorization": f"Bearer {KEY}"}) as right:
            right_while_held = right.get("/v1/jobs").status_code
        time.sleep(int(held.headers["Retry-After"]) + 0.2)
        again = attacker.get("/v1/jobs").status_code
        longer = attacker.get("/v1/jobs")
    with client_from(keyed, "127.0.0.14", headers={"Authorization": f"Bearer {KEY}"}) as neighbour:
        other_address = neighbour.get("/v1/jobs").status_code
    assert first == [401] * 6 and held.status_code == 429 and right_while_held == 429
    assert again == 401 and longer.status_code == 429
    assert int(longer.headers["Retry-After"]) > int(held.headers["Retry-After"])
    assert other_address == 200
    lines = [line for line in keyed.daemon.log_path.read_text().splitlines() if "http.auth_failed" in line]
    failregex = next(line for line in FAIL2BAN.read_text().splitlines() if line.startswith("failregex"))
    pattern = re.compile(failregex.split("=", 1)[1].strip().replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)"))
    banned = [m.group("host") for line in lines if (m := pattern.search(line))]
    assert banned.count(source) == 7  # each wrong key once; the held-back tries are not even read


def test_wrong_keys_on_the_sign_in_form_are_throttled(keyed: HttpDaemon) -> None:
    with client_from(keyed, "127.0.0.15") as attacker:
        answers = [sign_in(attacker, f"guess-{n:016d}") for n in range(7)]
    assert [a.status_code for a in answers[:6]] == [401] * 6
    assert answers[6].status_code == 429 and int(answers[6].headers["Retry-After"]) >= 1


def test_a_forwarded_for_header_from_loopback_opens_no_keyless_route(keyed: HttpDaemon) -> None:
    with client_from(keyed, "127.0.0.1") as spoofer:
        spoofed = spoofer.get("/status", headers={"X-Forwarded-For": BAZARR})
    with client_from(keyed, BAZARR) as bazarr:
        real = bazarr.get("/status")
    assert (spoofed.status_code, real.status_code) == (401, 200)


def test_behind_a_trusted_proxy_its_client_and_public_name_count(tmp_path: Path) -> None:
    http = {
        "keyless_networks": ["203.0.113.7/32"],
        "trusted_proxies": ["127.0.0.1/32"],
        "allowed_hosts": ["stenod.lan"],
    }
    with http_daemon(tmp_path, http=http) as server, client_from(server, "127.0.0.1") as proxy:
        named = proxy.get("/status", headers={"X-Forwarded-For": "203.0.113.7", "Host": "stenod.lan"})
        other = proxy.get("/status", headers={"X-Forwarded-For": "198.51.100.1", "Host": "stenod.lan"})
        posted = proxy.post(
            "/v1/jobs",
            json={"inputs": []},
            headers={"Host": "stenod.lan", "Origin": "https://stenod.lan", "Authorization": f"Bearer {KEY}"},
        )
    assert (named.status_code, other.status_code) == (200, 401)
    assert posted.status_code == 400  # past the front door (an empty request is the intake's to refuse)


def test_docs_and_the_openapi_document_need_a_key(keyed: HttpDaemon) -> None:
    with client_from(keyed, "127.0.0.16") as anonymous:
        docs, document = anonymous.get("/docs"), anonymous.get("/openapi.json")
    with client_from(keyed, "127.0.0.16", headers={"Authorization": f"Bearer {KEY}"}) as client:
        allowed = client.get("/openapi.json")
    assert (docs.status_code, document.status_code) == (401, 401)
    assert allowed.status_code == 200 and "/v1/jobs" in allowed.json()["paths"]


def test_a_short_key_is_refused_at_start(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "stenod.toml", top={"state_dir": tmp_path}, sections={"http": {"api_keys": ["short-key"]}}
    )
    result = subprocess.run(
        [sys.executable, "-m", "stenod", "config", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "at least 16" in result.stderr and "short-key" not in result.stderr


def test_with_no_config_the_page_and_the_apis_are_on_loopback_8000(clean_env: Path) -> None:
    tmp_path, url = clean_env, "http://127.0.0.1:8000"
    if up(url):
        pytest.fail("something else answers on 127.0.0.1:8000; stop it to run this test")
    daemon = Daemon(tmp_path / "none.toml", tmp_path / "daemon.log", cwd=tmp_path, args=[]).start()
    try:
        daemon.wait_ready(timeout=120)
        wait_for(lambda: up(url), "the HTTP server on 127.0.0.1:8000", timeout=30)
        page = httpx.get(f"{url}/", timeout=10)
        models = httpx.get(f"{url}/v1/models", timeout=10)
        listening = daemon.named("http.listening")
    finally:
        daemon.terminate(timeout=60)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert models.status_code == 200
    assert listening and listening[0]["url"] == "http://127.0.0.1:8000/"
