"""``manage.py verify`` passes on a healthy system and catches each invariant broken on purpose."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from customers.models import CreditReservation, Customer, CustomerEvent
from eventlog.models import LogEvent
from orders.models import Order, OrderEvent
from readmodels.models import CustomerCredit, OrderSummary
from tests.readmodels.helpers import make_history, relay_and_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def verify() -> tuple[bool, str]:
    out = StringIO()
    try:
        call_command("verify", stdout=out)
    except CommandError as exc:
        return False, out.getvalue() + str(exc)
    return True, out.getvalue()


def first_approved() -> Order:
    return Order.objects.using("orders").filter(state="APPROVED").order_by("id").first()  # type: ignore[return-value]


def tamper_customer_row() -> None:
    Customer.objects.using("customers").filter(pk=Customer.objects.using("customers").first().pk).update(credit_limit=Decimal("999.00"))  # type: ignore[union-attr]


def tamper_order_row() -> None:
    Order.objects.using("orders").filter(pk=first_approved().pk).update(state="REJECTED")


def delete_an_event() -> None:
    event = OrderEvent.objects.using("orders").filter(version=2).order_by("id").first()
    assert event is not None
    event.delete(using="orders")


def lose_a_log_event() -> None:
    LogEvent.objects.using("eventlog").filter(position=LogEvent.objects.using("eventlog").order_by("position")[3].position).delete()


def duplicate_reservation_state() -> None:
    order = first_approved()
    CreditReservation.objects.using("customers").filter(order_id=order.id).delete()


def tamper_read_model() -> None:
    OrderSummary.objects.using("readmodels").filter(pk=OrderSummary.objects.using("readmodels").first().pk).update(total=Decimal("0.01"))  # type: ignore[union-attr]


def drop_read_model_row() -> None:
    CustomerCredit.objects.using("readmodels").first().delete()  # type: ignore[union-attr]


def test_verify_passes_on_a_consistent_system() -> None:
    make_history()
    relay_and_project()
    ok, report = verify()
    assert ok, report
    assert "All 7 invariant checks passed." in report


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (tamper_customer_row, "customer rows equal the fold"),
        (tamper_order_row, "order rows equal the fold"),
        (delete_an_event, "order rows equal the fold"),
        (lose_a_log_event, "every outbox event is in the log exactly once"),
        (duplicate_reservation_state, "credit reserved matches the orders"),
        (tamper_read_model, "read models equal a fresh replay"),
        (drop_read_model_row, "read models equal a fresh replay"),
    ],
)
def test_verify_catches_a_broken_invariant(tamper: Callable[[], None], expected: str) -> None:
    make_history()
    relay_and_project()
    tamper()
    ok, report = verify()
    assert not ok
    failing = [line for line in report.splitlines() if line.startswith("FAIL")]
    assert any(expected in line for line in failing), report


def test_verify_names_a_gap_in_a_stream() -> None:
    make_history(customers=1, orders=2)
    relay_and_project()
    delete_an_event()
    ok, report = verify()
    assert not ok and "[stream versions 1..n]" in report and "versions are [1, 3" in report


def test_verify_reports_an_event_marked_relayed_but_missing() -> None:
    make_history(customers=1, orders=1)
    relay_and_project()
    event = CustomerEvent.objects.using("customers").order_by("id").last()
    assert event is not None
    LogEvent.objects.using("eventlog").filter(event_id=event.event_id).delete()
    ok, report = verify()
    assert not ok and "marked relayed but missing from the log" in report
    assert uuid.UUID(str(event.event_id))
