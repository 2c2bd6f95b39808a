"""Commands the customers context accepts (Celery tasks on the ``customers`` queue).

Each task takes the command message, handles it once (eventlog.commands), and replies.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task

from customers.domain import UNKNOWN_CUSTOMER
from customers.models import CustomersProcessedCommand
from customers.repository import ALIAS
from customers.services import CustomerNotFound, credit_release, credit_reserve
from eventlog.commands import REFUSED, Command, Refused, Reply, command_handle


def _credit_reserve(command: Command) -> dict[str, Any] | Reply:
    payload = command.payload
    try:
        result = credit_reserve(customer_id=uuid.UUID(payload["customer_id"]), order_id=uuid.UUID(payload["order_id"]), amount=payload["amount"], context=command.context)
    except CustomerNotFound as exc:
        raise Refused(UNKNOWN_CUSTOMER, str(exc)) from None
    if not result.reserved:
        return Reply(REFUSED, reason=result.reason, error="the customer's available credit is smaller than the total")
    return {"reserved": payload["amount"]}


def _credit_release(command: Command) -> dict[str, Any]:
    payload = command.payload
    try:
        credit_release(customer_id=uuid.UUID(payload["customer_id"]), order_id=uuid.UUID(payload["order_id"]), context=command.context)
    except CustomerNotFound:
        pass  # nothing was ever reserved at a customer who does not exist
    return {}


@shared_task(name="customers.credit_reserve")
def credit_reserve_task(message: dict[str, Any]) -> str:
    return command_handle(message=message, alias=ALIAS, processed=CustomersProcessedCommand, handler=_credit_reserve).outcome


@shared_task(name="customers.credit_release")
def credit_release_task(message: dict[str, Any]) -> str:
    return command_handle(message=message, alias=ALIAS, processed=CustomersProcessedCommand, handler=_credit_release).outcome
