"""HTTP plumbing every context's API uses: strict input, money fields, pages, path parameters,
and the ``Idempotency-Key`` of a command.

It lives in the kernel so that a context's API needs nothing of the wiring (config): errors are
raised from ``eventlog.errors`` and rendered by the one handler in ``config.api``.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination

from eventlog.domain import InvalidAmount, money, positive_money
from eventlog.errors import ApplicationError

#: A UUID as the schema documents it (``format: uuid``): 8-4-4-4-12 hex digits, either case.
#: Python's ``uuid.UUID`` also takes braces, ``urn:uuid:`` and no hyphens; the API does not, so
#: what it accepts is exactly what its schema says.
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)


class StrictSerializer(serializers.Serializer):
    """A serializer that refuses fields it does not know, instead of silently dropping them
    (its schema says ``additionalProperties: false``), and UUIDs that are not UUID strings (DRF's
    UUIDField turns the JSON number 123 into a UUID, and takes forms the schema does not)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            errors = {name: ["Unknown field."] for name in sorted(set(data) - set(self.fields))}
            for name, field in self.fields.items():
                if isinstance(field, serializers.UUIDField) and data.get(name) is not None:
                    if not isinstance(data[name], str):
                        errors[name] = [f"Must be a UUID string, not a JSON {type(data[name]).__name__}."]
                    elif not CANONICAL_UUID.fullmatch(data[name]):
                        errors[name] = ["Must be a UUID such as 7a1d5a4e-8a33-4a4e-9d1c-2f5f0c1d7e10."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class TextField(serializers.CharField):
    """A JSON string, never a number turned into one (DRF's CharField takes ``5`` as ``"5"``)."""

    default_error_messages = {"type": "Must be a JSON string, not a JSON {kind}."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("type", kind=_json_kind(data))
        return str(super().to_internal_value(data))


def _json_kind(data: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", dict: "object", list: "array", type(None): "null"}.get(type(data), type(data).__name__)


#: Money as the API takes it: a decimal string, no sign, no leading zero, at most 12 digits
#: before the point and 2 after it (at most 999999999999.99, ``eventlog.domain.MONEY_MAX``).
#: The schema documents these patterns and the field refuses whatever does not match them, so
#: a client generated from the schema and the server agree on every string.
MONEY_PATTERN = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$"
#: The same, above zero: an integer part that is not 0, or 0 and a fraction that is not zero.
POSITIVE_MONEY_PATTERN = r"^([1-9][0-9]{0,11}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$"


@extend_schema_field({"type": "string", "pattern": MONEY_PATTERN, "example": "125.00", "description": "Decimal string, at most two places; answers always have two."})
class MoneyField(serializers.Field):
    """Money as a decimal string with at most two places (``"125.00"``), zero allowed; JSON
    numbers are refused, because a float cannot carry a price exactly."""

    pattern = re.compile(MONEY_PATTERN, re.ASCII)
    default_error_messages = {
        "type": 'Must be a decimal string such as "125.00", not a JSON {kind}.',
        "format": 'Must be a decimal string such as "125.00": digits without a sign or a leading zero, at most 12 before the point and 2 after it.',
        "negative": "amount must not be negative",
        "zero": "amount must be greater than zero",
    }

    def to_internal_value(self, data: Any) -> Decimal:
        if not isinstance(data, str):
            self.fail("type", kind=type(data).__name__.replace("NoneType", "null"))
        if not self.pattern.fullmatch(data):
            self.fail("negative" if data.strip().startswith("-") else "format")
        try:
            return money(data)
        except InvalidAmount as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value: Decimal) -> str:
        return f"{Decimal(value):.2f}"


@extend_schema_field({"type": "string", "pattern": POSITIVE_MONEY_PATTERN, "example": "125.00", "description": "Decimal string above zero, at most two places; answers always have two."})
class PositiveMoneyField(MoneyField):
    """Money above zero (an order's total)."""

    pattern = re.compile(POSITIVE_MONEY_PATTERN, re.ASCII)

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, str) and MoneyField.pattern.fullmatch(data) and not self.pattern.fullmatch(data):
            self.fail("zero")
        amount = super().to_internal_value(data)
        return positive_money(amount)


class Pagination(PageNumberPagination):
    """DRF's page-number pages, ``{count, next, previous, results}``, and their bounds, for the
    schema (drf-spectacular documents a list view's page shape from its ``pagination_class``)
    and for the views, which slice their pages themselves (the slice may come from a cache)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    max_page = 10**9

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": self.page_query_param, "required": False, "in": "query", "description": "A page number (1 is the first).",
             "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page, "default": 1}},
            {"name": self.page_size_query_param, "required": False, "in": "query", "description": f"Results per page, 1..{self.max_page_size}.",
             "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size, "default": self.page_size}},
        ]

    def bounds(self, request: Any) -> tuple[int, int]:
        """``(page, page_size)`` from the query, or a clear 400."""
        params = request.query_params
        page_size = parse_int(params.get(self.page_size_query_param), name=self.page_size_query_param, default=self.page_size, minimum=1, maximum=self.max_page_size)
        page = parse_int(params.get(self.page_query_param), name=self.page_query_param, default=1, minimum=1, maximum=self.max_page)
        return page, page_size


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


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (rendered by ``config.api.exception_handler``)."""

    message = serializers.CharField(help_text="What went wrong, for a person.")
    extra = serializers.DictField(help_text="Details a program can act on (``fields`` for validation errors).")


def error_responses(**described: str) -> dict[int, OpenApiResponse]:
    """The error answers of one operation, in the error shape: ``error_responses(e404="...")``."""
    return {int(code.removeprefix("e")): OpenApiResponse(ErrorSerializer, description=text) for code, text in described.items()}


def uuid_path(name: str, what: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.UUID, OpenApiParameter.PATH, description=f"The {what}'s id (a UUID; anything else is a 400).")


def int_query(name: str, *, minimum: int, maximum: int, default: int | None = None, description: str = "") -> OpenApiParameter:
    """A documented integer query parameter; ``parse_int`` with the same bounds reads it."""
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return OpenApiParameter(name, schema, OpenApiParameter.QUERY, description=description)


def parse_uuid(value: str, *, name: str) -> uuid.UUID:
    """A UUID from a path or query parameter, or a clear 400."""
    if not CANONICAL_UUID.fullmatch(str(value)):
        raise ApplicationError(f"{name} must be a UUID.", {"field": name, "value": str(value)[:100]})
    return uuid.UUID(str(value))


#: An integer as a query string carries it: ASCII digits, an optional minus sign (``int()``
#: would also take " 5", "+5", "1_000" and non-ASCII digits).
_INTEGER = re.compile(r"-?[0-9]{1,30}", re.ASCII)


def parse_int(value: str | None, *, name: str, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter within its documented bounds; absent means ``default``; an
    empty value is not an integer (a 400, as for any other string)."""
    if value is None:
        return default
    if not _INTEGER.fullmatch(str(value)):
        raise ApplicationError(f"{name} must be an integer.", {"field": name})
    number = int(str(value))
    if not minimum <= number <= maximum:
        raise ApplicationError(f"{name} must be between {minimum} and {maximum}.", {"field": name})
    return number


def parse_choice(value: str | None, *, name: str, choices: Any) -> str | None:
    """An enum query parameter: absent means no filter; anything outside the enum (the empty
    string too) is a 400."""
    if value is None:
        return None
    if value not in choices:
        raise ApplicationError(f"{name} must be one of " + ", ".join(choices) + ".", {"field": name})
    return str(value)


IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's ``Idempotency-Key``: a repeat of the same request gets the first answer.

    The record of the first answer belongs in the transaction of the command it answers (the
    service that runs the command stores it), so a crash cannot keep one without the other.
    """

    user_id: int
    key: str
    #: The request the key was first used with: the same key with another request is refused.
    fingerprint: str


def idempotency_key(request: Any) -> IdempotencyKey | None:
    """The request's ``Idempotency-Key``, or ``None`` when it sent none; a clear 400 if too long."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if not key:
        return None
    if len(key) > 200:
        raise ApplicationError(f"{IDEMPOTENCY_HEADER} must be at most 200 characters.")
    fingerprint = hashlib.sha256(json.dumps([request.path, request.data], sort_keys=True, default=str).encode()).hexdigest()
    return IdempotencyKey(user_id=int(request.user.pk), key=key, fingerprint=fingerprint)
