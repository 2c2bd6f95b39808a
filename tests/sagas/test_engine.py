"""The orchestrator's state machine on the real sagas database, driven reply by reply.

No workers here: each test plays the participants by handing ``saga_reply_handle`` the replies
they would send, so every branch (refusal, error, timeout, duplicate, operator retry, a new
definition version, the step roles and the outage budget) is exercised deterministically.
tests/e2e/ does it for real.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connections
from django.utils import timezone

from eventlog.messaging import send_task
from sagas import definitions
from sagas.definitions import Action, RetryPolicy, Role, SagaDefinition, Step, definition_problems
from sagas.engine import SagaConflict, saga_reply_handle, saga_retry, saga_start, saga_sweep
from sagas.models import SagaInstance, SagaLogEntry, SagaStep
from tests.conftest import _embedded, _services, eventually, purge_queues

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


def reply(saga: SagaInstance, outcome: str = "ok", *, attempt: int | None = None, transient: bool = False, **extra: Any) -> str:
    step = open_step(saga)
    return saga_reply_handle(
        {
            "saga_id": str(saga.id), "command_id": str(step.command_id), "step": step.name, "attempt": attempt or step.attempts,
            "outcome": outcome, "data": {}, "reason": extra.get("reason"), "error": extra.get("error"), "transient": transient,
        }
    )


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


def fail_attempts(saga: SagaInstance, times: int, *, how: str = "timeout") -> None:
    """The open step fails ``times`` attempts: by its deadline, or by a (not) transient error."""
    for _ in range(times):
        if how == "timeout":
            make_due(saga)
            assert saga_sweep() == {"timed out": 1}
        else:
            assert reply(saga, "error", error="injected", transient=how == "transient") == "retrying"
        if open_step_or_none(saga) is not None and open_step(saga).status == "RETRY_WAIT":
            make_due(saga)
            assert saga_sweep() == {"resent": 1}


def open_step_or_none(saga: SagaInstance) -> SagaStep | None:
    return SagaStep.objects.using("sagas").filter(saga=saga, status__in=("WAITING", "RETRY_WAIT")).first()


def outage_over(saga: SagaInstance, settings: Any) -> None:
    """The open step has been failing for longer than the outage budget."""
    budget = dt.timedelta(seconds=settings.SAGA_OUTAGE_BUDGET_SECONDS * settings.SAGA_TIME_SCALE + 1)
    SagaStep.objects.using("sagas").filter(saga=saga, status__in=("WAITING", "RETRY_WAIT")).update(started_at=timezone.now() - budget)


def test_a_transient_fault_of_the_pivot_shorter_than_the_budget_only_delays(settings: Any) -> None:
    saga = start()
    reply(saga)  # create_order ok; reserve_credit (the pivot) now waits
    fail_attempts(saga, 4, how="timeout")
    fail_attempts(saga, 4, how="transient")  # 8 attempts: more than max_attempts, within the budget
    step = open_step(saga)
    assert (step.name, step.attempts, state(saga)) == ("reserve_credit", 9, "RUNNING")
    assert "injected" in SagaInstance.objects.using("sagas").get(id=saga.id).last_error  # shown while it waits
    assert reply(saga) == "advanced"  # the customers database is back
    assert reply(saga) == "advanced"
    assert state(saga) == "COMPLETED"


def test_an_outage_longer_than_the_budget_compensates_the_pivot_with_the_steps_before_it(settings: Any) -> None:
    saga = start()
    reply(saga)
    fail_attempts(saga, 5, how="timeout")
    assert state(saga) == "RUNNING"
    outage_over(saga, settings)
    make_due(saga)
    assert saga_sweep() == {"timed out": 1}
    names = [(n, k, s) for n, k, s, _ in timeline(saga)]
    # reserve_credit gave up with an unknown outcome: it is compensated too, then create_order.
    assert names[1] == ("reserve_credit", "forward", "FAILED")
    assert names[2] == ("reserve_credit", "compensation", "WAITING")
    assert "timed out" in SagaStep.objects.using("sagas").get(saga=saga, name="reserve_credit", kind="forward").error
    reply(saga)
    assert open_step(saga).name == "create_order"
    reply(saga)
    assert state(saga) == "COMPENSATED"


def test_a_failure_that_is_not_transient_gives_up_the_pivot_after_its_attempts() -> None:
    saga = start()
    reply(saga)
    fail_attempts(saga, 5, how="permanent")
    assert [(n, k, s) for n, k, s, _ in timeline(saga)][1:] == [("reserve_credit", "forward", "FAILED"), ("reserve_credit", "compensation", "WAITING")]
    assert state(saga) == "COMPENSATING"


@pytest.mark.parametrize("how", ["timeout", "transient", "permanent"])
def test_a_retriable_step_is_retried_until_it_succeeds_and_never_compensated(how: str, settings: Any) -> None:
    """Finding 1: approve_order after the pivot used to be given up on, compensating a
    transaction that had succeeded (and leaving an APPROVED order without its credit)."""
    saga = start()
    reply(saga)
    reply(saga)  # the pivot succeeded: the saga is committed to finishing
    fail_attempts(saga, 12, how=how)
    outage_over(saga, settings)
    fail_attempts(saga, 1, how=how)
    step = open_step(saga)
    assert (step.name, step.kind, step.attempts, state(saga)) == ("approve_order", "forward", 14, "RUNNING")
    assert not SagaStep.objects.using("sagas").filter(saga=saga, kind="compensation").exists()
    assert reply(saga) == "advanced"
    assert state(saga) == "COMPLETED"


def test_a_compensation_waits_out_any_transient_fault(settings: Any) -> None:
    saga = start()
    reply(saga)
    reply(saga, "refused", reason="INSUFFICIENT_CREDIT")
    fail_attempts(saga, 10, how="transient")
    outage_over(saga, settings)
    fail_attempts(saga, 2, how="timeout")
    step = open_step(saga)
    assert (step.kind, step.attempts, state(saga)) == ("compensation", 13, "COMPENSATING")
    reply(saga)
    assert state(saga) == "COMPENSATED"


def failed_saga() -> SagaInstance:
    """A saga whose compensation (rejecting the order) failed permanently 5 times: FAILED."""
    saga = start()
    reply(saga)
    reply(saga, "refused", reason="UNKNOWN_CUSTOMER")
    fail_attempts(saga, 5, how="permanent")
    assert state(saga) == "FAILED"
    return saga


def test_a_compensation_that_keeps_failing_ends_failed_until_an_operator_retries() -> None:
    saga = failed_saga()
    assert SagaLogEntry.objects.using("sagas").filter(saga=saga, event="failed").exists()
    with pytest.raises(SagaConflict):
        saga_retry(start().id)  # only a FAILED saga can be retried
    saga_retry(saga.id)
    step = open_step(saga)
    # Attempts go on counting sends; the operator's retry gets a whole new budget.
    assert (state(saga), step.status, step.attempts) == ("COMPENSATING", "WAITING", 6)
    fail_attempts(saga, 4, how="permanent")
    assert state(saga) == "COMPENSATING"
    reply(saga)
    assert state(saga) == "COMPENSATED"


def test_an_error_reply_of_an_older_attempt_cannot_fail_the_current_one() -> None:
    """Finding 4: a delayed error of attempt 1 used to fail attempt 2."""
    saga = start()
    make_due(saga)
    assert saga_sweep() == {"timed out": 1}  # attempt 1 failed by its deadline
    assert reply(saga, "error", attempt=1, error="late") == "ignored"  # ...and its error is late too
    make_due(saga)
    assert saga_sweep() == {"resent": 1}
    assert reply(saga, "error", attempt=1, error="later still") == "ignored"
    step = open_step(saga)
    assert (step.status, step.attempts) == ("WAITING", 2)
    assert SagaLogEntry.objects.using("sagas").filter(saga=saga, event="stale_error").count() == 2
    assert reply(saga, "ok", attempt=1) == "advanced"  # a success of any attempt is welcome


@contextmanager
def broker_stopped() -> Iterator[None]:
    """The session's broker really stopped (the embedded one, or the tier's Redis), then back."""
    if "stack" in _embedded:
        stack = _embedded["stack"]
        stack.processes["broker"].stop()
        try:
            yield
        finally:
            stack.start_embedded_broker()
            stack.wait_ready(["broker"], timeout=20)
    else:
        _services("stop-redis")
        try:
            yield
        finally:
            _services("start-redis")
    # Sends back off for a few seconds after a failure; wait until one goes through.
    eventually(lambda: send_task("sagas.sweep"), timeout=30, interval=0.5, message="the broker to take a message again")


def test_an_attempt_counts_only_once_its_command_is_sent() -> None:
    """Finding 4: a send skipped while the broker was down used to count as an attempt."""
    with broker_stopped():
        saga = start()
        step = open_step(saga)
        assert (step.status, step.attempts) == ("RETRY_WAIT", 0)
        assert SagaLogEntry.objects.using("sagas").filter(saga=saga, event="send_failed").exists()
    make_due(saga)
    assert saga_sweep() == {"resent": 1}
    step = open_step(saga)
    assert (step.status, step.attempts) == ("WAITING", 1)
    assert reply(saga) == "advanced"


def test_a_refused_retriable_step_fails_the_saga_for_an_operator_instead_of_compensating() -> None:
    saga = start()
    reply(saga)
    reply(saga)
    assert reply(saga, "refused", reason="InvalidOrderState", error="order is REJECTED; cannot approve") == "failed"
    assert state(saga) == "FAILED"
    assert not SagaStep.objects.using("sagas").filter(saga=saga, kind="compensation").exists()
    old_id = SagaStep.objects.using("sagas").get(saga=saga, name="approve_order").command_id
    saga_retry(saga.id)
    step = open_step(saga)
    assert (step.name, state(saga)) == ("approve_order", "RUNNING") and step.command_id != old_id  # asked afresh
    reply(saga)
    assert state(saga) == "COMPLETED"


def test_the_shipped_definitions_keep_the_step_role_rules() -> None:
    for definition in definitions.DEFINITIONS.values():
        assert definition_problems(definition) == [], definition.type
    assert [s.role for s in definitions.CREATE_ORDER_V1.steps] == [Role.COMPENSATABLE, Role.PIVOT, Role.RETRIABLE]
    assert [s.role for s in definitions.CANCEL_ORDER_V1.steps] == [Role.COMPENSATABLE, Role.PIVOT, Role.RETRIABLE]


def test_a_definition_that_breaks_the_step_role_rules_fails_the_system_check(monkeypatch: pytest.MonkeyPatch) -> None:
    act = Action("orders.order_approve", lambda d: {})
    bad = SagaDefinition(
        type="bad",
        version=1,
        steps=(
            Step("first", act),  # compensatable, but without a compensation
            Step("pivot", act, compensation=act, role=Role.PIVOT),
            Step("after", act, compensation=act, role=Role.RETRIABLE),  # undoing after the point of no return
        ),
    )
    assert definition_problems(bad) == ["step 0 (first, compensatable) needs a compensation", "step 2 (after, retriable) is retriable, so it must not have a compensation: it runs after the point of no return"]
    assert definition_problems(SagaDefinition("none", 1, (Step("a", act, compensation=act),))) == ["needs exactly one pivot step, has 0"]
    before = SagaDefinition("early", 1, (Step("a", act, role=Role.RETRIABLE), Step("p", act, compensation=act, role=Role.PIVOT)))
    assert definition_problems(before) == ["step 0 (a, retriable) comes before the pivot, so it must be compensatable"]
    call_command("check")  # the shipped definitions pass
    monkeypatch.setitem(definitions.DEFINITIONS, ("bad", 1), bad)
    with pytest.raises(SystemCheckError, match="sagas.E001"):
        call_command("check")


def test_one_active_saga_per_subject() -> None:
    saga = start()
    with pytest.raises(SagaConflict):
        saga_start(saga_type="cancel_order", subject_id=saga.subject_id, data={"order_id": str(saga.subject_id), "customer_id": str(uuid.uuid4()), "total": "1.00"})


def test_a_running_saga_finishes_on_the_definition_version_it_started_with(monkeypatch: pytest.MonkeyPatch) -> None:
    saga = start()
    reply(saga)
    audit = Action("orders.order_audit", lambda d: {})
    version_two = SagaDefinition(
        type="create_order",
        version=2,
        steps=(Step("audit", audit, compensation=audit), *definitions.CREATE_ORDER_V1.steps),
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


def test_a_reply_that_moves_a_saga_on_is_two_reads_and_one_write() -> None:
    """A regression guard on the hot path (issue 12): lock the instance, read the step, then
    every write of the transition (the step, the next step, the instance, its log lines) held
    back and sent at its end: one statement on PostgreSQL, one per table and kind elsewhere."""
    saga = start()
    connection = connections["sagas"]
    sent: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        assert reply(saga) == "advanced"
    reads = [sql for sql in sent if sql.lstrip().upper().startswith("SELECT")]
    # The test's own ``open_step`` read comes first.
    assert len(reads) == 3, sent
    writes = [sql for sql in sent if sql not in reads and not sql.startswith("BEGIN")]  # SQLite's BEGIN IMMEDIATE
    assert len(writes) == (1 if connection.vendor == "postgresql" else 4), writes
    assert timeline(saga) == [("create_order", "forward", "SUCCEEDED", 1), ("reserve_credit", "forward", "WAITING", 1)]
    assert state(saga) == "RUNNING"
