"""Reads of the central event log."""

from __future__ import annotations

import collections
import functools
import itertools
import json
import operator
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from django.db import connections
from django.db.models import Max

from eventlog.domain import RecordedEvent
from eventlog.models import EVENT_COLUMNS, LogEvent
from eventlog.persistence import recorded_from_row

EVENTLOG_ALIAS = "eventlog"


def log_read(*, after: int = 0, limit: int = 1000, until: int | None = None, types: frozenset[str] | None = None) -> list[RecordedEvent]:
    """Events with a position above ``after`` (and at most ``until``), in order, at most ``limit``."""
    queryset = LogEvent.objects.using(EVENTLOG_ALIAS).filter(position__gt=after)
    if until is not None:
        queryset = queryset.filter(position__lte=until)
    if types is not None:
        queryset = queryset.filter(type__in=types)
    # Tuples, not model instances: reading the log dominated a replay (bench/replay.py).
    rows = queryset.order_by("position").values_list(*EVENT_COLUMNS, "position")[:limit]
    return [RecordedEvent(*row) for row in rows]


def log_head() -> int:
    """The highest position in the log (0 when it is empty)."""
    return LogEvent.objects.using(EVENTLOG_ALIAS).aggregate(head=Max("position"))["head"] or 0


def log_event(event_id: uuid.UUID) -> RecordedEvent | None:
    row = LogEvent.objects.using(EVENTLOG_ALIAS).filter(event_id=event_id).first()
    return recorded_from_row(row) if row is not None else None


def log_stream(stream_id: uuid.UUID) -> list[RecordedEvent]:
    rows = LogEvent.objects.using(EVENTLOG_ALIAS).filter(stream_id=stream_id).order_by("version")
    return [recorded_from_row(row) for row in rows]


def log_filter(
    *,
    stream_id: uuid.UUID | None = None,
    types: list[str] | None = None,
    correlation_id: uuid.UUID | None = None,
    saga_id: uuid.UUID | None = None,
    after: int = 0,
    until: int | None = None,
    limit: int = 100,
) -> list[RecordedEvent]:
    """Events in log order matching every filter given, after ``after``, at most ``limit``:
    an operator's view of the log (each filter is on an indexed column or the position)."""
    queryset = LogEvent.objects.using(EVENTLOG_ALIAS).filter(position__gt=after)
    if until is not None:
        queryset = queryset.filter(position__lte=until)
    if stream_id is not None:
        queryset = queryset.filter(stream_id=stream_id)
    if types:
        queryset = queryset.filter(type__in=types)
    if correlation_id is not None:
        queryset = queryset.filter(correlation_id=correlation_id)
    if saga_id is not None:
        queryset = queryset.filter(saga_id=saga_id)
    return [RecordedEvent(*row) for row in queryset.order_by("position").values_list(*EVENT_COLUMNS, "position")[:limit]]


def log_scan(*, after: int = 0, limit: int = 1000, until: int | None = None, fields: tuple[str, ...] | None = None) -> list[RecordedEvent]:
    """``log_read`` for bulk reads (replays): the same events, read with the driver's own cursor.

    The ORM's row conversion cost more than the replay's fold: Django's Python timestamp loader
    on PostgreSQL, its ``parse_datetime`` and ``uuid.UUID(...)`` converters on SQLite, and the
    frozen dataclass's ``__init__``. Here PostgreSQL rows come in psycopg's binary format with its
    C loaders, SQLite rows are converted once per column, payloads are decoded with orjson, and
    each event is built without the per-field ``object.__setattr__`` of a frozen dataclass.
    Other backends use ``log_read``.

    ``fields``: only these attributes of each event are read (``position`` and ``type`` always
    are); the others are *absent*, so code that reads one fails loudly (``AttributeError``)
    instead of seeing a wrong value. A replay reads only what its folds use
    (``Projection.fields``): each UUID column not read is a fifth of the reading time.
    """
    connection = connections[EVENTLOG_ALIAS]
    scan = _SCANS.get(connection.vendor)
    if scan is None:
        return log_read(after=after, limit=limit, until=until)
    names = scan_fields(fields)
    return scan_decode(scan(connection, names, after, limit, until), names)


#: Every field a scan can select, the payload last (as text).
_SCAN_FIELDS = (*(name for name in EVENT_COLUMNS if name != "data"), "position", "data")
_new = object.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


@functools.cache
def scan_fields(fields: tuple[str, ...] | frozenset[str] | None) -> tuple[str, ...]:
    """The columns a scan of ``fields`` selects, in ``_SCAN_FIELDS`` order (the payload last)."""
    if fields is None:
        return _SCAN_FIELDS
    unknown = set(fields) - set(_SCAN_FIELDS)
    if unknown:
        raise ValueError(f"not fields of a logged event: {sorted(unknown)}")
    wanted = {*fields, "position", "type"}
    return tuple(name for name in _SCAN_FIELDS if name in wanted)


