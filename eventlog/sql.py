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
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def update_row(model: type[Model], alias: str, pk: Any, values: Mapping[str, Any]) -> int:
    """``UPDATE table SET ... WHERE pk = %s``; returns the number of rows changed."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    names = tuple(values.keys())
    fields = _fields(model, names)
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    pk_field = model._meta.pk
    assert pk_field is not None
    params = row_params(model, alias, names, [values])
    params.append(pk_field.get_db_prep_value(pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(pk_field.column)} = %s", params)
        return cursor.rowcount


def delete_rows(model: type[Model], alias: str, field_name: str, values: Iterable[Any]) -> int:
    connection = connections[alias]
    quote = connection.ops.quote_name
    field = model._meta.get_field(field_name)
    params = [field.get_db_prep_value(value, connection) for value in values]  # type: ignore[union-attr]  # get_field of a concrete column: a Field, never a relation
    if not params:
        return 0
    placeholders = ", ".join(["%s"] * len(params))
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote(field.column)} IN ({placeholders})", params)  # type: ignore[union-attr, arg-type]  # a concrete Field always has its column
        return cursor.rowcount
