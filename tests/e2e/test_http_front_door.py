"""The HTTP front door against a running daemon, tried as an attacker would (issue #24).

The default setup (loopback, no keys) is what a newcomer runs, so most doors are tried
there: a page on another site sending what a browser sends (``fetch()`` with
``text/plain``, a cross-site form or multipart post, with ``Origin`` and
``Sec-Fetch-Site``), a rebinding page (a foreign ``Host``), and raw sockets announcing
bodies far over their cap and sending part of them. Each test also shows the legitimate
request beside the hostile one still passing. Sign-in, keys and proxies:
tests/e2e/test_http_sign_in.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.http_support import KEY, HttpDaemon, chunked, http_daemon, raw_request

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def open_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    """The newcomer's setup: loopback, no keys. Temporary files go where the test can see them."""
    tmp = tmp_path_factory.mktemp("front-door")
    (tmp / "tmp").mkdir()
    with http_daemon(
        tmp, env={"TMPDIR": str(tmp / "tmp")}, http={"api_keys": []}, providers={"echo": {"job_seconds": 60}}
    ) as running:
        yield running


def job_count(server: HttpDaemon) -> int:
    with server.client(key=None) as http:
        return len(http.get("/v1/jobs").json()["jobs"])


def job_body(server: HttpDaemon, name: str) -> bytes:
    note = server.roots / f"{name}.txt"
    note.write_text("words")
    request = {"provider": "echo", "inputs": [{"path": str(note)}], "output": {"dir": str(server.roots / name)}}
    (server.roots / name).mkdir(exist_ok=True)
    return json.dumps(request).encode()


# -- a rebinding page: a foreign Host -------------------------------------------------------


def test_a_rebound_name_reads_no_transcript_and_creates_no_job(open_door: HttpDaemon) -> None:
    port = open_door.url.rsplit(":", 1)[1]
    before = job_count(open_door)
    with open_door.client(key=None) as http:
        listing = http.get("/v1/jobs", headers={"Host": f"attacker.example:{port}"})
        page = http.get("/", headers={"Host": f"attacker.example:{port}"})
        created = http.post(
            "/v1/jobs",
            content=job_body(open_door, "rebound"),
            headers={"Host": f"attacker.example:{port}", "Content-Type": "application/json"},
        )
        own = http.get("/v1/jobs", headers={"Host": f"localhost:{port}"})
    assert (listing.status_code, page.status_code, created.status_code) == (421, 421, 421)
    assert "jobs" not in listing.json() and listing.json()["error"]["code"] == "unknown_host"
    assert job_count(open_door) == before
    assert own.status_code == 200  # this machine's own names still answer


# -- a page on another site ------------------------------------------------------------------


