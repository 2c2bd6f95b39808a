"""The one error hierarchy of the API: what a caller can act on, with its HTTP status.

Every context's API raises these (the kernel owns them, so no context imports the wiring);
``config.api.exception_handler`` renders them as ``{"message": ..., "extra": {...}}``. Domain
refusals are ``eventlog.domain.DomainError``s, which say themselves whether they are a conflict.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """An error the caller can act on; ``status`` is its HTTP status code."""

    status = 400

    def __init__(self, message: str, extra: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        #: Response headers the answer needs (``Retry-After`` on a 503).
        self.headers = headers or {}


class NotFound(ApplicationError):
    status = 404


class Conflict(ApplicationError):
    """The resource is in a state that does not allow the request (a semantic lock)."""

    status = 409


class PayloadTooLarge(ApplicationError):
    status = 413


class NotImplementedYet(ApplicationError):
    status = 501


class Unavailable(ApplicationError):
    """A database the request needs could not finish it now; the work is safe and will finish."""

    status = 503
