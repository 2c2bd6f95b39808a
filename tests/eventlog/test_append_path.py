"""The lean append path keeps every guarantee of the ORM's: values stored exactly as Django
stores them (every event type round-trips), a taken stream version is a ConcurrencyError with
nothing written, and the state row commits with the events or not at all. Real databases."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connections, transaction

import customers.domain  # noqa: F401  (registers the event types)
import orders.domain  # noqa: F401
from customers.domain import Customer, CustomerAlreadyExists
from customers.models import Customer as CustomerRow
from customers.models import CustomerEvent
from customers.repository import ALIAS, customer_repository
from customers.services import customer_create
from eventlog.domain import ConcurrencyError, DomainEvent, MessageContext
from eventlog.models import EVENT_COLUMNS, LogEvent
from eventlog.relay import outbox_relay
from eventlog.sql import JSONText, _adapters, insert_rows, json_dumps, row_params

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def sample(type_hint: str, index: int) -> Any:
    if "Decimal" in type_hint:
        return Decimal("1234567890.05") if index % 2 else Decimal("0.10")
    if "UUID" in type_hint:
        return uuid.uuid4()
    return ["Ada Lovelace", "Zoë « ☃ » \u00e9t\u00e9 \"quoted\" \\ back", "", "x" * 200][index % 4]


def every_event() -> list[DomainEvent]:
    """Each registered event type, twice, with varied values (non-ASCII, quotes, big amounts)."""
    events = []
    for index in range(2):
        for event_class in DomainEvent.registry.values():
            hints = {f.name: str(f.type) for f in dataclasses.fields(event_class)}
            events.append(event_class(**{name: sample(hint, index + i) for i, (name, hint) in enumerate(hints.items())}))
    return events


def test_every_event_type_is_stored_as_django_stores_it_and_reads_back_exactly() -> None:
    events = every_event()
    assert len({type(e) for e in events}) == len(DomainEvent.registry) >= 10
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = [
        {"event_id": uuid.uuid4(), "stream_id": uuid.uuid4(), "stream_type": "Probe", "version": 1, "type": e.type, "data": e.to_data(),
         "occurred_at": now, "correlation_id": uuid.uuid4(), "causation_id": None if i % 2 else uuid.uuid4(), "saga_id": None}
        for i, e in enumerate(events)
    ]
    connection = connections[ALIAS]
    names = tuple(rows[0])
    fields = [CustomerEvent._meta.get_field(name) for name in names]
    fast = row_params(CustomerEvent, ALIAS, names, rows)
    django = [field.get_db_prep_save(row[field.name], connection) for row in rows for field in fields]  # type: ignore[union-attr]  # get_field of a concrete column: a Field, never a relation
    for ours, theirs, (row, field) in zip(fast, django, [(r, f) for r in rows for f in fields], strict=True):
        if field.name == "data":
            # Compact JSON instead of json.dumps's spaced one: the same value once read.
            ours_value = json.loads(ours) if isinstance(ours, str) else ours.obj
            theirs_value = json.loads(theirs) if isinstance(theirs, str) else theirs.obj
            assert ours_value == theirs_value == row["data"]
        else:
            assert ours == theirs, field.name
    insert_rows(CustomerEvent, ALIAS, rows)
    stored = {e.event_id: e for e in CustomerEvent.objects.using(ALIAS).filter(event_id__in=[r["event_id"] for r in rows])}
    for row, event in zip(rows, events, strict=True):
        back = stored[row["event_id"]]
        assert {c: getattr(back, c) for c in EVENT_COLUMNS} == row
        assert DomainEvent.from_data(back.type, back.data) == event

    # And through the relay into the log, on PostgreSQL without decoding the payloads.
    outbox_relay("customers")
    logged = {e.event_id: e for e in LogEvent.objects.using("eventlog").filter(event_id__in=[r["event_id"] for r in rows])}
    for row, event in zip(rows, events, strict=True):
        assert {c: getattr(logged[row["event_id"]], c) for c in EVENT_COLUMNS} == row
        assert DomainEvent.from_data(logged[row["event_id"]].type, logged[row["event_id"]].data) == event


def test_json_dumps_falls_back_to_json_dumps_where_orjson_would_differ() -> None:
    value: Any
    for value in ({"a": [1, "é", None, True, 2.5, {"b": []}]}, [], "x", 12345678901234567890123):
        assert json.loads(json_dumps(value)) == value
    nan = json.loads(json_dumps({"x": float("nan")}))["x"]
    assert math.isnan(nan)  # orjson would have written null
    assert json.loads(json_dumps({1: "a"})) == {"1": "a"}  # json.dumps's key conversion
    with pytest.raises(TypeError):
        json_dumps({"at": dt.datetime.now(dt.UTC)})  # what Django's JSONField refuses, refused
    assert json_dumps(JSONText('{"a": 1}')) == json.dumps('{"a": 1}')  # a JSONText is only passed through by the adapters


def test_the_fast_adapters_are_django_s_for_odd_values_too() -> None:
    connection = connections[ALIAS]
    names = ("stream_id", "occurred_at", "version", "type")
    adapters = _adapters(CustomerEvent, names, ALIAS)
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    odd: dict[str, list[Any]] = {"stream_id": [str(uuid.uuid4()), None], "occurred_at": [dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5))), None],
           "version": [7, None], "type": ["T", None]}
    for name, adapt in zip(names, adapters, strict=True):
        field = CustomerEvent._meta.get_field(name)
        for value in odd[name]:
            assert adapt(value) == field.get_db_prep_save(value, connection), (name, value)  # type: ignore[union-attr]  # get_field of a concrete column: a Field, never a relation
    with pytest.warns(RuntimeWarning):  # a naive datetime goes the ORM's way, warning and all
        assert adapters[1](naive) == CustomerEvent._meta.get_field("occurred_at").get_db_prep_save(naive, connection)


def test_create_writes_the_event_and_the_state_row_and_a_second_create_is_a_conflict_with_nothing_written() -> None:
    customer_id = uuid.uuid4()
    customer = customer_create(name="Ada", credit_limit="100.00", customer_id=customer_id)
    assert customer.version == 1 and not customer.pending_events
    row = CustomerRow.objects.using(ALIAS).get(id=customer_id)
    assert (row.name, row.credit_limit, row.credit_reserved, row.version) == ("Ada", Decimal("100.00"), Decimal("0.00"), 1)
    event = CustomerEvent.objects.using(ALIAS).get(stream_id=customer_id)
    assert (event.type, event.version, event.data) == ("CustomerCreated", 1, {"name": "Ada", "credit_limit": "100.00"})
    assert event.occurred_at == row.created_at == row.updated_at

    again = Customer.create(customer_id=customer_id, name="Impostor", credit_limit="5.00")
    with pytest.raises(ConcurrencyError):
        customer_repository.create(again, context=MessageContext())
    with pytest.raises(CustomerAlreadyExists):
        customer_create(name="Impostor", credit_limit="5.00", customer_id=customer_id)
    assert CustomerEvent.objects.using(ALIAS).filter(stream_id=customer_id).count() == 1
    assert CustomerRow.objects.using(ALIAS).get(id=customer_id).name == "Ada"
    # The connection is usable and back in autocommit after the refused transaction.
    assert connections[ALIAS].get_autocommit() and not connections[ALIAS].in_atomic_block
    customer_create(name="Next", credit_limit="1.00")


def test_create_inside_a_transaction_belongs_to_it_and_rolls_back_with_it() -> None:
    customer_id = uuid.uuid4()
    with pytest.raises(RuntimeError, match="abandon"), transaction.atomic(using=ALIAS):
        customer_create(name="Ada", credit_limit="100.00", customer_id=customer_id)
        assert CustomerRow.objects.using(ALIAS).filter(id=customer_id).exists()
        raise RuntimeError("abandon")
    assert not CustomerEvent.objects.using(ALIAS).filter(stream_id=customer_id).exists()
    assert not CustomerRow.objects.using(ALIAS).filter(id=customer_id).exists()


def test_save_of_new_aggregates_in_one_transaction_writes_each_event_and_state_row() -> None:
    created = [Customer.create(customer_id=uuid.uuid4(), name=f"C{i}", credit_limit="10.00") for i in range(5)]
    reserving = Customer.create(customer_id=uuid.uuid4(), name="Reserving", credit_limit="10.00")
    order_id = uuid.uuid4()
    reserving.credit_reserve(order_id=order_id, amount="4.00")  # first events beyond CustomerCreated: the general path
    with transaction.atomic(using=ALIAS):
        for customer in [*created, reserving]:
            customer_repository.save(customer, context=MessageContext())
    ids = [c.id for c in [*created, reserving]]
    assert CustomerRow.objects.using(ALIAS).filter(id__in=ids).count() == 6
    assert CustomerEvent.objects.using(ALIAS).filter(stream_id__in=ids).count() == 7
    assert CustomerRow.objects.using(ALIAS).get(id=reserving.id).credit_reserved == Decimal("4.00")
    duplicate = Customer.create(customer_id=created[0].id, name="Again", credit_limit="1.00")
    with pytest.raises(ConcurrencyError), transaction.atomic(using=ALIAS):
        customer_repository.save(duplicate, context=MessageContext())
    assert CustomerEvent.objects.using(ALIAS).filter(stream_id=created[0].id).count() == 1


def test_the_statements_seen_by_an_execute_wrapper_are_the_statements_sent() -> None:
    """The SQLite path runs the inserts through the execute wrappers when there are any."""
    seen: list[str] = []

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connections[ALIAS].execute_wrapper(watch):
        customer_create(name="Counted", credit_limit="1.00")
    if connections[ALIAS].vendor == "postgresql":
        assert len(seen) == 1 and seen[0].startswith('WITH e AS (INSERT INTO "customers_customerevent"')
        assert 'INSERT INTO "customers_customer" ' in seen[0]
    else:
        assert [sql.split()[2] for sql in seen] == ['"customers_customerevent"', '"customers_customer"']
