"""Invariants of the customers context: state rows equal the fold, credit arithmetic holds,
and no order ever holds two reservations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from customers.domain import Customer
from customers.models import CreditReservation, CustomerEvent
from customers.models import Customer as CustomerRow
from customers.repository import ALIAS
from eventlog.invariants import CheckResult, Violation, differences, fold_check


def customers_fold_check() -> CheckResult:
    rows = {row.id: row for row in CustomerRow.objects.using(ALIAS).all()}
    reservations: dict[Any, dict[Any, Decimal]] = {}
    for order_id, customer_id, amount in CreditReservation.objects.using(ALIAS).values_list("order_id", "customer_id", "amount"):
        reservations.setdefault(customer_id, {})[order_id] = amount

    def compare(customer: Customer, row: CustomerRow) -> list[str]:
        found = differences(
            {
                "name": (row.name, customer.name),
                "credit_limit": (row.credit_limit, customer.credit_limit),
                "credit_reserved": (row.credit_reserved, customer.credit_reserved),
                "version": (row.version, customer.version),
            }
        )
        if reservations.get(customer.id, {}) != customer.reservations:
            found.append("credit reservations differ from the fold")
        held = sum(reservations.get(customer.id, {}).values(), Decimal("0.00"))
        if row.credit_reserved != held:
            found.append(f"reserved {row.credit_reserved}, but its reservations add up to {held}")
        if row.credit_reserved > row.credit_limit or row.credit_limit - row.credit_reserved < 0:
            found.append(f"reserved {row.credit_reserved} exceeds limit {row.credit_limit} (available would be {row.credit_limit - row.credit_reserved})")
        return found

    return fold_check(name="customer rows equal the fold of their events", events=CustomerEvent, alias=ALIAS, aggregate_class=Customer, state_rows=rows, compare=compare)


def reservations_once_check() -> CheckResult:
    """Never a double reservation for one order: in the events, an order is reserved again only
    after its credit was released, and at one customer at a time. (The reservations table cannot
    hold two rows for an order; the events could, and the fold would then count it twice.)"""
    violations: list[Violation] = []
    holder: dict[str, Any] = {}  # order id -> the customer holding its credit now
    events = CustomerEvent.objects.using(ALIAS).filter(type__in=("CreditReserved", "CreditReleased")).order_by("id")
    checked = 0
    for customer_id, kind, data in events.values_list("stream_id", "type", "data").iterator(chunk_size=5000):
        checked += 1
        order_id = str(data["order_id"])
        if kind == "CreditReleased":
            holder.pop(order_id, None)
        elif order_id in holder:
            where = "again" if holder[order_id] == customer_id else f"at customer {customer_id} too"
            violations.append(Violation("never a double reservation for one order", f"order {order_id}", f"credit reserved {where} while customer {holder[order_id]} holds it"))
        else:
            holder[order_id] = customer_id
    return CheckResult(name="never a double reservation for one order", checked=checked, violations=violations)


def credit_reserved_by_customer() -> dict[Any, Decimal]:
    """customer id -> credit reserved (its state row): what ``verify`` compares with the orders."""
    return dict(CustomerRow.objects.using(ALIAS).values_list("id", "credit_reserved"))


def reservations_by_order() -> dict[Any, tuple[Any, Decimal]]:
    """order id -> (customer id, amount reserved): what ``verify`` compares with the orders."""
    return {order_id: (customer_id, amount) for order_id, customer_id, amount in CreditReservation.objects.using(ALIAS).values_list("order_id", "customer_id", "amount")}


__all__ = ["credit_reserved_by_customer", "customers_fold_check", "reservations_by_order", "reservations_once_check", "Violation"]
