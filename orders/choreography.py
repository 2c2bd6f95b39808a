"""How the orders context takes part in choreographed sagas: its reactions, declared as data.

The orders context starts both flows (``OrderCreated`` in mode ``choreography``, and
``OrderCancelRequested`` of such an order) and ends them, reacting to the customers context's
answers. Each reaction is a subscriber of the central log in the orders database (effects and
checkpoint in one transaction), keeps the flow's correlation and saga ids and names the event
it answers as the causation. Orders of orchestrated sagas are left to their saga.
"""

from __future__ import annotations

import uuid

from eventlog.choreography import FlowEnd, FlowStart, Reaction, choreography_register, reactions, subscriber_name
from eventlog.domain import MessageContext, RecordedEvent
from eventlog.subscriptions import Subscriber, subscriber_register
from orders import services
from orders.domain import OrderMode
from orders.models import Order, OrdersCheckpoint, OrdersParkedEvent
from orders.repository import ALIAS

CONTEXT = "orders"


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


def _handle(events: list[RecordedEvent]) -> None:
    by_type = {reaction.on: reaction.handle for reaction in reactions(context=CONTEXT)}
    for event in events:
        by_type[event.type](event)


def register() -> None:
    """Declare the flows and reactions and subscribe the handler to the log (``OrdersConfig.ready``)."""
    choreography_register(context=CONTEXT, stream_types=("Order",), reactions=REACTIONS, starts=STARTS, ends=ENDS)
    subscriber_register(
        Subscriber(
            name=subscriber_name(CONTEXT),
            alias=ALIAS,
            queue=CONTEXT,
            checkpoint_model=OrdersCheckpoint,
            handle=_handle,
            types=frozenset(reaction.on for reaction in REACTIONS),
            parked_model=OrdersParkedEvent,
        )
    )
