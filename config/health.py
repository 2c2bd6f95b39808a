"""Health probes: /healthz (the process is up) and /readyz (this process can do its work).

/readyz answers for this process alone: 503 only when one of *its* connections (a database,
the broker) fails, so a load balancer takes out the processes that are broken and no others.
Projection lag is the same for every web process, so it is reported in the body (``lagging``
above READY_MAX_PROJECTION_LAG) and never fails the probe: a slow projection would otherwise
take every web process out at once, when it only makes reads older (Marten's lag check is a
report too). Alert on the body's ``lagging``.
"""

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
    return {
        "lag": {p["name"]: p["lag"] for p in status},
        "lagging": bool(lagging),
        "lagging_projections": lagging,
        "max_lag": settings.READY_MAX_PROJECTION_LAG,
    }


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """503 when a database or the broker cannot be reached from this process; the projections'
    lag in the body either way (an error in its place if it cannot be read, which a database
    check then names)."""
    checks = {f"database:{alias}": _timed(lambda alias=alias: _database(alias)) for alias in settings.DATABASES}
    checks["broker"] = _timed(_broker)
    ready = all(check["ok"] for check in checks.values())
    projections = _timed(_projections)
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks, "projections": projections}, status=200 if ready else 503)
