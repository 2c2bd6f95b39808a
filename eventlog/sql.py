"""Lean inserts and updates for the hot write paths (event appends, state rows, the relay).

The ORM builds a model instance and compiles a query per call; an event append pays that
several times per transaction. These helpers cache the SQL text per table and column set and
adapt values as each field's ``get_db_prep_save`` would, so UUIDs, decimals, JSON and datetimes
are stored as the ORM would store them, on SQLite and PostgreSQL alike: for the field types of
the event and state tables through a short path per vendor (``_adapter``; a test checks it
against ``get_db_prep_save`` for every event type), for any other field through
``get_db_prep_save`` itself. JSON is encoded with orjson (compact, UTF-8), which
``JSONField`` reads back as the same value; what orjson would encode differently from
``json.dumps`` (non-string keys, NaN, datetimes, subclasses) goes through ``json.dumps``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import json
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import orjson
from django.conf import settings
from django.db import connections
from django.db.backends.utils import CursorWrapper
from django.db.models import (
    CharField,
    DateTimeField,
    DecimalField,
    Field,
    JSONField,
    Model,
    PositiveIntegerField,
    UUIDField,
)

_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _refuse(value: Any) -> Any:
    raise TypeError(f"not plain JSON: {type(value).__name__}")


def _plain(value: Any) -> bool:
    """No float that ``json.dumps`` and orjson would write differently (NaN, infinities)."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is dict:
        return all(_plain(v) for v in value.values())
    if type(value) in (list, tuple):
        return all(_plain(v) for v in value)
    return True


def json_dumps(value: Any) -> str:
    """JSON text that ``json.loads`` (so ``JSONField``) reads back as ``value``, as
    ``json.dumps`` would have it; compact, and about 10x faster for the payloads of events."""
    try:
        text = orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value)
    if b"null" in text and not _plain(value):  # orjson writes NaN and infinities as null
        return json.dumps(value)
    return text.decode()


class JSONText(str):
    """JSON already encoded (as read from a jsonb column as text): stored as it is, so a row
    copied from one table to another is not decoded and encoded again on the way."""

    __slots__ = ()


def _adapter(field: Field, alias: str) -> Callable[[Any], Any]:
    """``value -> field.get_db_prep_save(value, connection)``, short for the common field types."""
    connection = connections[alias]
    vendor = connection.vendor

    def slow(value: Any) -> Any:
        return field.get_db_prep_save(value, connections[alias])

    kind = type(field)
    if kind is UUIDField:
        native = connection.features.has_native_uuid_field

        def adapt_uuid(value: Any) -> Any:
            if type(value) is not uuid.UUID:
                return slow(value)
            return value if native else value.hex

        return adapt_uuid
    if kind is DateTimeField and vendor in ("sqlite", "postgresql") and settings.USE_TZ and connection.settings_dict.get("TIME_ZONE") is None:
        if vendor == "postgresql":  # psycopg sends an aware datetime as it is

            def adapt_datetime(value: Any) -> Any:
                return value if type(value) is dt.datetime and value.tzinfo is not None else slow(value)

        else:
            utc = dt.UTC  # the connection's time zone when the alias sets no TIME_ZONE
            last: list[tuple[Any, str]] = [(None, "")]  # a row's timestamps are often one value

            def adapt_datetime(value: Any) -> Any:
                # DatabaseOperations.adapt_datetimefield_value: naive in the connection's zone.
                seen, text = last[0]
                if value is seen:
                    return text
                if type(value) is not dt.datetime or value.tzinfo is None:
                    return slow(value)
                text = str(value.astimezone(utc).replace(tzinfo=None))
                last[0] = (value, text)
                return text

        return adapt_datetime
    if kind is DecimalField:

        def adapt_decimal(value: Any) -> Any:
            if type(value) is decimal.Decimal and value.is_finite():
                return value
            return slow(value)

        return adapt_decimal
    if kind is CharField:
        return lambda value: value if type(value) is str else slow(value)
    if kind is PositiveIntegerField:
        return lambda value: value if type(value) is int else slow(value)
    if kind is JSONField and field.encoder is None and vendor in ("sqlite", "postgresql"):  # type: ignore[attr-defined]  # kind is JSONField: the field is one
        if vendor == "sqlite":
            return lambda value: str(value) if type(value) is JSONText else None if value is None and field.null else json_dumps(value)
        from psycopg.types.json import Jsonb

        # JSONText: a bare string literal, which PostgreSQL reads into the jsonb column (the
        # VALUES path renders parameters on the client).
        return lambda value: str(value) if type(value) is JSONText else None if value is None and field.null else Jsonb(value, dumps=json_dumps)
    return slow


