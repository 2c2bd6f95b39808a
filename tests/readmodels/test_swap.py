"""The swap of a rebuild renames the shadows into place: the live tables keep their indexes,
constraint names and privileges, readers are served throughout, and an interrupted or
lock-timed-out swap is tried again. The replay reads only the event fields its folds use."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connections, transaction

from eventlog import selectors
from eventlog.models import LogEvent
from eventlog.selectors import log_scan
from readmodels import rebuild
from readmodels.models import CustomerCredit, OrderSummary
from readmodels.projections import ALIAS, PROJECTIONS
from readmodels.rebuild import _fields, _swap_prepare, projections_rebuild, shadow_catch_up, shadow_prepare
from tests.conftest import requires_postgres
from tests.readmodels.helpers import make_history, relay_and_project, repeating_in_a_thread
from tests.readmodels.test_replay import live_snapshot

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def live_schema() -> dict[str, dict[str, Any]]:
    """Each read-model table's indexes and constraints, by name, as the database reports them."""
    connection = connections[ALIAS]
    schema = {}
    with connection.cursor() as cursor:
        for projection in PROJECTIONS.values():
            for model in projection.tables:
                constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
                schema[model._meta.db_table] = {
                    # SQLite names its primary key's index after the table it was created for.
                    ("primary key" if c["primary_key"] and name.startswith("sqlite_autoindex") else name): (tuple(c["columns"]), c["primary_key"], c["unique"], c["index"], c["check"])
                    for name, c in constraints.items()
                }
    return schema


def test_the_swap_keeps_every_index_and_constraint_name_of_the_live_tables() -> None:
    make_history()
    relay_and_project()
    before, rows = live_schema(), live_snapshot()
    assert any(len(names) > 1 for names in before.values())  # secondary indexes to keep
    projections_rebuild(list(PROJECTIONS), batch_size=7)
    assert live_schema() == before
    assert live_snapshot() == rows
    projections_rebuild(list(PROJECTIONS), batch_size=7)  # and again, on the renamed tables
    assert live_schema() == before
    assert live_snapshot() == rows


@requires_postgres
def test_the_swap_keeps_the_privileges_granted_on_the_live_tables() -> None:
    connection = connections[ALIAS]
    table = OrderSummary._meta.db_table

    def grants() -> list[tuple[str, str]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT grantee, privilege_type FROM information_schema.role_table_grants WHERE table_name = %s AND grantee = 'PUBLIC'", [table])
            return cursor.fetchall()

    with connection.cursor() as cursor:
        cursor.execute(f'GRANT SELECT ON "{table}" TO PUBLIC')
    try:
        make_history(customers=1, orders=2)
        relay_and_project()
        assert grants() == [("PUBLIC", "SELECT")]
        projections_rebuild(["order_summary"])
        assert grants() == [("PUBLIC", "SELECT")]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'REVOKE ALL ON "{table}" FROM PUBLIC')


def test_readers_are_served_while_the_shadows_are_swapped_in() -> None:
    """A reader in another thread (its own connection) reads the live tables in a loop during
    rebuilds: every read succeeds and sees whole tables, the old ones or the new ones."""
    make_history()
    relay_and_project()
    expected = (OrderSummary.objects.using(ALIAS).count(), CustomerCredit.objects.using(ALIAS).count())
    seen: list[tuple[int, int]] = []

    def read() -> None:
        with transaction.atomic(using=ALIAS):  # two tables in one transaction, as a page might
            seen.append((OrderSummary.objects.using(ALIAS).count(), CustomerCredit.objects.using(ALIAS).count()))
        time.sleep(0.001)

    with repeating_in_a_thread(read) as errors:
        for _ in range(3):
            projections_rebuild(list(PROJECTIONS), batch_size=5)
    assert errors == []
    assert seen and set(seen) == {expected}


