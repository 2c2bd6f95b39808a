"""A context's database unreachable, for real, for 90 seconds while 100 orders are in flight.

That is about how long a managed PostgreSQL failover takes. The saga engine treats it as a
transient fault: steps wait and retry with capped backoff, and a compensatable or pivot step
gives up only after ``SAGA_OUTAGE_BUDGET_SECONDS`` (900 s x the 0.2 time scale of
``saga_system`` = 180 s, twice the outage). So afterwards every saga finishes as it would have
without the outage: with credit for all of them, every order is APPROVED, none is rejected by
the outage, no saga is FAILED or COMPENSATED, and ``verify`` passes.

How the database is made unreachable (PostgreSQL: connections refused and ended; SQLite: its
write lock held) is in ``tests.e2e.helpers.DatabaseOutage``. Each test proves the fault hit the
system (the context's worker logged the refusal) and that the orders were in flight through
it (their sagas still RUNNING at its end), before it checks the outcome.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from config.launcher import Stack
from customers.models import CreditReservation
from customers.models import Customer as CustomerRow
from orders.models import Order
from sagas.models import SagaInstance
from tests.conftest import eventually
from tests.e2e.helpers import Api, assert_verify_passes, database_unreachable, log_mentions

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.timeout(600)]

OUTAGE_SECONDS = 90
ORDERS = 100
TOTAL = Decimal("7.00")


@pytest.mark.parametrize("alias", ["orders", "customers"])
def test_a_context_database_unreachable_for_90_seconds_delays_but_decides_nothing(alias: str, api: Api, saga_system: Stack) -> None:
    customer = api.customer(str(TOTAL * ORDERS + 1))  # credit for every order, and a cent more
    with ThreadPoolExecutor(max_workers=4) as pool:
        placed = list(pool.map(lambda _: api.order(customer, str(TOTAL)), range(10)))  # some mid-step when it starts
        with database_unreachable(alias) as outage:
            started = time.monotonic()
            # The API writes only the sagas database, so orders are still accepted with 202.
            placed += list(pool.map(lambda _: api.order(customer, str(TOTAL)), range(ORDERS - 10)))
            # The fault is real: the context's worker was refused by its database.
            eventually(lambda: log_mentions(saga_system, f"worker-{alias}", outage.refusal), timeout=OUTAGE_SECONDS - 10, interval=0.5, message=f"worker-{alias} to log {outage.refusal!r}")
            while time.monotonic() - started < OUTAGE_SECONDS:
                time.sleep(1)
            outage.assert_refuses()  # still down at its end
            # ...and the orders were in flight through it: their sagas wait, none has been decided.
            saga_ids = [p["saga_id"] for p in placed]
            states = list(SagaInstance.objects.using("sagas").filter(id__in=saga_ids).values_list("state", flat=True))
            assert states.count("RUNNING") >= ORDERS - 10, Counter(states)
            assert "FAILED" not in states and "COMPENSATED" not in states, Counter(states)
    if outage.vendor == "postgresql":
        assert outage.terminated > 0, "no backend of the database was ever ended"

    sagas = [api.settled_saga(p["saga_id"], timeout=300) for p in placed]
    assert [s["state"] for s in sagas] == ["COMPLETED"] * ORDERS, {s["id"]: (s["state"], s["steps"][-1]) for s in sagas if s["state"] != "COMPLETED"}
    orders = [api.settled_order(p["id"], timeout=60) for p in placed]
    assert [o["state"] for o in orders] == ["APPROVED"] * ORDERS, [(o["id"], o["state"], o["rejection_reason"]) for o in orders if o["state"] != "APPROVED"]

    # Credit is exact per order: no APPROVED order without its credit, no REJECTED one with it.
    held = dict(CreditReservation.objects.using("customers").values_list("order_id", "amount"))
    for order_id, state, total in Order.objects.using("orders").filter(customer_id=customer).values_list("id", "state", "total"):
        assert held.get(order_id) == (total if state == "APPROVED" else None), (order_id, state, held.get(order_id))
    assert CustomerRow.objects.using("customers").get(id=customer).credit_reserved == TOTAL * ORDERS
    assert_verify_passes()
