"""Subscribers of the central log: projections and event handlers of the contexts.

A subscriber reads the log after its checkpoint and, in **one transaction of its own
database**, applies a batch of events and moves its checkpoint past them. Delivery (a Celery
message after each relay, and the periodic sweep) is at-least-once; effects are exactly-once,
because a second run of the same batch finds the checkpoint already past it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction

from eventlog.domain import RecordedEvent
from eventlog.models import Checkpoint
from eventlog.selectors import log_head, log_read

logger = logging.getLogger(__name__)

Handler = Callable[[list[RecordedEvent]], None]


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
    with transaction.atomic(using=subscriber.alias):
        manager = subscriber.checkpoint_model.objects.using(subscriber.alias)
        # The row lock serialises concurrent runs of one subscriber (SQLite: BEGIN IMMEDIATE).
        checkpoint, _ = manager.select_for_update().get_or_create(subscriber=subscriber.name)
        events = log_read(after=checkpoint.position, limit=batch_size, until=until)
        if not events:
            return 0
        wanted = [e for e in events if subscriber.types is None or e.type in subscriber.types]
        if wanted:
            subscriber.handle(wanted)
        last = events[-1].position
        assert last is not None and last > checkpoint.position
        checkpoint.position = last
        checkpoint.save(update_fields=["position", "updated_at"])
        return len(events)


def subscriber_advance(name: str, *, batch_size: int = 1000) -> int:
    """Catch a subscriber up with the head of the log; returns how many events it consumed."""
    subscriber = subscriber_get(name)
    consumed = 0
    while True:
        count = subscriber_advance_batch(subscriber, batch_size=batch_size)
        consumed += count
        if count < batch_size:
            return consumed
