"""End to end through real processes: workers and broker started the way ``make run`` starts them.

A customer created through the service layer reaches the central log (relay task on the
eventlog queue) and a subscriber (projection task on the readmodels queue), with no call from
the test to either: only the broker wakes them.
"""

from __future__ import annotations

import signal
from decimal import Decimal

import pytest

from config.launcher import Stack
from customers.services import credit_reserve, customer_create
from eventlog.domain import MessageContext
from eventlog.models import LogEvent
from eventlog.relay import outbox_backlog
from readmodels.models import CustomerCredit, ProjectionCheckpoint
from tests.conftest import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__")]


def test_customer_created_reaches_the_log_and_a_subscriber(system: Stack) -> None:
    customer = customer_create(name="Ada", credit_limit="125.00")
    logged = eventually(lambda: LogEvent.objects.using("eventlog").filter(stream_id=customer.id).first(), message="CustomerCreated in the log")
    assert (logged.type, logged.version, logged.data) == ("CustomerCreated", 1, {"name": "Ada", "credit_limit": "125.00"})
    credit = eventually(lambda: CustomerCredit.objects.using("readmodels").filter(id=customer.id).first(), message="the customer credit projection")
    assert (credit.name, credit.credit_limit, credit.available_credit) == ("Ada", Decimal("125.00"), Decimal("125.00"))
    checkpoint = ProjectionCheckpoint.objects.using("readmodels").get(subscriber="readmodels.customer_credit")
    assert checkpoint.position >= logged.position
    assert outbox_backlog()["customers"] == 0


def test_the_sweep_finds_work_whose_message_was_lost(system: Stack) -> None:
    """With the eventlog worker down, the relay message is consumed by nobody and purged;
    beat's sweep still relays the outbox and wakes the projection."""
    system.processes["worker-eventlog"].signal(signal.SIGKILL)
    customer = customer_create(name="Bo", credit_limit="10.00")
    credit_reserve(customer_id=customer.id, order_id=customer.id, amount="4.00", context=MessageContext())
    from tests.conftest import purge_queues

    purge_queues()  # every notification is lost
    assert outbox_backlog()["customers"] == 2
    system.start_worker("eventlog")
    system.start_beat()
    system.wait_ready(timeout=90)
    credit = eventually(
        lambda: CustomerCredit.objects.using("readmodels").filter(id=customer.id, credit_reserved=Decimal("4.00")).first(),
        message="the sweep to relay and project the reservation",
    )
    assert credit.available_credit == Decimal("6.00")
    assert outbox_backlog()["customers"] == 0
