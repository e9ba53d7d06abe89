"""URL inputs are fetched without SSRF (reliability R16): real sockets on loopback aliases,
a local TLS server with a test CA, and listeners that count every connection."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stenod.adapters.downloads.url_downloader import UrlDownloader, name_from_url
from stenod.adapters.downloads.url_policy import DownloadFailed, UrlPolicy, UrlRefused

ALIAS = "127.0.0.2"  # a loopback alias standing in for "a public server" via allowed_networks
Routes: TypeAlias = dict[str, tuple[int, dict[str, str], bytes]]
"""A listener's answers: path -> (status, headers, body)."""
PUBLIC_ALIAS = UrlPolicy(allow_http=True, allowed_networks=(ipaddress.ip_network(f"{ALIAS}/32"),))


class Listener:
    """An HTTP server that records every connection and request it gets."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        routes: Routes | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.connections = 0
        self.requests: list[tuple[str, str | None]] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                listener.connections += 1
                super().setup()

            def do_GET(self) -> None:
                listener.requests.append((self.path, self.headers.get("Host")))
                status, headers, body = (routes or {}).get(self.path, (404, {}, b"missing"))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str, scheme: str = "http", host: str | None = None) -> str:
        return f"{scheme}://{host or self.host}:{self.port}{path}"


@contextmanager
def serving(listener: Listener) -> Iterator[Listener]:
    listener._thread.start()
    try:
        yield listener
    finally:
        listener.server.shutdown()
        listener.server.server_close()


def _fetcher(policy: UrlPolicy, *, max_bytes: int = 1_000_000, **kwargs: Any) -> UrlDownloader:
    return UrlDownloader(policy, max_bytes=max_bytes, timeout_seconds=10, **kwargs)


@pytest.fixture
def trap() -> Iterator[Listener]:
    """A listener on 127.0.0.1 that no policy-abiding fetch may ever reach."""
    with serving(Listener(routes={"/": (200, {}, b"canary")})) as listener:
        yield listener


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://[::1]:{port}/",
        "http://0x7f000001:{port}/",
        "http://2130706433:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://0.0.0.0:{port}/",
        "http://224.0.0.1/",
        "file:///etc/hostname",
        "ftp://example.org/a.mp3",
        "http://user:pw@example.org/a.mp3",
    ],
)
async def test_urls_pointing_at_this_machine_or_odd_schemes_are_refused_without_connecting(trap, tmp_path, url):
    fetcher = _fetcher(UrlPolicy(allow_http=True))
    try:
        with pytest.raises(UrlRefused):
            await fetcher.fetch(url.format(port=trap.port), tmp_path / "out.mp3")
    finally:
        await fetcher.aclose()
    assert trap.connections == 0 and not (tmp_path / "out.mp3").exists()


async def test_http_is_refused_unless_allowed(tmp_path):
    fetcher = _fetcher(UrlPolicy())
    try:
        with pytest.raises(UrlRefused, match="scheme 'http'"):
            await fetcher.fetch("http://example.org/a.mp3", tmp_path / "a.mp3")
    finally:
        await fetcher.aclose()


async def test_a_name_that_resolves_to_loopback_is_refused_without_connecting(trap, tmp_path):
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "127.0.0.1"]  # one bad answer is enough to refuse

    fetcher = _fetcher(UrlPolicy(allow_http=True), resolver=resolver)
    try:
        with pytest.raises(UrlRefused, match=r"127\.0\.0\.1"):
            await fetcher.fetch(f"http://rebind.test:{trap.port}/", tmp_path / "a.mp3")
    finally:
        await fetcher.aclose()
    assert trap.connections == 0


async def test_a_redirect_from_an_allowed_server_to_loopback_is_refused_at_the_hop(trap, tmp_path):
    bounce = Listener(ALIAS, routes={"/a.mp3": (302, {"Location": trap.url("/")}, b"")})
    with serving(bounce):
        fetcher = _fetcher(PUBLIC_ALIAS)
        try:
            with pytest.raises(UrlRefused, match=r"127\.0\.0\.1"):
                await fetcher.fetch(bounce.url("/a.mp3"), tmp_path / "a.mp3")
        finally:
            await fetcher.aclose()
    assert bounce.connections == 1 and trap.connections == 0


async def test_redirects_within_policy_are_followed_and_the_file_is_written(tmp_path):
    routes = {"/old": (301, {"Location": "/new.mp3"}, b""), "/new.mp3": (200, {}, b"ID3 audio bytes")}
    with serving(Listener(ALIAS, routes=routes)) as server:
        fetcher = _fetcher(PUBLIC_ALIAS)
        try:
            got = await fetcher.fetch(server.url("/old"), tmp_path / "dl" / "x.mp3")
        finally:
            await fetcher.aclose()
    assert got.path.read_bytes() == b"ID3 audio bytes" and got.size == 15
    assert [p for p, _ in server.requests] == ["/old", "/new.mp3"]


async def test_too_many_redirects_are_refused(tmp_path):
    with serving(Listener(ALIAS, routes={"/loop": (302, {"Location": "/loop"}, b"")})) as server:
        fetcher = _fetcher(PUBLIC_ALIAS)
        try:
            with pytest.raises(UrlRefused, match="redirects"):
                await fetcher.fetch(server.url("/loop"), tmp_path / "a.mp3")
        finally:
            await fetcher.aclose()


@pytest.mark.parametrize("headers", [{}, {"Content-Length": "999999999"}], ids=["streamed", "declared"])
async def test_a_body_over_the_size_cap_fails_and_leaves_no_file(tmp_path, headers):
    body = b"x" * 5000
    with serving(Listener(ALIAS, routes={"/big.wav": (200, headers, body)})) as server:
        fetcher = _fetcher(PUBLIC_ALIAS, max_bytes=1000)
        try:
            with pytest.raises(DownloadFailed) as info:
                await fetcher.fetch(server.url("/big.wav"), tmp_path / "big.wav")
        finally:
            await fetcher.aclose()
    assert info.value.code == "too_large" and not info.value.retryable
    assert list(tmp_path.iterdir()) == []


async def test_server_errors_are_retryable_and_client_errors_are_not(tmp_path):
    routes: Routes = {"/busy": (503, {}, b""), "/gone": (404, {}, b"")}
    with serving(Listener(ALIAS, routes=routes)) as server:
        fetcher = _fetcher(PUBLIC_ALIAS)
        try:
            with pytest.raises(DownloadFailed) as busy:
                await fetcher.fetch(server.url("/busy"), tmp_path / "a.wav")
            with pytest.raises(DownloadFailed) as gone:
                await fetcher.fetch(server.url("/gone"), tmp_path / "a.wav")
        finally:
            await fetcher.aclose()
    assert (busy.value.code, busy.value.retryable) == ("http_503", True)
    assert (gone.value.code, gone.value.retryable) == ("http_404", False)


def _tls_pair(tmp: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A test CA and a server certificate for ``name``: (server context, client context)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stenod test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "server.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


async def test_https_connects_to_the_checked_address_with_sni_and_host_set_to_the_name(tmp_path):
    server_tls, client_tls = _tls_pair(tmp_path, "media.test")
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return [ALIAS]

    with serving(Listener(ALIAS, routes={"/talk.mp3": (200, {}, b"tls audio")}, tls=server_tls)) as server:
        fetcher = _fetcher(
            UrlPolicy(allowed_networks=PUBLIC_ALIAS.allowed_networks), resolver=resolver, verify=client_tls
        )
        try:
            got = await fetcher.fetch(server.url("/talk.mp3", scheme="https", host="media.test"), tmp_path / "t.mp3")
        finally:
            await fetcher.aclose()
    assert got.path.read_bytes() == b"tls audio"
    assert resolved == ["media.test"]  # resolved once; the connection went to the checked address
    assert server.requests == [("/talk.mp3", f"media.test:{server.port}")]


def test_file_names_for_url_inputs_cannot_leave_their_folder():
    assert name_from_url("https://example.org/a/b/Call%20one.MP3?sig=x") == "Call one.mp3"
    assert name_from_url("https://example.org/%2e%2e%2f%2e%2e%2fetc%2fpasswd") == "passwd"
    assert name_from_url("https://example.org/") == "download"
