"""The outbox relay: copy each context's new events, in order, into the central event log.

At-least-once relay, exactly-once log: ``event_id`` is unique, so copying a row twice (a relay
run twice, or one that crashed between copying and marking) writes it once. Only that clash is
skipped (``ON CONFLICT (event_id) DO NOTHING``): a ``(stream_id, version)`` already taken by
*another* event means two histories for one stream, and the batch fails with
``StreamVersionConflict``, logged, its outbox rows left unmarked, rather than dropping an event
and marking it relayed.

The gap problem, and how it is solved here: positions come from a sequence when a row is
inserted but become visible when its transaction commits, so without care a reader that saw
position 12 could miss 11 committing late. Appends are therefore serialised: on PostgreSQL
each append transaction first takes ``LOCK TABLE ... IN EXCLUSIVE MODE`` (it blocks other
appends, never readers), so positions are drawn and committed in one order; SQLite has a single
writer, and ``BEGIN IMMEDIATE`` gives the same. The cost is one lock per batch, not per event.
See docs/architecture.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from eventlog.domain import RecordedEvent
from eventlog.models import EVENT_COLUMNS, LogEvent, OutboxEvent
from eventlog.sql import JSONText, insert_rows, server_cursor

logger = logging.getLogger(__name__)

EVENTLOG_ALIAS = "eventlog"


@dataclass(frozen=True)
class Outbox:
    """A context's outbox as the relay sees it; contexts register theirs in ``ready()``."""

    source: str
    model: type[OutboxEvent]
    alias: str


_outboxes: dict[str, Outbox] = {}


def outbox_register(*, source: str, model: type[OutboxEvent], alias: str) -> None:
    _outboxes[source] = Outbox(source=source, model=model, alias=alias)


def outboxes() -> list[Outbox]:
    return list(_outboxes.values())


def outbox_get(source: str) -> Outbox:
    try:
        return _outboxes[source]
    except KeyError:
        raise LookupError(f"no outbox named {source!r}; known: {', '.join(sorted(_outboxes))}") from None


def _serialise_appends() -> None:
    connection = connections[EVENTLOG_ALIAS]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {LogEvent._meta.db_table} IN EXCLUSIVE MODE")
    # SQLite: the connection opens every transaction with BEGIN IMMEDIATE (settings), which
    # already holds the database's single write lock until commit.


LOG_COLUMNS = EVENT_COLUMNS


class StreamVersionConflict(IntegrityError):
    """A stream version is already in the log under another ``event_id``: nothing was appended."""


def _conflicts(rows: list[dict[str, Any]]) -> list[str]:
    """Which rows clash with a log row of the same stream and version but another event id."""
    wanted = {(row["stream_id"], row["version"]): row["event_id"] for row in rows}
    logged = LogEvent.objects.using(EVENTLOG_ALIAS).filter(stream_id__in={stream for stream, _ in wanted})
    return [
        f"stream {stream} version {version}: event {wanted[stream, version]} would clash with logged event {event_id}"
        for stream, version, event_id in logged.values_list("stream_id", "version", "event_id")
        if (stream, version) in wanted and wanted[stream, version] != event_id
    ]


def log_append(events: Iterable[RecordedEvent | OutboxEvent | dict[str, Any]]) -> None:
    """Append events to the central log in the given order; ones already there (the same
    ``event_id``) are skipped. All or nothing: a stream version taken by another event raises
    ``StreamVersionConflict`` (logged as an error) and appends none of ``events``.

    Runs in its own transaction on the ``eventlog`` alias, or inside the caller's.
    """
    now = timezone.now()
    rows = [
        {**({c: e[c] for c in LOG_COLUMNS} if isinstance(e, dict) else {c: getattr(e, c) for c in LOG_COLUMNS}), "recorded_at": now}
        for e in events
    ]
    if not rows:
        return
    try:
        with transaction.atomic(using=EVENTLOG_ALIAS):
            _serialise_appends()
            insert_rows(LogEvent, EVENTLOG_ALIAS, rows, on_conflict_ignore="event_id")
    except IntegrityError as exc:
        # Inside a caller's transaction (broken now, on PostgreSQL) there is no looking: the
        # database's own message names the key.
        conflicts = [] if transaction.get_connection(EVENTLOG_ALIAS).in_atomic_block else _conflicts(rows)
        logger.error("event log append refused, none of %d event(s) copied: %s", len(rows), "; ".join(conflicts) or exc)
        if conflicts:
            raise StreamVersionConflict("; ".join(conflicts)) from exc
        raise


