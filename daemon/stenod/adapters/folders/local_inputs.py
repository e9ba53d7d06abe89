"""The checks of a request's inputs that touch the file system or the network: ``path``
inputs and output folders under ``allowed_roots``, ``url`` inputs against the URL policy.
Request intake (core) calls them through its ``InputChecks`` port.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from stenod.adapters.downloads.url_downloader import name_from_url
from stenod.adapters.downloads.url_policy import DownloadFailed, Resolver, UrlPolicy, UrlRefused, system_resolve
from stenod.adapters.folders.files import FileRefused, open_regular
from stenod.adapters.thread_lane import ThreadLane
from stenod.errors import Rejected
from stenod.journal import NewItem

__all__ = ["LocalInputs", "local_input"]

_DNS_TIMEOUT_SECONDS = 5.0


def local_input(raw: str, roots: Sequence[Path]) -> NewItem:
    """A path input as a journal item: absolute, under a root once symlinks are resolved, a
    regular singly-linked file that is not itself a symlink. Raises Rejected."""
    if not roots:
        raise Rejected("path_not_allowed", "path inputs are disabled (amqp.allowed_roots is empty)")
    if not os.path.isabs(raw):
        raise Rejected("path_not_allowed", f"{raw} is not an absolute path")
    real = Path(os.path.realpath(raw))
    if not any(real.is_relative_to(root) for root in roots):
        raise Rejected("path_not_allowed", f"{raw} is not under amqp.allowed_roots")
    return _regular(raw, real, link_too=True)


def recorded_input(raw: str) -> NewItem:
    """A file stenod recorded for an earlier job (a watched folder's, an upload), as it is now."""
    return _regular(raw, Path(raw), link_too=False)


def _regular(raw: str, real: Path, *, link_too: bool) -> NewItem:
    """``real`` as an item if it is a regular, singly-linked file (and ``raw`` is no symlink to it)."""
    try:
        if link_too and stat.S_ISLNK(os.lstat(raw).st_mode):
            raise FileRefused("symlink")
        fd, st = open_regular(real)
    except FileRefused as exc:
        raise Rejected("input_refused", f"{raw} is refused: {exc}") from None
    except FileNotFoundError:
        raise Rejected("input_missing", f"{raw} does not exist (any more)") from None
    except OSError as exc:
        raise Rejected("input_unreadable", f"{raw} cannot be read: {exc.strerror}") from None
    os.close(fd)
    return NewItem(input=raw, name=real.name, path=str(real), size=st.st_size, device=st.st_dev, inode=st.st_ino)


def _output_dir(raw: str | None, roots: Sequence[Path]) -> str | None:
    if raw is None:
        return None
    real = Path(os.path.realpath(raw)) if os.path.isabs(raw) else None
    if real is None or not any(real.is_relative_to(root) for root in roots):
        raise Rejected("output_not_allowed", f"output.dir {raw} is not an absolute folder under amqp.allowed_roots")
    return str(real)


class LocalInputs:
    """``InputChecks`` on this machine's file system and network."""

    def __init__(self, allowed_roots: Sequence[Path], policy: UrlPolicy, resolver: Resolver = system_resolve) -> None:
        # Resolved once: the roots are configuration, and realpath costs a stat per component.
        self._roots = [Path(os.path.realpath(root)) for root in allowed_roots]
        self._policy = policy
        self._resolver = resolver
        # File checks block (a network mount can hang), so they leave the loop; one lane
        # takes the checks of all requests that arrive together in one hand-off.
        self._lane: ThreadLane[None] = ThreadLane("intake-files")

    async def paths(self, paths: Sequence[str], output_dir: str | None) -> tuple[list[NewItem], str | None]:
        roots = self._roots
        return await self._lane.call(
            lambda _: ([local_input(raw, roots) for raw in paths], _output_dir(output_dir, roots))
        )

    async def files(self, paths: Sequence[str]) -> list[NewItem]:
        return await self._lane.call(lambda _: [recorded_input(raw) for raw in paths])

    async def url(self, raw: str) -> None:
        try:
            url = self._policy.check_syntax(raw)
            # A name that cannot be resolved now is accepted: the download resolves (and checks) again.
            async with asyncio.timeout(_DNS_TIMEOUT_SECONDS):
                await self._policy.resolve(url, self._resolver)
        except UrlRefused as exc:
            raise Rejected("url_not_allowed", exc.reason) from None
        except (DownloadFailed, TimeoutError):
            pass

    def name_of(self, url: str) -> str:
        return name_from_url(url)

    def close(self) -> None:
        self._lane.close()
