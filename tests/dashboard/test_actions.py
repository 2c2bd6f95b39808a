"""Each dashboard action, confirmed and posted as an operator would, acting through the real
service and audited: its effect is checked in the context's own tables, and the audit row on
the saga's page."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from config.models import OperatorAction
from eventlog.subscriptions import parked_events
from readmodels.models import OrderSummary, ProjectionCheckpoint
from sagas.models import SagaInstance
from tests.conftest import requires_postgres
from tests.dashboard.conftest import advance_everything, choreographed_order, orders_trigger
from tests.sagas.test_engine import failed_saga, open_step, reply, start, state

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def confirm(client: Client, action: str, query: str) -> str:
    """Open the action's page (its dry run), then post its confirmation form as it stands."""
    page = client.get(f"/dashboard/actions/{action}/?{query}")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="dry-run"' in body, body
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body)
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    response = client.post(f"/dashboard/actions/{action}/", data, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def test_retry_a_failed_saga_and_see_it_audited_on_its_page(staff: Client) -> None:
    saga = failed_saga()
    page = confirm(staff, "saga-retry", f"saga={saga.id}")
    assert state(saga) == "COMPENSATING" and open_step(saga).attempts == 6
    audit = page.split('id="audit"')[1]
    assert "operator" in audit and "saga-retry" in audit and "ok:" in audit
    row = OperatorAction.objects.get()
    assert (row.username, row.action, row.saga_id, row.ok) == ("operator", "saga-retry", saga.id, True)
    reply(saga)
    assert state(saga) == "COMPENSATED"


def test_a_refused_action_is_shown_without_a_confirm_button_and_a_forced_post_is_audited_as_failed(staff: Client) -> None:
    saga = start()
    page = staff.get(f"/dashboard/actions/saga-retry/?saga={saga.id}").content.decode()
    assert "This cannot be done" in page and "only a FAILED saga can be retried" in page and 'id="confirm"' not in page
    staff.post("/dashboard/actions/saga-retry/", {"saga": str(saga.id)})
    assert state(saga) == "RUNNING"
    row = OperatorAction.objects.get()
    assert (row.ok, row.saga_id) == (False, saga.id) and "only a FAILED saga" in row.outcome


def test_resume_a_stuck_saga(staff: Client) -> None:
    saga = start()
    reply(saga, "error", error="participant down", transient=True)
    assert open_step(saga).status == "RETRY_WAIT"
    confirm(staff, "saga-resume", f"saga={saga.id}")
    assert (open_step(saga).status, open_step(saga).attempts) == ("WAITING", 2)


def test_abort_a_running_saga_before_its_pivot(staff: Client) -> None:
    saga = start()
    reply(saga)
    page = staff.get(f"/dashboard/sagas/{saga.id}/").content.decode()
    assert f"/dashboard/actions/saga-abort/?saga={saga.id}" in page
    confirm(staff, "saga-abort", f"saga={saga.id}")
    assert state(saga) == "COMPENSATING" and (open_step(saga).name, open_step(saga).kind) == ("reserve_credit", "compensation")


def test_bulk_retry_previews_the_count_and_retries_exactly_those(staff: Client) -> None:
    failed = [failed_saga(), failed_saga()]
    page = staff.get("/dashboard/actions/sagas-retry-failed/?type=create_order").content.decode()
    assert "2 FAILED saga(s) match; 2 would be retried" in page and "(2 sagas)" in page
    late = failed_saga()  # fails after the preview: not what the operator confirmed
    fields = re.findall(r'<input type="hidden" name="saga" value="([^"]*)">', page)
    assert sorted(fields) == sorted(str(s.id) for s in failed)
    staff.post("/dashboard/actions/sagas-retry-failed/", {"saga": fields, "type": "create_order"})
    assert [state(s) for s in failed] == ["COMPENSATING", "COMPENSATING"] and state(late) == "FAILED"
    assert sorted(OperatorAction.objects.values_list("saga_id", flat=True)) == sorted(s.id for s in failed)  # type: ignore[type-var]  # every audited row here has its saga id
    assert "1 FAILED saga(s) match" in staff.get("/dashboard/actions/sagas-retry-failed/").content.decode()  # the late one


def test_retry_a_parked_choreography_event_finishes_the_flow(staff: Client) -> None:
    orders_trigger(True)
    try:
        flow = choreographed_order()
        advance_everything(times=8)  # the approval fails 5 times, then is parked
        parked = parked_events(saga_id=flow["saga_id"])
        assert len(parked) == 1 and parked[0].parked_at is not None and "injected fault" in parked[0].error
        page = staff.get(f"/dashboard/sagas/{flow['saga_id']}/").content.decode()
        assert "/dashboard/actions/parked-retry/?event=" in page
    finally:
        orders_trigger(False)
    result = confirm(staff, "parked-retry", f"event={parked[0].event_id}&subscriber={parked[0].subscriber}&saga={flow['saga_id']}")
    assert "done" in result
    assert parked_events(saga_id=flow["saga_id"]) == []
    advance_everything()
    assert SagaInstance.objects.using("sagas").get(id=flow["saga_id"]).state == "COMPLETED"
    assert "parked-retry" in result.split('id="audit"')[1]


def test_rebuild_a_projection(staff: Client) -> None:
    flow = choreographed_order()
    advance_everything()
    OrderSummary.objects.using("readmodels").filter(id=flow["order_id"]).update(state="CORRUPTED")
    page = staff.get("/dashboard/actions/projection-rebuild/?projection=order_summary").content.decode()
    assert "order_summary would be folded from the whole log" in page
    assert OrderSummary.objects.using("readmodels").get(id=flow["order_id"]).state == "CORRUPTED"  # the dry run did nothing
    result = confirm(staff, "projection-rebuild", "projection=order_summary")
    assert "order_summary rebuilt" in result
    assert OrderSummary.objects.using("readmodels").get(id=flow["order_id"]).state == "APPROVED"
    assert not ProjectionCheckpoint.objects.using("readmodels").filter(subscriber__endswith="#rebuild").exists()
    row = OperatorAction.objects.get()
    assert (row.action, row.target, row.ok) == ("projection-rebuild", "order_summary", True)


@requires_postgres
def test_resolve_an_in_doubt_2pc_transaction_from_the_overview(staff: Client) -> None:
    """A coordinator that died after preparing both branches and logging COMMIT: the overview
    lists it with its age and prepared branches, its page says so, and the action (dry run,
    then the POST) commits it through resolve_in_doubt, audited."""
    from django.test import override_settings

    from customers.models import Customer
    from customers.services import customer_create
    from eventlog.twophase import prepared_list
    from sagas.coordinator import COMMIT, _decide, _Phases, gid
    from tests.api.test_two_phase import _leave_prepared, record_in_doubt

    customer = customer_create(name="Ada", credit_limit="100.00")
    saga = record_in_doubt(customer.id)
    _leave_prepared(saga.id, "orders")
    _leave_prepared(saga.id, "customers")
    assert _decide(saga.id, COMMIT, _Phases(saga_id=saga.id, actor="coordinator")) == COMMIT
    overview = staff.get("/dashboard/summary/").content.decode()
    listed = overview.split('id="in-doubt-2pc"')[1].split("</div>")[0]
    assert str(saga.id) in listed and "COMMIT" in listed and "orders (" in listed and "customers (" in listed
    page = staff.get(f"/dashboard/sagas/{saga.id}/").content.decode()
    assert 'id="in-doubt"' in page and gid(saga.id, "customers") in page
    with override_settings(TWO_PC_DECIDED_GRACE_SECONDS=0):
        preview = staff.get("/dashboard/actions/two-phase-resolve/").content.decode()
        assert f"would commit {gid(saga.id, 'orders')}" in preview and len(prepared_list("orders")) == 1  # the dry run changed nothing
        confirm(staff, "two-phase-resolve", "")
    assert prepared_list("orders") == [] and prepared_list("customers") == []
    saga.refresh_from_db()
    assert saga.state == "COMPLETED"
    assert Customer.objects.using("customers").get(id=customer.id).credit_reserved == 0  # the prepared branches here carried no work
    rows = list(OperatorAction.objects.filter(action="two-phase-resolve").values_list("saga_id", "ok"))
    assert (saga.id, True) in rows and (None, True) in rows
