"""Subscribers of the central log: projections and event handlers of the contexts.

A subscriber reads the log after its checkpoint and, in **one transaction of its own
database**, applies a batch of events and moves its checkpoint past them. Delivery (a Celery
message after each relay, and the periodic sweep) is at-least-once; effects are exactly-once,
because a second run of the same batch finds the checkpoint already past it.

A subscriber with a ``parked_model`` (the choreography handlers) handles each event in a
savepoint of that transaction. A failure that is transient (the database unreachable) rolls
the batch back and is simply tried again. Any other failure is counted, in the same transaction
that keeps the checkpoint just before the failing event, and the batch stops there; the sweep
tries again. After ``max_failures`` the event is parked (``eventlog.models.ParkedEvent``) and the
subscriber moves past it, so one bad event delays its own flow, never the rest of the log.
``parked_retry`` runs a parked event again for an operator.
"""

from __future__ import annotations

import itertools
import logging
import operator
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from eventlog.domain import RecordedEvent
from eventlog.models import Checkpoint, ParkedEvent
from eventlog.selectors import log_event, log_head, log_read

logger = logging.getLogger(__name__)
_event_type = operator.attrgetter("type")

Handler = Callable[[list[RecordedEvent]], None]
Reader = Callable[..., list[RecordedEvent]]  # log_read's keywords: after, limit, until


@dataclass(frozen=True)
class Subscriber:
    """``handle`` gets each batch (only the event types it asked for) inside the transaction
    that also stores the checkpoint; it must write to ``alias`` only."""

    name: str
    alias: str
    queue: str
    checkpoint_model: type[Checkpoint]
    handle: Handler
    types: frozenset[str] | None = None
    #: A pure test of one event (after ``types``): an event it turns down is consumed without
    #: being handled. For a cheap "not mine" that the payload already tells.
    wants: Callable[[RecordedEvent], bool] | None = None
    #: Set: each event is handled on its own, and one that keeps failing is parked here.
    parked_model: type[ParkedEvent] | None = None
    max_failures: int = 5


_subscribers: dict[str, Subscriber] = {}


def subscriber_register(subscriber: Subscriber) -> None:
    if subscriber.name in _subscribers and _subscribers[subscriber.name] != subscriber:
        raise ValueError(f"subscriber {subscriber.name!r} is already registered")
    _subscribers[subscriber.name] = subscriber


def subscribers() -> list[Subscriber]:
    return list(_subscribers.values())


def subscriber_get(name: str) -> Subscriber:
    try:
        return _subscribers[name]
    except KeyError:
        raise LookupError(f"no subscriber named {name!r}; known: {', '.join(sorted(_subscribers))}") from None


def subscriber_position(subscriber: Subscriber) -> int:
    checkpoint = subscriber.checkpoint_model.objects.using(subscriber.alias).filter(subscriber=subscriber.name).first()
    return checkpoint.position if checkpoint else 0


def subscriber_lag(subscriber: Subscriber, *, head: int | None = None) -> int:
    """How many positions the subscriber is behind the head of the log."""
    return max((log_head() if head is None else head) - subscriber_position(subscriber), 0)


def subscriber_advance_batch(subscriber: Subscriber, *, batch_size: int, until: int | None = None) -> int:
    """Apply the next batch after the checkpoint (up to ``until``); returns events consumed."""
    return subscribers_advance_batch([subscriber], batch_size=batch_size, until=until)[1][0]


