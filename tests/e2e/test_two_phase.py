"""Two-phase commit end to end, on PostgreSQL: every orchestration path over HTTP to gunicorn;
a real coordinator process SIGKILLed at each point of the protocol, then ``resolve_in_doubt``;
PostgreSQL restarted with transactions prepared; recovery racing a coordinator still at work;
the blocking the seed describes; and the 400 from a server with max_prepared_transactions = 0.

After each: nothing of ours in ``pg_prepared_xacts``, credit exact, ``verify`` passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections
from django.test import override_settings

from customers.models import Customer as CustomerRow
from customers.services import CreditReservationResult, credit_reserve, customer_create
from eventlog.domain import MessageContext
from eventlog.twophase import prepared_list
from orders.models import Order
from sagas.coordinator import gid
from sagas.models import CoordinatorLogEntry, SagaInstance
from tests.conftest import eventually, requires_postgres, restart_postgres, worker_env
from tests.e2e.helpers import Api, assert_verify_passes, credit
from tests.services import env_file

pytestmark = [pytest.mark.e2e, requires_postgres, pytest.mark.django_db(transaction=True, databases="__all__")]

ROOT = Path(__file__).resolve().parent.parent.parent


# --- every orchestration path, in 2pc, over HTTP ------------------------------------------------


def _order(api: Api, customer: str, total: str) -> dict[str, Any]:
    status, body = api.call("POST", "/api/orders/", {"customer_id": customer, "total": total, "mode": "2pc"})
    assert status == 201, body
    return body


def test_every_path_in_2pc_over_http(api: Api) -> None:
    customer = api.customer("100.00")
    approved = _order(api, customer, "60.00")
    assert (approved["state"], approved["rejection_reason"], approved["mode"]) == ("APPROVED", None, "2pc")
    equal = _order(api, customer, "40.00")  # exactly the available credit
    assert equal["state"] == "APPROVED"
    too_much = _order(api, customer, "0.01")
    assert (too_much["state"], too_much["rejection_reason"]) == ("REJECTED", "INSUFFICIENT_CREDIT")
    unknown = _order(api, str(uuid.uuid4()), "5.00")
    assert (unknown["state"], unknown["rejection_reason"]) == ("REJECTED", "UNKNOWN_CUSTOMER")
    assert credit(api, customer, reserved="100.00")["available_credit"] == "0.00"
    # The answer is final, and the Location reads it (the read model waits for version 2).
    status, read = api.call("GET", f"/api/orders/{approved['id']}/?min_version=2")
    assert status == 200 and read["state"] == "APPROVED"

    status, body = api.call("POST", f"/api/orders/{too_much['id']}/cancel/")
    assert status == 409 and body["extra"]["state"] == "REJECTED"
    status, body = api.call("POST", f"/api/orders/{approved['id']}/cancel/")
    assert status == 202 and body["state"] == "CANCELLED", body
    assert credit(api, customer, reserved="40.00")["available_credit"] == "60.00"
    status, body = api.call("POST", f"/api/orders/{approved['id']}/cancel/")
    assert status == 409 and body["extra"]["state"] == "CANCELLED"

    status, saga = api.call("GET", f"/api/sagas/{approved['saga_id']}/")
    assert (saga["mode"], saga["state"]) == ("2pc", "COMPLETED")
    assert [s["name"] for s in saga["steps"]] == ["begin", "work customers", "work orders", "prepare orders", "prepare customers", "decision", "commit orders", "commit customers", "end"]
    status, listed = api.call("GET", "/api/sagas/?mode=2pc")
    assert listed["count"] == 5 and {s["state"] for s in listed["results"]} == {"COMPLETED", "COMPENSATED"}

    # Twenty at once against a fresh limit of 100.00: exactly ten fit.
    fresh = api.customer("100.00")
    with ThreadPoolExecutor(max_workers=10) as pool:
        placed = list(pool.map(lambda _: _order(api, fresh, "10.00"), range(20)))
    states = [p["state"] for p in placed]
    assert states.count("APPROVED") == 10 and states.count("REJECTED") == 10
    assert CustomerRow.objects.using("customers").get(id=fresh).credit_reserved == Decimal("100.00")
    assert credit(api, fresh, reserved="100.00")["available_credit"] == "0.00"
    assert _ours_prepared() == []
    assert_verify_passes()


# --- a real coordinator process, stopped at a point and killed there ---------------------------


class Coordinator:
    """``tests/e2e/twophase_coordinator.py`` in its own process, on the test databases."""

    def __init__(self, broker: str, stop_at: str, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {**worker_env(broker), "DJANGO_SETTINGS_MODULE": "config.settings", **(env or {})}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.twophase_coordinator", "--stop-at", stop_at, *args],
            cwd=ROOT, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.transaction_id: uuid.UUID | None = None

    def wait_stopped(self, point: str) -> uuid.UUID:
        """The positive sign that the coordinator is exactly at ``point``: its own word."""
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line.startswith(f"STOPPED {point} "):
            _, err = self.popen.communicate(timeout=30)
            raise AssertionError(f"coordinator did not stop at {point}: {line!r}\n{err[-3000:]}")
        self.transaction_id = uuid.UUID(line.split()[2])
        return self.transaction_id

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        assert self.popen.wait(timeout=10) == -signal.SIGKILL

    def go_on(self) -> dict[str, Any]:
        assert self.popen.stdin is not None
        out, err = self.popen.communicate("go on\n", timeout=60)
        results = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert results, f"coordinator did not finish:\n{out}\n{err[-3000:]}"
        return json.loads(results[-1][len("RESULT ") :])


def _ours_prepared() -> list[str]:
    return sorted(p.gid for alias in ("orders", "customers") for p in prepared_list(alias) if p.gid.startswith("sagas-2pc:"))


def _resolve(*args: str) -> str:
    out = StringIO()
    call_command("resolve_in_doubt", *args, stdout=out)
    return out.getvalue()


def _waiting_on_a_lock(database: str) -> bool:
    """Some session of ``database`` is waiting for a lock (the blocking, seen from the server)."""
    with connections["eventlog"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", [database])
        return bool(cursor.fetchone()[0])


def _reserve_concurrently(customer_id: uuid.UUID, amount: str) -> tuple[threading.Thread, list[CreditReservationResult]]:
    """Another order's reservation on the same customer, in a thread of its own."""
    answers: list[CreditReservationResult] = []

    def reserve() -> None:
        try:
            answers.append(credit_reserve(customer_id=customer_id, order_id=uuid.uuid4(), amount=amount, context=MessageContext(correlation_id=uuid.uuid4())))
        finally:
            connections.close_all()

    thread = threading.Thread(target=reserve, daemon=True)
    thread.start()
    return thread, answers


