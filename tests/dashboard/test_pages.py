"""The dashboard's pages, through Django's test client on the real databases: what each shows,
its filters, that the overview's cost is bounded however many poll it, and that nothing from a
saga's data is rendered unescaped. tests/dashboard/test_browser.py drives them in a browser."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from pytest_django.fixtures import SettingsWrapper

from eventlog.selectors import log_stream
from sagas.models import SagaInstance
from tests.dashboard.conftest import advance_everything, choreographed_order
from tests.sagas.test_engine import reply, start, state

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def saga_ids(html: str) -> list[str]:
    return re.findall(r'href="/dashboard/sagas/([0-9a-f-]{36})/"', html)


def test_the_overview_shows_sagas_by_mode_and_state_and_what_needs_attention(staff: Client) -> None:
    done, refused = start(), start()
    for _ in range(3):
        reply(done)
    reply(refused)
    reply(refused, "refused", reason="INSUFFICIENT_CREDIT")
    reply(refused)  # create_order compensated
    assert (state(done), state(refused)) == ("COMPLETED", "COMPENSATED")
    running = start()
    reply(running, "error", error="participant down", transient=True)  # stuck: its step failed once
    body = staff.get("/dashboard/").content.decode()
    row = re.search(r'<tr data-mode="orchestration">(.*?)</tr>', body, re.S)
    assert row is not None
    assert re.findall(r"<td[^>]*>(\d+)</td>", row.group(1)) == ["1", "0", "1", "1", "0", "3"]  # RUNNING COMPENSATING COMPLETED COMPENSATED FAILED total
    recent = body.split("<h2>Last 5 minutes</h2>")[1].split("</section>")[0]
    assert "1 completed, 1 compensated, 0 failed" in recent and "50.0 %" in recent, recent
    assert str(running.id) in body.split("Stuck, stalest first")[1].split("In-doubt 2PC")[0]
    assert 'id="in-doubt-2pc"' in body
    assert "orders: " in body and "order_summary" in body


def test_every_poll_is_served_from_one_summary_computed_once_per_interval(staff: Client, settings: SettingsWrapper) -> None:
    settings.DASHBOARD_REFRESH_SECONDS = 600
    first = staff.get("/dashboard/summary/").content.decode()
    generation = re.search(r'data-generation="(\d+)"', first)
    assert generation is not None
    start()  # a new saga: a recomputed summary would count it
    for _ in range(25):  # many browsers polling
        again = staff.get("/dashboard/summary/").content.decode()
        assert f'data-generation="{generation.group(1)}"' in again
    # The control: once the interval is over, the next poll computes a new one, which sees the saga.
    settings.DASHBOARD_REFRESH_SECONDS = 0.001
    from django.core.cache import cache

    cache.delete("dashboard:summary:computing")
    fresh = staff.get("/dashboard/summary/").content.decode()
    assert f'data-generation="{int(generation.group(1)) + 1}"' in fresh


def test_the_saga_list_filters_by_state_mode_type_stuck_and_finds_an_order_saga_or_correlation_id(staff: Client) -> None:
    done = start()
    for _ in range(3):
        reply(done)
    waiting = start()
    stuck = start()
    reply(stuck, "error", error="participant down", transient=True)
    flow = choreographed_order()
    advance_everything()
    everything = saga_ids(staff.get("/dashboard/sagas/").content.decode())
    assert set(everything) == {str(done.id), str(waiting.id), str(stuck.id), str(flow["saga_id"])}
    assert everything[:3] == [str(flow["saga_id"]), str(stuck.id), str(waiting.id)]  # newest first
    assert saga_ids(staff.get("/dashboard/sagas/?state=COMPLETED&mode=orchestration").content.decode()) == [str(done.id)]
    assert saga_ids(staff.get("/dashboard/sagas/?mode=choreography").content.decode()) == [str(flow["saga_id"])]
    assert saga_ids(staff.get("/dashboard/sagas/?type=cancel_order").content.decode()) == []
    assert saga_ids(staff.get("/dashboard/sagas/?stuck=true").content.decode()) == [str(stuck.id)]
    order_id = SagaInstance.objects.using("sagas").get(id=waiting.id).subject_id
    assert saga_ids(staff.get(f"/dashboard/sagas/?q={order_id}").content.decode()) == [str(waiting.id)]
    assert saga_ids(staff.get(f"/dashboard/sagas/?q={done.id}").content.decode()) == [str(done.id)]
    assert saga_ids(staff.get(f"/dashboard/sagas/?q={flow['order_id']}").content.decode()) == [str(flow["saga_id"])]  # a flow's subject is its order too
    assert saga_ids(staff.get(f"/dashboard/sagas/?q={flow['saga_id']}").content.decode()) == [str(flow["saga_id"])]
    bad = staff.get("/dashboard/sagas/?q=not-an-id&stuck=maybe").content.decode()
    assert "q must be an order id" in bad and "stuck must be true or false" in bad


def test_the_saga_page_shows_its_timeline_position_diagram_events_and_escapes_its_data(staff: Client) -> None:
    saga = start()
    reply(saga)
    reply(saga, "refused", reason="INSUFFICIENT_CREDIT", error="<script>alert('x')</script>")
    body = staff.get(f"/dashboard/sagas/{saga.id}/").content.decode()
    assert "<script>alert" not in body and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in body
    # The timeline: every command sent and the replies, with attempts.
    timeline = body.split('id="timeline"')[1].split("</section>")[0]
    for text in ("orders.order_create attempt 1", "customers.credit_reserve attempt 1", "refused", "orders.order_reject attempt 1"):
        assert text in timeline, text
    # Awaiting the compensation of create_order; the diagram marks it, and the pivot's refusal.
    assert "undo create_order" in body and "&#9660; now" in body
    diagram = body.split('id="diagram"')[1].split("</div>")[0]
    assert '<g class="step refused" data-step="reserve_credit">' in diagram
    assert '<g class="step now" data-step="undo create_order">' in diagram
    assert "pivot · customers.credit_reserve" in diagram
    assert 'class="arrow comp comptaken"' in diagram  # the compensation path taken
    assert "saga-abort" not in body  # compensating already: only resume applies
    assert "/dashboard/actions/saga-resume/?saga=" in body


def test_a_choreographed_flow_shows_its_trace_and_the_order_and_customer_events(staff: Client) -> None:
    flow = choreographed_order()
    advance_everything()
    body = staff.get(f"/dashboard/sagas/{flow['saga_id']}/").content.decode()
    assert 'id="saga-state">COMPLETED<' in body
    steps = body.split('id="steps"')[1].split("</section>")[0]
    assert steps.index("OrderCreated") < steps.index("CreditReserved") < steps.index("OrderApproved")
    assert "Trace: the flow" in body
    order_events = body.split('id="order-events"')[1].split("</section>")[0]
    assert [e.type for e in log_stream(flow["order_id"])] == ["OrderCreated", "OrderApproved"]
    assert "OrderCreated" in order_events and "OrderApproved" in order_events
    assert "CreditReserved" in body.split('id="customer-events"')[1].split("</section>")[0]


def test_an_unknown_saga_is_404(staff: Client) -> None:
    assert staff.get(f"/dashboard/sagas/{uuid.uuid4()}/").status_code == 404
    assert staff.get("/dashboard/sagas/nope/").status_code == 404


def test_the_event_log_filters_by_stream_type_correlation_and_position(staff: Client) -> None:
    first, second = choreographed_order(), choreographed_order()
    advance_everything()
    positions = lambda html: [int(p) for p in re.findall(r"<tr><td>(\d+)</td>", html)]  # noqa: E731
    everything = positions(staff.get("/dashboard/events/").content.decode())
    assert everything == sorted(everything) and len(everything) == 8  # 2 x (CustomerCreated, OrderCreated, CreditReserved, OrderApproved)
    stream = staff.get(f"/dashboard/events/?stream={first['order_id']}").content.decode()
    assert [e.position for e in log_stream(first["order_id"])] == positions(stream)
    typed = staff.get("/dashboard/events/?type=OrderApproved").content.decode()
    assert len(positions(typed)) == 2
    correlated = positions(staff.get(f"/dashboard/events/?correlation={second['saga_id']}").content.decode())
    assert len(correlated) == 3  # OrderCreated, CreditReserved, OrderApproved of the second flow
    ranged = positions(staff.get(f"/dashboard/events/?from={everything[2]}&to={everything[4]}").content.decode())
    assert ranged == everything[2:5]
    assert "stream must be a UUID" in staff.get("/dashboard/events/?stream=x").content.decode()


def test_the_projections_page_shows_position_lag_and_a_rebuild_button(staff: Client) -> None:
    choreographed_order()
    advance_everything()
    body = staff.get("/dashboard/projections/").content.decode()
    for name in ("order_summary", "customer_credit"):
        row = body.split(f'data-projection="{name}"')[1].split("</tr>")[0]
        assert f"/dashboard/actions/projection-rebuild/?projection={name}" in row
        assert re.search(r"<td>\d+</td><td class=\"\">0</td>", row), row
    assert "sagas.choreography_trace" in body


def test_with_the_cache_unreachable_the_overview_still_answers_computed_for_the_request(staff: Client) -> None:
    from django.test import override_settings

    from tests.conftest import free_port

    start()
    unreachable = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}
    with override_settings(CACHES=unreachable):
        body = staff.get("/dashboard/summary/").content.decode()
    assert "for this request only (the cache is unreachable)" in body
    row = re.search(r'<tr data-mode="orchestration">(.*?)</tr>', body, re.S)
    assert row is not None and re.findall(r"<td[^>]*>(\d+)</td>", row.group(1))[0] == "1"
