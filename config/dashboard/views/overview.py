"""``/dashboard/``: the overview, and ``/dashboard/summary/``, the fragment its page polls."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from config.dashboard.access import staff_only
from config.dashboard.actions import audit_recent
from config.dashboard.summary import summary_get


@staff_only
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    context = {"summary": summary_get(), "refresh_seconds": settings.DASHBOARD_REFRESH_SECONDS, "recent_actions": audit_recent(limit=10)}
    return render(request, "dashboard/overview.html", context)


@staff_only
@require_GET
def summary_fragment(request: HttpRequest) -> HttpResponse:
    """The summary's HTML alone: every poll of every browser is served from the one summary."""
    return render(request, "dashboard/_summary.html", {"summary": summary_get()})
