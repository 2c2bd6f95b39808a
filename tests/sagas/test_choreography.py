"""Choreographed sagas and their trace, on the real databases, one subscriber run at a time.

No workers: each test relays the outboxes and advances the real subscribers (the customers'
and orders' reactions, the trace) in-process until nothing is left, so every path is exercised
deterministically. tests/e2e/ runs the same flows with real workers over HTTP.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections

from config.verify import CHECKS
from customers.domain import credit_check_id
from customers.models import CreditReservation, CustomerEvent, CustomersParkedEvent
from customers.services import customer_create
from eventlog.domain import MessageContext
from eventlog.relay import outbox_relay
from eventlog.subscriptions import subscriber_advance, subscriber_get, subscriber_position
from orders import services as order_services
from orders.models import Order, OrderEvent, OrdersParkedEvent
from sagas.models import SagaInstance
from sagas.selectors import saga_get
from sagas.trace import SUBSCRIBER as TRACE
from tests.conftest import purge_queues, run_concurrently

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
HANDLERS = ("customers.choreography", "orders.choreography")


@pytest.fixture(autouse=True)
def no_leftover_messages() -> Any:
    yield
    purge_queues()


def settle(*, rounds: int = 6) -> None:
    """Relay and advance every choreography subscriber and the trace until nothing moves."""
    for _ in range(rounds):
        moved = outbox_relay("orders") + outbox_relay("customers")
        for name in (*HANDLERS, TRACE):
            moved += subscriber_advance(name)
        if not moved:
            return


def place(customer_id: uuid.UUID, total: str) -> tuple[uuid.UUID, uuid.UUID]:
    """What the API does for mode ``choreography``: one order, its flow id as saga id."""
    order_id, flow_id = uuid.uuid4(), uuid.uuid4()
    order_services.order_create(order_id=order_id, customer_id=customer_id, total=total, mode="choreography", context=MessageContext(correlation_id=flow_id, saga_id=flow_id))
    return order_id, flow_id


def order(order_id: uuid.UUID) -> Order:
    return Order.objects.using("orders").get(id=order_id)


def steps(flow_id: uuid.UUID) -> list[tuple[str, str, str]]:
    saga = saga_get(saga_id=flow_id)
    assert saga is not None
    return [(s["name"], s.get("context", ""), s["status"]) for s in saga["steps"]]


def verify() -> str:
    out = StringIO()
    call_command("verify", stdout=out)
    return out.getvalue()


ALL_PASSED = f"All {len(CHECKS)} invariant checks passed."


def test_an_order_within_the_limit_is_approved_and_its_trace_shows_each_step() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    order_id, flow_id = place(customer.id, "60.00")
    outbox_relay("orders")
    subscriber_advance(TRACE)
    running = saga_get(saga_id=flow_id)
    assert running is not None and (running["mode"], running["type"], running["state"]) == ("choreography", "create_order", "RUNNING")
    assert running["awaiting"]["step"] == "CreditReserved | CreditReservationFailed" and running["awaiting"]["from_context"] == "customers"
    assert running["awaiting"]["subscriber"] == "customers.choreography" and running["stuck"] is False
    assert steps(flow_id)[-1] == ("CreditReserved | CreditReservationFailed", "customers", "WAITING")
    settle()
    assert order(order_id).state == "APPROVED"
    done = saga_get(saga_id=flow_id)
    assert done is not None and (done["state"], done["awaiting"], done["stuck"]) == ("COMPLETED", None, False)
    assert steps(flow_id) == [("OrderCreated", "orders", "SUCCEEDED"), ("CreditReserved", "customers", "SUCCEEDED"), ("OrderApproved", "orders", "SUCCEEDED")]
    # Each reaction kept the correlation and named the event it answered as its cause.
    trace = done["steps"]
    assert trace[1]["causation_id"] == trace[0]["event_id"] and trace[2]["causation_id"] == trace[1]["event_id"]
    events = list(OrderEvent.objects.using("orders").order_by("version")) + list(CustomerEvent.objects.using("customers").filter(type="CreditReserved"))
    assert {e.correlation_id for e in events} == {flow_id} and {e.saga_id for e in events} == {flow_id}
    assert ALL_PASSED in verify()


@pytest.mark.parametrize(("limit", "reason"), [("50.00", "INSUFFICIENT_CREDIT"), (None, "UNKNOWN_CUSTOMER")])
def test_a_refused_reservation_rejects_the_order_and_the_flow_ends_compensated(limit: str | None, reason: str) -> None:
    customer_id = customer_create(name="Ada", credit_limit=limit).id if limit else uuid.uuid4()
    order_id, flow_id = place(customer_id, "60.00")
    settle()
    assert (order(order_id).state, order(order_id).rejection_reason) == ("REJECTED", reason)
    saga = saga_get(saga_id=flow_id)
    assert saga is not None and saga["state"] == "COMPENSATED" and reason in saga["last_error"]
    assert [name for name, _, _ in steps(flow_id)] == ["OrderCreated", "CreditReservationFailed", "OrderRejected"]
    if limit is None:  # the refusal is recorded on the order's credit-check stream, not a made-up customer
        assert CustomerEvent.objects.using("customers").get(stream_id=credit_check_id(order_id)).stream_type == "CreditCheck"
    assert not CreditReservation.objects.using("customers").exists()
    assert ALL_PASSED in verify()


def test_cancelling_releases_the_credit_in_a_flow_of_its_own() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    order_id, _ = place(customer.id, "60.00")
    settle()
    cancel_id = uuid.uuid4()
    order_services.order_cancel_request(order_id=order_id, context=MessageContext(correlation_id=cancel_id, saga_id=cancel_id))
    settle()
    assert order(order_id).state == "CANCELLED"
    assert not CreditReservation.objects.using("customers").exists()
    saga = saga_get(saga_id=cancel_id)
    assert saga is not None and (saga["type"], saga["state"]) == ("cancel_order", "COMPLETED")
    assert [name for name, _, _ in steps(cancel_id)] == ["OrderCancelRequested", "CreditReleased", "OrderCancelled"]
    assert ALL_PASSED in verify()


def test_twenty_orders_of_ten_on_a_limit_of_one_hundred_approve_exactly_ten() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    placed = [place(customer.id, "10.00")[0] for _ in range(20)]
    settle()
    states = [order(o).state for o in placed]
    assert (states.count("APPROVED"), states.count("REJECTED")) == (10, 10)
    assert sum(r.amount for r in CreditReservation.objects.using("customers").all()) == Decimal("100.00")
    assert SagaInstance.objects.using("sagas").filter(mode="choreography", state__in=("COMPLETED", "COMPENSATED")).count() == 20


def test_orchestrated_orders_never_wake_the_choreography_handlers() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    saga_id = uuid.uuid4()
    order_id = uuid.uuid4()
    order_services.order_create(order_id=order_id, customer_id=customer.id, total="10.00", mode="orchestration", context=MessageContext(correlation_id=saga_id, saga_id=saga_id))
    settle()
    assert order(order_id).state == "PENDING"  # left to its saga
    assert not CreditReservation.objects.using("customers").exists()
    assert not SagaInstance.objects.using("sagas").filter(id=saga_id).exists()  # not traced as a flow


def test_every_event_delivered_twice_changes_nothing() -> None:
    """Every relay and every subscriber wake-up runs twice, at once: the log's unique event id
    and each subscriber's checkpoint (written with its effects) absorb the second delivery."""
    customer = customer_create(name="Ada", credit_limit="100.00")
    order_id, flow_id = place(customer.id, "60.00")
    for _ in range(4):
        run_concurrently(*(lambda source=source: outbox_relay(source) for source in ("orders", "customers") for _ in range(2)))
        for name in (*HANDLERS, TRACE):
            run_concurrently(lambda name=name: subscriber_advance(name), lambda name=name: subscriber_advance(name))  # type: ignore[misc]  # mypy cannot infer a lambda with default arguments
    assert order(order_id).state == "APPROVED"
    assert list(OrderEvent.objects.using("orders").order_by("version").values_list("type", flat=True)) == ["OrderCreated", "OrderApproved"]
    assert CustomerEvent.objects.using("customers").filter(type="CreditReserved").count() == 1
    assert [name for name, _, _ in steps(flow_id)] == ["OrderCreated", "CreditReserved", "OrderApproved"]
    assert not OrdersParkedEvent.objects.using("orders").exists() and not CustomersParkedEvent.objects.using("customers").exists()
    assert ALL_PASSED in verify()


