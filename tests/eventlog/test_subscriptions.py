"""Subscribers: effects exactly once over at-least-once, duplicated and concurrent delivery."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from customers.services import credit_reserve, customer_create
from eventlog.domain import MessageContext
from eventlog.models import LogEvent
from eventlog.relay import outbox_relay
from eventlog.selectors import log_head
from eventlog.subscriptions import subscriber_advance, subscriber_get, subscriber_lag, subscriber_position
from orders.services import order_approve, order_create
from readmodels.models import CustomerCredit, OrderSummary, ProjectionCheckpoint
from tests.conftest import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CREDIT = "readmodels.customer_credit"
ORDERS = "readmodels.order_summary"


def make_history(orders: int = 5) -> uuid.UUID:
    customer = customer_create(name="Ada", credit_limit="100.00")
    for _ in range(orders):
        order = order_create(customer_id=customer.id, total="10.00", mode="orchestration", context=MessageContext())
        credit_reserve(customer_id=customer.id, order_id=order.id, amount="10.00", context=MessageContext())
        order_approve(order_id=order.id, context=MessageContext())
    outbox_relay("customers")
    outbox_relay("orders")
    return customer.id


def test_a_subscriber_applies_the_log_and_stores_its_position_with_its_effects() -> None:
    customer_id = make_history()
    assert subscriber_lag(subscriber_get(CREDIT)) == log_head() > 0
    assert subscriber_advance(CREDIT) == LogEvent.objects.using("eventlog").count() == 16
    credit = CustomerCredit.objects.using("readmodels").get(id=customer_id)
    assert (credit.credit_reserved, credit.available_credit, credit.orders_approved) == (Decimal("50.00"), Decimal("50.00"), 5)
    assert ProjectionCheckpoint.objects.using("readmodels").get(subscriber=CREDIT).position == log_head()
    assert subscriber_lag(subscriber_get(CREDIT)) == 0


def test_duplicate_delivery_changes_nothing() -> None:
    customer_id = make_history()
    subscriber_advance(CREDIT)
    subscriber_advance(ORDERS)
    before = list(CustomerCredit.objects.using("readmodels").values())
    assert subscriber_advance(CREDIT) == 0
    assert subscriber_advance(ORDERS) == 0
    assert list(CustomerCredit.objects.using("readmodels").values()) == before
    assert OrderSummary.objects.using("readmodels").filter(customer_id=customer_id, state="APPROVED").count() == 5


def test_small_batches_give_the_same_result_as_one_big_batch() -> None:
    customer_id = make_history()
    subscriber_advance(CREDIT, batch_size=1)
    subscriber_advance(ORDERS, batch_size=3)
    credit = CustomerCredit.objects.using("readmodels").get(id=customer_id)
    assert (credit.credit_reserved, credit.orders_approved, credit.orders_pending) == (Decimal("50.00"), 5, 0)
    assert set(OrderSummary.objects.using("readmodels").values_list("state", "customer_name")) == {("APPROVED", "Ada")}


def test_concurrent_runs_of_one_subscriber_apply_each_event_once() -> None:
    customer_id = make_history(orders=8)
    run_concurrently(*[lambda: subscriber_advance(CREDIT, batch_size=4)] * 4)
    credit = CustomerCredit.objects.using("readmodels").get(id=customer_id)
    assert (credit.credit_reserved, credit.orders_approved) == (Decimal("80.00"), 8)
    assert subscriber_position(subscriber_get(CREDIT)) == log_head()


def test_a_handler_that_fails_moves_neither_rows_nor_position() -> None:
    make_history(orders=1)
    subscriber = subscriber_get(CREDIT)
    broken = type(subscriber)(**{**subscriber.__dict__, "handle": _explode})
    from eventlog.subscriptions import subscriber_advance_batch

    with pytest.raises(RuntimeError):
        subscriber_advance_batch(broken, batch_size=100)
    assert CustomerCredit.objects.using("readmodels").count() == 0
    assert subscriber_position(subscriber) == 0


def _explode(events: object) -> None:
    CustomerCredit.objects.using("readmodels").create(
        id=uuid.uuid4(), name="half-done", credit_limit=1, credit_reserved=0, available_credit=1, version=1, updated_at="2026-01-01T00:00:00Z"
    )
    raise RuntimeError("handler failed halfway")
