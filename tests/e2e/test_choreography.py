"""Choreographed sagas end to end: HTTP to gunicorn, real workers, beat and broker; the trace
read over the API; a worker killed mid-flow; a handler made to fail by a real database trigger.
After each, ``manage.py verify`` must pass."""

from __future__ import annotations

import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from config.launcher import Stack
from customers.models import Customer as CustomerRow
from orders.models import OrdersParkedEvent
from tests.conftest import eventually
from tests.e2e.helpers import Api, assert_verify_passes, credit, snapshot, wait_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__")]


def place(api: Api, customer_id: str, total: str) -> dict[str, Any]:
    status, body = api.call("POST", "/api/orders/", {"customer_id": customer_id, "total": total, "mode": "choreography"})
    assert status == 202, body
    assert body["mode"] == "choreography" and body["state"] == "PENDING"
    return body


def trace(api: Api, saga_id: str, *, states: tuple[str, ...] = ("COMPLETED", "COMPENSATED"), timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status, body = api.call("GET", f"/api/sagas/{saga_id}/")
        return body if status == 200 and body["state"] in states else None

    return eventually(probe, timeout=timeout, interval=0.2, message=f"flow {saga_id} to reach {states}")


def names(flow: dict[str, Any]) -> list[str]:
    return [step["name"] for step in flow["steps"]]


def test_approve_reject_equal_to_limit_unknown_customer_cancel_and_its_conflicts(api: Api) -> None:
    customer = api.customer("100.00")
    approved = place(api, customer, "60.00")
    assert api.settled_order(approved["id"])["state"] == "APPROVED"
    equal = place(api, customer, "40.00")  # exactly the available credit
    assert api.settled_order(equal["id"])["state"] == "APPROVED"
    too_much = place(api, customer, "0.01")
    rejected = api.settled_order(too_much["id"])
    assert (rejected["state"], rejected["rejection_reason"]) == ("REJECTED", "INSUFFICIENT_CREDIT")
    unknown = place(api, str(uuid.uuid4()), "5.00")
    rejected = api.settled_order(unknown["id"])
    assert (rejected["state"], rejected["rejection_reason"]) == ("REJECTED", "UNKNOWN_CUSTOMER")
    history = credit(api, customer, reserved="100.00")
    assert history["available_credit"] == "0.00"

    status, body = api.call("POST", f"/api/orders/{too_much['id']}/cancel/")
    assert status == 409 and body["extra"]["state"] == "REJECTED"
    status, cancel = api.call("POST", f"/api/orders/{approved['id']}/cancel/")
    assert status == 202 and cancel["state"] == "CANCEL_PENDING"
    assert api.settled_order(approved["id"], states=("CANCELLED",))["state"] == "CANCELLED"
    assert credit(api, customer, reserved="40.00")["available_credit"] == "60.00"
    assert api.call("POST", f"/api/orders/{approved['id']}/cancel/")[0] == 409

    # The trace of each flow: its events in causal order, each from its context, and its end.
    flow = trace(api, approved["saga_id"])
    assert (flow["mode"], flow["type"], flow["state"], flow["awaiting"]) == ("choreography", "create_order", "COMPLETED", None)
    assert [(s["name"], s["context"]) for s in flow["steps"]] == [("OrderCreated", "orders"), ("CreditReserved", "customers"), ("OrderApproved", "orders")]
    assert flow["steps"][1]["causation_id"] == flow["steps"][0]["event_id"]
    assert names(trace(api, too_much["saga_id"])) == ["OrderCreated", "CreditReservationFailed", "OrderRejected"]
    assert trace(api, unknown["saga_id"])["state"] == "COMPENSATED"
    cancelled = trace(api, cancel["saga_id"])
    assert (cancelled["type"], names(cancelled)) == ("cancel_order", ["OrderCancelRequested", "CreditReleased", "OrderCancelled"])
    status, listed = api.call("GET", "/api/sagas/?mode=choreography")
    assert status == 200 and listed["count"] == 5
    assert_verify_passes()


def test_twenty_concurrent_orders_against_a_limit_of_ten(api: Api) -> None:
    customer = api.customer("100.00")
    with ThreadPoolExecutor(max_workers=10) as pool:
        placed = list(pool.map(lambda _: place(api, customer, "10.00"), range(20)))
    states = [api.settled_order(p["id"])["state"] for p in placed]
    assert states.count("APPROVED") == 10 and states.count("REJECTED") == 10
    assert credit(api, customer, reserved="100.00")["available_credit"] == "0.00"
    assert CustomerRow.objects.using("customers").get(id=customer).credit_reserved == Decimal("100.00")
    assert_verify_passes()


def test_a_flow_whose_handler_is_down_is_stuck_naming_it_and_finishes_when_it_is_back(api: Api, saga_system: Stack) -> None:
    customer = api.customer("50.00")
    saga_system.processes["worker-customers"].signal(signal.SIGKILL)  # the customers' reaction cannot run
    placed = place(api, customer, "5.00")

    def stuck() -> dict[str, Any] | None:
        status, body = api.call("GET", f"/api/sagas/{placed['saga_id']}/")
        return body if status == 200 and body["stuck"] else None

    flow = eventually(stuck, timeout=60, message="the flow to be stuck")  # 10 s x SAGA_TIME_SCALE 0.2
    assert flow["state"] == "RUNNING" and names(flow) == ["OrderCreated", "CreditReserved | CreditReservationFailed"]
    awaiting = flow["awaiting"]
    assert (awaiting["from_context"], awaiting["subscriber"]) == ("customers", "customers.choreography") and awaiting["subscriber_lag"] >= 1
    status, listed = api.call("GET", "/api/sagas/?stuck=true&mode=choreography")
    assert [s["id"] for s in listed["results"]] == [placed["saga_id"]]
    saga_system.start_worker("customers")
    saga_system.wait_ready(timeout=60)
    assert api.settled_order(placed["id"])["state"] == "APPROVED"
    assert trace(api, placed["saga_id"])["state"] == "COMPLETED"
    assert_verify_passes()


def _trigger(sql_sqlite: str, sql_postgres: list[str]) -> None:
    from django.db import connections

    with connections["orders"].cursor() as cursor:
        for statement in sql_postgres if connections["orders"].vendor == "postgresql" else [sql_sqlite]:
            cursor.execute(statement)


def test_a_handler_that_keeps_failing_parks_its_event_and_an_operator_retry_finishes_the_flow(api: Api) -> None:
    _trigger(
        "CREATE TRIGGER refuse_approval BEFORE INSERT ON orders_orderevent WHEN NEW.type = 'OrderApproved' BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
        [
            "CREATE FUNCTION refuse_approval() RETURNS trigger AS $$ BEGIN IF NEW.type = 'OrderApproved' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_approval BEFORE INSERT ON orders_orderevent FOR EACH ROW EXECUTE FUNCTION refuse_approval()",
        ],
    )
    try:
        customer = api.customer("50.00")
        placed = place(api, customer, "5.00")
        eventually(lambda: OrdersParkedEvent.objects.using("orders").filter(saga_id=placed["saga_id"], parked_at__isnull=False).exists(), timeout=90, message="the approval to be parked")
        status, flow = api.call("GET", f"/api/sagas/{placed['saga_id']}/")
        assert flow["state"] == "RUNNING" and flow["stuck"] is True
        assert flow["awaiting"]["parked"] is True and "injected fault" in flow["awaiting"]["error"]
        assert flow["steps"][-1]["status"] == "FAILED" and flow["steps"][-1]["attempts"] == 5
        # The log goes on past the parked event: the next order's events are handled (its own
        # approval is refused by the same trigger, and parked in turn).
        other = place(api, customer, "6.00")
        eventually(lambda: OrdersParkedEvent.objects.using("orders").filter(saga_id=other["saga_id"], parked_at__isnull=False).exists(), timeout=90, message="the second approval to be parked")
    finally:
        _trigger("DROP TRIGGER refuse_approval", ["DROP TRIGGER refuse_approval ON orders_orderevent", "DROP FUNCTION refuse_approval()"])
    out = StringIO()
    call_command("retry_parked_events", "--all", stdout=out)
    assert out.getvalue().count(": done") == 2, out.getvalue()
    for order in (placed, other):
        assert api.settled_order(order["id"])["state"] == "APPROVED"
        assert trace(api, order["saga_id"])["state"] == "COMPLETED"
    assert_verify_passes()


def test_every_event_relayed_and_every_wake_up_delivered_twice_changes_nothing(api: Api, saga_system: Stack) -> None:
    """At-least-once, for real: the outboxes are relayed again from scratch (a relay that died
    between copying and marking) and every subscriber's wake-up is delivered twice, through the
    broker; each task is waited for in its worker's log before anything is compared."""
    from config.celery_app import app
    from customers.models import CustomerEvent
    from eventlog.models import LogEvent
    from orders.models import OrderEvent

    customer = api.customer("100.00")
    approved, rejected = place(api, customer, "60.00"), place(api, customer, "60.00")
    for order in (approved, rejected):
        trace(api, order["saga_id"])
    status, cancel = api.call("POST", f"/api/orders/{approved['id']}/cancel/")
    assert status == 202
    trace(api, cancel["saga_id"])
    before = (snapshot(), LogEvent.objects.using("eventlog").count(), [names(trace(api, o["saga_id"])) for o in (approved, rejected, cancel)])
    OrderEvent.objects.using("orders").update(relayed_at=None)
    CustomerEvent.objects.using("customers").update(relayed_at=None)
    sent = [(str(app.send_task("eventlog.relay", args=(source,)).id), "eventlog") for source in ("orders", "customers") for _ in range(2)]
    for queue, subscriber in (("customers", "customers.choreography"), ("orders", "orders.choreography"), ("sagas", "sagas.choreography_trace")):
        sent += [(str(app.send_task("eventlog.subscriber_advance", args=(subscriber,), queue=queue).id), queue) for _ in range(2)]
    for task_id, queue in sent:
        wait_task(saga_system, queue, task_id)
    after = (snapshot(), LogEvent.objects.using("eventlog").count(), [names(trace(api, o["saga_id"])) for o in (approved, rejected, cancel)])
    assert after == before
    assert not OrdersParkedEvent.objects.using("orders").exists()
    assert_verify_passes()
