"""Commands the orders context accepts (Celery tasks on the ``orders`` queue).

Each task takes the command message, handles it once (eventlog.commands), and replies. A
transition the order's state forbids (a semantic lock) is a refusal, not an error.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from celery import shared_task

from eventlog.commands import Command, command_handle
from orders import services
from orders.models import OrdersProcessedCommand
from orders.repository import ALIAS


def _order_id(command: Command) -> uuid.UUID:
    return uuid.UUID(command.payload["order_id"])


def _create(command: Command) -> dict[str, Any]:
    p = command.payload
    order = services.order_create(order_id=_order_id(command), customer_id=uuid.UUID(p["customer_id"]), total=p["total"], mode=p["mode"], context=command.context)
    return {"version": order.version, "state": order.state.value}


def _transition(change: Callable[..., Any], **extra: str) -> Callable[[Command], dict[str, Any]]:
    def handler(command: Command) -> dict[str, Any]:
        kwargs = {name: command.payload[key] for name, key in extra.items()}
        order = change(order_id=_order_id(command), context=command.context, **kwargs)
        return {"version": order.version, "state": order.state.value}

    return handler


_reject_existing = _transition(services.order_reject, reason="reason")


def _reject(command: Command) -> dict[str, Any]:
    """A compensation: rejecting an order that was never created (its create command expired
    or never ran) has nothing to undo, so it succeeds instead of failing the saga."""
    try:
        return _reject_existing(command)
    except services.OrderNotFound:
        return {"state": None, "note": "no such order: nothing to reject"}


HANDLERS: dict[str, Callable[[Command], dict[str, Any]]] = {
    "orders.order_create": _create,
    "orders.order_approve": _transition(services.order_approve),
    "orders.order_reject": _reject,
    "orders.order_cancel_request": _transition(services.order_cancel_request),
    "orders.order_cancel_confirm": _transition(services.order_cancel_confirm),
    "orders.order_cancel_revert": _transition(services.order_cancel_revert),
}


def _handle(message: dict[str, Any]) -> str:
    return command_handle(message=message, alias=ALIAS, processed=OrdersProcessedCommand, handler=HANDLERS[message["name"]], refusals=(services.OrderNotFound,)).outcome


@shared_task(name="orders.order_create")
def order_create_task(message: dict[str, Any]) -> str:
    return _handle(message)


@shared_task(name="orders.order_approve")
def order_approve_task(message: dict[str, Any]) -> str:
    return _handle(message)


@shared_task(name="orders.order_reject")
def order_reject_task(message: dict[str, Any]) -> str:
    return _handle(message)


@shared_task(name="orders.order_cancel_request")
def order_cancel_request_task(message: dict[str, Any]) -> str:
    return _handle(message)


@shared_task(name="orders.order_cancel_confirm")
def order_cancel_confirm_task(message: dict[str, Any]) -> str:
    return _handle(message)


@shared_task(name="orders.order_cancel_revert")
def order_cancel_revert_task(message: dict[str, Any]) -> str:
    return _handle(message)
