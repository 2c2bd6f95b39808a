"""POST /api/orders/ and POST /api/orders/{id}/cancel/: one entry point in the orders context for
every mode; orchestration starts its saga through the sagas context; the cancel decides on the
order's own state row (no read model, no wait); each Location carries the version to wait for."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from customers.services import customer_create
from eventlog.domain import MessageContext
from orders.models import Order, OrderEvent, OrdersIdempotencyRecord
from orders.services import order_approve, order_create
from sagas.models import IdempotencyRecord, SagaInstance
from tests.api.helpers import all_counts, assert_error, make_orders

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def place(api: APIClient, customer_id: uuid.UUID, total: str = "10.00", **headers: str) -> Any:
    return api.post("/api/orders/", {"customer_id": str(customer_id), "total": total}, format="json", **headers)  # type: ignore[arg-type]  # extra headers go to **extra; mypy matches them against follow


def test_placing_an_order_starts_its_saga_and_points_at_the_pending_order(api: APIClient) -> None:
    response = place(api, uuid.uuid4(), "12.50")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["state"], body["mode"], body["version"]) == ("PENDING", "orchestration", 1)
    assert response["Location"] == f"/api/orders/{body['id']}/?min_version=1"
    saga = SagaInstance.objects.using("sagas").get(id=body["saga_id"])
    assert (saga.type, saga.subject_id, saga.data["total"], saga.data["mode"]) == ("create_order", uuid.UUID(body["id"]), "12.50", "orchestration")


def test_a_repeat_with_the_same_idempotency_key_gets_the_first_answer(api: APIClient) -> None:
    customer_id = uuid.uuid4()
    first = place(api, customer_id, HTTP_IDEMPOTENCY_KEY="order-1")
    again = place(api, customer_id, HTTP_IDEMPOTENCY_KEY="order-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json() and again["Location"] == first["Location"]
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert SagaInstance.objects.using("sagas").count() == 1 and IdempotencyRecord.objects.using("sagas").count() == 1
    other = place(api, customer_id, HTTP_IDEMPOTENCY_KEY="order-2")
    assert other.json()["id"] != first.json()["id"]


def test_an_idempotency_key_reused_for_another_request_is_409_and_one_too_long_is_400(api: APIClient) -> None:
    customer_id = uuid.uuid4()
    assert place(api, customer_id, "1.00", HTTP_IDEMPOTENCY_KEY="k").status_code == 202
    before = all_counts()
    assert "different request" in assert_error(place(api, customer_id, "2.00", HTTP_IDEMPOTENCY_KEY="k"), 409)["message"]
    assert_error(place(api, customer_id, HTTP_IDEMPOTENCY_KEY="x" * 201), 400)
    assert all_counts() == before


def test_the_cancel_decides_on_the_write_side_without_the_read_model(api: APIClient) -> None:
    """Nothing is projected here: the read model knows no order, the write side does."""
    customer = customer_create(name="Ada", credit_limit="100.00")
    order_id = make_orders(customer.id, approved=1, total="30.00")["APPROVED"][0]
    response = api.post(f"/api/orders/{order_id}/cancel/")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["state"], body["version"]) == ("CANCEL_PENDING", 3)  # created 1, approved 2, cancel requested 3
    assert response["Location"] == f"/api/orders/{order_id}/?min_version=3"
    saga = SagaInstance.objects.using("sagas").get(id=body["saga_id"])
    assert (saga.type, saga.data) == ("cancel_order", {"order_id": str(order_id), "customer_id": str(customer.id), "total": "30.00"})


@pytest.mark.parametrize("state", ["PENDING", "REJECTED", "CANCEL_PENDING", "CANCELLED"])
def test_only_an_approved_order_can_be_cancelled(api: APIClient, state: str) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    order_id = make_orders(customer.id, **{state.lower(): 1})[state][0]  # type: ignore[arg-type]  # one count keyword, named after the state
    before = all_counts()
    assert assert_error(api.post(f"/api/orders/{order_id}/cancel/"), 409)["extra"] == {"state": state}
    assert all_counts() == before


def test_cancelling_an_unknown_order_is_404(api: APIClient) -> None:
    before = all_counts()
    assert_error(api.post(f"/api/orders/{uuid.uuid4()}/cancel/"), 404)
    assert all_counts() == before


def test_a_second_cancel_while_the_first_holds_the_order_is_409(api: APIClient) -> None:
    """No worker runs the first cancel's step, so the row is still APPROVED: the saga's semantic
    lock (one active saga per order) refuses the second."""
    customer = customer_create(name="Ada", credit_limit="100.00")
    order_id = make_orders(customer.id, approved=1)["APPROVED"][0]
    assert api.post(f"/api/orders/{order_id}/cancel/").status_code == 202
    before = all_counts()
    body = assert_error(api.post(f"/api/orders/{order_id}/cancel/"), 409)
    assert body["extra"] == {"order_id": str(order_id), "state": "APPROVED"}
    assert all_counts() == before


def test_a_choreographed_order_is_recorded_at_once_and_a_repeat_with_its_key_gets_the_first_answer(api: APIClient) -> None:
    body = {"customer_id": str(uuid.uuid4()), "total": "10.00", "mode": "choreography"}
    first = api.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="c-1")
    again = api.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="c-1")
    assert (first.status_code, again.status_code) == (202, 202) and again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    order = Order.objects.using("orders").get()
    assert (str(order.id), order.state, order.mode, str(order.saga_id)) == (first.json()["id"], "PENDING", "choreography", first.json()["saga_id"])
    assert OrdersIdempotencyRecord.objects.using("orders").count() == 1
    assert not SagaInstance.objects.using("sagas").exists()  # no coordinator: the trace follows the log later
    assert "different request" in assert_error(api.post("/api/orders/", {**body, "total": "11.00"}, format="json", HTTP_IDEMPOTENCY_KEY="c-1"), 409)["message"]


def test_cancelling_a_choreographed_order_records_the_request_in_a_flow_of_its_own(api: APIClient) -> None:
    order_id, flow_id = uuid.uuid4(), uuid.uuid4()
    context = MessageContext(correlation_id=flow_id, saga_id=flow_id)
    order_create(order_id=order_id, customer_id=uuid.uuid4(), total="5.00", mode="choreography", context=context)
    order_approve(order_id=order_id, context=context)
    response = api.post(f"/api/orders/{order_id}/cancel/")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["state"], body["version"]) == ("CANCEL_PENDING", 3) and body["saga_id"] != str(flow_id)
    requested = OrderEvent.objects.using("orders").get(stream_id=order_id, version=3)
    assert (requested.type, str(requested.saga_id), str(requested.correlation_id)) == ("OrderCancelRequested", body["saga_id"], body["saga_id"])
    assert_error(api.post(f"/api/orders/{order_id}/cancel/"), 409)  # CANCEL_PENDING is a semantic lock
