"""Queries go through the cache, and never serve an answer older than the projection."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.core.cache import cache as django_cache
from django.db import connections
from django.test.utils import CaptureQueriesContext

from eventlog.domain import MessageContext
from orders.services import order_approve, order_create
from readmodels import cache, selectors
from readmodels.rebuild import projection_rebuild
from tests.readmodels.helpers import relay_and_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def pending_order() -> uuid.UUID:
    order = order_create(customer_id=uuid.uuid4(), total="12.00", mode="orchestration", context=MessageContext())
    relay_and_project()
    return order.id


def test_a_repeated_read_is_served_from_the_cache() -> None:
    order_id = pending_order()
    assert selectors.order_summary_get(order_id=order_id)["state"] == "PENDING"  # type: ignore[index]
    with CaptureQueriesContext(connections["readmodels"]) as queries:
        assert selectors.order_summary_get(order_id=order_id)["state"] == "PENDING"  # type: ignore[index]
    assert len(queries) == 0


def test_a_read_after_the_projection_applied_an_update_is_fresh() -> None:
    order_id = pending_order()
    assert selectors.order_summary_get(order_id=order_id)["version"] == 1  # type: ignore[index]
    listed = selectors.order_summary_list(customer_id=None, state="PENDING", offset=0, limit=10)
    assert listed[0] == 1
    order_approve(order_id=order_id, context=MessageContext())
    relay_and_project()
    row = selectors.order_summary_get(order_id=order_id)
    assert row is not None and (row["state"], row["version"]) == ("APPROVED", 2)
    assert selectors.order_summary_list(customer_id=None, state="PENDING", offset=0, limit=10)[0] == 0


def test_a_reader_that_loaded_before_the_update_cannot_cache_a_stale_answer() -> None:
    """The race: a reader reads the old row, the projection commits, then the reader stores."""
    order_id = pending_order()
    order_approve(order_id=order_id, context=MessageContext())

    def project_in_another_process_like_thread() -> None:
        try:
            relay_and_project()
        finally:
            connections.close_all()

    def slow_load(key: Any) -> dict[str, Any] | None:
        row = selectors._order_row(key)  # the old row, read before the projection commits
        worker = threading.Thread(target=project_in_another_process_like_thread)
        worker.start()
        worker.join()
        return row

    stale = cache.cached("order", order_id, "row", lambda: slow_load(order_id))
    assert stale is not None and stale["state"] == "PENDING"
    fresh = selectors.order_summary_get(order_id=order_id)
    assert fresh is not None and fresh["state"] == "APPROVED"


def test_a_replay_swap_invalidates_every_cached_answer() -> None:
    order_id = pending_order()
    assert selectors.order_summary_get(order_id=order_id) is not None
    from readmodels.models import OrderSummary

    OrderSummary.objects.using("readmodels").filter(id=order_id).update(total="99.00")  # damage
    django_cache.clear()
    assert str(selectors.order_summary_get(order_id=order_id)["total"]) == "99.00"  # type: ignore[index]
    projection_rebuild("order_summary")
    assert str(selectors.order_summary_get(order_id=order_id)["total"]) == "12.00"  # type: ignore[index]


def test_a_lost_generation_key_starts_a_fresh_namespace() -> None:
    order_id = pending_order()
    selectors.order_summary_get(order_id=order_id)
    order_approve(order_id=order_id, context=MessageContext())
    relay_and_project()
    django_cache.delete(f"{cache.PREFIX}gen:order:{order_id}")  # evicted
    assert selectors.order_summary_get(order_id=order_id)["state"] == "APPROVED"  # type: ignore[index]
