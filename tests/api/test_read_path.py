"""The hot read, GET /api/orders/{id}/, end to end through the real stack: one round trip to
the real Redis when cached (the throttle's counter and the cached order together), no SQL, and
never an answer older than the projection."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from config import fastcache
from eventlog.domain import MessageContext
from orders.services import order_approve, order_create
from tests.api.helpers import assert_error, project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def redis_commands() -> int:
    client = fastcache._redis().client  # type: ignore[union-attr]  # this test runs on the Redis cache
    return sum(int(stats["calls"]) for stats in client.info("commandstats").values())


def an_order() -> uuid.UUID:
    order = order_create(customer_id=uuid.uuid4(), total="12.00", mode="orchestration", context=MessageContext())
    project()
    return order.id


def test_a_cached_order_read_is_the_throttle_round_trip_and_nothing_else(api: APIClient) -> None:
    order_id = an_order()
    assert api.get(f"/api/orders/{order_id}/").status_code == 200  # token looked up, order cached
    counted = []
    for _ in range(5):  # other clients of this Redis only add: the least is ours
        before = redis_commands()
        with CaptureQueriesContext(connections["default"]) as auth_queries, CaptureQueriesContext(connections["readmodels"]) as read_queries:
            response = api.get(f"/api/orders/{order_id}/")
        counted.append(redis_commands() - before)
        assert response.status_code == 200 and response.json()["id"] == str(order_id)
        assert len(auth_queries) == 0 and len(read_queries) == 0
        assert fastcache._read_ahead.get() is None  # nothing fetched ahead outlives the request
    # SET NX + INCR of the counter and the MGET of the cached order, pipelined; then our INFO.
    assert min(counted) == 3 + 1


def test_a_read_after_the_projection_applied_an_update_is_fresh(api: APIClient) -> None:
    order_id = an_order()
    assert api.get(f"/api/orders/{order_id}/").json()["state"] == "PENDING"
    assert api.get(f"/api/orders/{order_id}/").json()["state"] == "PENDING"  # from the cache
    order_approve(order_id=order_id, context=MessageContext())
    project()
    body = api.get(f"/api/orders/{order_id}/").json()
    assert (body["state"], body["version"]) == ("APPROVED", 2)


def test_a_throttled_order_read_is_refused(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "user", "2/minute")
    order_id = an_order()
    answers = [api.get(f"/api/orders/{order_id}/") for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert assert_error(answers[2], 429)["message"] == "Request was throttled."


def test_without_throttles_the_read_fetches_for_itself(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from readmodels.apis import OrderDetailApi

    monkeypatch.setattr(OrderDetailApi, "throttle_classes", [])
    order_id = an_order()
    assert api.get(f"/api/orders/{order_id}/").json()["state"] == "PENDING"
    with CaptureQueriesContext(connections["readmodels"]) as queries:
        assert api.get(f"/api/orders/{order_id}/").json()["state"] == "PENDING"
    assert len(queries) == 0


@pytest.mark.parametrize("order_id", ["not-a-uuid", "00000000-0000-0000-0000-00000000000G"])
def test_a_bad_id_is_still_a_400(api: APIClient, order_id: str) -> None:
    assert_error(api.get(f"/api/orders/{order_id}/"), 400)


def test_a_session_read_is_cached_too(user: Any) -> None:
    from tests.api.conftest import PASSWORD

    client = APIClient()
    assert client.login(username=user.username, password=PASSWORD)
    order_id = an_order()
    assert client.get(f"/api/orders/{order_id}/").status_code == 200
    with CaptureQueriesContext(connections["readmodels"]) as queries:
        assert client.get(f"/api/orders/{order_id}/").json()["id"] == str(order_id)
    assert len(queries) == 0
