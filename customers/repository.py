"""Persistence of the Customer aggregate: its events and its current-state rows."""

from __future__ import annotations

from django.utils import timezone

from customers import models
from customers.domain import CreditReleased, CreditReserved, Customer
from eventlog.domain import RecordedEvent
from eventlog.persistence import EventStore, Repository

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
            models.Customer.objects.using(ALIAS).create(id=aggregate.id, created_at=now, **fields)
        else:
            models.Customer.objects.using(ALIAS).filter(id=aggregate.id).update(**fields)
        reservations = models.CreditReservation.objects.using(ALIAS)
        for event in recorded:
            if event.type == CreditReserved.__name__:
                reservations.create(order_id=event.data["order_id"], customer_id=aggregate.id, amount=event.data["amount"], reserved_at=now)
            elif event.type == CreditReleased.__name__:
                reservations.filter(order_id=event.data["order_id"]).delete()


customer_repository = CustomerRepository(store)
