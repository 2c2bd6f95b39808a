"""Projections: fold events from the central log into the read-model tables.

Each projection handles a batch in memory (load the rows it touches, apply, write back in bulk)
inside the transaction that also moves its checkpoint, so a batch is applied exactly once.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db.models import Model

from eventlog.domain import RecordedEvent
from readmodels import models

ALIAS = "readmodels"

ORDER_STATE_AFTER = {
    "OrderCreated": "PENDING",
    "OrderApproved": "APPROVED",
    "OrderRejected": "REJECTED",
    "OrderCancelRequested": "CANCEL_PENDING",
    "OrderCancelled": "CANCELLED",
    "OrderCancelReverted": "APPROVED",
}
COUNTER_FOR_STATE = {
    "PENDING": "orders_pending",
    "APPROVED": "orders_approved",
    "REJECTED": "orders_rejected",
    "CANCEL_PENDING": "orders_cancel_pending",
    "CANCELLED": "orders_cancelled",
}


class _Rows:
    """Rows of one table touched by a batch: loaded once, changed in memory, written in bulk."""

    def __init__(self, model: type[Model], fields: list[str]) -> None:
        self.model = model
        self.fields = fields
        self.rows: dict[uuid.UUID, Any] = {}
        self.new: set[uuid.UUID] = set()

    def load(self, ids: set[uuid.UUID]) -> None:
        missing = ids - self.rows.keys()
        if missing:
            for row in self.model.objects.using(ALIAS).filter(pk__in=missing):
                self.rows[row.pk] = row

    def get(self, pk: uuid.UUID) -> Any | None:
        return self.rows.get(pk)

    def add(self, row: Any) -> None:
        self.rows[row.pk] = row
        self.new.add(row.pk)

    def flush(self) -> None:
        created = [row for pk, row in self.rows.items() if pk in self.new]
        changed = [row for pk, row in self.rows.items() if pk not in self.new]
        if created:
            self.model.objects.using(ALIAS).bulk_create(created, batch_size=500)
        if changed:
            self.model.objects.using(ALIAS).bulk_update(changed, self.fields, batch_size=500)


def order_summary_project(events: list[RecordedEvent]) -> None:
    orders = _Rows(models.OrderSummary, ["customer_name", "state", "rejection_reason", "version", "updated_at"])
    orders.load({e.stream_id for e in events if e.stream_type == "Order"})
    customer_ids = {uuid.UUID(e.data["customer_id"]) for e in events if e.type == "OrderCreated"}
    names = dict(models.CustomerCredit.objects.using(ALIAS).filter(id__in=customer_ids).values_list("id", "name"))
    names.update({e.stream_id: e.data["name"] for e in events if e.type == "CustomerCreated"})
    for event in events:
        if event.type == "CustomerCreated":
            continue
        if event.type == "OrderCreated":
            if orders.get(event.stream_id) is not None:
                continue
            customer_id = uuid.UUID(event.data["customer_id"])
            orders.add(
                models.OrderSummary(
                    id=event.stream_id,
                    customer_id=customer_id,
                    customer_name=names.get(customer_id),
                    total=Decimal(event.data["total"]),
                    state="PENDING",
                    rejection_reason=None,
                    mode=event.data["mode"],
                    saga_id=event.saga_id,
                    version=event.version,
                    created_at=event.occurred_at,
                    updated_at=event.occurred_at,
                )
            )
            continue
        order = orders.get(event.stream_id)
        if order is None or event.version <= order.version:
            continue
        order.state = ORDER_STATE_AFTER[event.type]
        if event.type == "OrderRejected":
            order.rejection_reason = event.data["reason"]
        order.version = event.version
        order.updated_at = event.occurred_at
    orders.flush()


ORDER_SUMMARY_TYPES = frozenset({"CustomerCreated", *ORDER_STATE_AFTER})


def customer_credit_project(events: list[RecordedEvent]) -> None:
    customers = _Rows(models.CustomerCredit, ["credit_reserved", "available_credit", "version", "updated_at", *COUNTER_FOR_STATE.values()])
    order_states = _Rows(models.CustomerOrderState, ["state"])
    order_states.load({e.stream_id for e in events if e.stream_type == "Order"})
    customer_ids = {e.stream_id for e in events if e.stream_type == "Customer"}
    customer_ids |= {uuid.UUID(e.data["customer_id"]) for e in events if e.type == "OrderCreated"}
    customer_ids |= {row.customer_id for row in order_states.rows.values()}
    customers.load(customer_ids)

    def count(customer_id: uuid.UUID, state: str, delta: int) -> None:
        customer = customers.get(customer_id)
        if customer is not None:
            field = COUNTER_FOR_STATE[state]
            setattr(customer, field, getattr(customer, field) + delta)

    for event in events:
        if event.stream_type == "Customer":
            customer = customers.get(event.stream_id)
            if event.type == "CustomerCreated":
                if customer is None:
                    limit = Decimal(event.data["credit_limit"])
                    customers.add(models.CustomerCredit(id=event.stream_id, name=event.data["name"], credit_limit=limit, credit_reserved=Decimal("0.00"), available_credit=limit, version=event.version, updated_at=event.occurred_at))
                continue
            if customer is None or event.version <= customer.version:
                continue
            if event.type == "CreditReserved":
                customer.credit_reserved += Decimal(event.data["amount"])
            elif event.type == "CreditReleased":
                customer.credit_reserved -= Decimal(event.data["amount"])
            customer.available_credit = customer.credit_limit - customer.credit_reserved
            customer.version = event.version
            customer.updated_at = event.occurred_at
        elif event.type == "OrderCreated":
            if order_states.get(event.stream_id) is None:
                customer_id = uuid.UUID(event.data["customer_id"])
                order_states.add(models.CustomerOrderState(order_id=event.stream_id, customer_id=customer_id, state="PENDING"))
                count(customer_id, "PENDING", +1)
        elif event.type in ORDER_STATE_AFTER:
            order_state = order_states.get(event.stream_id)
            if order_state is None:
                continue
            new_state = ORDER_STATE_AFTER[event.type]
            count(order_state.customer_id, order_state.state, -1)
            count(order_state.customer_id, new_state, +1)
            order_state.state = new_state
    customers.flush()
    order_states.flush()


CUSTOMER_CREDIT_TYPES = frozenset({"CustomerCreated", "CreditReserved", "CreditReservationFailed", "CreditReleased", *ORDER_STATE_AFTER})
