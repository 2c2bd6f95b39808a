"""Messages killed, duplicated and late, for real, and proven to have been handled.

- A worker's pool child SIGKILLed while its step provably runs: the worker's parent requeues
  the message (``task_acks_late`` + ``task_reject_on_worker_lost``) and the step finishes on
  its first attempt, before any deadline could make the sweep send it again.
- Every command and every reply delivered twice, while a saga runs and after sagas ended:
  each duplicate is seen to finish in its worker's log (Celery logs every task's result at
  INFO), then nothing has changed.
- A forward command delivered after its step was compensated: the compensation left a
  tombstone, so it is refused (``COMPENSATED``) and changes nothing.

No sleep stands before an assertion that nothing changed: each waits for a positive sign that
the message it is about has run (``wait_task``, ``sagas_queue_drained``).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from config.celery_app import app as celery_app
from config.launcher import Stack
from customers.models import CreditReservation, CustomerEvent, CustomersProcessedCommand
from customers.models import Customer as CustomerRow
from orders.models import Order, OrderEvent, OrdersProcessedCommand
from sagas.models import SagaInstance, SagaStep
from tests.conftest import eventually
from tests.e2e.helpers import (
    Api,
    assert_verify_passes,
    customer_locked,
    log_mentions,
    sagas_queue_drained,
    send_by_name,
    snapshot,
    step_message,
    step_reply,
    task_outcome,
    wait_task,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__")]

#: Step timeouts of 10 s x 10: no deadline passes during these tests, so no step is re-sent by
#: the sweep and every attempt count below is the participant's own doing.
SLOW_DEADLINES = pytest.mark.saga_env(SAGA_TIME_SCALE="10")


def running(queue: str, command_id: Any) -> dict[str, Any] | None:
    """The task the ``queue`` worker is executing for this command, as ``celery inspect active``
    reports it (with ``worker_pid``: the pool child that runs it)."""
    replies = celery_app.control.inspect(timeout=1.0).active() or {}
    for worker, tasks in replies.items():
        if worker.startswith(f"{queue}@"):
            for task in tasks:
                # The same worker runs other tasks too (a subscriber's advance takes a name).
                message = task["args"][0] if task["args"] else None
                if isinstance(message, dict) and message.get("command_id") == str(command_id):
                    return task  # type: ignore[return-value]  # celery-types' _TaskInfo is a TypedDict of this very dict
    return None


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def step(saga_id: str, name: str, kind: str = "forward") -> SagaStep | None:
    return SagaStep.objects.using("sagas").filter(saga_id=saga_id, name=name, kind=kind).first()  # type: ignore[misc]  # Django converts the id's string; the plugin asks for a UUID


def purge(queue: str) -> None:
    with celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)  # type: ignore[attr-defined]  # kombu's virtual channels have queue_purge; the stubs type the abstract StdChannel


@SLOW_DEADLINES
def test_a_pool_child_killed_mid_step_is_requeued_by_its_parent(api: Api, saga_system: Stack) -> None:
    customer = api.customer("50.00")
    parent = saga_system.processes["worker-customers"].pid
    with customer_locked(customer):  # credit_reserve blocks inside its task
        placed = api.order(customer, "5.00")
        reserve = eventually(lambda: step(placed["saga_id"], "reserve_credit"), message="the reserve step to be sent")
        first = eventually(lambda: running("customers", reserve.command_id), message="credit_reserve to be executing")
        reserve.refresh_from_db()
        assert (reserve.status, reserve.attempts) == ("WAITING", 1)  # in flight, provably, at the kill
        child = int(first["worker_pid"])
        assert child != parent and parent_pid(child) == parent  # the pool child, not the worker
        os.kill(child, signal.SIGKILL)
        # The parent saw its child die and put the message back: the same task runs again, in a
        # new child, on the same attempt (no deadline has passed, the sweep re-sent nothing).
        again = eventually(lambda: (task := running("customers", reserve.command_id)) and int(task["worker_pid"]) != child and task, message="credit_reserve to run again in a new child")
        assert again["id"] == first["id"]  # type: ignore[index]  # the probe returns the task once it is running again
        eventually(lambda: log_mentions(saga_system, "worker-customers", f"pid:{child} exited with 'signal 9 (SIGKILL)'"), message="the worker to log its child's death")
        reserve.refresh_from_db()
        assert (reserve.status, reserve.attempts) == ("WAITING", 1)
    saga = api.settled_saga(placed["saga_id"], timeout=60)
    assert saga["state"] == "COMPLETED"
    assert [(s["name"], s["attempts"]) for s in saga["steps"]] == [("create_order", 1), ("reserve_credit", 1), ("approve_order", 1)]
    assert api.settled_order(placed["id"])["state"] == "APPROVED"
    assert CustomerEvent.objects.using("customers").filter(stream_id=customer, type="CreditReserved").count() == 1
    assert CustomerRow.objects.using("customers").get(id=customer).credit_reserved == 5
    assert_verify_passes()


@SLOW_DEADLINES
def test_every_command_and_reply_delivered_twice_changes_nothing(api: Api, saga_system: Stack) -> None:
    customer = api.customer("50.00")

    # While a saga runs: its create step is done, its reserve step is blocked mid-task.
    with customer_locked(customer):
        placed = api.order(customer, "30.00")
        reserve = eventually(lambda: step(placed["saga_id"], "reserve_credit"), message="the reserve step to be sent")
        eventually(lambda: running("customers", reserve.command_id), message="credit_reserve to be executing")
        create = step(placed["saga_id"], "create_order")
        assert create is not None and create.status == "SUCCEEDED"
        before = snapshot()
        again_create = send_by_name(create.command, step_message(create))
        again_reply = send_by_name("sagas.saga_reply", step_reply(create))
        again_reserve = send_by_name(reserve.command, step_message(reserve))  # queued behind the original
        assert wait_task(saga_system, "orders", again_create) == create.reply["outcome"]  # type: ignore[index]  # answered from its record (every step here has its reply)
        wait_task(saga_system, "sagas", again_reply)
        sagas_queue_drained(saga_system)  # and the reply the duplicate create sent
        assert snapshot() == before
        assert SagaInstance.objects.using("sagas").get(id=placed["saga_id"]).state == "RUNNING"
        assert task_outcome(saga_system, "customers", again_reserve) is None  # still behind the blocked original
    assert wait_task(saga_system, "customers", again_reserve) == "ok"
    saga = api.settled_saga(placed["saga_id"])
    assert saga["state"] == "COMPLETED" and [s["attempts"] for s in saga["steps"]] == [1, 1, 1]
    assert OrderEvent.objects.using("orders").filter(stream_id=placed["id"], type="OrderCreated").count() == 1
    assert CustomerEvent.objects.using("customers").filter(stream_id=customer, type="CreditReserved").count() == 1

    # After sagas ended: an approved order, a rejected one, a cancelled one; every step twice.
    rejected = api.order(customer, "30.00")
    assert api.settled_order(rejected["id"])["state"] == "REJECTED"
    assert api.settled_saga(rejected["saga_id"])["state"] == "COMPENSATED"
    api.settled_order(placed["id"], states=("APPROVED",))  # the cancel reads the read model
    status, body = api.call("POST", f"/api/orders/{placed['id']}/cancel/")
    assert status == 202, body
    assert api.settled_order(placed["id"], states=("CANCELLED",))["state"] == "CANCELLED"
    eventually(lambda: SagaInstance.objects.using("sagas").filter(type="cancel_order", state="COMPLETED").exists(), message="the cancel saga to complete")
    before = snapshot()
    steps = list(SagaStep.objects.using("sagas").all())
    assert len(steps) >= 9 and all(s.reply is not None for s in steps)
    sent = []
    for s in steps:
        sent.append((s.command.split(".", 1)[0], send_by_name(s.command, step_message(s)), s.reply["outcome"]))  # type: ignore[index]  # every step here has its reply (asserted above)
        sent.append(("sagas", send_by_name("sagas.saga_reply", step_reply(s)), None))
    for queue, task_id, recorded in sent:
        outcome = wait_task(saga_system, queue, task_id)
        assert recorded is None or outcome == recorded, (queue, task_id, outcome, recorded)
    sagas_queue_drained(saga_system)
    assert snapshot() == before
    assert {s.id: (s.status, s.attempts) for s in SagaStep.objects.using("sagas").all()} == {s.id: (s.status, s.attempts) for s in steps}
    assert_verify_passes()


@pytest.mark.saga_env(SAGA_OUTAGE_BUDGET_SECONDS="1")  # x0.2: a step whose outcome stays unknown gives up after its attempts
def test_a_forward_command_arriving_after_its_compensation_is_refused(api: Api, saga_system: Stack) -> None:
    customer = api.customer("50.00")

    # The pivot's outcome stays unknown: the customers worker is down, reserve_credit gives up
    # and is compensated. Its copies still queued are late: they are held back (purged) here,
    # and one is delivered below, after the compensation.
    saga_system.processes["worker-customers"].stop()
    unknown_pivot = api.order(customer, "5.00")
    eventually(lambda: step(unknown_pivot["saga_id"], "reserve_credit", "compensation"), timeout=120, message="reserve_credit to give up and be compensated")
    purge("customers")
    saga_system.start_worker("customers")
    saga_system.wait_ready(timeout=60)
    assert api.settled_saga(unknown_pivot["saga_id"], timeout=120)["state"] == "COMPENSATED"
    assert api.settled_order(unknown_pivot["id"])["state"] == "REJECTED"

    # The create step's outcome stays unknown: the orders worker is down for the whole saga,
    # so the order never existed when its creation was compensated.
    saga_system.processes["worker-orders"].stop()
    never_created = api.order(customer, "5.00")
    eventually(lambda: step(never_created["saga_id"], "create_order", "compensation"), timeout=120, message="create_order to give up and be compensated")
    purge("orders")
    saga_system.start_worker("orders")
    saga_system.wait_ready(timeout=60)
    assert api.settled_saga(never_created["saga_id"], timeout=120)["state"] == "COMPENSATED"
    assert not Order.objects.using("orders").filter(id=never_created["id"]).exists()

    before = snapshot()
    late_reserve = step(unknown_pivot["saga_id"], "reserve_credit")
    late_create = step(never_created["saga_id"], "create_order")
    assert late_reserve is not None and late_create is not None
    reserve_task = send_by_name(late_reserve.command, step_message(late_reserve))
    create_task = send_by_name(late_create.command, step_message(late_create))
    outcomes = (wait_task(saga_system, "customers", reserve_task), wait_task(saga_system, "orders", create_task))
    assert outcomes == ("refused", "refused"), f"late credit_reserve, late order_create: {outcomes}"
    for processed, alias, late in ((CustomersProcessedCommand, "customers", late_reserve), (OrdersProcessedCommand, "orders", late_create)):
        reply = processed.objects.using(alias).get(command_id=late.command_id).reply
        assert (reply["outcome"], reply["reason"]) == ("refused", "COMPENSATED"), reply  # the tombstone
    sagas_queue_drained(saga_system)  # the refusals' replies, ignored by the ended sagas
    assert snapshot() == before
    assert not CreditReservation.objects.using("customers").exists()
    assert CustomerRow.objects.using("customers").get(id=customer).credit_reserved == 0
    assert not Order.objects.using("orders").filter(id=never_created["id"]).exists()
    assert_verify_passes()