@functools.cache
def _adapters(model: type[Model], names: tuple[str, ...], alias: str) -> tuple[Callable[[Any], Any], ...]:
    return tuple(_adapter(field, alias) for field in _fields(model, names))


def row_params(model: type[Model], alias: str, names: tuple[str, ...], rows: Iterable[Mapping[str, Any]]) -> list[Any]:
    """The parameters of ``rows`` (dicts keyed by ``names``), adapted, flattened in order."""
    adapters = tuple(zip(names, _adapters(model, names, alias), strict=True))
    return [adapt(row[name]) for row in rows for name, adapt in adapters]


@functools.cache
def _fields(model: type[Model], names: tuple[str, ...]) -> tuple[Field, ...]:
    return tuple(model._meta.get_field(name) for name in names)  # type: ignore[misc]  # get_field of a concrete column: a Field, never a relation


@functools.cache
def _insert_sql(model: type[Model], names: tuple[str, ...], rows: int, alias: str, on_conflict_ignore: bool | str) -> str:
    quote = connections[alias].ops.quote_name
    columns = ", ".join(quote(field.column) for field in _fields(model, names))
    placeholders = "(" + ", ".join(["%s"] * len(names)) + ")"
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES " + ", ".join([placeholders] * rows)
    return sql + _on_conflict(model, alias, on_conflict_ignore)


def _on_conflict(model: type[Model], alias: str, on_conflict_ignore: bool | str) -> str:
    if isinstance(on_conflict_ignore, str):
        (target,) = _fields(model, (on_conflict_ignore,))
        return f" ON CONFLICT ({connections[alias].ops.quote_name(target.column)}) DO NOTHING"
    return " ON CONFLICT DO NOTHING" if on_conflict_ignore else ""


#: From this many rows on, PostgreSQL gets one array per column (``unnest``) with the values bound
#: on the server, instead of a VALUES list of rows x columns literals: psycopg renders and parses
#: that list in Python (measured: about 70 ms for 1,000 events, most of the relay's time).
UNNEST_FROM_ROWS = 20


@functools.cache
def _unnest_sql(model: type[Model], names: tuple[str, ...], alias: str, on_conflict_ignore: bool | str) -> str:
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = _fields(model, names)
    columns = ", ".join(quote(field.column) for field in fields)
    # %b: psycopg sends the arrays in binary, which it builds without escaping every element.
    arrays = ", ".join(f"%b::{'text' if isinstance(field, JSONField) else field.db_type(connection)}[]" for field in fields)
    values = ", ".join(f"u.c{i}::jsonb" if isinstance(field, JSONField) else f"u.c{i}" for i, field in enumerate(fields))
    aliases = ", ".join(f"c{i}" for i in range(len(fields)))
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) SELECT {values} FROM unnest({arrays}) AS u({aliases})"
    return sql + _on_conflict(model, alias, on_conflict_ignore)


@functools.cache
def _unnest_adapters(model: type[Model], names: tuple[str, ...], alias: str) -> tuple[Callable[[Any], Any], ...]:
    """As ``_adapters``, with JSON as text (the statement casts the text array to jsonb)."""
    def json_text(field: JSONField) -> Callable[[Any], Any]:
        encode = json_dumps if field.encoder is None else functools.partial(json.dumps, cls=field.encoder)
        return lambda value: str(value) if type(value) is JSONText else None if value is None else encode(value)

    fields = _fields(model, names)
    return tuple(
        json_text(field) if isinstance(field, JSONField) else adapt
        for field, adapt in zip(fields, _adapters(model, names, alias), strict=True)
    )


