"""The Customer aggregate: a credit limit, and credit reserved per order.

Pure Python. Commands check the rules and record events; ``apply`` alone changes state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from eventlog.domain import Aggregate, DomainError, DomainEvent, money, positive_money

INSUFFICIENT_CREDIT = "INSUFFICIENT_CREDIT"
UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"


@dataclass(frozen=True)
class CustomerCreated(DomainEvent):
    name: str
    credit_limit: Decimal


@dataclass(frozen=True)
class CreditReserved(DomainEvent):
    order_id: uuid.UUID
    amount: Decimal


@dataclass(frozen=True)
class CreditReservationFailed(DomainEvent):
    order_id: uuid.UUID
    amount: Decimal
    reason: str


@dataclass(frozen=True)
class CreditReleased(DomainEvent):
    order_id: uuid.UUID
    amount: Decimal


class CustomerAlreadyExists(DomainError):
    pass


class InvalidCustomerName(DomainError):
    pass


NAME_MAX_LENGTH = 200


class Customer(Aggregate):
    stream_type = "Customer"

    def __init__(self, aggregate_id: uuid.UUID) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.credit_limit = Decimal("0.00")
        #: Credit held per order. A full fold knows every reservation; a snapshot load
        #: (``CustomerRepository.get_for_order``) knows only the one order a command is about,
        #: which is all a command consults. ``credit_reserved`` is kept as a running total.
        self.reservations: dict[uuid.UUID, Decimal] = {}
        self.credit_reserved = Decimal("0.00")

    # --- queries ---------------------------------------------------------------------------

    @property
    def available_credit(self) -> Decimal:
        return self.credit_limit - self.credit_reserved

    # --- commands --------------------------------------------------------------------------

    @classmethod
    def create(cls, *, customer_id: uuid.UUID, name: str, credit_limit: Decimal | str) -> Customer:
        name = name.strip()
        if not name:
            raise InvalidCustomerName("name must not be empty")
        if len(name) > NAME_MAX_LENGTH:
            raise InvalidCustomerName(f"name longer than {NAME_MAX_LENGTH} characters")
        customer = cls(customer_id)
        customer._record(CustomerCreated(name=name, credit_limit=money(credit_limit)))
        return customer

    @classmethod
    def restore(cls, customer_id: uuid.UUID, *, name: str, credit_limit: Decimal, credit_reserved: Decimal, version: int, reservations: dict[uuid.UUID, Decimal]) -> Customer:
        """A customer from a snapshot of its state (its state row) instead of a fold."""
        customer = cls(customer_id)
        customer.name, customer.credit_limit, customer.credit_reserved, customer.version = name, credit_limit, credit_reserved, version
        customer.reservations = dict(reservations)
        return customer

    def credit_reserve(self, *, order_id: uuid.UUID, amount: Decimal | str) -> bool:
        """Reserve credit for an order; ``False`` (and a recorded failure) if it does not fit.

        Reserving again for the same order is a no-op that answers as the first time did.
        Equality with the available credit is allowed.
        """
        if order_id in self.reservations:
            return True
        amount = positive_money(amount)
        if amount > self.available_credit:
            self._record(CreditReservationFailed(order_id=order_id, amount=amount, reason=INSUFFICIENT_CREDIT))
            return False
        self._record(CreditReserved(order_id=order_id, amount=amount))
        return True

    def credit_release(self, *, order_id: uuid.UUID) -> None:
        """Release an order's reservation; a no-op when there is none (already released)."""
        if order_id not in self.reservations:
            return
        self._record(CreditReleased(order_id=order_id, amount=self.reservations[order_id]))

    # --- state -----------------------------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        match event:
            case CustomerCreated(name=name, credit_limit=credit_limit):
                self.name = name
                self.credit_limit = credit_limit
            case CreditReserved(order_id=order_id, amount=amount):
                self.reservations[order_id] = amount
                self.credit_reserved += amount
            case CreditReleased(order_id=order_id, amount=amount):
                del self.reservations[order_id]
                self.credit_reserved -= amount
            case CreditReservationFailed():
                pass
            case _:
                raise TypeError(f"Customer cannot apply {event.type}")


class CreditCheck(Aggregate):
    """The answer to a choreographed order whose customer this context does not know.

    ``CreditReservationFailed`` belongs on the customer's stream, but an unknown customer has
    none, and inventing one would make a Customer stream without ``CustomerCreated``. So the
    refusal gets a stream of its own, one per order (``credit_check_id``), with that one event.
    """

    stream_type = "CreditCheck"

    @classmethod
    def unknown_customer(cls, *, order_id: uuid.UUID, amount: Decimal | str) -> CreditCheck:
        check = cls(credit_check_id(order_id))
        check._record(CreditReservationFailed(order_id=order_id, amount=positive_money(amount), reason=UNKNOWN_CUSTOMER))
        return check

    def apply(self, event: DomainEvent) -> None:
        if not isinstance(event, CreditReservationFailed):
            raise TypeError(f"CreditCheck cannot apply {event.type}")


#: Namespace of the credit-check streams (uuid5 of the order id): stable, and never an order's id.
CREDIT_CHECK_NAMESPACE = uuid.UUID("6f1c2b7e-3d4a-5e9f-8a0b-1c2d3e4f5a6b")


def credit_check_id(order_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(CREDIT_CHECK_NAMESPACE, str(order_id))
