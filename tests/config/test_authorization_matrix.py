"""The authorization matrix: every URL under /api/ and /dashboard/, with every HTTP method, is
refused to whoever may not use it, shows them no data, and changes nothing.

The URLs come from Django's URL resolver, so a new endpoint is in the matrix the day it is
added; a pattern this test cannot fill in (a path parameter it has no value for) fails here
rather than going untested. Every method is tried, which includes every method each view
accepts. The data is real (a customer, an APPROVED order, a FAILED saga, all projected), so a
request let through would show it or change it:

- without credentials, the API answers 401 in the error shape; the dashboard sends the browser
  to the login page (or answers 403 to a POST refused by the CSRF check);
- a signed-in user who is not staff gets 403 from every dashboard page and action;
- after each refused request every table of every database is as it was.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import router
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from config.dashboard.actions import ACTIONS
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
PREFIXES = ("api/", "dashboard/")


def routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Every route of the project (``api/orders/<str:order_id>/``), resolvers walked."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


ROUTES = sorted(route for route in routes() if route.startswith(PREFIXES))
PARAMETER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


def test_the_matrix_has_every_api_and_dashboard_route() -> None:
    # A control: the walk finds the routes (and is not, say, empty because the URLconf moved).
    assert {"api/customers/", "api/orders/<str:order_id>/cancel/", "api/schema/", "dashboard/", "dashboard/actions/<str:name>/"} <= set(ROUTES), ROUTES


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    """Real data behind every path parameter: what a request let through would show or change."""
    from customers.services import customer_create
    from tests.api.helpers import make_orders, project
    from tests.sagas.test_engine import failed_saga

    customer = customer_create(name="Victim", credit_limit="100.00")
    order = make_orders(customer.id, approved=1)["APPROVED"][0]
    project()
    saga = failed_saga()
    yield {"customer_id": customer.id, "order_id": order, "saga_id": saga.id, "stream_id": customer.id}
    purge_queues()  # the commands the saga engine sent have no consumer here


def urls(route: str, world: dict[str, Any]) -> list[str]:
    """The concrete URLs of ``route``: each path parameter filled with real data (every
    dashboard action by name); fails for a parameter it does not know."""
    filled = ["/" + route]
    for match in PARAMETER.finditer(route):
        name, converter = match["name"], match["converter"] or "str"
        if name == "name" and route.startswith("dashboard/actions/"):
            values = sorted(ACTIONS)
        elif name in world and converter in ("str", "uuid"):
            values = [str(world[name])]
        else:
            pytest.fail(f"the authorization matrix cannot exercise {route!r}: give <{converter}:{name}> a value in urls()")
        filled = [url.replace(match.group(0), value) for url in filled for value in values]
    return filled


def query(world: dict[str, Any]) -> dict[str, str]:
    """What a dashboard action reads (its target), and a valid body for each API write."""
    return {"saga": str(world["saga_id"]), "event": str(uuid.uuid4()), "projection": "order_summary", "name": "Mallory", "credit_limit": "1.00", "customer_id": str(world["customer_id"]), "total": "1.00"}


def api_body(url: str, world: dict[str, Any]) -> dict[str, Any]:
    if url == "/api/customers/":
        return {"name": "Mallory", "credit_limit": "1.00"}
    if url == "/api/orders/":
        return {"customer_id": str(world["customer_id"]), "total": "1.00", "mode": "orchestration"}
    return {}


def snapshot() -> dict[str, Any]:
    """Every row count of every table of every database, and the state of every saga and step."""
    from sagas.models import SagaInstance, SagaStep

    counts = {model._meta.label: model._default_manager.using(router.db_for_write(model)).count() for model in apps.get_models()}
    sagas = sorted(SagaInstance.objects.using("sagas").values_list("id", "state", "version"))
    steps = sorted(SagaStep.objects.using("sagas").values_list("id", "status", "attempts"))
    return {"counts": counts, "sagas": sagas, "steps": steps}


def send(client: Client, method: str, url: str, world: dict[str, Any]) -> Any:
    params = query(world)
    if url.startswith("/api/"):
        if method in UNSAFE:
            return client.generic(method, url, data=json.dumps(api_body(url, world)), content_type="application/json")
        return client.generic(method, url)
    if method in UNSAFE:
        return client.generic(method, url + "?" + "&".join(f"{k}={v}" for k, v in params.items()), data="&".join(f"{k}={v}" for k, v in params.items()), content_type="application/x-www-form-urlencoded")
    return client.generic(method, url + "?" + "&".join(f"{k}={v}" for k, v in params.items()))


def shows_no_data(response: Any, world: dict[str, Any]) -> None:
    body = response.content.decode(errors="replace")
    for name, value in world.items():
        assert str(value) not in body, (name, body[:500])


def refused_and_unchanged(client: Client, method: str, url: str, world: dict[str, Any], expect: Any) -> None:
    before = snapshot() if method in UNSAFE else None  # a safe method is refused all the same
    response = send(client, method, url, world)
    expect(response)
    shows_no_data(response, world)
    if before is not None:
        assert snapshot() == before, (method, url)


def api_refusal(response: Any) -> None:
    assert response.status_code == 401, (response.status_code, response.content[:300])
    if response.request["REQUEST_METHOD"] == "HEAD":
        return
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"message", "extra"} and body["message"], body


def login_refusal(response: Any) -> None:
    if response.status_code == 302:
        assert response["Location"].startswith("/admin/login/?next="), response["Location"]
    else:
        assert response.status_code == 403, response.status_code


def forbidden(response: Any) -> None:
    assert response.status_code == 403, (response.status_code, response.content[:300])


@pytest.mark.parametrize("route", ROUTES)
def test_without_credentials_every_method_is_refused_and_changes_nothing(route: str, world: dict[str, Any]) -> None:
    client = Client()
    for url in urls(route, world):
        for method in METHODS:
            refused_and_unchanged(client, method, url, world, api_refusal if route.startswith("api/") else login_refusal)


@pytest.mark.parametrize("route", [route for route in ROUTES if route.startswith("dashboard/")])
def test_a_user_who_is_not_staff_is_refused_every_dashboard_url_and_action(route: str, world: dict[str, Any]) -> None:
    client = Client()
    client.force_login(get_user_model().objects.create_user("customer-service", password="x" * 16))
    for url in urls(route, world):
        for method in METHODS:
            refused_and_unchanged(client, method, url, world, forbidden)


def test_a_staff_user_is_let_in_so_the_refusals_above_are_about_who_asks(world: dict[str, Any]) -> None:
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)  # the pages name their files through the manifest
    # The control: the same client setup with a staff user reaches the pages and the actions'
    # confirmation pages, and an API token reaches the API.
    from rest_framework.authtoken.models import Token

    staff = get_user_model().objects.create_user("operator", password="x" * 16, is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get("/dashboard/sagas/").status_code == 200
    assert client.get(f"/dashboard/actions/saga-retry/?saga={world['saga_id']}").status_code == 200
    token = Token.objects.create(user=staff).key
    assert Client().get(f"/api/orders/{world['order_id']}/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