@requires_postgres
def test_a_swap_that_waits_too_long_for_a_reader_is_rolled_back_and_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's transaction holds a live table past SWAP_LOCK_WAIT: the first swap gives up
    and rolls back, the next attempt goes through."""
    make_history(customers=2, orders=3)
    relay_and_project()
    before = live_snapshot()
    monkeypatch.setattr(rebuild, "SWAP_LOCK_WAIT", 0.2)
    attempts: list[float] = []
    original = rebuild._swap_in
    holding, release = threading.Event(), threading.Event()
    timer = threading.Timer(0.35, release.set)  # the reader lets go during the second attempt

    def swap_in(*args: Any, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            timer.start()
        return original(*args, **kwargs)

    monkeypatch.setattr(rebuild, "_swap_in", swap_in)

    def reader() -> None:
        try:
            with transaction.atomic(using=ALIAS):
                OrderSummary.objects.using(ALIAS).count()  # ACCESS SHARE until the end of the transaction
                holding.set()
                release.wait(timeout=10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=reader)
    thread.start()
    holding.wait(timeout=10)
    try:
        projections_rebuild(list(PROJECTIONS), batch_size=5)
    finally:
        release.set()
        thread.join()
        timer.cancel()
    assert len(attempts) == 2
    assert live_snapshot() == before


def test_a_rebuild_interrupted_after_staging_its_indexes_resumes_and_swaps() -> None:
    make_history()
    relay_and_project()
    before, schema = live_snapshot(), live_schema()
    replays = [shadow_prepare(p) for p in PROJECTIONS.values()]
    shadow_catch_up(replays, batch_size=9)
    _swap_prepare(replays)  # ... and the process dies here, before the swap
    reports = projections_rebuild(list(PROJECTIONS), batch_size=9)
    assert all(r.events == 0 for r in reports)  # the shadows had caught up: nothing to read again
    assert live_snapshot() == before
    assert live_schema() == schema


def test_a_replay_reads_only_the_fields_its_folds_use() -> None:
    make_history(customers=1, orders=2)
    relay_and_project()
    fields = _fields(PROJECTIONS.values())
    assert fields is not None and "event_id" not in fields
    full, lean = log_scan(limit=100), log_scan(limit=100, fields=fields)
    assert [e.position for e in lean] == [e.position for e in full]
    for a, b in zip(full, lean, strict=True):
        assert {k: getattr(a, k) for k in (*fields, "position")} == {k: getattr(b, k) for k in (*fields, "position")}
        with pytest.raises(AttributeError):
            b.event_id  # noqa: B018 (not read: absent, not a wrong value)
    with pytest.raises(ValueError):
        log_scan(fields=("no_such_field",))


def test_payloads_orjson_refuses_are_decoded_as_json_would() -> None:
    make_history(customers=1, orders=1)
    relay_and_project()
    first = LogEvent.objects.using("eventlog").order_by("position").first()
    assert first is not None
    LogEvent.objects.using("eventlog").filter(position=first.position).update(data={**first.data, "big": 2**70})
    (event,) = log_scan(limit=1)
    assert event.data["big"] == 2**70
    assert selectors.scan_fields(None) == selectors._SCAN_FIELDS


def test_a_constraint_or_index_an_operator_added_to_a_live_table_survives_the_swap() -> None:
    """PostgreSQL: a constraint beyond the model's fields would be lost by renaming, so the swap
    copies the rows instead. SQLite cannot add a constraint to a table; a unique index added
    there is carried over by the renaming swap, as every index is."""
    make_history(customers=1, orders=3)
    relay_and_project()
    before = live_snapshot()
    connection = connections[ALIAS]
    table = connection.ops.quote_name(OrderSummary._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT ordersummary_total_not_negative CHECK (total >= 0)")
        else:
            cursor.execute(f"CREATE UNIQUE INDEX ordersummary_id_saga ON {table} (id, saga_id)")
    schema = live_schema()
    projections_rebuild(list(PROJECTIONS), batch_size=7)
    assert live_snapshot() == before
    assert live_schema() == schema  # the constraint is still there
