"""Reads of the central event log."""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

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


def log_scan(*, after: int = 0, limit: int = 1000, until: int | None = None) -> list[RecordedEvent]:
    """``log_read`` for bulk reads (replays): the same events, read with the driver's own cursor.

    The ORM's row conversion cost more than the replay's fold: Django's Python timestamp loader
    on PostgreSQL, its ``parse_datetime`` and ``uuid.UUID(...)`` converters on SQLite, and the
    frozen dataclass's ``__init__``. Here PostgreSQL rows come in psycopg's binary format with its
    C loaders, SQLite rows are converted once per column, and each event is built without the
    per-field ``object.__setattr__`` of a frozen dataclass. Other backends use ``log_read``.
    """
    connection = connections[EVENTLOG_ALIAS]
    scan = _SCANS.get(connection.vendor)
    if scan is None:
        return log_read(after=after, limit=limit, until=until)
    return scan(connection, after, limit, until)


#: The columns a scan selects: the payload last, as text.
_SCAN_FIELDS = (*(name for name in EVENT_COLUMNS if name != "data"), "position", "data")
_new = object.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


#: ``json.loads`` of a document the database wrote (no surrounding whitespace), without its
#: whitespace checks: ``_decode(text)[0]``.
_decode = json.JSONDecoder().raw_decode


@functools.lru_cache(maxsize=1 << 16)
def _uuid_from_hex(value: str) -> uuid.UUID:
    """``uuid.UUID(value)`` for the 32 hex digits Django stores on SQLite, in a fifth of the
    time (no parsing of braces, dashes or URNs, which the column never holds); cached, since
    stream, correlation and saga ids recur and a causation id is an earlier event's id."""
    result = _new(uuid.UUID)
    _set(result, "int", int(value, 16))
    _set(result, "is_safe", _UNKNOWN)
    return result


def _recorded(values: tuple[Any, ...]) -> RecordedEvent:
    """A RecordedEvent from the values of ``_SCAN_FIELDS``, built as the dataclass would be."""
    attributes = dict(zip(_SCAN_FIELDS, values, strict=True))
    attributes["data"] = _decode(attributes["data"])[0]
    event = _new(RecordedEvent)
    _set(event, "__dict__", attributes)
    return event


def _scan_sql(connection: Any, columns: list[str]) -> str:
    quote = connection.ops.quote_name
    position = quote(LogEvent._meta.get_field("position").column)
    return (f"SELECT {', '.join(columns)} FROM {quote(LogEvent._meta.db_table)} "
            f"WHERE {position} > %s AND {position} <= %s ORDER BY {position} LIMIT %s")


def _scan_postgresql(connection: Any, after: int, limit: int, until: int | None) -> list[RecordedEvent]:
    import psycopg
    from psycopg.pq import Format

    connection.ensure_connection()
    quote = connection.ops.quote_name
    # The payload as text, decoded below: psycopg's jsonb loader decodes bytes, which costs
    # json's encoding detection on every row.
    columns = [quote(LogEvent._meta.get_field(name).column) + ("::text" if name == "data" else "") for name in _SCAN_FIELDS]
    cursor = psycopg.Cursor(connection.connection)  # server-side binding, binary results
    cursor.format = Format.BINARY
    # Django's timestamptz loader is pure Python; psycopg's own is C.
    oid = psycopg.adapters.types["timestamptz"].oid
    cursor.adapters.register_loader(oid, psycopg.adapters.get_loader(oid, Format.BINARY))  # type: ignore[arg-type]
    with cursor:
        cursor.execute(_scan_sql(connection, columns), [after, _NO_LIMIT if until is None else until, limit])
        rows = cursor.fetchall()
    return [_recorded(row) for row in rows]


def _scan_sqlite(connection: Any, after: int, limit: int, until: int | None) -> list[RecordedEvent]:
    import datetime as dt

    from django.utils import timezone

    quote = connection.ops.quote_name
    columns = []
    for name in _SCAN_FIELDS:
        column = quote(LogEvent._meta.get_field(name).column)
        # An expression has no declared type, so sqlite3 applies no converter: raw text.
        columns.append(f"({column} || '')" if name == "occurred_at" else column)
    uuid_ = _uuid_from_hex
    tz = connection.timezone  # what Django's converter would make the stored naive value aware in
    if tz is None:
        aware = None
    elif tz is dt.UTC or getattr(tz, "key", None) == "UTC":
        aware = functools.partial(dt.datetime.replace, tzinfo=tz)
    else:
        aware = functools.partial(timezone.make_aware, timezone=tz)
    parse = dt.datetime.fromisoformat
    with connection.cursor() as cursor:
        cursor.execute(_scan_sql(connection, columns), [after, _NO_LIMIT if until is None else until, limit])
        rows = cursor.fetchall()
    return [
        _recorded((uuid_(event_id), uuid_(stream_id), stream_type, version, type_, parse(occurred) if aware is None else aware(parse(occurred)), uuid_(correlation_id),
                   None if causation_id is None else uuid_(causation_id), None if saga_id is None else uuid_(saga_id), position, data))
        for event_id, stream_id, stream_type, version, type_, occurred, correlation_id, causation_id, saga_id, position, data in rows
    ]


_NO_LIMIT = 2**63 - 1
_SCANS = {"postgresql": _scan_postgresql, "sqlite": _scan_sqlite}
