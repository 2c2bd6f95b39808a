"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against the system
as ``make run`` starts it: gunicorn, a worker per queue, beat and the broker, on the test
databases. A handful of journeys; the pages' logic is tested with the test client beside this.
Each journey saves screenshots under ``var/test-artifacts/dashboard/``."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from config.launcher import BASE_DIR, Stack
from tests.conftest import requires_postgres, running_system
from tests.dashboard.conftest import orders_trigger
from tests.e2e.helpers import Api

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__")]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = BASE_DIR / "var" / "test-artifacts" / "dashboard"
PASSWORD = "dashboard-" + "x" * 12


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One chromium for the whole session. Missing chromium fails, with how to install it."""
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: run `apt-get install -y chromium` (as root), or set CHROMIUM to its path", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright for Python: .venv/bin/pip install -r requirements.txt", pytrace=False)
    # Playwright's sync API runs an event loop in this thread; Django refuses ORM calls there
    # unless told the calls are synchronous, which they are (the tests never await).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def stack(broker_url: str, django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole system for this module's journeys (one start, not one per test)."""
    with running_system(broker_url, tmp_path_factory.mktemp("dashboard-stack"), {"DASHBOARD_REFRESH_SECONDS": "1"}) as running:
        yield running


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A fresh browser context, logged in as a staff user through the login page."""
    get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.goto("/dashboard/")
    assert "/admin/login/" in tab.url  # anonymous: the login page, which comes back here
    tab.fill("#id_username", "ops")
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit]")
    tab.wait_for_url(re.compile(r"/dashboard/$"))
    yield tab
    context.close()


@pytest.fixture
def api(stack: Stack) -> Api:
    return Api(stack.base_url)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def until(page: Any, url: str, probe: Any, *, timeout: float = 60, message: str) -> None:
    """Reload ``url`` until ``probe(page)`` holds (the page is what an operator would reload)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if probe(page):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        page.wait_for_timeout(300)


def test_the_overview_renders_and_updates_itself_while_sagas_run(page: Any, api: Api) -> None:
    from playwright.sync_api import expect

    assert page.locator("h1").inner_text() == "Overview"
    total = page.locator('#summary tr[data-mode="orchestration"] td.total')
    before = int(total.inner_text()) if total.count() else 0
    generation = page.locator("#summary .summary").get_attribute("data-generation")
    customer = api.customer("100.00")
    placed = api.order(customer, "10.00")
    api.settled_order(placed["id"])
    # No reload: the page's own polling brings the new saga in.
    expect(page.locator('#summary tr[data-mode="orchestration"] td.total')).to_have_text(str(before + 1), timeout=30_000)
    assert page.locator("#summary .summary").get_attribute("data-generation") != generation
    expect(page.locator("#summary .workers")).to_contain_text("orders@")
    shot(page, "overview")


def test_find_a_rejected_orders_saga_by_its_order_id_and_read_its_compensation(page: Any, api: Api) -> None:
    customer = api.customer("1.00")
    placed = api.order(customer, "5.00")
    assert api.settled_order(placed["id"])["state"] == "REJECTED"
    api.settled_saga(placed["saga_id"])
    page.goto("/dashboard/sagas/")
    page.fill("#saga-filters input[name=q]", placed["id"])
    page.click("#saga-filters button[type=submit]")
    assert page.locator("#saga-count").inner_text() == "1"
    page.click(f"#saga-table a[href='/dashboard/sagas/{placed['saga_id']}/']")
    assert page.locator("#saga-state").inner_text() == "COMPENSATED"
    timeline = page.locator("#timeline").inner_text()
    assert "refused" in timeline and "orders.order_reject attempt 1" in timeline and "compensated" in timeline
    diagram = page.locator("#diagram svg.saga-diagram")
    assert diagram.is_visible()
    assert page.locator('#diagram g.refused[data-step="reserve_credit"]').count() == 1
    assert page.locator('#diagram g.done[data-step="undo create_order"]').count() == 1
    assert "OrderRejected" in page.locator("#order-events").inner_text()
    shot(page, "saga-compensated")


