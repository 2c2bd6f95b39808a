"""Reads of the central event log."""

from __future__ import annotations

import uuid

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


def log_stream(stream_id: uuid.UUID) -> list[RecordedEvent]:
    rows = LogEvent.objects.using(EVENTLOG_ALIAS).filter(stream_id=stream_id).order_by("version")
    return [recorded_from_row(row) for row in rows]
