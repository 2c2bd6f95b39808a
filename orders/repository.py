"""Persistence of the Order aggregate: its events and its current-state row."""

from __future__ import annotations

from django.utils import timezone

from eventlog.domain import RecordedEvent
from eventlog.persistence import EventStore, Repository
from eventlog.sql import insert_rows, update_row
from orders import models
from orders.domain import Order

ALIAS = "orders"
store = EventStore(model=models.OrderEvent, alias=ALIAS, source="orders")


class OrderRepository(Repository[Order]):
    aggregate_class = Order

    def write_state(self, aggregate: Order, recorded: list[RecordedEvent]) -> None:
        now = timezone.now()
        fields = {
            "state": aggregate.state.value,
            "rejection_reason": aggregate.rejection_reason.value if aggregate.rejection_reason else None,
            "version": aggregate.version,
            "updated_at": now,
        }
        if recorded[0].version == 1:
            row = {
                "id": aggregate.id,
                "customer_id": aggregate.customer_id,
                "total": aggregate.total,
                "mode": aggregate.mode.value,
                "saga_id": recorded[0].saga_id,
                "created_at": now,
                **fields,
            }
            insert_rows(models.Order, ALIAS, [row])
        else:
            update_row(models.Order, ALIAS, aggregate.id, fields)


order_repository = OrderRepository(store)
