"""Reads of saga instances and their step timelines."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Prefetch

from sagas.engine import ALIAS
from sagas.models import ACTIVE_STATES, SagaInstance, SagaStep

STEP_FIELDS = ("name", "kind", "status", "attempts", "started_at", "ended_at", "error")


def _with_steps(queryset: Any) -> Any:
    return queryset.prefetch_related(Prefetch("steps", queryset=SagaStep.objects.using(ALIAS).order_by("id")))


def _as_dict(saga: SagaInstance) -> dict[str, Any]:
    return {
        "id": saga.id, "type": saga.type, "mode": saga.mode, "state": saga.state, "definition_version": saga.definition_version,
        "created_at": saga.created_at, "updated_at": saga.updated_at, "data": saga.data, "last_error": saga.last_error,
        "steps": [{name: getattr(step, name) for name in STEP_FIELDS} for step in saga.steps.all()],
    }


def saga_get(*, saga_id: uuid.UUID) -> dict[str, Any] | None:
    saga = _with_steps(SagaInstance.objects.using(ALIAS).filter(id=saga_id)).first()
    return _as_dict(saga) if saga else None


def saga_list(*, state: str | None, saga_type: str | None, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    queryset = SagaInstance.objects.using(ALIAS).all()
    if state:
        queryset = queryset.filter(state=state)
    if saga_type:
        queryset = queryset.filter(type=saga_type)
    page = _with_steps(queryset.order_by("-created_at", "id"))[offset : offset + limit]
    return queryset.count(), [_as_dict(saga) for saga in page]


def saga_ended_for(*, subject_id: uuid.UUID) -> bool:
    """Some saga ran for this subject and none is running now."""
    states = set(SagaInstance.objects.using(ALIAS).filter(subject_id=subject_id).values_list("state", flat=True))
    return bool(states) and not states & {s.value for s in ACTIVE_STATES}
