"""Celery interface of the orchestrator: replies from participants, and the deadline sweep."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from eventlog.commands import TRANSIENT_ERRORS
from sagas.coordinator import in_doubt_resolve
from sagas.engine import saga_reply_handle, saga_sweep


@shared_task(name="sagas.saga_reply", autoretry_for=TRANSIENT_ERRORS, retry_backoff=1, retry_backoff_max=30, retry_jitter=False, max_retries=12)
def saga_reply(reply: dict[str, Any]) -> str:
    """A reply that meets the ``sagas`` database unreachable (or a connection it closed) is
    tried again with backoff (1 s doubling to 30 s, twelve times: about four minutes); after that the step's deadline sends the
    command again and the participant answers from its record."""
    return saga_reply_handle(reply)


@shared_task(name="sagas.sweep")
def sweep() -> dict[str, int]:
    """Overdue saga steps, then 2PC transactions left in doubt (nothing on SQLite)."""
    outcomes = saga_sweep()
    resolved = in_doubt_resolve(actor="sweep").counts()
    return {**outcomes, **{f"2pc_{name}": n for name, n in resolved.items() if n}}
