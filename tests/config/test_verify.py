"""``manage.py verify`` passes on a healthy system and catches each invariant broken on purpose."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from config.verify import CHECKS, credit_matches_orders_check
from customers.models import CreditReservation, Customer, CustomerEvent
from customers.services import credit_release, credit_reserve, customer_create
from eventlog.domain import MessageContext
from eventlog.models import LogEvent
from orders.models import Order, OrderEvent
from orders.services import order_approve, order_cancel_confirm, order_cancel_request, order_create, order_reject
from readmodels.models import CustomerCredit, OrderSummary
from sagas.models import SagaInstance
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
    return Order.objects.using("orders").filter(state="APPROVED").order_by("id").first()  # type: ignore[return-value]  # the test placed and approved one


def tamper_customer_row() -> None:
    Customer.objects.using("customers").filter(pk=Customer.objects.using("customers").first().pk).update(credit_limit=Decimal("999.00"))  # type: ignore[union-attr]  # the test created one


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
    OrderSummary.objects.using("readmodels").filter(pk=OrderSummary.objects.using("readmodels").first().pk).update(total=Decimal("0.01"))  # type: ignore[union-attr]  # the test projected one


def drop_read_model_row() -> None:
    CustomerCredit.objects.using("readmodels").first().delete()  # type: ignore[union-attr]  # the test projected one


def test_verify_passes_on_a_consistent_system() -> None:
    make_history()
    relay_and_project()
    ok, report = verify()
    assert ok, report
    assert f"All {len(CHECKS)} invariant checks passed." in report and len(CHECKS) == 9


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


# --- invariant 2, exactly: reserved credit = the totals of APPROVED and CANCEL_PENDING orders ---
# Each case builds an order's state with the real services (as a saga would leave it between
# its steps), optionally with an active saga on that order, and asks the cross-context check.


def order_in(state: str, *, reserved: bool) -> tuple[uuid.UUID, uuid.UUID]:
    """(customer id, order id) of one order driven to ``state``, holding credit or not."""
    context = MessageContext()
    customer = customer_create(name="Ada", credit_limit="100.00")
    order = order_create(customer_id=customer.id, total="10.00", mode="orchestration", context=context)
    holds = False

    def reserve() -> None:
        nonlocal holds
        if not holds:
            credit_reserve(customer_id=customer.id, order_id=order.id, amount="10.00", context=context)
            holds = True

    def release() -> None:
        nonlocal holds
        if holds:
            credit_release(customer_id=customer.id, order_id=order.id, context=context)
            holds = False

    if state == "REJECTED":
        order_reject(order_id=order.id, reason="INSUFFICIENT_CREDIT", context=context)
    if state in ("APPROVED", "CANCEL_PENDING", "CANCELLED"):
        reserve()
        order_approve(order_id=order.id, context=context)
    if state in ("CANCEL_PENDING", "CANCELLED"):
        order_cancel_request(order_id=order.id, context=context)
    if state == "CANCELLED":
        release()
        order_cancel_confirm(order_id=order.id, context=context)
    if reserved:
        reserve()
    else:
        release()
    return customer.id, order.id


def saga_on(order_id: uuid.UUID, *, mode: str = "orchestration", state: str = "RUNNING", saga_type: str = "cancel_order") -> None:
    now = timezone.now()
    SagaInstance.objects.using("sagas").create(
        id=uuid.uuid4(), type=saga_type, mode=mode, definition_version=1, state=state, subject_id=order_id,
        correlation_id=uuid.uuid4(), created_at=now, updated_at=now,
    )


def credit_violations() -> list[str]:
    return [str(v) for v in credit_matches_orders_check().violations]


@pytest.mark.parametrize(
    ("state", "reserved", "saga", "allowed"),
    [
        # No active saga on the order: it must match exactly.
        ("APPROVED", True, None, True),
        ("CANCEL_PENDING", True, None, True),
        ("PENDING", False, None, True),
        ("REJECTED", False, None, True),
        ("CANCELLED", False, None, True),
        ("APPROVED", False, None, False),
        ("CANCEL_PENDING", False, None, False),
        ("PENDING", True, None, False),
        ("REJECTED", True, None, False),
        ("CANCELLED", True, None, False),
        # A saga that has ended explains nothing.
        ("PENDING", True, ("orchestration", "COMPLETED"), False),
        ("CANCEL_PENDING", False, ("orchestration", "COMPENSATED"), False),
        # An active saga explains what happens between its steps...
        ("PENDING", True, ("orchestration", "RUNNING"), True),  # reserved, not approved yet
        ("PENDING", True, ("orchestration", "COMPENSATING"), True),  # reserved, release to come
        ("CANCEL_PENDING", False, ("orchestration", "RUNNING"), True),  # released, not confirmed yet
        ("CANCEL_PENDING", False, ("orchestration", "COMPENSATING"), True),  # released, re-reserve to come
        ("APPROVED", False, ("2pc", "RUNNING"), True),  # orders committed its prepared half first
        ("CANCELLED", True, ("2pc", "RUNNING"), True),  # the same, for a 2PC cancel
        ("REJECTED", True, ("2pc", "RUNNING"), False),  # 2PC never holds credit for a rejection
        # ...and nothing else: no step leaves an APPROVED order without credit outside 2PC, and
        # no saga ever holds credit for a REJECTED or CANCELLED order.
        ("APPROVED", False, ("orchestration", "RUNNING"), False),
        ("REJECTED", True, ("orchestration", "RUNNING"), False),
        ("CANCELLED", True, ("orchestration", "COMPENSATING"), False),
    ],
)
def test_credit_matches_the_orders_exactly_unless_an_active_saga_on_the_order_explains_it(
    state: str, reserved: bool, saga: tuple[str, str] | None, allowed: bool
) -> None:
    customer_id, order_id = order_in(state, reserved=reserved)
    assert Order.objects.using("orders").get(id=order_id).state == state
    assert CreditReservation.objects.using("customers").filter(order_id=order_id).exists() == reserved
    if saga is not None:
        saga_on(order_id, mode=saga[0], state=saga[1])
    violations = credit_violations()
    if allowed:
        assert violations == []
    else:
        assert any(str(order_id) in v for v in violations), violations
        assert any(str(customer_id) in v for v in violations), violations  # the customer's sum is off too


def test_a_saga_never_explains_credit_reserved_for_another_amount_or_customer() -> None:
    customer_id, order_id = order_in("PENDING", reserved=True)
    saga_on(order_id)
    CreditReservation.objects.using("customers").filter(order_id=order_id).update(amount=Decimal("9.00"))
    assert any(str(order_id) in v and "reserves 9.00" in v for v in credit_violations())


def test_credit_reserved_for_an_order_that_does_not_exist_is_explained_only_by_a_2pc_saga() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    order_id = uuid.uuid4()
    credit_reserve(customer_id=customer.id, order_id=order_id, amount="10.00", context=MessageContext())
    assert any(str(order_id) in v for v in credit_violations())
    saga_on(order_id, mode="orchestration")
    assert any(str(order_id) in v for v in credit_violations())
    SagaInstance.objects.using("sagas").filter(subject_id=order_id).update(mode="2pc")  # customers committed its half first
    assert credit_violations() == []


def test_a_double_reservation_for_one_order_is_a_violation() -> None:
    customer_id, order_id = order_in("APPROVED", reserved=True)
    first = CustomerEvent.objects.using("customers").get(stream_id=customer_id, type="CreditReserved")
    CustomerEvent.objects.using("customers").create(
        event_id=uuid.uuid4(), stream_id=customer_id, stream_type=first.stream_type, version=first.version + 1, type="CreditReserved", data=first.data,
        occurred_at=first.occurred_at, correlation_id=first.correlation_id,
    )
    Customer.objects.using("customers").filter(id=customer_id).update(credit_reserved=Decimal("20.00"), version=first.version + 1)
    ok, report = verify()
    assert not ok and "double reservation" in report and str(order_id) in report, report
