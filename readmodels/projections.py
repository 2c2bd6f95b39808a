"""Projections: fold events from the central log into the read-model tables.

A projection is a *fold*: a function that applies a list of events, in log order, to the rows
of its tables held in memory (:class:`Rows`). The live subscriber and the rebuild
(``readmodels/rebuild.py``) run the very same fold; they differ only in how long the rows stay
in memory:

* live (:meth:`Projection.project`): for each batch, load the rows the batch touches, fold,
  write the changed rows back, all inside the transaction that also moves the checkpoint, so a
  batch is applied exactly once;
* rebuild: one :class:`State` for the whole replay. It starts empty over empty tables, so it
  holds every row and never reads one back; each batch writes only what changed, with the
  rebuild's checkpoint in the same transaction.

Rows are plain dicts keyed by field ``attname`` (no model instances), and they are written with
the driver's bulk paths: ``COPY`` on PostgreSQL, ``executemany`` elsewhere.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import DateTimeField, Model, UUIDField

from eventlog.domain import RecordedEvent
from readmodels import cache, models

ALIAS = "readmodels"
LOAD_CHUNK = 2000  # primary keys per SELECT ... WHERE pk IN (...)
#: ``uuid.UUID(text)`` for ids inside payloads: a few customers are named by many orders.
_uuid = functools.lru_cache(maxsize=1 << 16)(uuid.UUID)

Row = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """Where a projection writes: the live tables (and their cache), or a rebuild's shadows."""

    tables: dict[type[Model], type[Model]] = field(default_factory=dict)
    live: bool = True

    def table(self, model: type[Model]) -> type[Model]:
        return self.tables.get(model, model)


LIVE = Target()

ORDER_STATE_AFTER = {
    "OrderCreated": "PENDING",
    "OrderApproved": "APPROVED",
    "OrderRejected": "REJECTED",
    "OrderCancelRequested": "CANCEL_PENDING",
    "OrderCancelled": "CANCELLED",
    "OrderCancelReverted": "APPROVED",
}
COUNTER_FOR_STATE = {
    "PENDING": "orders_pending",
    "APPROVED": "orders_approved",
    "REJECTED": "orders_rejected",
    "CANCEL_PENDING": "orders_cancel_pending",
    "CANCELLED": "orders_cancelled",
}


# --- Rows in memory and how they are written -----------------------------------------------


def _adapter(model_field: Any, connection: Any) -> Callable[[Any], Any] | None:
    """How a value of ``model_field`` goes to the driver: what ``get_db_prep_save`` sends, or
    None where the driver takes the Python value as it is (tests/readmodels/test_rows.py checks
    both against ``get_db_prep_save`` on each backend)."""
    if connection.vendor == "postgresql":
        return None  # psycopg adapts UUID, Decimal, aware datetime, str and int as Django passes them
    if connection.vendor == "sqlite":
        if isinstance(model_field, UUIDField):
            return lambda value: None if value is None else value.hex
        if isinstance(model_field, DateTimeField):
            return _sqlite_datetime(connection)
        return None  # str, int; Decimal goes through the sqlite3 adapter Django registers
    return functools.partial(model_field.get_db_prep_save, connection=connection)


def _sqlite_datetime(connection: Any) -> Callable[[Any], Any]:
    """Django's ``adapt_datetimefield_value`` on SQLite, with its common case (an aware value,
    USE_TZ) inlined: ``str(make_naive(value, connection.timezone))``."""
    django_adapt = connection.ops.adapt_datetimefield_value
    if not settings.USE_TZ:
        return django_adapt
    tz = connection.timezone

    def adapt(value: Any) -> Any:
        if value is None or value.utcoffset() is None:
            return django_adapt(value)
        return str(value.astimezone(tz).replace(tzinfo=None))

    return adapt


def _copy_types(fields: Iterable[Any], connection: Any) -> list[str] | None:
    """The PostgreSQL type of each column, for a binary COPY (None if one is not known)."""
    import psycopg

    names = []
    for model_field in fields:
        info = psycopg.adapters.types.get(re.sub(r"\(.*\)", "", model_field.db_type(connection)).strip())
        if info is None:
            return None
        names.append(info.name)
    return names


