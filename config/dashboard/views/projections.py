"""``/dashboard/projections/``: each projection's position, lag and last error, every log
subscriber's lag, and a rebuild button per projection (its action page confirms it)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from config.dashboard.access import staff_only
from eventlog.selectors import log_head
from eventlog.subscriptions import subscriber_lag, subscribers
from readmodels.selectors import projection_status


@staff_only
@require_GET
def projection_list_page(request: HttpRequest) -> HttpResponse:
    head = log_head()
    lags = [{"name": s.name, "database": s.alias, "lag": subscriber_lag(s, head=head)} for s in subscribers()]
    return render(request, "dashboard/projections.html", {"projections": projection_status(), "subscribers": lags, "head": head})
