"""Reads of the orders context's own write side: the current-state row of an order.

A command decides on these facts, never on the read model: the row is written in the same
transaction as the order's events, so it is never behind them and needs no wait.
"""

from __future__ import annotations

import uuid

from orders.models import Order
from orders.repository import ALIAS


def order_state_get(*, order_id: uuid.UUID) -> Order | None:
    """The order's current-state row, or ``None`` if no order with this id has been created."""
    return Order.objects.using(ALIAS).filter(id=order_id).first()
