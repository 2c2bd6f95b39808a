"""``/readyz`` answers for this process alone: its databases and broker decide the status;
projection lag, shared by every web process, is reported in the body and never fails it."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client, override_settings
from django.utils import timezone

from eventlog.relay import log_append
from readmodels.projections import PROJECTIONS
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def readyz() -> tuple[int, dict]:
    response = Client().get("/readyz")
    return response.status_code, response.json()


def append_unprojected_event() -> None:
    log_append([{"event_id": uuid.uuid4(), "stream_id": uuid.uuid4(), "stream_type": "Order", "version": 1, "type": "OrderApproved",
                 "data": {}, "occurred_at": timezone.now(), "correlation_id": uuid.uuid4(), "causation_id": None, "saga_id": None}])


@contextmanager
def unreachable(alias: str) -> Iterator[None]:
    """This process's connection to ``alias`` goes to a database that is not there: a port
    nothing listens on (PostgreSQL), a file in a directory that does not exist (SQLite)."""
    connection = connections[alias]
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))
    else:
        connection.settings_dict["NAME"] = str(Path(tempfile.gettempdir()) / f"no-such-dir-{uuid.uuid4()}" / "db.sqlite3")
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def test_ready_with_every_connection_and_the_lag_of_each_projection() -> None:
    status, body = readyz()
    assert (status, body["status"]) == (200, "ready")
    assert set(body["checks"]) == {f"database:{alias}" for alias in settings.DATABASES} | {"broker"}
    assert all(check["ok"] for check in body["checks"].values())
    assert set(body["projections"]["lag"]) == {p.name for p in PROJECTIONS.values()}
    assert body["projections"]["lagging"] is False


@override_settings(READY_MAX_PROJECTION_LAG=0)
def test_a_lagging_projection_is_reported_and_the_process_stays_ready() -> None:
    """Lag is the same for every web process: failing on it would take them all out at once."""
    append_unprojected_event()
    status, body = readyz()
    assert (status, body["status"]) == (200, "ready")
    assert body["projections"]["lagging"] is True
    assert body["projections"]["max_lag"] == 0
    assert set(body["projections"]["lagging_projections"]) == {p.name for p in PROJECTIONS.values()}
    assert all(lag >= 1 for lag in body["projections"]["lag"].values())  # positions are not reset between tests


@pytest.mark.parametrize("alias", ["orders", "readmodels"])
def test_a_database_this_process_cannot_reach_makes_it_not_ready_and_is_named(alias: str) -> None:
    with unreachable(alias):
        status, body = readyz()
    assert (status, body["status"]) == (503, "not ready")
    failed = {name for name, check in body["checks"].items() if not check["ok"]}
    assert failed == {f"database:{alias}"}
    assert body["checks"][f"database:{alias}"]["error"]
