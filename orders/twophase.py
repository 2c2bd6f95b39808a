"""The orders context's branches of a two-phase commit: its ordinary use cases, by name.

The coordinator (in ``sagas``) runs them inside a prepared transaction of this context's
database (``eventlog.twophase``), or, for an order it must store REJECTED after rolling both
branches back, in an ordinary transaction. They are the services the other modes call.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from eventlog.domain import MessageContext
from eventlog.twophase import participant_register
from orders.repository import ALIAS
from orders.services import order_cancel_at_once, order_place_decided


def _order_place(*, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal, mode: str, approved: bool, reason: str | None, context: MessageContext) -> dict[str, Any]:
    """Create the order decided at once: the credit's answer is already known."""
    return _outcome(order_place_decided(order_id=order_id, customer_id=customer_id, total=total, mode=mode, approved=approved, reason=reason, context=context))


def _order_cancel(*, order_id: uuid.UUID, context: MessageContext) -> dict[str, Any]:
    """Request and confirm the cancel in one go; refused (``InvalidOrderState``) unless APPROVED."""
    return _outcome(order_cancel_at_once(order_id=order_id, context=context))


def _outcome(order: Any) -> dict[str, Any]:
    return {"state": order.state.value, "rejection_reason": order.rejection_reason.value if order.rejection_reason else None, "version": order.version}


def register() -> None:
    participant_register("orders.order_place", alias=ALIAS, work=_order_place)
    participant_register("orders.order_cancel", alias=ALIAS, work=_order_cancel)
