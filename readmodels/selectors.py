"""Queries: they read the read-model tables only, through the cache (readmodels.cache).

Reads are eventually consistent. A caller that must see its own write passes the version it
got back as ``min_version``: the read then waits (up to ``READ_YOUR_WRITES_WAIT_SECONDS``) for
the projection to reach it, and answers what it has after that.

A wait holds its web process (a sync gunicorn worker serves one request at a time), so at most
``READ_YOUR_WRITES_MAX_WAITERS`` requests wait at once on one machine: beyond that a read
answers at once with what there is, and says so (``WAIT_NOT_WAITED``). A flood of waits for a
version that never comes can then hold that many workers and no more; the others keep serving
(bench/readyourwrites.py measures it). The slots are locks on files in ``RUN_DIR``, shared by
every process of the machine and released by the kernel when a holder dies.
"""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from django.conf import settings

from eventlog.selectors import log_head
from eventlog.subscriptions import subscriber_last_errors
from readmodels import cache
from readmodels.models import CustomerCredit, OrderSummary, ProjectionCheckpoint
from readmodels.projections import ALIAS, PROJECTIONS, subscriber_name

ORDER_FIELDS = ("id", "customer_id", "customer_name", "total", "state", "rejection_reason", "mode", "saga_id", "version", "created_at", "updated_at")
CUSTOMER_FIELDS = (
    "id", "name", "credit_limit", "credit_reserved", "available_credit", "version", "updated_at",
    "orders_pending", "orders_approved", "orders_rejected", "orders_cancel_pending", "orders_cancelled",
)


def _order_row(order_id: uuid.UUID) -> dict[str, Any] | None:
    return OrderSummary.objects.using(ALIAS).filter(id=order_id).values(*ORDER_FIELDS).first()


def _customer_row(customer_id: uuid.UUID) -> dict[str, Any] | None:
    return CustomerCredit.objects.using(ALIAS).filter(id=customer_id).values(*CUSTOMER_FIELDS).first()


#: What became of a ``min_version`` wait: the answer has the version (waited or not), the wait
#: ran out without it, or it did not wait because enough requests already wait.
WAIT_REACHED, WAIT_TIMED_OUT, WAIT_NOT_WAITED = "reached", "timed-out", "not-waited"


def _read(kind: str, key: uuid.UUID, load: Any, min_version: int | None) -> tuple[dict[str, Any] | None, str | None]:
    row = cache.cached(kind, key, "row", lambda: load(key))
    if min_version is None:
        return row, None
    if row is not None and row["version"] >= min_version:
        return row, WAIT_REACHED
    # Read-your-writes: wait for the projection, reading the table itself (not the cache).
    return _wait_for_row(load, key, lambda r: r["version"] >= min_version)


@functools.cache
def _slot_directory(run_dir: str) -> Path:
    directory = Path(run_dir) / "read-your-writes"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only checkout: the machine's temporary directory, per user
        directory = Path(tempfile.gettempdir()) / f"read-your-writes-{os.getuid()}"
        directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextmanager
def _wait_slot() -> Iterator[bool]:
    """Hold one of this machine's ``READ_YOUR_WRITES_MAX_WAITERS`` wait slots (True), or
    learn at once that all are taken (False). A slot is an exclusive ``flock`` on its file."""
    directory = _slot_directory(str(settings.RUN_DIR))
    for slot in range(settings.READ_YOUR_WRITES_MAX_WAITERS):
        fd = os.open(directory / f"slot-{slot}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield True
        finally:
            os.close(fd)  # releases the lock
        return
    yield False


def _wait_for_row(load: Callable[[uuid.UUID], dict[str, Any] | None], key: uuid.UUID, until: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any] | None, str]:
    """Wait (up to ``READ_YOUR_WRITES_WAIT_SECONDS``, if a wait slot is free) for ``load(key)``
    to give a row that satisfies ``until``; then answer what the table has, and how it went."""

    def probe() -> dict[str, Any] | None:
        row = load(key)
        return row if row is not None and until(row) else None

    with _wait_slot() as free:
        if not free:
            row = load(key)
            return row, WAIT_REACHED if row is not None and until(row) else WAIT_NOT_WAITED
        found = cache.wait_for(probe, timeout=settings.READ_YOUR_WRITES_WAIT_SECONDS)
    return (found, WAIT_REACHED) if found else (load(key), WAIT_TIMED_OUT)


def order_summary_read_ahead(order_id: str) -> AbstractContextManager[None]:
    """Around a request that will call :func:`order_summary_get`: its cache lookup then rides on
    the request's first round trip to the cache (readmodels.cache.read_ahead)."""
    try:
        key = uuid.UUID(order_id)
    except (TypeError, ValueError):
        return nullcontext()
    return cache.read_ahead("order", key, "row")


def order_summary_get(*, order_id: uuid.UUID, min_version: int | None = None) -> dict[str, Any] | None:
    return order_summary_read(order_id=order_id, min_version=min_version)[0]


def order_summary_read(*, order_id: uuid.UUID, min_version: int | None) -> tuple[dict[str, Any] | None, str | None]:
    """The row, and with ``min_version`` what became of its wait (``WAIT_*``)."""
    return _read("order", order_id, _order_row, min_version)


def customer_credit_get(*, customer_id: uuid.UUID, min_version: int | None = None) -> dict[str, Any] | None:
    return customer_credit_read(customer_id=customer_id, min_version=min_version)[0]


def customer_credit_read(*, customer_id: uuid.UUID, min_version: int | None) -> tuple[dict[str, Any] | None, str | None]:
    """The row, and with ``min_version`` what became of its wait (``WAIT_*``)."""
    return _read("customer", customer_id, _customer_row, min_version)


def order_summary_list(*, customer_id: uuid.UUID | None, state: str | None, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """One page of orders, newest first, and the total count; cached per filter and page."""

    def load() -> tuple[int, list[dict[str, Any]]]:
        queryset = OrderSummary.objects.using(ALIAS).all()
        if customer_id is not None:
            queryset = queryset.filter(customer_id=customer_id)
        if state is not None:
            queryset = queryset.filter(state=state)
        rows = list(queryset.order_by("-created_at", "id").values(*ORDER_FIELDS)[offset : offset + limit])
        return queryset.count(), rows

    return cache.cached("orders", None, f"{customer_id}:{state}:{offset}:{limit}", load)


def projection_status() -> list[dict[str, Any]]:
    """Each projection's position and lag behind the head of the log (not cached), and its
    last failure within the hour (``last_error``: ``{at, error}`` or ``None``)."""
    head = log_head()
    checkpoints = {c.subscriber: c for c in ProjectionCheckpoint.objects.using(ALIAS).all()}
    errors = subscriber_last_errors([subscriber_name(p) for p in PROJECTIONS.values()])
    status = []
    for projection in PROJECTIONS.values():
        name = subscriber_name(projection)
        checkpoint = checkpoints.get(name)
        position = checkpoint.position if checkpoint else 0
        status.append(
            {
                "name": projection.name,
                "position": position,
                "head": head,
                "lag": max(head - position, 0),
                "updated_at": checkpoint.updated_at if checkpoint else None,
                "rebuilding": f"{name}#rebuild" in checkpoints,
                "last_error": errors.get(name),
            }
        )
    return status

