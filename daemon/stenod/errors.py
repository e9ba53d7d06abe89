"""The error taxonomy: every failure stenod knows how to handle has a class here.

::

    StenodError
    ├── JobError                 a job (or item) cannot proceed; the daemon carries on
    │   ├── RetryableError       may succeed later: timeout, network, 429, 5xx
    │   │                        carries retry_after: float | None
    │   └── PermanentError       will fail again: bad input, unsupported format, 4xx, limit
    │       └── AuthError        credentials rejected; a person must act
    ├── ConfigError              settings or plugin config invalid; startup stops, exit 2
    │   ├── SchemaTooNew         the journal was written by a newer stenod
    │   └── JournalInUse         another stenod runs under this instance id on this database
    ├── PluginError              a plugin failed to load or validate; reported, daemon continues
    ├── JournalError             the journal cannot be used; the daemon stops
    ├── LeaseLost                another instance holds the provider job now; nothing written
    ├── LeaseExpired             the lease may have run out before outputs were written
    ├── Rejected                 a request that can never succeed (dead-lettered, or a 4xx)
    ├── CorrectionError          a transcript correction that cannot be made
    ├── NameTaken                a speaker renamed onto a name with voiceprints of its own
    ├── NotSignedIn              the page needs a key: a redirect to the sign-in form
    ├── InvalidTransition        programming error in the state machine
    └── (at the edges)           adapters' own, translated where they are caught:
                                 UrlRefused, DownloadFailed (adapters/downloads),
                                 FileRefused (adapters/folders), ApiError, BodyTooLarge,
                                 UploadTooLarge, BadUpload (adapters/http)

In the journal and in events errors are data: :class:`ErrorInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stenod.masking import mask_text

__all__ = [
    "AuthError",
    "ConfigError",
    "CorrectionError",
    "ErrorInfo",
    "InvalidTransition",
    "JobError",
    "JournalError",
    "JournalInUse",
    "LeaseExpired",
    "LeaseLost",
    "NameTaken",
    "NotSignedIn",
    "PermanentError",
    "PluginError",
    "Rejected",
    "RetryableError",
    "SchemaTooNew",
    "StenodError",
]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as data: what went wrong and what a person can do about it."""

    code: str
    message: str
    retryable: bool = False
    hint: str | None = None

    def __post_init__(self) -> None:
        # Errors go to the journal, events, error files and pages: a URL a provider or a
        # driver quoted back must not carry its password there.
        object.__setattr__(self, "message", mask_text(self.message))
        if self.hint:
            object.__setattr__(self, "hint", mask_text(self.hint))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message, "retryable": self.retryable}
        if self.hint:
            data["hint"] = self.hint
        return data

    @property
    def what_to_do(self) -> str:
        """The hint, or what helps for any error of its kind (error files and the page say this)."""
        if self.hint:
            return self.hint
        if self.retryable:
            return "This looked temporary but kept failing; stenod gave up. Send or drop the file again to retry."
        return "Fix the cause above, then send the file again (or copy it into the folder again) to retry."

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(
            code=str(data.get("code", "error")),
            message=str(data.get("message", "")),
            retryable=bool(data.get("retryable", False)),
            hint=data.get("hint"),
        )


class StenodError(Exception):
    """Base of every error stenod raises on purpose."""


class JobError(StenodError):
    """A job or item cannot proceed; the daemon carries on."""

    code = "job_error"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, retryable=self.retryable, hint=self.hint)


class RetryableError(JobError):
    """May succeed later: timeout, network error, 429, 5xx."""

    code = "retryable"
    retryable = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, code: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.retry_after = retry_after


class PermanentError(JobError):
    """Will fail again: bad input, unsupported format, 4xx validation, over a limit."""

    code = "permanent"


class AuthError(PermanentError):
    """Credentials were rejected; a person must act."""

    code = "auth"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(
            message, code=code, hint=hint or "Check the provider's API key (config or credentials directory)."
        )


class ConfigError(StenodError):
    """Settings or plugin configuration are invalid; startup stops with exit code 2."""


class PluginError(StenodError):
    """A plugin failed to load or validate; it is reported and the daemon continues."""


class JournalInUse(ConfigError):
    """Another stenod runs under this instance id on this database (exit 2: a person must choose)."""


class JournalError(StenodError):
    """The journal cannot be used (corrupt, unwritable, its database gone): the daemon must stop."""


class SchemaTooNew(ConfigError):
    """The journal was written by a newer stenod: a person must choose (exit 2, no restart loop)."""


class LeaseLost(StenodError):
    """This instance no longer holds the provider job: its lease expired and another
    instance took it over. Nothing of the refused write was committed; the step stops
    without touching the job again (fencing)."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"the lease on provider job {batch_id} was lost to another instance")
        self.batch_id = batch_id


class LeaseExpired(StenodError):
    """A write outside the journal (an output file) was not made because the lease that
    allowed it may have run out meanwhile: the process was paused, or the writes took too
    long. Whether another instance has the job now, only the next renewal can tell."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"the lease on provider job {batch_id} may have run out before its outputs were written")
        self.batch_id = batch_id


class Rejected(StenodError):
    """A message that can never succeed: dead-lettered with ``code`` and ``reason``."""

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        request_id: str | None = None,
        task: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.request_id = request_id
        self.task = task
        self.provider = provider


class CorrectionError(StenodError):
    """The change cannot be made (no such item or segment, no transcript yet, bad text)."""


class NameTaken(StenodError):
    """A rename onto a name that has voiceprints of its own, without ``merge``."""


class NotSignedIn(StenodError):
    """The page needs a key: answered with a redirect to the sign-in form."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class InvalidTransition(StenodError):
    """A state change the state machine does not allow: a bug, not a job failure."""

    def __init__(self, current: object, target: object) -> None:
        super().__init__(f"invalid transition {current} -> {target}")
