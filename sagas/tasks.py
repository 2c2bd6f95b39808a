"""Celery interface of the orchestrator: replies from participants, and the deadline sweep."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from sagas.coordinator import in_doubt_resolve
from sagas.engine import saga_reply_handle, saga_sweep


@shared_task(name="sagas.saga_reply")
def saga_reply(reply: dict[str, Any]) -> str:
    return saga_reply_handle(reply)


@shared_task(name="sagas.sweep")
def sweep() -> dict[str, int]:
    """Overdue saga steps, then 2PC transactions left in doubt (nothing on SQLite)."""
    outcomes = saga_sweep()
    resolved = in_doubt_resolve(actor="sweep").counts()
    return {**outcomes, **{f"2pc_{name}": n for name, n in resolved.items() if n}}
