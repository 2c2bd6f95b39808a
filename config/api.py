"""HTTP API plumbing shared by every context: error rendering, strict input, money fields.

One exception handler renders every error as ``{"message": ..., "extra": {...}}``. Domain
errors map to 400 (a broken rule) or 409 (a state conflict); nothing else leaks a traceback.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.errors import ApplicationError
from eventlog.domain import ConcurrencyError, DomainError, InvalidAmount, money, positive_money
from orders.domain import InvalidOrderState

#: Domain errors that mean "the resource is not in a state for this" rather than "bad input".
CONFLICT_ERRORS: tuple[type[Exception], ...] = (InvalidOrderState, ConcurrencyError)


def error_body(message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"message": message, "extra": extra or {}}


def _raised_while_parsing(exc: BaseException) -> bool:
    """Whether ``exc`` came out of DRF's body parsing (``Request._parse``), not out of a view."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is Request._parse.__code__:
            return True
        tb = tb.tb_next
    return False


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RecursionError) and _raised_while_parsing(exc):
        # json refuses a body nested too deeply (e.g. 20,000 "[") with RecursionError, which
        # DRF's JSONParser does not turn into a ParseError: it is malformed input, not a 500.
        exc = exceptions.ParseError("JSON parse error - nested too deeply.")
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.message, exc.extra), status=exc.status)
    if isinstance(exc, CONFLICT_ERRORS):
        return Response(error_body(str(exc)), status=409)
    if isinstance(exc, DomainError):
        return Response(error_body(str(exc)), status=400)
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
        response.data = error_body("Request was throttled.", {"retry_after_seconds": exc.wait})
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


class StrictSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A serializer that refuses fields it does not know, instead of silently dropping them,
    and UUIDs that are not strings (DRF's UUIDField turns the JSON number 123 into a UUID)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            errors = {name: ["Unknown field."] for name in sorted(set(data) - set(self.fields))}
            for name, field in self.fields.items():
                if isinstance(field, serializers.UUIDField) and data.get(name) is not None and not isinstance(data[name], str):
                    errors[name] = [f"Must be a UUID string, not a JSON {type(data[name]).__name__}."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "pattern": r"^\d{1,12}\.\d{2}$", "example": "125.00", "description": "Decimal string, two places."})
class MoneyField(serializers.Field):  # type: ignore[type-arg]
    """Money as a decimal string with at most two places (``"125.00"``); JSON numbers are refused,
    because a float cannot carry a price exactly."""

    default_error_messages = {
        "type": 'Must be a decimal string such as "125.00", not a JSON {kind}.',
        "format": 'Must be a plain decimal string such as "125.00" (digits, at most one point).',
        "negative": "amount must not be negative",
    }
    #: Plain ASCII decimal notation only: Decimal() alone would also take "1e2", "1_000",
    #: "NaN", "Infinity" and non-ASCII digits such as "١٢٣".
    PLAIN_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)

    def __init__(self, *, positive: bool = True, **kwargs: Any) -> None:
        self.positive = positive
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Decimal:
        if not isinstance(data, str):
            self.fail("type", kind=type(data).__name__.replace("NoneType", "null"))
        text = data.strip()
        if not self.PLAIN_DECIMAL.fullmatch(text):
            self.fail("format")
        try:
            amount = positive_money(text) if self.positive else money(text)
        except InvalidAmount as exc:
            raise serializers.ValidationError(str(exc)) from None
        if amount.is_signed():  # "-0.00" passes "not below zero" but is no amount to store
            self.fail("negative")
        return amount

    def to_representation(self, value: Decimal) -> str:
        return f"{Decimal(value):.2f}"


def page_body(request: Any, *, count: int, page: int, page_size: int, results: Any) -> dict[str, Any]:
    """DRF's page-number shape ``{count, next, previous, results}`` over an already sliced page
    (the slice may come from a cache); the links keep every other query parameter."""

    def link(number: int) -> str:
        query = request.query_params.copy()
        query["page"] = str(number)
        return str(request.build_absolute_uri(f"{request.path}?{query.urlencode()}"))

    return {
        "count": count,
        "next": link(page + 1) if page * page_size < count else None,
        "previous": link(page - 1) if page > 1 else None,
        "results": results,
    }


def parse_uuid(value: str, *, name: str) -> uuid.UUID:
    """A UUID from a path or query parameter, or a clear 400."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ApplicationError(f"{name} must be a UUID.", {"field": name, "value": str(value)[:100]}) from None


def parse_int(value: str | None, *, name: str, default: int, minimum: int, maximum: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise ApplicationError(f"{name} must be an integer.", {"field": name}) from None
    if not minimum <= number <= maximum:
        raise ApplicationError(f"{name} must be between {minimum} and {maximum}.", {"field": name})
    return number
