"""The orchestrator's public use cases: start the saga that places an order, or cancels one.

Other contexts never import this module; the composition root (``config/apps.py``) plugs these
functions into the orders context's ``orders.workflows`` table, whose protocols they satisfy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from eventlog.errors import Conflict
from eventlog.http import IdempotencyKey
from eventlog.idempotency import idempotent_start
from sagas.engine import ALIAS, SagaConflict, saga_start
from sagas.models import ACTIVE_STATES, IdempotencyRecord, SagaInstance


@dataclass(frozen=True)
class SagaStarted:
    order_id: uuid.UUID
    saga_id: uuid.UUID
    #: A repeat of an earlier request (same ``Idempotency-Key``): this is the first one's saga.
    replayed: bool = False
    #: Placing and cancelling go on after the answer: there is no final state to give yet.
    outcome: None = None


def order_saga_place(*, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal, mode: str, idempotency: IdempotencyKey | None) -> SagaStarted:
    """Start the create-order saga; its first step creates the PENDING order.

    With ``idempotency``, the record of this start is written in the same transaction as the
    saga, so a crash cannot leave a saga without its record or a record without its saga; a
    repeat of the request answers with the first start.
    """

    def start() -> SagaStarted:
        data = {"order_id": str(order_id), "customer_id": str(customer_id), "total": f"{total:.2f}", "mode": mode}
        saga = saga_start(saga_type="create_order", subject_id=order_id, data=data)
        return SagaStarted(order_id=order_id, saga_id=saga.id)

    return idempotent_start(
        idempotency,
        alias=ALIAS,
        records=IdempotencyRecord,
        start=start,
        body=lambda started: {"id": str(started.order_id), "saga_id": str(started.saga_id)},
        replay=lambda body: SagaStarted(order_id=uuid.UUID(body["id"]), saga_id=uuid.UUID(body["saga_id"]), replayed=True),
    )


def order_saga_cancel(*, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal) -> SagaStarted:
    """Start the cancel-order saga; ``Conflict`` if another saga holds the order."""
    data = {"order_id": str(order_id), "customer_id": str(customer_id), "total": f"{total:.2f}"}
    try:
        saga = saga_start(saga_type="cancel_order", subject_id=order_id, data=data)
    except SagaConflict as exc:
        raise Conflict(str(exc), {"order_id": str(order_id)}) from None
    return SagaStarted(order_id=order_id, saga_id=saga.id)


def order_sagas_in_flight() -> int:
    """Orchestrated sagas under way (RUNNING or COMPENSATING): what admission control counts."""
    return SagaInstance.objects.using(ALIAS).filter(mode="orchestration", state__in=ACTIVE_STATES).count()


def order_saga_placing(order_id: uuid.UUID) -> bool:
    """Whether a create-order saga for ``order_id`` is under way: until its first step has run,
    the orders context has no row for the order, which its client was told is PENDING."""
    return SagaInstance.objects.using(ALIAS).filter(subject_id=order_id, type="create_order", mode="orchestration", state__in=ACTIVE_STATES).exists()
