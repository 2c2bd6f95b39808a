"""Fixtures of the dashboard's tests: static files collected once (the pages name them through
the manifest, as in production), a staff user's and a non-staff user's client, and histories
built through the real services."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections
from django.test import Client

from tests.conftest import purge_queues


@pytest.fixture(scope="session", autouse=True)
def static_files() -> None:
    call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture(autouse=True)
def no_leftover_messages() -> Iterator[None]:
    yield
    purge_queues()  # commands the engine sent have no consumer in these tests


@pytest.fixture
def staff(client: Client) -> Client:
    user = get_user_model().objects.create_user("operator", password="x" * 16, is_staff=True)
    client.force_login(user)
    return client


@pytest.fixture
def not_staff() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_user("customer-service", password="x" * 16))
    return client


def advance_everything(times: int = 6) -> None:
    """Relay the outboxes and run every subscriber (handlers, trace, projections), in this process."""
    for _ in range(times):
        call_command("relay_outbox", "--advance", stdout=StringIO())


def choreographed_order(total: str = "5.00", limit: str = "50.00") -> dict[str, Any]:
    """A choreographed order placed through the orders context, carried on by its reactions."""
    from customers.services import customer_create
    from orders.choreography import order_choreography_place

    customer = customer_create(name="Ada", credit_limit=limit)
    order_id = uuid.uuid4()
    flow = order_choreography_place(order_id=order_id, customer_id=customer.id, total=Decimal(total), mode="choreography", idempotency=None)
    return {"order_id": order_id, "customer_id": customer.id, "saga_id": flow.saga_id}


def orders_trigger(create: bool, event_type: str = "OrderApproved") -> None:
    """A real fault in the orders database: inserting an ``event_type`` event fails."""
    name = "dashboard_refuse"
    vendor = connections["orders"].vendor
    if create:
        statements = (
            [f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN IF NEW.type = '{event_type}' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
             f"CREATE TRIGGER {name} BEFORE INSERT ON orders_orderevent FOR EACH ROW EXECUTE FUNCTION {name}()"]
            if vendor == "postgresql"
            else [f"CREATE TRIGGER {name} BEFORE INSERT ON orders_orderevent WHEN NEW.type = '{event_type}' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"]
        )
    else:
        statements = [f"DROP TRIGGER {name} ON orders_orderevent", f"DROP FUNCTION {name}()"] if vendor == "postgresql" else [f"DROP TRIGGER {name}"]
    with connections["orders"].cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
