"""Invariant of the sagas context: every saga settles (COMPLETED, COMPENSATED or FAILED); and
which subjects (orders) have a saga in flight, which ``verify`` needs to judge the others."""

from __future__ import annotations

import datetime as dt
import uuid

from django.utils import timezone

from eventlog.invariants import CheckResult, Violation
from sagas.engine import ALIAS
from sagas.models import ACTIVE_STATES, SagaInstance, SagaState


def sagas_settled_check(*, settle_seconds: float = 30.0) -> CheckResult:
    """A saga still active after ``settle_seconds`` without progress is stuck; a FAILED saga
    waits for an operator. Younger active sagas are in flight, not violations."""
    cutoff = timezone.now() - dt.timedelta(seconds=settle_seconds)
    violations = [
        Violation("every saga settles", f"saga {saga_id} ({saga_type})", f"{state} with no progress since {updated_at:%Y-%m-%d %H:%M:%S}")
        for saga_id, saga_type, state, updated_at in SagaInstance.objects.using(ALIAS)
        .filter(state__in=ACTIVE_STATES, updated_at__lt=cutoff)
        .values_list("id", "type", "state", "updated_at")
    ]
    violations += [
        Violation("every saga settles", f"saga {saga_id} ({saga_type})", f"FAILED and waits for an operator: {error[:200]}")
        for saga_id, saga_type, error in SagaInstance.objects.using(ALIAS).filter(state=SagaState.FAILED).values_list("id", "type", "last_error")
    ]
    return CheckResult(name="every saga is COMPLETED, COMPENSATED or FAILED", checked=SagaInstance.objects.using(ALIAS).count(), violations=violations)


def active_sagas_by_subject() -> dict[uuid.UUID, tuple[uuid.UUID, str, str]]:
    """subject (order) id -> (saga id, mode, state) of the saga RUNNING or COMPENSATING on it
    (at most one per subject, by constraint)."""
    active = SagaInstance.objects.using(ALIAS).filter(state__in=ACTIVE_STATES)
    return {subject_id: (saga_id, mode, state) for subject_id, saga_id, mode, state in active.values_list("subject_id", "id", "mode", "state")}


def two_phase_prepared_check(*, settle_seconds: float = 30.0) -> CheckResult:
    """Invariant 5's second half: no prepared transaction is left behind in the branch databases.

    Ours is a violation when its transaction has ended or has no record (recovery missed it),
    or when it is older than ``settle_seconds`` (``resolve_in_doubt`` should have finished it);
    anyone else's is always reported: it holds its locks and holds back VACUUM here too.
    """
    from sagas.coordinator import prepared_by_transaction, two_phase_problems

    if two_phase_problems():
        return CheckResult(name="no prepared 2PC transaction is left behind", checked=0, violations=[])
    ours, foreign = prepared_by_transaction()
    now = timezone.now()
    states = dict(SagaInstance.objects.using(ALIAS).filter(id__in=ours.keys()).values_list("id", "state"))
    violations = []
    for transaction_id, found in ours.items():
        for prepared in found:
            age = (now - prepared.prepared_at).total_seconds()
            state = states.get(transaction_id)
            if state is None:
                why = "has no record in the coordinator log"
            elif state not in ACTIVE_STATES:
                why = f"belongs to a transaction that ended {state}"
            elif age > settle_seconds:
                why = "is still in doubt"
            else:
                continue
            violations.append(Violation("no prepared transaction left behind", f"prepared transaction {prepared.gid!r}", f"{why}, prepared {age:.0f}s ago: run manage.py resolve_in_doubt"))
    violations += [
        Violation("no prepared transaction left behind", f"prepared transaction {p.gid!r} in {p.database}", f"is not ours (owner {p.owner}), prepared {(now - p.prepared_at).total_seconds():.0f}s ago: its owner must finish it")
        for p in foreign
    ]
    return CheckResult(name="no prepared 2PC transaction is left behind", checked=sum(len(f) for f in ours.values()) + len(foreign), violations=violations)
