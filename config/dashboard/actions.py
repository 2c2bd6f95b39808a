"""The dashboard's repair actions: each previews itself (a dry run) and then runs, through the
very services the management commands call, and each run is audited.

- saga actions (``recover_sagas --retry/--resume/--abort``): ``sagas.engine`` runs the same
  transition for the dry run and rolls it back, so the preview says exactly what the action does;
- a bulk retry of the FAILED sagas of a filter (``recover_sagas --retry-all-failed``): the
  preview names them and the run retries exactly those;
- a parked choreography event (``retry_parked_events``): ``eventlog.subscriptions``;
- a projection rebuild (``replay_events --projection``): ``readmodels.rebuild``;
- resolving in-doubt 2PC transactions (``resolve_in_doubt``): ``sagas.coordinator``, whose dry
  run says, for each transaction, what the coordinator log makes it do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from config.models import OperatorAction
from eventlog.subscriptions import parked_retry, parked_retry_select
from readmodels.rebuild import projection_rebuild
from readmodels.selectors import projection_status
from sagas.coordinator import in_doubt_resolve
from sagas.engine import SagaConflict, saga_abort, saga_resume, saga_retry, sagas_failed

#: At most this many sagas in one bulk retry (the preview lists them all).
BULK_LIMIT = 500


class Refused(Exception):
    """The action cannot run on this target (the service said why)."""


@dataclass(frozen=True)
class Plan:
    """What the action will do (the dry run), and the hidden fields its confirmation posts."""

    lines: list[str]
    fields: dict[str, Any]
    count: int = 1

    @property
    def hidden(self) -> list[tuple[str, str]]:
        """The fields as (name, value) pairs, a list value giving one pair per item."""
        return [(name, str(item)) for name, value in self.fields.items() for item in (value if isinstance(value, list) else [value])]


@dataclass
class Outcome:
    ok: bool
    lines: list[str]
    #: (target, saga id, ok, outcome) per audit row to write.
    audit: list[tuple[str, uuid.UUID | None, bool, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Action:
    name: str
    title: str
    preview: Callable[[dict[str, Any]], Plan]
    run: Callable[[dict[str, Any], str], Outcome]
    #: Where the operator goes back to: the saga, or the projections page.
    back: Callable[[dict[str, Any]], str]


def _uuid(params: dict[str, Any], name: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(params.get(name, "")))
    except ValueError:
        raise Refused(f"{name} must be an id (a UUID)") from None


# --- one saga ------------------------------------------------------------------------------


def _saga_action(service: Callable[..., Any]) -> tuple[Callable[[dict[str, Any]], Plan], Callable[[dict[str, Any], str], Outcome]]:
    def preview(params: dict[str, Any]) -> Plan:
        saga_id = _uuid(params, "saga")
        try:
            outcome = service(saga_id, dry_run=True)
        except (LookupError, SagaConflict) as exc:
            raise Refused(str(exc)) from None
        return Plan(lines=[*outcome.did, f"the saga would then be {outcome.state}"], fields={"saga": str(saga_id)})

    def run(params: dict[str, Any], operator: str) -> Outcome:
        saga_id = _uuid(params, "saga")
        try:
            outcome = service(saga_id, operator=operator)
        except (LookupError, SagaConflict) as exc:
            return Outcome(ok=False, lines=[str(exc)], audit=[(str(saga_id), saga_id, False, str(exc))])
        text = "; ".join([*outcome.did, f"now {outcome.state}"])
        return Outcome(ok=True, lines=[*outcome.did, f"the saga is now {outcome.state}"], audit=[(str(saga_id), saga_id, True, text)])

    return preview, run


def _back_to_saga(params: dict[str, Any]) -> str:
    """The saga's page, or the overview when ``saga`` is not an id (never a URL from the request)."""
    try:
        return f"/dashboard/sagas/{uuid.UUID(str(params.get('saga', '')))}/"
    except ValueError:
        return "/dashboard/"


# --- many sagas ----------------------------------------------------------------------------