def server_cursor(alias: str) -> Any:
    """A Django cursor (execute wrappers, error translation) over a psycopg cursor that binds
    parameters on the server, for statements with large parameters (arrays)."""
    import psycopg

    connection = connections[alias]
    connection.ensure_connection()
    return CursorWrapper(psycopg.Cursor(connection.connection), connection)


def insert_rows(
    model: type[Model], alias: str, rows: Sequence[Mapping[str, Any]], *, on_conflict_ignore: bool | str = False, chunk: int = 500
) -> int:
    """Insert ``rows`` (dicts with the same keys, field names) in order; returns rows written.

    ``on_conflict_ignore=True`` skips a row that violates any unique constraint (ON CONFLICT DO
    NOTHING, on SQLite 3.24+ and PostgreSQL). A field name skips only a row that clashes on that
    unique field (ON CONFLICT (column) DO NOTHING): a clash on any other constraint still raises
    IntegrityError, which is what a caller wants when only one kind of clash means "already
    there". Without it every IntegrityError propagates.
    """
    if not rows:
        return 0
    connection = connections[alias]
    names = tuple(rows[0].keys())
    written = 0
    batch = _holding(alias)
    if batch is not None and not on_conflict_ignore and len(rows) < UNNEST_FROM_ROWS:
        batch.add_statement(_insert_sql(model, names, len(rows), alias, False), row_params(model, alias, names, rows))
        return len(rows)  # all of them, or the flush raises
    if batch is not None:
        batch.flush()  # what was held back goes first: the order of writes is kept
    if connection.vendor == "postgresql" and len(rows) >= UNNEST_FROM_ROWS:
        adapters = tuple(zip(names, _unnest_adapters(model, names, alias), strict=True))
        columns = [[adapt(row[name]) for row in rows] for name, adapt in adapters]
        with server_cursor(alias) as cursor:
            cursor.execute(_unnest_sql(model, names, alias, on_conflict_ignore), columns)
            return max(cursor.rowcount, 0)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            cursor.execute(_insert_sql(model, names, len(part), alias, on_conflict_ignore), row_params(model, alias, names, part))
            written += max(cursor.rowcount, 0)
    return written


@functools.cache
def _insert_with_state_sql(
    event_model: type[Model], event_names: tuple[str, ...], rows: int, state_model: type[Model], state_names: tuple[str, ...], alias: str
) -> str:
    """PostgreSQL: the events insert as a CTE whose output the state-row insert reads, so the
    events go in first (a clash on a stream version fails the statement before the state row
    is tried) and both are one statement, which is one transaction."""
    quote = connections[alias].ops.quote_name
    events = _insert_sql(event_model, event_names, rows, alias, False)
    columns = ", ".join(quote(field.column) for field in _fields(state_model, state_names))
    values = ", ".join(["%s"] * len(state_names))
    return f"WITH e AS ({events} RETURNING 1) INSERT INTO {quote(state_model._meta.db_table)} ({columns}) SELECT {values} FROM e LIMIT 1"


@functools.cache
def _qmark(sql: str) -> str:
    return sql.replace("%s", "?")


