"""The API's one exception handler, and the body-size guard in front of every API request.

Every error is rendered as ``{"message": ..., "extra": {...}}``: an ``ApplicationError`` (the
hierarchy in ``eventlog.errors``) with its own status; a ``DomainError`` as 409 when it says it
is a state conflict (``conflict = True``) and 400 otherwise; a lost optimistic-concurrency race
as 409; a database unreachable (``eventlog.commands.TRANSIENT_ERRORS``) as 503 with
``Retry-After``. The handler knows no context: each domain error declares what it means.
Nothing else leaks a traceback. The input helpers every API uses live in ``eventlog.http``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from eventlog.commands import TRANSIENT_ERRORS
from eventlog.domain import ConcurrencyError, DomainError
from eventlog.errors import ApplicationError, Unavailable

#: What a client is told to wait before it tries again when a database is unreachable.
DATABASE_RETRY_AFTER_SECONDS = 2


def error_body(message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"message": message, "extra": extra or {}}


def _raised_while_parsing(exc: BaseException) -> bool:
    """Whether ``exc`` came out of DRF's body parsing (``Request._parse``), not out of a view."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is Request._parse.__code__:  # type: ignore[attr-defined]  # private in DRF, so not in its stubs
            return True
        tb = tb.tb_next
    return False


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RecursionError) and _raised_while_parsing(exc):
        # json refuses a body nested too deeply (e.g. 20,000 "[") with RecursionError, which
        # DRF's JSONParser does not turn into a ParseError: it is malformed input, not a 500.
        exc = exceptions.ParseError("JSON parse error - nested too deeply.")
    if isinstance(exc, TRANSIENT_ERRORS):
        # A database the request needs is unreachable (a failover, a restart: brief section 6).
        # Its transaction rolled back; the request may be sent again (with its Idempotency-Key).
        exc = Unavailable(
            "A database this request needs is unreachable right now; try again.",
            {"retry_after_seconds": DATABASE_RETRY_AFTER_SECONDS},
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.message, exc.extra), status=exc.status, headers=exc.headers)
    if isinstance(exc, DomainError):
        return Response(error_body(str(exc)), status=409 if exc.conflict else 400)
    if isinstance(exc, ConcurrencyError):  # the retries lost every race: the state moved on
        return Response(error_body(str(exc)), status=409)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("Validation failed.", {"fields": exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}})
    elif isinstance(exc, exceptions.Throttled):
        response.data = error_body("Request was throttled.", {"retry_after_seconds": exc.wait})  # type: ignore[attr-defined]  # set by Throttled.__init__, missing from drf-stubs
    elif isinstance(exc, exceptions.APIException):
        response.data = error_body(str(exc.detail), {"code": exc.get_codes() if isinstance(exc.get_codes(), str) else "error"})
    return response


class BodySizeLimitMiddleware:
    """Refuse API request bodies above ``API_MAX_BODY_BYTES`` with 413, before parsing them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return JsonResponse(error_body("Invalid Content-Length header."), status=400)
            if length > settings.API_MAX_BODY_BYTES:
                return JsonResponse(error_body("Request body too large.", {"max_bytes": settings.API_MAX_BODY_BYTES, "got_bytes": length}), status=413)
        return self.get_response(request)
