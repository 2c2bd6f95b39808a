"""Health probes: /healthz (the process is up) and /readyz (this process can do its work).

/readyz answers for this process alone: 503 only when one of *its* connections (a database,
the broker) fails, so a load balancer takes out the processes that are broken and no others.
Projection lag is the same for every web process, so it is reported in the body (``lagging``
above READY_MAX_PROJECTION_LAG) and never fails the probe: a slow projection would otherwise
take every web process out at once, when it only makes reads older (Marten's lag check is a
report too). Alert on the body's ``lagging``. In-doubt two-phase transactions are reported the
same way (``two_phase``): each prepared transaction with its age, ours or not, since each one
holds its locks and holds back VACUUM; alert on ``oldest_seconds``.
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
from sagas.coordinator import prepared_by_transaction, two_phase_problems


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


def _two_phase() -> dict[str, Any]:
    problems = two_phase_problems()
    if problems:
        return {"available": False, "why": problems}
    ours, foreign = prepared_by_transaction()
    now = time.time()
    in_doubt: list[dict[str, Any]] = [
        {"gid": p.gid, "database": p.database, "ours": mine, "age_seconds": round(now - p.prepared_at.timestamp(), 3)}
        for mine, group in ((True, [p for found in ours.values() for p in found]), (False, foreign))
        for p in group
    ]
    return {"available": True, "in_doubt": in_doubt, "oldest_seconds": max((p["age_seconds"] for p in in_doubt), default=None)}


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """503 when a database or the broker cannot be reached from this process; the projections'
    lag in the body either way (an error in its place if it cannot be read, which a database
    check then names)."""
    checks = {f"database:{alias}": _timed(lambda alias=alias: _database(alias)) for alias in settings.DATABASES}
    checks["broker"] = _timed(_broker)
    ready = all(check["ok"] for check in checks.values())
    projections = _timed(_projections)
    two_phase = _timed(_two_phase)
    body = {"status": "ready" if ready else "not ready", "checks": checks, "projections": projections, "two_phase": two_phase}
    return JsonResponse(body, status=200 if ready else 503)
