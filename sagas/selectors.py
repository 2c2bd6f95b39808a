"""Reads of saga instances and their step timelines, with what each running saga awaits.

A running saga is *stuck* when the step it waits on has failed at least once (an error, a
timeout, a send the broker did not take) or its deadline has passed: it is not lost (the sweep
keeps retrying it) but someone may want to look. Stalest first is what an operator wants.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Prefetch, Q
from django.utils import timezone

from eventlog.subscriptions import parked_events, subscriber_get, subscriber_lag
from eventlog.twophase import BranchError
from sagas.coordinator import MODE as TWO_PC
from sagas.coordinator import prepared_by_transaction, two_phase_problems
from sagas.definitions import DEFINITIONS
from sagas.engine import ALIAS, OPEN_STEP_STATUSES
from sagas.models import ACTIVE_STATES, CoordinatorLogEntry, SagaInstance, SagaLogEntry, SagaState, SagaStep, StepStatus, TraceEvent

CHOREOGRAPHY = "choreography"
#: Every saga state and mode, for filters (the same states serve every mode).
SAGA_STATES: tuple[str, ...] = tuple(SagaState.values)
SAGA_MODES = ("orchestration", "choreography", "2pc")

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
    return queryset.prefetch_related(
        Prefetch("steps", queryset=SagaStep.objects.using(ALIAS).order_by("id")),
        Prefetch("trace", queryset=TraceEvent.objects.using(ALIAS).order_by("position")),
        Prefetch("coordinator_log", queryset=CoordinatorLogEntry.objects.using(ALIAS).order_by("id")),
    )


def _safety() -> dt.timedelta:
    return dt.timedelta(seconds=float(settings.TWO_PC_SAFETY_INTERVAL_SECONDS))


def _as_shown(ours: dict[uuid.UUID, list[Any]]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Our prepared branches by transaction, as the API shows them."""
    now = timezone.now()
    return {
        tid: [{"branch": p.alias, "gid": p.gid, "prepared_at": p.prepared_at, "age_seconds": round((now - p.prepared_at).total_seconds(), 3)} for p in found]
        for tid, found in ours.items()
    }


def _in_doubt_prepared() -> dict[uuid.UUID, list[dict[str, Any]]] | None:
    """Our prepared branches by transaction (None: they cannot be read now)."""
    try:
        ours, _ = prepared_by_transaction()
    except BranchError:
        return None
    return _as_shown(ours)


def _phase_steps(saga: SagaInstance, prepared: dict[uuid.UUID, list[dict[str, Any]]] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool, dict[str, Any] | None]:
    """A 2PC transaction: its coordinator log as steps, what it awaits, and, while it is not
    finished, how long it has been in doubt and which branches are prepared (holding locks)."""
    entries = list(saga.coordinator_log.all())
    steps = [
        {
            "name": f"{entry.phase} {entry.branch}".strip(), "kind": "compensation" if entry.phase == "rollback" else "forward",
            "status": StepStatus.FAILED if entry.outcome == "failed" else StepStatus.SUCCEEDED, "attempts": 1, "started_at": entry.started_at, "ended_at": entry.at,
            "error": entry.detail if entry.outcome == "failed" else "", "outcome": entry.outcome, "actor": entry.actor, "detail": entry.detail,
        }
        for entry in entries
    ]
    if saga.state not in ACTIVE_STATES:
        return steps, None, False, None
    now = timezone.now()
    decision = next((entry.outcome for entry in entries if entry.phase == "decision"), None)
    deadline = saga.created_at + _safety()
    awaiting = {
        "step": "decision" if decision is None else ("commit" if decision == "COMMIT" else "rollback"), "kind": "forward" if decision != "ABORT" else "compensation",
        "from_context": "sagas", "since": entries[-1].at if entries else saga.created_at, "deadline": deadline,
    }
    in_doubt = {"decision": decision, "age_seconds": round((now - saga.created_at).total_seconds(), 3), "prepared": None if prepared is None else prepared.get(saga.id, [])}
    return steps, awaiting, deadline < now, in_doubt


