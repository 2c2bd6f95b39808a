"""``manage.py verify``: every invariant of the brief (section 5) that exists so far.

Each context checks its own state; this module, the composition root, adds the checks that
span contexts (credit reserved per customer against the orders' states).
"""

from __future__ import annotations

from collections.abc import Callable

from customers.invariants import customers_fold_check, reservations_by_order
from eventlog.invariants import CheckResult, Violation, outbox_in_log_check
from orders.invariants import orders_by_id, orders_fold_check, orders_terminal_check
from readmodels.invariants import readmodels_replay_check
from sagas.invariants import sagas_settled_check


def credit_matches_orders_check() -> CheckResult:
    """Credit is reserved for exactly the orders that hold it, for their total.

    APPROVED orders must hold a reservation; REJECTED and CANCELLED ones must not; PENDING and
    CANCEL_PENDING orders are in flight (a saga is between its steps), so either is fine. With
    the customers' own check (reserved = sum of reservations <= limit) this is invariant 2.
    """
    violations: list[Violation] = []
    reservations = reservations_by_order()
    orders = orders_by_id()
    for order_id, (customer_id, total, state) in orders.items():
        reservation = reservations.get(order_id)
        subject = f"order {order_id}"
        if reservation is None:
            if state == "APPROVED":
                violations.append(Violation("credit = approved orders", subject, "is APPROVED but holds no credit"))
        elif state in ("REJECTED", "CANCELLED"):
            violations.append(Violation("credit = approved orders", subject, f"is {state} but still holds {reservation[1]} credit"))
        elif reservation != (customer_id, total):
            violations.append(Violation("credit = approved orders", subject, f"reserves {reservation[1]} at customer {reservation[0]}, but the order is {total} for {customer_id}"))
    for order_id in reservations.keys() - orders.keys():
        violations.append(Violation("credit = approved orders", f"order {order_id}", "credit is reserved for an order that does not exist"))
    return CheckResult(name="credit reserved matches the orders holding it", checked=len(orders), violations=violations)


CHECKS: list[Callable[[], CheckResult]] = [
    customers_fold_check,
    orders_fold_check,
    outbox_in_log_check,
    credit_matches_orders_check,
    readmodels_replay_check,
    orders_terminal_check,
    sagas_settled_check,
]
