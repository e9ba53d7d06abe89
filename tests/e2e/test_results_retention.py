"""Results nobody fetched (issue #24, item 9), against a running daemon: the outputs of an
upload are there to fetch for ``[http] keep_results_days``, then removed with the upload and
the job's rows, reported in the log and the metrics, and the job answers 410 saying why.
Outputs written beside a client's own file (a path input) are the client's: they stay."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from support.harness import wait_for
from tests.e2e.http_support import HttpDaemon, http_daemon
from tests.journal_rows import rows

KEEP_DAYS = 6 / 86400  # six seconds


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    http = {"keep_results_days": KEEP_DAYS}
    with http_daemon(tmp_path_factory.mktemp("retention"), http=http, providers={"echo": {}}) as running:
        yield running


def test_an_uploads_results_are_fetched_in_time_then_removed_and_answer_410(server: HttpDaemon) -> None:
    (server.roots / "own.wav").write_bytes(b"the client's own file")
    with server.client() as http:
        upload = http.post(
            "/v1/jobs", files={"file": ("call.wav", b"spoken words")}, data={"request": '{"provider": "echo"}'}
        )
        path_job = http.post("/v1/jobs", json={"provider": "echo", "inputs": [{"path": str(server.roots / "own.wav")}]})
        job_id, own_id = upload.json()["job_id"], path_job.json()["job_id"]
        assert server.finished(job_id)["state"] == "succeeded" and server.finished(own_id)["state"] == "succeeded"
        fetched = http.get(f"/v1/jobs/{job_id}/outputs/txt")
        assert fetched.status_code == 200 and "call.wav" in fetched.text  # in time: the client gets it
        [folder] = list((server.state / "results").iterdir())

        wait_for(lambda: not folder.exists(), "the upload's results to be removed", timeout=30)
        gone = http.get(f"/v1/jobs/{job_id}")
        assert gone.status_code == 410 and "keep_results_days" in gone.json()["error"]["message"]
        assert http.get(f"/v1/jobs/{job_id}/outputs/txt").status_code == 410
        assert not rows(server.state, "SELECT id FROM jobs WHERE id = ?", (job_id,))
        assert not rows(server.state, "SELECT seq FROM job_events WHERE job_id = ?", (job_id,))
        assert server.daemon.named("results.removed")
        metrics = http.get("/metrics").text
        assert "stenod_results_removed_total 1.0" in metrics

        time.sleep(1)
        assert http.get(f"/v1/jobs/{own_id}").status_code == 200  # a path input's job is not an upload's
        assert (server.roots / "own.txt").exists()
