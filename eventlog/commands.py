"""Commands between contexts: the message, the reply, and idempotent handling by participants.

A command is a Celery task named ``<context>.<action>`` on the target context's queue. Its one
argument is a JSON message; the participant answers by sending the reply task named in
``reply_to``. Handling is idempotent: the command id is recorded with its reply in the same
transaction as the effects, so a redelivered command gets the same reply and changes nothing.

Outcomes: ``ok``; ``refused`` (a business answer, final, recorded: insufficient credit, unknown
customer, a state that forbids the action); ``error`` (a technical failure, not recorded: the
orchestrator retries the same command id with backoff). An error reply says whether it was
*transient* (the database unreachable or locked: it will pass by itself) and which attempt
it answers, so a late error of an old attempt cannot fail a newer one.

**Tombstones.** A compensation names the forward command it undoes (``compensates``). In the
compensation's transaction the participant inserts the processed-command row of that forward
command, with the reply ``refused: COMPENSATED``. If the forward command had already run, its
row exists, the insert does nothing, and the compensation undoes its effects. If it had not,
the row is the tombstone: the compensation has nothing to undo and succeeds as a no-op, and the
forward command, should it arrive later (a late or redelivered copy), fails to record itself,
rolls back whole and answers ``refused: COMPENSATED``. The primary key decides the race between
the two, on SQLite and PostgreSQL alike, so a late command can never act after its saga
compensated (tests/eventlog/test_commands.py, tests/e2e/).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from eventlog.domain import ConcurrencyError, DomainError, MessageContext
from eventlog.messaging import send_task, send_task_on_commit
from eventlog.models import ProcessedCommand
from eventlog.persistence import is_version_conflict, retry_on_conflict
from eventlog.sql import WriteBatch, held_back, insert_rows

logger = logging.getLogger(__name__)

OK = "ok"
REFUSED = "refused"
ERROR = "error"
#: The reason a tombstone gives a forward command that arrives after its compensation.
COMPENSATED = "COMPENSATED"
#: Failures that pass by themselves: the database unreachable, a failover, a lock timeout.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


class Refused(Exception):
    """A business refusal with a machine-readable reason (``UNKNOWN_CUSTOMER``...)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass(frozen=True)
class Command:
    command_id: uuid.UUID
    name: str
    payload: dict[str, Any]
    saga_id: uuid.UUID | None
    correlation_id: uuid.UUID
    reply_to: str | None
    step: str = ""
    #: Which send of the step this is (1-based): replies echo it.
    attempt: int = 1
    #: On a compensation: the id of the forward command it undoes (see Tombstones above).
    compensates: uuid.UUID | None = None

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Command:
        return cls(
            command_id=uuid.UUID(message["command_id"]),
            name=message["name"],
            payload=message["payload"],
            saga_id=uuid.UUID(message["saga_id"]) if message.get("saga_id") else None,
            correlation_id=uuid.UUID(message["correlation_id"]),
            reply_to=message.get("reply_to"),
            step=message.get("step", ""),
            attempt=int(message.get("attempt") or 1),
            compensates=uuid.UUID(message["compensates"]) if message.get("compensates") else None,
        )

    def to_message(self) -> dict[str, Any]:
        return {
            "command_id": str(self.command_id),
            "name": self.name,
            "payload": self.payload,
            "saga_id": str(self.saga_id) if self.saga_id else None,
            "correlation_id": str(self.correlation_id),
            "reply_to": self.reply_to,
            "step": self.step,
            "attempt": self.attempt,
            "compensates": str(self.compensates) if self.compensates else None,
        }

    @property
    def context(self) -> MessageContext:
        """Events caused by this command carry its saga, its correlation and its id as cause."""
        return MessageContext(correlation_id=self.correlation_id, causation_id=self.command_id, saga_id=self.saga_id)


@dataclass(frozen=True)
class Reply:
    outcome: str
    data: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None
    #: On an ``error``: the failure will pass by itself (see ``TRANSIENT_ERRORS``).
    transient: bool = False

    def to_message(self, command: Command) -> dict[str, Any]:
        return {
            "command_id": str(command.command_id),
            "saga_id": str(command.saga_id) if command.saga_id else None,
            "step": command.step,
            "attempt": command.attempt,
            "outcome": self.outcome,
            "data": self.data,
            "reason": self.reason,
            "error": self.error,
            "transient": self.transient,
        }


Handler = Callable[[Command], "dict[str, Any] | Reply"]


