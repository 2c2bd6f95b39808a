"""The relay wakes only the subscribers that take a type it relayed (eventlog.tasks.relay).

Read off the real broker: after a relay, each context queue holds the wake-ups sent to it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from config.celery_app import app
from customers.services import customer_create
from eventlog.messaging import flush_wake_ups
from eventlog.tasks import relay
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def woken(queue: str) -> set[str]:
    """The subscribers a ``subscriber_advance`` message on ``queue`` wakes."""
    with app.connection_for_write() as connection:
        raw = connection.default_channel.client.lrange(queue, 0, -1)  # type: ignore[attr-defined]  # the Redis transport's channel has its redis client; the stubs type the abstract StdChannel
    names = set()
    for item in raw:
        message = json.loads(item)
        if message["headers"]["task"] == "eventlog.subscriber_advance":
            names.add(message["headers"]["argsrepr"].strip("(),' "))
    return names


def test_a_relay_wakes_the_subscribers_of_its_types_and_no_other(settings: Any) -> None:
    settings.WAKE_COALESCE_SECONDS = 0  # every wake-up is sent: what is asked for is what we see
    purge_queues()
    try:
        customer_create(name="Ada", credit_limit="10.00")  # CustomerCreated, and nothing else
        assert relay("customers") == 1
        assert flush_wake_ups(10)
        assert {"readmodels.customer_credit", "readmodels.order_summary"} & woken("readmodels")
        assert "customers.choreography" not in woken("customers")  # takes OrderCreated, OrderCancelRequested
        assert "orders.choreography" not in woken("orders")  # takes the credit events
        assert "sagas.choreography_trace" not in woken("sagas")
    finally:
        purge_queues()
