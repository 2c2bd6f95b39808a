"""Denormalised read-model tables and projection checkpoints (``readmodels`` database).

Queries read only these tables. Each is fed by a projection (readmodels/projections.py) that
stores its checkpoint in the same transaction as its rows.
"""

from __future__ import annotations

from typing import TypedDict

from django.db import models

from eventlog.models import Checkpoint


class _Money(TypedDict):
    max_digits: int
    decimal_places: int


MONEY: _Money = {"max_digits": 14, "decimal_places": 2}


class ProjectionCheckpoint(Checkpoint):
    pass


class OrderSummary(models.Model):
    id = models.UUIDField(primary_key=True)
    customer_id = models.UUIDField(db_index=True)
    customer_name = models.CharField(max_length=200, null=True)
    total = models.DecimalField(**MONEY)
    state = models.CharField(max_length=20, db_index=True)
    rejection_reason = models.CharField(max_length=32, null=True)
    mode = models.CharField(max_length=16)
    saga_id = models.UUIDField(null=True)
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=("customer_id", "state"), name="readmodels_order_cust_state")]

    def __str__(self) -> str:
        return f"order {self.id} {self.state}"


class CustomerCredit(models.Model):
    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200)
    credit_limit = models.DecimalField(**MONEY)
    credit_reserved = models.DecimalField(**MONEY)
    available_credit = models.DecimalField(**MONEY)
    orders_pending = models.PositiveIntegerField(default=0)
    orders_approved = models.PositiveIntegerField(default=0)
    orders_rejected = models.PositiveIntegerField(default=0)
    orders_cancel_pending = models.PositiveIntegerField(default=0)
    orders_cancelled = models.PositiveIntegerField(default=0)
    version = models.PositiveIntegerField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class CustomerName(models.Model):
    """The order-summary projection's own index of customer names."""

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200)


class CustomerOrderState(models.Model):
    """The customer-credit projection's own index: which customer and state each order has."""

    order_id = models.UUIDField(primary_key=True)
    customer_id = models.UUIDField(db_index=True)
    state = models.CharField(max_length=20)
