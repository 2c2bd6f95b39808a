"""The 2PC coordinator through the orders API, on the real databases: the final state in the
answer, both halves or neither, the phases in the coordinator log, recovery's rules (commit
what the log says COMMIT, presume abort only after the safety interval, never touch another
node's transactions), and the refusal where the databases cannot prepare transactions.

The kill-at-each-point tests, with real coordinator processes, are in tests/e2e/test_two_phase.py.
"""

from __future__ import annotations

import os
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from customers.models import Customer, CustomerEvent
from customers.services import customer_create
from eventlog.twophase import Branch, prepared_list
from orders.models import Order, OrderEvent
from sagas.coordinator import gid, in_doubt_resolve, order_two_phase_place
from sagas.models import CoordinatorLogEntry, SagaInstance
from tests.api.helpers import all_counts, assert_error, is_uuid, project
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

PLACE_PHASES = ["begin", "work customers", "work orders", "prepare orders", "prepare customers", "decision", "commit orders", "commit customers", "end"]


def place(api: APIClient, customer_id: uuid.UUID, total: str, **headers: str) -> Any:
    return api.post("/api/orders/", {"customer_id": str(customer_id), "total": total, "mode": "2pc"}, format="json", **headers)  # type: ignore[arg-type]  # extra headers go to **extra; mypy matches them against follow


@pytest.mark.skipif(
    os.environ.get("EVENTLOG_DATABASE_URL", "").startswith("postgres"),
    reason="this tier's PostgreSQL prepares transactions; the refusal on a server with max_prepared_transactions = 0 is in tests/e2e/test_two_phase.py",
)
def test_where_the_databases_cannot_prepare_transactions_2pc_is_400_and_nothing_is_written(api: APIClient) -> None:
    """The embedded default (SQLite) has no 2PC: a clear 400 naming the need, nothing created."""
    customer = customer_create(name="Ada", credit_limit="100.00")
    before = all_counts()
    response = place(api, customer.id, "10.00", HTTP_IDEMPOTENCY_KEY="k-1")
    body = assert_error(response, 400)
    assert "PostgreSQL with max_prepared_transactions above zero" in body["message"]
    assert body["extra"]["mode"] == "2pc" and len(body["extra"]["problems"]) == 2
    assert all_counts() == before


@requires_postgres
def test_a_2pc_order_answers_201_with_its_final_state_and_both_halves_committed(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    response = place(api, customer.id, "60.00")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["state"], body["rejection_reason"], body["mode"], body["version"]) == ("APPROVED", None, "2pc", 2) and is_uuid(body["saga_id"])
    assert response["Location"] == f"/api/orders/{body['id']}/?min_version=2"
    order = Order.objects.using("orders").get(id=body["id"])
    assert (order.state, str(order.saga_id)) == ("APPROVED", body["saga_id"])
    assert Customer.objects.using("customers").get(id=customer.id).credit_reserved == Decimal("60.00")
    events = list(OrderEvent.objects.using("orders").filter(stream_id=body["id"]).order_by("version").values_list("type", "saga_id"))
    assert events == [("OrderCreated", uuid.UUID(body["saga_id"])), ("OrderApproved", uuid.UUID(body["saga_id"]))]
    saga = api.get(f"/api/sagas/{body['saga_id']}/").json()
    assert (saga["mode"], saga["state"], saga["type"], saga["in_doubt"], saga["awaiting"]) == ("2pc", "COMPLETED", "create_order", None, None)
    assert [step["name"] for step in saga["steps"]] == PLACE_PHASES
    assert all(step["started_at"] <= step["ended_at"] for step in saga["steps"])
    assert [s["outcome"] for s in saga["steps"] if s["name"] == "decision"] == ["COMMIT"]
    assert prepared_list("orders") == [] and prepared_list("customers") == []
    project()
    assert api.get(response["Location"]).json()["state"] == "APPROVED"
    call_command("verify")


@requires_postgres
@pytest.mark.parametrize(("total", "known", "reason"), [("100.01", True, "INSUFFICIENT_CREDIT"), ("5.00", False, "UNKNOWN_CUSTOMER")])
def test_a_refusal_rolls_both_halves_back_and_stores_the_order_rejected(api: APIClient, total: str, known: bool, reason: str) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    customer_id = customer.id if known else uuid.uuid4()
    response = place(api, customer_id, total)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["state"], body["rejection_reason"], body["version"]) == ("REJECTED", reason, 2)
    # The customers half was rolled back: not even its CreditReservationFailed is kept.
    assert list(CustomerEvent.objects.using("customers").values_list("type", flat=True)) == ["CustomerCreated"]
    assert list(OrderEvent.objects.using("orders").filter(stream_id=body["id"]).order_by("version").values_list("type", flat=True)) == ["OrderCreated", "OrderRejected"]
    saga = SagaInstance.objects.using("sagas").get(id=body["saga_id"])
    assert saga.state == "COMPENSATED"
    phases = list(CoordinatorLogEntry.objects.using("sagas").filter(saga=saga).values_list("phase", "branch", "outcome"))
    assert ("decision", "", "ABORT") in phases and ("rollback", "customers", "ok") in phases and ("store", "orders", "ok") in phases
    assert prepared_list("customers") == []


