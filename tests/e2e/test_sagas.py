"""Orchestrated sagas end to end: HTTP to gunicorn, real workers, beat and broker, and faults
injected for real (a killed worker, lost and duplicated messages, a failing database write).
After each, ``manage.py verify`` must pass."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections

from config.launcher import Stack
from customers.models import CreditReservation, CustomersProcessedCommand
from customers.models import Customer as CustomerRow
from orders.models import Order, OrderEvent
from sagas.models import SagaInstance, SagaStep
from tests.conftest import eventually, purge_queues
from tests.e2e.helpers import Api, assert_verify_passes, credit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__")]


def test_approve_reject_equal_to_limit_cancel_and_cancel_conflict(api: Api) -> None:
    customer = api.customer("100.00")
    approved = api.order(customer, "60.00")
    assert approved["state"] == "PENDING" and approved["mode"] == "orchestration"
    assert api.settled_order(approved["id"])["state"] == "APPROVED"
    equal = api.order(customer, "40.00")  # exactly the available credit
    assert api.settled_order(equal["id"])["state"] == "APPROVED"
    too_much = api.order(customer, "0.01")
    rejected = api.settled_order(too_much["id"])
    assert (rejected["state"], rejected["rejection_reason"]) == ("REJECTED", "INSUFFICIENT_CREDIT")
    unknown = api.order(str(uuid.uuid4()), "5.00")
    rejected = api.settled_order(unknown["id"])
    assert (rejected["state"], rejected["rejection_reason"]) == ("REJECTED", "UNKNOWN_CUSTOMER")
    assert credit(api, customer, reserved="100.00")["available_credit"] == "0.00"

    status, body = api.call("POST", f"/api/orders/{too_much['id']}/cancel/")
    assert status == 409 and body["extra"]["state"] == "REJECTED"
    status, body = api.call("POST", f"/api/orders/{approved['id']}/cancel/")
    assert status == 202 and body["state"] == "CANCEL_PENDING"
    assert api.settled_order(approved["id"], states=("CANCELLED",))["state"] == "CANCELLED"
    assert credit(api, customer, reserved="40.00")["available_credit"] == "60.00"
    status, body = api.call("POST", f"/api/orders/{approved['id']}/cancel/")
    assert status == 409

    saga = api.settled_saga(approved["saga_id"])
    assert saga["state"] == "COMPLETED" and [s["name"] for s in saga["steps"]] == ["create_order", "reserve_credit", "approve_order"]
    rejected_saga = api.settled_saga(too_much["saga_id"])
    assert rejected_saga["state"] == "COMPENSATED"
    assert [(s["name"], s["kind"], s["status"]) for s in rejected_saga["steps"]] == [
        ("create_order", "forward", "SUCCEEDED"),
        ("reserve_credit", "forward", "REFUSED"),
        ("create_order", "compensation", "SUCCEEDED"),
    ]
    assert_verify_passes()


def test_a_pending_order_cannot_be_cancelled(api: Api, saga_system: Stack) -> None:
    customer = api.customer("10.00")
    saga_system.processes["worker-customers"].kill()  # the order stays PENDING: a semantic lock
    placed = api.order(customer, "5.00")
    api.settled_order(placed["id"], states=("PENDING",))
    status, body = api.call("POST", f"/api/orders/{placed['id']}/cancel/")
    assert status == 409 and body["extra"]["state"] == "PENDING"
    saga_system.start_worker("customers")
    saga_system.wait_ready(timeout=60)
    assert api.settled_order(placed["id"])["state"] in ("APPROVED", "REJECTED")
    api.settled_saga(placed["saga_id"])
    assert_verify_passes()


def test_twenty_concurrent_orders_against_a_limit_of_ten(api: Api) -> None:
    customer = api.customer("100.00")
    with ThreadPoolExecutor(max_workers=10) as pool:
        placed = list(pool.map(lambda _: api.order(customer, "10.00"), range(20)))
    states = [api.settled_order(p["id"])["state"] for p in placed]
    assert states.count("APPROVED") == 10 and states.count("REJECTED") == 10
    assert credit(api, customer, reserved="100.00")["available_credit"] == "0.00"
    assert CustomerRow.objects.using("customers").get(id=customer).credit_reserved == Decimal("100.00")
    assert_verify_passes()


def test_a_lost_reply_is_recovered_by_the_sweep(api: Api, saga_system: Stack) -> None:
    customer = api.customer("20.00")
    saga_system.processes["worker-sagas"].kill()
    saga_system.processes["beat"].kill()
    placed = api.order(customer, "15.00")
    # The orders worker creates the order and replies; nobody consumes the reply: drop it.
    eventually(lambda: Order.objects.using("orders").filter(id=placed["id"]).exists(), message="the order to be created")
    time.sleep(0.5)
    purge_queues()
    saga_system.start_worker("sagas")
    saga_system.start_beat()
    saga_system.wait_ready(timeout=60)
    assert api.settled_order(placed["id"])["state"] == "APPROVED"
    saga = api.settled_saga(placed["saga_id"])
    assert saga["state"] == "COMPLETED"
    assert saga["steps"][0]["attempts"] >= 2  # re-sent with the same command id, answered from the record
    assert OrderEvent.objects.using("orders").filter(stream_id=placed["id"], type="OrderCreated").count() == 1
    assert_verify_passes()


def _orders_trigger(sql_sqlite: str, sql_postgres: list[str]) -> None:
    with connections["orders"].cursor() as cursor:
        if connections["orders"].vendor == "postgresql":
            for statement in sql_postgres:
                cursor.execute(statement)
        else:
            cursor.execute(sql_sqlite)


def test_a_compensation_that_keeps_failing_ends_failed_and_an_operator_retry_completes_it(api: Api) -> None:
    # The fault, injected in the orders database: rejecting an order fails, every time.
    _orders_trigger(
        "CREATE TRIGGER refuse_rejection BEFORE INSERT ON orders_orderevent WHEN NEW.type = 'OrderRejected' BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
        [
            "CREATE FUNCTION refuse_rejection() RETURNS trigger AS $$ BEGIN IF NEW.type = 'OrderRejected' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_rejection BEFORE INSERT ON orders_orderevent FOR EACH ROW EXECUTE FUNCTION refuse_rejection()",
        ],
    )
    try:
        customer = api.customer("1.00")
        placed = api.order(customer, "5.00")
        saga = api.settled_saga(placed["saga_id"], timeout=90)
        assert saga["state"] == "FAILED"
        compensation = saga["steps"][-1]
        assert (compensation["kind"], compensation["status"], compensation["attempts"]) == ("compensation", "FAILED", 5)
        assert "injected fault" in compensation["error"]
    finally:
        _orders_trigger("DROP TRIGGER refuse_rejection", ["DROP TRIGGER refuse_rejection ON orders_orderevent", "DROP FUNCTION refuse_rejection()"])
    out = StringIO()
    call_command("recover_sagas", "--retry", placed["saga_id"], stdout=out)
    assert "retrying create_order" in out.getvalue()
    assert api.settled_saga(placed["saga_id"])["state"] == "COMPENSATED"
    order = api.settled_order(placed["id"])
    assert (order["state"], order["rejection_reason"]) == ("REJECTED", "INSUFFICIENT_CREDIT")
    assert_verify_passes()


@pytest.mark.saga_env(SAGA_OUTAGE_BUDGET_SECONDS="5")  # x0.2: the pivot gives up after 1 s and 5 attempts
def test_a_pivot_whose_outcome_stays_unknown_is_compensated_and_tombstoned(api: Api, saga_system: Stack) -> None:
    customer = api.customer("50.00")
    saga_system.processes["worker-customers"].kill()  # credit_reserve is never answered
    placed = api.order(customer, "5.00")

    def reserve_gave_up() -> SagaStep | None:
        return SagaStep.objects.using("sagas").filter(saga_id=placed["saga_id"], name="reserve_credit", kind="forward", status="FAILED").first()

    step = eventually(reserve_gave_up, timeout=90, message="the reserve step to time out 5 times")
    assert step.attempts == 5 and "timed out" in step.error
    # Its outcome is unknown, so it is compensated too, and the compensation waits for the
    # customers worker however long it is away: the saga is COMPENSATING, never FAILED.
    eventually(lambda: SagaStep.objects.using("sagas").filter(saga_id=placed["saga_id"], name="reserve_credit", kind="compensation", attempts__gte=2).exists(), timeout=60, message="the release to be retried")
    assert SagaInstance.objects.using("sagas").get(id=placed["saga_id"]).state == "COMPENSATING"
    saga_system.start_worker("customers")
    saga_system.wait_ready(timeout=60)
    saga = api.settled_saga(placed["saga_id"], timeout=90)
    assert saga["state"] == "COMPENSATED"
    assert [(s["name"], s["kind"], s["status"]) for s in saga["steps"]][-2:] == [("reserve_credit", "compensation", "SUCCEEDED"), ("create_order", "compensation", "SUCCEEDED")]
    order = api.settled_order(placed["id"])
    assert (order["state"], order["rejection_reason"]) == ("REJECTED", None)
    # The release found no reservation and left a tombstone under the reserve's command id, in
    # its own transaction: no copy of the reserve, whenever it comes, can hold credit now.
    tombstone = CustomersProcessedCommand.objects.using("customers").get(command_id=step.command_id)
    assert tombstone.reply["reason"] == "COMPENSATED"
    assert CustomerRow.objects.using("customers").get(id=customer).credit_reserved == Decimal("0.00")
    assert not CreditReservation.objects.using("customers").exists()
    assert_verify_passes()