class _Writer:
    """The SQL and value adaptation to write the rows of one table on one connection."""

    def __init__(self, model: type[Model], connection: Any) -> None:
        quote = connection.ops.quote_name
        fields = model._meta.local_fields
        pk = model._meta.pk
        assert pk is not None
        self.vendor = connection.vendor
        # Binary COPY: a third of the client time of text COPY (psycopg's C dumpers).
        self.copy_types = _copy_types(fields, connection) if self.vendor == "postgresql" else None
        self.getter = itemgetter(*(f.attname for f in fields))
        adapters = [_adapter(f, connection) for f in fields]
        self.adapters = adapters if any(adapters) else None
        table = quote(model._meta.db_table)
        columns = ", ".join(quote(f.column) for f in fields)
        placeholders = ", ".join(["%s"] * len(fields))
        updates = ", ".join(f"{quote(f.column)} = EXCLUDED.{quote(f.column)}" for f in fields if f is not pk)
        self.insert_sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
        self.upsert_sql = f"{self.insert_sql} ON CONFLICT ({quote(pk.column)}) DO UPDATE SET {updates}"
        self.copy_sql = f"COPY {table} ({columns}) FROM STDIN" + (" (FORMAT BINARY)" if self.copy_types else "")
        self.delete_sql = f"DELETE FROM {table} WHERE {quote(pk.column)} = ANY(%s)"

    def values(self, rows: Iterable[Row]) -> list[tuple[Any, ...]]:
        getter, adapters = self.getter, self.adapters
        if adapters is None:
            return [getter(row) for row in rows]
        return [tuple([v if a is None else a(v) for a, v in zip(adapters, getter(row), strict=True)]) for row in rows]

    def write(self, cursor: Any, new: list[Row], changed: list[Row], changed_pks: list[Any]) -> None:
        """Insert ``new`` rows and replace ``changed`` ones, in the caller's transaction."""
        if self.vendor == "postgresql":
            # Replace = delete + insert in one transaction; COPY is the fastest insert there is.
            if changed_pks:
                cursor.execute(self.delete_sql, [changed_pks])
            with cursor.cursor.copy(self.copy_sql) as copy:
                if self.copy_types:
                    copy.set_types(self.copy_types)
                for values in self.values(new + changed):
                    copy.write_row(values)
            return
        if new:
            cursor.executemany(self.insert_sql, self.values(new))
        if changed:
            cursor.executemany(self.upsert_sql, self.values(changed))


@functools.cache
def _writer(model: type[Model], alias: str, vendor: str) -> _Writer:
    return _Writer(model, connections[alias])


def _identity(value: Any) -> Any:
    return value


