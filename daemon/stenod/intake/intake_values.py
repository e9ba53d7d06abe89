"""What request intake takes and answers: a request as it arrived (:class:`Delivery`, or
an :class:`Upload`), its outcome (:class:`Accepted`, ``Rejected``, :class:`Retry`), and the
ports it is given (the provider runtimes, the checks that need the file system or the
network)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stenod.errors import Rejected
from stenod.journal import NewItem
from stenod.provider import Limits

__all__ = ["Accepted", "Delivery", "InputChecks", "Outcome", "ProviderLookup", "Retry", "Runtime", "Upload"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request as it arrived: the body and the envelope's fields that matter."""

    body: bytes
    message_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    content_encoding: str | None = None
    source: str = "amqp"


@dataclass(frozen=True, slots=True)
class Upload:
    """A file a client sent, already written whole to the spool (the HTTP adapter's job)."""

    name: str  # the client's name for it: outputs and events use it
    path: str
    size: int
    device: int
    inode: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Accepted:
    job_id: str
    created: bool
    urls: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str


Outcome = Accepted | Rejected | Retry


class Runtime(Protocol):
    """What intake needs of a configured provider."""

    limits: Limits
    provider: Any


ProviderLookup = Callable[[], tuple[Mapping[str, Runtime], Mapping[str, str]]]
"""The current provider runtimes and why others are unavailable (they change on SIGHUP reload)."""


class InputChecks(Protocol):
    """The checks that need the file system or the network (adapters implement them)."""

    async def paths(self, paths: Sequence[str], output_dir: str | None) -> tuple[list[NewItem], str | None]:
        """Items for path inputs and the real output folder; raises Rejected."""
        ...

    async def files(self, paths: Sequence[str]) -> list[NewItem]:
        """Items for files stenod itself recorded (a retry): regular, readable; raises Rejected."""
        ...

    async def url(self, raw: str) -> None:
        """Raises Rejected for a URL the policy refuses (scheme, private address, …)."""
        ...

    def name_of(self, url: str) -> str:
        """A safe file name for a URL input."""
        ...

    def close(self) -> None: ...