def insert_new_with_state(
    alias: str, event_model: type[Model], event_rows: Sequence[Mapping[str, Any]], state_model: type[Model], state_row: Mapping[str, Any]
) -> None:
    """Insert the first events of a stream and its state row, both or neither.

    PostgreSQL: one statement, one round trip; outside a transaction it is a transaction of its
    own. SQLite, outside a transaction: ``BEGIN IMMEDIATE``, the two inserts and ``COMMIT`` on
    the driver's connection (what ``transaction.atomic`` would send, without its Python); inside
    the caller's transaction, the two inserts. When something watches the statements
    (``connection.execute_wrapper``) or on another vendor, the same inserts run through
    Django's cursor in ``transaction.atomic``, so what is counted is what is sent.
    """
    from django.db import transaction

    connection = connections[alias]
    event_names, state_names = tuple(event_rows[0]), tuple(state_row)
    event_params = row_params(event_model, alias, event_names, event_rows)
    state_params = row_params(state_model, alias, state_names, [state_row])
    own_transaction = not connection.in_atomic_block
    if own_transaction and not connection.get_autocommit():
        raise RuntimeError("insert_new_with_state: autocommit is off outside transaction.atomic")
    batch = _holding(alias)
    if batch is not None and not own_transaction:
        # Two statements of the batch (a data-modifying WITH cannot nest in another's WITH).
        batch.add_statement(_insert_sql(event_model, event_names, len(event_rows), alias, False), event_params)
        batch.add_statement(_insert_sql(state_model, state_names, 1, alias, False), state_params)
        return
    if connection.vendor == "postgresql":
        sql = _insert_with_state_sql(event_model, event_names, len(event_rows), state_model, state_names, alias)
        with connection.cursor() as cursor:
            cursor.execute(sql, event_params + state_params)
        return
    events_sql = _insert_sql(event_model, event_names, len(event_rows), alias, False)
    state_sql = _insert_sql(state_model, state_names, 1, alias, False)
    if not own_transaction or connection.vendor != "sqlite":
        # In the caller's transaction no savepoint: a failure aborts the caller's transaction.
        with transaction.atomic(using=alias) if own_transaction else contextlib.nullcontext(), connection.cursor() as cursor:
            cursor.execute(events_sql, event_params)
            cursor.execute(state_sql, state_params)
        return
    connection.ensure_connection()
    raw = connection.connection
    # Through the execute wrappers when there are any (they see the two inserts, as they would
    # in transaction.atomic; BEGIN and COMMIT are not statements of Django's cursor either).
    execute = CursorWrapper(raw.cursor(), connection).execute if connection.execute_wrappers else raw.execute
    mode = connection.transaction_mode  # type: ignore[attr-defined]  # Django 5.1's SQLite option, missing from django-stubs
    with connection.wrap_database_errors:
        raw.execute(f"BEGIN {mode}" if mode else "BEGIN")
        try:
            execute(_qmark(events_sql), event_params)
            execute(_qmark(state_sql), state_params)
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise


@functools.cache
def _update_sql(model: type[Model], names: tuple[str, ...], alias: str) -> str:
    quote = connections[alias].ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in _fields(model, names))
    pk_field = model._meta.pk
    assert pk_field is not None
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(pk_field.column)} = %s"


def _update_params(model: type[Model], alias: str, pk: Any, values: Mapping[str, Any]) -> list[Any]:
    pk_field = model._meta.pk
    assert pk_field is not None
    params = row_params(model, alias, tuple(values.keys()), [values])
    params.append(pk_field.get_db_prep_value(pk, connections[alias]))
    return params


def update_row(model: type[Model], alias: str, pk: Any, values: Mapping[str, Any]) -> int:
    """``UPDATE table SET ... WHERE pk = %s``; returns the number of rows changed (held back:
    ``held_back``, 1)."""
    batch = _holding(alias)
    if batch is not None:
        batch.add_statement(_update_sql(model, tuple(values.keys()), alias), _update_params(model, alias, pk, values))
        return 1
    with connections[alias].cursor() as cursor:
        cursor.execute(_update_sql(model, tuple(values.keys()), alias), _update_params(model, alias, pk, values))
        return cursor.rowcount


