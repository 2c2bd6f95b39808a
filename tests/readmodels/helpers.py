"""Building histories for read-side tests through the real services."""

from __future__ import annotations

import contextlib
import random
import threading
import uuid
from collections.abc import Callable, Iterator

from django.db import connections

from customers.services import credit_release, credit_reserve, customer_create
from eventlog.domain import MessageContext
from eventlog.relay import outbox_relay
from eventlog.subscriptions import subscriber_advance
from orders.services import order_approve, order_cancel_confirm, order_cancel_request, order_create, order_reject
from readmodels.projections import PROJECTIONS, subscriber_name


def make_history(*, customers: int = 3, orders: int = 6, seed: int = 7) -> list[uuid.UUID]:
    """Customers and orders through every life cycle, as the sagas would drive them."""
    rng = random.Random(seed)
    customer_ids = []
    for i in range(customers):
        customer = customer_create(name=f"Customer {i}", credit_limit="50.00")
        customer_ids.append(customer.id)
        for _ in range(orders):
            context = MessageContext()
            total = f"{rng.randint(1, 20)}.{rng.randint(0, 99):02d}"
            order = order_create(customer_id=customer.id, total=total, mode="orchestration", context=context)
            reserved = credit_reserve(customer_id=customer.id, order_id=order.id, amount=total, context=context)
            if not reserved.reserved:
                order_reject(order_id=order.id, reason="INSUFFICIENT_CREDIT", context=context)
                continue
            order_approve(order_id=order.id, context=context)
            if rng.random() < 0.4:
                order_cancel_request(order_id=order.id, context=context)
                credit_release(customer_id=customer.id, order_id=order.id, context=context)
                order_cancel_confirm(order_id=order.id, context=context)
    return customer_ids


def relay_and_project() -> None:
    outbox_relay("customers")
    outbox_relay("orders")
    for projection in PROJECTIONS.values():
        subscriber_advance(subscriber_name(projection))


@contextlib.contextmanager
def repeating_in_a_thread(step: Callable[[], None]) -> Iterator[list[BaseException]]:
    """Run ``step`` over and over in a thread of its own (with its own database connections)
    until the block ends; yields the list of what it raised (it stops at the first)."""
    stop, errors = threading.Event(), []

    def loop() -> None:
        try:
            while not stop.is_set():
                step()
        except BaseException as exc:  # noqa: BLE001 (the test asserts on them)
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(60)
