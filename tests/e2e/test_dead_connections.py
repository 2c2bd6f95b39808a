"""Workers do not check a reused database connection before each task (config/celery_app.py).
This proves what that costs when the server has ended their connections meanwhile (a restart,
a failover, an idle-connection reaper): nothing but a retried attempt.

PostgreSQL only: on SQLite there is no connection a server could end.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connections

from config.launcher import Stack
from sagas.models import SagaInstance, SagaStep
from tests.conftest import requires_postgres
from tests.e2e.helpers import Api, assert_verify_passes, credit, log_mentions

pytestmark = [pytest.mark.e2e, requires_postgres, pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.timeout(300)]
ENDED = "terminating connection due to administrator command"


def end_idle_connections(alias: str) -> int:
    """Every idle backend on ``alias``'s database (the workers' kept connections), ended."""
    s = connections[alias].settings_dict
    with psycopg.connect(host=s["HOST"] or "localhost", port=s["PORT"] or 5432, user=s["USER"], password=s["PASSWORD"], dbname="postgres", autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND state = 'idle' AND pid <> pg_backend_pid()", [s["NAME"]]).fetchall()
    return sum(1 for (ended,) in rows if ended)


def test_connections_the_server_ended_between_tasks_cost_a_retry_never_a_saga(api: Api, saga_system: Stack) -> None:
    customer = api.customer("100.00")
    first = api.settled_order(api.order(customer, "10.00")["id"])
    assert first["state"] == "APPROVED"  # every worker now keeps connections to its databases
    for alias in ("orders", "customers", "sagas", "eventlog", "readmodels"):
        connections[alias].close()  # the test's own connections are not the ones to end
    ended = {alias: end_idle_connections(alias) for alias in ("orders", "customers", "sagas")}
    assert all(ended.values()), f"no kept worker connection to end: {ended}"
    second = api.order(customer, "20.00")
    assert api.settled_order(second["id"])["state"] == "APPROVED"
    saga = api.settled_saga(second["saga_id"])
    assert saga["state"] == "COMPLETED"
    # The fault was real: with no check before the task, a worker met a connection the server
    # had ended, and said so; its task's work went through all the same.
    assert any(log_mentions(saga_system, f"worker-{queue}", ENDED) for queue in ("orders", "customers", "sagas")), "no worker met an ended connection"
    assert not SagaInstance.objects.using("sagas").filter(state__in=("FAILED", "COMPENSATED", "COMPENSATING")).exists()
    assert SagaStep.objects.using("sagas").filter(saga_id=second["saga_id"], kind="forward", status="SUCCEEDED").count() == 3
    credit(api, customer, reserved="30.00")
    assert_verify_passes()