def test_a_failed_saga_is_retried_from_its_page_with_a_dry_run_and_the_audit_shows_it(page: Any, api: Api) -> None:
    orders_trigger(True, "OrderRejected")  # the compensation's write fails, every time: FAILED
    try:
        customer = api.customer("1.00")
        placed = api.order(customer, "5.00")
        assert api.settled_saga(placed["saga_id"], timeout=90)["state"] == "FAILED"
    finally:
        orders_trigger(False, "OrderRejected")
    saga_url = f"/dashboard/sagas/{placed['saga_id']}/"
    page.goto(saga_url)
    assert page.locator("#saga-state").inner_text() == "FAILED"
    page.click("#actions a:has-text('Retry')")
    dry_run = page.locator("#dry-run").inner_text()
    assert "orders.order_reject attempt 6" in dry_run and "COMPENSATING" in dry_run
    assert page.locator("#confirm-form input[name=csrfmiddlewaretoken]").count() == 1
    shot(page, "action-dry-run")
    page.click("#confirm")
    page.wait_for_url(re.compile(re.escape(saga_url) + "$"))
    audit = page.locator("#audit").inner_text()
    assert "ops" in audit and "saga-retry" in audit
    until(page, saga_url, lambda p: p.locator("#saga-state").inner_text() == "COMPENSATED", message="the retried saga to compensate")
    assert api.settled_order(placed["id"])["state"] == "REJECTED"
    shot(page, "saga")


def test_a_choreographed_flows_trace_and_a_projection_rebuild(page: Any, api: Api) -> None:
    customer = api.customer("50.00")
    status, placed = api.call("POST", "/api/orders/", {"customer_id": customer, "total": "5.00", "mode": "choreography"})
    assert status == 202, placed
    api.settled_order(placed["id"])
    until(page, f"/dashboard/sagas/{placed['saga_id']}/", lambda p: p.locator("#saga-state").inner_text() == "COMPLETED", message="the flow's trace to complete")
    steps = page.locator("#steps").inner_text()
    assert steps.index("OrderCreated") < steps.index("CreditReserved") < steps.index("OrderApproved")
    assert page.locator("#diagram svg.saga-diagram").is_visible()
    shot(page, "choreography-trace")
    page.goto("/dashboard/projections/")
    page.click("tr[data-projection=order_summary] a.button")
    assert "order_summary would be folded from the whole log" in page.locator("#dry-run").inner_text()
    page.click("#confirm")
    page.wait_for_url(re.compile(r"/dashboard/projections/$"))
    assert "order_summary rebuilt" in page.locator(".messages").inner_text()
    page.goto("/dashboard/")
    assert "projection-rebuild" in page.locator("table.audit").inner_text()


@requires_postgres
def test_a_2pc_transactions_phases_and_its_coordinator_log(page: Any, api: Api) -> None:
    """PostgreSQL tier: a 2PC order's transaction, its phases in order with their outcomes."""
    customer = api.customer("50.00")
    status, placed = api.call("POST", "/api/orders/", {"customer_id": customer, "total": "5.00", "mode": "2pc"})
    assert status == 201 and placed["state"] == "APPROVED", placed
    page.goto(f"/dashboard/sagas/{placed['saga_id']}/")
    assert page.locator("#saga-state").inner_text() == "COMPLETED"
    assert "2pc" in page.locator("h1").inner_text()
    assert "Phases" in page.locator("#steps h2").inner_text()
    names = page.locator("#steps tbody tr td:first-child").all_inner_texts()
    assert names == ["begin", "work customers", "work orders", "prepare orders", "prepare customers", "decision", "commit orders", "commit customers", "end"]
    steps = page.locator("#steps").inner_text()
    assert "COMMIT" in steps and "coordinator" in steps and "sagas-2pc:" in steps
    shot(page, "two-phase-commit")
