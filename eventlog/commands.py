"""Commands between contexts: the message, the reply, and idempotent handling by participants.

A command is a Celery task named ``<context>.<action>`` on the target context's queue. Its one
argument is a JSON message; the participant answers by sending the reply task named in
``reply_to``. Handling is idempotent: the command id is recorded with its reply in the same
transaction as the effects, so a redelivered command gets the same reply and changes nothing.

Outcomes: ``ok``; ``refused`` (a business answer, final, recorded: insufficient credit, unknown
customer, a state that forbids the action); ``error`` (a technical failure, not recorded: the
orchestrator retries the same command id with backoff).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from eventlog.domain import DomainError, MessageContext
from eventlog.messaging import send_task, send_task_on_commit
from eventlog.models import ProcessedCommand
from eventlog.persistence import retry_on_conflict
from eventlog.sql import insert_rows

logger = logging.getLogger(__name__)

OK = "ok"
REFUSED = "refused"
ERROR = "error"


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

    def to_message(self, command: Command) -> dict[str, Any]:
        return {
            "command_id": str(command.command_id),
            "saga_id": str(command.saga_id) if command.saga_id else None,
            "step": command.step,
            "outcome": self.outcome,
            "data": self.data,
            "reason": self.reason,
            "error": self.error,
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
        logger.warning("command %s %s failed: %s", command.name, command.command_id, exc, exc_info=True)
        reply = Reply(ERROR, error=f"{type(exc).__name__}: {exc}"[:500])
        _reply_now(command, reply)
        return reply


class _Refusal(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.error)
        self.reply = reply


def _handle_and_record(command: Command, alias: str, processed: type[ProcessedCommand], handler: Handler, refusals: tuple[type[Exception], ...]) -> Reply:
    with transaction.atomic(using=alias):
        try:
            result = handler(command)
        except Refused as refusal:  # leaving the block rolls the handler's writes back
            raise _Refusal(Reply(REFUSED, reason=refusal.reason, error=str(refusal))) from refusal
        except (DomainError, *refusals) as refusal:
            raise _Refusal(Reply(REFUSED, reason=type(refusal).__name__, error=str(refusal))) from refusal
        reply = result if isinstance(result, Reply) else Reply(OK, data=result)
        _record(command, alias, processed, reply)
        return reply


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


def _recorded(command: Command, alias: str, processed: type[ProcessedCommand]) -> Reply | None:
    recorded = processed.objects.using(alias).filter(command_id=command.command_id).values_list("reply", flat=True).first()
    return None if recorded is None else Reply(**recorded)


def _reply_now(command: Command, reply: Reply) -> None:
    if command.reply_to:
        send_task(command.reply_to, args=(reply.to_message(command),))
