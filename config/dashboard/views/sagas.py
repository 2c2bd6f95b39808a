"""``/dashboard/sagas/?state=&mode=&type=&stuck=&q=``: every saga of every mode, newest first;
``stuck=true`` lists the stuck ones stalest first; ``q`` finds an order's, a saga's or a
correlation id's sagas."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from config.dashboard.access import staff_only
from config.dashboard.summary import MODES, STATES
from sagas.selectors import saga_list

PAGE_SIZE = 50
TYPES = ("create_order", "cancel_order")


@staff_only
@require_GET
def saga_list_page(request: HttpRequest) -> HttpResponse:
    params = request.GET
    filters = {name: params.get(name, "").strip() for name in ("state", "mode", "type", "stuck", "q")}
    problems: list[str] = []
    about = None
    if filters["q"]:
        try:
            about = uuid.UUID(filters["q"])
        except ValueError:
            problems.append("q must be an order id, a saga id or a correlation id (a UUID).")
    stuck = {"true": True, "false": False}.get(filters["stuck"])
    if filters["stuck"] and stuck is None:
        problems.append("stuck must be true or false.")
    if filters["state"] and filters["state"] not in STATES:
        problems.append(f"state must be one of {', '.join(STATES)}.")
    try:
        page = max(int(params.get("page", "1")), 1)
    except ValueError:
        page = 1
    count: int = 0
    sagas: list[dict[str, Any]] = []
    if not problems:
        count, sagas = saga_list(
            state=filters["state"] or None, saga_type=filters["type"] or None, mode=filters["mode"] or None, stuck=stuck, about=about,
            offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
        )
    kept = {name: value for name, value in filters.items() if value}
    context = {
        "filters": filters, "problems": problems, "sagas": sagas, "count": count, "page": page,
        "previous": urlencode({**kept, "page": page - 1}) if page > 1 else None,
        "next": urlencode({**kept, "page": page + 1}) if page * PAGE_SIZE < count else None,
        "states": STATES, "modes": MODES, "types": TYPES, "bulk": urlencode({k: v for k, v in kept.items() if k in ("type", "mode")}),
    }
    return render(request, "dashboard/sagas/list.html", context)