def scan_decode(rows: list[tuple[Any, ...]], names: tuple[str, ...]) -> list[RecordedEvent]:
    """RecordedEvents from the rows of a scan of ``names`` (the payload, if any, last, as
    text), each built as the dataclass would be, minus the fields not read. Payloads are
    decoded with orjson (a quarter of ``json.loads``'s time on these small documents).

    Every step is a ``map`` over the batch (the loops run in C, not in bytecode): this is a
    replay's hottest code after the folds."""
    cls = RecordedEvent
    if names[-1] == "data":
        try:
            payloads = list(map(orjson.loads, map(_last, rows)))
        except orjson.JSONDecodeError:  # what orjson refuses and json takes: integers beyond 64 bits
            payloads = [json.loads(row[-1]) for row in rows]
        attributes = list(map(dict, map(zip, itertools.repeat(names[:-1]), rows)))  # zip stops before the payload
        collections.deque(map(operator.setitem, attributes, itertools.repeat("data"), payloads), maxlen=0)
    else:
        attributes = list(map(dict, map(zip, itertools.repeat(names), rows)))
    events = list(map(_new, itertools.repeat(cls, len(rows))))
    collections.deque(map(_set, events, itertools.repeat("__dict__"), attributes), maxlen=0)
    return events


_last = operator.itemgetter(-1)


@functools.lru_cache(maxsize=1 << 16)
def _uuid_from_hex(value: str) -> uuid.UUID:
    """``uuid.UUID(value)`` for the 32 hex digits Django stores on SQLite, in a fifth of the
    time (no parsing of braces, dashes or URNs, which the column never holds); cached, since
    stream, correlation and saga ids recur and a causation id is an earlier event's id."""
    result = _new(uuid.UUID)
    _set(result, "int", int(value, 16))
    _set(result, "is_safe", _UNKNOWN)
    return result


def _scan_sql(connection: Any, columns: list[str]) -> str:
    quote = connection.ops.quote_name
    position = quote(LogEvent._meta.get_field("position").column)
    return (f"SELECT {', '.join(columns)} FROM {quote(LogEvent._meta.db_table)} "
            f"WHERE {position} > %s AND {position} <= %s ORDER BY {position} LIMIT %s")


def _scan_postgresql(connection: Any, names: tuple[str, ...], after: int, limit: int, until: int | None) -> list[tuple[Any, ...]]:
    """The rows of a scan of ``names``: one statement, binary results, psycopg's C loaders."""
    import psycopg
    from psycopg.pq import Format

    connection.ensure_connection()
    quote = connection.ops.quote_name
    # The payload as text, decoded by scan_decode: psycopg's jsonb loader decodes bytes, which
    # costs json's encoding detection on every row.
    columns = [quote(LogEvent._meta.get_field(name).column) + ("::text" if name == "data" else "") for name in names]  # type: ignore[union-attr]  # get_field of a concrete column: a Field, never a relation
    cursor = psycopg.Cursor(connection.connection)  # server-side binding, binary results
    cursor.format = Format.BINARY
    # Django's timestamptz loader is pure Python; psycopg's own is C.
    oid = psycopg.adapters.types["timestamptz"].oid
    cursor.adapters.register_loader(oid, psycopg.adapters.get_loader(oid, Format.BINARY))  # type: ignore[arg-type]  # psycopg has a binary loader for every built-in oid; its stubs say it may not
    with cursor:
        cursor.execute(_scan_sql(connection, columns), [after, _NO_LIMIT if until is None else until, limit])
        return cursor.fetchall()


_SQLITE_UUIDS = frozenset({"event_id", "stream_id", "correlation_id", "causation_id", "saga_id"})


def _scan_sqlite(connection: Any, names: tuple[str, ...], after: int, limit: int, until: int | None) -> list[tuple[Any, ...]]:
    """The rows of a scan of ``names``, with UUIDs and timestamps converted as Django would."""
    import datetime as dt

    from django.utils import timezone

    quote = connection.ops.quote_name
    columns = []
    for name in names:
        column = quote(LogEvent._meta.get_field(name).column)  # type: ignore[union-attr]  # get_field of a concrete column: a Field, never a relation
        # An expression has no declared type, so sqlite3 applies no converter: raw text.
        columns.append(f"({column} || '')" if name == "occurred_at" else column)
    uuid_ = _uuid_from_hex
    tz = connection.timezone  # what Django's converter would make the stored naive value aware in
    parse = dt.datetime.fromisoformat
    if tz is None:
        occurred = parse
    elif tz is dt.UTC or getattr(tz, "key", None) == "UTC":
        occurred = lambda text: parse(text).replace(tzinfo=tz)  # noqa: E731
    else:
        occurred = lambda text: timezone.make_aware(parse(text), timezone=tz)  # noqa: E731
    with connection.cursor() as cursor:
        cursor.execute(_scan_sql(connection, columns), [after, _NO_LIMIT if until is None else until, limit])
        rows = cursor.fetchall()
    return _sqlite_converter(names)(rows, uuid_, occurred)


@functools.cache
def _sqlite_converter(names: tuple[str, ...]) -> Callable[..., list[tuple[Any, ...]]]:
    """``rows -> [converted row]`` for a scan of ``names``: one comprehension with a
    converter per column, written out (a generic loop over the columns cost twice as much)."""
    nullable = {"causation_id", "saga_id"}
    values = []
    for i, name in enumerate(names):
        if name in _SQLITE_UUIDS:
            values.append(f"(None if r[{i}] is None else uuid_(r[{i}]))" if name in nullable else f"uuid_(r[{i}])")
        elif name == "occurred_at":
            values.append(f"occurred(r[{i}])")
        else:
            values.append(f"r[{i}]")
    return eval(f"lambda rows, uuid_, occurred: [({', '.join(values)},) for r in rows]")  # noqa: S307 (our own column names)


_NO_LIMIT = 2**63 - 1
_SCANS = {"postgresql": _scan_postgresql, "sqlite": _scan_sqlite}
