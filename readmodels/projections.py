"""Projections: fold events from the central log into the read-model tables.

Each projection handles a batch in memory (load the rows it touches, apply, write back in bulk)
inside the transaction that also moves its checkpoint, so a batch is applied exactly once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Model

from eventlog.domain import RecordedEvent
from readmodels import cache, models

ALIAS = "readmodels"


@dataclass(frozen=True)
class Target:
    """Where a projection writes: the live tables (and their cache), or a rebuild's shadows."""

    tables: dict[type[Model], type[Model]] = field(default_factory=dict)
    live: bool = True

    def table(self, model: type[Model]) -> type[Model]:
        return self.tables.get(model, model)


LIVE = Target()

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
        self.model = model  # live or shadow: the same columns
        self.fields = fields
        self.rows: dict[uuid.UUID, Any] = {}
        self.new: set[uuid.UUID] = set()
        self.dirty: set[uuid.UUID] = set()

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

    def flush(self) -> set[uuid.UUID]:
        """Write what changed; returns the primary keys written."""
        created = [row for pk, row in self.rows.items() if pk in self.new]
        changed = [row for pk, row in self.rows.items() if pk not in self.new and pk in self.dirty]
        if created:
            self.model.objects.using(ALIAS).bulk_create(created, batch_size=500)
        if changed:
            # One INSERT ... ON CONFLICT DO UPDATE per chunk: Django's bulk_update builds a
            # CASE WHEN per row and field and was 80% of a replay (bench/replay.py).
            pk_name = self.model._meta.pk.name  # type: ignore[union-attr]
            self.model.objects.using(ALIAS).bulk_create(changed, batch_size=500, update_conflicts=True, unique_fields=[pk_name], update_fields=self.fields)
        return {row.pk for row in created} | {row.pk for row in changed}

    def touch(self, row: Any) -> None:
        self.dirty.add(row.pk)


def order_summary_project(events: list[RecordedEvent], target: Target = LIVE) -> None:
    """One row per order. The customer's name comes from CustomerCreated events, remembered in
    the projection's own small name table, so this projection depends on no other."""
    orders = _Rows(target.table(models.OrderSummary), ["customer_name", "state", "rejection_reason", "version", "updated_at"])
    orders.load({e.stream_id for e in events if e.stream_type == "Order"})
    names_table = target.table(models.CustomerName)
    new_names = {e.stream_id: e.data["name"] for e in events if e.type == "CustomerCreated"}
    if new_names:
        names_table.objects.using(ALIAS).bulk_create([names_table(id=k, name=v) for k, v in new_names.items()], ignore_conflicts=True)
    customer_ids = {uuid.UUID(e.data["customer_id"]) for e in events if e.type == "OrderCreated"}
    names = dict(names_table.objects.using(ALIAS).filter(id__in=customer_ids - new_names.keys()).values_list("id", "name"))
    names.update(new_names)
    for event in events:
        if event.type == "CustomerCreated":
            continue
        if event.type == "OrderCreated":
            if orders.get(event.stream_id) is not None:
                continue
            customer_id = uuid.UUID(event.data["customer_id"])
            orders.add(
                orders.model(
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
        orders.touch(order)
    written = orders.flush()
    if target.live:
        cache.invalidate_on_commit("order", written)
        cache.invalidate_on_commit("orders", [None] if written else [])


ORDER_SUMMARY_TYPES = frozenset({"CustomerCreated", *ORDER_STATE_AFTER})


def customer_credit_project(events: list[RecordedEvent], target: Target = LIVE) -> None:
    """One row per customer: credit and counts of orders by state."""
    customers = _Rows(target.table(models.CustomerCredit), ["credit_reserved", "available_credit", "version", "updated_at", *COUNTER_FOR_STATE.values()])
    order_states = _Rows(target.table(models.CustomerOrderState), ["state"])
    order_states.load({e.stream_id for e in events if e.stream_type == "Order"})
    customer_ids = {e.stream_id for e in events if e.stream_type == "Customer"}
    customer_ids |= {uuid.UUID(e.data["customer_id"]) for e in events if e.type == "OrderCreated"}
    customer_ids |= {row.customer_id for row in order_states.rows.values()}
    customers.load(customer_ids)

    def count(customer_id: uuid.UUID, state: str, delta: int) -> None:
        customer = customers.get(customer_id)
        if customer is not None:
            counter = COUNTER_FOR_STATE[state]
            setattr(customer, counter, getattr(customer, counter) + delta)
            customers.touch(customer)

    for event in events:
        if event.stream_type == "Customer":
            customer = customers.get(event.stream_id)
            if event.type == "CustomerCreated":
                if customer is None:
                    limit = Decimal(event.data["credit_limit"])
                    customers.add(customers.model(id=event.stream_id, name=event.data["name"], credit_limit=limit, credit_reserved=Decimal("0.00"), available_credit=limit, version=event.version, updated_at=event.occurred_at))
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
            customers.touch(customer)
        elif event.type == "OrderCreated":
            if order_states.get(event.stream_id) is None:
                customer_id = uuid.UUID(event.data["customer_id"])
                order_states.add(order_states.model(order_id=event.stream_id, customer_id=customer_id, state="PENDING"))
                count(customer_id, "PENDING", +1)
        elif event.type in ORDER_STATE_AFTER:
            order_state = order_states.get(event.stream_id)
            if order_state is None:
                continue
            new_state = ORDER_STATE_AFTER[event.type]
            count(order_state.customer_id, order_state.state, -1)
            count(order_state.customer_id, new_state, +1)
            order_state.state = new_state
            order_states.touch(order_state)
    written = customers.flush()
    order_states.flush()
    if target.live:
        cache.invalidate_on_commit("customer", written)


CUSTOMER_CREDIT_TYPES = frozenset({"CustomerCreated", "CreditReserved", "CreditReservationFailed", "CreditReleased", *ORDER_STATE_AFTER})


@dataclass(frozen=True)
class Projection:
    """A projection: the subscriber name, the tables it owns, and how it folds events."""

    name: str
    tables: tuple[type[Model], ...]
    types: frozenset[str]
    project: Any  # Callable[[list[RecordedEvent], Target], None]


PROJECTIONS: dict[str, Projection] = {
    p.name: p
    for p in (
        Projection("order_summary", (models.OrderSummary, models.CustomerName), ORDER_SUMMARY_TYPES, order_summary_project),
        Projection("customer_credit", (models.CustomerCredit, models.CustomerOrderState), CUSTOMER_CREDIT_TYPES, customer_credit_project),
    )
}


def subscriber_name(projection: Projection) -> str:
    return f"readmodels.{projection.name}"
