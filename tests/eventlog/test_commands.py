"""Participants handle each command once: a redelivered command gets the recorded reply, and a
compensation that runs first leaves a tombstone that refuses its late forward command."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import OperationalError

from customers.models import CreditReservation, CustomerEvent, CustomersProcessedCommand
from customers.models import Customer as CustomerRow
from customers.services import customer_create
from customers.tasks import credit_release_task, credit_reserve_task
from eventlog.commands import Command, command_handle
from eventlog.domain import MessageContext
from orders import services as order_services
from orders.models import OrderEvent, OrdersProcessedCommand
from orders.tasks import order_cancel_request_task, order_cancel_revert_task, order_create_task, order_reject_task
from tests.conftest import purge_queues, run_concurrently

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


# --- tombstones: a compensation that ran before its forward command ---------------------------


def compensation(name: str, payload: dict[str, Any], forward: dict[str, Any]) -> dict[str, Any]:
    return {**message(name, payload), "saga_id": forward["saga_id"], "compensates": forward["command_id"]}


def test_a_release_before_its_reserve_leaves_a_tombstone_that_refuses_the_late_reserve() -> None:
    """Finding 3: a credit_reserve committing after its saga compensated leaked credit."""
    customer = customer_create(name="Ada", credit_limit="10.00")
    payload = {"customer_id": str(customer.id), "order_id": str(uuid.uuid4()), "amount": "6.00"}
    reserve = message("customers.credit_reserve", payload)
    assert credit_release_task(compensation("customers.credit_release", payload, reserve)) == "ok"
    tombstone = CustomersProcessedCommand.objects.using("customers").get(command_id=reserve["command_id"])
    assert (tombstone.reply["outcome"], tombstone.reply["reason"]) == ("refused", "COMPENSATED")
    assert credit_reserve_task(reserve) == "refused"  # the late (or redelivered) forward command
    assert credit_reserve_task({**reserve, "attempt": 2}) == "refused"
    assert not CustomerEvent.objects.using("customers").exclude(type="CustomerCreated").exists()
    assert not CreditReservation.objects.using("customers").exists()


def test_a_release_after_its_reserve_undoes_it() -> None:
    customer = customer_create(name="Ada", credit_limit="10.00")
    payload = {"customer_id": str(customer.id), "order_id": str(uuid.uuid4()), "amount": "6.00"}
    reserve = message("customers.credit_reserve", payload)
    assert credit_reserve_task(reserve) == "ok"
    assert credit_release_task(compensation("customers.credit_release", payload, reserve)) == "ok"
    assert list(CustomerEvent.objects.using("customers").order_by("version").values_list("type", flat=True)) == ["CustomerCreated", "CreditReserved", "CreditReleased"]
    assert credit_reserve_task(reserve) == "ok"  # a redelivery: answered from its record, acts not
    assert not CreditReservation.objects.using("customers").exists()


def test_a_reject_before_its_create_leaves_no_order_behind() -> None:
    """Finding 3: a late order_create left an orphan PENDING order."""
    payload = {"order_id": str(uuid.uuid4()), "customer_id": str(uuid.uuid4()), "total": "1.00", "mode": "orchestration"}
    create = message("orders.order_create", payload)
    assert order_reject_task(compensation("orders.order_reject", {"order_id": payload["order_id"], "reason": None}, create)) == "ok"
    assert order_create_task(create) == "refused"
    assert not OrderEvent.objects.using("orders").exists()
    assert OrdersProcessedCommand.objects.using("orders").get(command_id=create["command_id"]).reply["reason"] == "COMPENSATED"


def test_reverting_a_cancel_that_never_happened_succeeds_and_refuses_the_late_request() -> None:
    """Finding 2: the revert met an APPROVED order, was refused, and the saga FAILED for ever."""
    order_id = uuid.uuid4()
    context = MessageContext(correlation_id=order_id)
    order_services.order_create(order_id=order_id, customer_id=uuid.uuid4(), total="1.00", mode="orchestration", context=context)
    order_services.order_approve(order_id=order_id, context=context)
    request = message("orders.order_cancel_request", {"order_id": str(order_id)})
    assert order_cancel_revert_task(compensation("orders.order_cancel_revert", {"order_id": str(order_id)}, request)) == "ok"
    assert order_cancel_request_task(request) == "refused"
    assert list(OrderEvent.objects.using("orders").order_by("version").values_list("type", flat=True)) == ["OrderCreated", "OrderApproved"]


def test_a_reserve_and_its_release_racing_never_leave_credit_held() -> None:
    """Whichever commits first, the primary key of the forward command's record decides."""
    customer = customer_create(name="Ada", credit_limit="1000.00")
    outcomes = set()
    for _ in range(15):
        payload = {"customer_id": str(customer.id), "order_id": str(uuid.uuid4()), "amount": "1.00"}
        reserve = message("customers.credit_reserve", payload)
        release = compensation("customers.credit_release", payload, reserve)
        results: dict[str, str] = {}
        run_concurrently(
            lambda r=reserve, out=results: out.update(reserve=credit_reserve_task(r)),  # type: ignore[misc]  # mypy cannot infer a lambda with default arguments
            lambda r=release, out=results: out.update(release=credit_release_task(r)),  # type: ignore[misc]  # mypy cannot infer a lambda with default arguments
        )
        outcomes.add(results["reserve"])
        assert results["release"] == "ok"
    assert not CreditReservation.objects.using("customers").exists()
    assert CustomerRow.objects.using("customers").get(id=customer.id).credit_reserved == 0
    assert outcomes <= {"ok", "refused"}


