"""Celery interface of the event log: relay, subscriber wake-ups and the periodic sweep.

Each task takes names, calls one service, and is safe to run twice.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from eventlog.messaging import wake
from eventlog.relay import outbox_relay, outboxes
from eventlog.selectors import log_head
from eventlog.subscriptions import subscriber_advance, subscriber_lag, subscribers


def _wake_subscribers(*, only_lagging: bool) -> None:
    head = log_head() if only_lagging else None
    for subscriber in subscribers():
        if head is not None and subscriber_lag(subscriber, head=head) == 0:
            continue
        wake("eventlog.subscriber_advance", args=(subscriber.name,), queue=subscriber.queue)


@shared_task(name="eventlog.relay")
def relay(source: str) -> int:
    relayed = outbox_relay(source, batch_size=settings.RELAY_BATCH_SIZE)
    if relayed:
        _wake_subscribers(only_lagging=False)
    return relayed


@shared_task(name="eventlog.subscriber_advance")
def advance(subscriber: str) -> int:
    """Routed at send time to the subscriber's own context queue."""
    return subscriber_advance(subscriber, batch_size=settings.SUBSCRIPTION_BATCH_SIZE)


@shared_task(name="eventlog.sweep")
def sweep() -> int:
    """Find what lost messages left behind: unrelayed outbox rows and lagging subscribers."""
    relayed = sum(outbox_relay(o.source, batch_size=settings.RELAY_BATCH_SIZE) for o in outboxes())
    _wake_subscribers(only_lagging=True)
    return relayed
