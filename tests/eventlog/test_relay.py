"""Outbox to central log: in order, exactly once, whatever runs twice or crashes halfway."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.db import IntegrityError
from django.utils import timezone

from customers.models import CustomerEvent
from customers.services import credit_reserve, customer_create
from eventlog.domain import MessageContext
from eventlog.models import LogEvent
from eventlog.relay import log_append, outbox_backlog, outbox_get, outbox_pending, outbox_relay
from orders.models import OrderEvent
from orders.services import order_approve, order_create
from tests.conftest import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def log_events() -> list[tuple[uuid.UUID, int, str]]:
    return list(LogEvent.objects.using("eventlog").order_by("position").values_list("stream_id", "version", "type"))


def test_relay_copies_every_outbox_event_in_order_with_metadata_and_marks_it() -> None:
    context = MessageContext(saga_id=uuid.uuid4())
    customer = customer_create(name="Ada", credit_limit="100.00")
    order = order_create(customer_id=customer.id, total="10.00", mode="orchestration", context=context)
    credit_reserve(customer_id=customer.id, order_id=order.id, amount="10.00", context=context)
    order_approve(order_id=order.id, context=context)
    assert outbox_backlog() == {"customers": 2, "orders": 2}
    assert outbox_relay("customers") == 2
    assert outbox_relay("orders") == 2
    assert outbox_backlog() == {"customers": 0, "orders": 0}
    assert log_events() == [
        (customer.id, 1, "CustomerCreated"),
        (customer.id, 2, "CreditReserved"),
        (order.id, 1, "OrderCreated"),
        (order.id, 2, "OrderApproved"),
    ]
    logged = LogEvent.objects.using("eventlog").get(stream_id=order.id, version=2)
    outbox = OrderEvent.objects.using("orders").get(stream_id=order.id, version=2)
    # The log row carries the outbox row's identity and metadata unchanged.
    assert (logged.event_id, logged.correlation_id, logged.saga_id, logged.data) == (outbox.event_id, outbox.correlation_id, context.saga_id, outbox.data)


def test_running_the_relay_twice_writes_nothing_twice() -> None:
    customer_create(name="Ada", credit_limit="1.00")
    outbox_relay("customers")
    outbox_relay("customers")
    CustomerEvent.objects.using("customers").update(relayed_at=None)  # as if the marks were lost
    outbox_relay("customers")
    assert LogEvent.objects.using("eventlog").count() == 1


def test_a_crash_between_copy_and_mark_is_repaired_by_the_next_run() -> None:
    customers = [customer_create(name=f"C{i}", credit_limit="1.00") for i in range(5)]
    outbox = outbox_get("customers")
    # The relay's first half: copy into the log and commit; then the process dies before marking.
    log_append(outbox_pending(outbox, limit=3))
    assert LogEvent.objects.using("eventlog").count() == 3
    assert outbox_backlog()["customers"] == 5
    assert outbox_relay("customers") == 5
    assert [stream for stream, _, _ in log_events()] == [c.id for c in customers]
    assert outbox_backlog()["customers"] == 0


def test_relay_batches_preserve_order_across_batches() -> None:
    customer = customer_create(name="Ada", credit_limit="1000.00")
    for _ in range(12):
        credit_reserve(customer_id=customer.id, order_id=uuid.uuid4(), amount="1.00", context=MessageContext())
    assert outbox_relay("customers", batch_size=5) == 13
    assert [version for _, version, _ in log_events()] == list(range(1, 14))


def test_concurrent_relays_of_one_outbox_copy_each_event_once_in_stream_order() -> None:
    customer = customer_create(name="Ada", credit_limit="1000.00")
    for _ in range(30):
        credit_reserve(customer_id=customer.id, order_id=uuid.uuid4(), amount="1.00", context=MessageContext())
    run_concurrently(*[lambda: outbox_relay("customers", batch_size=7)] * 4)
    assert [version for _, version, _ in log_events()] == list(range(1, 32))


def test_unknown_outbox_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="no outbox named 'nope'"):
        outbox_relay("nope")


def test_a_stream_version_already_taken_by_another_event_fails_loudly_and_marks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Only a true duplicate (the same ``event_id``) is skipped. A clash on ``(stream_id,
    version)`` under another event id means two histories for one stream: copying would drop
    one event silently and then mark it relayed, so the relay must stop there instead."""
    customer = customer_create(name="Ada", credit_limit="1.00")
    customer_create(name="Bob", credit_limit="1.00")
    impostor = {"event_id": uuid.uuid4(), "stream_id": customer.id, "stream_type": "Customer", "version": 1, "type": "CustomerCreated",
                "data": {}, "occurred_at": timezone.now(), "correlation_id": uuid.uuid4(), "causation_id": None, "saga_id": None}
    log_append([impostor])
    with caplog.at_level(logging.ERROR, logger="eventlog.relay"), pytest.raises(IntegrityError):
        outbox_relay("customers")
    # Nothing of the failing batch is marked, so nothing is lost: it is retried, and fails, until repaired.
    assert outbox_backlog()["customers"] == 2
    assert list(LogEvent.objects.using("eventlog").values_list("event_id", flat=True)) == [impostor["event_id"]]
    assert any(str(customer.id) in record.getMessage() and record.levelno == logging.ERROR for record in caplog.records)


def test_a_true_duplicate_in_a_batch_is_skipped_and_the_rest_of_the_batch_is_copied() -> None:
    customers = [customer_create(name=f"C{i}", credit_limit="1.00") for i in range(3)]
    outbox = outbox_get("customers")
    log_append(outbox_pending(outbox, limit=3)[1:2])  # the middle one is already in the log
    assert outbox_relay("customers") == 3
    assert [stream for stream, _, _ in log_events()] == [customers[1].id, customers[0].id, customers[2].id]
    assert outbox_backlog()["customers"] == 0


def test_the_sweep_still_relays_the_other_outboxes_when_one_is_stuck_and_then_fails() -> None:
    from eventlog.tasks import sweep

    customer = customer_create(name="Ada", credit_limit="1.00")
    order_create(customer_id=customer.id, total="1.00", mode="orchestration", context=MessageContext())
    log_append([{"event_id": uuid.uuid4(), "stream_id": customer.id, "stream_type": "Customer", "version": 1, "type": "CustomerCreated",
                 "data": {}, "occurred_at": timezone.now(), "correlation_id": uuid.uuid4(), "causation_id": None, "saga_id": None}])
    with pytest.raises(IntegrityError):
        sweep()
    assert outbox_backlog() == {"customers": 1, "orders": 0}