def _bulk_preview(params: dict[str, Any]) -> Plan:
    ids = sagas_failed(saga_type=params.get("type") or None, mode=params.get("mode") or None)
    if not ids:
        raise Refused("no FAILED saga matches this filter")
    chosen = ids[:BULK_LIMIT]
    lines = [f"{len(ids)} FAILED saga(s) match; {len(chosen)} would be retried (each one's failed step sent again, with a fresh retry budget):"]
    lines += [str(saga_id) for saga_id in chosen]
    return Plan(lines=lines, fields={"type": params.get("type") or "", "mode": params.get("mode") or "", "saga": [str(i) for i in chosen]}, count=len(chosen))


def _bulk_run(params: dict[str, Any], operator: str) -> Outcome:
    raw = params.get("saga") or []
    ids = [_uuid({"saga": value}, "saga") for value in (raw if isinstance(raw, list) else [raw])][:BULK_LIMIT]
    if not ids:
        return Outcome(ok=False, lines=["nothing to retry"])
    outcome = Outcome(ok=True, lines=[])
    for saga_id in ids:  # exactly the sagas the operator confirmed, whatever matches now
        try:
            done = saga_retry(saga_id, operator=operator)
        except (LookupError, SagaConflict) as exc:
            outcome.ok = False
            outcome.lines.append(f"{saga_id}: not retried: {exc}")
            outcome.audit.append((str(saga_id), saga_id, False, f"bulk retry: {exc}"))
            continue
        outcome.lines.append(f"{saga_id}: retried, now {done.state}")
        outcome.audit.append((str(saga_id), saga_id, True, "bulk retry: " + "; ".join([*done.did, f"now {done.state}"])))
    return outcome


# --- a parked event --------------------------------------------------------------------------


def _parked(params: dict[str, Any]) -> Any:
    event_id = _uuid(params, "event")
    try:
        return parked_retry_select(event_ids={event_id}, subscriber=params.get("subscriber") or None)[0]
    except LookupError as exc:
        raise Refused(str(exc)) from None


def _parked_preview(params: dict[str, Any]) -> Plan:
    record = _parked(params)
    lines = [
        f"{record.subscriber} would run its handler again on event #{record.position} {record.event_type} ({record.event_id})",
        f"it failed {record.attempts} time(s), last: {record.error[:300]}",
        "its effects and the record that the event is resolved commit together, so it never acts twice",
    ]
    return Plan(lines=lines, fields={"event": str(record.event_id), "subscriber": record.subscriber, "saga": str(record.saga_id or "")})


def _parked_run(params: dict[str, Any], operator: str) -> Outcome:
    try:
        record = _parked(params)
    except Refused as exc:
        return Outcome(ok=False, lines=[str(exc)])
    error = parked_retry(record)
    target = f"{record.subscriber} #{record.position} {record.event_type} {record.event_id}"
    if error is None:
        return Outcome(ok=True, lines=[f"{target}: done"], audit=[(target, record.saga_id, True, "handled; the flow carries on")])
    return Outcome(ok=False, lines=[f"{target}: failed again: {error}"], audit=[(target, record.saga_id, False, f"failed again: {error}")])


# --- a projection --------------------------------------------------------------------------


def _projection(params: dict[str, Any]) -> dict[str, Any]:
    name = str(params.get("projection", ""))
    found = [p for p in projection_status() if p["name"] == name]
    if not found:
        raise Refused(f"no projection named {name!r}")
    return found[0]


def _rebuild_preview(params: dict[str, Any]) -> Plan:
    status = _projection(params)
    lines = [
        f"{status['name']} would be folded from the whole log (head at position {status['head']}) into shadow tables, while the live tables keep serving",
        f"then one transaction swaps the rows in and moves its checkpoint (live now at position {status['position']}, lag {status['lag']})",
        "this runs in the web request: on a long log, prefer manage.py replay_events --projection " + status["name"],
    ]
    return Plan(lines=lines, fields={"projection": status["name"]})