def subscribers_advance_batch(group: Sequence[Subscriber], *, batch_size: int, until: int | None = None, read: Reader = log_read) -> tuple[int, list[int]]:
    """Apply the next batch to each subscriber of ``group`` (one database, one checkpoint
    table) in one transaction: the log is read once, after the lowest of their checkpoints, and
    each subscriber gets the events after its own. Returns the position of the last event read
    (0 if none), where every subscriber that consumed anything now stands, and the events each
    one consumed."""
    alias, checkpoint_model = group[0].alias, group[0].checkpoint_model
    assert all(s.alias == alias and s.checkpoint_model is checkpoint_model for s in group), "one database, one checkpoint table"
    with transaction.atomic(using=alias):
        manager = checkpoint_model.objects.using(alias)
        # The row lock serialises concurrent runs of one subscriber (SQLite: BEGIN IMMEDIATE).
        checkpoints = [manager.select_for_update().get_or_create(subscriber=s.name)[0] for s in group]
        after = min(c.position for c in checkpoints)
        events = read(after=after, limit=batch_size, until=until)
        consumed = [0] * len(group)
        if not events:
            return 0, consumed
        last = events[-1].position
        assert last is not None and last > after
        for i, (subscriber, checkpoint) in enumerate(zip(group, checkpoints, strict=True)):
            if last <= checkpoint.position:
                continue
            mine = events if checkpoint.position == after else [e for e in events if e.position > checkpoint.position]  # type: ignore[operator]  # an event read from the log always has its position
            # The filter runs in C (compress/map): a replay's batches are tens of thousands of events.
            wanted = mine if subscriber.types is None else list(itertools.compress(mine, map(subscriber.types.__contains__, map(_event_type, mine))))
            if wanted and subscriber.wants is not None:
                wanted = [event for event in wanted if subscriber.wants(event)]
            stop = None
            if wanted and subscriber.parked_model is not None:
                stop = _handle_one_by_one(subscriber, wanted)
            elif wanted:
                subscriber.handle(wanted)
            checkpoint.position = last if stop is None else stop
            checkpoint.save(update_fields=["position", "updated_at"])
            consumed[i] = len(mine) if stop is None else len([e for e in mine if e.position <= stop])  # type: ignore[operator]  # an event read from the log always has its position
            if stop is not None:
                last = min(last, stop)
        return last, consumed


def _handle_one_by_one(subscriber: Subscriber, events: list[RecordedEvent]) -> int | None:
    """Handle each event in a savepoint; on a failure that is not transient, count it (or park
    the event) and return the position to stop just before, or ``None`` if all went through."""
    from eventlog.commands import TRANSIENT_ERRORS  # commands builds on this module's kernel
    from eventlog.domain import ConcurrencyError

    parked = subscriber.parked_model
    assert parked is not None
    # The batch's events that failed before (one indexed read per batch): each is marked
    # resolved in the savepoint of the run that gets it through.
    failed_before = set(
        parked.objects.using(subscriber.alias)
        .filter(subscriber=subscriber.name, resolved_at__isnull=True, position__gte=events[0].position, position__lte=events[-1].position)
        .values_list("position", flat=True)
    )
    for event in events:
        try:
            with transaction.atomic(using=subscriber.alias):
                subscriber.handle([event])
                if event.position in failed_before:
                    parked.objects.using(subscriber.alias).filter(subscriber=subscriber.name, position=event.position, resolved_at__isnull=True).update(resolved_at=timezone.now())
        except (*TRANSIENT_ERRORS, ConcurrencyError):  # type: ignore[misc]  # mypy cannot read a starred tuple of exception classes
            raise  # the database is going away, or another writer won: roll back, try again later
        except Exception as exc:
            now = timezone.now()
            record, _ = parked.objects.using(subscriber.alias).get_or_create(
                subscriber=subscriber.name,
                position=event.position,
                defaults={"event_id": event.event_id, "event_type": event.type, "correlation_id": event.correlation_id, "saga_id": event.saga_id, "first_failed_at": now, "last_failed_at": now},
            )
            record.attempts += 1
            record.error = f"{type(exc).__name__}: {exc}"[:2000]
            record.last_failed_at = now
            if record.attempts >= subscriber.max_failures:
                record.parked_at = now
                logger.error("%s parked event %s (%s) after %d failures: %s", subscriber.name, event.position, event.type, record.attempts, record.error)
            else:
                logger.warning("%s failed on event %s (%s), attempt %d: %s", subscriber.name, event.position, event.type, record.attempts, record.error)
            record.save(using=subscriber.alias)
            if record.parked_at is None:
                assert event.position is not None
                return event.position - 1
    return None


