"""Azurite, the real Azure Storage emulator, for tests that need Blob Storage.

Not a fake: the emulator is Microsoft's own (npm package ``azurite``, installed into
``tests/node_modules`` by ``tests/setup-system.sh``). :class:`Azurite` starts
``azurite-blob`` on a free loopback port with a throw-away data directory, and hands
out containers with SAS URLs signed by the well-known development account key.

Use it as a context manager (a module- or session-scoped fixture)::

    with Azurite.start(tmp_dir) as azurite:
        sas_url = azurite.container_sas_url("docs")
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from support.server import free_port

ACCOUNT = "devstoreaccount1"
# Published in Microsoft's Azurite documentation; it only ever opens the local emulator.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_BIN = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "azurite-blob"


class AzuriteMissing(RuntimeError):
    """Azurite is not installed; run tests/setup-system.sh."""


class Azurite:
    """A running ``azurite-blob`` process and a client for its account."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, location: Path) -> None:
        self._process = process
        self.port = port
        self.location = location
        self.account_url = f"http://127.0.0.1:{port}/{ACCOUNT}"
        self.service = BlobServiceClient(
            self.account_url, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
        )

    @classmethod
    def start(cls, location: Path) -> Self:
        """Start the emulator storing its data under ``location``; waits until it listens.

        Raises AzuriteMissing when the npm package is not installed.
        """
        binary = os.environ.get("AZURITE_BLOB") or (str(_BIN) if _BIN.exists() else shutil.which("azurite-blob"))
        if not binary:
            raise AzuriteMissing(f"azurite-blob not found at {_BIN}; run tests/setup-system.sh")
        location.mkdir(parents=True, exist_ok=True)
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(location),
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                    raise RuntimeError(f"azurite-blob did not start: {stderr[-2000:]}") from None
                time.sleep(0.1)
        return cls(process, port, location)

    def container_sas_url(self, name: str, *, hours: float = 2, permission: str = "racwdl") -> str:
        """Create container ``name`` (if needed) and return a container SAS URL for it."""
        container = self.service.get_container_client(name)
        if not container.exists():
            container.create_container()
        sas = generate_container_sas(
            ACCOUNT,
            name,
            account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours),
        )
        return f"{self.account_url}/{name}?{sas}"

    def blob_names(self, container: str, prefix: str | None = None) -> list[str]:
        """Every blob in ``container`` (optionally under ``prefix``), sorted."""
        client = self.service.get_container_client(container)
        return sorted(b.name for b in client.list_blobs(name_starts_with=prefix))

    def read(self, container: str, name: str) -> bytes:
        return self.service.get_blob_client(container, name).download_blob().readall()

    def stop(self) -> None:
        self.service.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr:
            self._process.stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