def _rebuild_run(params: dict[str, Any], operator: str) -> Outcome:
    try:
        name = _projection(params)["name"]
    except Refused as exc:
        return Outcome(ok=False, lines=[str(exc)])
    try:
        report = projection_rebuild(name)
    except Exception as exc:  # noqa: BLE001 - reported to the operator and audited
        error = f"{type(exc).__name__}: {exc}"[:500]
        return Outcome(ok=False, lines=[f"rebuild of {name} failed: {error}"], audit=[(name, None, False, error)])
    rows = ", ".join(f"{table}: {count}" for table, count in report.rows.items())
    text = f"{report.events} events; now at position {report.position}; rows: {rows}"
    return Outcome(ok=True, lines=[f"{name} rebuilt: {text}"], audit=[(name, None, True, text)])


# --- in-doubt 2PC transactions --------------------------------------------------------------


def _resolve_lines(report: Any, *, would: bool) -> list[str]:
    prefix = "would " if would else ""
    lines = [f"{prefix}commit {gid}" for gid in report.committed] + [f"{prefix}roll back {gid}" for gid in report.rolled_back]
    lines += [f"left alone: {line}" for line in report.waiting]
    lines += [f"not ours, left alone: {p.gid} in {p.database}" for p in report.foreign]
    lines += [f"error: {line}" for line in report.errors]
    return lines


def _resolve_preview(params: dict[str, Any]) -> Plan:
    report = in_doubt_resolve(dry_run=True)
    lines = _resolve_lines(report, would=True)
    if not (report.committed or report.rolled_back):
        raise Refused("nothing to resolve now" + (": " + "; ".join(lines) if lines else ""))
    lines.append("as the coordinator log says: COMMIT is committed; ABORT, or no decision past the safety interval, is rolled back")
    return Plan(lines=lines, fields={}, count=len(report.committed) + len(report.rolled_back))


def _resolve_run(params: dict[str, Any], operator: str) -> Outcome:
    report = in_doubt_resolve(actor=f"dashboard:{operator}"[:32])
    lines = _resolve_lines(report, would=False)
    audit: list[tuple[str, uuid.UUID | None, bool, str]] = [(str(saga_id), saga_id, True, "resolve in doubt: " + "; ".join(line for line in lines if str(saga_id) in line)) for saga_id in report.ended]
    audit.append(("2pc in doubt", None, not report.errors, "; ".join(lines)[:4000] or "nothing to do"))
    return Outcome(ok=not report.errors, lines=lines or ["nothing to do"], audit=audit)


_retry = _saga_action(saga_retry)
_resume = _saga_action(saga_resume)
_abort = _saga_action(saga_abort)

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action("saga-retry", "Retry a FAILED saga", *_retry, back=_back_to_saga),
        Action("saga-resume", "Resume or time out a stuck saga now", *_resume, back=_back_to_saga),
        Action("saga-abort", "Abort (compensate) a running saga before its pivot", *_abort, back=_back_to_saga),
        Action("sagas-retry-failed", "Retry every FAILED saga of a filter", _bulk_preview, _bulk_run, back=lambda p: "/dashboard/sagas/?state=FAILED"),
        Action("parked-retry", "Retry a parked choreography event", _parked_preview, _parked_run, back=_back_to_saga),
        Action("projection-rebuild", "Rebuild a projection", _rebuild_preview, _rebuild_run, back=lambda p: "/dashboard/projections/"),
        Action("two-phase-resolve", "Resolve in-doubt 2PC transactions", _resolve_preview, _resolve_run, back=lambda p: "/dashboard/"),
    )
}


def audit_record(*, user: Any, action: Action, outcome: Outcome) -> None:
    """One row per target in the audit log (``default``), after the action ran."""
    now = timezone.now()
    rows = [
        OperatorAction(at=now, user=user, username=user.get_username(), action=action.name, target=target[:200], saga_id=saga_id, ok=ok, outcome=text[:4000])
        for target, saga_id, ok, text in outcome.audit
    ]
    with transaction.atomic(using="default"):
        OperatorAction.objects.using("default").bulk_create(rows)


def audit_for_saga(saga_id: uuid.UUID) -> list[OperatorAction]:
    return list(OperatorAction.objects.using("default").filter(saga_id=saga_id).order_by("-at", "-id")[:100])


def audit_recent(*, limit: int = 20) -> list[OperatorAction]:
    return list(OperatorAction.objects.using("default").order_by("-at", "-id")[:limit])
