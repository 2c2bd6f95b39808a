"""Sending commands and notifications by task name, after the sender's transaction commits.

The broker only wakes things up: a send that fails is logged and left to the periodic sweep,
which finds the same work in the database. Contexts never import each other's tasks; they name
them (``"customers.credit_reserve"``) and the router sends each to its context's queue.

When the broker is unreachable, sends stop trying for ``BROKER_BACKOFF_SECONDS`` after a
failure, so that a broker outage costs a business transaction nothing but a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)

BROKER_BACKOFF_SECONDS = 5.0
_state = threading.local()


def _broker_backing_off() -> bool:
    return time.monotonic() < getattr(_state, "down_until", 0.0)


def send_task(name: str, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, queue: str | None = None) -> bool:
    """Send a task by name now; ``False`` (and one warning) if the broker could not take it."""
    from config.celery_app import app

    if _broker_backing_off():
        return False
    options: dict[str, Any] = {"retry": True, "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}}
    if queue is not None:
        options["queue"] = queue
    try:
        app.send_task(name, args=args, kwargs=kwargs or {}, **options)
    except Exception as exc:  # the broker being down must never fail the business transaction
        _state.down_until = time.monotonic() + BROKER_BACKOFF_SECONDS
        logger.warning("broker unreachable (%s); not sending %s for %.0fs, the periodic sweep will pick the work up", exc, name, BROKER_BACKOFF_SECONDS)
        return False
    _state.down_until = 0.0
    return True


def send_task_on_commit(name: str, *, using: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, queue: str | None = None) -> None:
    """Send after the transaction on ``using`` commits; never for a rolled-back one.

    Celery's ``delay_on_commit`` binds to the ``default`` alias, which is the wrong database for
    every context here, so the alias is always named.
    """
    transaction.on_commit(lambda: send_task(name, args=args, kwargs=kwargs, queue=queue), using=using)
