"""Event-sourced persistence for every context: its outbox is its event store.

A save writes the new events, guarded by ``unique(stream_id, version)``, and the aggregate's
current-state row in one transaction of the context's own database; the relay is woken after
commit. A concurrent writer gets ``ConcurrencyError`` and retries from a fresh load.

``Repository.create`` is the short way for a new aggregate outside any transaction (creating
a customer): nothing to read first, so the transaction is just the two inserts, sent as one
statement on PostgreSQL (one round trip, its own transaction) and as ``BEGIN IMMEDIATE``, two
inserts, ``COMMIT`` straight on the driver on SQLite, without Django's atomic bookkeeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from django.db import IntegrityError, connections, models, transaction
from django.utils import timezone

from eventlog.domain import Aggregate, ConcurrencyError, DomainEvent, MessageContext, RecordedEvent
from eventlog.messaging import wake, wake_on_commit
from eventlog.models import EVENT_COLUMNS, OutboxEvent, StoredEvent
from eventlog.sql import insert_new_with_state, insert_rows

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

#: How often a command is retried from a fresh load when another writer got in first.
CONCURRENCY_RETRIES = 10


def recorded_from_row(row: StoredEvent) -> RecordedEvent:
    return RecordedEvent(**{column: getattr(row, column) for column in EVENT_COLUMNS}, position=getattr(row, "position", None))


class EventStore:
    """Append and read the streams of one context's outbox table on its own alias."""

    def __init__(self, *, model: type[OutboxEvent], alias: str, source: str) -> None:
        self.model = model
        self.alias = alias
        self.source = source

    def stream(self, stream_id: uuid.UUID) -> list[RecordedEvent]:
        rows = self.model.objects.using(self.alias).filter(stream_id=stream_id).order_by("version")
        return [recorded_from_row(row) for row in rows]

    def new_events(self, *, aggregate: Aggregate, context: MessageContext) -> list[RecordedEvent]:
        """The aggregate's pending events with their metadata, as they will be stored."""
        now = timezone.now()
        stream_id, stream_type = aggregate.id, aggregate.stream_type
        correlation_id, causation_id, saga_id = context.correlation_id, context.causation_id, context.saga_id
        return [
            RecordedEvent(
                event_id=uuid.uuid4(), stream_id=stream_id, stream_type=stream_type, version=version, type=event.type,
                data=event.to_data(), occurred_at=now, correlation_id=correlation_id, causation_id=causation_id, saga_id=saga_id,
            )
            for version, event in aggregate.pending_events
        ]

    def append(self, *, aggregate: Aggregate, context: MessageContext) -> list[RecordedEvent]:
        """Write the aggregate's pending events; must run inside the caller's transaction.

        No savepoint: a conflict aborts the caller's transaction, which ``atomic_with_retry``
        runs again from a fresh load.
        """
        recorded = self.new_events(aggregate=aggregate, context=context)
        if not recorded:
            return []
        try:
            insert_rows(self.model, self.alias, [event_row(event) for event in recorded])
        except IntegrityError as exc:
            raise self.conflict(aggregate, exc) from exc
        wake_on_commit("eventlog.relay", using=self.alias, args=(self.source,))
        return recorded

    def conflict(self, aggregate: Aggregate, exc: IntegrityError) -> ConcurrencyError:
        if not is_version_conflict(exc):
            raise exc
        return ConcurrencyError(f"{aggregate.stream_type} {aggregate.id} was changed by another writer")


def is_version_conflict(exc: IntegrityError) -> bool:
    """The ``unique(stream_id, version)`` guard, not some other constraint or a trigger."""
    text = str(exc)
    return "outbox_stream_version" in text or ("stream_id" in text and ".version" in text)


def event_row(event: RecordedEvent) -> dict[str, object]:
    """The columns an outbox row and a log row share."""
    return {column: getattr(event, column) for column in EVENT_COLUMNS}