def test_an_unreachable_database_is_a_transient_error_and_a_bug_is_not() -> None:
    def unreachable(command: Command) -> dict[str, Any]:
        raise OperationalError('connection failed: database "orders" is not currently accepting connections')

    def bug(command: Command) -> dict[str, Any]:
        raise KeyError("total")

    for handler, transient in ((unreachable, True), (bug, False)):
        reply = command_handle(message={**message("customers.x", {}), "attempt": 3}, alias="customers", processed=CustomersProcessedCommand, handler=handler)
        assert (reply.outcome, reply.transient) == ("error", transient)
    assert not CustomersProcessedCommand.objects.using("customers").exists()


def test_a_commands_writes_and_its_record_are_sent_together_after_its_reads() -> None:
    """The participant's hot path (issue 12): the handler's reads, then its writes and the
    processed-command record held back (``eventlog.sql.held_back``) and sent at the end of its
    transaction: one statement on PostgreSQL, one per write elsewhere."""
    from django.db import connections

    customer = customer_create(name="Ada", credit_limit="10.00")
    reserve = message("customers.credit_reserve", {"customer_id": str(customer.id), "order_id": str(uuid.uuid4()), "amount": "6.00"})
    sent: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(sql)
        return execute(sql, params, many, context)

    with connections["customers"].execute_wrapper(wrapper):
        assert credit_reserve_task(reserve) == "ok"
    reads = [sql for sql in sent if sql.startswith("SELECT")]
    writes = [sql for sql in sent if sql not in reads and not sql.startswith("BEGIN")]
    assert len(reads) == 2, sent  # the customer's state row (locked) and its reservation for this order
    if connections["customers"].vendor == "postgresql":
        assert len(writes) == 1 and writes[0].startswith("WITH"), writes
    else:  # the event, the state row, the reservation, the record
        assert len(writes) == 4, writes
    assert CustomerRow.objects.using("customers").get(id=customer.id).credit_reserved == 6
    assert CustomersProcessedCommand.objects.using("customers").filter(command_id=reserve["command_id"]).exists()


def test_a_taken_stream_version_in_the_held_back_writes_is_a_conflict_retried_from_a_fresh_load() -> None:
    """The version guard fires at the flush, not at the write: it must still be a
    ``ConcurrencyError`` (retried), not an error that looks like a redelivery."""
    from eventlog.models import EVENT_COLUMNS
    from eventlog.persistence import CONCURRENCY_RETRIES
    from eventlog.sql import insert_rows
    from orders.models import OrdersProcessedCommand as Processed

    order_id = uuid.uuid4()
    order_services.order_create(order_id=order_id, customer_id=uuid.uuid4(), total="1.00", mode="orchestration", context=MessageContext(correlation_id=order_id))
    taken = OrderEvent.objects.using("orders").get(stream_id=order_id, version=1)
    calls: list[int] = []

    def handler(command: Command) -> dict[str, Any]:
        calls.append(1)
        row = {column: getattr(taken, column) for column in EVENT_COLUMNS}
        insert_rows(OrderEvent, "orders", [{**row, "event_id": uuid.uuid4()}])  # version 1 again: another writer's
        return {}

    command = message("orders.order_approve", {"order_id": str(order_id)})
    reply = command_handle(message={**command, "reply_to": None}, alias="orders", processed=Processed, handler=handler)
    assert reply.outcome == "error" and "ConcurrencyError" in (reply.error or ""), reply
    assert len(calls) == CONCURRENCY_RETRIES  # each attempt from a fresh start, as a conflict is
    assert not Processed.objects.using("orders").filter(command_id=command["command_id"]).exists()
    assert OrderEvent.objects.using("orders").filter(stream_id=order_id).count() == 1