class Rows:
    """Rows of one table (live or shadow) as a fold sees them: loaded by primary key on
    demand, changed in memory, written in bulk by :meth:`flush`.

    ``complete`` means every row of the table is in memory (a rebuild that started from empty
    tables), so :meth:`load` has nothing to read. Rows are kept under ``uuid.int`` rather than
    the UUID itself: ``UUID.__hash__`` is Python code, and it was a tenth of a replay.
    """

    def __init__(self, model: type[Model], *, complete: bool = False, indexed: str | None = None) -> None:
        meta = model._meta
        assert meta.pk is not None
        self.model = model
        self.columns = tuple(f.attname for f in meta.local_fields)
        self.pk = meta.pk.attname
        self.key: Callable[[Any], Any] = attrgetter("int") if isinstance(meta.pk, UUIDField) else _identity
        self.complete = complete
        self.rows: dict[Any, Row] = {}
        self.new: dict[Any, None] = {}  # an ordered set of keys: rows to insert
        self.dirty: set[Any] = set()  # keys of the rows to write (inserted or replaced)
        #: A column whose value never changes (a UUID), to find rows by it: ``where``.
        self.indexed = indexed
        self.index: dict[int, list[Any]] = {}

    def _remember(self, key: Any, row: Row) -> None:
        self.rows[key] = row
        if self.indexed is not None:
            self.index.setdefault(row[self.indexed].int, []).append(key)

    def load(self, ids: Iterable[Any]) -> None:
        """Read the rows with these primary keys that are not in memory yet (lazily: ``ids``
        is not even iterated when the table is complete)."""
        if self.complete:
            return
        key, rows = self.key, self.rows
        missing = list({pk for pk in ids if key(pk) not in rows})
        self._read("pk__in", missing)

    def load_where(self, values: Iterable[uuid.UUID]) -> None:
        """Read the rows whose indexed column has one of these values (nothing if complete)."""
        if not self.complete:
            self._read(f"{self.indexed}__in", list(set(values)))

    def _read(self, lookup: str, values: list[Any]) -> None:
        key, rows = self.key, self.rows
        manager = self.model._default_manager.using(ALIAS)
        index = self.columns.index(self.pk)
        for start in range(0, len(values), LOAD_CHUNK):
            for found in manager.filter(**{lookup: values[start : start + LOAD_CHUNK]}).values_list(*self.columns):
                if key(found[index]) not in rows:
                    self._remember(key(found[index]), dict(zip(self.columns, found, strict=True)))

    def where(self, value: uuid.UUID) -> list[Row]:
        """The rows in memory whose indexed column is ``value`` (all of them, after ``load_where``)."""
        return [self.rows[key] for key in self.index.get(value.int, ())]

    def get(self, pk: Any) -> Row | None:
        return self.rows.get(self.key(pk))

    def add(self, row: Row) -> None:
        key = self.key(row[self.pk])
        self._remember(key, row)
        self.new[key] = None
        self.dirty.add(key)

    def touch(self, row: Row) -> None:
        self.dirty.add(self.key(row[self.pk]))

    def flush(self) -> list[Any]:
        """Write what changed since the last flush; returns the primary keys written."""
        rows, pk, new = self.rows, self.pk, self.new
        written = [rows[key] for key in self.dirty]
        if written:
            connection = connections[ALIAS]
            changed = [row for key, row in zip(self.dirty, written, strict=True) if key not in new]
            with connection.cursor() as cursor:
                _writer(self.model, ALIAS, connection.vendor).write(cursor, [rows[key] for key in new], changed, [row[pk] for row in changed])
        self.new, self.dirty = {}, set()
        return [row[pk] for row in written]

    def forget(self) -> None:
        """Drop every row from memory (they are read again on demand)."""
        self.rows, self.new, self.dirty, self.complete, self.index = {}, {}, set(), False, {}


class State:
    """A projection's tables in memory, keyed by the live model (the rows may live in shadows)."""

    def __init__(self, projection: Projection, target: Target = LIVE, *, complete: bool = False) -> None:
        self.tables = {model: Rows(target.table(model), complete=complete, indexed=projection.indexed.get(model)) for model in projection.tables}

    def __getitem__(self, model: type[Model]) -> Rows:
        return self.tables[model]

    def flush(self) -> dict[type[Model], list[Any]]:
        return {model: rows.flush() for model, rows in self.tables.items()}

    def forget(self) -> None:
        for rows in self.tables.values():
            rows.forget()

    def size(self) -> int:
        return max((len(rows.rows) for rows in self.tables.values()), default=0)


# --- The folds ------------------------------------------------------------------------------


