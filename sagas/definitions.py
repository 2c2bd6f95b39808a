"""Saga definitions: reading one tells the whole story of a business transaction.

A definition is an ordered list of steps. Each step sends a command to a participant context
by name (never by import), may name a compensation, and has a retry policy and a timeout.
Definitions are versioned: an instance records the version it started with and finishes on it,
so changing a saga's code never breaks the instances already running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Data = dict[str, Any]


@dataclass(frozen=True)
class RetryPolicy:
    """Temporal's defaults, bounded: 1 s, doubling, capped at 100x the first interval."""

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
            on_refused=_rejection,  # INSUFFICIENT_CREDIT or UNKNOWN_CUSTOMER
        ),
        Step("approve_order", Action("orders.order_approve", _order)),
    ),
)

CANCEL_ORDER_V1 = SagaDefinition(
    type="cancel_order",
    version=1,
    steps=(
        Step("request_cancel", Action("orders.order_cancel_request", _order), compensation=Action("orders.order_cancel_revert", _order)),
        Step("release_credit", Action("customers.credit_release", _credit), compensation=Action("customers.credit_reserve", _credit)),
        Step("confirm_cancel", Action("orders.order_cancel_confirm", _order)),
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