class WriteBatch:
    """The inserts and updates of one transaction, held back and sent together at its end.

    ``flush`` sends them as **one statement** on PostgreSQL (each write a data-modifying
    ``WITH`` clause: all of them run, to completion, whatever the outer query reads) and one
    statement per table and kind on other vendors, in the order they were first asked for.
    They must be independent of each other: no write may need another's effect within the
    statement (a ``WITH`` clause does not see its siblings' rows), and a row is updated at most
    once (``update`` merges the fields asked for on one instance; an instance waiting to be
    inserted is inserted with its values at flush time and not updated). Foreign keys between
    rows of one batch are fine: Django's are ``DEFERRABLE INITIALLY DEFERRED`` on PostgreSQL,
    checked at commit. A read in the same transaction does not see held-back writes: flush first.

    Values are taken from the instances when ``flush`` runs, so later changes to an instance
    are written too. Rows get no primary key back: use it for rows whose key the caller sets,
    or whose generated key it does not need in this transaction.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._inserts: dict[type[Model], list[Model]] = {}
        self._updates: dict[int, tuple[Model, set[str]]] = {}
        self._order: list[tuple[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self._order)

    def add_statement(self, sql: str, params: list[Any]) -> None:
        """A write already in SQL (``insert_rows``, ``update_row``, ``delete_rows`` under
        ``held_back``), sent in its turn."""
        self._order.append(("sql", (sql, params)))

    def insert(self, instance: Model) -> None:
        model = type(instance)
        if model not in self._inserts:
            self._inserts[model] = []
            self._order.append(("insert", model))
        self._inserts[model].append(instance)

    def update(self, instance: Model, fields: Iterable[str]) -> None:
        model = type(instance)
        if any(pending is instance for pending in self._inserts.get(model, ())):
            return  # inserted with its current values at flush time
        key = id(instance)
        if key in self._updates:
            self._updates[key][1].update(fields)
            return
        if not any(kind == "update" and m is model for kind, m in self._order):
            self._order.append(("update", model))
        self._updates[key] = (instance, set(fields))

    def statements(self) -> list[tuple[str, list[Any]]]:
        """The SQL and parameters of every held-back write, in order (one per insert table and
        per updated row)."""
        alias = self.alias
        result: list[tuple[str, list[Any]]] = []
        for kind, model in self._order:
            if kind == "sql":
                result.append(model)
            elif kind == "insert":
                instances = self._inserts[model]
                names = tuple(field.attname for field in model._meta.concrete_fields if not (field.primary_key and field.db_returning))
                rows = [{name: getattr(instance, name) for name in names} for instance in instances]
                result.append((_insert_sql(model, names, len(rows), alias, False), row_params(model, alias, names, rows)))
            else:
                for instance, fields in self._updates.values():
                    if type(instance) is model:
                        names = tuple(sorted(fields))
                        values = {name: getattr(instance, model._meta.get_field(name).attname) for name in names}
                        result.append((_update_sql(model, names, alias), _update_params(model, alias, instance.pk, values)))
        return result

    def flush(self) -> None:
        """Send what is held back (nothing if nothing is) and start empty."""
        if not self:
            return
        statements = self.statements()
        self._inserts, self._updates, self._order = {}, {}, []
        connection = connections[self.alias]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql" and len(statements) > 1:
                clauses = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(statements))
                cursor.execute(f"WITH {clauses} SELECT 1", [param for _, params in statements for param in params])
                return
            for sql, params in statements:
                cursor.execute(sql, params)


def delete_rows(model: type[Model], alias: str, field_name: str, values: Iterable[Any]) -> int:
    connection = connections[alias]
    quote = connection.ops.quote_name
    field = model._meta.get_field(field_name)
    params = [field.get_db_prep_value(value, connection) for value in values]  # type: ignore[union-attr]  # get_field of a concrete column: a Field, never a relation
    if not params:
        return 0
    placeholders = ", ".join(["%s"] * len(params))
    batch = _holding(alias)
    if batch is not None:
        batch.add_statement(f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote(field.column)} IN ({placeholders})", params)  # type: ignore[union-attr,arg-type]  # get_field: a union in the stubs
        return len(params)  # at most; nobody counts on it
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote(field.column)} IN ({placeholders})", params)  # type: ignore[union-attr, arg-type]  # a concrete Field always has its column
        return cursor.rowcount


_held: ContextVar[dict[str, WriteBatch] | None] = ContextVar("held_back_writes", default=None)


def _holding(alias: str) -> WriteBatch | None:
    held = _held.get()
    return None if held is None else held.get(alias)


@contextlib.contextmanager
def held_back(alias: str) -> Iterator[WriteBatch]:
    """Inside a transaction of ``alias``: ``insert_rows`` (without ``on_conflict_ignore``),
    ``update_row``, ``delete_rows`` and ``insert_new_with_state`` hold their writes back in the
    returned batch instead of sending each; the caller ``flush``es it before its transaction
    ends (one statement on PostgreSQL). Leaving without a flush drops them, as the rollback of
    that transaction would. What runs inside must not read what it wrote (see ``WriteBatch``);
    the writes' errors (a unique constraint) come from the flush, so the caller maps them there.
    """
    batch = WriteBatch(alias)
    token = _held.set({**(_held.get() or {}), alias: batch})
    try:
        yield batch
    finally:
        _held.reset(token)
