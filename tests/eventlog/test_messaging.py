"""Wake-ups through the real broker: coalesced across a burst, never lost for later work."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings

from config.celery_app import app as celery_app
from customers.services import customer_create
from eventlog.messaging import flush_wake_ups
from eventlog.relay import outbox_relay
from eventlog.subscriptions import subscribers
from eventlog.tasks import sweep
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def queued(queue: str) -> int:
    with celery_app.connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue=queue, passive=True).message_count  # type: ignore[attr-defined]  # kombu's virtual channels have queue_declare; the stubs type the abstract StdChannel


@pytest.fixture(autouse=True)
def empty_queues() -> None:
    flush_wake_ups()
    time.sleep(settings.WAKE_COALESCE_SECONDS * 1.5)  # every window of an earlier test has passed
    purge_queues()


def test_a_burst_of_commits_is_coalesced_per_window() -> None:
    window = settings.WAKE_COALESCE_SECONDS
    customer_create(name="First", credit_limit="10.00")
    assert flush_wake_ups()
    assert queued("eventlog") == 1, "the first commit is sent at once"

    time.sleep(window * 1.5)  # a new window: the next commit is sent at once too
    started = time.monotonic()
    for index in range(20):
        customer_create(name=f"C{index}", credit_limit="10.00")  # 20 transactions, 20 wake-ups asked
    elapsed = time.monotonic() - started
    assert flush_wake_ups()
    sent = queued("eventlog") - 1
    # At most one at the start of each window the burst touched, plus a trailing one after it
    # (a single one when every commit was asked for before the notifier sent the first).
    assert 1 <= sent <= elapsed / window + 3, (sent, elapsed)


def test_a_commit_inside_a_taken_window_is_sent_when_the_window_ends() -> None:
    customer_create(name="First", credit_limit="10.00")
    assert flush_wake_ups()  # sent: its window is taken now
    customer_create(name="Second", credit_limit="10.00")
    assert flush_wake_ups()
    assert queued("eventlog") == 2, "the second commit's wake-up is sent after the window, not dropped"


def test_commits_while_a_wake_up_waits_for_its_window_do_not_wake_the_notifier_and_are_still_covered(settings: Any) -> None:
    """The commit path's whole cost is a lock and a look-up then; the retry at the end of the
    window stands for every commit made meanwhile, so exactly one more message goes out."""
    from eventlog import messaging

    settings.WAKE_COALESCE_SECONDS = 1.0  # room for the commits below inside one window

    customer_create(name="First", credit_limit="10.00")
    assert flush_wake_ups()  # sent: the window is taken
    customer_create(name="Second", credit_limit="10.00")  # finds it taken: deferred to the window's end
    deadline = time.monotonic() + 2
    wake_up = ("eventlog.relay", ("customers",), None)
    while wake_up not in messaging._notifier._deferred and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wake_up in messaging._notifier._deferred
    for index in range(5):
        messaging._notifier._wanted.clear()
        customer_create(name=f"Meanwhile {index}", credit_limit="10.00")
        assert not messaging._notifier._wanted.is_set(), "a deferred wake-up must not wake the thread again"
        assert messaging._notifier._deferred[wake_up][1], "the retry knows a commit came after it was deferred"
    assert flush_wake_ups()
    assert queued("eventlog") == 2, "one message at the start of the window, one at its end for the rest"


def test_the_sweep_wakes_a_lagging_subscriber_even_while_a_wake_up_counts_as_pending() -> None:
    """A taken window may belong to a lost message; the sweep must not trust it."""
    customer_create(name="Ada", credit_limit="10.00")
    outbox_relay("customers")
    assert flush_wake_ups()
    purge_queues()  # the relay wake-up and any subscriber wake-ups are "lost"; their windows stay taken
    sweep()
    for subscriber in subscribers():
        assert queued(subscriber.queue) >= 1, subscriber.name


def test_a_forked_child_starts_with_a_notifier_of_its_own() -> None:
    """A prefork pool process or a gunicorn worker must not inherit a lock held at the fork."""
    import os

    from eventlog import messaging

    with messaging._notifier._lock:  # the parent's notifier is busy at the moment of the fork
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit status
            os._exit(0 if messaging._notifier._lock.acquire(timeout=2) and not messaging._notifier._deferred else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_thread_of_its_own_sends_through_the_project_app() -> None:
    """The kernel sends through ``celery.current_app``, which is thread-local: the notifier's
    thread must still find the project's app (its routes, its broker), not Celery's fallback."""
    import threading

    from celery import current_app

    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(current_app._get_current_object()))  # type: ignore[attr-defined]  # current_app is a celery.local.Proxy; the stubs type it as the app itself
    thread.start()
    thread.join()
    assert seen == [celery_app]