def order_summary_fold(events: list[RecordedEvent], state: State) -> None:
    """One row per order. The customer's name comes from CustomerCreated events, remembered in
    the projection's own small name table, so this projection depends on no other.

    The two outboxes are relayed independently, so an order can reach the log before its
    customer does: it is written without a name, and its customer's CustomerCreated fills
    the name in (``early_orders``)."""
    orders, names = state[models.OrderSummary], state[models.CustomerName]
    orders.load(e.stream_id for e in events if e.stream_type == "Order")
    names.load(e.stream_id if e.type == "CustomerCreated" else _uuid(e.data["customer_id"]) for e in events if e.type in ("CustomerCreated", "OrderCreated"))
    orders.load_where(_created_customers(events))
    # Every event of a replay goes through this loop: it works on the rows' dicts directly, under
    # ``uuid.int`` keys (``Rows.key`` of a UUID primary key), as ``customer_credit_fold`` does.
    assert orders.key is not _identity and names.key is not _identity
    order_rows, order_dirty, name_rows = orders.rows, orders.dirty, names.rows
    order: dict[str, Any] | None
    state_after = ORDER_STATE_AFTER
    for event in events:
        kind = event.type
        if kind == "CustomerCreated":
            if name_rows.get(event.stream_id.int) is None:
                names.add({"id": event.stream_id, "name": event.data["name"]})
                for order in orders.where(event.stream_id):  # early_orders
                    if order["customer_name"] is None:
                        order["customer_name"] = event.data["name"]
                        orders.touch(order)
            continue
        key = event.stream_id.int
        order = order_rows.get(key)
        if kind == "OrderCreated":
            if order is not None:
                continue
            customer_id = _uuid(event.data["customer_id"])
            name = name_rows.get(customer_id.int)
            orders.add(
                {
                    "id": event.stream_id,
                    "customer_id": customer_id,
                    "customer_name": None if name is None else name["name"],
                    "total": Decimal(event.data["total"]),
                    "state": "PENDING",
                    "rejection_reason": None,
                    "mode": event.data["mode"],
                    "saga_id": event.saga_id,
                    "version": event.version,
                    "created_at": event.occurred_at,
                    "updated_at": event.occurred_at,
                }
            )
            continue
        if order is None or event.version <= order["version"]:
            continue
        order["state"] = state_after[kind]
        if kind == "OrderRejected":
            order["rejection_reason"] = event.data["reason"]
        order["version"] = event.version
        order["updated_at"] = event.occurred_at
        order_dirty.add(key)


def _created_customers(events: list[RecordedEvent]) -> Iterable[uuid.UUID]:
    """Lazily: ``load_where`` does not even iterate it when its table is complete (a rebuild)."""
    return (e.stream_id for e in events if e.type == "CustomerCreated")


def order_summary_invalidate(written: dict[type[Model], list[Any]]) -> None:
    orders = written[models.OrderSummary]
    cache.invalidate_at_commit("order", orders)
    cache.invalidate_at_commit("orders", [None] if orders else [])


ORDER_SUMMARY_TYPES = frozenset({"CustomerCreated", *ORDER_STATE_AFTER})


