"""The Order aggregate and its life cycle.

``PENDING`` -> ``APPROVED`` | ``REJECTED``; ``APPROVED`` -> ``CANCEL_PENDING`` -> ``CANCELLED``,
or back to ``APPROVED`` when the cancel saga compensates. PENDING and CANCEL_PENDING are semantic
locks: nothing else may act on the order until its saga ends them. Pure Python.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from decimal import Decimal

from eventlog.domain import Aggregate, DomainError, DomainEvent, positive_money


class OrderState(enum.StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCEL_PENDING = "CANCEL_PENDING"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset({OrderState.APPROVED, OrderState.REJECTED, OrderState.CANCELLED})


class RejectionReason(enum.StrEnum):
    INSUFFICIENT_CREDIT = "INSUFFICIENT_CREDIT"
    UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"


class OrderMode(enum.StrEnum):
    ORCHESTRATION = "orchestration"
    CHOREOGRAPHY = "choreography"
    TWO_PHASE_COMMIT = "2pc"


@dataclass(frozen=True)
class OrderCreated(DomainEvent):
    customer_id: uuid.UUID
    total: Decimal
    mode: str


@dataclass(frozen=True)
class OrderApproved(DomainEvent):
    pass


@dataclass(frozen=True)
class OrderRejected(DomainEvent):
    #: Null when a saga gave up for a technical reason (a participant kept failing).
    reason: str | None


@dataclass(frozen=True)
class OrderCancelRequested(DomainEvent):
    pass


@dataclass(frozen=True)
class OrderCancelled(DomainEvent):
    pass


@dataclass(frozen=True)
class OrderCancelReverted(DomainEvent):
    pass


class InvalidOrderState(DomainError):
    """The order is not in a state that allows this command (HTTP 409)."""

    conflict = True

    def __init__(self, order_id: uuid.UUID, state: OrderState, action: str) -> None:
        super().__init__(f"order {order_id} is {state}; cannot {action}")
        self.order_id = order_id
        self.state = state
        self.action = action


class Order(Aggregate):
    stream_type = "Order"

    def __init__(self, aggregate_id: uuid.UUID) -> None:
        super().__init__(aggregate_id)
        self.customer_id: uuid.UUID | None = None
        self.total = Decimal("0.00")
        self.mode = OrderMode.ORCHESTRATION
        self.state = OrderState.PENDING
        self.rejection_reason: RejectionReason | None = None

    @classmethod
    def create(cls, *, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal | str, mode: OrderMode | str = OrderMode.ORCHESTRATION) -> Order:
        order = cls(order_id)
        order._record(OrderCreated(customer_id=customer_id, total=positive_money(total), mode=OrderMode(mode).value))
        return order

    def _move(self, *, allowed_from: OrderState, action: str, event: DomainEvent) -> None:
        # Strict on purpose: a repeated *command* is answered from the participant's record of
        # processed commands, so a second transition here is another saga breaking a lock.
        if self.state != allowed_from:
            raise InvalidOrderState(self.id, self.state, action)
        self._record(event)

    def approve(self) -> None:
        self._move(allowed_from=OrderState.PENDING, action="approve", event=OrderApproved())

    def reject(self, *, reason: RejectionReason | str | None) -> None:
        value = RejectionReason(reason).value if reason is not None else None
        self._move(allowed_from=OrderState.PENDING, action="reject", event=OrderRejected(reason=value))

    def cancel_request(self) -> None:
        self._move(allowed_from=OrderState.APPROVED, action="cancel", event=OrderCancelRequested())

    def cancel_confirm(self) -> None:
        self._move(allowed_from=OrderState.CANCEL_PENDING, action="confirm the cancel", event=OrderCancelled())

    def cancel_revert(self) -> None:
        self._move(allowed_from=OrderState.CANCEL_PENDING, action="revert the cancel", event=OrderCancelReverted())

    def apply(self, event: DomainEvent) -> None:
        match event:
            case OrderCreated(customer_id=customer_id, total=total, mode=mode):
                self.customer_id = customer_id
                self.total = total
                self.mode = OrderMode(mode)
                self.state = OrderState.PENDING
            case OrderApproved() | OrderCancelReverted():
                self.state = OrderState.APPROVED
            case OrderRejected(reason=reason):
                self.state = OrderState.REJECTED
                self.rejection_reason = RejectionReason(reason) if reason else None
            case OrderCancelRequested():
                self.state = OrderState.CANCEL_PENDING
            case OrderCancelled():
                self.state = OrderState.CANCELLED
            case _:
                raise TypeError(f"Order cannot apply {event.type}")
