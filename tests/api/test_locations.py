"""A client that follows the Location of a write reads its own write: a 200 with the version the
write made, not a 404, right after the answer, through the real read path (cache, read model)
with real workers relaying, projecting and running the sagas."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from config.launcher import Stack
from tests.conftest import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__")]


def follow(api: APIClient, response: Any) -> dict[str, Any]:
    """GET the write's Location at once, as a new client would."""
    assert "?min_version=" in response["Location"], response["Location"]
    read = api.get(response["Location"])
    assert read.status_code == 200, (response["Location"], read.status_code, read.content[:300])
    return read.json()


def test_the_location_of_every_write_reads_that_write(api: APIClient, system: Stack, settings: Any) -> None:
    settings.READ_YOUR_WRITES_WAIT_SECONDS = 20  # the workers share a small machine with others
    created = api.post("/api/customers/", {"name": "Ada", "credit_limit": "100.00"}, format="json")
    assert created.status_code == 201
    customer = follow(api, created)
    assert (customer["id"], customer["version"], customer["credit_limit"]) == (created.json()["id"], 1, "100.00")

    placed = api.post("/api/orders/", {"customer_id": customer["id"], "total": "30.00"}, format="json")
    assert placed.status_code == 202
    order = follow(api, placed)
    assert order["id"] == placed.json()["id"] and order["version"] >= 1  # PENDING, or already further

    eventually(lambda: api.get(f"/api/orders/{order['id']}/").json()["state"] == "APPROVED" or None, timeout=60, message="the order approved")
    cancelled = api.post(f"/api/orders/{order['id']}/cancel/")
    assert cancelled.status_code == 202, cancelled.content
    after = follow(api, cancelled)
    assert after["version"] >= cancelled.json()["version"] == 3
    assert after["state"] in ("CANCEL_PENDING", "CANCELLED")
