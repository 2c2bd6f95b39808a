"""The shared kernel's domain vocabulary: events, aggregates, message context and money.

Pure Python with no framework import, so every context's domain module can build on it and be
tested without a database. Persistence lives in ``eventlog.persistence``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Self

# --- Money --------------------------------------------------------------------------------

CENT = Decimal("0.01")
_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
#: 12 digits before the point: far above any real credit limit, far below what breaks storage.
MONEY_MAX = Decimal("999999999999.99")


class DomainError(Exception):
    """A command broke a business rule; nothing was recorded.

    ``conflict``: the rule is about the state the aggregate is in (a semantic lock, "not now"),
    not about the input; the API answers 409 instead of 400. Each error says so itself, so the
    one exception handler needs to know no context.
    """

    conflict: ClassVar[bool] = False


class InvalidAmount(DomainError):
    pass


def money(value: Decimal | str | int) -> Decimal:
    """Parse an amount of money: positive-or-zero, at most two decimal places, bounded.

    Floats are refused on purpose: ``0.1 + 0.2`` is not a price.
    """
    if isinstance(value, float) or isinstance(value, bool):
        raise InvalidAmount(f"amount must be a decimal string, not {type(value).__name__}")
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value):
        # No exponents, signs, underscores or non-ASCII digits: "1e2" is not how a price is written.
        raise InvalidAmount(f"not a plain decimal amount such as \"125.00\": {value!r}")
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidAmount(f"not a decimal amount: {value!r}") from None
    if not amount.is_finite():
        raise InvalidAmount(f"not a finite amount: {value!r}")
    if amount < 0:
        raise InvalidAmount(f"amount must not be negative: {value!r}")
    if amount > MONEY_MAX:
        raise InvalidAmount(f"amount above {MONEY_MAX}: {value!r}")
    cents = amount.quantize(CENT)
    if cents != amount:
        raise InvalidAmount(f"more than two decimal places: {value!r}")
    return cents


def positive_money(value: Decimal | str | int) -> Decimal:
    amount = money(value)
    if amount == 0:
        raise InvalidAmount("amount must be greater than zero")
    return amount


# --- Events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainEvent:
    """A fact, named in the past tense; its dataclass fields are the payload.

    Subclasses register themselves by class name, which is the event ``type`` in the log.
    """

    registry: ClassVar[dict[str, type[DomainEvent]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        DomainEvent.registry[cls.__name__] = cls

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_data(self) -> dict[str, Any]:
        """The JSON payload: decimals and UUIDs become strings, so nothing is a float."""
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_data(cls, type_name: str, data: dict[str, Any]) -> DomainEvent:
        event_class = cls.registry[type_name]
        hints = {f.name: f.type for f in dataclasses.fields(event_class)}
        kwargs = {name: _from_json(str(hints[name]), value) for name, value in data.items() if name in hints}
        return event_class(**kwargs)


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value.quantize(CENT))
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _from_json(type_hint: str, value: Any) -> Any:
    if value is None:
        return None
    if "Decimal" in type_hint:
        return Decimal(value)
    if "UUID" in type_hint:
        return uuid.UUID(str(value))
    return value


@dataclass(frozen=True)
class MessageContext:
    """Who asked for a change: it becomes the metadata of every event the change records.

    ``correlation_id`` names the business transaction, ``causation_id`` the message that caused
    this one, ``saga_id`` the saga when one drives the change.
    """

    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    saga_id: uuid.UUID | None = None

    def caused_by(self, message_id: uuid.UUID) -> MessageContext:
        return dataclasses.replace(self, causation_id=message_id)


@dataclass(frozen=True)
class RecordedEvent:
    """An event with its metadata, as stored in a context's outbox and in the central log."""

    event_id: uuid.UUID
    stream_id: uuid.UUID
    stream_type: str
    version: int
    type: str
    data: dict[str, Any]
    occurred_at: dt.datetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    saga_id: uuid.UUID | None
    position: int | None = None

    @property
    def event(self) -> DomainEvent:
        return DomainEvent.from_data(self.type, self.data)


# --- Aggregates ---------------------------------------------------------------------------


class ConcurrencyError(Exception):
    """Another writer appended to the stream first; reload and try again."""


class Aggregate:
    """An event-sourced aggregate: commands record events, and ``apply`` alone changes state.

    ``version`` counts the events folded so far, recorded ones included; ``pending_events``
    pairs each new event with the version it will be stored under.
    """

    stream_type: ClassVar[str]

    def __init__(self, aggregate_id: uuid.UUID) -> None:
        self.id = aggregate_id
        self.version = 0
        self._pending: list[DomainEvent] = []

    def apply(self, event: DomainEvent) -> None:
        raise NotImplementedError

    @classmethod
    def fold(cls, aggregate_id: uuid.UUID, events: list[DomainEvent]) -> Self:
        """The aggregate's state is the fold of its events, oldest first."""
        aggregate = cls(aggregate_id)
        for event in events:
            aggregate.apply(event)
            aggregate.version += 1
        return aggregate

    def _record(self, event: DomainEvent) -> None:
        self.apply(event)
        self.version += 1
        self._pending.append(event)

    @property
    def pending_events(self) -> list[tuple[int, DomainEvent]]:
        first = self.version - len(self._pending) + 1
        return [(first + offset, event) for offset, event in enumerate(self._pending)]

    def mark_saved(self) -> None:
        self._pending.clear()
