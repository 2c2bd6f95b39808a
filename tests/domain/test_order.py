"""The Order aggregate's life cycle, semantic locks and folding, as pure Python."""

import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest

from eventlog.domain import DomainEvent, InvalidAmount
from orders.domain import (
    InvalidOrderState,
    Order,
    OrderApproved,
    OrderCancelled,
    OrderCancelRequested,
    OrderCancelReverted,
    OrderCreated,
    OrderMode,
    OrderRejected,
    OrderState,
    RejectionReason,
)


def pending_order() -> Order:
    order = Order.create(order_id=uuid.uuid4(), customer_id=uuid.uuid4(), total="10.00", mode="choreography")
    order.mark_saved()
    return order


def approved_order() -> Order:
    order = pending_order()
    order.approve()
    order.mark_saved()
    return order


def test_create_is_pending_with_its_mode() -> None:
    customer_id = uuid.uuid4()
    order = Order.create(order_id=uuid.uuid4(), customer_id=customer_id, total="10.5")
    assert order.state == OrderState.PENDING and order.mode == OrderMode.ORCHESTRATION
    assert order.pending_events == [(1, OrderCreated(customer_id=customer_id, total=Decimal("10.50"), mode="orchestration"))]
    assert order.pending_events[0][1].to_data() == {"customer_id": str(customer_id), "total": "10.50", "mode": "orchestration"}


@pytest.mark.parametrize("total", ["0.00", "-1.00", "1.001", "1e40"])
def test_create_refuses_bad_totals(total: str) -> None:
    with pytest.raises(InvalidAmount):
        Order.create(order_id=uuid.uuid4(), customer_id=uuid.uuid4(), total=total)


def test_create_refuses_unknown_mode() -> None:
    with pytest.raises(ValueError):
        Order.create(order_id=uuid.uuid4(), customer_id=uuid.uuid4(), total="1.00", mode="telepathy")


def test_approve_and_reject_from_pending() -> None:
    order = pending_order()
    order.approve()
    assert order.state == OrderState.APPROVED and order.pending_events == [(2, OrderApproved())]
    order = pending_order()
    order.reject(reason="UNKNOWN_CUSTOMER")
    assert order.state == OrderState.REJECTED and order.rejection_reason == RejectionReason.UNKNOWN_CUSTOMER
    assert order.pending_events == [(2, OrderRejected(reason="UNKNOWN_CUSTOMER"))]


def test_reject_refuses_an_unknown_reason() -> None:
    with pytest.raises(ValueError):
        pending_order().reject(reason="BAD_LUCK")


def test_cancel_flow_and_revert() -> None:
    order = approved_order()
    order.cancel_request()
    assert order.state == OrderState.CANCEL_PENDING
    order.cancel_revert()
    assert order.state == OrderState.APPROVED  # type: ignore[comparison-overlap]  # cancel_revert() changes the state that mypy narrowed two lines up
    order.cancel_request()
    order.cancel_confirm()
    assert order.state == OrderState.CANCELLED
    assert [type(e) for _, e in order.pending_events] == [OrderCancelRequested, OrderCancelReverted, OrderCancelRequested, OrderCancelled]


@pytest.mark.parametrize(
    ("setup", "command"),
    [
        (pending_order, "cancel_request"),  # PENDING is a semantic lock
        (pending_order, "cancel_confirm"),
        (pending_order, "cancel_revert"),
        (approved_order, "cancel_confirm"),
    ],
)
def test_transitions_out_of_order_are_refused(setup: Callable[[], Order], command: str) -> None:
    order = setup()
    with pytest.raises(InvalidOrderState):
        getattr(order, command)()
    assert order.pending_events == []


def test_cancel_pending_is_a_semantic_lock() -> None:
    order = approved_order()
    order.cancel_request()
    with pytest.raises(InvalidOrderState):
        order.reject(reason="INSUFFICIENT_CREDIT")
    with pytest.raises(InvalidOrderState):
        order.approve()


def test_terminal_states_refuse_other_transitions() -> None:
    order = pending_order()
    order.reject(reason="INSUFFICIENT_CREDIT")
    for command in ("approve", "cancel_request", "cancel_confirm"):
        with pytest.raises(InvalidOrderState):
            getattr(order, command)()


def test_repeating_a_transition_is_refused_because_it_would_break_a_lock() -> None:
    order = approved_order()
    with pytest.raises(InvalidOrderState):
        order.approve()
    order.cancel_request()
    with pytest.raises(InvalidOrderState):
        order.cancel_request()  # a second cancel saga must not pass the semantic lock
    assert [type(e) for _, e in order.pending_events] == [OrderCancelRequested]


def test_fold_rebuilds_state_and_version() -> None:
    order = approved_order()
    order.cancel_request()
    order.cancel_confirm()
    history: list[DomainEvent] = [OrderCreated(customer_id=order.customer_id, total=Decimal("10.00"), mode="choreography"), OrderApproved()]  # type: ignore[arg-type]  # approved_order() set the customer id
    history += [event for _, event in order.pending_events]
    folded = Order.fold(order.id, history)
    assert (folded.state, folded.version, folded.total, folded.mode) == (OrderState.CANCELLED, 4, Decimal("10.00"), OrderMode.CHOREOGRAPHY)


def test_events_round_trip_through_json_payloads() -> None:
    event = OrderCreated(customer_id=uuid.uuid4(), total=Decimal("12.30"), mode="2pc")
    assert DomainEvent.from_data("OrderCreated", event.to_data()) == event
