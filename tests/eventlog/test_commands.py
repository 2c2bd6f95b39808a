"""Participants handle each command once: a redelivered command gets the recorded reply."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from customers.models import CustomerEvent, CustomersProcessedCommand
from customers.services import customer_create
from customers.tasks import credit_reserve_task
from eventlog.commands import Command, command_handle
from orders.models import OrderEvent
from orders.tasks import order_create_task, order_reject_task
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def no_leftover_messages() -> Any:
    yield
    purge_queues()  # the replies these tests send have no consumer


def message(name: str, payload: dict[str, Any], command_id: uuid.UUID | None = None) -> dict[str, Any]:
    return Command(command_id=command_id or uuid.uuid4(), name=name, payload=payload, saga_id=uuid.uuid4(), correlation_id=uuid.uuid4(), reply_to="sagas.saga_reply", step="s").to_message()


def test_a_redelivered_command_gets_the_recorded_reply_and_acts_once() -> None:
    customer = customer_create(name="Ada", credit_limit="10.00")
    reserve = message("customers.credit_reserve", {"customer_id": str(customer.id), "order_id": str(uuid.uuid4()), "amount": "6.00"})
    assert credit_reserve_task(reserve) == "ok"
    assert credit_reserve_task(reserve) == "ok"
    assert CustomerEvent.objects.using("customers").filter(type="CreditReserved").count() == 1
    # A second order does not fit: refused, and the refusal is recorded (with its event).
    refused = message("customers.credit_reserve", {"customer_id": str(customer.id), "order_id": str(uuid.uuid4()), "amount": "6.00"})
    assert credit_reserve_task(refused) == "refused"
    assert credit_reserve_task(refused) == "refused"
    assert CustomerEvent.objects.using("customers").filter(type="CreditReservationFailed").count() == 1
    record = CustomersProcessedCommand.objects.using("customers").get(command_id=refused["command_id"])
    assert record.reply["reason"] == "INSUFFICIENT_CREDIT"


def test_an_unknown_customer_is_a_business_refusal() -> None:
    reserve = message("customers.credit_reserve", {"customer_id": str(uuid.uuid4()), "order_id": str(uuid.uuid4()), "amount": "1.00"})
    assert credit_reserve_task(reserve) == "refused"
    assert CustomersProcessedCommand.objects.using("customers").get().reply["reason"] == "UNKNOWN_CUSTOMER"


def test_a_state_conflict_is_refused_and_undoes_nothing_else() -> None:
    order_id = str(uuid.uuid4())
    assert order_create_task(message("orders.order_create", {"order_id": order_id, "customer_id": str(uuid.uuid4()), "total": "1.00", "mode": "orchestration"})) == "ok"
    assert order_reject_task(message("orders.order_reject", {"order_id": order_id, "reason": "INSUFFICIENT_CREDIT"})) == "ok"
    assert order_reject_task(message("orders.order_reject", {"order_id": order_id, "reason": "INSUFFICIENT_CREDIT"})) == "refused"
    assert list(OrderEvent.objects.using("orders").values_list("type", flat=True)) == ["OrderCreated", "OrderRejected"]


def test_a_technical_failure_is_not_recorded_so_a_retry_can_succeed() -> None:
    calls: list[int] = []

    def flaky(command: Command) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database briefly unreachable")
        return {"done": True}

    command = message("customers.flaky", {})
    first = command_handle(message=command, alias="customers", processed=CustomersProcessedCommand, handler=flaky)
    assert first.outcome == "error" and "briefly unreachable" in (first.error or "")
    assert not CustomersProcessedCommand.objects.using("customers").exists()
    second = command_handle(message=command, alias="customers", processed=CustomersProcessedCommand, handler=flaky)
    assert (second.outcome, second.data) == ("ok", {"done": True})


def test_rejecting_an_order_that_was_never_created_succeeds_as_a_no_op() -> None:
    """The create-order saga's compensation when its first command expired without running."""
    assert order_reject_task(message("orders.order_reject", {"order_id": str(uuid.uuid4()), "reason": None})) == "ok"
    assert not OrderEvent.objects.using("orders").exists()
