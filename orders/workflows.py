"""Who runs placing and cancelling an order, per mode: the one table the orders API dispatches on.

The orders context owns both use cases and their entry point (``orders.apis``). A mode that
another context runs (orchestration: a saga in ``sagas``) is plugged in here by the composition
root (``config/apps.py``), so this context names no other one: it only declares, as the
protocols below, what it needs from whoever runs a mode. A mode nobody runs yet answers 501.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings

from eventlog.errors import NotImplementedYet, Unavailable
from eventlog.http import IdempotencyKey
from orders.domain import OrderMode


class Started(Protocol):
    """What a mode answers when it has taken the order on (the saga that will carry it out).

    A mode that finishes before it answers (2PC) gives the order's final ``outcome``:
    ``{"state", "rejection_reason", "version"}``; the asynchronous ones give ``None``.
    """

    @property
    def order_id(self) -> uuid.UUID: ...
    @property
    def saga_id(self) -> uuid.UUID: ...
    @property
    def replayed(self) -> bool: ...
    @property
    def outcome(self) -> dict[str, Any] | None: ...


class Placer(Protocol):
    """Start placing the order ``order_id`` (PENDING first); with ``idempotency``, answer a
    repeat of the same request with the first start, recorded in the same transaction."""

    def __call__(self, *, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal, mode: str, idempotency: IdempotencyKey | None) -> Started: ...


class Canceller(Protocol):
    """Start cancelling an APPROVED order; raises ``eventlog.errors.Conflict`` if something
    else holds the order (a semantic lock)."""

    def __call__(self, *, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal) -> Started: ...


_placers: dict[OrderMode, Placer] = {}
_cancellers: dict[OrderMode, Canceller] = {}
#: How many transactions of a mode are on their way (begun, not ended): admission control.
_in_flight: dict[OrderMode, Callable[[], int]] = {}
#: Whether an order this context has no row for yet is being placed (its saga has not run the
#: step that creates it): such an order is PENDING to its client, not unknown.
_placing: dict[OrderMode, Callable[[uuid.UUID], bool]] = {}


def order_workflow_use(
    mode: OrderMode, *, place: Placer, cancel: Canceller, in_flight: Callable[[], int] | None = None, placing: Callable[[uuid.UUID], bool] | None = None
) -> None:
    """Plug in what runs ``mode`` (at start-up, from the composition root). ``in_flight``
    counts its transactions under way, for a mode that works after it answers; ``placing``
    says whether an order is on its way before this context has recorded it."""
    _placers[mode] = place
    _cancellers[mode] = cancel
    if in_flight is not None:
        _in_flight[mode] = in_flight
    if placing is not None:
        _placing[mode] = placing


def order_being_placed(order_id: uuid.UUID) -> bool:
    """Whether a mode has taken ``order_id`` on and not recorded the order in this context yet."""
    return any(placing(order_id) for placing in _placing.values())


class Overloaded(Unavailable):
    """Too many transactions of this mode are on their way: come back later (503 + Retry-After)."""


_counted: dict[OrderMode, tuple[float, int]] = {}
_counting = threading.Lock()


def order_admission_check(mode: OrderMode) -> None:
    """Refuse a new transaction while ``ADMISSION_MAX_IN_FLIGHT`` of its mode are on their way.

    A burst larger than a few seconds of throughput would otherwise queue behind itself until
    its steps time out and are retried, and retries under overload feed the overload. A refusal
    is cheap and changes nothing; ``Retry-After`` tells a client when to try again. The count is
    read at most every ``ADMISSION_RECOUNT_SECONDS`` per process (it may admit that long's
    arrivals past the limit), so admission costs one indexed count per interval, not per request.
    """
    count = _in_flight.get(mode)
    limit = int(settings.ADMISSION_MAX_IN_FLIGHT)
    if count is None or limit <= 0:
        return
    now = time.monotonic()
    with _counting:
        at, value = _counted.get(mode, (-math.inf, 0))
        if now - at >= float(settings.ADMISSION_RECOUNT_SECONDS):
            value = count()
            _counted[mode] = (now, value)
    if value >= limit:
        retry_after = max(1, math.ceil(float(settings.ADMISSION_RETRY_AFTER_SECONDS)))
        raise Overloaded(
            f"{value} {mode.value} transactions are on their way (the limit is {limit}); try again in {retry_after} s.",
            {"mode": mode.value, "in_flight": value, "limit": limit, "retry_after_seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


def _not_yet(mode: OrderMode) -> NotImplementedYet:
    return NotImplementedYet(f"mode {mode.value!r} arrives with its own issue; use " + " or ".join(repr(m.value) for m in _placers) + ".", {"mode": mode.value})


def order_placer(mode: OrderMode) -> Placer:
    try:
        return _placers[mode]
    except KeyError:
        raise _not_yet(mode) from None


def order_canceller(mode: OrderMode) -> Canceller:
    try:
        return _cancellers[mode]
    except KeyError:
        raise _not_yet(mode) from None
