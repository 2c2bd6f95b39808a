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

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from eventlog.domain import InvalidAmount, money, positive_money
from eventlog.errors import ApplicationError


class StrictSerializer(serializers.Serializer):
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
class MoneyField(serializers.Field):
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
