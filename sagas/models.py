"""Tables of the sagas context (``sagas`` database): saga instances, their step log, idempotency.

A ``SagaStep`` row is both the timeline an operator reads and the orchestrator's outbox: it is
written in the same transaction as the transition that decided to send its command, with the
deadline by which a reply is due. The periodic sweep re-sends what is overdue.
"""

from __future__ import annotations

from django.db import models

from eventlog.models import Checkpoint
from eventlog.models import IdempotencyRecord as BaseIdempotencyRecord


class SagaState(models.TextChoices):
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"


ACTIVE_STATES = (SagaState.RUNNING, SagaState.COMPENSATING)


class StepKind(models.TextChoices):
    FORWARD = "forward"
    COMPENSATION = "compensation"


class StepStatus(models.TextChoices):
    WAITING = "WAITING", "command sent, waiting for the reply"
    RETRY_WAIT = "RETRY_WAIT", "failed, waiting to be sent again"
    SUCCEEDED = "SUCCEEDED"
    REFUSED = "REFUSED", "refused by the participant (a business answer)"
    FAILED = "FAILED", "failed after its last attempt"


class SagaInstance(models.Model):
    id = models.UUIDField(primary_key=True)
    type = models.CharField(max_length=50)
    mode = models.CharField(max_length=16, default="orchestration")
    definition_version = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=SagaState.choices, default=SagaState.RUNNING)
    #: What the saga holds a lock on (the order): one active saga per subject.
    subject_id = models.UUIDField()
    data = models.JSONField(default=dict)
    correlation_id = models.UUIDField()
    version = models.PositiveIntegerField(default=1)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    #: A choreographed flow's awaited step (sagas/trace.py): the event expected next, from
    #: which context and subscriber, since when; its deadline is a column, to find stuck flows.
    awaiting = models.JSONField(null=True, blank=True)
    awaiting_deadline = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=("state", "type"), name="sagas_state_type")]
        constraints = [
            models.UniqueConstraint(fields=("subject_id",), condition=models.Q(state__in=[s.value for s in ACTIVE_STATES]), name="sagas_one_active_per_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} {self.state}"


class SagaStep(models.Model):
    saga = models.ForeignKey(SagaInstance, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=50)
    kind = models.CharField(max_length=16, choices=StepKind.choices)
    command = models.CharField(max_length=100)
    command_id = models.UUIDField(unique=True)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=StepStatus.choices)
    #: Sends of this step's command so far (an attempt counts when its command is sent).
    attempts = models.PositiveIntegerField(default=1)
    #: ``attempts`` when an operator last retried the step: its retry budget starts again there.
    attempts_before_retry = models.PositiveIntegerField(default=0)
    #: WAITING: when the reply is overdue; RETRY_WAIT: when to send again.
    due_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    reply = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        indexes = [models.Index(fields=("status", "due_at"), name="sagas_step_due")]
        constraints = [models.UniqueConstraint(fields=("saga", "index", "kind"), name="sagas_one_row_per_step_kind")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}) {self.status}"


class SagaLogEntry(models.Model):
    """Append-only history: every command sent, reply received, error, timeout and retry."""

    saga = models.ForeignKey(SagaInstance, on_delete=models.CASCADE, related_name="log")
    at = models.DateTimeField()
    step = models.CharField(max_length=50, blank=True)
    kind = models.CharField(max_length=16, blank=True)
    event = models.CharField(max_length=20)
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%S} {self.step} {self.event}"


class TraceEvent(models.Model):
    """One event of a choreographed flow, as the trace saw it in the log (its steps)."""

    saga = models.ForeignKey(SagaInstance, on_delete=models.CASCADE, related_name="trace")
    position = models.BigIntegerField()
    event_id = models.UUIDField(unique=True)
    type = models.CharField(max_length=64)
    context = models.CharField(max_length=32)
    stream_id = models.UUIDField()
    occurred_at = models.DateTimeField()
    causation_id = models.UUIDField(null=True)

    class Meta:
        ordering = ("position",)

    def __str__(self) -> str:
        return f"#{self.position} {self.type} ({self.context})"


class CoordinatorLogEntry(models.Model):
    """The two-phase commit coordinator's log (``sagas/coordinator.py``): one row per phase.

    Append-only. Its *decision* row is unique per transaction, so whoever writes it first wins:
    the coordinator's COMMIT, or recovery's presumed ABORT, never both. The transaction itself
    is a ``SagaInstance`` with mode ``2pc``, written (committed) before any branch begins.
    """

    saga = models.ForeignKey(SagaInstance, on_delete=models.CASCADE, related_name="coordinator_log")
    #: begin, prepare, decision, commit, rollback, store (the REJECTED order), end
    phase = models.CharField(max_length=16)
    #: The database of a branch phase (orders, customers); blank for the transaction's own.
    branch = models.CharField(max_length=16, blank=True, default="")
    #: ok / failed / already done, or the decision itself: COMMIT or ABORT.
    outcome = models.CharField(max_length=16)
    #: Who did it: the coordinator, resolve_in_doubt (an operator), or the sweep.
    actor = models.CharField(max_length=32)
    started_at = models.DateTimeField()
    at = models.DateTimeField()
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ("id",)
        constraints = [models.UniqueConstraint(fields=("saga",), condition=models.Q(phase="decision"), name="sagas_one_decision_per_transaction")]

    def __str__(self) -> str:
        return f"{self.phase} {self.branch} {self.outcome}".replace("  ", " ")


class IdempotencyRecord(BaseIdempotencyRecord):
    """The first answer to a create-order saga's request that carried an ``Idempotency-Key``."""


class SagasCheckpoint(Checkpoint):
    """Positions of this context's subscribers (choreography trace, handlers) in the log."""
