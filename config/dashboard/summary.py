"""The overview's numbers: one summary for every viewer, computed at most once per
``DASHBOARD_REFRESH_SECONDS`` across every process.

Every browser on the overview polls it, so its cost must not grow with the viewers (Temporal's
UI loaded its database with auto-refresh, temporalio/ui #2278). The summary lives in the
shared cache. A request that finds it older than the refresh interval tries to take a flag
(``cache.add``, atomic on Redis) that expires after that interval; only the taker computes, and
everyone else serves the copy that is there. The flag is never released early, so however many
processes and browsers poll, the queries below (and the Celery ping) run at most once per
interval. ``generation`` counts the computations (the tests read it).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from config.celery_app import app as celery_app
from config.launcher import QUEUES
from eventlog.relay import outbox_backlog
from eventlog.selectors import log_head
from eventlog.subscriptions import parked_events, subscriber_lag, subscribers
from readmodels.selectors import projection_status
from sagas.selectors import SAGA_MODES, SAGA_STATES, saga_counts, saga_list, saga_outcomes, two_phase_in_doubt

logger = logging.getLogger(__name__)
SUMMARY_KEY = "dashboard:summary"
COMPUTING_KEY = "dashboard:summary:computing"
GENERATION_KEY = "dashboard:summary:generation"
#: The window of the throughput and compensation-rate figures.
RECENT = dt.timedelta(minutes=5)
STATES = SAGA_STATES
MODES = SAGA_MODES


def summary_get() -> dict[str, Any]:
    """The current summary (see the module docstring for its cost). With the cache unreachable
    each request computes its own: the operator still sees the system, at a per-viewer cost."""
    try:
        return _shared_summary()
    except Exception:  # noqa: BLE001 - the cache is down; that must not blind the operator
        logger.warning("the dashboard summary could not be shared through the cache; computing it for this request", exc_info=True)
        return _compute(generation=None)


def _shared_summary() -> dict[str, Any]:
    interval = settings.DASHBOARD_REFRESH_SECONDS
    cached = cache.get(SUMMARY_KEY)
    if cached is not None and (timezone.now() - cached["computed_at"]).total_seconds() < interval:
        return cached
    if cache.add(COMPUTING_KEY, 1, timeout=interval):
        cache.add(GENERATION_KEY, 0, timeout=None)
        fresh = _compute(generation=cache.incr(GENERATION_KEY))
        cache.set(SUMMARY_KEY, fresh, timeout=max(interval * 30, 60))
        return fresh
    if cached is not None:
        return cached
    # The very first one, being computed by another process right now: wait for it.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.1)
        cached = cache.get(SUMMARY_KEY)
        if cached is not None:
            return cached
    return _compute(generation=None)


def _compute(*, generation: int | None) -> dict[str, Any]:
    now = timezone.now()
    counts = {(row["mode"], row["state"]): row["count"] for row in saga_counts()}
    modes = [m for m in MODES if any(mode == m for mode, _ in counts)] or ["orchestration"]
    modes += sorted({mode for mode, _ in counts} - set(modes))
    recent = saga_outcomes(since=now - RECENT)
    decided = recent["COMPLETED"] + recent["COMPENSATED"]
    _, stuck = saga_list(state=None, saga_type=None, stuck=True, offset=0, limit=10)
    failed_count, failed = saga_list(state="FAILED", saga_type=None, offset=0, limit=10)
    head = log_head()
    parked = parked_events()
    return {
        "generation": generation,
        "computed_at": now,
        "by_mode": [{"mode": mode, "counts": [counts.get((mode, state), 0) for state in STATES], "total": sum(counts.get((mode, s), 0) for s in STATES)} for mode in modes],
        "states": STATES,
        "recent_minutes": int(RECENT.total_seconds() // 60),
        "recent": recent,
        "per_minute": round(sum(recent.values()) / (RECENT.total_seconds() / 60), 1),
        "compensation_rate": round(100 * recent["COMPENSATED"] / decided, 1) if decided else None,
        "stuck": [_brief(saga) for saga in stuck],
        "failed": [_brief(saga) for saga in failed],
        "failed_count": failed_count,
        "in_doubt_2pc": _in_doubt_2pc(),
        "projections": projection_status(),
        "subscribers": [{"name": s.name, "lag": subscriber_lag(s, head=head)} for s in subscribers()],
        "head": head,
        "outbox_backlog": outbox_backlog(),
        "parked": [{"subscriber": r.subscriber, "position": r.position, "type": r.event_type, "event_id": r.event_id, "saga_id": r.saga_id, "parked": r.parked_at is not None, "error": r.error} for r in parked[:10]],
        "parked_count": len(parked),
        "workers": _workers(),
    }


def _brief(saga: dict[str, Any]) -> dict[str, Any]:
    awaiting = saga["awaiting"] or {}
    return {
        "id": saga["id"], "type": saga["type"], "mode": saga["mode"], "state": saga["state"], "updated_at": saga["updated_at"],
        "awaiting": awaiting.get("step"), "since": awaiting.get("since"), "error": saga["last_error"] or awaiting.get("error", ""),
    }


def _in_doubt_2pc() -> dict[str, Any]:
    """Two-phase commit transactions not finished yet, and prepared transactions not ours."""
    try:
        return two_phase_in_doubt()
    except Exception as exc:  # noqa: BLE001 - a branch database down is itself the answer
        return {"available": True, "error": f"{type(exc).__name__}: {exc}"[:300], "transactions": [], "foreign": []}


def _workers() -> list[dict[str, Any]]:
    """Which context queues have a worker that answers Celery's ping (within a second)."""
    try:
        replies = celery_app.control.ping(timeout=1.0)
    except Exception as exc:  # noqa: BLE001 - the broker being down is itself the answer
        return [{"queue": queue, "workers": [], "error": f"{type(exc).__name__}: {exc}"[:200]} for queue in QUEUES]
    names = sorted(name for reply in replies for name in reply)  # type: ignore[union-attr]  # ping waits for the replies: a list (celery-types allows None for reply=False)
    return [{"queue": queue, "workers": [n for n in names if n.split("@", 1)[0] == queue], "error": ""} for queue in QUEUES]