# Where the coordinator dies, what recovery must do, and the credit that stays reserved.
KILL_POINTS = [
    pytest.param("prepared:orders", "ABORT", "0.00", False, id="1-after-the-first-prepare"),
    pytest.param("prepared:customers", "ABORT", "0.00", True, id="2-after-both-prepares-before-the-decision"),
    pytest.param("decided", "COMMIT", "60.00", True, id="3-after-the-commit-decision-before-any-commit-prepared"),
    pytest.param("committed:orders", "COMMIT", "60.00", False, id="4-between-the-two-commit-prepareds"),
]


@pytest.mark.parametrize(("point", "decision", "reserved", "show_blocking"), KILL_POINTS)
def test_a_coordinator_killed_at_each_point_is_finished_by_resolve_in_doubt(broker_url: str, point: str, decision: str, reserved: str, show_blocking: bool) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    coordinator = Coordinator(broker_url, point, "place", str(customer.id), "60.00")
    transaction_id = coordinator.wait_stopped(point)
    coordinator.kill()
    held = _ours_prepared()
    expected_held = {
        "prepared:orders": [gid(transaction_id, "orders")],
        "prepared:customers": sorted([gid(transaction_id, "orders"), gid(transaction_id, "customers")]),
        "decided": sorted([gid(transaction_id, "orders"), gid(transaction_id, "customers")]),
        "committed:orders": [gid(transaction_id, "customers")],
    }[point]
    assert held == expected_held  # the fault happened where we meant it: these survive the coordinator

    waiter = None
    if show_blocking:
        # The customers branch is prepared and holds the customer's row lock: another order's
        # reservation waits on it, and keeps waiting while the transaction is in doubt.
        waiter, answers = _reserve_concurrently(customer.id, "30.00")
        eventually(lambda: _waiting_on_a_lock(connections["customers"].settings_dict["NAME"]), message="the concurrent reservation to wait on the lock")
        if decision == "ABORT":
            # Undecided and young: presumed abort waits for the safety interval, so it still waits.
            assert "left alone" in _resolve() and _ours_prepared() == expected_held
            assert waiter.is_alive() and not answers
    out = _resolve("--safety-interval", "0")  # the coordinator is dead: nothing is still preparing
    assert f"{'commit' if decision == 'COMMIT' else 'roll back'} " in out, out
    assert _ours_prepared() == []
    if waiter is not None:
        waiter.join(timeout=30)
        assert not waiter.is_alive() and answers == [CreditReservationResult(reserved=True)]
        reserved = str(Decimal(reserved) + Decimal("30.00"))
    saga = SagaInstance.objects.using("sagas").get(id=transaction_id)
    assert saga.state == ("COMPLETED" if decision == "COMMIT" else "COMPENSATED")
    assert CoordinatorLogEntry.objects.using("sagas").get(saga=saga, phase="decision").outcome == decision
    assert CustomerRow.objects.using("customers").get(id=customer.id).credit_reserved == Decimal(reserved)
    order = Order.objects.using("orders").get(id=saga.data["order_id"])
    assert order.state == ("APPROVED" if decision == "COMMIT" else "REJECTED")
    if show_blocking:
        # The concurrent reservation was an order of nobody's: release it so verify can judge.
        _release_stray(customer.id)
    assert_verify_passes()


