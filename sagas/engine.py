"""The saga orchestrator: durable instances driven by replies, deadlines and the sweep.

Every transition is one transaction of the ``sagas`` database. It locks the instance row,
writes the instance, the step rows (the timeline, which is also the outbox of commands) and
the log, and sends the command only after commit. Nothing waits in memory:

- a reply moves the saga on (``saga_reply_handle``);
- a deadline in the database (``SagaStep.due_at``), found by the periodic sweep
  (``saga_sweep``), turns a missing reply into a timeout, and a due retry into a re-send.

The same ``command_id`` is used for every attempt of a step, so a participant that did
the work but whose reply was lost answers the re-send from its record, without acting twice.

Failure semantics (the step roles are declared in sagas/definitions.py):

- A business refusal of a compensatable step or the pivot compensates the completed steps in
  reverse, one at a time, each confirmed before the next.
- A technical failure (an error reply, no reply by the deadline) is retried with capped
  backoff and the same command id. A *transient* one (the participant's database unreachable,
  no reply) gives up a compensatable step or the pivot only once it has lasted
  ``SAGA_OUTAGE_BUDGET_SECONDS``: then the step's outcome is unknown, so it is compensated
  with the steps before it (tombstones, eventlog/commands.py, make that safe). A failure that
  is not transient gives up after the policy's ``max_attempts``.
- Retriable steps (after the pivot) are retried until they succeed and never compensated: the
  saga stays RUNNING, and shows as stuck with its last error, for as long as that takes.
- Compensations are retried until they succeed. Only one that keeps failing for a reason that
  is not transient (or is refused) ends the saga FAILED, for an operator (``saga_retry``).
- An attempt counts when its command is sent: a send the broker did not take is given back
  and tried again. Replies name their attempt, and an error of an older attempt is ignored.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from eventlog.commands import ERROR, OK, REFUSED, Command
from eventlog.messaging import BROKER_BACKOFF_SECONDS, send_task
from eventlog.sql import WriteBatch, insert_rows
from sagas.definitions import Data, Role, SagaDefinition, Step, definition_get
from sagas.models import ACTIVE_STATES, SagaInstance, SagaLogEntry, SagaState, SagaStep, StepKind, StepStatus

logger = logging.getLogger(__name__)
#: One line per saga that ends (its outcome), for the operator's console.
outcomes = logging.getLogger("sagas.outcomes")

ALIAS = "sagas"
REPLY_TASK = "sagas.saga_reply"
OPEN_STEP_STATUSES = (StepStatus.WAITING, StepStatus.RETRY_WAIT)
#: What a transition may change; the rest of a row is written once, when it is created.
SAGA_MUTABLE = ("state", "version", "updated_at", "ended_at", "last_error", "data")
STEP_MUTABLE = ("status", "attempts", "attempts_before_retry", "due_at", "ended_at", "error", "reply", "command_id")


class SagaConflict(Exception):
    """Another saga holds the subject (a semantic lock), or the saga is not in a state for this."""


def _scaled(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds * settings.SAGA_TIME_SCALE)


@dataclass
class _Transition:
    lines: list[SagaLogEntry]
    writes: WriteBatch


_current: ContextVar[_Transition | None] = ContextVar("saga_transition", default=None)


@contextmanager
def _transition() -> Iterator[None]:
    """One transition: one transaction of ``sagas``.

    Its writes (the instance, its steps, its log lines) are held back and sent together at its
    end (``WriteBatch``: one statement on PostgreSQL), after the reads that decided them: the
    instance row is locked first, so nothing can change under them. A read of steps in the
    middle of a transition flushes first (``_flushed``).

    Inside a transaction the caller opened (the API's, with its idempotency record) it adds
    no savepoint: a failure rolls back the caller's transaction, which is what it wants.
    """
    current = _Transition(lines=[], writes=WriteBatch(ALIAS))
    token = _current.set(current)
    try:
        with transaction.atomic(using=ALIAS, savepoint=False):
            yield
            current.writes.flush()
    finally:
        _current.reset(token)


def _writes() -> WriteBatch:
    current = _current.get()
    assert current is not None, "saga writes are made by a transition (_transition)"
    return current.writes


def _flushed() -> None:
    """Before a read in a transition: what it held back so far is written first."""
    _writes().flush()


def _log(saga: SagaInstance, event: str, detail: str = "", *, step: SagaStep | None = None) -> None:
    current = _current.get()
    assert current is not None, "saga log lines are written by a transition (_transition)"
    line = SagaLogEntry(saga=saga, at=timezone.now(), step=step.name if step else "", kind=step.kind if step else "", event=event, detail=detail[:2000])
    current.lines.append(line)
    current.writes.insert(line)


def _definition(saga: SagaInstance) -> SagaDefinition:
    return definition_get(saga.type, saga.definition_version)


def _save(saga: SagaInstance, **changes: Any) -> None:
    for name, value in changes.items():
        setattr(saga, name, value)
    saga.version += 1
    saga.updated_at = timezone.now()
    if saga.state not in (SagaState.RUNNING, SagaState.COMPENSATING) and saga.ended_at is None:
        saga.ended_at = saga.updated_at
        line = f"saga {saga.type} {saga.id} {saga.state}" + (f": {saga.last_error}" if saga.state != SagaState.COMPLETED and saga.last_error else "")
        # The one line per saga that ``make run``'s console shows (config/launcher.py).
        level = logging.WARNING if saga.state == SagaState.FAILED else logging.INFO
        transaction.on_commit(lambda: outcomes.log(level, line[:300]), using=ALIAS)
    _writes().update(saga, SAGA_MUTABLE)


def _save_step(step: SagaStep) -> None:
    _writes().update(step, STEP_MUTABLE)


def _send(saga: SagaInstance, step: SagaStep) -> None:
    """Send the step's current attempt after commit; if the broker does not take it, the
    attempt is given back (``_unsent``) so that attempts count real sends."""
    compensates = None
    if step.kind == StepKind.COMPENSATION:
        _flushed()
        compensates = SagaStep.objects.using(ALIAS).filter(saga_id=saga.id, index=step.index, kind=StepKind.FORWARD).values_list("command_id", flat=True).first()
    command = Command(
        command_id=step.command_id,
        name=step.command,
        payload=step.payload,
        saga_id=saga.id,
        correlation_id=saga.correlation_id,
        reply_to=REPLY_TASK,
        step=step.name,
        attempt=step.attempts,
        compensates=compensates,
    )
    saga_id, command_id, attempt, due_at = saga.id, step.command_id, step.attempts, step.due_at

    def send() -> None:
        # The command expires with its attempt: a copy taken by a worker after the deadline (a
        # worker that was down, a requeued message) is discarded. One taken before it but
        # committing after it is answered from the participant's record or refused by a
        # tombstone, so it can do no harm either.
        if not send_task(command.name, args=(command.to_message(),), expires=due_at):
            _unsent(saga_id, command_id, attempt)

    transaction.on_commit(send, using=ALIAS)


def _unsent(saga_id: uuid.UUID, command_id: uuid.UUID, attempt: int) -> None:
    """The broker did not take attempt ``attempt``: it does not count; send it again soon."""
    try:
        with _transition():
            saga = _lock(saga_id)
            step = SagaStep.objects.using(ALIAS).filter(saga_id=saga_id, command_id=command_id).first() if saga is not None else None
            if saga is None or step is None:
                return
            if step.status != StepStatus.WAITING or step.attempts != attempt:
                return  # already answered, or moved on
            step.attempts -= 1
            step.status = StepStatus.RETRY_WAIT
            step.due_at = timezone.now() + dt.timedelta(seconds=BROKER_BACKOFF_SECONDS)
            step.error = "the broker did not take the command; it is sent again when the broker is back"
            _save_step(step)
            _log(saga, "send_failed", f"{step.command} attempt {attempt} not sent (broker unreachable); it does not count", step=step)
            _save(saga, last_error=f"{step.name}: {step.error}")
    except Exception:  # the sagas database may be down too: the step's deadline covers it
        logger.warning("could not record an unsent command (saga %s command %s attempt %s); its deadline will re-send it", saga_id, command_id, attempt, exc_info=True)


def _dispatch(saga: SagaInstance, index: int, kind: StepKind) -> SagaStep:
    """Record the step's command (with its deadline) and send it after commit."""
    definition_step = _definition(saga).step(index)
    action = definition_step.action if kind == StepKind.FORWARD else definition_step.compensation
    assert action is not None
    now = timezone.now()
    step = SagaStep(
        saga=saga,
        index=index,
        name=definition_step.name,
        kind=kind,
        command=action.command,
        command_id=uuid.uuid4(),
        payload=action.payload(saga.data),
        status=StepStatus.WAITING,
        attempts=1,
        due_at=now + _scaled(definition_step.timeout),
        started_at=now,
    )
    _writes().insert(step)
    _log(saga, "sent", f"{step.command} attempt 1", step=step)
    _send(saga, step)
    return step


# --- starting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    saga_id: uuid.UUID
    definition_version: int


def saga_start(*, saga_type: str, data: Data, subject_id: uuid.UUID, saga_id: uuid.UUID | None = None, correlation_id: uuid.UUID | None = None) -> SagaInstance:
    """Create a RUNNING saga and send its first command, in one transaction (send after commit).

    Raises ``SagaConflict`` when another active saga holds ``subject_id``. Must run inside a
    transaction on ``sagas`` (so a caller can store an idempotency record with it), or opens one.
    """
    definition = definition_get(saga_type)
    now = timezone.now()
    saga_id = saga_id or uuid.uuid4()
    saga = SagaInstance(
        id=saga_id,
        type=definition.type,
        definition_version=definition.version,
        state=SagaState.RUNNING,
        subject_id=subject_id,
        data=data,
        correlation_id=correlation_id or saga_id,
        version=1,
        last_error="",
        created_at=now,
        updated_at=now,
    )
    with _transition():
        # The semantic lock is a partial unique index (one active saga per subject): a
        # conflicting insert is skipped, which tells us without a savepoint.
        if not insert_rows(SagaInstance, ALIAS, [_row(saga)], on_conflict_ignore=True):
            raise SagaConflict(f"another saga is already running for {subject_id}")
        saga._state.adding, saga._state.db = False, ALIAS
        _log(saga, "started", f"{definition.type} v{definition.version}")
        _dispatch(saga, 0, StepKind.FORWARD)
        return saga


def _row(saga: SagaInstance) -> dict[str, Any]:
    return {field.attname: getattr(saga, field.attname) for field in SagaInstance._meta.concrete_fields}


# --- moving on ----------------------------------------------------------------------------


def _forward_done(saga: SagaInstance, step: SagaStep) -> None:
    definition = _definition(saga)
    if step.index + 1 < len(definition.steps):
        _dispatch(saga, step.index + 1, StepKind.FORWARD)
        _save(saga)
    else:
        _save(saga, state=SagaState.COMPLETED)
        _log(saga, "completed")


def _compensate_from(saga: SagaInstance, index: int) -> None:
    """Compensate the highest completed step at or below ``index`` that has a compensation."""
    definition = _definition(saga)
    _flushed()
    succeeded = set(
        SagaStep.objects.using(ALIAS).filter(saga=saga, kind=StepKind.FORWARD, status=StepStatus.SUCCEEDED).values_list("index", flat=True)
    )
    compensated = set(SagaStep.objects.using(ALIAS).filter(saga=saga, kind=StepKind.COMPENSATION).values_list("index", flat=True))
    for candidate in range(index, -1, -1):
        if candidate in succeeded and candidate not in compensated and definition.step(candidate).compensation is not None:
            _dispatch(saga, candidate, StepKind.COMPENSATION)
            _save(saga, state=SagaState.COMPENSATING)
            return
    _save(saga, state=SagaState.COMPENSATED)
    _log(saga, "compensated")


def _outage_budget() -> dt.timedelta:
    return _scaled(settings.SAGA_OUTAGE_BUDGET_SECONDS)


def _gives_up(saga: SagaInstance, step: SagaStep, *, transient: bool) -> bool:
    """Whether this failure ends the step's retries (see the module docstring)."""
    definition_step = _definition(saga).step(step.index)
    exhausted = step.attempts - step.attempts_before_retry >= definition_step.retry.max_attempts
    if step.kind == StepKind.COMPENSATION:
        return exhausted and not transient  # a compensation waits out any outage
    if definition_step.role == Role.RETRIABLE:
        return False  # past the point of no return: finish, however long it takes
    return exhausted and (not transient or timezone.now() - step.started_at >= _outage_budget())


def _technical_failure(saga: SagaInstance, step: SagaStep, error: str, *, transient: bool) -> None:
    policy = _definition(saga).step(step.index).retry
    step.error = error[:2000]
    what = "transient" if transient else "not transient"
    if not _gives_up(saga, step, transient=transient):
        step.status = StepStatus.RETRY_WAIT
        step.due_at = timezone.now() + _scaled(policy.delay(step.attempts))
        _save_step(step)
        _log(saga, "retry_wait", f"attempt {step.attempts} failed ({what}): {error}", step=step)
        _save(saga, last_error=f"{step.name}: {error}"[:2000])
        return
    step.status = StepStatus.FAILED
    step.due_at = None
    step.ended_at = timezone.now()
    _save_step(step)
    _log(saga, "gave_up", f"after {step.attempts} attempts ({what}): {error}", step=step)
    if step.kind == StepKind.FORWARD:
        saga.last_error = f"{step.name}: {error}"[:2000]
        # The last attempt's outcome is unknown (it may have done the work and lost its reply),
        # so this step is compensated too. If it never took effect, its compensation is a
        # no-op that leaves a tombstone, which refuses the forward command should it arrive.
        _dispatch(saga, step.index, StepKind.COMPENSATION)
        _save(saga, state=SagaState.COMPENSATING)
    else:
        _fail(saga, f"compensation {step.name}: {error}")


def _fail(saga: SagaInstance, error: str) -> None:
    _save(saga, state=SagaState.FAILED, last_error=error[:2000])
    _log(saga, "failed", "needs an operator: manage.py recover_sagas --retry " + str(saga.id))


def _lock(saga_id: uuid.UUID) -> SagaInstance | None:
    return SagaInstance.objects.using(ALIAS).select_for_update().filter(id=saga_id).first()


def saga_reply_handle(reply: dict[str, Any]) -> str:
    """Apply a participant's reply; a duplicate or late reply changes nothing."""
    with _transition():
        saga = _lock(uuid.UUID(reply["saga_id"]))
        if saga is None:
            return "unknown saga"
        step = SagaStep.objects.using(ALIAS).filter(saga=saga, command_id=uuid.UUID(reply["command_id"])).first()
        # A success or refusal is welcome from any attempt, in RETRY_WAIT too: the failed
        # attempt may have done the work after all.
        if step is None or step.status not in OPEN_STEP_STATUSES:
            return "ignored"
        outcome = reply["outcome"]
        if outcome == ERROR:
            attempt = int(reply.get("attempt") or step.attempts)
            if step.status != StepStatus.WAITING or attempt != step.attempts:
                # An error of an attempt that already failed (by its deadline) or an older one:
                # it says nothing about the attempt in flight.
                _log(saga, "stale_error", f"attempt {attempt} (now {step.attempts}, {step.status}): {reply.get('error')}", step=step)
                return "ignored"
            _technical_failure(saga, step, reply.get("error") or "error", transient=bool(reply.get("transient")))
            return "retrying"
        now = timezone.now()
        step.reply = {k: reply.get(k) for k in ("outcome", "data", "reason", "error")}
        step.ended_at = now
        step.due_at = None
        if outcome == OK:
            step.status = StepStatus.SUCCEEDED
            step.error = ""
            _save_step(step)
            _log(saga, "succeeded", f"attempt {reply.get('attempt') or step.attempts}", step=step)
            if step.kind == StepKind.FORWARD:
                _forward_done(saga, step)
            else:
                _compensate_from(saga, step.index - 1)
            return "advanced"
        if outcome == REFUSED:
            step.status = StepStatus.REFUSED
            step.error = reply.get("error") or reply.get("reason") or "refused"
            _save_step(step)
            _log(saga, "refused", f"{reply.get('reason')}: {reply.get('error')}", step=step)
            refused: Step = _definition(saga).step(step.index)
            if step.kind == StepKind.COMPENSATION:
                _fail(saga, f"compensation {step.name} refused: {step.error}")
                return "failed"
            if refused.role == Role.RETRIABLE:
                # Past the pivot nothing may be undone, and the participant says no: only an
                # operator can tell why (the step's participant and the saga disagree).
                _fail(saga, f"{step.name} (retriable, after the pivot) refused: {step.error}")
                return "failed"
            if refused.on_refused is not None:
                saga.data = refused.on_refused(saga.data, reply.get("reason") or "")
            saga.last_error = f"{step.name} refused: {reply.get('reason')}"
            _compensate_from(saga, step.index - 1)
            return "compensating"
        raise ValueError(f"unknown reply outcome {outcome!r}")


# --- deadlines ----------------------------------------------------------------------------


def saga_step_due(step_id: int) -> str:
    """A step's deadline passed: a WAITING step timed out, a RETRY_WAIT step is sent again."""
    with _transition():
        step = SagaStep.objects.using(ALIAS).filter(id=step_id).first()
        if step is None:
            return "gone"
        saga = _lock(step.saga_id)
        step.refresh_from_db(using=ALIAS)
        now = timezone.now()
        if saga is None or step.status not in OPEN_STEP_STATUSES or step.due_at is None or step.due_at > now:
            return "not due"
        return _step_due(saga, step)


def _step_due(saga: SagaInstance, step: SagaStep) -> str:
    """Inside a transition, with the saga locked: the open ``step`` is due now."""
    if step.status == StepStatus.WAITING:
        timeout = _definition(saga).step(step.index).timeout * settings.SAGA_TIME_SCALE
        _technical_failure(saga, step, f"attempt {step.attempts}: no reply within {timeout:.1f}s (timed out)", transient=True)
        return "timed out"
    step.status = StepStatus.WAITING
    step.attempts += 1
    step.due_at = timezone.now() + _scaled(_definition(saga).step(step.index).timeout)
    _save_step(step)
    _log(saga, "sent", f"{step.command} attempt {step.attempts} (same command id)", step=step)
    _send(saga, step)
    _save(saga)
    return "resent"


def due_steps(*, limit: int = 500) -> list[int]:
    return list(
        SagaStep.objects.using(ALIAS).filter(status__in=OPEN_STEP_STATUSES, due_at__lte=timezone.now()).order_by("due_at").values_list("id", flat=True)[:limit]
    )


def saga_sweep() -> dict[str, int]:
    """Handle every overdue step: the database, not a Celery countdown, holds the deadlines."""
    outcomes: dict[str, int] = {}
    for step_id in due_steps():
        outcome = saga_step_due(step_id)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


# --- operators ----------------------------------------------------------------------------
#
# Every operator action is one transition, like a reply or a deadline. With ``dry_run=True``
# the very same transition runs and is rolled back: what it *would* do is what it wrote to the
# saga's log, and nothing is sent (its after-commit sends go with the rollback). So a dry run
# can never disagree with the action it previews.


@dataclass(frozen=True)
class OperatorOutcome:
    """What an operator action did (or, for a dry run, would do) to one saga."""

    saga_id: uuid.UUID
    saga_type: str
    state: str
    did: tuple[str, ...]
    dry_run: bool


class _DryRun(Exception):
    """Raised inside an operator transition to roll it back once it has said what it does."""


def _operator(saga_id: uuid.UUID, act: Callable[[SagaInstance, str], None], *, dry_run: bool, operator: str) -> OperatorOutcome:
    result: OperatorOutcome | None = None
    try:
        with _transition():
            saga = _lock(saga_id)
            if saga is None:
                raise LookupError(f"no saga {saga_id}")
            act(saga, f" (by {operator})" if operator else "")
            current = _current.get()
            lines = current.lines if current is not None else []
            did = tuple(f"{line.step} {line.kind} {line.event}: {line.detail}".strip() if line.step else f"{line.event}: {line.detail}" for line in lines)
            result = OperatorOutcome(saga_id=saga.id, saga_type=saga.type, state=saga.state, did=did, dry_run=dry_run)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    assert result is not None
    return result


def _open_step(saga: SagaInstance) -> SagaStep | None:
    _flushed()
    return SagaStep.objects.using(ALIAS).filter(saga=saga, status__in=OPEN_STEP_STATUSES).order_by("-id").first()


def saga_retry(saga_id: uuid.UUID, *, dry_run: bool = False, operator: str = "") -> OperatorOutcome:
    """An operator retries a FAILED saga: its failed step (a compensation, or a refused
    retriable step) is sent again, with a fresh retry budget."""

    def act(saga: SagaInstance, by: str) -> None:
        if saga.state != SagaState.FAILED:
            raise SagaConflict(f"saga {saga_id} is {saga.state}; only a FAILED saga can be retried")
        step = SagaStep.objects.using(ALIAS).filter(saga=saga, status__in=(StepStatus.FAILED, StepStatus.REFUSED)).order_by("-id").first()
        if step is None:
            raise SagaConflict(f"saga {saga_id} has no failed step to retry")
        now = timezone.now()
        if step.status == StepStatus.REFUSED:
            # The participant recorded its refusal under the old id; ask afresh.
            step.command_id = uuid.uuid4()
        step.status = StepStatus.WAITING
        step.attempts += 1
        step.attempts_before_retry = step.attempts - 1
        step.ended_at = None
        step.due_at = now + _scaled(_definition(saga).step(step.index).timeout)
        _save_step(step)
        _save(saga, state=SagaState.COMPENSATING if step.kind == StepKind.COMPENSATION else SagaState.RUNNING, ended_at=None)
        _log(saga, "operator_retry", f"{step.command} attempt {step.attempts}{by}", step=step)
        _send(saga, step)

    return _operator(saga_id, act, dry_run=dry_run, operator=operator)


def saga_resume(saga_id: uuid.UUID, *, dry_run: bool = False, operator: str = "") -> OperatorOutcome:
    """An operator moves a stuck saga on now instead of at its step's deadline: a step waiting
    to be sent again (RETRY_WAIT) is sent now; a step waiting for its reply (WAITING) times out
    now, and then is retried or given up exactly as at its deadline (``saga_step_due``)."""

    def act(saga: SagaInstance, by: str) -> None:
        if saga.mode != "orchestration" or saga.state not in ACTIVE_STATES:
            raise SagaConflict(f"saga {saga_id} is {saga.mode} {saga.state}; only a running orchestrated saga can be resumed or timed out")
        step = _open_step(saga)
        if step is None:
            raise SagaConflict(f"saga {saga_id} awaits no step")
        what = "time out the awaited reply now" if step.status == StepStatus.WAITING else "send the awaited step now"
        _log(saga, "operator_resume", f"{what}{by}", step=step)
        step.due_at = timezone.now()
        _save_step(step)
        _step_due(saga, step)

    return _operator(saga_id, act, dry_run=dry_run, operator=operator)


def saga_abort(saga_id: uuid.UUID, *, dry_run: bool = False, operator: str = "") -> OperatorOutcome:
    """An operator aborts a running orchestrated saga before its pivot has succeeded: the step
    in flight is given up (its outcome is unknown, so it is compensated too, as when it gives
    up by itself: a no-op plus a tombstone if it never took effect), then every completed step
    before it, in reverse. After the pivot nothing may be undone, so that is refused."""

    def act(saga: SagaInstance, by: str) -> None:
        if saga.mode != "orchestration" or saga.state != SagaState.RUNNING:
            raise SagaConflict(f"saga {saga_id} is {saga.mode} {saga.state}; only a RUNNING orchestrated saga can be aborted")
        pivot = _definition(saga).pivot_index
        past = SagaStep.objects.using(ALIAS).filter(saga=saga, kind=StepKind.FORWARD, index__gte=pivot, status=StepStatus.SUCCEEDED).exists()
        step = _open_step(saga)
        if past or step is None or step.kind != StepKind.FORWARD or step.index > pivot:
            raise SagaConflict(f"saga {saga_id} is past its pivot ({_definition(saga).step(pivot).name}): it can only finish")
        step.status = StepStatus.FAILED
        step.due_at = None
        step.ended_at = timezone.now()
        step.error = f"aborted by an operator{by}"
        _save_step(step)
        _log(saga, "operator_abort", f"gave up attempt {step.attempts}; compensating it and every completed step before it{by}", step=step)
        saga.last_error = f"{step.name}: aborted by an operator"
        _dispatch(saga, step.index, StepKind.COMPENSATION)
        _save(saga, state=SagaState.COMPENSATING)

    return _operator(saga_id, act, dry_run=dry_run, operator=operator)


def sagas_failed(*, saga_type: str | None = None, mode: str | None = None) -> list[uuid.UUID]:
    """The FAILED sagas (of a type, a mode), oldest first: what a bulk retry retries."""
    queryset = SagaInstance.objects.using(ALIAS).filter(state=SagaState.FAILED)
    if saga_type:
        queryset = queryset.filter(type=saga_type)
    if mode:
        queryset = queryset.filter(mode=mode)
    return list(queryset.order_by("updated_at", "id").values_list("id", flat=True))
