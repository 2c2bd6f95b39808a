"""The HTTP API contract of the brief (section 4), field by field, through the real stack:
real middleware, authentication, views, services, outbox relay, log, projections and cache."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test.utils import override_settings
from rest_framework.test import APIClient

from customers.services import credit_reserve, customer_create
from eventlog.domain import MessageContext
from eventlog.models import LogEvent
from eventlog.subscriptions import subscriber_advance
from orders.models import Order
from orders.services import order_approve, order_create
from readmodels.projections import PROJECTIONS, subscriber_name
from tests.api.conftest import PASSWORD
from tests.api.helpers import all_counts, assert_error, counts, is_uuid, make_orders, nothing_changes, project, relay
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

MONEY = re.compile(r"^\d+\.\d{2}$")
ORDER_STATES = ["PENDING", "APPROVED", "REJECTED", "CANCEL_PENDING", "CANCELLED"]
EVENT_FIELDS = {"position", "event_id", "stream_id", "stream_type", "version", "type", "data", "occurred_at", "correlation_id", "causation_id", "saga_id"}
ORDER_FIELDS = {"id", "customer_id", "total", "state", "rejection_reason", "mode", "saga_id", "version"}


def create_customer(api: APIClient, name: str = "Ada", credit_limit: str = "125.00") -> dict[str, Any]:
    response = api.post("/api/customers/", {"name": name, "credit_limit": credit_limit}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def parse_time(value: Any) -> None:
    from datetime import datetime

    assert isinstance(value, str)
    assert datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None, value


# --- POST /api/customers/ -------------------------------------------------------------------


def test_create_customer_answers_201_with_id_name_credit_limit_version_and_location(api: APIClient) -> None:
    before = counts()
    response = api.post("/api/customers/", {"name": "  Ada Lovelace ", "credit_limit": "125.5"}, format="json")
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"id", "name", "credit_limit", "version"}
    assert is_uuid(body["id"])
    assert body["name"] == "Ada Lovelace"  # trimmed
    assert body["credit_limit"] == "125.50"  # a decimal string with two places, never a number
    assert body["version"] == 1 and isinstance(body["version"], int)
    assert response["Location"] == f"/api/customers/{body['id']}/?min_version=1"  # read your own write
    # One aggregate row and one CustomerCreated event in the outbox, in the same transaction.
    assert counts() == {**before, "customers": before["customers"] + 1, "customer_events": before["customer_events"] + 1}


def test_zero_and_the_largest_credit_limit_are_allowed(api: APIClient) -> None:
    assert create_customer(api, credit_limit="0.00")["credit_limit"] == "0.00"
    assert create_customer(api, credit_limit="0")["credit_limit"] == "0.00"
    assert create_customer(api, credit_limit="999999999999.99")["credit_limit"] == "999999999999.99"


def test_a_name_of_exactly_200_characters_is_allowed(api: APIClient) -> None:
    assert create_customer(api, name="n" * 200)["name"] == "n" * 200


def test_two_creates_make_two_customers(api: APIClient) -> None:
    first, second = create_customer(api), create_customer(api)
    assert first["id"] != second["id"]


# --- GET /api/customers/{id}/ ---------------------------------------------------------------


def test_customer_detail_is_the_read_model_with_money_strings_and_orders_by_state(api: APIClient) -> None:
    customer = create_customer(api, credit_limit="100.00")
    customer_id = uuid.UUID(customer["id"])
    make_orders(customer_id, pending=1, approved=2, rejected=1, cancel_pending=1, cancelled=1, total="10.00")
    project()
    response = api.get(f"/api/customers/{customer_id}/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "name", "credit_limit", "credit_reserved", "available_credit", "version", "orders"}
    assert body["id"] == str(customer_id)
    assert body["name"] == "Ada"
    for field in ("credit_limit", "credit_reserved", "available_credit"):
        assert isinstance(body[field], str) and MONEY.match(body[field]), (field, body[field])
    # Reserved: the APPROVED and CANCEL_PENDING orders (3 x 10.00); the cancelled one was released.
    assert (body["credit_limit"], body["credit_reserved"], body["available_credit"]) == ("100.00", "30.00", "70.00")
    assert isinstance(body["version"], int) and body["version"] >= 1
    assert body["orders"] == {"PENDING": 1, "APPROVED": 2, "REJECTED": 1, "CANCEL_PENDING": 1, "CANCELLED": 1}


def test_a_new_customer_has_zero_reserved_and_zero_orders(api: APIClient) -> None:
    customer = create_customer(api, credit_limit="50.00")
    project()
    body = api.get(f"/api/customers/{customer['id']}/").json()
    assert (body["credit_limit"], body["credit_reserved"], body["available_credit"], body["version"]) == ("50.00", "0.00", "50.00", 1)
    assert body["orders"] == dict.fromkeys(ORDER_STATES, 0)


def test_a_customer_not_yet_projected_is_404_in_the_error_shape(api: APIClient) -> None:
    customer = create_customer(api)  # written, but the projection has not run
    body = assert_error(api.get(f"/api/customers/{customer['id']}/"), 404)
    assert body["extra"] == {"customer_id": customer["id"]}


def test_the_read_is_fresh_after_the_projection_moves_even_though_it_is_cached(api: APIClient) -> None:
    customer = create_customer(api, credit_limit="100.00")
    project()
    assert api.get(f"/api/customers/{customer['id']}/").json()["credit_reserved"] == "0.00"  # now cached
    make_orders(uuid.UUID(customer["id"]), approved=1, total="12.34")
    project()
    assert api.get(f"/api/customers/{customer['id']}/").json()["credit_reserved"] == "12.34"


# --- GET /api/orders/{id}/ ------------------------------------------------------------------


def test_order_detail_has_every_field_of_the_contract(api: APIClient) -> None:
    customer = create_customer(api, credit_limit="100.00")
    saga_id = uuid.uuid4()
    made = make_orders(uuid.UUID(customer["id"]), approved=1, rejected=1, total="12.50", saga_id=saga_id)
    project()
    approved = api.get(f"/api/orders/{made['APPROVED'][0]}/")
    assert approved.status_code == 200
    body = approved.json()
    assert ORDER_FIELDS <= set(body), set(body)
    assert body["id"] == str(made["APPROVED"][0])
    assert body["customer_id"] == customer["id"]
    assert body["total"] == "12.50"
    assert body["state"] == "APPROVED"
    assert body["rejection_reason"] is None
    assert body["mode"] == "orchestration"
    assert body["saga_id"] == str(saga_id)
    assert body["version"] == 2 and isinstance(body["version"], int)
    # The extras the read model adds keep their types.
    assert body["customer_name"] == "Ada"
    parse_time(body["created_at"])
    parse_time(body["updated_at"])

    rejected = api.get(f"/api/orders/{made['REJECTED'][0]}/").json()
    assert (rejected["state"], rejected["rejection_reason"], rejected["version"]) == ("REJECTED", "INSUFFICIENT_CREDIT", 2)


def test_an_order_without_a_saga_has_a_null_saga_id(api: APIClient) -> None:
    customer = create_customer(api)
    made = make_orders(uuid.UUID(customer["id"]), pending=1)
    project()
    body = api.get(f"/api/orders/{made['PENDING'][0]}/").json()
    assert (body["state"], body["saga_id"], body["rejection_reason"], body["version"]) == ("PENDING", None, None, 1)


# --- GET /api/orders/?customer_id=&state= ---------------------------------------------------


def test_order_list_is_a_drf_page_with_filters_and_page_size(api: APIClient) -> None:
    ada = create_customer(api, "Ada", "1000.00")
    bob = create_customer(api, "Bob", "1000.00")
    ada_orders = make_orders(uuid.UUID(ada["id"]), pending=2, approved=3, rejected=1)
    make_orders(uuid.UUID(bob["id"]), approved=2)
    project()

    everything = api.get("/api/orders/")
    assert everything.status_code == 200
    body = everything.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert (body["count"], body["next"], body["previous"]) == (8, None, None)
    assert len(body["results"]) == 8
    for order in body["results"]:
        assert ORDER_FIELDS <= set(order)
        assert MONEY.match(order["total"])
    created = [order["created_at"] for order in body["results"]]
    assert created == sorted(created, reverse=True)  # newest first

    mine = api.get("/api/orders/", {"customer_id": ada["id"]}).json()
    assert mine["count"] == 6 and {o["customer_id"] for o in mine["results"]} == {ada["id"]}

    approved = api.get("/api/orders/", {"customer_id": ada["id"], "state": "APPROVED"}).json()
    assert approved["count"] == 3
    assert {o["id"] for o in approved["results"]} == {str(i) for i in ada_orders["APPROVED"]}
    assert api.get("/api/orders/", {"state": "APPROVED"}).json()["count"] == 5
    assert api.get("/api/orders/", {"state": "CANCELLED"}).json() == {"count": 0, "next": None, "previous": None, "results": []}
    assert api.get("/api/orders/", {"customer_id": str(uuid.uuid4())}).json()["count"] == 0

    # Page size and the links between pages, which keep the filters.
    first = api.get("/api/orders/", {"customer_id": ada["id"], "page_size": 4}).json()
    assert (first["count"], len(first["results"]), first["previous"]) == (6, 4, None)
    assert first["next"].startswith("http://testserver/api/orders/?")
    assert "page=2" in first["next"] and "page_size=4" in first["next"] and f"customer_id={ada['id']}" in first["next"]
    second = api.get(first["next"]).json()
    assert (second["count"], len(second["results"]), second["next"]) == (6, 2, None)
    assert "page=1" in second["previous"]
    assert {o["id"] for o in first["results"]} | {o["id"] for o in second["results"]} == {o["id"] for o in mine["results"]}
    assert api.get("/api/orders/", {"page_size": 500}).json()["count"] == 8


def test_an_empty_order_list_is_an_empty_page(api: APIClient) -> None:
    assert api.get("/api/orders/").json() == {"count": 0, "next": None, "previous": None, "results": []}


# --- GET /api/events/?after=&limit= and GET /api/streams/{id}/ --------------------------------


def assert_event_shape(event: dict[str, Any]) -> None:
    assert set(event) == EVENT_FIELDS, set(event)
    assert isinstance(event["position"], int) and event["position"] >= 1
    assert isinstance(event["version"], int) and event["version"] >= 1
    for field in ("event_id", "stream_id", "correlation_id"):
        assert is_uuid(event[field]), (field, event[field])
    for field in ("causation_id", "saga_id"):
        assert event[field] is None or is_uuid(event[field]), (field, event[field])
    assert event["stream_type"] in {"Customer", "Order"}
    assert isinstance(event["type"], str) and event["type"]
    assert isinstance(event["data"], dict)
    parse_time(event["occurred_at"])


def test_events_are_the_log_in_position_order_with_every_field(api: APIClient) -> None:
    customer = create_customer(api, credit_limit="100.00")
    saga_id = uuid.uuid4()
    make_orders(uuid.UUID(customer["id"]), approved=2, total="10.00", saga_id=saga_id)
    relay()
    response = api.get("/api/events/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next", "head"}
    rows = list(LogEvent.objects.using("eventlog").order_by("position"))
    assert body["head"] == rows[-1].position and body["next"] is None
    events = body["results"]
    assert [e["position"] for e in events] == [row.position for row in rows]
    for event, row in zip(events, rows, strict=True):
        assert_event_shape(event)
        assert (event["event_id"], event["stream_id"], event["type"], event["version"]) == (str(row.event_id), str(row.stream_id), row.type, row.version)
        assert event["correlation_id"] == str(row.correlation_id)
    created = events[0]
    assert (created["type"], created["stream_type"], created["stream_id"], created["version"]) == ("CustomerCreated", "Customer", customer["id"], 1)
    assert created["data"] == {"name": "Ada", "credit_limit": "100.00"}
    assert created["saga_id"] is None
    reserved = [e for e in events if e["type"] == "CreditReserved"]
    assert len(reserved) == 2 and all(e["data"]["amount"] == "10.00" and e["saga_id"] == str(saga_id) for e in reserved)
    assert {e["type"] for e in events} == {"CustomerCreated", "OrderCreated", "CreditReserved", "OrderApproved"}


def test_events_page_by_after_and_limit_following_next(api: APIClient) -> None:
    customer = create_customer(api)
    make_orders(uuid.UUID(customer["id"]), approved=2)
    relay()
    everything = api.get("/api/events/").json()["results"]
    head = everything[-1]["position"]
    assert len(everything) == 7

    page = api.get("/api/events/", {"limit": 3}).json()
    assert [e["position"] for e in page["results"]] == [e["position"] for e in everything[:3]]
    assert page["head"] == head
    seen = list(page["results"])
    while page["next"] is not None:
        assert page["next"].startswith("http://testserver/api/events/?after=")
        page = api.get(page["next"]).json()
        seen.extend(page["results"])
    assert seen == everything

    after = everything[2]["position"]
    assert [e["position"] for e in api.get("/api/events/", {"after": after, "limit": 2}).json()["results"]] == [
        e["position"] for e in everything[3:5]
    ]
    at_head = api.get("/api/events/", {"after": head}).json()
    assert at_head == {"results": [], "next": None, "head": head}


def test_an_empty_log_is_an_empty_page(api: APIClient) -> None:
    assert api.get("/api/events/").json() == {"results": [], "next": None, "head": 0}


def test_a_stream_is_its_events_in_version_order(api: APIClient) -> None:
    customer = create_customer(api, credit_limit="100.00")
    make_orders(uuid.UUID(customer["id"]), approved=2, cancelled=1)
    relay()
    response = api.get(f"/api/streams/{customer['id']}/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"stream_id", "stream_type", "version", "events"}
    assert (body["stream_id"], body["stream_type"]) == (customer["id"], "Customer")
    # Created, three reservations, one release.
    assert [e["version"] for e in body["events"]] == [1, 2, 3, 4, 5] and body["version"] == 5
    assert [e["type"] for e in body["events"]] == ["CustomerCreated", "CreditReserved", "CreditReserved", "CreditReserved", "CreditReleased"]
    for event in body["events"]:
        assert_event_shape(event)
        assert event["stream_id"] == customer["id"]
    positions = [e["position"] for e in body["events"]]
    assert positions == sorted(positions)


def test_an_unknown_stream_is_404(api: APIClient) -> None:
    stream_id = str(uuid.uuid4())
    assert assert_error(api.get(f"/api/streams/{stream_id}/"), 404)["extra"] == {"stream_id": stream_id}


# --- GET /api/projections/ ------------------------------------------------------------------


def test_projections_report_position_head_and_lag(api: APIClient) -> None:
    customer = create_customer(api)
    make_orders(uuid.UUID(customer["id"]), approved=1)
    relay()
    head = LogEvent.objects.using("eventlog").order_by("-position").first().position  # type: ignore[union-attr]  # the test wrote events: the log is not empty
    response = api.get("/api/projections/")
    assert response.status_code == 200
    behind = response.json()
    assert isinstance(behind, list)
    assert {p["name"] for p in behind} == {p.name for p in PROJECTIONS.values()}
    for status in behind:
        assert set(status) == {"name", "position", "head", "lag", "updated_at", "rebuilding"}
        assert (status["position"], status["head"], status["lag"], status["rebuilding"]) == (0, head, head, False)
    project()
    for status in api.get("/api/projections/").json():
        assert (status["position"], status["head"], status["lag"], status["rebuilding"]) == (head, head, 0, False)
        parse_time(status["updated_at"])


# --- OpenAPI schema and docs -----------------------------------------------------------------

API_PATHS = {
    "/api/customers/",
    "/api/customers/{customer_id}/",
    "/api/orders/",
    "/api/orders/{order_id}/",
    "/api/orders/{order_id}/cancel/",
    "/api/events/",
    "/api/streams/{stream_id}/",
    "/api/projections/",
}


def test_the_schema_is_openapi_3_and_lists_every_path(api: APIClient) -> None:
    response = api.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert str(schema["openapi"]).startswith("3.")
    assert API_PATHS <= set(schema["paths"]), set(schema["paths"])
    assert set(schema["paths"]["/api/orders/"]) >= {"get", "post"}
    assert "post" in schema["paths"]["/api/customers/"]
    as_json = api.get("/api/schema/", {"format": "json"})
    assert as_json.status_code == 200
    assert json.loads(as_json.content)["paths"].keys() == schema["paths"].keys()


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The pages need the static manifest that ``make run`` builds with collectstatic."""
    root = tmp_path_factory.mktemp("static")
    with override_settings(STATIC_ROOT=root):
        call_command("collectstatic", "--noinput", "--verbosity", "0")
        yield root


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_docs_render(api: APIClient, static_root: Path, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/schema/" in response.content


# --- health probes ---------------------------------------------------------------------------


def test_healthz_answers_200(anon: APIClient) -> None:
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_answers_200_with_every_check(anon: APIClient) -> None:
    response = anon.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {f"database:{alias}" for alias in settings.DATABASES} | {"broker"}
    for name, check in body["checks"].items():
        assert check["ok"] is True, (name, check)
        assert isinstance(check["ms"], (int, float))
    assert set(body["projections"]["lag"]) == {p.name for p in PROJECTIONS.values()}
    assert body["projections"]["lagging"] is False


# --- placing and cancelling orders -----------------------------------------------------------
# Every mode has landed and its contract is pinned here.


def test_placing_an_order_answers_202_with_the_contract(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    project()
    response = api.post("/api/orders/", {"customer_id": str(customer.id), "total": "10.00", "mode": "orchestration"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert {"id", "state", "mode", "saga_id"} <= set(body)
    assert is_uuid(body["id"]) and is_uuid(body["saga_id"])
    assert (body["state"], body["mode"]) == ("PENDING", "orchestration")
    assert response["Location"] == f"/api/orders/{body['id']}/?min_version=1"  # the PENDING order


def test_placing_a_choreographed_order_answers_202_with_the_contract(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    project()
    response = api.post("/api/orders/", {"customer_id": str(customer.id), "total": "10.00", "mode": "choreography"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["state"], body["mode"]) == ("PENDING", "choreography") and is_uuid(body["id"]) and is_uuid(body["saga_id"])
    assert response["Location"] == f"/api/orders/{body['id']}/?min_version=1"
    # No coordinator: the order is recorded at once, carrying its flow's id as saga id.
    order = Order.objects.using("orders").get(id=body["id"])
    assert (order.state, order.mode, str(order.saga_id)) == ("PENDING", "choreography", body["saga_id"])


@requires_postgres
def test_placing_a_2pc_order_answers_201_with_its_final_state(api: APIClient) -> None:
    """(Where the databases cannot prepare transactions it is a 400: tests/api/test_two_phase.py.)"""
    customer = customer_create(name="Ada", credit_limit="100.00")
    project()
    response = api.post("/api/orders/", {"customer_id": str(customer.id), "total": "10.00", "mode": "2pc"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "state", "rejection_reason", "mode", "saga_id", "version"}
    assert (body["state"], body["rejection_reason"], body["mode"]) == ("APPROVED", None, "2pc") and is_uuid(body["saga_id"]) and is_uuid(body["id"])
    assert response["Location"] == f"/api/orders/{body['id']}/?min_version=2"


def test_cancelling_an_unknown_order_is_404(api: APIClient) -> None:
    before = all_counts()
    assert_error(api.post(f"/api/orders/{uuid.uuid4()}/cancel/"), 404)
    assert all_counts() == before


def test_cancelling_a_pending_order_is_409(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    order = make_orders(customer.id, pending=1)["PENDING"][0]
    project()
    before = all_counts()
    body = assert_error(api.post(f"/api/orders/{order}/cancel/"), 409)  # PENDING is a semantic lock
    assert body["extra"]["state"] == "PENDING"
    assert all_counts() == before


# --- authentication --------------------------------------------------------------------------

ENDPOINTS = [
    ("post", "/api/customers/"),
    ("get", "/api/customers/{id}/"),
    ("get", "/api/orders/"),
    ("post", "/api/orders/"),
    ("get", "/api/orders/{id}/"),
    ("post", "/api/orders/{id}/cancel/"),
    ("get", "/api/events/"),
    ("get", "/api/streams/{id}/"),
    ("get", "/api/projections/"),
    ("get", "/api/sagas/"),
    ("get", "/api/sagas/{id}/"),
]


def call(client: APIClient, method: str, path: str, resource_id: str) -> Any:
    path = path.format(id=resource_id)
    if method == "post":
        return client.post(path, {"name": "Eve", "credit_limit": "10.00"}, format="json")
    return client.get(path)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_unauthenticated_calls_get_401_in_the_error_shape(anon: APIClient, method: str, path: str) -> None:
    customer = customer_create(name="Ada", credit_limit="10.00")
    project()
    with nothing_changes():
        response = call(anon, method, path, str(customer.id))
        body = assert_error(response, 401)
    assert body["extra"] == {"code": "not_authenticated"}
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_wrong_token_gets_401_in_the_error_shape(user: Any, method: str, path: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    with nothing_changes():
        body = assert_error(call(client, method, path, str(uuid.uuid4())), 401)
    assert body["extra"] == {"code": "authentication_failed"}


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/", "/api/redoc/"])
def test_the_schema_and_docs_also_need_authentication(anon: APIClient, static_root: Path, path: str) -> None:
    # These render YAML or HTML, not JSON: the status is the contract here, not the error body.
    assert anon.get(path).status_code == 401


def test_a_token_authenticates(api: APIClient) -> None:
    assert api.get("/api/projections/").status_code == 200
    assert api.post("/api/customers/", {"name": "Ada", "credit_limit": "1.00"}, format="json").status_code == 201


def test_a_session_authenticates(user: Any) -> None:
    client = APIClient()
    assert client.login(username=user.username, password=PASSWORD)
    assert client.get("/api/projections/").status_code == 200
    created = client.post("/api/customers/", {"name": "Ada", "credit_limit": "1.00"}, format="json")
    assert created.status_code == 201
    client.logout()
    assert_error(client.get("/api/projections/"), 401)


def test_a_session_write_needs_the_csrf_token(user: Any) -> None:
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=PASSWORD)
    assert client.get("/api/projections/").status_code == 200  # safe methods need no token
    with nothing_changes():
        body = assert_error(client.post("/api/customers/", {"name": "Ada", "credit_limit": "1.00"}, format="json"), 403)
    assert "CSRF" in body["message"]
    secret = "a" * 32
    client.cookies[settings.CSRF_COOKIE_NAME] = secret
    created = client.post("/api/customers/", {"name": "Ada", "credit_limit": "1.00"}, format="json", HTTP_X_CSRFTOKEN=secret)
    assert created.status_code == 201


def test_other_methods_are_405_in_the_error_shape(api: APIClient) -> None:
    with nothing_changes():
        assert_error(api.get("/api/customers/"), 405)
        assert_error(api.put("/api/customers/", {}, format="json"), 405)
        assert_error(api.delete(f"/api/customers/{uuid.uuid4()}/"), 405)
        assert_error(api.post("/api/events/", {}, format="json"), 405)


# --- read your own write: ?min_version= ------------------------------------------------------


def get_timed(api: APIClient, path: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = api.get(path)
    return response, time.monotonic() - started


def advance_later(delay: float, errors: list[BaseException]) -> threading.Thread:
    """A background projector: after ``delay``, bring every projection up to the head."""

    def run() -> None:
        try:
            time.sleep(delay)
            for projection in PROJECTIONS.values():
                subscriber_advance(subscriber_name(projection))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_min_version_already_reached_answers_at_once(api: APIClient, settings: Any) -> None:
    settings.READ_YOUR_WRITES_WAIT_SECONDS = 5
    customer = create_customer(api)
    project()
    response, elapsed = get_timed(api, f"/api/customers/{customer['id']}/?min_version={customer['version']}")
    assert response.status_code == 200 and response.json()["version"] == 1
    assert elapsed < 2.5


def test_a_min_version_not_reached_waits_then_answers_the_older_row(api: APIClient, settings: Any) -> None:
    settings.READ_YOUR_WRITES_WAIT_SECONDS = 0.3
    customer = create_customer(api, credit_limit="100.00")
    project()
    make_orders(uuid.UUID(customer["id"]), approved=1)  # customer version 2, relayed but not projected
    relay()
    response, elapsed = get_timed(api, f"/api/customers/{customer['id']}/?min_version=2")
    assert elapsed >= 0.3
    assert response.status_code == 200
    assert (response.json()["version"], response.json()["credit_reserved"]) == (1, "0.00")


def test_a_min_version_for_rows_not_projected_yet_waits_then_answers_404(api: APIClient, settings: Any) -> None:
    settings.READ_YOUR_WRITES_WAIT_SECONDS = 0.3
    customer = create_customer(api)
    order = make_orders(uuid.UUID(customer["id"]), pending=1)["PENDING"][0]
    relay()
    for path in (f"/api/customers/{customer['id']}/?min_version=1", f"/api/orders/{order}/?min_version=1"):
        response, elapsed = get_timed(api, path)
        assert elapsed >= 0.3, path
        assert_error(response, 404)


def test_a_read_returns_the_new_version_when_the_projection_catches_up_during_the_wait(api: APIClient, settings: Any) -> None:
    settings.READ_YOUR_WRITES_WAIT_SECONDS = 10
    customer = customer_create(name="Ada", credit_limit="100.00")
    context = MessageContext()
    order = order_create(customer_id=customer.id, total="10.00", mode="orchestration", context=context)
    project()
    # Both rows are cached at version 1 ...
    assert api.get(f"/api/customers/{customer.id}/").json()["version"] == 1
    assert api.get(f"/api/orders/{order.id}/").json()["state"] == "PENDING"
    # ... when the writes land: the customer and the order reach version 2, not yet projected.
    credit_reserve(customer_id=customer.id, order_id=order.id, amount="10.00", context=context)
    order_approve(order_id=order.id, context=context)
    relay()

    errors: list[BaseException] = []
    thread = advance_later(0.2, errors)
    try:
        response, elapsed = get_timed(api, f"/api/customers/{customer.id}/?min_version=2")
    finally:
        thread.join()
    assert errors == []
    assert response.status_code == 200
    assert (response.json()["version"], response.json()["credit_reserved"]) == (2, "10.00")
    assert 0.2 <= elapsed < 8
    order_body = api.get(f"/api/orders/{order.id}/?min_version=2").json()
    assert (order_body["version"], order_body["state"]) == (2, "APPROVED")
    # The plain read (through the cache) sees the new version too.
    assert api.get(f"/api/customers/{customer.id}/").json()["version"] == 2


def test_an_order_read_waits_for_its_first_projection(api: APIClient, settings: Any) -> None:
    settings.READ_YOUR_WRITES_WAIT_SECONDS = 10
    customer = customer_create(name="Ada", credit_limit="100.00")
    order = order_create(customer_id=customer.id, total="10.00", mode="choreography", context=MessageContext())
    relay()
    assert_error(api.get(f"/api/orders/{order.id}/"), 404)  # the 404 is cached now
    errors: list[BaseException] = []
    thread = advance_later(0.2, errors)
    try:
        response, elapsed = get_timed(api, f"/api/orders/{order.id}/?min_version=1")
    finally:
        thread.join()
    assert errors == []
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["mode"], response.json()["version"]) == ("PENDING", "choreography", 1)
    assert 0.2 <= elapsed < 8
