"""Subscribers of the central log: projections and event handlers of the contexts.

A subscriber reads the log after its checkpoint and, in **one transaction of its own
database**, applies a batch of events and moves its checkpoint past them. Delivery (a Celery
message after each relay, and the periodic sweep) is at-least-once; effects are exactly-once,
because a second run of the same batch finds the checkpoint already past it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import transaction

from eventlog.domain import RecordedEvent
from eventlog.models import Checkpoint
from eventlog.selectors import log_head, log_read

logger = logging.getLogger(__name__)

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
            mine = events if checkpoint.position == after else [e for e in events if e.position > checkpoint.position]  # type: ignore[operator]
            wanted = mine if subscriber.types is None else [e for e in mine if e.type in subscriber.types]
            if wanted:
                subscriber.handle(wanted)
            checkpoint.position = last
            checkpoint.save(update_fields=["position", "updated_at"])
            consumed[i] = len(mine)
        return last, consumed


def subscriber_advance(name: str, *, batch_size: int = 1000) -> int:
    """Catch a subscriber up with the head of the log; returns how many events it consumed."""
    subscriber = subscriber_get(name)
    consumed = 0
    while True:
        count = subscriber_advance_batch(subscriber, batch_size=batch_size)
        consumed += count
        if count < batch_size:
            return consumed
