"""Idempotent starts: a client's retry with the same ``Idempotency-Key`` gets the first answer.

The record of the first answer is written in the same transaction as the work it answers, in
the database of the context that does the work, so a crash cannot keep one without the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.utils import timezone

from eventlog.errors import Conflict
from eventlog.http import IDEMPOTENCY_HEADER, IdempotencyKey
from eventlog.models import IdempotencyRecord

T = TypeVar("T")


def idempotent_start(
    idempotency: IdempotencyKey | None,
    *,
    alias: str,
    records: type[IdempotencyRecord],
    start: Callable[[], T],
    body: Callable[[T], dict[str, Any]],
    replay: Callable[[dict[str, Any]], T],
    status_code: int = 202,
) -> T:
    """``start()`` once per key: a repeat answers ``replay(first body)``; the same key with
    another request is a 409 (the key is taken: a conflict with the first request, which a
    client can hit with a valid request, so not a 400); a concurrent first use that has not
    committed yet is a 409 too."""
    if idempotency is None:
        return start()
    manager = records.objects.using(alias)
    for _ in range(2):
        existing = manager.filter(user_id=idempotency.user_id, key=idempotency.key).first()
        if existing is not None:
            if existing.fingerprint != idempotency.fingerprint:
                raise Conflict(f"This {IDEMPOTENCY_HEADER} was used with a different request.", {"key": idempotency.key})
            return replay(existing.body)
        try:
            with transaction.atomic(using=alias):
                started = start()
                manager.create(user_id=idempotency.user_id, key=idempotency.key, fingerprint=idempotency.fingerprint, status_code=status_code, body=body(started), headers={}, created_at=timezone.now())
                return started
        except IntegrityError:
            continue  # a concurrent request with the same key won: answer with its record
    raise Conflict(f"A request with this {IDEMPOTENCY_HEADER} is in progress; try again.", {"key": idempotency.key})