def parked_events(*, subscriber: str | None = None, correlation_id: uuid.UUID | None = None, saga_id: uuid.UUID | None = None, unresolved: bool = True) -> list[ParkedEvent]:
    """Failing and parked events of every subscriber that parks (or of one), oldest first."""
    found: list[ParkedEvent] = []
    for candidate in subscribers():
        if candidate.parked_model is None or (subscriber is not None and candidate.name != subscriber):
            continue
        queryset = candidate.parked_model.objects.using(candidate.alias).filter(subscriber=candidate.name)
        if correlation_id is not None:
            queryset = queryset.filter(correlation_id=correlation_id)
        if saga_id is not None:
            queryset = queryset.filter(saga_id=saga_id)
        if unresolved:
            queryset = queryset.filter(resolved_at__isnull=True)
        found += list(queryset)
    return sorted(found, key=lambda row: row.first_failed_at)


def parked_retry_select(*, event_ids: set[uuid.UUID], every: bool = False, subscriber: str | None = None) -> list[ParkedEvent]:
    """The parked events an operator asked to retry: these ids, or ``every`` parked one (of
    ``subscriber``). ``LookupError`` names any id that is not parked (or already resolved)."""
    chosen = [r for r in parked_events(subscriber=subscriber) if r.parked_at is not None and (every or r.event_id in event_ids)]
    missing = event_ids - {r.event_id for r in chosen}
    if missing:
        raise LookupError("not parked (or already resolved): " + ", ".join(sorted(map(str, missing))))
    return chosen


def parked_retry(record: ParkedEvent) -> str | None:
    """Run a parked event's handler again, for an operator; ``None`` on success, else the error.

    The handler's effects and the record's ``resolved_at`` are written in one transaction, so
    a retry that succeeds cannot run twice.
    """
    subscriber = subscriber_get(record.subscriber)
    assert subscriber.parked_model is not None
    event = log_event(record.event_id)
    if event is None:
        return f"event {record.event_id} is not in the log"
    try:
        with transaction.atomic(using=subscriber.alias):
            fresh = subscriber.parked_model.objects.using(subscriber.alias).select_for_update().get(pk=record.pk)
            if fresh.resolved_at is not None:
                return None
            subscriber.handle([event])
            fresh.attempts += 1
            fresh.resolved_at = timezone.now()
            fresh.save(using=subscriber.alias, update_fields=["attempts", "resolved_at"])
            return None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        subscriber.parked_model.objects.using(subscriber.alias).filter(pk=record.pk).update(error=error, last_failed_at=timezone.now())
        return error


def subscriber_advance(name: str, *, batch_size: int = 1000) -> int:
    """Catch a subscriber up with the head of the log; returns how many events it consumed."""
    subscriber = subscriber_get(name)
    consumed = 0
    while True:
        count = subscriber_advance_batch(subscriber, batch_size=batch_size)
        consumed += count
        if count < batch_size:
            return consumed


#: How long a subscriber's last failure is remembered (in the shared cache) for the operator.
LAST_ERROR_SECONDS = 3600


def _error_key(name: str) -> str:
    return f"subscriber-last-error:{name}"


def subscriber_error_record(name: str, exc: BaseException) -> None:
    """Remember a subscriber's failure for an hour, for the dashboard; never raises (the
    failure itself is what matters, and it is raised by the caller)."""
    from django.core.cache import cache

    try:
        cache.set(_error_key(name), {"at": timezone.now().isoformat(), "error": f"{type(exc).__name__}: {exc}"[:500]}, LAST_ERROR_SECONDS)
    except Exception:  # noqa: BLE001 - the cache being down must not hide the real failure
        logger.warning("could not record the last error of %s", name, exc_info=True)


def subscriber_last_errors(names: Sequence[str]) -> dict[str, dict[str, str]]:
    """The last failure (``at``, ``error``) of each named subscriber within the hour, if any.

    A report, so it never raises: with the cache unreachable it knows of no failure (the API's
    projection list and /readyz read it, and must keep answering)."""
    from django.core.cache import cache

    try:
        found = cache.get_many([_error_key(name) for name in names])
    except Exception:  # noqa: BLE001 - see above
        logger.warning("could not read the subscribers' last errors from the cache", exc_info=True)
        return {}
    return {name: found[_error_key(name)] for name in names if _error_key(name) in found}