def _trace_steps(saga: SagaInstance) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
    """A choreographed flow: its events as steps, then the awaited one, and whether it is stuck."""
    steps = [
        {
            "name": event.type, "kind": "forward", "status": StepStatus.SUCCEEDED, "attempts": 1, "started_at": event.occurred_at, "ended_at": event.occurred_at,
            "error": "", "context": event.context, "event_id": event.event_id, "causation_id": event.causation_id, "position": event.position,
        }
        for event in saga.trace.all()
    ]
    if saga.state not in ACTIVE_STATES or not saga.awaiting:
        return steps, None, False
    awaiting = dict(saga.awaiting)
    stuck = saga.awaiting_deadline is not None and saga.awaiting_deadline < timezone.now()
    failing = parked_events(subscriber=awaiting["subscriber"], saga_id=saga.id)
    error = failing[-1].error if failing else ""
    if failing:
        awaiting["error"] = error
        awaiting["parked"] = failing[-1].parked_at is not None
        stuck = True
    if stuck:
        awaiting["subscriber_lag"] = subscriber_lag(subscriber_get(awaiting["subscriber"]))
    steps.append(
        {
            "name": awaiting["step"], "kind": "forward", "status": StepStatus.FAILED if failing and failing[-1].parked_at else StepStatus.WAITING,
            "attempts": failing[-1].attempts if failing else 0, "started_at": awaiting["since"], "ended_at": None, "error": error, "context": awaiting["from_context"],
            "event_id": None, "causation_id": None, "position": None,
        }
    )
    return steps, awaiting, stuck