def customer_credit_fold(events: list[RecordedEvent], state: State) -> None:
    """One row per customer: credit and counts of orders by state."""
    customers, order_states = state[models.CustomerCredit], state[models.CustomerOrderState]
    order_states.load(e.stream_id for e in events if e.stream_type == "Order")

    def customer_ids() -> Iterable[uuid.UUID]:
        for e in events:
            if e.stream_type == "Customer":
                yield e.stream_id
            elif e.type == "OrderCreated":
                yield _uuid(e.data["customer_id"])
            elif (order_state := order_states.get(e.stream_id)) is not None:
                yield order_state["customer_id"]

    customers.load(customer_ids())
    order_states.load_where(_created_customers(events))

    # The loop below is the replay's hottest code (every event of the log goes through it), so
    # it works on the rows' dicts directly, under ``uuid.int`` keys (``Rows.key`` of a UUID
    # primary key), instead of calling ``get`` and ``touch``: the same reads and writes, without
    # two method calls per event.
    assert customers.key is not _identity and order_states.key is not _identity
    customer_rows, customer_dirty = customers.rows, customers.dirty
    state_rows, state_dirty = order_states.rows, order_states.dirty
    counter_for_state, state_after = COUNTER_FOR_STATE, ORDER_STATE_AFTER
    order_state: dict[str, Any] | None

    for event in events:
        kind = event.type
        if event.stream_type == "Customer":
            key = event.stream_id.int
            customer = customer_rows.get(key)
            if kind == "CustomerCreated":
                if customer is None:
                    limit = Decimal(event.data["credit_limit"])
                    # Orders that reached the log before their customer are counted now.
                    counters = dict.fromkeys(counter_for_state.values(), 0)
                    for order_state in order_states.where(event.stream_id):
                        counters[counter_for_state[order_state["state"]]] += 1
                    customers.add(
                        {
                            "id": event.stream_id,
                            "name": event.data["name"],
                            "credit_limit": limit,
                            "credit_reserved": Decimal("0.00"),
                            "available_credit": limit,
                            **counters,
                            "version": event.version,
                            "updated_at": event.occurred_at,
                        }
                    )
                continue
            if customer is None or event.version <= customer["version"]:
                continue
            if kind == "CreditReserved":
                customer["credit_reserved"] += Decimal(event.data["amount"])
            elif kind == "CreditReleased":
                customer["credit_reserved"] -= Decimal(event.data["amount"])
            customer["available_credit"] = customer["credit_limit"] - customer["credit_reserved"]
            customer["version"] = event.version
            customer["updated_at"] = event.occurred_at
            customer_dirty.add(key)
            continue
        if kind == "OrderCreated":
            if state_rows.get(event.stream_id.int) is not None:
                continue
            customer_id = _uuid(event.data["customer_id"])
            order_states.add({"order_id": event.stream_id, "customer_id": customer_id, "state": "PENDING"})
            old_state, new_state = None, "PENDING"
        elif kind in state_after:
            key = event.stream_id.int
            order_state = state_rows.get(key)
            if order_state is None:
                continue
            customer_id, old_state, new_state = order_state["customer_id"], order_state["state"], state_after[kind]
            order_state["state"] = new_state
            state_dirty.add(key)
        else:
            continue
        # An order of this customer moved from old_state (None: a new order) to new_state.
        customer_key = customer_id.int
        customer = customer_rows.get(customer_key)
        if customer is not None:
            if old_state is not None:
                customer[counter_for_state[old_state]] -= 1
            customer[counter_for_state[new_state]] += 1
            customer_dirty.add(customer_key)


def customer_credit_invalidate(written: dict[type[Model], list[Any]]) -> None:
    cache.invalidate_at_commit("customer", written[models.CustomerCredit])


CUSTOMER_CREDIT_TYPES = frozenset({"CustomerCreated", "CreditReserved", "CreditReservationFailed", "CreditReleased", *ORDER_STATE_AFTER})


@dataclass(frozen=True)
class Projection:
    """A projection: the subscriber name, the tables it owns, and how it folds events."""

    name: str
    tables: tuple[type[Model], ...]
    types: frozenset[str]
    fold: Callable[[list[RecordedEvent], State], None]
    invalidate: Callable[[dict[type[Model], list[Any]]], None]
    #: Per table, the column its fold looks rows up by (``Rows.where``).
    indexed: dict[type[Model], str] = field(default_factory=dict)
    #: The event attributes its fold reads (None: all): a replay reads only these columns of
    #: the log (``eventlog.selectors.log_scan``); reading another raises AttributeError there.
    fields: tuple[str, ...] | None = None

    def project(self, events: list[RecordedEvent], target: Target = LIVE) -> None:
        """The live subscriber's handler: one batch, in the caller's transaction."""
        state = State(self, target)
        self.fold(events, state)
        written = state.flush()
        if target.live:
            self.invalidate(written)


PROJECTIONS: dict[str, Projection] = {
    p.name: p
    for p in (
        Projection(
            "order_summary", (models.OrderSummary, models.CustomerName), ORDER_SUMMARY_TYPES, order_summary_fold, order_summary_invalidate,
            indexed={models.OrderSummary: "customer_id"}, fields=("stream_id", "stream_type", "version", "type", "data", "occurred_at", "saga_id"),
        ),
        Projection(
            "customer_credit", (models.CustomerCredit, models.CustomerOrderState), CUSTOMER_CREDIT_TYPES, customer_credit_fold, customer_credit_invalidate,
            indexed={models.CustomerOrderState: "customer_id"}, fields=("stream_id", "stream_type", "version", "type", "data", "occurred_at"),
        ),
    )
}


def subscriber_name(projection: Projection) -> str:
    return f"readmodels.{projection.name}"
