"""Replaying the log rebuilds read models equal to the live ones, without downtime."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.db.models import Model

from eventlog.models import LogEvent
from eventlog.relay import outbox_relay
from eventlog.subscriptions import subscriber_advance
from readmodels.models import CustomerCredit, CustomerOrderState, OrderSummary, ProjectionCheckpoint
from readmodels.projections import ALIAS, COUNTER_FOR_STATE, PROJECTIONS, subscriber_name
from readmodels.rebuild import SHADOW_SUFFIX, projection_rebuild, projections_rebuild, shadow_catch_up, shadow_prepare
from tests.readmodels.helpers import make_history, relay_and_project, repeating_in_a_thread

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def snapshot(model: type[Model]) -> dict[Any, tuple[Any, ...]]:
    fields = [f.attname for f in model._meta.local_fields]
    return {row[0]: row for row in model._default_manager.using(ALIAS).values_list(*fields)}


def live_snapshot() -> dict[str, dict[Any, tuple[Any, ...]]]:
    return {model.__name__: snapshot(model) for model in (OrderSummary, CustomerCredit, CustomerOrderState)}


def test_replay_equals_live_state() -> None:
    make_history()
    relay_and_project()
    before = live_snapshot()
    assert len(before["OrderSummary"]) == 18
    for name in PROJECTIONS:
        report = projection_rebuild(name, batch_size=7)
        assert report.events > 0 and not report.in_place
    assert live_snapshot() == before
    assert ProjectionCheckpoint.objects.using(ALIAS).filter(subscriber__endswith="#rebuild").count() == 0
    assert not any(t.endswith(SHADOW_SUFFIX) for t in connections[ALIAS].introspection.table_names())


def test_replay_repairs_a_damaged_read_model() -> None:
    make_history()
    relay_and_project()
    before = live_snapshot()
    OrderSummary.objects.using(ALIAS).update(state="BROKEN")
    CustomerCredit.objects.using(ALIAS).all().delete()
    call_command("replay_events", "--no-progress")
    assert live_snapshot() == before


def test_in_place_replay_equals_live_state() -> None:
    make_history()
    relay_and_project()
    before = live_snapshot()
    call_command("replay_events", "--in-place", "--no-progress", "--projection", "order_summary", "--projection", "customer_credit")
    assert live_snapshot() == before


def test_an_interrupted_rebuild_resumes_where_it_stopped() -> None:
    make_history()
    relay_and_project()
    before = live_snapshot()
    projection = PROJECTIONS["order_summary"]
    replay = shadow_prepare(projection)
    stop_at = LogEvent.objects.using("eventlog").order_by("position")[24].position
    shadow_catch_up(replay, batch_size=10, until=stop_at)  # ... and the process dies here
    report = projection_rebuild("order_summary", batch_size=10)
    assert report.resumed_from == stop_at
    assert report.events == LogEvent.objects.using("eventlog").count() - 25
    assert live_snapshot() == before


def test_replay_while_writes_continue_loses_nothing() -> None:
    make_history(customers=2, orders=4)
    relay_and_project()
    seeds = itertools.count(101)

    def keep_writing() -> None:
        """New business and the live projection keep going during the rebuild."""
        make_history(customers=1, orders=2, seed=next(seeds))
        relay_and_project()

    with repeating_in_a_thread(keep_writing) as errors:
        for name in PROJECTIONS:
            projection_rebuild(name, batch_size=5)
    assert errors == []
    relay_and_project()
    after_rebuild = live_snapshot()
    # A second, quiet rebuild from scratch gives exactly the same rows: nothing was lost.
    for name in PROJECTIONS:
        projection_rebuild(name, batch_size=50, fresh=True)
    assert live_snapshot() == after_rebuild
    from config.verify import CHECKS

    assert [v for check in CHECKS for v in check().violations] == []


def test_live_projection_and_swap_do_not_double_apply() -> None:
    """Events that arrive after the swap are applied once, by the live projection."""
    make_history(customers=1, orders=3)
    relay_and_project()
    projection_rebuild("customer_credit")
    make_history(customers=1, orders=3, seed=99)
    relay_and_project()
    for name in PROJECTIONS:
        assert subscriber_advance(subscriber_name(PROJECTIONS[name])) == 0
    before = live_snapshot()
    projection_rebuild("customer_credit", fresh=True)
    assert live_snapshot() == before


def test_one_pass_rebuilds_every_projection_from_its_own_checkpoint() -> None:
    """All projections are folded in one pass over the log; one whose rebuild was interrupted
    further along gets only the events after its own checkpoint."""
    make_history()
    relay_and_project()
    before = live_snapshot()
    positions = list(LogEvent.objects.using("eventlog").order_by("position").values_list("position", flat=True))
    shadow_catch_up(shadow_prepare(PROJECTIONS["customer_credit"]), batch_size=4, until=positions[29])  # ... and the process dies
    reports = {r.projection: r for r in projections_rebuild(list(PROJECTIONS), batch_size=6)}
    assert reports["customer_credit"].resumed_from == positions[29] and reports["order_summary"].resumed_from == 0
    assert reports["customer_credit"].events == len(positions) - 30 and reports["order_summary"].events == len(positions)
    assert reports["customer_credit"].position == reports["order_summary"].position == positions[-1]
    assert live_snapshot() == before


def test_a_rebuild_whose_checkpoint_another_process_moved_drops_its_rows_in_memory() -> None:
    """Rows kept in memory between batches are valid only while the checkpoint stands where
    this rebuild left it: another run of the same rebuild moved it, so they are read again."""
    make_history()
    relay_and_project()
    before = live_snapshot()
    positions = list(LogEvent.objects.using("eventlog").order_by("position").values_list("position", flat=True))
    mine = [shadow_prepare(p) for p in PROJECTIONS.values()]
    shadow_catch_up(mine, batch_size=5, until=positions[20])
    assert all(rows.complete for replay in mine for rows in replay.state.tables.values())
    other = [shadow_prepare(p) for p in PROJECTIONS.values()]  # resumes the same shadows
    shadow_catch_up(other, batch_size=5, until=positions[40])
    shadow_catch_up(mine, batch_size=5)
    assert not any(rows.complete for replay in mine for rows in replay.state.tables.values())
    reports = projections_rebuild(list(PROJECTIONS))
    assert all(r.resumed_from == positions[-1] and r.events == 0 for r in reports)
    assert live_snapshot() == before


def test_the_command_rebuilds_in_one_pass_and_reports_the_rate() -> None:
    make_history(customers=1, orders=3)
    relay_and_project()
    before = live_snapshot()
    out = io.StringIO()
    call_command("replay_events", "--batch-size", "4", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "order_summary, customer_credit from the event log in one pass" in text
    head = LogEvent.objects.using("eventlog").count()
    assert f"{head} events in" in text and "events/s" in text
    assert live_snapshot() == before


def test_a_rebuild_inside_a_transaction_of_the_log_reads_what_it_wrote() -> None:
    """The next batch is read ahead on another connection only outside a transaction of the
    log's database: inside one, that connection would not see the transaction's events."""
    make_history(customers=1, orders=4)
    with transaction.atomic(using="eventlog"):
        relay_and_project()  # the log's new events are not committed yet
        before = live_snapshot()
        head = LogEvent.objects.using("eventlog").count()
        reports = projections_rebuild(list(PROJECTIONS), batch_size=3)
        assert [r.events for r in reports] == [head, head]
        assert live_snapshot() == before


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_orders_that_reach_the_log_before_their_customer_get_its_name_and_are_counted(batch_size: int) -> None:
    """The outboxes are relayed independently: here the orders one goes first, so the log holds
    each customer's orders before its CustomerCreated. Live (in batches of one event, or all at
    once) and replayed, the read models must still name and count those orders."""
    make_history(customers=2, orders=4)
    outbox_relay("orders")
    outbox_relay("customers")
    for projection in PROJECTIONS.values():
        subscriber_advance(subscriber_name(projection), batch_size=batch_size)
    orders = list(OrderSummary.objects.using(ALIAS).all())
    assert len(orders) == 8 and all(order.customer_name for order in orders)
    for credit in CustomerCredit.objects.using(ALIAS).all():
        states = [order.state for order in orders if order.customer_id == credit.id]
        counted = {state: getattr(credit, counter) for state, counter in COUNTER_FOR_STATE.items()}
        assert counted == {state: states.count(state) for state in COUNTER_FOR_STATE}
    before = live_snapshot()
    projections_rebuild(list(PROJECTIONS), batch_size=3)
    assert live_snapshot() == before