class Repository(Generic[A]):
    """Load an aggregate by folding its events; save its new events and its state row."""

    aggregate_class: type[A]

    def __init__(self, store: EventStore) -> None:
        self.store = store

    @property
    def alias(self) -> str:
        return self.store.alias

    def get(self, aggregate_id: uuid.UUID) -> A | None:
        events = self.store.stream(aggregate_id)
        if not events:
            return None
        return self.aggregate_class.fold(aggregate_id, [DomainEvent.from_data(e.type, e.data) for e in events])

    def save(self, aggregate: A, *, context: MessageContext) -> list[RecordedEvent]:
        if not transaction.get_connection(self.alias).in_atomic_block:
            raise RuntimeError("Repository.save must run inside transaction.atomic(using=alias)")
        if self.writes_new_state_row(aggregate):
            recorded = self._insert_new(aggregate, context)  # events and state row: one statement on PostgreSQL
            wake_on_commit("eventlog.relay", using=self.alias, args=(self.store.source,))
        else:
            recorded = self.store.append(aggregate=aggregate, context=context)
            if recorded:
                self.write_state(aggregate, recorded)
        aggregate.mark_saved()
        return recorded

    def write_state(self, aggregate: A, recorded: list[RecordedEvent]) -> None:
        """Bring the aggregate's current-state row(s) up to date, in the same transaction."""
        raise NotImplementedError

    #: The table of the one current-state row a new aggregate gets (``create``); ``None`` when
    #: a new aggregate writes more than that row, and ``create`` then takes the ``save`` path.
    state_model: type[models.Model] | None = None

    def new_state_row(self, aggregate: A, recorded: list[RecordedEvent]) -> dict[str, object]:
        """The current-state row of a new aggregate (field names), for ``create``."""
        raise NotImplementedError

    def writes_new_state_row(self, aggregate: A) -> bool:
        """Whether saving ``aggregate`` writes its first events and only ``new_state_row``."""
        pending = aggregate.pending_events
        return self.state_model is not None and bool(pending) and pending[0][0] == 1

    def create(self, aggregate: A, *, context: MessageContext) -> list[RecordedEvent]:
        """Save a new aggregate (its first events) in a transaction of its own; the relay is
        woken after the commit. ``ConcurrencyError`` if its stream already exists.

        The same rows and guarantees as ``save`` in ``transaction.atomic``, in fewer steps: on
        PostgreSQL one statement (the events insert in a CTE that the state-row insert reads, so
        a taken stream version fails first, and one statement is one transaction); on SQLite
        ``BEGIN IMMEDIATE``, the two inserts and ``COMMIT`` on the driver's connection.
        Inside an open transaction it is ``save``.
        """
        connection = connections[self.alias]
        if not self.writes_new_state_row(aggregate) or connection.in_atomic_block:
            if connection.in_atomic_block:
                return self.save(aggregate, context=context)
            with transaction.atomic(using=self.alias):
                return self.save(aggregate, context=context)
        recorded = self._insert_new(aggregate, context)
        if recorded:
            wake("eventlog.relay", args=(self.store.source,))  # committed: no on_commit to wait for
        aggregate.mark_saved()
        return recorded

    def _insert_new(self, aggregate: A, context: MessageContext) -> list[RecordedEvent]:
        """The first events of a stream and its state row; a transaction of their own when no
        transaction is open."""
        assert self.state_model is not None
        recorded = self.store.new_events(aggregate=aggregate, context=context)
        if not recorded:
            return []
        if recorded[0].version != 1:
            raise ValueError(f"not a new aggregate: {aggregate.stream_type} {aggregate.id} is at version {recorded[0].version - 1}")
        try:
            insert_new_with_state(
                self.alias, self.store.model, [event_row(event) for event in recorded], self.state_model, self.new_state_row(aggregate, recorded)
            )
        except IntegrityError as exc:
            raise self.store.conflict(aggregate, exc) from exc
        return recorded


def atomic_with_retry(alias: str, command: Callable[[], T], *, retries: int = CONCURRENCY_RETRIES) -> T:
    """Run ``command`` in one transaction of ``alias``, again from a fresh load on a conflict.

    Inside a transaction that is already open, ``command`` simply runs in it: a savepoint per
    use case would cost two statements on every command, and the conflict is the outer
    transaction's owner's to retry (``eventlog.commands.command_handle`` does).
    """
    if transaction.get_connection(alias).in_atomic_block:
        return command()
    return retry_on_conflict(lambda: _atomic(alias, command), retries=retries)


def _atomic(alias: str, command: Callable[[], T]) -> T:
    with transaction.atomic(using=alias):
        return command()


def retry_on_conflict(attempt: Callable[[], T], *, retries: int = CONCURRENCY_RETRIES) -> T:
    """Run ``attempt`` (a whole transaction) again while it fails with ``ConcurrencyError``."""
    for remaining in range(retries - 1, -1, -1):
        try:
            return attempt()
        except ConcurrencyError:
            if not remaining:
                raise
    raise AssertionError("unreachable")
