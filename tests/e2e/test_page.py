"""The web page in a real browser: Playwright driving Debian's Chromium (``/usr/bin/chromium``,
installed by tests/setup-system.sh; Playwright never downloads a browser here) against a
real daemon. Screenshots of each page go to ``test-artifacts/page/``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from support.harness import ROOT, wait_for
from support.speech import SENTENCES, synthesise_sentences
from tests.e2e.http_support import KEY, HttpDaemon, http_daemon

CHROMIUM = "/usr/bin/chromium"
# Chromium's own connections are refused on this closed network; these keep it quiet and fast.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = ROOT / "test-artifacts" / "page"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    tmp = tmp_path_factory.mktemp("page")
    inbox = tmp / "inbox"
    inbox.mkdir()
    with http_daemon(
        tmp,
        providers={"echo": {"job_seconds": 0.3}},
        watch=[{"path": inbox, "settle_seconds": 0.3}],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, server: HttpDaemon) -> Iterator[Page]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, key: str = KEY) -> None:
    page.goto("/login")
    page.fill("#key", key)
    page.click("main button[type=submit]")


def api_job(server: HttpDaemon, body: dict[str, object]) -> str:
    with server.client() as http:
        answer = http.post("/v1/jobs", json=body)
        answer.raise_for_status()
        return str(answer.json()["job_id"])


def test_without_a_key_the_page_is_the_sign_in_form(page: Page) -> None:
    page.goto("/system")
    expect(page).to_have_url(re.compile(r"/login\?next=/system$"))
    expect(page.locator("h1")).to_have_text("Sign in")
    shot(page, "login")


def test_signing_out_ends_the_session(page: Page) -> None:
    sign_in(page)
    expect(page.locator("nav")).to_be_visible()
    before = {c["name"]: c["value"] for c in page.context.cookies()}
    page.click("header form.logout button")
    expect(page).to_have_url(re.compile(r"/login"))
    with httpx.Client(base_url=page.url.split("/login")[0], cookies=before) as http:
        replayed = http.get("/system")  # the old cookie, kept by someone who copied it
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/login")


def test_a_wrong_key_is_refused(page: Page) -> None:
    sign_in(page, "not-the-key")
    expect(page.locator("[role=alert]")).to_contain_text("not one of stenod's keys")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))


def test_an_uploaded_recording_progresses_to_a_transcript_that_plays_where_clicked(
    page: Page, server: HttpDaemon, tmp_path: Path
) -> None:
    speech = synthesise_sentences(SENTENCES, tmp_path / "meeting.wav")
    sign_in(page)
    page.goto("/upload")
    shot(page, "upload")
    page.set_input_files("#file", str(speech))
    page.click("text=Start")
    expect(page).to_have_url(re.compile(r"/jobs/[0-9A-Z]+$"))
    # No reload: the page follows the job's events.
    expect(page.locator("#job-body .summary .badge").first).to_have_text("succeeded", timeout=180_000)
    shot(page, "job")
    page.click("text=Transcript")
    expect(page.locator(".segment").first).to_contain_text("pizza")
    shot(page, "transcript")
    third = page.locator(".segment").nth(2)
    start = float(third.get_attribute("data-start") or 0)
    expect(page.locator("#audio")).to_have_js_property("readyState", 4, timeout=10_000)
    third.locator("button.seek").click()
    current = page.eval_on_selector("#audio", "audio => audio.currentTime")
    assert abs(current - start) < 0.5 and start > 0
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    audio_url = page.eval_on_selector("#audio", "audio => audio.src")
    with httpx.Client(cookies=cookies) as http:
        partial = http.get(audio_url, headers={"Range": "bytes=100-199"})
    assert partial.status_code == 206 and len(partial.content) == 100  # the player can seek without it all
    page.fill("#search", "garden")
    assert page.locator(".segment:not(.hidden)").count() == 1
    expect(page.locator(".segment:not(.hidden) mark")).to_have_text("garden")


def test_the_job_list_updates_itself(page: Page, server: HttpDaemon) -> None:
    sign_in(page)
    page.goto("/")
    note = server.roots / "live.txt"
    note.write_text("live update")
    api_job(server, {"provider": "echo", "inputs": [{"path": str(note)}]})
    expect(page.locator("#job-rows")).to_contain_text("live.txt", timeout=15_000)
    shot(page, "jobs")


def test_a_running_job_is_cancelled_from_its_page(page: Page, tmp_path: Path) -> None:
    with http_daemon(tmp_path, providers={"echo": {"job_seconds": 120}}) as slow:
        note = slow.roots / "long.txt"
        note.write_text("a long job")
        job_id = api_job(slow, {"provider": "echo", "inputs": [{"path": str(note)}]})
        context = page.context.browser.new_context(base_url=slow.url)  # type: ignore[union-attr]
        tab = context.new_page()
        sign_in(tab)
        tab.goto(f"/jobs/{job_id}")
        tab.click("text=Cancel")
        expect(tab.locator("#job-body .summary .badge").first).to_have_text("cancelled", timeout=30_000)
        context.close()


def test_a_corrected_segment_and_a_named_speaker_reach_the_srt_and_revert_undoes_them(
    page: Page, server: HttpDaemon
) -> None:
    note = server.roots / "call.txt"
    note.write_text("hello there")
    job_id = api_job(server, {"provider": "echo", "inputs": [{"path": str(note)}]})
    server.finished(job_id)
    srt = server.roots / "call.srt"
    original = srt.read_text()
    sign_in(page)
    page.goto(f"/jobs/{job_id}/items/0")
    first = page.locator(".segment").first
    engine_text = first.locator(".text").inner_text()
    first.locator("summary").click()
    first.locator("textarea").fill("Hello there, Asha speaking.")
    first.locator("text=Save").click()
    expect(page.locator(".segment").first).to_contain_text("Hello there, Asha speaking.")
    page.select_option("select[name=old]", "0")
    page.fill("input[name=new]", "Asha")
    page.click("form.rename button[type=submit]")
    expect(page.locator(".segment .speaker").first).to_have_text("Asha")
    shot(page, "transcript-corrected")
    corrected = srt.read_text()
    assert "Asha: Hello there, Asha speaking." in corrected and "Speaker 1:" in corrected
    assert json.loads((server.roots / "call.json").read_text())["segments"][0]["speaker"] == "Asha"
    page.click("text=Revert to the engine's transcript")
    expect(page.locator(".segment .text").first).to_have_text(engine_text)
    assert srt.read_text() == original
    with server.client() as http:  # the journal still had the engine's version
        assert http.get(f"/v1/jobs/{job_id}").json()["items"][0]["transcript"]["segments"][0]["speaker"] == "0"


def test_a_jobs_outputs_download_from_its_page(page: Page, server: HttpDaemon) -> None:
    note = server.roots / "download.txt"
    note.write_text("fetch me")
    job_id = api_job(server, {"provider": "echo", "inputs": [{"path": str(note)}]})
    server.finished(job_id)
    sign_in(page)
    page.goto(f"/jobs/{job_id}")
    with page.expect_download() as download:
        page.locator("a[download]", has_text=".srt").first.click()
    assert "echo download.txt 8 bytes" in Path(download.value.path()).read_text()


def test_a_failed_file_shows_why_and_what_to_do(page: Page, server: HttpDaemon) -> None:
    inbox = server.state.parent / "inbox"
    (inbox / "broken.wav").write_bytes(b"\x00not audio at all" * 500)
    wait_for(lambda: (inbox / "broken.error.json").exists(), "the error file", timeout=60)
    with server.client() as http:
        [job] = [j for j in http.get("/v1/jobs").json()["jobs"] if j["items"][0]["input"].endswith("broken.wav")]
    sign_in(page)
    page.goto(f"/jobs/{job['job_id']}")
    problem = page.locator(".item-error")
    expect(problem).to_contain_text("not_audio")
    expect(problem).to_contain_text("What to do:")
    shot(page, "job-failed")


def test_a_retry_is_a_new_job_linked_to_the_old_one(page: Page, server: HttpDaemon) -> None:
    note = server.roots / "again.txt"
    note.write_text("once more")
    job_id = api_job(server, {"provider": "echo", "inputs": [{"path": str(note)}]})
    server.finished(job_id)
    sign_in(page)
    page.goto(f"/jobs/{job_id}")
    page.click("text=Retry")
    expect(page.locator("h1 code")).not_to_have_text(job_id)
    expect(page.locator(".summary")).to_contain_text(job_id)  # "Retry of <old job>"


def test_names_and_text_with_markup_are_shown_as_text(page: Page, server: HttpDaemon) -> None:
    hostile = server.roots / "<img src=x onerror=alert(1)>.txt"
    hostile.write_text("<script>window.pwned = 1</script>")
    job_id = api_job(server, {"provider": "echo", "inputs": [{"path": str(hostile)}]})
    server.finished(job_id)
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    sign_in(page)
    page.goto("/")
    page.goto(f"/jobs/{job_id}")
    page.goto(f"/jobs/{job_id}/items/0")
    expect(page.locator(".segment .text").first).to_contain_text("<img src=x onerror=alert(1)>.txt")
    expect(page.locator(".segment .text").nth(1)).to_have_text("second & <last>")
    assert page.evaluate("window.pwned") is None and not dialogs
    assert page.locator("main img, main b, main script").count() == 0
    shot(page, "escaping")


def test_the_status_page_tells_providers_folders_and_figures(page: Page, server: HttpDaemon) -> None:
    sign_in(page)
    page.goto("/system")
    main = page.locator("main")
    expect(main).to_contain_text("whisper")
    expect(main).to_contain_text("inbox")
    expect(main).to_contain_text("files transcribed or translated")
    shot(page, "status")


def test_a_form_from_another_site_is_refused(page: Page, server: HttpDaemon) -> None:
    note = server.roots / "csrf.txt"
    note.write_text("keep me")
    job_id = api_job(server, {"provider": "echo", "inputs": [{"path": str(note)}]})
    sign_in(page)
    expect(page.locator("nav")).to_be_visible()
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert KEY not in cookies.values()  # the cookie is a session, not the key
    with httpx.Client(base_url=server.url, cookies=cookies) as http:
        forged = http.post(
            f"/jobs/{job_id}/cancel", data={"csrf": "guessed"}, headers={"Origin": "http://evil.example"}
        )
        guessed = http.post(f"/jobs/{job_id}/cancel", data={"csrf": "guessed"})
    assert (forged.status_code, guessed.status_code) == (403, 403)
    time.sleep(0.2)
    assert server.job(job_id)["state"] != "cancelled"


def test_speakers_in_colour_named_for_good_then_renamed_and_forgotten_in_the_speakers_view(
    page: Page, server: HttpDaemon
) -> None:
    audio = server.roots / "voices-pia-quinn-pia.wav"
    audio.write_bytes(b"RIFF a talk of two")
    job_id = api_job(server, {"provider": "echo", "diarize": True, "inputs": [{"path": str(audio)}]})
    server.finished(job_id)
    sign_in(page)
    page.goto(f"/jobs/{job_id}/items/0")
    labels = page.locator(".segment .speaker")
    expect(labels).to_have_text(["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"])
    first, second = labels.nth(0), labels.nth(1)
    assert first.get_attribute("class") == "speaker c0" and second.get_attribute("class") == "speaker c1"
    assert first.evaluate("e => getComputedStyle(e).color") != second.evaluate("e => getComputedStyle(e).color")
    page.select_option("select[name=old]", "SPEAKER_00")
    page.fill("form.rename input[name=new]", "Pia")
    expect(page.locator("input[name=remember]")).to_be_checked()
    page.click("form.rename button[type=submit]")
    expect(labels).to_have_text(["Pia", "SPEAKER_01", "Pia"])
    shot(page, "transcript-speakers")
    page.click("nav >> text=Speakers")
    expect(page.locator(".voices .name")).to_contain_text(["Pia"])
    shot(page, "speakers")
    row = page.locator(".voices tr", has_text="Pia")
    row.locator("input[name=new]").fill("Pia Q.")
    row.locator("text=Rename").click()
    expect(page.locator(".voices .name")).to_contain_text(["Pia Q."])
    page.locator(".voices tr", has_text="Pia Q.").locator("text=Forget").click()
    expect(page.locator(".voices")).to_have_count(0)
    with server.client() as http:
        assert http.get("/v1/speakers").json()["speakers"] == []


def test_a_speaker_named_for_this_recording_only_is_not_in_the_speakers_view(page: Page, server: HttpDaemon) -> None:
    audio = server.roots / "voices-rae-sol.wav"
    audio.write_bytes(b"RIFF another talk")
    job_id = api_job(server, {"provider": "echo", "diarize": True, "inputs": [{"path": str(audio)}]})
    server.finished(job_id)
    sign_in(page)
    page.goto(f"/jobs/{job_id}/items/0")
    page.select_option("select[name=old]", "SPEAKER_01")
    page.fill("form.rename input[name=new]", "Sol")
    page.uncheck("input[name=remember]")
    page.click("form.rename button[type=submit]")
    expect(page.locator(".segment .speaker")).to_have_text(["SPEAKER_00", "Sol"])
    page.goto("/speakers")
    expect(page.locator("main")).to_contain_text("No voice is remembered yet")
