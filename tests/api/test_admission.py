"""Admission control: while ADMISSION_MAX_IN_FLIGHT transactions of a mode are on their way, a
new one is refused with 503 and Retry-After, and nothing is written; once they finish (or for
another mode) orders are taken again. No worker runs here, so what is placed stays in flight."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from customers.services import customer_create
from sagas.models import SagaInstance
from tests.api.helpers import all_counts, assert_error

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def place(api: APIClient, customer_id: uuid.UUID, mode: str) -> Any:
    return api.post("/api/orders/", {"customer_id": str(customer_id), "total": "1.00", "mode": mode}, format="json")


@override_settings(ADMISSION_MAX_IN_FLIGHT=3, ADMISSION_RECOUNT_SECONDS=0, ADMISSION_RETRY_AFTER_SECONDS=2)
@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
def test_a_burst_past_the_limit_is_refused_with_503_and_retry_after_and_changes_nothing(api: APIClient, mode: str) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    assert [place(api, customer.id, mode).status_code for _ in range(3)] == [202, 202, 202]
    before = all_counts()
    refused = place(api, customer.id, mode)
    body = assert_error(refused, 503)
    assert refused["Retry-After"] == "2"
    assert body["extra"] == {"mode": mode, "in_flight": 3, "limit": 3, "retry_after_seconds": 2}
    assert all_counts() == before
    # The other asynchronous mode has its own budget.
    other = "choreography" if mode == "orchestration" else "orchestration"
    assert place(api, customer.id, other).status_code == 202


@override_settings(ADMISSION_MAX_IN_FLIGHT=1, ADMISSION_RECOUNT_SECONDS=0)
def test_once_the_transactions_under_way_end_new_ones_are_taken_again(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    first = place(api, customer.id, "orchestration")
    assert first.status_code == 202
    assert_error(place(api, customer.id, "orchestration"), 503)
    SagaInstance.objects.using("sagas").filter(id=first.json()["saga_id"]).update(state="COMPLETED")  # as if it had finished
    assert place(api, customer.id, "orchestration").status_code == 202


@override_settings(ADMISSION_MAX_IN_FLIGHT=0, ADMISSION_RECOUNT_SECONDS=0)
def test_a_limit_of_zero_turns_admission_control_off(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    assert [place(api, customer.id, "choreography").status_code for _ in range(3)] == [202] * 3
