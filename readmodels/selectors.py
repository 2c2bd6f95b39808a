"""Queries: they read the read-model tables only, through the cache (readmodels.cache).

Reads are eventually consistent. A caller that must see its own write passes the version it
got back as ``min_version``: the read then waits (up to ``READ_YOUR_WRITES_WAIT_SECONDS``) for
the projection to reach it, and answers what it has after that.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.conf import settings

from eventlog.selectors import log_head
from readmodels import cache
from readmodels.models import CustomerCredit, OrderSummary, ProjectionCheckpoint
from readmodels.projections import ALIAS, PROJECTIONS, subscriber_name

ORDER_FIELDS = ("id", "customer_id", "customer_name", "total", "state", "rejection_reason", "mode", "saga_id", "version", "created_at", "updated_at")
CUSTOMER_FIELDS = (
    "id", "name", "credit_limit", "credit_reserved", "available_credit", "version", "updated_at",
    "orders_pending", "orders_approved", "orders_rejected", "orders_cancel_pending", "orders_cancelled",
)


def _order_row(order_id: uuid.UUID) -> dict[str, Any] | None:
    return OrderSummary.objects.using(ALIAS).filter(id=order_id).values(*ORDER_FIELDS).first()


def _customer_row(customer_id: uuid.UUID) -> dict[str, Any] | None:
    return CustomerCredit.objects.using(ALIAS).filter(id=customer_id).values(*CUSTOMER_FIELDS).first()


def _read(kind: str, key: uuid.UUID, load: Any, min_version: int | None) -> dict[str, Any] | None:
    row = cache.cached(kind, key, "row", lambda: load(key))
    if min_version is not None and (row is None or row["version"] < min_version):
        # Read-your-writes: wait for the projection, reading the table itself (not the cache).
        row = _wait_for_row(load, key, lambda r: r["version"] >= min_version)
    return row


def _wait_for_row(load: Callable[[uuid.UUID], dict[str, Any] | None], key: uuid.UUID, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """Wait (up to ``READ_YOUR_WRITES_WAIT_SECONDS``) for ``load(key)`` to give a row that
    satisfies ``until``; then answer what the table has."""

    def probe() -> dict[str, Any] | None:
        row = load(key)
        return row if row is not None and until(row) else None

    return cache.wait_for(probe, timeout=settings.READ_YOUR_WRITES_WAIT_SECONDS) or load(key)


def order_summary_read_ahead(order_id: str) -> AbstractContextManager[None]:
    """Around a request that will call :func:`order_summary_get`: its cache lookup then rides on
    the request's first round trip to the cache (readmodels.cache.read_ahead)."""
    try:
        key = uuid.UUID(order_id)
    except (TypeError, ValueError):
        return nullcontext()
    return cache.read_ahead("order", key, "row")


def order_summary_get(*, order_id: uuid.UUID, min_version: int | None = None) -> dict[str, Any] | None:
    return _read("order", order_id, _order_row, min_version)


def customer_credit_get(*, customer_id: uuid.UUID, min_version: int | None = None) -> dict[str, Any] | None:
    return _read("customer", customer_id, _customer_row, min_version)


def order_summary_list(*, customer_id: uuid.UUID | None, state: str | None, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """One page of orders, newest first, and the total count; cached per filter and page."""

    def load() -> tuple[int, list[dict[str, Any]]]:
        queryset = OrderSummary.objects.using(ALIAS).all()
        if customer_id is not None:
            queryset = queryset.filter(customer_id=customer_id)
        if state is not None:
            queryset = queryset.filter(state=state)
        rows = list(queryset.order_by("-created_at", "id").values(*ORDER_FIELDS)[offset : offset + limit])
        return queryset.count(), rows

    return cache.cached("orders", None, f"{customer_id}:{state}:{offset}:{limit}", load)


def projection_status() -> list[dict[str, Any]]:
    """Each projection's position and lag behind the head of the log (not cached)."""
    head = log_head()
    checkpoints = {c.subscriber: c for c in ProjectionCheckpoint.objects.using(ALIAS).all()}
    status = []
    for projection in PROJECTIONS.values():
        name = subscriber_name(projection)
        checkpoint = checkpoints.get(name)
        position = checkpoint.position if checkpoint else 0
        status.append(
            {
                "name": projection.name,
                "position": position,
                "head": head,
                "lag": max(head - position, 0),
                "updated_at": checkpoint.updated_at if checkpoint else None,
                "rebuilding": f"{name}#rebuild" in checkpoints,
            }
        )
    return status