def _release_stray(customer_id: uuid.UUID) -> None:
    from customers.models import CreditReservation
    from customers.services import credit_release

    known = set(Order.objects.using("orders").values_list("id", flat=True))
    for order_id in CreditReservation.objects.using("customers").filter(customer_id=customer_id).exclude(order_id__in=known).values_list("order_id", flat=True):
        credit_release(customer_id=customer_id, order_id=order_id, context=MessageContext(correlation_id=uuid.uuid4()))


@override_settings(TWO_PC_DECIDED_GRACE_SECONDS=0)  # the coordinator is dead: no need to leave it time
def test_a_prepared_transaction_survives_a_postgresql_restart_and_is_finished_on_a_new_connection(broker_url: str) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    coordinator = Coordinator(broker_url, "decided", "place", str(customer.id), "25.00")
    transaction_id = coordinator.wait_stopped("decided")
    coordinator.kill()
    restart_postgres()
    both = sorted([gid(transaction_id, "orders"), gid(transaction_id, "customers")])
    assert eventually(lambda: _ours_prepared() == both or None, message="the prepared transactions after the restart")
    assert "commit " in _resolve()  # decided COMMIT: no safety interval needed
    assert _ours_prepared() == []
    assert CustomerRow.objects.using("customers").get(id=customer.id).credit_reserved == Decimal("25.00")
    assert Order.objects.using("orders").get(id=SagaInstance.objects.using("sagas").get(id=transaction_id).data["order_id"]).state == "APPROVED"
    assert_verify_passes()


