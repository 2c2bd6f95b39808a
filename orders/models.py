"""Tables of the orders context (``orders`` database)."""

from __future__ import annotations

from django.db import models

from eventlog.models import Checkpoint, IdempotencyRecord, OutboxEvent, ParkedEvent, ProcessedCommand
from orders.domain import OrderMode, OrderState, RejectionReason


class OrderEvent(OutboxEvent):
    """Every event of every Order stream; also the context's transactional outbox."""


class Order(models.Model):
    """Current state of an Order aggregate: always equal to the fold of its events."""

    id = models.UUIDField(primary_key=True)
    customer_id = models.UUIDField(db_index=True)
    total = models.DecimalField(max_digits=14, decimal_places=2)
    state = models.CharField(max_length=20, choices=[(s.value, s.value) for s in OrderState])
    rejection_reason = models.CharField(max_length=32, null=True, choices=[(r.value, r.value) for r in RejectionReason])
    mode = models.CharField(max_length=16, choices=[(m.value, m.value) for m in OrderMode])
    saga_id = models.UUIDField(null=True)
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The orders still on their way, per mode: admission control counts them on every
            # POST (orders.workflows), so the count must not grow with the orders ever placed.
            models.Index(fields=("mode",), condition=models.Q(state__in=("PENDING", "CANCEL_PENDING")), name="orders_in_flight_by_mode"),
        ]

    def __str__(self) -> str:
        return f"order {self.id} {self.state}"


class OrdersCheckpoint(Checkpoint):
    """Positions of this context's subscribers in the central log."""


class OrdersProcessedCommand(ProcessedCommand):
    """Commands this context has handled (saga steps), with their replies."""


class OrdersParkedEvent(ParkedEvent):
    """Events this context's choreography handler failed on (counted, then parked)."""


class OrdersIdempotencyRecord(IdempotencyRecord):
    """The first answer to a choreographed order's request that carried an ``Idempotency-Key``."""