def test_a_foreign_pages_fetch_creates_no_job(open_door: HttpDaemon) -> None:
    """``fetch(url, {method: "POST", body, headers: {"Content-Type": "text/plain"}})`` needs no
    preflight, so the browser sends it; with and without the headers a browser adds."""
    before = job_count(open_door)
    body = job_body(open_door, "fetched")
    with open_door.client(key=None) as http:
        as_chromium = http.post(
            "/v1/jobs",
            content=body,
            headers={"Content-Type": "text/plain", "Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        )
        origin_only = http.post("/v1/jobs", content=body, headers={"Content-Type": "text/plain", "Origin": EVIL})
        fetch_site_only = http.post(
            "/v1/jobs", content=body, headers={"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}
        )
        simple_without_origin = http.post("/v1/jobs", content=body, headers={"Content-Type": "text/plain"})
    assert (as_chromium.status_code, origin_only.status_code, fetch_site_only.status_code) == (403, 403, 403)
    assert simple_without_origin.status_code == 415  # no "simple request" reaches a JSON route
    assert job_count(open_door) == before
    assert list((open_door.roots / "fetched").iterdir()) == []


def test_a_cross_site_multipart_post_to_the_openai_route_is_refused(open_door: HttpDaemon) -> None:
    before = job_count(open_door)
    with open_door.client(key=None) as http:
        answer = http.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.txt", b"words")},
            data={"model": "echo"},
            headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "cross_site"
    assert job_count(open_door) == before


@pytest.mark.parametrize(
    "origin", ["http://127.0.0.1:1", "http://localhost:3000", "null", "https://evil.example"], ids=str
)
def test_another_origin_even_on_this_machine_is_another_site(open_door: HttpDaemon, origin: str) -> None:
    with open_door.client(key=None) as http:
        answer = http.post(
            "/v1/jobs",
            content=job_body(open_door, "port"),
            headers={"Content-Type": "application/json", "Origin": origin},
        )
    assert answer.status_code == 403


def test_programs_and_the_sites_own_page_still_create_jobs(open_door: HttpDaemon) -> None:
    with open_door.client(key=None) as http:
        program = http.post(
            "/v1/jobs", content=job_body(open_door, "program"), headers={"Content-Type": "application/json"}
        )
        own_page = http.post(
            "/v1/jobs",
            content=job_body(open_door, "own"),
            headers={"Content-Type": "application/json", "Origin": open_door.url, "Sec-Fetch-Site": "same-origin"},
        )
    assert (program.status_code, own_page.status_code) == (202, 202)


def test_curl_with_a_key_creates_a_job(tmp_path: Path) -> None:
    import subprocess

    with http_daemon(tmp_path) as server:
        request = job_body(server, "curl").decode()
        result = subprocess.run(
            ["curl", "-s", "-H", f"Authorization: Bearer {KEY}", f"{server.url}/v1/jobs", "--json", request],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    assert json.loads(result.stdout)["state"] == "accepted"


# -- bodies: checked before they are read ----------------------------------------------------


def test_a_form_announcing_a_giant_body_is_refused_at_once_and_the_connection_closed(open_door: HttpDaemon) -> None:
    head = (
        "POST /login HTTP/1.1\nHost: 127.0.0.1\nContent-Type: multipart/form-data; boundary=x\n"
        "Content-Length: 10000000000\n\n"
    )
    answer = raw_request(open_door, head, [b"--x\r\n" + b"a" * 1000])
    assert answer.status == 413 and answer.closed and answer.seconds < 5, answer
    assert list((open_door.state.parent / "tmp").iterdir()) == []


def test_a_chunked_form_body_is_cut_off_at_its_cap(open_door: HttpDaemon) -> None:
    head = "POST /login HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/x-www-form-urlencoded\nTransfer-Encoding: chunked\n\n"
    answer = raw_request(open_door, head, chunked(8192, 100 * 1024 * 1024))
    assert answer.status == 413 and answer.closed, answer
    assert answer.sent < 4 * 1024 * 1024  # stopped near 64 KiB, not after 100 MiB


def test_a_job_request_over_its_cap_is_refused_before_it_is_read(open_door: HttpDaemon) -> None:
    announced = raw_request(
        open_door,
        "POST /v1/jobs HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\nContent-Length: 50000000\n\n",
        [b"{" * 100],
    )
    streamed = raw_request(
        open_door,
        "POST /v1/jobs HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\nTransfer-Encoding: chunked\n\n",
        chunked(8192, 100 * 1024 * 1024),
    )
    assert (announced.status, announced.closed) == (413, True), announced
    assert (streamed.status, streamed.closed) == (413, True) and streamed.sent < 4 * 1024 * 1024, streamed


def test_a_page_form_with_a_file_is_refused_without_touching_the_disk(open_door: HttpDaemon) -> None:
    with open_door.client(key=None) as http:
        answer = http.post("/login", files={"key": ("big.bin", b"x" * 60_000)}, data={"csrf": "x"})
    assert answer.status_code == 400
    assert list((open_door.state.parent / "tmp").iterdir()) == []


# -- a body that breaks the multipart syntax half-way ---------------------------------------

BROKEN_FORMS = {
    # the opening boundary not followed by CRLF (what schemathesis found: a 500)
    "boundary-without-crlf": b'--xZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nab\r\n--x--\r\n',
    # a part header line without a colon
    "header-without-colon": b"--x\r\nContent-Disposition form-data\r\n\r\nab\r\n--x--\r\n",
    # bytes before the first boundary that are not the boundary
    "no-opening-boundary": b"--y\r\n\r\n--x--\r\n",
}


@pytest.mark.parametrize("route", ["/v1/audio/transcriptions", "/v1/audio/translations", "/asr", "/detect-language"])
@pytest.mark.parametrize("body", BROKEN_FORMS.values(), ids=BROKEN_FORMS.keys())
def test_a_broken_multipart_body_is_a_bad_request_and_leaves_nothing_spooled(
    open_door: HttpDaemon, route: str, body: bytes
) -> None:
    with open_door.client(key=None) as http:
        answer = http.post(route, content=body, headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert answer.status_code == 400, answer.text
        assert "multipart" in answer.text or "boundary" in answer.text, answer.text
        assert http.get("/healthz").status_code == 200
    spool = open_door.state / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []


@pytest.mark.parametrize("body", BROKEN_FORMS.values(), ids=BROKEN_FORMS.keys())
def test_a_broken_multipart_sign_in_form_is_a_bad_request(open_door: HttpDaemon, body: bytes) -> None:
    with open_door.client(key=None) as http:
        answer = http.post("/login", content=body, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert answer.status_code in (400, 403), answer.text