def outbox_pending(outbox: Outbox, *, limit: int, json_text: bool = False) -> list[dict[str, Any]]:
    """The oldest events not yet relayed, in the order they were written.

    ``json_text``: on PostgreSQL, ``data`` is the stored JSON as ``JSONText``, which
    ``log_append`` stores as it is (the relay copies rows without decoding their payloads).
    """
    if json_text and connections[outbox.alias].vendor == "postgresql":
        columns = ["id", *LOG_COLUMNS]
        selected = ", ".join(f"{c}::text" if c == "data" else c for c in (outbox.model._meta.get_field(name).column for name in columns))  # type: ignore[union-attr, misc]  # get_field of a concrete column: a Field with its column
        with server_cursor(outbox.alias) as cursor:
            cursor.execute(f"SELECT {selected} FROM {outbox.model._meta.db_table} WHERE relayed_at IS NULL ORDER BY id LIMIT %s", [limit])
            fetched = cursor.fetchall()
        data = columns.index("data")
        return [{**dict(zip(columns, row, strict=True)), "data": JSONText(row[data])} for row in fetched]
    pending = outbox.model.objects.using(outbox.alias).filter(relayed_at__isnull=True).order_by("id")
    return list(pending.values("id", *LOG_COLUMNS)[:limit])


def outbox_mark_relayed(outbox: Outbox, rows: list[dict[str, Any]]) -> None:
    # By id list, not by range: a row inside the range that commits late was not copied.
    ids = [row["id"] for row in rows]
    if connections[outbox.alias].vendor == "postgresql":
        # One array parameter bound on the server, not 1,000 literals rendered by the client.
        with server_cursor(outbox.alias) as cursor:
            cursor.execute(f"UPDATE {outbox.model._meta.db_table} SET relayed_at = %s WHERE id = ANY(%b::bigint[])", [timezone.now(), ids])
        return
    outbox.model.objects.using(outbox.alias).filter(id__in=ids).update(relayed_at=timezone.now())


def outbox_relay(source: str, *, batch_size: int = 1000, relayed_types: set[str] | None = None) -> int:
    """Relay everything pending in one outbox; returns how many events were copied, and adds
    their types to ``relayed_types`` when given (so the caller wakes only who takes them).

    Order: copy a batch into the log (committed), then mark it relayed. A crash in between
    leaves rows unmarked; the next run copies them again and the log ignores the duplicates.
    Within a stream, outbox ids follow versions (version n+1 is written only after n commits),
    so copying in id order never reorders a stream.
    """
    outbox = outbox_get(source)
    relayed = 0
    while True:
        rows = outbox_pending(outbox, limit=batch_size, json_text=True)
        if not rows:
            break
        log_append(rows)
        outbox_mark_relayed(outbox, rows)
        relayed += len(rows)
        if relayed_types is not None:
            relayed_types.update(row["type"] for row in rows)
        if len(rows) < batch_size:
            break
    if relayed:
        logger.debug("relayed %d events from %s", relayed, source)
    return relayed


def outbox_backlog() -> dict[str, int]:
    """How many events wait in each outbox (used by the sweep, health checks and ``verify``)."""
    return {o.source: o.model.objects.using(o.alias).filter(relayed_at__isnull=True).count() for o in outboxes()}