def _orders_trigger(create: bool) -> None:
    with connections["orders"].cursor() as cursor:
        if connections["orders"].vendor == "postgresql":
            statements = (
                [
                    "CREATE FUNCTION refuse_approval() RETURNS trigger AS $$ BEGIN IF NEW.type = 'OrderApproved' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
                    "CREATE TRIGGER refuse_approval BEFORE INSERT ON orders_orderevent FOR EACH ROW EXECUTE FUNCTION refuse_approval()",
                ]
                if create
                else ["DROP TRIGGER refuse_approval ON orders_orderevent", "DROP FUNCTION refuse_approval()"]
            )
        else:
            statements = (
                ["CREATE TRIGGER refuse_approval BEFORE INSERT ON orders_orderevent WHEN NEW.type = 'OrderApproved' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"]
                if create
                else ["DROP TRIGGER refuse_approval"]
            )
        for statement in statements:
            cursor.execute(statement)


def test_a_handler_that_keeps_failing_parks_its_event_the_trace_shows_it_and_a_retry_finishes_it() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    _orders_trigger(create=True)
    try:
        order_id, flow_id = place(customer.id, "60.00")
        other_id, other_flow = place(customer.id, "10.00")
        settle()
        for _ in range(5):  # the sweep's wake-ups: each tries the approval again, the fifth parks it
            subscriber_advance("orders.choreography")
        settle()
        record = OrdersParkedEvent.objects.using("orders").get(event_type="CreditReserved", saga_id=flow_id)
        assert record.parked_at is not None and record.attempts == 5 and "injected fault" in record.error
        saga = saga_get(saga_id=flow_id)
        assert saga is not None and saga["state"] == "RUNNING" and saga["stuck"] is True
        assert saga["awaiting"]["step"] == "OrderApproved" and saga["awaiting"]["parked"] is True and "injected fault" in saga["awaiting"]["error"]
        assert steps(flow_id)[-1] == ("OrderApproved", "orders", "FAILED")
        # The log went on past the parked event: the subscriber is not held up by it.
        assert subscriber_position(subscriber_get("orders.choreography")) >= record.position
        listed = StringIO()
        call_command("retry_parked_events", stdout=listed)
        assert f"parked orders.choreography #{record.position} CreditReserved" in listed.getvalue()
    finally:
        _orders_trigger(create=False)
    assert order(order_id).state == "PENDING"
    out = StringIO()
    call_command("retry_parked_events", "--all", stdout=out)
    assert "done" in out.getvalue()
    assert order(order_id).state == "APPROVED"
    settle()
    saga = saga_get(saga_id=flow_id)
    assert saga is not None and saga["state"] == "COMPLETED"
    assert order(other_id).state in ("APPROVED", "REJECTED")
    assert ALL_PASSED in verify()


