"""A context database unreachable for real while a client calls the API (PostgreSQL: new
connections refused, open ones ended; tests.e2e.helpers.DatabaseOutage): the answer is 503
with the error shape and Retry-After, nothing is written, and the same request sent again once
the database is back (with its Idempotency-Key) is taken. Found by the fault run, which got
Django's HTML 500 page here (tests/faults)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from customers.services import customer_create
from tests.api.helpers import all_counts, assert_error
from tests.conftest import requires_postgres
from tests.e2e.helpers import database_unreachable

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True, databases="__all__")]


@pytest.mark.parametrize(("alias", "mode"), [("sagas", "orchestration"), ("orders", "choreography")])
def test_an_order_placed_while_its_database_is_unreachable_is_503_and_can_be_sent_again(api: APIClient, alias: str, mode: str) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    body = {"customer_id": str(customer.id), "total": "10.00", "mode": mode}
    key: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": str(uuid.uuid4())}  # WSGI extras: post(**extra: Any)
    before = all_counts()
    with database_unreachable(alias):
        response = api.post("/api/orders/", body, format="json", **key)
        answer = assert_error(response, 503)
        assert response["Retry-After"] == "2" and answer["extra"]["retry_after_seconds"] == 2
    assert all_counts() == before
    again = api.post("/api/orders/", body, format="json", **key)
    assert again.status_code == 202, again.content[:500]
    assert again.json()["state"] == "PENDING"
