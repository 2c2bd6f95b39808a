"""The Customer aggregate's rules and folding, as pure Python (no database)."""

import uuid
from decimal import Decimal

import pytest

from customers.domain import (
    CreditReleased,
    CreditReservationFailed,
    CreditReserved,
    Customer,
    CustomerCreated,
    InvalidCustomerName,
)
from eventlog.domain import InvalidAmount


def new_customer(limit: str = "100.00") -> Customer:
    customer = Customer.create(customer_id=uuid.uuid4(), name="Ada", credit_limit=limit)
    customer.mark_saved()
    return customer


def test_create_records_customer_created_with_decimal_limit() -> None:
    customer_id = uuid.uuid4()
    customer = Customer.create(customer_id=customer_id, name="  Ada  ", credit_limit="125.5")
    assert customer.pending_events == [(1, CustomerCreated(name="Ada", credit_limit=Decimal("125.50")))]
    assert (customer.name, customer.credit_limit, customer.available_credit, customer.version) == ("Ada", Decimal("125.50"), Decimal("125.50"), 1)
    assert customer.pending_events[0][1].to_data() == {"name": "Ada", "credit_limit": "125.50"}


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_create_refuses_bad_names(name: str) -> None:
    with pytest.raises(InvalidCustomerName):
        Customer.create(customer_id=uuid.uuid4(), name=name, credit_limit="1.00")


@pytest.mark.parametrize("limit", ["-1.00", "1.001", "abc", "NaN", "Infinity", "1e20", 1.5])
def test_create_refuses_bad_limits(limit: object) -> None:
    with pytest.raises(InvalidAmount):
        Customer.create(customer_id=uuid.uuid4(), name="Ada", credit_limit=limit)  # type: ignore[arg-type]  # bad input on purpose: the aggregate must refuse it


def test_zero_limit_is_allowed_and_reserves_nothing() -> None:
    customer = new_customer("0.00")
    assert customer.credit_reserve(order_id=uuid.uuid4(), amount="0.01") is False


def test_reserve_within_limit_records_credit_reserved() -> None:
    customer = new_customer()
    order_id = uuid.uuid4()
    assert customer.credit_reserve(order_id=order_id, amount="40.00") is True
    assert customer.pending_events == [(2, CreditReserved(order_id=order_id, amount=Decimal("40.00")))]
    assert customer.credit_reserved == Decimal("40.00")
    assert customer.available_credit == Decimal("60.00")


def test_reserve_equal_to_available_credit_is_allowed() -> None:
    customer = new_customer()
    customer.credit_reserve(order_id=uuid.uuid4(), amount="60.00")
    assert customer.credit_reserve(order_id=uuid.uuid4(), amount="40.00") is True
    assert customer.available_credit == Decimal("0.00")


def test_reserve_above_available_credit_records_a_failure_and_reserves_nothing() -> None:
    customer = new_customer()
    customer.credit_reserve(order_id=uuid.uuid4(), amount="60.00")
    order_id = uuid.uuid4()
    assert customer.credit_reserve(order_id=order_id, amount="40.01") is False
    assert customer.pending_events[-1][1] == CreditReservationFailed(order_id=order_id, amount=Decimal("40.01"), reason="INSUFFICIENT_CREDIT")
    assert customer.credit_reserved == Decimal("60.00")


def test_reserving_twice_for_one_order_is_a_no_op() -> None:
    customer = new_customer()
    order_id = uuid.uuid4()
    customer.credit_reserve(order_id=order_id, amount="30.00")
    version = customer.version
    assert customer.credit_reserve(order_id=order_id, amount="30.00") is True
    assert customer.version == version
    assert customer.credit_reserved == Decimal("30.00")


@pytest.mark.parametrize("amount", ["0", "0.00", "-5.00", "1.234"])
def test_reserve_refuses_non_positive_or_over_precise_amounts(amount: str) -> None:
    customer = new_customer()
    with pytest.raises(InvalidAmount):
        customer.credit_reserve(order_id=uuid.uuid4(), amount=amount)
    assert customer.pending_events == []


def test_release_returns_the_reserved_amount_and_is_idempotent() -> None:
    customer = new_customer()
    order_id = uuid.uuid4()
    customer.credit_reserve(order_id=order_id, amount="30.00")
    customer.credit_release(order_id=order_id)
    assert customer.pending_events[-1][1] == CreditReleased(order_id=order_id, amount=Decimal("30.00"))
    assert customer.available_credit == Decimal("100.00")
    version = customer.version
    customer.credit_release(order_id=order_id)
    customer.credit_release(order_id=uuid.uuid4())
    assert customer.version == version


def test_state_is_the_fold_of_the_events() -> None:
    customer = new_customer()
    first, second = uuid.uuid4(), uuid.uuid4()
    customer.credit_reserve(order_id=first, amount="10.00")
    customer.credit_reserve(order_id=second, amount="20.00")
    customer.credit_release(order_id=first)
    customer.credit_reserve(order_id=uuid.uuid4(), amount="999.00")
    history = [CustomerCreated(name="Ada", credit_limit=Decimal("100.00"))] + [event for _, event in customer.pending_events]
    folded = Customer.fold(customer.id, history)
    assert (folded.version, folded.reservations, folded.credit_reserved) == (customer.version, customer.reservations, Decimal("20.00"))
    assert folded.version == 5