def command_handle(*, message: dict[str, Any], alias: str, processed: type[ProcessedCommand], handler: Handler, refusals: tuple[type[Exception], ...] = ()) -> Reply:
    """Run ``handler`` for a command at most once and send the reply after commit.

    ``handler`` returns the reply data (or a ``Reply``, to refuse while keeping what it wrote,
    such as a ``CreditReservationFailed`` event), or raises ``Refused`` (or one of ``refusals``,
    or a ``DomainError``) to refuse and undo its writes. A refusal is recorded like a success,
    because it is the final answer.
    Any other exception is a technical failure: nothing is recorded and an ``error`` reply
    tells the orchestrator to retry.

    The guard is the primary key of the processed-command row, written in the same transaction
    as the effects. Duplicates are rare, so the handler runs first and the record is inserted
    after it (no read before, no savepoint): a redelivered command fails that insert, its
    transaction rolls back whole, and the recorded reply answers it. A refusal rolls the
    handler's writes back the same way and is then recorded in a transaction of its own.
    """
    command = Command.from_message(message)
    try:
        try:
            try:
                return retry_on_conflict(lambda: _handle_and_record(command, alias, processed, handler, refusals))
            except _Refusal as refusal:
                return _record_alone(command, alias, processed, refusal.reply)
        except IntegrityError:  # the record exists: a redelivery, or a concurrent twin answered first
            recorded = _recorded(command, alias, processed)
            if recorded is None:
                raise  # not a redelivery: some other constraint, a technical failure
            _reply_now(command, recorded)
            return recorded
    except Exception as exc:  # technical: not recorded, the orchestrator retries this command id
        transient = isinstance(exc, TRANSIENT_ERRORS)
        logger.warning("command %s %s attempt %d failed (%s): %s", command.name, command.command_id, command.attempt, "transient" if transient else "not transient", exc, exc_info=not transient)
        reply = Reply(ERROR, error=f"{type(exc).__name__}: {exc}"[:500], transient=transient)
        _reply_now(command, reply)
        return reply


class _Refusal(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.error)
        self.reply = reply


def _handle_and_record(command: Command, alias: str, processed: type[ProcessedCommand], handler: Handler, refusals: tuple[type[Exception], ...]) -> Reply:
    """One transaction: the handler's reads, then its writes and the record held back and sent
    together at the end (``held_back``: one statement on PostgreSQL)."""
    with transaction.atomic(using=alias), held_back(alias) as writes:
        if command.compensates is not None and _tombstone(command, alias, processed):
            reply = Reply(OK, data={"tombstone": True, "note": "the forward command never took effect: nothing to undo, and it is refused if it arrives"})
            _record(command, alias, processed, reply)
            _send_writes(writes)
            return reply
        try:
            result = handler(command)
        except Refused as refusal:  # leaving the block rolls the handler's writes back
            raise _Refusal(Reply(REFUSED, reason=refusal.reason, error=str(refusal))) from refusal
        except (DomainError, *refusals) as refusal:  # type: ignore[misc]  # mypy cannot read a starred tuple of exception classes
            raise _Refusal(Reply(REFUSED, reason=type(refusal).__name__, error=str(refusal))) from refusal
        reply = result if isinstance(result, Reply) else Reply(OK, data=result)
        _record(command, alias, processed, reply)
        _send_writes(writes)
        return reply


def _send_writes(writes: WriteBatch) -> None:
    """The held-back writes; a taken stream version among them is the ``ConcurrencyError`` that
    ``retry_on_conflict`` runs the command again for, any other clash (the record's primary key:
    a redelivery) the ``IntegrityError`` that ``command_handle`` answers from the record."""
    try:
        writes.flush()
    except IntegrityError as exc:
        if is_version_conflict(exc):
            raise ConcurrencyError("another writer changed a stream this command wrote") from exc
        raise


def _record_alone(command: Command, alias: str, processed: type[ProcessedCommand], reply: Reply) -> Reply:
    """Record a refusal whose writes were rolled back (IntegrityError if already recorded)."""
    with transaction.atomic(using=alias):
        _record(command, alias, processed, reply)
        return reply


def _record(command: Command, alias: str, processed: type[ProcessedCommand], reply: Reply) -> None:
    """The processed-command row (its primary key is the command id), and the reply on commit."""
    row = {
        "command_id": command.command_id,
        "name": command.name,
        "saga_id": command.saga_id,
        "reply": {"outcome": reply.outcome, "data": reply.data, "reason": reply.reason, "error": reply.error},
        "processed_at": timezone.now(),
    }
    insert_rows(processed, alias, [row])
    if command.reply_to:
        send_task_on_commit(command.reply_to, using=alias, args=(reply.to_message(command),))


def _tombstone(command: Command, alias: str, processed: type[ProcessedCommand]) -> bool:
    """Claim the forward command's record for the compensation; ``True`` if it was free.

    ``ON CONFLICT DO NOTHING`` waits for a forward command that is recording itself right now
    (PostgreSQL) and then does nothing: the compensation sees its effects and undoes them.
    """
    assert command.compensates is not None
    row = {
        "command_id": command.compensates,
        "name": f"tombstone: {command.name} {command.command_id}"[:100],
        "saga_id": command.saga_id,
        "reply": {"outcome": REFUSED, "data": {}, "reason": COMPENSATED, "error": f"compensated by {command.name} before this command took effect", "transient": False},
        "processed_at": timezone.now(),
    }
    return insert_rows(processed, alias, [row], on_conflict_ignore=True) == 1


def _recorded(command: Command, alias: str, processed: type[ProcessedCommand]) -> Reply | None:
    recorded = processed.objects.using(alias).filter(command_id=command.command_id).values_list("reply", flat=True).first()
    return None if recorded is None else Reply(**recorded)


def _reply_now(command: Command, reply: Reply) -> None:
    if command.reply_to:
        send_task(command.reply_to, args=(reply.to_message(command),))
