"""The choreography trace: a live record of every choreographed flow, fed by the log.

In a choreography no one holds the state of a flow, which is what makes it hard to operate.
The trace is a subscriber of the central log in the ``sagas`` database (records and checkpoint
in one transaction, so each event is traced exactly once). It gives each flow (its saga id,
which every event of the flow carries, with its correlation id) a ``SagaInstance`` row with
``mode = "choreography"`` and the same states as an orchestrated saga, and a ``TraceEvent`` per
event: the flow's steps, in the log's order, which is causal order here (a reaction reads its
cause from the log before it records its answer).

What the flow awaits next comes from the reactions the contexts declare beside their handlers
(``eventlog.choreography``): after event E of flow F, the reactions on E owe one of their
``emits`` within ``within`` seconds. Past that deadline the flow is *stuck*; nothing in a
choreography is lost, only delayed, so the selector names the subscriber that owes the answer,
how far behind the log it is, and the error it parked the event with, if it did.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.utils import timezone

from eventlog.choreography import FlowStart, expected_after, flow_ends, flow_event_types, flow_starts, stream_context
from eventlog.domain import RecordedEvent
from eventlog.sql import insert_rows
from eventlog.subscriptions import Subscriber, subscriber_register
from sagas.engine import ALIAS
from sagas.models import SagaInstance, SagasCheckpoint, SagaState, TraceEvent

logger = logging.getLogger(__name__)
CHOREOGRAPHY = "choreography"
SUBSCRIBER = "sagas.choreography_trace"
#: The version of the declared flows a trace record was started under.
FLOW_VERSION = 1


def _awaiting(flow: str, event: RecordedEvent) -> tuple[dict[str, Any] | None, dt.datetime | None]:
    expected = expected_after(flow, event.type)
    if not expected:
        return None, None
    within = max(r.within for r in expected) * settings.SAGA_TIME_SCALE
    deadline = event.occurred_at + dt.timedelta(seconds=within)
    awaiting = {
        "step": " | ".join(e for r in expected for e in r.emits),
        "kind": "forward",
        "from_context": expected[0].context,
        "subscriber": expected[0].subscriber,
        "after": event.type,
        "since": event.occurred_at.isoformat(),
        "deadline": deadline.isoformat(),
    }
    return awaiting, deadline


def trace_events(events: list[RecordedEvent]) -> None:
    """Record each event of a choreographed flow in its flow's trace (inside the batch's
    transaction, on the ``sagas`` database)."""
    starts = {start.event: start for start in flow_starts()}
    ends = {(end.flow, end.event): end.state for end in flow_ends()}
    saga_ids = {e.saga_id for e in events if e.saga_id is not None}
    # No row lock: the trace is the only writer of choreography rows, and its runs are
    # serialised by its checkpoint's; orchestrated sagas' rows are not even read.
    flows = {saga.id: saga for saga in SagaInstance.objects.using(ALIAS).filter(id__in=saga_ids, mode=CHOREOGRAPHY)}
    for event in events:
        if event.saga_id is None:
            continue
        saga = flows.get(event.saga_id)
        if saga is None:
            start = starts.get(event.type)
            if start is None or not _choreographed(event, start):
                continue
            started = _start(event, start.flow)
            if started is None:
                continue
            saga = flows[started.id] = started
        insert_rows(
            TraceEvent,
            ALIAS,
            [
                {
                    "saga": saga.id, "position": event.position, "event_id": event.event_id, "type": event.type, "context": stream_context(event.stream_type),
                    "stream_id": event.stream_id, "occurred_at": event.occurred_at, "causation_id": event.causation_id,
                }
            ],
            on_conflict_ignore=True,
        )
        now = timezone.now()
        end = ends.get((saga.type, event.type))
        if end is not None:
            saga.state, saga.ended_at, saga.awaiting, saga.awaiting_deadline = end, now, None, None
            saga.last_error = "" if end == SagaState.COMPLETED else f"{event.type}: {event.data.get('reason') or ''}".strip(": ")
        else:
            saga.awaiting, saga.awaiting_deadline = _awaiting(saga.type, event)
        saga.version += 1
        saga.updated_at = now
        saga.save(using=ALIAS, update_fields=("state", "ended_at", "awaiting", "awaiting_deadline", "last_error", "version", "updated_at"))


def _choreographed(event: RecordedEvent, start: FlowStart) -> bool:
    if start.follows is None:
        return bool(event.data.get("mode") == CHOREOGRAPHY)
    return SagaInstance.objects.using(ALIAS).filter(subject_id=event.stream_id, type=start.follows, mode=CHOREOGRAPHY).exists()


def _start(event: RecordedEvent, flow: str) -> SagaInstance | None:
    now = timezone.now()
    saga = SagaInstance(
        id=event.saga_id, type=flow, mode=CHOREOGRAPHY, definition_version=FLOW_VERSION, state=SagaState.RUNNING, subject_id=event.stream_id,  # type: ignore[misc]  # the caller skips events without a saga id
        data={"order_id": str(event.stream_id), **{k: v for k, v in event.data.items() if k in ("customer_id", "total")}},
        correlation_id=event.correlation_id, version=0, last_error="", created_at=event.occurred_at, updated_at=now,
    )
    if not insert_rows(SagaInstance, ALIAS, [{f.attname: getattr(saga, f.attname) for f in SagaInstance._meta.concrete_fields}], on_conflict_ignore=True):
        # Another active saga holds the order (the one-active-saga-per-subject index): the
        # semantic locks make this impossible, so say so loudly instead of tracing half a flow.
        logger.error("trace: flow %s (%s) not started: another active saga holds order %s", saga.id, flow, saga.subject_id)
        return None
    saga._state.adding, saga._state.db = False, ALIAS
    return saga


def register() -> None:
    """Subscribe the trace to every event type a declared flow takes part in. Run by
    ``SagasConfig.ready``, which Django runs after the orders' and customers' (INSTALLED_APPS
    order), so their flows are declared by then; a check (``sagas.E002``) makes sure."""
    subscriber_register(
        Subscriber(name=SUBSCRIBER, alias=ALIAS, queue="sagas", checkpoint_model=SagasCheckpoint, handle=trace_events, types=flow_event_types())
    )