def _as_dict(saga: SagaInstance, prepared: dict[uuid.UUID, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    in_doubt = None
    if saga.mode == CHOREOGRAPHY:
        steps, awaiting, stuck = _trace_steps(saga)
    elif saga.mode == TWO_PC:
        steps, awaiting, stuck, in_doubt = _phase_steps(saga, prepared)
    else:
        awaiting, stuck = _awaiting(saga)
        steps = [{name: getattr(step, name) for name in STEP_FIELDS} for step in saga.steps.all()]
    return {
        "id": saga.id, "type": saga.type, "mode": saga.mode, "state": saga.state, "definition_version": saga.definition_version,
        "created_at": saga.created_at, "updated_at": saga.updated_at, "data": saga.data, "last_error": saga.last_error,
        "stuck": stuck, "awaiting": awaiting, "steps": steps, "in_doubt": in_doubt,
    }


def _prepared_for(sagas: list[SagaInstance]) -> dict[uuid.UUID, list[dict[str, Any]]] | None:
    """Read the prepared transactions only when a 2PC transaction on the page is unfinished."""
    if any(saga.mode == TWO_PC and saga.state in ACTIVE_STATES for saga in sagas):
        return _in_doubt_prepared()
    return {}


def saga_get(*, saga_id: uuid.UUID) -> dict[str, Any] | None:
    saga = _with_steps(SagaInstance.objects.using(ALIAS).filter(id=saga_id)).first()
    return _as_dict(saga, _prepared_for([saga])) if saga else None


def saga_list(
    *, state: str | None, saga_type: str | None, offset: int, limit: int, mode: str | None = None, stuck: bool | None = None, about: uuid.UUID | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Newest first; the stuck ones (``stuck=True``) stalest first. ``about`` finds the sagas
    of an order (their subject), a saga by its id, or the sagas of a correlation id."""
    queryset = SagaInstance.objects.using(ALIAS).all()
    if about is not None:
        queryset = queryset.filter(Q(id=about) | Q(subject_id=about) | Q(correlation_id=about))
    if state:
        queryset = queryset.filter(state=state)
    if saga_type:
        queryset = queryset.filter(type=saga_type)
    if mode:
        queryset = queryset.filter(mode=mode)
    order = ("-created_at", "id")
    if stuck is not None:
        stuck_step = SagaStep.objects.using(ALIAS).filter(_stuck_step_q(), saga=OuterRef("pk"), status__in=OPEN_STEP_STATUSES)
        # A choreographed flow is stuck past its awaited step's deadline (a parked event makes
        # one stuck at once in the detail view; the deadline catches it here soon after).
        # A 2PC transaction is stuck once it has been in doubt longer than the safety interval.
        condition = Q(state__in=ACTIVE_STATES) & (
            Q(Exists(stuck_step)) | Q(mode=CHOREOGRAPHY, awaiting_deadline__lt=timezone.now()) | Q(mode=TWO_PC, created_at__lt=timezone.now() - _safety())
        )
        queryset = queryset.filter(condition if stuck else ~condition)
        if stuck:
            order = ("updated_at", "id")
    page = list(_with_steps(queryset.order_by(*order))[offset : offset + limit])
    prepared = _prepared_for(page)
    return queryset.count(), [_as_dict(saga, prepared) for saga in page]



def saga_log(*, saga_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every command sent, reply, retry, timeout, compensation and operator action of a saga,
    in order (``sagas_sagalogentry``): the full timeline behind its steps."""
    return list(SagaLogEntry.objects.using(ALIAS).filter(saga_id=saga_id).order_by("id").values("at", "step", "kind", "event", "detail"))  # type: ignore[arg-type]  # values() rows are dicts; django-stubs types them as a TypedDict


def saga_counts() -> list[dict[str, Any]]:
    """How many sagas there are per mode and state (one grouped query)."""
    rows = SagaInstance.objects.using(ALIAS).values("mode", "state").annotate(n=Count("id")).order_by("mode", "state")
    return [{"mode": row["mode"], "state": row["state"], "count": row["n"]} for row in rows]


def saga_outcomes(*, since: dt.datetime) -> dict[str, int]:
    """How many sagas ended in each final state since ``since`` (throughput, compensation rate)."""
    rows = SagaInstance.objects.using(ALIAS).filter(ended_at__gte=since).values("state").annotate(n=Count("id"))
    found = {row["state"]: row["n"] for row in rows}
    return {str(state): found.get(state, 0) for state in (SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED)}


def saga_definition_outline(*, saga_type: str, version: int) -> list[dict[str, Any]] | None:
    """An orchestrated saga's definition as data (steps in order with role, command and
    compensation), for drawing it; ``None`` for a type with no definition (a choreography)."""
    definition = DEFINITIONS.get((saga_type, version))
    if definition is None:
        return None
    return [
        {"name": step.name, "role": str(step.role), "command": step.action.command, "compensation": step.compensation.command if step.compensation else None}
        for step in definition.steps
    ]


def two_phase_in_doubt(*, limit: int = 20) -> dict[str, Any]:
    """What an operator needs to see of 2PC: whether it is available here, our transactions
    not finished yet (oldest first, with their age, decision and prepared branches), and the
    prepared transactions in the branch databases that are not ours (with their age)."""
    problems = two_phase_problems()
    if problems:
        return {"available": False, "why": problems, "transactions": [], "foreign": []}
    queryset = _with_steps(SagaInstance.objects.using(ALIAS).filter(mode=TWO_PC, state__in=ACTIVE_STATES).order_by("created_at", "id"))[:limit]
    page = list(queryset)
    try:  # once, for both our transactions' branches and the others'
        ours, foreign = prepared_by_transaction()
    except BranchError as exc:
        return {"available": True, "error": str(exc), "transactions": [_as_dict(saga, None) for saga in page], "foreign": []}
    prepared = _as_shown(ours)
    now = timezone.now()
    return {
        "available": True,
        "transactions": [_as_dict(saga, prepared) for saga in page],
        "foreign": [{"gid": p.gid, "database": p.database, "owner": p.owner, "age_seconds": round((now - p.prepared_at).total_seconds(), 1)} for p in foreign],
    }
