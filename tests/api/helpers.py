"""Helpers of the HTTP API tests: build and project histories, check the error shape."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from customers.models import Customer, CustomerEvent
from eventlog.models import LogEvent
from eventlog.relay import outbox_relay
from eventlog.subscriptions import subscriber_advance
from readmodels.projections import PROJECTIONS, subscriber_name


def relay() -> None:
    outbox_relay("customers")
    outbox_relay("orders")


def project() -> None:
    """Relay every outbox into the log, then bring every projection up to its head."""
    relay()
    for projection in PROJECTIONS.values():
        subscriber_advance(subscriber_name(projection))


def assert_error(response: Any, status: int) -> dict[str, Any]:
    """The one error shape: ``{"message": str, "extra": dict}``, as JSON, with ``status``."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"message", "extra"}, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    assert isinstance(body["extra"], dict), body
    return body


def counts() -> dict[str, int]:
    return {
        "customers": Customer.objects.using("customers").count(),
        "customer_events": CustomerEvent.objects.using("customers").count(),
        "log": LogEvent.objects.using("eventlog").count(),
    }


def all_counts() -> dict[str, int]:
    """Rows of every table of the write side: customers, orders, sagas and the central log."""
    from django.apps import apps

    return {
        model._meta.label: model._default_manager.using(app).count()
        for app in ("customers", "orders", "sagas", "eventlog")
        for model in apps.get_app_config(app).get_models()
    }


@contextmanager
def nothing_changes() -> Iterator[None]:
    """The block must leave the customers' rows, their outbox and the log exactly as they were."""
    before = counts()
    yield
    assert counts() == before


def is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def make_orders(
    customer_id: uuid.UUID,
    *,
    pending: int = 0,
    approved: int = 0,
    rejected: int = 0,
    cancel_pending: int = 0,
    cancelled: int = 0,
    total: str = "10.00",
    saga_id: uuid.UUID | None = None,
) -> dict[str, list[uuid.UUID]]:
    """Orders of one customer in each state, driven through the services as the sagas drive them."""
    from customers.services import credit_release, credit_reserve
    from eventlog.domain import MessageContext
    from orders.services import order_approve, order_cancel_confirm, order_cancel_request, order_create, order_reject

    made: dict[str, list[uuid.UUID]] = {"PENDING": [], "APPROVED": [], "REJECTED": [], "CANCEL_PENDING": [], "CANCELLED": []}

    def create() -> tuple[uuid.UUID, MessageContext]:
        context = MessageContext(saga_id=saga_id)
        order = order_create(customer_id=customer_id, total=total, mode="orchestration", context=context)
        return order.id, context

    def approve() -> tuple[uuid.UUID, MessageContext]:
        order_id, context = create()
        assert credit_reserve(customer_id=customer_id, order_id=order_id, amount=total, context=context).reserved
        order_approve(order_id=order_id, context=context)
        return order_id, context

    for _ in range(pending):
        made["PENDING"].append(create()[0])
    for _ in range(approved):
        made["APPROVED"].append(approve()[0])
    for _ in range(rejected):
        order_id, context = create()
        order_reject(order_id=order_id, reason="INSUFFICIENT_CREDIT", context=context)
        made["REJECTED"].append(order_id)
    for _ in range(cancel_pending):
        order_id, context = approve()
        order_cancel_request(order_id=order_id, context=context)
        made["CANCEL_PENDING"].append(order_id)
    for _ in range(cancelled):
        order_id, context = approve()
        order_cancel_request(order_id=order_id, context=context)
        credit_release(customer_id=customer_id, order_id=order_id, context=context)
        order_cancel_confirm(order_id=order_id, context=context)
        made["CANCELLED"].append(order_id)
    return made
