"""Use cases of the customers context; each runs in one transaction of its database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from customers.domain import INSUFFICIENT_CREDIT, Customer, CustomerAlreadyExists
from customers.repository import ALIAS, customer_repository
from eventlog.domain import ConcurrencyError, MessageContext
from eventlog.persistence import atomic_with_retry


class CustomerNotFound(LookupError):
    def __init__(self, customer_id: uuid.UUID) -> None:
        super().__init__(f"customer {customer_id} does not exist")
        self.customer_id = customer_id


@dataclass(frozen=True)
class CreditReservationResult:
    reserved: bool
    reason: str | None = None


def _load(customer_id: uuid.UUID, order_id: uuid.UUID) -> Customer:
    customer = customer_repository.get_for_order(customer_id, order_id)
    if customer is None:
        raise CustomerNotFound(customer_id)
    return customer


def customer_create(*, name: str, credit_limit: Decimal | str, customer_id: uuid.UUID | None = None, context: MessageContext | None = None) -> Customer:
    customer_id = customer_id or uuid.uuid4()
    context = context or MessageContext(correlation_id=customer_id)

    customer = Customer.create(customer_id=customer_id, name=name, credit_limit=credit_limit)
    try:
        # No read first: version 1 of the stream can be written once, the constraint says so.
        # The event and the state row in one transaction of their own (one statement on
        # PostgreSQL), or in the caller's when one is open.
        customer_repository.create(customer, context=context)
    except ConcurrencyError:
        raise CustomerAlreadyExists(f"customer {customer_id} already exists") from None
    return customer


def credit_reserve(*, customer_id: uuid.UUID, order_id: uuid.UUID, amount: Decimal | str, context: MessageContext) -> CreditReservationResult:
    """Reserve credit for an order, at most once per order; retried on a concurrent writer."""

    def command() -> CreditReservationResult:
        customer = _load(customer_id, order_id)
        reserved = customer.credit_reserve(order_id=order_id, amount=amount)
        customer_repository.save(customer, context=context)
        return CreditReservationResult(reserved=True) if reserved else CreditReservationResult(reserved=False, reason=INSUFFICIENT_CREDIT)

    return atomic_with_retry(ALIAS, command)


def credit_release(*, customer_id: uuid.UUID, order_id: uuid.UUID, context: MessageContext) -> None:
    def command() -> None:
        customer = _load(customer_id, order_id)
        customer.credit_release(order_id=order_id)
        customer_repository.save(customer, context=context)

    atomic_with_retry(ALIAS, command)
