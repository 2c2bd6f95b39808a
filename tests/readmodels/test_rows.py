"""The replay's fast paths store and read exactly what the ORM would: the bulk row writer of
the projections, and the raw log scan. Runs on SQLite and, in the PostgreSQL tier, on
PostgreSQL (binary COPY)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connections, transaction
from django.db.models import Model

from customers.services import customer_create
from eventlog.domain import MessageContext
from eventlog.relay import log_append, outbox_relay
from eventlog.selectors import log_read, log_scan
from orders.services import order_create
from readmodels import models
from readmodels.projections import ALIAS, PROJECTIONS, Rows, State, _writer
from readmodels.rebuild import shadow_catch_up, shadow_drop, shadow_prepare
from tests.readmodels.helpers import make_history

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

NOW = dt.datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)


def sample_rows() -> dict[type[Model], list[dict[str, Any]]]:
    customer = uuid.uuid4()
    return {
        models.OrderSummary: [
            {"id": uuid.uuid4(), "customer_id": customer, "customer_name": "Ada", "total": Decimal("12.50"), "state": "APPROVED",
             "rejection_reason": None, "mode": "orchestration", "saga_id": uuid.uuid4(), "version": 3, "created_at": NOW, "updated_at": NOW},
            {"id": uuid.uuid4(), "customer_id": customer, "customer_name": None, "total": Decimal("999999999999.99"), "state": "REJECTED",
             "rejection_reason": "INSUFFICIENT_CREDIT", "mode": "2pc", "saga_id": None, "version": 2, "created_at": NOW,
             "updated_at": NOW.astimezone(dt.timezone(dt.timedelta(hours=-5)))},
        ],
        models.CustomerCredit: [
            {"id": customer, "name": "Ada Lovelace – ünïcode", "credit_limit": Decimal("100.00"), "credit_reserved": Decimal("0.00"),
             "available_credit": Decimal("100.00"), "orders_pending": 0, "orders_approved": 7, "orders_rejected": 1,
             "orders_cancel_pending": 0, "orders_cancelled": 2, "version": 11, "updated_at": NOW},
        ],
        models.CustomerName: [{"id": customer, "name": "Ada"}],
        models.CustomerOrderState: [{"order_id": uuid.uuid4(), "customer_id": customer, "state": "CANCEL_PENDING"}],
    }


def stored(model: type[Model]) -> dict[Any, tuple[Any, ...]]:
    names = [f.attname for f in model._meta.local_fields]
    return {row[0]: row for row in model._default_manager.using(ALIAS).values_list("pk", *names)}


def test_the_writer_sends_what_get_db_prep_save_sends() -> None:
    connection = connections[ALIAS]
    for model, rows in sample_rows().items():
        fields = model._meta.local_fields
        expected = [tuple(f.get_db_prep_save(row[f.attname], connection) for f in fields) for row in rows]
        assert _writer(model, ALIAS, connection.vendor).values(rows) == expected


def test_rows_written_in_bulk_read_back_as_the_orm_writes_them() -> None:
    """Insert, then replace (PostgreSQL: delete + COPY; elsewhere: upsert), against ORM-saved twins."""
    samples = sample_rows()
    for model, rows in samples.items():
        table = Rows(model)
        with transaction.atomic(using=ALIAS):
            for row in rows:
                table.add(dict(row))
            assert sorted(map(str, table.flush())) == sorted(str(row[table.pk]) for row in rows)
        via_rows = stored(model)
        model._default_manager.using(ALIAS).all().delete()
        model._default_manager.using(ALIAS).bulk_create([model(**row) for row in rows])
        assert via_rows == stored(model)
        # A change to an existing row, after loading it back.
        table = Rows(model)
        pk = rows[0][table.pk]
        table.load([pk])
        row = table.get(pk)  # type: ignore[assignment]  # the loop's name, for the loaded row
        assert row is not None and row == {k: v for k, v in zip(table.columns, stored(model)[pk][1:], strict=True)}
        column = "state" if "state" in row else "name"
        row[column] = "CANCELLED" if column == "state" else "Grace"
        table.touch(row)
        with transaction.atomic(using=ALIAS):
            assert table.flush() == [pk]
        after = stored(model)
        assert len(after) == len(rows)
        assert after[pk][1:] == tuple(row[c] for c in table.columns)
        assert {k: v for k, v in after.items() if k != pk} == {k: v for k, v in via_rows.items() if k != pk}


def test_log_scan_reads_exactly_what_log_read_reads() -> None:
    make_history(customers=2, orders=4)
    customer = customer_create(name="Bob", credit_limit="10.00")
    order_create(customer_id=customer.id, total="1.00", mode="choreography", context=MessageContext(saga_id=uuid.uuid4(), causation_id=uuid.uuid4()))
    outbox_relay("customers")
    outbox_relay("orders")
    # A payload with nesting, unicode and numbers, as JSON allows.
    log_append([{"event_id": uuid.uuid4(), "stream_id": uuid.uuid4(), "stream_type": "Test", "version": 1, "type": "Odd",
                 "data": {"nested": {"list": [1, 2.5, None, True]}, "text": "é \" \\ \n", "empty": {}},
                 "occurred_at": NOW, "correlation_id": uuid.uuid4(), "causation_id": None, "saga_id": None}])
    everything = log_read(after=0, limit=10_000)
    assert len(everything) > 30
    assert log_scan(after=0, limit=10_000) == everything
    middle = everything[10].position
    assert log_scan(after=middle, limit=7) == log_read(after=middle, limit=7)  # type: ignore[arg-type]  # an event read from the log always has its position
    assert log_scan(after=0, limit=100, until=middle) == log_read(after=0, limit=100, until=middle)
    scanned = log_scan(after=0, limit=10_000)
    for a, b in zip(scanned, everything, strict=True):
        assert (a.occurred_at.utcoffset(), type(a.data), type(a.stream_id)) == (b.occurred_at.utcoffset(), type(b.data), type(b.stream_id))


def test_a_state_that_outgrows_its_memory_reads_rows_back() -> None:
    """A rebuild whose rows do not fit in memory drops them after each batch and reads back
    what the next batch touches: the same rows as one that keeps them all."""
    make_history(customers=3, orders=6)
    outbox_relay("customers")
    outbox_relay("orders")
    results = []
    for rows_in_memory in (1_000_000, 1):
        replays = [shadow_prepare(p, fresh=True, rows_in_memory=rows_in_memory) for p in PROJECTIONS.values()]
        shadow_catch_up(replays, batch_size=3)
        results.append({m.__name__: stored(r.target.table(m)) for r in replays for m in r.projection.tables})
        assert all(isinstance(r.state, State) for r in replays)
        if rows_in_memory == 1:
            assert all(not rows.complete for r in replays for rows in r.state.tables.values())
        for projection in PROJECTIONS.values():
            shadow_drop(projection)
    assert results[0] == results[1]
    assert len(results[0]["OrderSummary"]) == 18
