"""Persistence of the Customer aggregate: its events and its current-state rows."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.utils import timezone

from customers import models
from customers.domain import CreditReleased, CreditReserved, Customer, CustomerCreated
from eventlog.domain import RecordedEvent
from eventlog.persistence import EventStore, Repository
from eventlog.sql import delete_rows, insert_rows, update_row

ALIAS = "customers"
store = EventStore(model=models.CustomerEvent, alias=ALIAS, source="customers")


class CustomerRepository(Repository[Customer]):
    aggregate_class = Customer

    def get_for_order(self, customer_id: uuid.UUID, order_id: uuid.UUID) -> Customer | None:
        """The customer as a command about one order needs it, from the state rows.

        A customer's stream grows with every order, so folding it on each command costs more
        and more. The state row is written in the same transaction as the events (``verify``
        checks it equals their fold), so it is an always-current snapshot. It is read
        ``FOR UPDATE``: commands on one customer queue up instead of failing on the version
        guard and retrying. Only the reservation of ``order_id`` is loaded; the aggregate's
        rules consult nothing else.
        """
        row = (
            models.Customer.objects.using(ALIAS)
            .select_for_update()
            .filter(id=customer_id)
            .values_list("name", "credit_limit", "credit_reserved", "version")
            .first()
        )
        if row is None:
            return None
        name, credit_limit, credit_reserved, version = row
        held = models.CreditReservation.objects.using(ALIAS).filter(order_id=order_id, customer_id=customer_id).values_list("amount", flat=True).first()
        return Customer.restore(
            customer_id,
            name=name,
            credit_limit=credit_limit,
            credit_reserved=credit_reserved,
            version=version,
            reservations={} if held is None else {order_id: held},
        )

    state_model = models.Customer

    def writes_new_state_row(self, aggregate: Customer) -> bool:
        # Only a new customer with nothing reserved yet: CustomerCreated writes the state row alone.
        pending = aggregate.pending_events
        return bool(pending) and pending[0][0] == 1 and all(type(event) is CustomerCreated for _, event in pending)

    def new_state_row(self, aggregate: Customer, recorded: list[RecordedEvent]) -> dict[str, object]:
        now = recorded[0].occurred_at
        return {"id": aggregate.id, "created_at": now, **self._state_fields(aggregate, now)}

    @staticmethod
    def _state_fields(aggregate: Customer, now: object) -> dict[str, object]:
        return {
            "name": aggregate.name,
            "credit_limit": aggregate.credit_limit,
            "credit_reserved": aggregate.credit_reserved,
            "version": aggregate.version,
            "updated_at": now,
        }

    def write_state(self, aggregate: Customer, recorded: list[RecordedEvent]) -> None:
        now = timezone.now()
        if recorded[0].version == 1:
            insert_rows(models.Customer, ALIAS, [{"id": aggregate.id, "created_at": now, **self._state_fields(aggregate, now)}])
        else:
            update_row(models.Customer, ALIAS, aggregate.id, self._state_fields(aggregate, now))
        reserved = [
            {"order_id": uuid.UUID(e.data["order_id"]), "customer_id": aggregate.id, "amount": Decimal(e.data["amount"]), "reserved_at": now}
            for e in recorded
            if e.type == CreditReserved.__name__
        ]
        insert_rows(models.CreditReservation, ALIAS, reserved)
        delete_rows(models.CreditReservation, ALIAS, "order_id", [uuid.UUID(e.data["order_id"]) for e in recorded if e.type == CreditReleased.__name__])


customer_repository = CustomerRepository(store)
