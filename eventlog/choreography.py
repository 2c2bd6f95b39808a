"""Choreography, declared as data: which event each context reacts to, what it answers, how fast.

In a choreographed saga no one holds the state of a flow; the contexts react to each other's
events. Each context declares its reactions here, beside their handlers (``Reaction``): the
event it reacts to, the handler, the events the handler records in answer, and how long the
flow may wait for that answer before it counts as stuck. The flows' first events and last
events are declared the same way (``FlowStart``, ``FlowEnd``). The trace (sagas/trace.py) reads
these declarations to say, for every flow, which event it awaits next, from which context, and
since when: the reader of the code and the operator learn the flow from the same place.

The kernel only keeps the registry; it imports no context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventlog.domain import RecordedEvent
from eventlog.models import Checkpoint, ParkedEvent
from eventlog.subscriptions import Subscriber, subscriber_register

#: A reaction's effect: runs inside the subscriber's transaction, writes to its own database.
ReactionHandler = Callable[[RecordedEvent], None]


@dataclass(frozen=True)
class Reaction:
    flow: str
    #: The context that reacts (its subscriber is ``<context>.choreography``).
    context: str
    on: str
    emits: tuple[str, ...]
    handle: ReactionHandler
    #: Seconds the flow may wait for one of ``emits`` before it counts as stuck.
    within: float = 10.0
    #: What the event alone says about whether this reaction is for it (``None``: it may be):
    #: a pure test of the event, no database. An event it turns down is not handled at all, so
    #: costs no savepoint; the handler still decides for the events it lets through.
    applies: Callable[[RecordedEvent], bool] | None = None

    @property
    def subscriber(self) -> str:
        return subscriber_name(self.context)


@dataclass(frozen=True)
class FlowStart:
    """``event`` starts a flow of type ``flow`` when its payload has ``mode: "choreography"``,
    or, with ``follows``, when its stream's earlier flow of that type was choreographed (an
    ``OrderCancelRequested`` carries no payload: the order's create flow tells)."""

    flow: str
    event: str
    follows: str | None = None


@dataclass(frozen=True)
class FlowEnd:
    """``event`` ends a flow of type ``flow`` in ``state`` (a saga state)."""

    flow: str
    event: str
    state: str


_reactions: list[Reaction] = []
_starts: list[FlowStart] = []
_ends: list[FlowEnd] = []
#: stream type -> the context that writes it (what a trace shows as an event's origin).
_stream_contexts: dict[str, str] = {}


def subscriber_name(context: str) -> str:
    return f"{context}.choreography"


def choreography_register(*, context: str, stream_types: tuple[str, ...], reactions: tuple[Reaction, ...] = (), starts: tuple[FlowStart, ...] = (), ends: tuple[FlowEnd, ...] = ()) -> None:
    for stream_type in stream_types:
        _stream_contexts[stream_type] = context
    for item, registry in [*((r, _reactions) for r in reactions), *((s, _starts) for s in starts), *((e, _ends) for e in ends)]:
        if item not in registry:  # type: ignore[operator]  # mypy joins the three (item, registry) pairs to object
            registry.append(item)  # type: ignore[attr-defined]  # mypy joins the three (item, registry) pairs to object


def stream_context(stream_type: str) -> str:
    return _stream_contexts.get(stream_type, "")


def flow_starts() -> list[FlowStart]:
    return list(_starts)


def flow_ends() -> list[FlowEnd]:
    return list(_ends)


def expected_after(flow: str, event_type: str) -> list[Reaction]:
    """The reactions a flow waits for once ``event_type`` has happened in it."""
    return [r for r in _reactions if r.flow == flow and r.on == event_type]


def flow_event_types() -> frozenset[str]:
    """Every event type that takes part in some flow: what the trace subscribes to."""
    return frozenset({r.on for r in _reactions} | {e for r in _reactions for e in r.emits} | {s.event for s in _starts} | {e.event for e in _ends})


def choreography_subscribe(
    *,
    context: str,
    alias: str,
    checkpoint_model: type[Checkpoint],
    parked_model: type[ParkedEvent],
    stream_types: tuple[str, ...],
    reactions: tuple[Reaction, ...],
    starts: tuple[FlowStart, ...] = (),
    ends: tuple[FlowEnd, ...] = (),
) -> None:
    """Declare a context's part in the flows and subscribe its reactions to the log, as one
    subscriber (``<context>.choreography``) on the context's own database and queue, that
    handles each event on its own and parks one that keeps failing."""
    choreography_register(context=context, stream_types=stream_types, reactions=reactions, starts=starts, ends=ends)
    by_type = {reaction.on: reaction.handle for reaction in reactions}
    tests = {reaction.on: reaction.applies for reaction in reactions if reaction.applies is not None}

    def handle(events: list[RecordedEvent]) -> None:
        for event in events:
            by_type[event.type](event)

    def wants(event: RecordedEvent) -> bool:
        applies = tests.get(event.type)
        return applies is None or applies(event)

    subscriber_register(
        Subscriber(
            name=subscriber_name(context),
            alias=alias,
            queue=context,
            checkpoint_model=checkpoint_model,
            handle=handle,
            types=frozenset(by_type),
            wants=wants if tests else None,
            parked_model=parked_model,
        )
    )