def test_an_event_that_failed_and_then_goes_through_is_marked_resolved_and_is_not_parked() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    _orders_trigger(create=True)
    try:
        order_id, flow_id = place(customer.id, "60.00")
        settle()  # the approval fails (counted, not parked: fewer than max_failures)
        record = OrdersParkedEvent.objects.using("orders").get(event_type="CreditReserved", saga_id=flow_id)
        assert record.attempts >= 1 and record.parked_at is None and record.resolved_at is None
    finally:
        _orders_trigger(create=False)
    settle()  # the next run gets it through, in the savepoint that marks it resolved
    assert order(order_id).state == "APPROVED"
    record.refresh_from_db(using="orders")
    assert record.resolved_at is not None and record.parked_at is None
    saga = saga_get(saga_id=flow_id)
    assert saga is not None and saga["state"] == "COMPLETED"


def test_an_orchestrated_order_costs_the_customers_reactions_no_savepoint() -> None:
    """Its ``OrderCreated`` says ``mode: orchestration``: the reaction's ``applies`` turns it
    down before any handling, so the subscriber only moves its checkpoint past it."""
    customer = customer_create(name="Ada", credit_limit="100.00")
    settle()  # the subscriber's checkpoint row exists (its creation is a get_or_create)
    saga_id, order_id = uuid.uuid4(), uuid.uuid4()
    order_services.order_create(order_id=order_id, customer_id=customer.id, total="10.00", mode="orchestration", context=MessageContext(correlation_id=saga_id, saga_id=saga_id))
    outbox_relay("orders")
    sent: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(sql)
        return execute(sql, params, many, context)

    with connections["customers"].execute_wrapper(wrapper):
        assert subscriber_advance("customers.choreography") >= 1
    assert not [sql for sql in sent if "SAVEPOINT" in sql.upper() or "parkedevent" in sql], sent
    assert not CreditReservation.objects.using("customers").exists()


def test_relays_and_subscribers_running_in_any_order_converge_on_the_same_outcome() -> None:
    """The outboxes are relayed independently and each subscriber runs on its own schedule, so
    events of different streams reach each reader in any interleaving: the end is the same."""
    customer = customer_create(name="Ada", credit_limit="15.00")
    first, first_flow = place(customer.id, "10.00")
    second, second_flow = place(customer.id, "10.00")
    for _ in range(6):  # the trace first, the orders before the customers, the customers' outbox first
        outbox_relay("customers")
        subscriber_advance(TRACE)
        subscriber_advance("orders.choreography")
        outbox_relay("orders")
        subscriber_advance("customers.choreography")
    settle()
    assert (order(first).state, order(second).state) == ("APPROVED", "REJECTED")  # the log's order decides
    assert [name for name, _, _ in steps(first_flow)] == ["OrderCreated", "CreditReserved", "OrderApproved"]
    assert [name for name, _, _ in steps(second_flow)] == ["OrderCreated", "CreditReservationFailed", "OrderRejected"]
    assert ALL_PASSED in verify()
