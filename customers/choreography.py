"""How the customers context takes part in choreographed sagas: its reactions, declared as data.

No coordinator asks this context for anything: it reads the central log (a subscriber, in the
customers database, effects and checkpoint in one transaction) and answers the orders
context's events with its own. Each reaction keeps the flow's correlation and saga ids and
names the event it answers as the causation of what it records. Orders of an orchestrated
saga are left to their saga: their ``OrderCreated`` says so, and only orders reserved here
are released here.
"""

from __future__ import annotations

import uuid

from customers import services
from customers.domain import CreditCheck
from customers.models import ChoreographedOrder, CustomersCheckpoint, CustomersParkedEvent
from customers.repository import ALIAS, customer_repository
from eventlog.choreography import Reaction, choreography_subscribe
from eventlog.domain import MessageContext, RecordedEvent

CHOREOGRAPHY = "choreography"
CONTEXT = "customers"


def _answering(event: RecordedEvent) -> MessageContext:
    return MessageContext(correlation_id=event.correlation_id, causation_id=event.event_id, saga_id=event.saga_id)


def credit_reserve_for_order(event: RecordedEvent) -> None:
    """``OrderCreated`` (choreography) -> ``CreditReserved`` or ``CreditReservationFailed``."""
    if event.data.get("mode") != CHOREOGRAPHY:
        return
    order_id, customer_id, total = event.stream_id, uuid.UUID(event.data["customer_id"]), event.data["total"]
    try:
        result = services.credit_reserve(customer_id=customer_id, order_id=order_id, amount=total, context=_answering(event))
    except services.CustomerNotFound:
        customer_repository.store.append(aggregate=CreditCheck.unknown_customer(order_id=order_id, amount=total), context=_answering(event))
        return
    if result.reserved:
        ChoreographedOrder.objects.using(ALIAS).get_or_create(order_id=order_id, defaults={"customer_id": customer_id, "total": total})


def credit_release_for_cancel(event: RecordedEvent) -> None:
    """``OrderCancelRequested`` of a choreographed order -> ``CreditReleased``."""
    order = ChoreographedOrder.objects.using(ALIAS).filter(order_id=event.stream_id).first()
    if order is None:
        return  # an orchestrated order: its cancel saga releases the credit
    services.credit_release(customer_id=order.customer_id, order_id=order.order_id, context=_answering(event))


REACTIONS = (
    Reaction(
        flow="create_order", context=CONTEXT, on="OrderCreated", emits=("CreditReserved", "CreditReservationFailed"), handle=credit_reserve_for_order,
        applies=lambda event: event.data.get("mode") == CHOREOGRAPHY,  # an orchestrated order's saga reserves its credit
    ),
    Reaction(flow="cancel_order", context=CONTEXT, on="OrderCancelRequested", emits=("CreditReleased",), handle=credit_release_for_cancel),
)


def register() -> None:
    """Declare the reactions and subscribe their handler to the log (``CustomersConfig.ready``)."""
    choreography_subscribe(
        context=CONTEXT, alias=ALIAS, checkpoint_model=CustomersCheckpoint, parked_model=CustomersParkedEvent, stream_types=("Customer", "CreditCheck"), reactions=REACTIONS
    )
