"""``/dashboard/sagas/<id>/``: one saga. Its timeline (every command, reply, retry, timeout,
compensation and operator action), what it awaits, its definition drawn with its position,
the order's and the customer's events, and the audit of what operators did to it."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from config.dashboard.access import staff_only
from config.dashboard.actions import audit_for_saga
from config.dashboard.diagram import saga_diagram
from eventlog.selectors import log_filter, log_stream
from eventlog.subscriptions import parked_events
from sagas.selectors import saga_definition_outline, saga_get, saga_log


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def _actions(saga: dict[str, Any], outline: list[dict[str, Any]] | None) -> list[str]:
    """The actions that may apply (each one's own page asks the service, which decides)."""
    found = []
    if saga["state"] == "FAILED" and saga["mode"] == "orchestration":
        found.append("saga-retry")
    if saga["mode"] == "orchestration" and saga["state"] in ("RUNNING", "COMPENSATING") and saga["awaiting"]:
        found.append("saga-resume")
        names = [step["name"] for step in outline or []]
        pivot = next((i for i, step in enumerate(outline or []) if step["role"] == "pivot"), -1)
        awaiting = saga["awaiting"]
        if saga["state"] == "RUNNING" and awaiting["kind"] == "forward" and awaiting["step"] in names and names.index(awaiting["step"]) <= pivot:
            found.append("saga-abort")
    return found


@staff_only
@require_GET
def saga_detail_page(request: HttpRequest, saga_id: str) -> HttpResponse:
    key = _uuid(saga_id)
    saga = saga_get(saga_id=key) if key else None
    if saga is None:
        raise Http404("no such saga")
    outline = saga_definition_outline(saga_type=saga["type"], version=saga["definition_version"]) if saga["mode"] == "orchestration" else None
    data = saga["data"] or {}
    order_id, customer_id = _uuid(data.get("order_id")), _uuid(data.get("customer_id"))
    context = {
        "saga": saga,
        "log": saga_log(saga_id=saga["id"]),
        "diagram": saga_diagram(saga, outline),
        "order_id": order_id,
        "customer_id": customer_id,
        "order_events": log_stream(order_id) if order_id else [],
        "customer_events": log_filter(stream_id=customer_id, saga_id=saga["id"]) if customer_id else [],
        "parked": parked_events(saga_id=saga["id"]),
        "audit": audit_for_saga(saga["id"]),
        "actions": _actions(saga, outline),
    }
    return render(request, "dashboard/sagas/detail.html", context)
