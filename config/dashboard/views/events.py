"""``/dashboard/events/?stream=&type=&correlation=&saga=&from=&to=``: the central log, in
order, filtered by stream, type, correlation id, saga and position range; 100 a page."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from config.dashboard.access import staff_only
from eventlog.selectors import log_filter

PAGE_SIZE = 100


@staff_only
@require_GET
def event_list_page(request: HttpRequest) -> HttpResponse:
    params = request.GET
    filters = {name: params.get(name, "").strip() for name in ("stream", "type", "correlation", "saga", "from", "to")}
    problems: list[str] = []
    ids: dict[str, uuid.UUID | None] = {}
    for name in ("stream", "correlation", "saga"):
        try:
            ids[name] = uuid.UUID(filters[name]) if filters[name] else None
        except ValueError:
            problems.append(f"{name} must be a UUID.")
    positions: dict[str, int | None] = {}
    for name in ("from", "to"):
        try:
            positions[name] = int(filters[name]) if filters[name] else None
        except ValueError:
            problems.append(f"{name} must be a position (a whole number).")
    events: list[Any] = []
    next_query = None
    if not problems:
        after = max((positions["from"] or 1) - 1, 0)
        events = log_filter(
            stream_id=ids["stream"], types=[t.strip() for t in filters["type"].split(",") if t.strip()] or None, correlation_id=ids["correlation"],
            saga_id=ids["saga"], after=after, until=positions["to"], limit=PAGE_SIZE,
        )
        if len(events) == PAGE_SIZE:
            next_query = urlencode({**{k: v for k, v in filters.items() if v}, "from": events[-1].position + 1})  # type: ignore[operator]  # an event read from the log always has its position
    return render(request, "dashboard/events.html", {"filters": filters, "problems": problems, "events": events, "next": next_query})
