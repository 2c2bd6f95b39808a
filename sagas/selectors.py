"""Reads of saga instances and their step timelines, with what each running saga awaits.

A running saga is *stuck* when the step it waits on has failed at least once (an error, a
timeout, a send the broker did not take) or its deadline has passed: it is not lost (the sweep
keeps retrying it) but someone may want to look. Stalest first is what an operator wants.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Exists, OuterRef, Prefetch, Q
from django.utils import timezone

from sagas.engine import ALIAS, OPEN_STEP_STATUSES
from sagas.models import ACTIVE_STATES, SagaInstance, SagaStep, StepStatus

STEP_FIELDS = ("name", "kind", "status", "attempts", "started_at", "ended_at", "error")


def _stuck_step_q() -> Q:
    return Q(status=StepStatus.RETRY_WAIT) | Q(attempts__gt=1) | Q(status=StepStatus.WAITING, due_at__lt=timezone.now())


def _awaiting(saga: SagaInstance) -> tuple[dict[str, Any] | None, bool]:
    if saga.state not in ACTIVE_STATES:
        return None, False
    open_steps = [step for step in saga.steps.all() if step.status in OPEN_STEP_STATUSES]
    if not open_steps:
        return None, False
    step = open_steps[-1]
    stuck = step.status == StepStatus.RETRY_WAIT or step.attempts > 1 or (step.due_at is not None and step.due_at < timezone.now())
    awaiting = {"step": step.name, "kind": step.kind, "from_context": step.command.split(".", 1)[0], "since": step.started_at, "deadline": step.due_at}
    return awaiting, stuck


def _with_steps(queryset: Any) -> Any:
    return queryset.prefetch_related(Prefetch("steps", queryset=SagaStep.objects.using(ALIAS).order_by("id")))


def _as_dict(saga: SagaInstance) -> dict[str, Any]:
    awaiting, stuck = _awaiting(saga)
    return {
        "id": saga.id, "type": saga.type, "mode": saga.mode, "state": saga.state, "definition_version": saga.definition_version,
        "created_at": saga.created_at, "updated_at": saga.updated_at, "data": saga.data, "last_error": saga.last_error,
        "stuck": stuck, "awaiting": awaiting,
        "steps": [{name: getattr(step, name) for name in STEP_FIELDS} for step in saga.steps.all()],
    }


def saga_get(*, saga_id: uuid.UUID) -> dict[str, Any] | None:
    saga = _with_steps(SagaInstance.objects.using(ALIAS).filter(id=saga_id)).first()
    return _as_dict(saga) if saga else None


def saga_list(*, state: str | None, saga_type: str | None, offset: int, limit: int, mode: str | None = None, stuck: bool | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Newest first; the stuck ones (``stuck=True``) stalest first."""
    queryset = SagaInstance.objects.using(ALIAS).all()
    if state:
        queryset = queryset.filter(state=state)
    if saga_type:
        queryset = queryset.filter(type=saga_type)
    if mode:
        queryset = queryset.filter(mode=mode)
    order = ("-created_at", "id")
    if stuck is not None:
        stuck_step = SagaStep.objects.using(ALIAS).filter(_stuck_step_q(), saga=OuterRef("pk"), status__in=OPEN_STEP_STATUSES)
        condition = Q(state__in=ACTIVE_STATES) & Q(Exists(stuck_step))
        queryset = queryset.filter(condition if stuck else ~condition)
        if stuck:
            order = ("updated_at", "id")
    page = _with_steps(queryset.order_by(*order))[offset : offset + limit]
    return queryset.count(), [_as_dict(saga) for saga in page]

