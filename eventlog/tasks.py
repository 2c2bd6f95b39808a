"""Celery interface of the event log: relay, subscriber wake-ups and the periodic sweep.

Each task takes names, calls one service, and is safe to run twice.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from eventlog.messaging import send_task, wake
from eventlog.relay import outbox_relay, outboxes
from eventlog.selectors import log_head
from eventlog.subscriptions import subscriber_advance, subscriber_error_record, subscriber_lag, subscribers

ADVANCE_TASK = "eventlog.subscriber_advance"


@shared_task(name="eventlog.relay")
def relay(source: str) -> int:
    """Relay, then wake the subscribers that take a type it relayed: a subscriber of other
    types has nothing to do, and its wake-up would take the coalescing window that the next,
    relevant relay needs (bench/README.md measured it). The sweep still wakes any subscriber
    that lags, so one not woken here catches up past the events it ignores within a sweep."""
    types: set[str] = set()
    relayed = outbox_relay(source, batch_size=settings.RELAY_BATCH_SIZE, relayed_types=types)
    if relayed:
        for subscriber in subscribers():
            if subscriber.types is None or subscriber.types & types:
                wake(ADVANCE_TASK, args=(subscriber.name,), queue=subscriber.queue)
    return relayed


@shared_task(name="eventlog.subscriber_advance")
def advance(subscriber: str) -> int:
    """Routed at send time to the subscriber's own context queue. A failure is remembered for
    the operator (``subscriber_error_record``) and raised: the sweep wakes the subscriber again."""
    try:
        return subscriber_advance(subscriber, batch_size=settings.SUBSCRIPTION_BATCH_SIZE)
    except Exception as exc:
        subscriber_error_record(subscriber, exc)
        raise


@shared_task(name="eventlog.sweep")
def sweep() -> int:
    """Find what lost messages left behind: unrelayed outbox rows and lagging subscribers.

    A lagging subscriber is sent a wake-up directly, not through the coalescing notifier:
    the one sent before may be the message that was lost.
    """
    relayed, failure = 0, None  # type: int, Exception | None
    for outbox in outboxes():
        try:
            relayed += outbox_relay(outbox.source, batch_size=settings.RELAY_BATCH_SIZE)
        except Exception as exc:  # noqa: BLE001 - one stuck outbox must not stop the others; re-raised below
            failure = failure or exc
    head = log_head()
    for subscriber in subscribers():
        if subscriber_lag(subscriber, head=head):
            send_task(ADVANCE_TASK, args=(subscriber.name,), queue=subscriber.queue)
    if failure is not None:
        raise failure
    return relayed
