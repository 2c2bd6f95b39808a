"""Who runs placing and cancelling an order, per mode: the one table the orders API dispatches on.

The orders context owns both use cases and their entry point (``orders.apis``). A mode that
another context runs (orchestration: a saga in ``sagas``) is plugged in here by the composition
root (``config/apps.py``), so this context names no other one: it only declares, as the
protocols below, what it needs from whoever runs a mode. A mode nobody runs yet answers 501.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Protocol

from eventlog.errors import NotImplementedYet
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


def order_workflow_use(mode: OrderMode, *, place: Placer, cancel: Canceller) -> None:
    """Plug in what runs ``mode`` (at start-up, from the composition root)."""
    _placers[mode] = place
    _cancellers[mode] = cancel


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
