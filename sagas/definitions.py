"""Saga definitions: reading one tells the whole story of a business transaction.

A definition is an ordered list of steps. Each step sends a command to a participant context
by name (never by import), has a role, a retry policy and a timeout, and (if it can be undone)
a compensation. The roles are Garcia-Molina's and Richardson's:

- **compensatable** steps come first; each names the compensation that undoes it;
- the **pivot** is the go/no-go step: its refusal compensates the steps before it, its success
  commits the saga to finishing;
- **retriable** steps come after the pivot; they are retried until they succeed and are never
  compensated, because the transaction has already succeeded.

``definition_problems`` states these rules; a system check (``sagas.E001``) runs it over
every definition, so a saga that could undo half a committed transaction never starts.
Definitions are versioned: an instance records the version it started with and finishes on it,
so changing a saga's code never breaks the instances already running.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Data = dict[str, Any]


class Role(enum.StrEnum):
    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"


@dataclass(frozen=True)
class RetryPolicy:
    """Temporal's defaults: 1 s, doubling, capped at 100x the first interval.

    ``max_attempts`` bounds only what may be given up: a compensatable step or the pivot
    failing for a reason that is not transient, or a compensation failing that way (then the
    saga is FAILED, for an operator). A transient failure (a database or broker unreachable,
    no reply by the deadline) gives up a step only after ``SAGA_OUTAGE_BUDGET_SECONDS``;
    retriable steps and transient failures of compensations are retried without end.
    """

    max_attempts: int = 5
    initial_interval: float = 1.0
    backoff: float = 2.0
    maximum_interval: float = 100.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.initial_interval * self.backoff ** (attempt - 1), self.maximum_interval)


@dataclass(frozen=True)
class Action:
    """A command to a participant: its task name (``<context>.<action>``) and its payload."""

    command: str
    payload: Callable[[Data], Data]

    @property
    def queue(self) -> str:
        return self.command.split(".", 1)[0]


@dataclass(frozen=True)
class Step:
    name: str
    action: Action
    compensation: Action | None = None
    role: Role = Role.COMPENSATABLE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Seconds to wait for a reply before the attempt counts as failed.
    timeout: float = 10.0
    #: What a business refusal of this step means for the saga's data (e.g. a rejection reason).
    on_refused: Callable[[Data, str], Data] | None = None


@dataclass(frozen=True)
class SagaDefinition:
    type: str
    version: int
    steps: tuple[Step, ...]

    def step(self, index: int) -> Step:
        return self.steps[index]

    @property
    def pivot_index(self) -> int:
        return next(i for i, step in enumerate(self.steps) if step.role == Role.PIVOT)


def definition_problems(definition: SagaDefinition) -> list[str]:
    """What makes ``definition`` unsafe: the rules of compensatable, pivot and retriable steps."""
    problems: list[str] = []
    pivots = [i for i, step in enumerate(definition.steps) if step.role == Role.PIVOT]
    if len(pivots) != 1:
        return [f"needs exactly one pivot step, has {len(pivots)}"]
    for index, step in enumerate(definition.steps):
        where = f"step {index} ({step.name}, {step.role})"
        if index < pivots[0] and step.role != Role.COMPENSATABLE:
            problems.append(f"{where} comes before the pivot, so it must be compensatable")
        if index > pivots[0] and step.role != Role.RETRIABLE:
            problems.append(f"{where} comes after the pivot, so it must be retriable")
        if step.role == Role.RETRIABLE and step.compensation is not None:
            problems.append(f"{where} is retriable, so it must not have a compensation: it runs after the point of no return")
        if step.role != Role.RETRIABLE and step.compensation is None:
            # The pivot too: if its outcome stays unknown, it is compensated with the rest.
            problems.append(f"{where} needs a compensation")
    return problems


def _order(data: Data) -> Data:
    return {"order_id": data["order_id"]}


def _credit(data: Data) -> Data:
    return {"customer_id": data["customer_id"], "order_id": data["order_id"], "amount": data["total"]}


def _rejection(data: Data, reason: str) -> Data:
    return {**data, "rejection_reason": reason}


CREATE_ORDER_V1 = SagaDefinition(
    type="create_order",
    version=1,
    steps=(
        Step(
            "create_order",
            Action("orders.order_create", lambda d: {"order_id": d["order_id"], "customer_id": d["customer_id"], "total": d["total"], "mode": d["mode"]}),
            compensation=Action("orders.order_reject", lambda d: {"order_id": d["order_id"], "reason": d.get("rejection_reason")}),
        ),
        Step(
            "reserve_credit",
            Action("customers.credit_reserve", _credit),
            compensation=Action("customers.credit_release", _credit),
            role=Role.PIVOT,
            on_refused=_rejection,  # INSUFFICIENT_CREDIT or UNKNOWN_CUSTOMER
        ),
        Step("approve_order", Action("orders.order_approve", _order), role=Role.RETRIABLE),
    ),
)

CANCEL_ORDER_V1 = SagaDefinition(
    type="cancel_order",
    version=1,
    steps=(
        Step("request_cancel", Action("orders.order_cancel_request", _order), compensation=Action("orders.order_cancel_revert", _order)),
        Step("release_credit", Action("customers.credit_release", _credit), compensation=Action("customers.credit_reserve", _credit), role=Role.PIVOT),
        Step("confirm_cancel", Action("orders.order_cancel_confirm", _order), role=Role.RETRIABLE),
    ),
)

#: Every version that may still have running instances; the last of each type starts new ones.
DEFINITIONS: dict[tuple[str, int], SagaDefinition] = {(d.type, d.version): d for d in (CREATE_ORDER_V1, CANCEL_ORDER_V1)}


def definition_get(saga_type: str, version: int | None = None) -> SagaDefinition:
    if version is None:
        version = max(v for t, v in DEFINITIONS if t == saga_type)
    try:
        return DEFINITIONS[(saga_type, version)]
    except KeyError:
        raise LookupError(f"no saga definition {saga_type} v{version}") from None