@override_settings(TWO_PC_LOCK_TIMEOUT_SECONDS=1)
def test_a_timeout_rollback_racing_a_coordinator_before_prepare_leaves_no_branch_prepared(broker_url: str) -> None:
    customer = customer_create(name="Ada", credit_limit="100.00")
    coordinator = Coordinator(broker_url, "worked:orders", "place", str(customer.id), "40.00")
    transaction_id = coordinator.wait_stopped("worked:orders")  # both branches written, neither prepared
    assert _ours_prepared() == []
    # Recovery decides for it (as the sweep would after the safety interval): presumed ABORT.
    # Storing the REJECTED order waits on the live branch's row, gives up after the lock
    # timeout, and leaves that for later.
    out = _resolve("--safety-interval", "0")
    assert "could not be stored yet" in out, out
    assert CoordinatorLogEntry.objects.using("sagas").get(saga_id=transaction_id, phase="decision").outcome == "ABORT"
    # The coordinator goes on: it prepares both, finds ABORT standing where it would write
    # COMMIT, obeys, rolls both back and stores the order REJECTED itself.
    result = coordinator.go_on()
    assert result["outcome"]["state"] == "REJECTED"
    assert _ours_prepared() == []
    assert SagaInstance.objects.using("sagas").get(id=transaction_id).state == "COMPENSATED"
    assert CustomerRow.objects.using("customers").get(id=customer.id).credit_reserved == Decimal("0.00")
    phases = list(CoordinatorLogEntry.objects.using("sagas").filter(saga_id=transaction_id).values_list("phase", "branch", "outcome", "actor"))
    assert ("rollback", "orders", "ok", "coordinator") in phases and ("rollback", "customers", "ok", "coordinator") in phases
    assert_verify_passes()


# --- a server that cannot prepare transactions -----------------------------------------------------


def test_on_postgresql_with_max_prepared_transactions_0_2pc_is_400_and_the_check_warns(tmp_path: Path) -> None:
    """A second, private PostgreSQL started with max_prepared_transactions = 0, the system
    migrated onto it, and a real request through the API there."""
    services = tmp_path / "no2pc"
    env = {**os.environ, "PG_MAX_PREPARED_TRANSACTIONS": "0"}
    started = subprocess.run(["bash", "scripts/services.sh", "start", str(services)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        system = {**os.environ, **env_file(services / "env.sh"), "DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_ALLOWED_HOSTS": "testserver"}
        migrated = subprocess.run([sys.executable, "manage.py", "migrate_all"], cwd=ROOT, env=system, capture_output=True, text=True, timeout=300)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        checked = subprocess.run([sys.executable, "manage.py", "check", "--database", "orders"], cwd=ROOT, env=system, capture_output=True, text=True, timeout=120)
        assert "sagas.W001" in checked.stderr + checked.stdout and "max_prepared_transactions = 0" in checked.stderr + checked.stdout
        probe = subprocess.run([sys.executable, "-c", _REQUEST], cwd=ROOT, env=system, capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr[-3000:]
        answer = json.loads(probe.stdout.strip().splitlines()[-1])
        assert answer["status"] == 400
        assert "max_prepared_transactions above zero" in answer["body"]["message"]
        assert answer["before"] == answer["after"]  # nothing created anywhere
    finally:
        subprocess.run(["bash", "scripts/services.sh", "stop", str(services)], cwd=ROOT, capture_output=True, timeout=120)


_REQUEST = """
import json, django
django.setup()
from django.apps import apps
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from customers.services import customer_create

def counts():
    return {m._meta.label: m.objects.using(a).count() for a in ("orders", "customers", "sagas", "eventlog") for m in apps.get_app_config(a).get_models()}

customer = customer_create(name="Ada", credit_limit="100.00")
user = get_user_model().objects.create_user("no2pc-" + str(customer.id)[:8], password="x" * 16)
client = APIClient()
client.force_authenticate(user)
before = counts()
response = client.post("/api/orders/", {"customer_id": str(customer.id), "total": "10.00", "mode": "2pc"}, format="json")
print(json.dumps({"status": response.status_code, "body": response.json(), "before": before, "after": counts()}))
"""
