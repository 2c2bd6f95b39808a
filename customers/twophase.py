"""The customers context's branches of a two-phase commit: its ordinary use cases, by name.

The coordinator (in ``sagas``) runs them inside a prepared transaction of this context's
database (``eventlog.twophase``); they are the same services the other modes call.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from customers.domain import UNKNOWN_CUSTOMER
from customers.repository import ALIAS
from customers.services import CustomerNotFound, credit_release, credit_reserve
from eventlog.domain import MessageContext
from eventlog.twophase import participant_register


def _credit_reserve(*, customer_id: uuid.UUID, order_id: uuid.UUID, amount: Decimal, context: MessageContext) -> dict[str, Any]:
    """Reserve (row-locking the customer); a refusal says why, and the coordinator rolls back."""
    try:
        result = credit_reserve(customer_id=customer_id, order_id=order_id, amount=amount, context=context)
    except CustomerNotFound:
        return {"reserved": False, "reason": UNKNOWN_CUSTOMER}
    return {"reserved": result.reserved, "reason": result.reason}


def _credit_release(*, customer_id: uuid.UUID, order_id: uuid.UUID, context: MessageContext) -> dict[str, Any]:
    try:
        credit_release(customer_id=customer_id, order_id=order_id, context=context)
    except CustomerNotFound:
        pass  # nothing was ever reserved at a customer who does not exist
    return {}


def register() -> None:
    participant_register("customers.credit_reserve", alias=ALIAS, work=_credit_reserve)
    participant_register("customers.credit_release", alias=ALIAS, work=_credit_release)
