"""Celery interface of the orchestrator: replies from participants, and the deadline sweep."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from sagas.engine import saga_reply_handle, saga_sweep


@shared_task(name="sagas.saga_reply")
def saga_reply(reply: dict[str, Any]) -> str:
    return saga_reply_handle(reply)


@shared_task(name="sagas.sweep")
def sweep() -> dict[str, int]:
    return saga_sweep()
