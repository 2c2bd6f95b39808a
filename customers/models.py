"""Tables of the customers context (``customers`` database)."""

from __future__ import annotations

from typing import TypedDict

from django.db import models

from eventlog.models import Checkpoint, OutboxEvent, ParkedEvent, ProcessedCommand


class _Money(TypedDict):
    max_digits: int
    decimal_places: int


MONEY: _Money = {"max_digits": 14, "decimal_places": 2}


class CustomerEvent(OutboxEvent):
    """Every event of every Customer stream; also the context's transactional outbox."""


class Customer(models.Model):
    """Current state of a Customer aggregate: always equal to the fold of its events."""

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200)
    credit_limit = models.DecimalField(**MONEY)
    credit_reserved = models.DecimalField(**MONEY, default=0)
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            # The credit invariant, guarded by the database as well as by the aggregate.
            models.CheckConstraint(condition=models.Q(credit_reserved__gte=0), name="customers_reserved_not_negative"),
            models.CheckConstraint(condition=models.Q(credit_reserved__lte=models.F("credit_limit")), name="customers_reserved_within_limit"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class CreditReservation(models.Model):
    """Credit held for one order; the primary key makes a double reservation impossible."""

    order_id = models.UUIDField(primary_key=True)
    customer_id = models.UUIDField(db_index=True)
    amount = models.DecimalField(**MONEY)
    reserved_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.amount} for order {self.order_id}"


class CustomersCheckpoint(Checkpoint):
    """Positions of this context's subscribers in the central log."""


class CustomersProcessedCommand(ProcessedCommand):
    """Commands this context has handled (saga steps), with their replies."""


class ChoreographedOrder(models.Model):
    """An order this context reserved credit for in a choreography: what its cancel releases.

    Written by the choreography handler in the same transaction as the reservation, so the
    handler of ``OrderCancelRequested`` (an event without payload) knows the order is its own
    and not an orchestrated saga's, whose cancel saga releases the credit itself.
    """

    order_id = models.UUIDField(primary_key=True)
    customer_id = models.UUIDField()
    total = models.DecimalField(**MONEY)


class CustomersParkedEvent(ParkedEvent):
    """Events this context's choreography handler failed on (counted, then parked)."""
