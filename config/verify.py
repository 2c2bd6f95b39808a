"""``manage.py verify``: every invariant of the brief (section 5) that exists so far.

Each context checks its own state; this module, the composition root, adds the checks that
span contexts (credit reserved per customer against the orders' states).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from customers.invariants import credit_reserved_by_customer, customers_fold_check, reservations_by_order, reservations_once_check
from eventlog.invariants import CheckResult, Violation, outbox_in_log_check
from orders.invariants import orders_by_id, orders_fold_check, orders_terminal_check
from readmodels.invariants import readmodels_replay_check
from sagas.invariants import active_sagas_by_subject, sagas_settled_check, two_phase_prepared_check

#: The order states whose credit is reserved (brief, invariant 2).
HOLDING = ("APPROVED", "CANCEL_PENDING")
CREDIT = "credit = APPROVED + CANCEL_PENDING orders"


def _explained(state: str | None, mode: str) -> bool:
    """Whether a saga in flight on the order, in ``mode``, can leave it in ``state`` with its
    credit the other way round from what the state says (held when it should not be, or not
    held when it should). ``state`` None: there is no order row, only a reservation."""
    if state in ("PENDING", "CANCEL_PENDING"):
        # Placing: reserved, the approval (or the compensating release) still to come.
        # Cancelling: released, the confirmation (or the compensating re-reserve) still to come.
        return True
    # 2PC commits its prepared halves one after the other, orders first: that leaves an APPROVED
    # order without its credit, or a CANCELLED one with it, until the customers half commits
    # (and credit for an order not committed yet, were customers first).
    return mode == "2pc" and state in ("APPROVED", "CANCELLED", None)


def credit_matches_orders_check() -> CheckResult:
    """Invariant 2 across the two contexts: per customer, reserved credit = the sum of the
    totals of its APPROVED and CANCEL_PENDING orders, and each such order holds exactly one
    reservation, for its own total at its own customer (the customers' own checks add
    reserved <= limit, available >= 0, and never a double reservation).

    Exactly, for every order with no saga in flight. An order with a RUNNING or COMPENSATING
    saga may differ only as that saga's steps explain (:func:`_explained`); a reservation for
    another amount or customer, or credit held by a REJECTED or CANCELLED order, is never
    explained. A customer's sum is compared only when none of its orders has a saga in flight.
    """
    violations: list[Violation] = []
    reservations = reservations_by_order()
    orders = orders_by_id()
    active = active_sagas_by_subject()
    in_flight: set[Any] = set()  # customers with an order whose saga is running
    for order_id in orders.keys() | reservations.keys():
        order = orders.get(order_id)
        reservation = reservations.get(order_id)
        saga = active.get(order_id)
        state = order[2] if order else None
        customer_id = order[0] if order else reservation[0]  # type: ignore[index]  # the id is in one of the two maps: no order means a reservation
        if saga is not None:
            in_flight.add(customer_id)
        subject = f"order {order_id} of customer {customer_id}"
        if order is not None and reservation is not None and reservation != (order[0], order[1]):
            violations.append(Violation(CREDIT, subject, f"reserves {reservation[1]} at customer {reservation[0]}, but the order is {order[1]} for customer {order[0]}"))
            continue
        holds, should = reservation is not None, state in HOLDING
        if holds == should or (saga is not None and _explained(state, saga[1])):
            continue
        during = f" (saga {saga[0]}, {saga[1]}, {saga[2]}, cannot explain it)" if saga else " (no saga in flight)"
        if order is None:
            detail = f"credit {reservation[1]} is reserved for an order that does not exist"  # type: ignore[index]  # the id is in one of the two maps: no order means a reservation
        elif holds:
            detail = f"is {state} but holds {reservation[1]} credit"  # type: ignore[index]  # holds means a reservation
        else:
            detail = f"is {state} but holds no credit"
        violations.append(Violation(CREDIT, subject, detail + during))
    owed: dict[Any, Decimal] = {}
    for customer_id, total, state in orders.values():
        if state in HOLDING:
            owed[customer_id] = owed.get(customer_id, Decimal("0.00")) + total
    reserved = credit_reserved_by_customer()
    for customer_id in (reserved.keys() | owed.keys()) - in_flight:
        expected = owed.get(customer_id, Decimal("0.00"))
        if customer_id not in reserved:
            violations.append(Violation(CREDIT, f"customer {customer_id}", f"does not exist, but its APPROVED and CANCEL_PENDING orders total {expected}"))
        elif reserved[customer_id] != expected:
            violations.append(Violation(CREDIT, f"customer {customer_id}", f"reserved {reserved[customer_id]}, but its APPROVED and CANCEL_PENDING orders total {expected}"))
    return CheckResult(name="credit reserved matches the orders holding it", checked=len(orders), violations=violations)


CHECKS: list[Callable[[], CheckResult]] = [
    customers_fold_check,
    reservations_once_check,
    orders_fold_check,
    outbox_in_log_check,
    credit_matches_orders_check,
    readmodels_replay_check,
    orders_terminal_check,
    sagas_settled_check,
    two_phase_prepared_check,
]
