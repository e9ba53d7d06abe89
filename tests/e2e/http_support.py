"""A daemon with its HTTP server on, for the HTTP front door's tests."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.harness import Daemon, running, wait_for, write_config
from support.server import free_port

KEY = "test-key-0123456789"


@dataclass
class HttpDaemon:
    daemon: Daemon
    url: str
    key: str
    state: Path
    roots: Path

    def client(self, *, key: str | None = KEY, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 120), **kwargs)

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as http:
            answer = http.get(f"/v1/jobs/{job_id}")
            answer.raise_for_status()
            return dict(answer.json())

    def finished(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        final = ("succeeded", "partial", "failed", "cancelled")
        return dict(wait_for(lambda: (j := self.job(job_id))["state"] in final and j, "the job to end", timeout))


def form_token(page: str) -> str:
    """The page's form token (every form of a session carries it, the sign-in form too)."""
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def sign_in(http: httpx.Client, key: str = KEY) -> httpx.Response:
    """Sign this client's session in on the page, as a person does (its cookie then holds the session)."""
    token = form_token(http.get("/login").text)
    return http.post("/login", data={"key": key, "next": "/", "csrf": token})


def http_config(
    tmp: Path,
    port: int,
    *,
    http: dict[str, Any] | None = None,
    providers: dict[str, dict[str, Any]] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    top: dict[str, Any] | None = None,
    watch: list[dict[str, Any]] | None = None,
) -> Path:
    roots = tmp / "roots"
    roots.mkdir(exist_ok=True)
    return write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json", **(top or {})},
        sections={
            "http": {"listen": f"127.0.0.1:{port}", "api_keys": [KEY], **(http or {})},
            "amqp": {"allowed_roots": [roots]},
            **(sections or {}),
        },
        watch=watch or [],
        providers={"whisper": {"workers": 1}, "echo": {}, **(providers or {})},
    )


def up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def http_daemon(tmp: Path, env: dict[str, str] | None = None, **config: Any) -> Iterator[HttpDaemon]:
    port = free_port()
    listen_host = str((config.get("http") or {}).get("listen", "")).rpartition(":")[0]
    if listen_host:
        config["http"]["listen"] = f"{listen_host}:{port}"
    cfg = http_config(tmp, port, **config)
    with running(cfg, tmp / "daemon.log", env=env) as daemon:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: up(url), "the HTTP server", timeout=30)
        yield HttpDaemon(daemon, url, KEY, tmp / "state", tmp / "roots")


@dataclass
class RawAnswer:
    status: int
    head: str
    sent: int  # body bytes the server took before it answered
    closed: bool  # the server closed the connection after answering
    seconds: float


def raw_request(server: HttpDaemon, head: str, chunks: Iterable[bytes] = ()) -> RawAnswer:
    """Send ``head`` on a raw socket, then ``chunks`` until the server answers; read the answer
    and whether the server then closes (within 10 s: its keep-alive is 30 s)."""
    port = int(server.url.rsplit(":", 1)[1])
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        data, closed = b"", False
        while not closed:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                part = b""
            except TimeoutError:
                break  # still open: the server waits for more
            data += part
            closed = not part
    text = data.decode("latin-1")
    match = re.match(r"HTTP/1\.1 (\d{3})", text)
    return RawAnswer(
        int(match.group(1)) if match else 0, text.split("\r\n\r\n")[0], sent, closed, time.monotonic() - started
    )


def chunked(size: int, total: int) -> Iterator[bytes]:
    """A chunked body of ``total`` bytes, ``size`` at a time (never all sent if the server stops it)."""
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + b"a" * size + b"\r\n"
        time.sleep(0.002)
    yield b"0\r\n\r\n"
