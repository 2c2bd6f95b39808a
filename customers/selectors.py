"""Reads of the customers context's own state (the public query API reads read models)."""

from __future__ import annotations

import uuid

from customers.models import Customer
from customers.repository import ALIAS


def customer_state_get(customer_id: uuid.UUID) -> Customer | None:
    return Customer.objects.using(ALIAS).filter(id=customer_id).first()
