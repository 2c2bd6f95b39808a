"""How the orders context takes part in choreographed sagas: its reactions, declared as data.

The orders context starts both flows (``OrderCreated`` in mode ``choreography``, and
``OrderCancelRequested`` of such an order) and ends them, reacting to the customers context's
answers. Each reaction is a subscriber of the central log in the orders database (effects and
checkpoint in one transaction), keeps the flow's correlation and saga ids and names the event
it answers as the causation. Orders of orchestrated sagas are left to their saga.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from eventlog.choreography import FlowEnd, FlowStart, Reaction, choreography_subscribe
from eventlog.domain import MessageContext, RecordedEvent
from eventlog.errors import Conflict
from eventlog.http import IdempotencyKey
from eventlog.idempotency import idempotent_start
from orders import services
from orders.domain import InvalidOrderState, OrderMode, OrderState
from orders.models import Order, OrdersCheckpoint, OrdersIdempotencyRecord, OrdersParkedEvent
from orders.repository import ALIAS

CONTEXT = "orders"


@dataclass(frozen=True)
class FlowStarted:
    """A choreographed flow under way: its id is the ``saga_id`` of all its events and its trace."""

    order_id: uuid.UUID
    saga_id: uuid.UUID
    replayed: bool = False
    #: Placing and cancelling go on after the answer: there is no final state to give yet.
    outcome: None = None


def order_choreography_place(*, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal, mode: str, idempotency: IdempotencyKey | None) -> FlowStarted:
    """Record the PENDING order (``OrderCreated``, mode ``choreography``): the customers context
    takes it from there. No one else is asked; the flow's id names the trace that follows it."""

    def start() -> FlowStarted:
        flow_id = uuid.uuid4()
        services.order_create(order_id=order_id, customer_id=customer_id, total=total, mode=OrderMode.CHOREOGRAPHY, context=MessageContext(correlation_id=flow_id, saga_id=flow_id))
        return FlowStarted(order_id=order_id, saga_id=flow_id)

    return idempotent_start(
        idempotency,
        alias=ALIAS,
        records=OrdersIdempotencyRecord,
        start=start,
        body=lambda started: {"id": str(started.order_id), "saga_id": str(started.saga_id)},
        replay=lambda body: FlowStarted(order_id=uuid.UUID(body["id"]), saga_id=uuid.UUID(body["saga_id"]), replayed=True),
    )


def order_choreography_cancel(*, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal) -> FlowStarted:
    """Record ``OrderCancelRequested`` (the order becomes CANCEL_PENDING, a semantic lock): the
    customers context releases the credit, and this context confirms the cancel."""
    flow_id = uuid.uuid4()
    try:
        services.order_cancel_request(order_id=order_id, context=MessageContext(correlation_id=flow_id, saga_id=flow_id))
    except InvalidOrderState as exc:
        raise Conflict(str(exc), {"order_id": str(order_id)}) from None
    return FlowStarted(order_id=order_id, saga_id=flow_id)


def _choreographed(order_id: uuid.UUID) -> bool:
    return Order.objects.using(ALIAS).filter(id=order_id, mode=OrderMode.CHOREOGRAPHY.value).exists()


def _answering(event: RecordedEvent) -> MessageContext:
    return MessageContext(correlation_id=event.correlation_id, causation_id=event.event_id, saga_id=event.saga_id)


def _order_id(event: RecordedEvent) -> uuid.UUID:
    return uuid.UUID(event.data["order_id"])


def order_approve_on_credit(event: RecordedEvent) -> None:
    """``CreditReserved`` -> ``OrderApproved``."""
    if _choreographed(_order_id(event)):
        services.order_approve(order_id=_order_id(event), context=_answering(event))


def order_reject_on_refusal(event: RecordedEvent) -> None:
    """``CreditReservationFailed`` (INSUFFICIENT_CREDIT, UNKNOWN_CUSTOMER) -> ``OrderRejected``."""
    if _choreographed(_order_id(event)):
        services.order_reject(order_id=_order_id(event), reason=event.data["reason"], context=_answering(event))


def order_cancel_on_release(event: RecordedEvent) -> None:
    """``CreditReleased`` -> ``OrderCancelled``."""
    if _choreographed(_order_id(event)):
        services.order_cancel_confirm(order_id=_order_id(event), context=_answering(event))


REACTIONS = (
    Reaction(flow="create_order", context=CONTEXT, on="CreditReserved", emits=("OrderApproved",), handle=order_approve_on_credit),
    Reaction(flow="create_order", context=CONTEXT, on="CreditReservationFailed", emits=("OrderRejected",), handle=order_reject_on_refusal),
    Reaction(flow="cancel_order", context=CONTEXT, on="CreditReleased", emits=("OrderCancelled",), handle=order_cancel_on_release),
)
STARTS = (FlowStart("create_order", "OrderCreated"), FlowStart("cancel_order", "OrderCancelRequested", follows="create_order"))
#: A rejection ends the flow COMPENSATED, as an orchestrated saga that compensated would.
ENDS = (FlowEnd("create_order", "OrderApproved", "COMPLETED"), FlowEnd("create_order", "OrderRejected", "COMPENSATED"), FlowEnd("cancel_order", "OrderCancelled", "COMPLETED"))


def register() -> None:
    """Declare the flows and reactions and subscribe the handler to the log (``OrdersConfig.ready``)."""
    choreography_subscribe(
        context=CONTEXT, alias=ALIAS, checkpoint_model=OrdersCheckpoint, parked_model=OrdersParkedEvent, stream_types=("Order",), reactions=REACTIONS, starts=STARTS, ends=ENDS
    )


def order_choreography_in_flight() -> int:
    """Choreographed orders still on their way (PENDING or CANCEL_PENDING), by a partial index."""
    return Order.objects.using(ALIAS).filter(mode=OrderMode.CHOREOGRAPHY.value, state__in=(OrderState.PENDING.value, OrderState.CANCEL_PENDING.value)).count()
