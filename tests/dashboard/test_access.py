"""Who gets what: anonymous users are sent to the login page, non-staff users get 403 and
nothing else from every page and action, a GET to an action never acts, and a POST without
its CSRF token is refused."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from config.models import OperatorAction
from sagas.models import SagaStep
from tests.sagas.test_engine import failed_saga, state

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

SAGA = "00000000-0000-4000-8000-000000000001"
PAGES = ["/dashboard/", "/dashboard/summary/", "/dashboard/sagas/", "/dashboard/sagas/?stuck=true", f"/dashboard/sagas/{SAGA}/", "/dashboard/events/", "/dashboard/projections/"]
ACTIONS = [
    f"/dashboard/actions/saga-retry/?saga={SAGA}", f"/dashboard/actions/saga-resume/?saga={SAGA}", f"/dashboard/actions/saga-abort/?saga={SAGA}",
    "/dashboard/actions/sagas-retry-failed/", f"/dashboard/actions/parked-retry/?event={SAGA}", "/dashboard/actions/projection-rebuild/?projection=order_summary",
]


@pytest.mark.parametrize("url", PAGES + ACTIONS)
def test_anonymous_users_are_sent_to_the_login_page(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/?next=")
    assert client.post(url.split("?")[0], {"saga": SAGA}).status_code in (302, 403)


@pytest.mark.parametrize("url", PAGES + ACTIONS)
def test_users_who_are_not_staff_get_403_and_nothing_else(not_staff: Client, url: str) -> None:
    response = not_staff.get(url)
    assert response.status_code == 403
    assert SAGA not in response.content.decode()


def test_no_action_acts_for_anyone_who_is_not_staff(not_staff: Client, client: Client) -> None:
    saga = failed_saga()
    for who in (not_staff, client):
        assert who.post("/dashboard/actions/saga-retry/", {"saga": str(saga.id)}).status_code in (302, 403)
        assert who.post("/dashboard/actions/sagas-retry-failed/", {"saga": [str(saga.id)]}).status_code in (302, 403)
    assert state(saga) == "FAILED" and not OperatorAction.objects.exists()


def test_a_get_to_an_action_shows_its_dry_run_and_changes_nothing(staff: Client) -> None:
    saga = failed_saga()
    steps = list(SagaStep.objects.using("sagas").filter(saga=saga).values_list("status", "attempts"))
    response = staff.get(f"/dashboard/actions/saga-retry/?saga={saga.id}")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Dry run: what it will do" in body and "orders.order_reject attempt 6" in body and 'name="csrfmiddlewaretoken"' in body
    assert state(saga) == "FAILED"
    assert list(SagaStep.objects.using("sagas").filter(saga=saga).values_list("status", "attempts")) == steps
    assert not OperatorAction.objects.exists()


def test_a_post_without_its_csrf_token_is_refused() -> None:
    saga = failed_saga()
    client = Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.create_user("operator", password="x" * 16, is_staff=True))
    response = client.post("/dashboard/actions/saga-retry/", {"saga": str(saga.id)})
    assert response.status_code == 403 and b"CSRF" in response.content
    assert state(saga) == "FAILED" and not OperatorAction.objects.exists()
    # The control: the same POST with the token the confirmation page carries goes through.
    page = client.get(f"/dashboard/actions/saga-retry/?saga={saga.id}")
    token = page.context["csrf_token"]
    assert client.post("/dashboard/actions/saga-retry/", {"saga": str(saga.id), "csrfmiddlewaretoken": str(token)}).status_code == 302
    assert state(saga) == "COMPENSATING"
