"""A child process for libav's work on untrusted files: memory-capped, time-limited, and
replaced when it dies.

A file anyone could drop or upload is parsed and decoded by C code; a crash, a hang or a
file that decodes to far more than it weighs must cost a child, never the daemon. So
probing a container (the core's :class:`~stenod.adapters.folders.media_probe.MediaProbe`)
and a plugin's own decoding (transcoding, cutting into pieces) run here: in a ``spawn``
child (it inherits no thread, journal connection or socket of the daemon), whose address
space is capped (past it libav fails with an error, the host is not pushed into swap or
the OOM killer), with a deadline per call. The functions and their arguments must be
picklable (module-level functions, plain values, :class:`~stenod.provider.BatchItem`).
"""

from __future__ import annotations

import multiprocessing
import resource
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import pebble

from stenod.errors import PermanentError

__all__ = ["MediaChild", "MediaChildFailed"]

T = TypeVar("T")

DEFAULT_MEMORY_BYTES = 1 << 30  # a container's header or a streamed decode needs far less


class MediaChildFailed(PermanentError):
    """The child gave up on a file: it ran out of its memory or time, or died."""

    code = "decoding_failed"


def _limit_memory(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


class MediaChild:
    """Runs ``fn(*args)`` in one child process, started on first use and replaced when it
    dies (crash, memory, deadline). Blocking: call from a worker thread
    (``asyncio.to_thread``), never on the event loop. Calls from several threads queue.
    """

    def __init__(self, *, memory_bytes: int = DEFAULT_MEMORY_BYTES, timeout_seconds: float = 15.0) -> None:
        self._memory = memory_bytes
        self._timeout = timeout_seconds
        self._pool: pebble.ProcessPool | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., T], *args: Any, label: str, timeout_seconds: float | None = None) -> T:
        """``fn(*args)``'s result, or the exception ``fn`` raised (a PermanentError a plugin
        raises there arrives whole: code and hint). Raises :class:`MediaChildFailed` naming
        ``label`` (the file) when the child ran out of memory or time, or died."""
        timeout = self._timeout if timeout_seconds is None else timeout_seconds
        with self._lock:
            if self._pool is None:
                self._pool = pebble.ProcessPool(
                    max_workers=1,
                    initializer=_limit_memory,
                    initargs=(self._memory,),
                    context=multiprocessing.get_context("spawn"),
                )
            pool = self._pool
        try:
            return pool.schedule(fn, args=args, timeout=timeout).result()
        except MemoryError as exc:
            raise MediaChildFailed(
                f"{label} needed more than {self._memory >> 20} MiB to decode; it was given up",
                hint="The file may be damaged or crafted; convert it to a plain format and send it again.",
            ) from exc
        except FutureTimeout as exc:
            raise MediaChildFailed(
                f"{label} took longer than {timeout:.0f} s to decode; it was given up",
                hint="The file may be damaged or crafted; convert it to a plain format and send it again.",
            ) from exc
        except (pebble.ProcessExpired, BrokenProcessPool, RuntimeError) as exc:
            if isinstance(exc, BrokenProcessPool | RuntimeError):
                self.close()
            raise MediaChildFailed(f"decoding {label} ended its process ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        """Stop the child (the daemon is stopping, or the pool broke). Idempotent."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]
            pool.join(timeout=5)
