"""The saga API shows what a running saga awaits and whether it is stuck, and filters by it.

The sagas are driven by the real engine on the real sagas database, reply by reply (as in
tests/sagas/test_engine.py); no worker is needed to read them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from sagas.engine import saga_reply_handle, saga_start, saga_sweep
from sagas.models import SagaInstance, SagaStep
from tests.api.helpers import assert_error
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def no_leftover_messages() -> Any:
    yield
    purge_queues()


def start() -> SagaInstance:
    order_id = uuid.uuid4()
    return saga_start(saga_type="create_order", subject_id=order_id, data={"order_id": str(order_id), "customer_id": str(uuid.uuid4()), "total": "1.00", "mode": "orchestration"})


def answer(saga: SagaInstance, outcome: str = "ok", **extra: Any) -> None:
    step = SagaStep.objects.using("sagas").get(saga=saga, status__in=("WAITING", "RETRY_WAIT"))
    saga_reply_handle({"saga_id": str(saga.id), "command_id": str(step.command_id), "attempt": step.attempts, "outcome": outcome, "data": {}, **extra})


def test_a_running_saga_names_the_step_it_awaits_and_turns_stuck_when_that_step_fails(api: APIClient) -> None:
    saga = start()
    body = api.get(f"/api/sagas/{saga.id}/").json()
    assert body["stuck"] is False
    assert body["awaiting"]["step"] == "create_order" and body["awaiting"]["from_context"] == "orders" and body["awaiting"]["deadline"]
    answer(saga)
    answer(saga, "error", error="OperationalError: the customers database is down", transient=True)
    body = api.get(f"/api/sagas/{saga.id}/").json()
    assert (body["state"], body["stuck"], body["awaiting"]["step"], body["awaiting"]["from_context"]) == ("RUNNING", True, "reserve_credit", "customers")
    assert "customers database is down" in body["last_error"]
    fresh = start()
    listed = api.get("/api/sagas/?stuck=true").json()
    assert [s["id"] for s in listed["results"]] == [str(saga.id)]
    assert str(fresh.id) in [s["id"] for s in api.get("/api/sagas/?stuck=false").json()["results"]]
    assert api.get("/api/sagas/?mode=orchestration").json()["count"] == 2
    assert api.get("/api/sagas/?mode=choreography").json()["count"] == 0


def test_an_overdue_step_is_stuck_and_a_finished_saga_awaits_nothing(api: APIClient) -> None:
    saga = start()
    SagaStep.objects.using("sagas").filter(saga=saga).update(due_at=timezone.now() - dt.timedelta(seconds=1))
    assert api.get(f"/api/sagas/{saga.id}/").json()["stuck"] is True
    saga_sweep()  # timed out, waits for its retry
    for _ in range(3):
        SagaStep.objects.using("sagas").filter(saga=saga, status__in=("WAITING", "RETRY_WAIT")).update(due_at=timezone.now() + dt.timedelta(seconds=60))
        answer(saga)
    body = api.get(f"/api/sagas/{saga.id}/").json()
    assert (body["state"], body["stuck"], body["awaiting"]) == ("COMPLETED", False, None)


@pytest.mark.parametrize("query", ["stuck=maybe", "mode=3pc", "type=refund", "state=DONE"])
def test_bad_filters_are_refused_with_the_error_shape(api: APIClient, query: str) -> None:
    assert_error(api.get(f"/api/sagas/?{query}"), 400)
