"""Event-sourced repositories on the real databases: optimistic concurrency, state rows, outbox."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connections, transaction

from customers.domain import Customer
from customers.models import CreditReservation, CustomerEvent
from customers.models import Customer as CustomerRow
from customers.repository import ALIAS, customer_repository
from customers.services import CustomerNotFound, credit_release, credit_reserve, customer_create
from eventlog.domain import ConcurrencyError, MessageContext
from orders.domain import OrderState
from orders.models import Order as OrderRow
from orders.models import OrderEvent
from orders.services import order_approve, order_create
from tests.conftest import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_save_writes_events_with_metadata_and_the_state_row_in_the_contexts_database() -> None:
    saga_id, correlation_id, causation_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    context = MessageContext(correlation_id=correlation_id, causation_id=causation_id, saga_id=saga_id)
    customer = customer_create(name="Ada", credit_limit="100.00")
    order = order_create(customer_id=customer.id, total="25.00", mode="orchestration", context=context)
    event = OrderEvent.objects.using("orders").get(stream_id=order.id)
    assert (event.type, event.version, event.stream_type) == ("OrderCreated", 1, "Order")
    assert (event.correlation_id, event.causation_id, event.saga_id) == (correlation_id, causation_id, saga_id)
    assert event.data == {"customer_id": str(customer.id), "total": "25.00", "mode": "orchestration"}
    assert event.relayed_at is None
    row = OrderRow.objects.using("orders").get(id=order.id)
    assert (row.state, row.total, row.version, row.saga_id) == ("PENDING", Decimal("25.00"), 1, saga_id)
    # Nothing of the orders context exists on any other alias.
    for alias in ("default", "customers", "sagas", "eventlog", "readmodels"):
        assert "orders_orderevent" not in connections[alias].introspection.table_names()


def test_two_writers_on_one_stream_one_conflict_no_lost_event() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    context = MessageContext()
    first = customer_repository.get(customer.id)
    second = customer_repository.get(customer.id)
    assert first is not None and second is not None
    first.credit_reserve(order_id=uuid.uuid4(), amount="10.00")
    second.credit_reserve(order_id=uuid.uuid4(), amount="20.00")
    with transaction.atomic(using=ALIAS):
        customer_repository.save(first, context=context)
    with pytest.raises(ConcurrencyError), transaction.atomic(using=ALIAS):
        customer_repository.save(second, context=context)
    versions = list(CustomerEvent.objects.using(ALIAS).filter(stream_id=customer.id).values_list("version", "type"))
    assert versions == [(1, "CustomerCreated"), (2, "CreditReserved")]
    row = CustomerRow.objects.using(ALIAS).get(id=customer.id)
    assert (row.version, row.credit_reserved) == (2, Decimal("10.00"))


def test_concurrent_services_retry_from_a_fresh_load_and_lose_nothing() -> None:
    """Eight threads reserve credit on one customer at once; every reservation lands once."""
    customer = customer_create(name="Ada", credit_limit="1000.00")
    order_ids = [uuid.uuid4() for _ in range(8)]
    barrier = threading.Barrier(len(order_ids))

    def reserve(order_id: uuid.UUID) -> None:
        barrier.wait()
        for _ in range(2):  # a duplicate command for the same order is a no-op
            credit_reserve(customer_id=customer.id, order_id=order_id, amount="10.00", context=MessageContext())

    run_concurrently(*[lambda order_id=order_id: reserve(order_id) for order_id in order_ids])
    versions = list(CustomerEvent.objects.using(ALIAS).filter(stream_id=customer.id).order_by("version").values_list("version", flat=True))
    assert versions == list(range(1, 10))
    row = CustomerRow.objects.using(ALIAS).get(id=customer.id)
    assert (row.credit_reserved, row.version) == (Decimal("80.00"), 9)
    assert set(CreditReservation.objects.using(ALIAS).values_list("order_id", flat=True)) == set(order_ids)


def test_state_rows_equal_the_fold_of_their_events() -> None:
    customer = customer_create(name="Ada", credit_limit="50.00")
    orders = [uuid.uuid4() for _ in range(3)]
    for order_id in orders:
        credit_reserve(customer_id=customer.id, order_id=order_id, amount="20.00", context=MessageContext())
    credit_release(customer_id=customer.id, order_id=orders[0], context=MessageContext())
    folded = customer_repository.get(customer.id)
    row = CustomerRow.objects.using(ALIAS).get(id=customer.id)
    assert folded is not None
    assert (row.version, row.credit_reserved, row.credit_limit) == (folded.version, folded.credit_reserved, folded.credit_limit)
    assert folded.credit_reserved == Decimal("20.00")  # the third did not fit: a failure event, no credit
    reservations = dict(CreditReservation.objects.using(ALIAS).values_list("order_id", "amount"))
    assert reservations == folded.reservations


def test_a_failed_command_writes_nothing() -> None:
    with pytest.raises(CustomerNotFound):
        credit_reserve(customer_id=uuid.uuid4(), order_id=uuid.uuid4(), amount="1.00", context=MessageContext())
    assert CustomerEvent.objects.using(ALIAS).count() == 0


def test_order_services_move_state_and_version() -> None:
    order = order_create(customer_id=uuid.uuid4(), total="5.00", mode="orchestration", context=MessageContext())
    order_approve(order_id=order.id, context=MessageContext())
    row = OrderRow.objects.using("orders").get(id=order.id)
    assert (row.state, row.version) == (OrderState.APPROVED, 2)
    # Creating the same order id again is idempotent.
    again = order_create(order_id=order.id, customer_id=uuid.uuid4(), total="9.00", mode="orchestration", context=MessageContext())
    assert again.version == 2 and OrderEvent.objects.using("orders").filter(stream_id=order.id).count() == 2


def test_the_loaded_aggregate_is_the_fold_not_the_state_row() -> None:
    customer = customer_create(name="Ada", credit_limit="10.00")
    loaded = customer_repository.get(customer.id)
    assert isinstance(loaded, Customer) and loaded.version == 1 and loaded.credit_limit == Decimal("10.00")
    assert customer_repository.get(uuid.uuid4()) is None


def test_the_snapshot_load_a_credit_command_uses_agrees_with_the_fold() -> None:
    """``get_for_order`` reads the state rows, not the stream; it must decide as the fold does."""
    customer = customer_create(name="Ada", credit_limit="50.00")
    held, released, never = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for order_id in (held, released):
        credit_reserve(customer_id=customer.id, order_id=order_id, amount="20.00", context=MessageContext())
    credit_release(customer_id=customer.id, order_id=released, context=MessageContext())
    folded = customer_repository.get(customer.id)
    assert folded is not None
    for order_id in (held, released, never):
        with transaction.atomic(using=ALIAS):
            snapshot = customer_repository.get_for_order(customer.id, order_id)
        assert snapshot is not None
        assert (snapshot.name, snapshot.credit_limit, snapshot.credit_reserved, snapshot.version) == (folded.name, folded.credit_limit, folded.credit_reserved, folded.version)
        assert snapshot.reservations == {k: v for k, v in folded.reservations.items() if k == order_id}
    with transaction.atomic(using=ALIAS):  # it locks the row: only inside a transaction
        assert customer_repository.get_for_order(uuid.uuid4(), held) is None
    # Decisions taken on the snapshot: the held order is a no-op, a new one that fits is
    # reserved (30.00 left), and one that does not fit is refused.
    with transaction.atomic(using=ALIAS):
        snapshot = customer_repository.get_for_order(customer.id, held)
        assert snapshot is not None and snapshot.credit_reserve(order_id=held, amount="20.00") is True
        assert snapshot.pending_events == []
    assert credit_reserve(customer_id=customer.id, order_id=uuid.uuid4(), amount="30.00", context=MessageContext()).reserved is True
    assert credit_reserve(customer_id=customer.id, order_id=uuid.uuid4(), amount="0.01", context=MessageContext()).reserved is False
