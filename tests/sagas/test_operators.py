"""The engine's operator services (retry, resume or time out, abort before the pivot) on the real
sagas database, and their dry run: the same transition, rolled back, that says what it does.

The dashboard's actions and ``manage.py recover_sagas`` both call these; tests/dashboard/ drives
them through the dashboard, tests/e2e/ through real workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from sagas.engine import SagaConflict, saga_abort, saga_resume, saga_retry
from sagas.models import SagaInstance, SagaLogEntry, SagaStep
from tests.conftest import purge_queues
from tests.sagas.test_engine import failed_saga, open_step, reply, start, state, timeline

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def no_leftover_messages() -> Iterator[None]:
    yield
    purge_queues()  # the commands these tests send have no consumer


def rows(saga: SagaInstance) -> tuple[Any, ...]:
    """Everything an operator action could change about a saga."""
    return (
        tuple(SagaInstance.objects.using("sagas").filter(id=saga.id).values_list("state", "version", "last_error")),
        tuple(SagaStep.objects.using("sagas").filter(saga=saga).order_by("id").values_list("name", "kind", "status", "attempts", "due_at", "command_id")),
        SagaLogEntry.objects.using("sagas").filter(saga=saga).count(),
    )


def test_a_dry_run_says_what_the_action_does_and_changes_nothing() -> None:
    saga = failed_saga()
    before = rows(saga)
    preview = saga_retry(saga.id, dry_run=True)
    assert preview.dry_run and preview.state == "COMPENSATING"
    assert any("operator_retry" in line and "orders.order_reject attempt 6" in line for line in preview.did), preview.did
    assert rows(saga) == before
    done = saga_retry(saga.id, operator="alice")
    assert (done.dry_run, done.state) == (False, "COMPENSATING")
    # The run did what its dry run said, and the saga's log names the operator.
    assert [line.split(" (by")[0] for line in done.did] == [line for line in preview.did]
    assert SagaLogEntry.objects.using("sagas").filter(saga=saga, event="operator_retry", detail__contains="by alice").exists()
    reply(saga)
    assert state(saga) == "COMPENSATED"


def test_resume_sends_a_step_waiting_to_be_retried_now() -> None:
    saga = start()
    reply(saga, "error", error="injected", transient=True)
    step = open_step(saga)
    assert (step.status, step.attempts) == ("RETRY_WAIT", 1)
    preview = saga_resume(saga.id, dry_run=True)
    assert any("send the awaited step now" in line for line in preview.did) and any("attempt 2" in line for line in preview.did)
    assert open_step(saga).status == "RETRY_WAIT"
    saga_resume(saga.id)
    step = open_step(saga)
    assert (step.status, step.attempts, step.command_id) == ("WAITING", 2, open_step(saga).command_id)


def test_resume_times_out_a_reply_that_is_still_awaited_now() -> None:
    saga = start()
    assert open_step(saga).status == "WAITING"
    outcome = saga_resume(saga.id)
    assert any("timed out" in line for line in outcome.did), outcome.did
    step = open_step(saga)
    assert (step.status, step.attempts) == ("RETRY_WAIT", 1)
    assert "timed out" in step.error


def test_resume_refuses_a_saga_that_has_ended() -> None:
    saga = start()
    for _ in range(3):
        reply(saga)
    with pytest.raises(SagaConflict):
        saga_resume(saga.id, dry_run=True)


def test_abort_before_the_pivot_compensates_the_step_in_flight_and_those_before_it() -> None:
    saga = start()
    reply(saga)  # create_order succeeded; reserve_credit (the pivot) is in flight
    preview = saga_abort(saga.id, dry_run=True)
    assert preview.state == "COMPENSATING" and any("operator_abort" in line for line in preview.did)
    assert state(saga) == "RUNNING"
    saga_abort(saga.id, operator="alice")
    assert state(saga) == "COMPENSATING"
    assert timeline(saga)[-2:] == [("reserve_credit", "forward", "FAILED", 1), ("reserve_credit", "compensation", "WAITING", 1)]
    reply(saga)  # credit_release: a no-op with a tombstone, had the reservation never happened
    assert open_step(saga).name == "create_order" and open_step(saga).kind == "compensation"
    reply(saga)
    assert state(saga) == "COMPENSATED"


def test_abort_after_the_pivot_is_refused_and_changes_nothing() -> None:
    saga = start()
    reply(saga)
    reply(saga)  # the pivot succeeded: the saga is committed to finishing
    before = rows(saga)
    with pytest.raises(SagaConflict, match="past its pivot"):
        saga_abort(saga.id)
    assert rows(saga) == before


def test_recover_sagas_offers_the_same_actions_and_their_dry_run() -> None:
    saga = start()
    reply(saga)
    out = StringIO()
    call_command("recover_sagas", "--abort", str(saga.id), "--dry-run", stdout=out)
    assert f"would be aborting create_order {saga.id}: would be COMPENSATING" in out.getvalue()
    assert state(saga) == "RUNNING"
    call_command("recover_sagas", "--abort", str(saga.id), stdout=out)
    assert state(saga) == "COMPENSATING"
    with pytest.raises(CommandError, match="only a RUNNING orchestrated saga"):
        call_command("recover_sagas", "--abort", str(saga.id), stdout=out)
