"""Use cases of the orders context; each runs in one transaction of its database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

from eventlog.domain import MessageContext
from eventlog.persistence import atomic_with_retry
from orders.domain import Order, OrderMode, RejectionReason
from orders.repository import ALIAS, order_repository


class OrderNotFound(LookupError):
    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__(f"order {order_id} does not exist")
        self.order_id = order_id


def order_create(*, customer_id: uuid.UUID, total: Decimal | str, mode: OrderMode | str, context: MessageContext, order_id: uuid.UUID | None = None) -> Order:
    """Create a PENDING order; creating the same ``order_id`` again returns the existing one."""
    order_id = order_id or uuid.uuid4()

    def command() -> Order:
        existing = order_repository.get(order_id)
        if existing is not None:
            return existing
        order = Order.create(order_id=order_id, customer_id=customer_id, total=total, mode=mode)
        order_repository.save(order, context=context)
        return order

    return atomic_with_retry(ALIAS, command)


def order_place_decided(
    *, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal | str, mode: OrderMode | str, approved: bool, reason: RejectionReason | str | None, context: MessageContext
) -> Order:
    """Create an order whose outcome is already known (2PC decides before it writes): its
    OrderCreated and its OrderApproved or OrderRejected in one save. For an order that exists
    (a recovery storing a rejection twice) it changes nothing and returns it."""

    def command() -> Order:
        existing = order_repository.get(order_id)
        if existing is not None:
            return existing
        order = Order.create(order_id=order_id, customer_id=customer_id, total=total, mode=mode)
        if approved:
            order.approve()
        else:
            order.reject(reason=reason)
        order_repository.save(order, context=context)
        return order

    return atomic_with_retry(ALIAS, command)


def _order_change(order_id: uuid.UUID, change: Callable[[Order], None], context: MessageContext) -> Order:
    def command() -> Order:
        order = order_repository.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        change(order)
        order_repository.save(order, context=context)
        return order

    return atomic_with_retry(ALIAS, command)


def order_approve(*, order_id: uuid.UUID, context: MessageContext) -> Order:
    return _order_change(order_id, lambda order: order.approve(), context)


def order_reject(*, order_id: uuid.UUID, reason: RejectionReason | str | None, context: MessageContext) -> Order:
    return _order_change(order_id, lambda order: order.reject(reason=reason), context)


def order_cancel_request(*, order_id: uuid.UUID, context: MessageContext) -> Order:
    return _order_change(order_id, lambda order: order.cancel_request(), context)


def order_cancel_confirm(*, order_id: uuid.UUID, context: MessageContext) -> Order:
    return _order_change(order_id, lambda order: order.cancel_confirm(), context)


def order_cancel_at_once(*, order_id: uuid.UUID, context: MessageContext) -> Order:
    """Request and confirm a cancel in one save (2PC: the credit's release commits with it)."""

    def cancel(order: Order) -> None:
        order.cancel_request()
        order.cancel_confirm()

    return _order_change(order_id, cancel, context)


def order_cancel_revert(*, order_id: uuid.UUID, context: MessageContext) -> Order:
    return _order_change(order_id, lambda order: order.cancel_revert(), context)
