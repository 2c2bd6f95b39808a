"""Lean inserts and updates for the hot write paths (event appends, state rows, the relay).

The ORM builds a model instance and compiles a query per call; an event append pays that
several times per transaction. These helpers keep Django's own value adaptation (each field's
``get_db_prep_save``, so UUIDs, decimals, JSON and datetimes are stored exactly as the ORM would
store them, on SQLite and PostgreSQL alike) and cache the SQL text per table and column set.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connections
from django.db.models import Field, Model


@functools.cache
def _fields(model: type[Model], names: tuple[str, ...]) -> tuple[Field, ...]:  # type: ignore[type-arg]
    return tuple(model._meta.get_field(name) for name in names)  # type: ignore[misc]


@functools.cache
def _insert_sql(model: type[Model], names: tuple[str, ...], rows: int, alias: str, on_conflict_ignore: bool | str) -> str:
    quote = connections[alias].ops.quote_name
    columns = ", ".join(quote(field.column) for field in _fields(model, names))
    placeholders = "(" + ", ".join(["%s"] * len(names)) + ")"
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES " + ", ".join([placeholders] * rows)
    if isinstance(on_conflict_ignore, str):
        (target,) = _fields(model, (on_conflict_ignore,))
        sql += f" ON CONFLICT ({quote(target.column)}) DO NOTHING"
    elif on_conflict_ignore:
        sql += " ON CONFLICT DO NOTHING"
    return sql


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
    fields = _fields(model, names)
    written = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            params: list[Any] = []
            for row in part:
                params.extend(field.get_db_prep_save(row[field.name], connection) for field in fields)
            cursor.execute(_insert_sql(model, names, len(part), alias, on_conflict_ignore), params)
            written += max(cursor.rowcount, 0)
    return written


def update_row(model: type[Model], alias: str, pk: Any, values: Mapping[str, Any]) -> int:
    """``UPDATE table SET ... WHERE pk = %s``; returns the number of rows changed."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    names = tuple(values.keys())
    fields = _fields(model, names)
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    pk_field = model._meta.pk
    assert pk_field is not None
    params = [field.get_db_prep_save(values[field.name], connection) for field in fields]
    params.append(pk_field.get_db_prep_value(pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(pk_field.column)} = %s", params)
        return cursor.rowcount


def delete_rows(model: type[Model], alias: str, field_name: str, values: Iterable[Any]) -> int:
    connection = connections[alias]
    quote = connection.ops.quote_name
    field = model._meta.get_field(field_name)
    params = [field.get_db_prep_value(value, connection) for value in values]  # type: ignore[union-attr]
    if not params:
        return 0
    placeholders = ", ".join(["%s"] * len(params))
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote(field.column)} IN ({placeholders})", params)  # type: ignore[union-attr]
        return cursor.rowcount
