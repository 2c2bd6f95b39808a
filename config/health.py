"""Health probes: /healthz (the process is up) and /readyz (it can do its work)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from config.celery_app import app as celery_app
from readmodels.selectors import projection_status


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up; says nothing about its dependencies (that is /readyz)."""
    return JsonResponse({"status": "ok"})


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check()
        result = {"ok": True, **(detail or {})}
    except Exception as exc:  # a probe reports every failure instead of raising it
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _database(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def _projections() -> dict[str, Any]:
    status = projection_status()
    lagging = [p["name"] for p in status if p["lag"] > settings.READY_MAX_PROJECTION_LAG]
    if lagging:
        raise RuntimeError(f"lag above {settings.READY_MAX_PROJECTION_LAG} events: {', '.join(lagging)}")
    return {"lag": {p["name"]: p["lag"] for p in status}}


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Every database reachable, the broker reachable, no projection too far behind."""
    checks = {f"database:{alias}": _timed(lambda alias=alias: _database(alias)) for alias in settings.DATABASES}
    checks["broker"] = _timed(_broker)
    checks["projections"] = _timed(_projections)
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)
