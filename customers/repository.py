"""Persistence of the Customer aggregate: its events and its current-state rows."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.utils import timezone

from customers import models
from customers.domain import CreditReleased, CreditReserved, Customer
from eventlog.domain import RecordedEvent
from eventlog.persistence import EventStore, Repository
from eventlog.sql import delete_rows, insert_rows, update_row

ALIAS = "customers"
store = EventStore(model=models.CustomerEvent, alias=ALIAS, source="customers")


class CustomerRepository(Repository[Customer]):
    aggregate_class = Customer

    def write_state(self, aggregate: Customer, recorded: list[RecordedEvent]) -> None:
        now = timezone.now()
        fields = {
            "name": aggregate.name,
            "credit_limit": aggregate.credit_limit,
            "credit_reserved": aggregate.credit_reserved,
            "version": aggregate.version,
            "updated_at": now,
        }
        if recorded[0].version == 1:
            insert_rows(models.Customer, ALIAS, [{"id": aggregate.id, "created_at": now, **fields}])
        else:
            update_row(models.Customer, ALIAS, aggregate.id, fields)
        reserved = [
            {"order_id": uuid.UUID(e.data["order_id"]), "customer_id": aggregate.id, "amount": Decimal(e.data["amount"]), "reserved_at": now}
            for e in recorded
            if e.type == CreditReserved.__name__
        ]
        insert_rows(models.CreditReservation, ALIAS, reserved)
        delete_rows(models.CreditReservation, ALIAS, "order_id", [uuid.UUID(e.data["order_id"]) for e in recorded if e.type == CreditReleased.__name__])


customer_repository = CustomerRepository(store)
