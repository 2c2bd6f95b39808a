"""Invariants of the orders context: state rows equal the fold of their events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from eventlog.invariants import CheckResult, Violation, differences, fold_check
from orders.domain import Order
from orders.models import Order as OrderRow
from orders.models import OrderEvent
from orders.repository import ALIAS


def orders_fold_check() -> CheckResult:
    rows = {row.id: row for row in OrderRow.objects.using(ALIAS).all()}

    def compare(order: Order, row: OrderRow) -> list[str]:
        return differences(
            {
                "state": (row.state, order.state.value),
                "rejection_reason": (row.rejection_reason, order.rejection_reason.value if order.rejection_reason else None),
                "customer_id": (row.customer_id, order.customer_id),
                "total": (row.total, order.total),
                "mode": (row.mode, order.mode.value),
                "version": (row.version, order.version),
            }
        )

    return fold_check(name="order rows equal the fold of their events", events=OrderEvent, alias=ALIAS, aggregate_class=Order, state_rows=rows, compare=compare)


def orders_by_id() -> dict[Any, tuple[Any, Any, str]]:
    """order id -> (customer id, total, state): what ``verify`` compares with the reservations."""
    return {order_id: (customer_id, total, state) for order_id, customer_id, total, state in OrderRow.objects.using(ALIAS).values_list("id", "customer_id", "total", "state")}


def orders_terminal_check(*, settle_seconds: float = 30.0) -> CheckResult:
    """Invariant 1: every order reaches APPROVED, REJECTED or CANCELLED once faults stop; an
    order still PENDING or CANCEL_PENDING after ``settle_seconds`` is stuck."""
    cutoff = timezone.now() - dt.timedelta(seconds=settle_seconds)
    stuck = OrderRow.objects.using(ALIAS).filter(state__in=("PENDING", "CANCEL_PENDING"), updated_at__lt=cutoff)
    violations = [Violation("every order reaches a terminal state", f"order {order_id}", f"still {state}") for order_id, state in stuck.values_list("id", "state")]
    return CheckResult(name="every order reaches a terminal state", checked=OrderRow.objects.using(ALIAS).count(), violations=violations)
