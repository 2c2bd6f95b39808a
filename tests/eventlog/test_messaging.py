"""Wake-ups through the real broker: coalesced across a burst, never lost for later work."""

from __future__ import annotations

import pytest

from config.celery_app import app as celery_app
from customers.services import customer_create
from eventlog.messaging import flush_wake_ups, wake_received
from eventlog.relay import outbox_relay
from eventlog.subscriptions import subscribers
from eventlog.tasks import sweep
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def queued(queue: str) -> int:
    with celery_app.connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue=queue, passive=True).message_count


@pytest.fixture(autouse=True)
def empty_queues() -> None:
    flush_wake_ups()
    purge_queues()


def test_a_burst_of_commits_sends_one_relay_wake_up_until_the_relay_starts() -> None:
    for index in range(20):
        customer_create(name=f"C{index}", credit_limit="10.00")  # 20 transactions, 20 wake-ups asked
    assert flush_wake_ups()
    assert queued("eventlog") == 1, "one relay message is waiting; the other 19 commits rode on it"

    wake_received("eventlog.relay", "customers")  # what the relay task does first when it starts
    customer_create(name="Late", credit_limit="10.00")
    assert flush_wake_ups()
    assert queued("eventlog") == 2, "a commit after the relay started must wake it again"


def test_the_sweep_wakes_a_lagging_subscriber_even_while_a_wake_up_counts_as_pending() -> None:
    """A pending flag may belong to a lost message; the sweep must not trust it."""
    customer_create(name="Ada", credit_limit="10.00")
    outbox_relay("customers")
    assert flush_wake_ups()
    purge_queues()  # the relay wake-up and any subscriber wake-ups are "lost"; flags stay set
    sweep()
    for subscriber in subscribers():
        assert queued(subscriber.queue) >= 1, subscriber.name