@requires_postgres
def test_equality_with_the_available_credit_is_approved_and_cancel_is_2pc_too(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    body = place(api, customer.id, "100.00").json()
    assert body["state"] == "APPROVED"
    cancelled = api.post(f"/api/orders/{body['id']}/cancel/")
    assert cancelled.status_code == 202, cancelled.content
    answer = cancelled.json()
    assert (answer["state"], answer["version"]) == ("CANCELLED", 4) and answer["saga_id"] != body["saga_id"]
    assert cancelled["Location"] == f"/api/orders/{body['id']}/?min_version=4"
    assert Customer.objects.using("customers").get(id=customer.id).credit_reserved == Decimal("0.00")
    saga = SagaInstance.objects.using("sagas").get(id=answer["saga_id"])
    assert (saga.type, saga.mode, saga.state) == ("cancel_order", "2pc", "COMPLETED")
    assert_error(api.post(f"/api/orders/{body['id']}/cancel/"), 409)  # CANCELLED now
    project()
    call_command("verify")


@requires_postgres
def test_a_repeat_with_the_same_idempotency_key_gets_the_final_answer_again(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    first = place(api, customer.id, "10.00", HTTP_IDEMPOTENCY_KEY="two-phase-1")
    again = place(api, customer.id, "10.00", HTTP_IDEMPOTENCY_KEY="two-phase-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Order.objects.using("orders").count() == 1
    assert Customer.objects.using("customers").get(id=customer.id).credit_reserved == Decimal("10.00")


def record_in_doubt(customer_id: uuid.UUID) -> SagaInstance:
    """The record a coordinator writes before its branches begin (RUNNING, undecided), for an
    order of 5.00: what a coordinator that died leaves in the log."""
    now = timezone.now()
    return SagaInstance.objects.using("sagas").create(
        id=uuid.uuid4(), type="create_order", mode="2pc", definition_version=1, state="RUNNING", subject_id=uuid.uuid4(),
        data={"order_id": str(uuid.uuid4()), "customer_id": str(customer_id), "total": "5.00", "node": "node1"}, correlation_id=uuid.uuid4(),
        created_at=now, updated_at=now,
    )


def _leave_prepared(transaction_id: uuid.UUID, alias: str) -> None:
    """A branch of ours, prepared and abandoned, as a coordinator that died would leave it."""
    branch = Branch(alias=alias, gid=gid(transaction_id, alias))
    branch.begin()
    branch.prepare()
    branch._discard()


@requires_postgres
def test_recovery_never_touches_another_nodes_transaction_and_reports_it() -> None:
    foreign = "other-app:some-transaction"
    other = psycopg.connect(conninfo=_conninfo("customers"))
    other.tpc_begin(foreign)
    other.execute("SELECT 1")
    other.tpc_prepare()
    other.close()
    try:
        report = in_doubt_resolve(safety_seconds=0)
        assert [p.gid for p in report.foreign] == [foreign] and report.rolled_back == [] and report.committed == []
        assert [p.gid for p in prepared_list("customers")] == [foreign]
        with pytest.raises(CommandError, match="invariant checks failed"):
            call_command("verify")  # a prepared transaction left behind, even one not ours
    finally:
        with psycopg.connect(conninfo=_conninfo("customers"), autocommit=True) as cleanup:
            cleanup.tpc_rollback(foreign)


@requires_postgres
def test_an_undecided_transaction_is_presumed_aborted_only_after_the_safety_interval() -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    started = order_two_phase_place(order_id=uuid.uuid4(), customer_id=customer.id, total=Decimal("1.00"), mode="2pc", idempotency=None)
    assert started.outcome is not None
    # A second transaction whose coordinator "died" after preparing orders, before deciding.
    saga = record_in_doubt(customer.id)
    _leave_prepared(saga.id, "orders")
    young = in_doubt_resolve(safety_seconds=3600)
    assert young.rolled_back == [] and len(young.waiting) == 1 and [p.gid for p in prepared_list("orders")] == [gid(saga.id, "orders")]
    assert in_doubt_resolve(safety_seconds=0, dry_run=True).rolled_back == [f"{gid(saga.id, 'orders')} (would presume ABORT)"]
    assert [p.gid for p in prepared_list("orders")] == [gid(saga.id, "orders")]  # the dry run changed nothing
    old = in_doubt_resolve(safety_seconds=0)
    assert old.rolled_back == [gid(saga.id, "orders")] and old.ended == [saga.id]
    assert prepared_list("orders") == []
    saga.refresh_from_db()
    assert saga.state == "COMPENSATED"
    log = list(CoordinatorLogEntry.objects.using("sagas").filter(saga=saga).values_list("phase", "branch", "outcome", "actor"))
    assert log[:2] == [("decision", "", "ABORT", "resolve_in_doubt"), ("rollback", "orders", "ok", "resolve_in_doubt")]
    assert Order.objects.using("orders").get(id=saga.data["order_id"]).state == "REJECTED"  # what an abort leaves
    # Again: nothing left to do, and "does not exist" is no error.
    assert in_doubt_resolve(safety_seconds=0).counts() == {"committed": 0, "rolled_back": 0, "waiting": 0, "errors": 0, "foreign": 0, "ended": 0}


@requires_postgres
def test_a_decided_transaction_is_left_to_its_coordinator_for_a_grace_period() -> None:
    """The sweep must not finish a transaction its live coordinator is committing right now."""
    from sagas.coordinator import COMMIT, _decide, _Phases

    customer = customer_create(name="Ada", credit_limit="100.00")
    saga = record_in_doubt(customer.id)
    _leave_prepared(saga.id, "orders")
    _leave_prepared(saga.id, "customers")
    assert _decide(saga.id, COMMIT, _Phases(saga_id=saga.id, actor="coordinator")) == COMMIT
    fresh = in_doubt_resolve(actor="sweep")
    assert fresh.committed == [] and "its coordinator is finishing it" in fresh.waiting[0]
    assert len(prepared_list("orders")) == len(prepared_list("customers")) == 1
    from django.test import override_settings

    with override_settings(TWO_PC_DECIDED_GRACE_SECONDS=0):
        later = in_doubt_resolve(actor="sweep")
    assert sorted(later.committed) == sorted([gid(saga.id, "orders"), gid(saga.id, "customers")]) and later.ended == [saga.id]
    saga.refresh_from_db()
    assert saga.state == "COMPLETED"


@requires_postgres
def test_a_decision_is_written_once_whoever_comes_second_obeys_it() -> None:
    from sagas.coordinator import ABORT, COMMIT, _decide, _Phases

    customer = customer_create(name="Ada", credit_limit="100.00")
    started = order_two_phase_place(order_id=uuid.uuid4(), customer_id=customer.id, total=Decimal("1.00"), mode="2pc", idempotency=None)
    assert _decide(started.saga_id, ABORT, _Phases(saga_id=started.saga_id, actor="sweep")) == COMMIT


def _conninfo(alias: str) -> str:
    s = connections[alias].settings_dict
    return f"host={s['HOST'] or 'localhost'} port={s['PORT'] or 5432} dbname={s['NAME']} user={s['USER']} password={s['PASSWORD']}"


@requires_postgres
def test_an_in_doubt_transaction_shows_with_its_age_in_the_saga_list_and_readyz(api: APIClient) -> None:
    from django.test import override_settings

    customer = customer_create(name="Ada", credit_limit="100.00")
    saga = record_in_doubt(customer.id)
    _leave_prepared(saga.id, "customers")
    listed = api.get("/api/sagas/", {"mode": "2pc", "state": "RUNNING"}).json()
    assert listed["count"] == 1
    shown = listed["results"][0]
    assert shown["id"] == str(saga.id) and shown["stuck"] is False
    assert shown["in_doubt"]["decision"] is None and shown["in_doubt"]["age_seconds"] >= 0
    assert [(p["branch"], p["gid"]) for p in shown["in_doubt"]["prepared"]] == [("customers", gid(saga.id, "customers"))]
    assert shown["awaiting"]["step"] == "decision"
    with override_settings(TWO_PC_SAFETY_INTERVAL_SECONDS=0):
        assert [s["id"] for s in api.get("/api/sagas/", {"mode": "2pc", "stuck": "true"}).json()["results"]] == [str(saga.id)]
    ready = api.get("/readyz").json()["two_phase"]
    assert ready["available"] is True and [(p["gid"], p["ours"]) for p in ready["in_doubt"]] == [(gid(saga.id, "customers"), True)]
    assert ready["oldest_seconds"] >= 0
    in_doubt_resolve(safety_seconds=0)
    assert api.get("/readyz").json()["two_phase"]["in_doubt"] == []


def test_readyz_says_when_two_phase_commit_is_not_available(api: APIClient) -> None:
    body = api.get("/readyz").json()["two_phase"]
    assert body["ok"] is True
    if os.environ.get("EVENTLOG_DATABASE_URL", "").startswith("postgres"):
        assert body["available"] is True
    else:
        assert body["available"] is False and len(body["why"]) == 2


def test_a_node_name_that_cannot_go_into_a_global_id_is_a_system_error() -> None:
    from django.test import override_settings

    from sagas.checks import check_two_phase_node_name

    assert check_two_phase_node_name() == []
    with override_settings(TWO_PC_NODE_NAME="two words:here"):
        assert [m.id for m in check_two_phase_node_name()] == ["sagas.E003"]
