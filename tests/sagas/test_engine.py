"""The orchestrator's state machine on the real sagas database, driven reply by reply.

No workers here: each test plays the participants by handing ``saga_reply_handle`` the replies
they would send, so every branch (refusal, error, timeout, duplicate, operator retry, a new
definition version) is exercised deterministically. tests/e2e/test_sagas.py does it for real.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.utils import timezone

from sagas import definitions
from sagas.definitions import Action, RetryPolicy, SagaDefinition, Step
from sagas.engine import SagaConflict, saga_reply_handle, saga_retry, saga_start, saga_sweep
from sagas.models import SagaInstance, SagaLogEntry, SagaStep
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def no_leftover_messages() -> Any:
    yield
    purge_queues()  # the commands these tests send have no consumer


def start(total: str = "10.00") -> SagaInstance:
    order_id = uuid.uuid4()
    return saga_start(saga_type="create_order", subject_id=order_id, data={"order_id": str(order_id), "customer_id": str(uuid.uuid4()), "total": total, "mode": "orchestration"})


def open_step(saga: SagaInstance) -> SagaStep:
    return SagaStep.objects.using("sagas").get(saga=saga, status__in=("WAITING", "RETRY_WAIT"))


def reply(saga: SagaInstance, outcome: str = "ok", **extra: Any) -> str:
    step = open_step(saga)
    return saga_reply_handle({"saga_id": str(saga.id), "command_id": str(step.command_id), "step": step.name, "outcome": outcome, "data": {}, "reason": extra.get("reason"), "error": extra.get("error")})


def timeline(saga: SagaInstance) -> list[tuple[str, str, str, int]]:
    return list(SagaStep.objects.using("sagas").filter(saga=saga).order_by("id").values_list("name", "kind", "status", "attempts"))


def state(saga: SagaInstance) -> str:
    return SagaInstance.objects.using("sagas").get(id=saga.id).state


def make_due(saga: SagaInstance) -> None:
    SagaStep.objects.using("sagas").filter(saga=saga, status__in=("WAITING", "RETRY_WAIT")).update(due_at=timezone.now() - dt.timedelta(seconds=1))


def test_the_happy_path_runs_every_step_in_order() -> None:
    saga = start()
    step = open_step(saga)
    assert (step.name, step.command, step.payload["total"]) == ("create_order", "orders.order_create", "10.00")
    assert step.due_at is not None and step.due_at > timezone.now()
    for _ in range(3):
        assert reply(saga) == "advanced"
    assert state(saga) == "COMPLETED"
    assert [(n, k, s) for n, k, s, _ in timeline(saga)] == [("create_order", "forward", "SUCCEEDED"), ("reserve_credit", "forward", "SUCCEEDED"), ("approve_order", "forward", "SUCCEEDED")]
    assert SagaInstance.objects.using("sagas").get(id=saga.id).ended_at is not None


def test_a_duplicate_or_late_reply_changes_nothing() -> None:
    saga = start()
    step = open_step(saga)
    message = {"saga_id": str(saga.id), "command_id": str(step.command_id), "step": step.name, "outcome": "ok", "data": {}}
    assert saga_reply_handle(message) == "advanced"
    before = (timeline(saga), SagaInstance.objects.using("sagas").get(id=saga.id).version)
    assert saga_reply_handle(message) == "ignored"
    assert saga_reply_handle({**message, "command_id": str(uuid.uuid4())}) == "ignored"
    assert (timeline(saga), SagaInstance.objects.using("sagas").get(id=saga.id).version) == before


def test_a_refusal_compensates_completed_steps_in_reverse_one_at_a_time() -> None:
    saga = start()
    reply(saga)  # create_order ok
    assert reply(saga, "refused", reason="INSUFFICIENT_CREDIT") == "compensating"
    assert state(saga) == "COMPENSATING"
    compensation = open_step(saga)
    assert (compensation.name, compensation.kind, compensation.command) == ("create_order", "compensation", "orders.order_reject")
    assert compensation.payload["reason"] == "INSUFFICIENT_CREDIT"
    reply(saga)
    assert state(saga) == "COMPENSATED"


def test_a_technical_error_is_retried_with_backoff_and_the_same_command_id() -> None:
    saga = start()
    first = open_step(saga)
    assert reply(saga, "error", error="database unreachable") == "retrying"
    waiting = open_step(saga)
    assert waiting.status == "RETRY_WAIT" and waiting.due_at is not None
    assert saga_sweep() == {}  # not due yet: the deadline is in the database, not in a countdown
    make_due(saga)
    assert saga_sweep() == {"resent": 1}
    again = open_step(saga)
    assert (again.status, again.attempts, again.command_id) == ("WAITING", 2, first.command_id)
    assert reply(saga) == "advanced"  # the retry worked


def test_a_timeout_counts_as_a_failed_attempt_and_exhausting_them_compensates() -> None:
    saga = start()
    reply(saga)  # create_order ok; reserve_credit now waits
    for attempt in range(1, 6):
        make_due(saga)
        assert saga_sweep() == {"timed out": 1}
        if attempt < 5:
            make_due(saga)
            assert saga_sweep() == {"resent": 1}
    names = [(n, k, s) for n, k, s, _ in timeline(saga)]
    # reserve_credit gave up with an unknown outcome: it is compensated too, then create_order.
    assert names[1] == ("reserve_credit", "forward", "FAILED")
    assert names[2] == ("reserve_credit", "compensation", "WAITING")
    assert "timed out" in SagaStep.objects.using("sagas").get(saga=saga, name="reserve_credit", kind="forward").error
    reply(saga)
    assert open_step(saga).name == "create_order"
    reply(saga)
    assert state(saga) == "COMPENSATED"


def test_a_compensation_that_keeps_failing_ends_failed_until_an_operator_retries() -> None:
    saga = start()
    reply(saga)
    reply(saga, "refused", reason="UNKNOWN_CUSTOMER")
    for _ in range(5):
        reply(saga, "error", error="injected")
        if state(saga) == "FAILED":
            break
        make_due(saga)
        saga_sweep()
    assert state(saga) == "FAILED"
    assert SagaLogEntry.objects.using("sagas").filter(saga=saga, event="failed").exists()
    with pytest.raises(SagaConflict):
        saga_retry(start().id)  # only a FAILED saga can be retried
    saga_retry(saga.id)
    assert state(saga) == "COMPENSATING" and open_step(saga).attempts == 1
    reply(saga)
    assert state(saga) == "COMPENSATED"


def test_one_active_saga_per_subject() -> None:
    saga = start()
    with pytest.raises(SagaConflict):
        saga_start(saga_type="cancel_order", subject_id=saga.subject_id, data={"order_id": str(saga.subject_id), "customer_id": str(uuid.uuid4()), "total": "1.00"})


def test_a_running_saga_finishes_on_the_definition_version_it_started_with(monkeypatch: pytest.MonkeyPatch) -> None:
    saga = start()
    reply(saga)
    version_two = SagaDefinition(
        type="create_order",
        version=2,
        steps=(Step("audit", Action("orders.order_audit", lambda d: {})), *definitions.CREATE_ORDER_V1.steps),
    )
    monkeypatch.setitem(definitions.DEFINITIONS, ("create_order", 2), version_two)
    assert open_step(saga).name == "reserve_credit"  # v1's second step, not v2's
    reply(saga)
    reply(saga)
    assert state(saga) == "COMPLETED"
    assert SagaInstance.objects.using("sagas").get(id=saga.id).definition_version == 1
    assert start().definition_version == 2  # new sagas take the newest version


def test_retry_policy_backs_off_exponentially_up_to_a_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_interval=1.0, backoff=2.0, maximum_interval=100.0)
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 64, 100]
