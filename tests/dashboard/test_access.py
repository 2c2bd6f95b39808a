"""A staff user's access: a GET to an action never acts, and a POST without its CSRF token is
refused. Who is refused what (anonymous users sent to the login page, non-staff users 403 from
every page and action, nothing changed) is the authorization matrix,
tests/config/test_authorization_matrix.py, over every dashboard URL the resolver knows."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from config.models import OperatorAction
from sagas.models import SagaStep
from tests.sagas.test_engine import failed_saga, state

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


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
