"""Sending commands and notifications by task name, after the sender's transaction commits.

The broker only wakes things up: a send that fails is logged and left to the periodic sweep,
which finds the same work in the database. Contexts never import each other's tasks; they name
them (``"customers.credit_reserve"``) and the router sends each to its context's queue.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)


def send_task(name: str, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, queue: str | None = None) -> bool:
    """Send a task by name now; ``False`` (and a warning) if the broker could not take it."""
    from config.celery_app import app

    options: dict[str, Any] = {"retry": True, "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}}
    if queue is not None:
        options["queue"] = queue
    try:
        app.send_task(name, args=args, kwargs=kwargs or {}, **options)
    except Exception:  # the broker being down must never fail the business transaction
        logger.warning("could not send %s; the periodic sweep will pick the work up", name, exc_info=True)
        return False
    return True


def send_task_on_commit(name: str, *, using: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, queue: str | None = None) -> None:
    """Send after the transaction on ``using`` commits; never for a rolled-back one.

    Celery's ``delay_on_commit`` binds to the ``default`` alias, which is the wrong database for
    every context here, so the alias is always named.
    """
    transaction.on_commit(lambda: send_task(name, args=args, kwargs=kwargs, queue=queue), using=using)
