"""Invariants of the customers context: state rows equal the fold, credit arithmetic holds."""

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
        if row.credit_reserved > row.credit_limit or row.credit_limit - row.credit_reserved < 0:
            found.append(f"reserved {row.credit_reserved} exceeds limit {row.credit_limit}")
        return found

    return fold_check(name="customer rows equal the fold of their events", events=CustomerEvent, alias=ALIAS, aggregate_class=Customer, state_rows=rows, compare=compare)


def reservations_by_order() -> dict[Any, tuple[Any, Decimal]]:
    """order id -> (customer id, amount reserved): what ``verify`` compares with the orders."""
    return {order_id: (customer_id, amount) for order_id, customer_id, amount in CreditReservation.objects.using(ALIAS).values_list("order_id", "customer_id", "amount")}


__all__ = ["customers_fold_check", "reservations_by_order", "Violation"]
