"""The two-phase commit coordinator: one order placed (or cancelled) atomically across the
``orders`` and ``customers`` databases with PostgreSQL's PREPARE TRANSACTION / COMMIT PREPARED.

The protocol, presumed abort (Lampson and Lomet):

1. **begin**: the transaction's record (a ``SagaInstance`` with mode ``2pc``: what the order
   is, who placed it) is committed in the ``sagas`` database before any branch begins, so
   every prepared transaction of ours has a record saying what it was for.
2. **work and prepare**: each branch runs its context's own use case on a connection of its
   own (``eventlog.twophase``; the customer's row is locked ``FOR UPDATE``), then PREPAREs.
   From here a branch survives any crash and holds its locks until someone finishes it.
3. **decision**: COMMIT is written once, durably, in the coordinator log. A unique index
   allows one decision per transaction, so recovery's presumed ABORT and the coordinator's
   COMMIT can never both be written: whoever is first wins, and the other obeys it. That is
   what makes it safe for recovery to act while a slow coordinator is still alive.
4. **commit**: COMMIT PREPARED on each branch; the record ends COMPLETED.

A refusal (insufficient credit, unknown customer) or an error before the decision rolls both
branches back; a new order is then stored REJECTED in an ordinary transaction and the record
ends COMPENSATED. Once COMMIT is logged nothing can undo it: a branch that cannot be committed
now is committed by ``resolve_in_doubt`` (also run by the periodic sweep).

Global ids are ``sagas-2pc:<node>:<transaction id>:<branch>``: the node (``TWO_PC_NODE_NAME``)
tells our transactions from another deployment's on the same server, the transaction id finds
the log record. Recovery touches only ids with our node, and only reports the others.

Cancelling a 2PC order is a 2PC transaction too (OrderCancelRequested and OrderCancelled in the
orders branch, CreditReleased in the customers one), so a 2PC order is all-or-nothing in both
directions and never shows CANCEL_PENDING to anyone; it blocks like any 2PC transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from eventlog.domain import ConcurrencyError, DomainError, MessageContext
from eventlog.errors import ApplicationError, Conflict, Unavailable
from eventlog.http import IdempotencyKey
from eventlog.idempotency import idempotent_start
from eventlog.sql import insert_rows
from eventlog.twophase import Branch, BranchError, NoSuchPrepared, Prepared, finish_prepared, prepared_list, run_local, two_phase_problem
from sagas.models import ACTIVE_STATES, CoordinatorLogEntry, IdempotencyRecord, SagaInstance, SagaState

logger = logging.getLogger(__name__)

ALIAS = "sagas"
MODE = "2pc"
GID_PREFIX = "sagas-2pc"
#: The branches, in the order they are prepared and committed.
BRANCHES = ("orders", "customers")
COMMIT, ABORT = "COMMIT", "ABORT"
COORDINATOR = "coordinator"
NODE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

#: Called with (point, transaction id) at each point of the protocol: "begun", "worked:<branch>",
#: "prepared:<branch>", "decided", "committed:<branch>", "ended". For instrumentation and for
#: the fault tests, which stop a real coordinator process at each point and kill it there.
phase_observers: list[Callable[[str, uuid.UUID], None]] = []


class TwoPhaseUnavailable(ApplicationError):
    """``mode: "2pc"`` on databases that cannot prepare transactions: a 400, nothing written."""


def two_phase_problems() -> list[str]:
    return [problem for alias in BRANCHES if (problem := two_phase_problem(alias))]


def two_phase_require() -> None:
    problems = two_phase_problems()
    if problems:
        raise TwoPhaseUnavailable(
            "mode '2pc' needs PostgreSQL with max_prepared_transactions above zero for the orders and customers databases: " + "; ".join(problems) + ". Use 'orchestration' or 'choreography'.",
            {"mode": MODE, "problems": problems},
        )


def node_name() -> str:
    return str(settings.TWO_PC_NODE_NAME)


def gid(transaction_id: uuid.UUID, branch: str) -> str:
    return f"{GID_PREFIX}:{node_name()}:{transaction_id}:{branch}"


@dataclass(frozen=True)
class ParsedGid:
    node: str
    transaction_id: uuid.UUID
    branch: str


def gid_parse(value: str) -> ParsedGid | None:
    """The parts of one of *our kind* of global id (any node), or None for anything else."""
    parts = value.split(":")
    if len(parts) != 4 or parts[0] != GID_PREFIX:
        return None
    try:
        return ParsedGid(node=parts[1], transaction_id=uuid.UUID(parts[2]), branch=parts[3])
    except ValueError:
        return None


@dataclass(frozen=True)
class TwoPhaseFinished:
    """What the orders API answers for a 2PC request: the order's final state (``outcome``)."""

    order_id: uuid.UUID
    saga_id: uuid.UUID
    outcome: dict[str, Any] | None = None
    replayed: bool = False


class _Refused(Exception):
    def __init__(self, reason: str | None, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- the log ----------------------------------------------------------------------------------


@dataclass
class _Phases:
    """Phase rows gathered in memory and written with the next durable write of the record.

    Only the record, the decision and the end must be durable before the protocol moves on; the
    phases in between are written with them, so a placed order costs three commits here."""

    saga_id: uuid.UUID
    actor: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, phase: str, outcome: str, *, branch: str = "", started_at: dt.datetime, detail: str = "") -> None:
        self.rows.append({"saga": self.saga_id, "phase": phase, "branch": branch, "outcome": outcome, "actor": self.actor, "started_at": started_at, "at": timezone.now(), "detail": detail[:2000]})

    def flush(self) -> None:
        """Write the gathered rows; must run inside a transaction on ``sagas``."""
        rows, self.rows = self.rows, []
        insert_rows(CoordinatorLogEntry, ALIAS, rows)

    def write(self) -> None:
        """Write the gathered rows, if any, in a transaction of their own."""
        if self.rows:
            with transaction.atomic(using=ALIAS):
                self.flush()


def _observe(point: str, transaction_id: uuid.UUID) -> None:
    for observer in phase_observers:
        observer(point, transaction_id)


def _begin(*, saga_type: str, subject_id: uuid.UUID, data: dict[str, Any], phases: _Phases) -> SagaInstance:
    """The transaction's record; ``Conflict`` when another saga holds the order."""
    now = timezone.now()
    saga = SagaInstance(
        id=phases.saga_id, type=saga_type, mode=MODE, definition_version=1, state=SagaState.RUNNING, subject_id=subject_id,
        data={**data, "node": node_name()}, correlation_id=phases.saga_id, version=1, last_error="", created_at=now, updated_at=now,
    )
    row = {f.attname: getattr(saga, f.attname) for f in SagaInstance._meta.concrete_fields}
    with transaction.atomic(using=ALIAS):
        if not insert_rows(SagaInstance, ALIAS, [row], on_conflict_ignore=True):
            raise Conflict(f"another saga is already running for {subject_id}", {"order_id": str(subject_id)})
        phases.add("begin", "ok", started_at=now, detail=f"{saga_type}; branches {gid(saga.id, BRANCHES[0])} and {gid(saga.id, BRANCHES[1])}")
        phases.flush()
    return saga


def decision_get(saga_id: uuid.UUID) -> str | None:
    return CoordinatorLogEntry.objects.using(ALIAS).filter(saga_id=saga_id, phase="decision").values_list("outcome", flat=True).first()


def _decide(saga_id: uuid.UUID, decision: str, phases: _Phases, *, detail: str = "", reason: str | None = None) -> str:
    """Write ``decision`` unless one is there already; answer the one that stands (durable).

    An ABORT for a refusal keeps its ``reason`` on the record, so whoever stores the REJECTED
    order (this coordinator, or recovery after it died) stores it with its reason."""
    pending = list(phases.rows)
    phases.add("decision", decision, started_at=timezone.now(), detail=detail)
    try:
        with transaction.atomic(using=ALIAS):
            phases.flush()
            if reason is not None:
                saga = SagaInstance.objects.using(ALIAS).select_for_update().get(id=saga_id)
                saga.data = {**saga.data, "reason": reason}
                saga.updated_at = timezone.now()
                saga.save(using=ALIAS, update_fields=["data", "updated_at"])
            else:
                SagaInstance.objects.using(ALIAS).filter(id=saga_id).update(updated_at=timezone.now())
        return decision
    except IntegrityError:
        phases.rows = pending  # they go with the next write
        standing = decision_get(saga_id)
        assert standing is not None, "the unique decision index refused a row, so one exists"
        return standing


def _end(saga: SagaInstance, state: str, phases: _Phases, *, outcome: dict[str, Any] | None, error: str = "") -> bool:
    """End the record (one guarded UPDATE: whichever of coordinator and recovery comes second
    changes nothing) with the phases gathered so far. Answers whether this call ended it."""
    now = timezone.now()
    data = {**saga.data, "outcome": outcome} if outcome is not None else saga.data
    changes: dict[str, Any] = {"state": state, "ended_at": now, "updated_at": now, "version": F("version") + 1, "data": data}
    if error:
        changes["last_error"] = error[:2000]
    with transaction.atomic(using=ALIAS):
        ended = SagaInstance.objects.using(ALIAS).filter(id=saga.id, state__in=ACTIVE_STATES).update(**changes) == 1
        if ended:
            phases.add("end", state, started_at=now)
        phases.flush()
    return ended


# --- the coordinator ------------------------------------------------------------------------


class _Coordinator:
    """One run of the protocol for one transaction; ``work`` does each branch's part."""

    def __init__(self, saga: SagaInstance, phases: _Phases) -> None:
        self.saga = saga
        self.phases = phases
        self.branches = {alias: Branch(alias=alias, gid=gid(saga.id, alias)) for alias in BRANCHES}
        self.context = MessageContext(correlation_id=saga.correlation_id, causation_id=saga.id, saga_id=saga.id)

    def run_branch(self, alias: str, participant: str, **kwargs: Any) -> Any:
        branch = self.branches[alias]
        started = timezone.now()
        if branch.state == "new":
            branch.begin()
        answer = branch.run(participant, context=self.context, **kwargs)
        self.phases.add("work", "ok", branch=alias, started_at=started, detail=participant)
        _observe(f"worked:{alias}", self.saga.id)
        return answer

    def prepare_all(self) -> None:
        for alias in BRANCHES:
            started = timezone.now()
            self.branches[alias].prepare()
            self.phases.add("prepare", "ok", branch=alias, started_at=started, detail=self.branches[alias].gid)
            _observe(f"prepared:{alias}", self.saga.id)

    def commit_all(self) -> str:
        """COMMIT PREPARED each branch; one that fails stays prepared for recovery, which the
        log (COMMIT) tells to commit it. Answers the first error, or ''."""
        first_error = ""
        for alias in BRANCHES:
            started = timezone.now()
            try:
                self.branches[alias].commit()
            except BranchError as exc:
                self.phases.add("commit", "failed", branch=alias, started_at=started, detail=f"{exc}; resolve_in_doubt will commit it")
                first_error = first_error or str(exc)
                continue
            self.phases.add("commit", "ok", branch=alias, started_at=started)
            _observe(f"committed:{alias}", self.saga.id)
        return first_error

    def rollback_all(self) -> None:
        for alias in BRANCHES:
            branch = self.branches[alias]
            was = branch.state
            if was == "new":
                continue
            started = timezone.now()
            try:
                branch.rollback()
            except (BranchError, NoSuchPrepared, DatabaseError) as exc:
                self.phases.add("rollback", "failed", branch=alias, started_at=started, detail=f"{exc}; resolve_in_doubt will roll it back")
                continue
            self.phases.add("rollback", "ok", branch=alias, started_at=started, detail=f"was {was}")

    def abandon(self) -> None:
        """Drop every connection without finishing anything (after the process has to give up)."""
        for branch in self.branches.values():
            branch._discard()


def _finish_abort(saga: SagaInstance, phases: _Phases, *, reason: str | None, error: str, store: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    """After the branches are rolled back: record ABORT, store what an abort leaves (a REJECTED
    order), and end COMPENSATED. Raises ``Unavailable`` when the store cannot be done now (the
    record stays RUNNING with its ABORT, and recovery stores it later)."""
    try:
        decided = _decide(saga.id, ABORT, phases, detail=error or f"refused: {reason}", reason=reason)
    except DatabaseError as exc:  # undecided stays presumed abort: recovery finishes it later
        raise Unavailable("The transaction was rolled back, but its record could not be updated now; it will end REJECTED shortly.", {"saga_id": str(saga.id)}) from exc
    assert decided == ABORT, "only the coordinator writes COMMIT, and it is aborting"
    started = timezone.now()
    try:
        outcome = store()
    except (DatabaseError, BranchError) as exc:
        phases.add("store", "failed", branch="orders", started_at=started, detail=f"{exc}; resolve_in_doubt will store it")
        phases.write()
        raise Unavailable("The order could not be stored now; it will be stored REJECTED shortly.", {"saga_id": str(saga.id)}) from exc
    if outcome is not None:
        phases.add("store", "ok", branch="orders", started_at=started, detail=f"order {outcome['state']} ({outcome['rejection_reason']})")
    _end(saga, SagaState.COMPENSATED, phases, outcome=outcome, error=error)
    _observe("ended", saga.id)
    return outcome


def _reject_store(saga: SagaInstance, reason: str | None) -> Callable[[], dict[str, Any] | None]:
    """The order a create-order transaction leaves when it aborts: REJECTED, in an ordinary
    transaction (with a lock timeout: a live branch of the same order may still hold it)."""
    data = saga.data

    def store() -> dict[str, Any] | None:
        if saga.type != "create_order":
            return None
        context = MessageContext(correlation_id=saga.correlation_id, causation_id=saga.id, saga_id=saga.id)
        return run_local(
            "orders.order_place", lock_timeout=float(settings.TWO_PC_LOCK_TIMEOUT_SECONDS),
            order_id=uuid.UUID(data["order_id"]), customer_id=uuid.UUID(data["customer_id"]), total=Decimal(data["total"]), mode=MODE, approved=False, reason=reason, context=context,
        )

    return store


def _protocol(saga: SagaInstance, phases: _Phases, work: Callable[[_Coordinator], dict[str, Any]]) -> dict[str, Any] | None:
    """Run ``work`` in both branches, prepare, decide, commit; or roll back and finish the abort."""
    coordinator = _Coordinator(saga, phases)
    _observe("begun", saga.id)
    try:
        outcome = work(coordinator)
        coordinator.prepare_all()
    except _Refused as refusal:
        coordinator.rollback_all()
        return _finish_abort(saga, phases, reason=refusal.reason, error="", store=_reject_store(saga, refusal.reason))
    except DomainError as exc:  # a state the use case refuses (cancelling an order not APPROVED)
        coordinator.rollback_all()
        _finish_abort(saga, phases, reason=None, error=str(exc), store=lambda: None)
        raise Conflict(str(exc), {"order_id": str(saga.subject_id)}) from None
    except (BranchError, DatabaseError, ConcurrencyError) as exc:
        logger.warning("2pc %s: aborting before the decision: %s", saga.id, exc)
        coordinator.rollback_all()
        return _finish_abort(saga, phases, reason=None, error=f"{type(exc).__name__}: {exc}", store=_reject_store(saga, None))
    try:
        decided = _decide(saga.id, COMMIT, phases)
    except DatabaseError as exc:
        # The decision may or may not be durable: neither commit nor roll back. Recovery reads
        # the log when it can (a COMMIT that made it is committed; none is presumed ABORT).
        coordinator.abandon()
        raise Unavailable("The coordinator could not log its decision; resolve_in_doubt will finish the transaction.", {"saga_id": str(saga.id)}) from exc
    _observe("decided", saga.id)
    if decided != COMMIT:
        coordinator.rollback_all()
        return _finish_abort(saga, phases, reason=None, error="resolve_in_doubt presumed ABORT before this coordinator decided", store=_reject_store(saga, None))
    error = coordinator.commit_all()
    if error:
        phases.write()
        return outcome  # decided and durable: recovery finishes the commit; the answer stands
    _end(saga, SagaState.COMPLETED, phases, outcome=outcome)
    _observe("ended", saga.id)
    return outcome


# --- the orders context's placer and canceller (plugged in by config/apps.py) -----------------


def order_two_phase_place(*, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal, mode: str, idempotency: IdempotencyKey | None) -> TwoPhaseFinished:
    """Place an order in one 2PC transaction; answers its final state (APPROVED or REJECTED)."""
    two_phase_require()
    phases = _Phases(saga_id=uuid.uuid4(), actor=COORDINATOR)
    data = {"order_id": str(order_id), "customer_id": str(customer_id), "total": f"{total:.2f}"}

    begun: list[SagaInstance] = []

    def start() -> TwoPhaseFinished:
        begun.append(_begin(saga_type="create_order", subject_id=order_id, data=data, phases=phases))
        return TwoPhaseFinished(order_id=order_id, saga_id=begun[0].id)

    started = idempotent_start(
        idempotency, alias=ALIAS, records=IdempotencyRecord, start=start, status_code=201,
        body=lambda s: {"id": str(s.order_id), "saga_id": str(s.saga_id)}, replay=_replayed,
    )
    if started.replayed:
        return started
    saga = begun[0]

    def work(coordinator: _Coordinator) -> dict[str, Any]:
        answer = coordinator.run_branch("customers", "customers.credit_reserve", customer_id=customer_id, order_id=order_id, amount=total)
        if not answer["reserved"]:
            raise _Refused(answer["reason"], f"credit refused: {answer['reason']}")
        return coordinator.run_branch("orders", "orders.order_place", order_id=order_id, customer_id=customer_id, total=total, mode=MODE, approved=True, reason=None)

    return TwoPhaseFinished(order_id=order_id, saga_id=saga.id, outcome=_protocol(saga, phases, work))


def _replayed(body: dict[str, Any]) -> TwoPhaseFinished:
    saga_id = uuid.UUID(body["saga_id"])
    saga = SagaInstance.objects.using(ALIAS).filter(id=saga_id).first()
    if saga is None or saga.state in ACTIVE_STATES or "outcome" not in saga.data:
        raise Conflict("The first request with this Idempotency-Key is still being decided; try again.", {"saga_id": str(saga_id)})
    return TwoPhaseFinished(order_id=uuid.UUID(body["id"]), saga_id=saga_id, outcome=saga.data["outcome"], replayed=True)


def order_two_phase_cancel(*, order_id: uuid.UUID, customer_id: uuid.UUID, total: Decimal) -> TwoPhaseFinished:
    """Cancel an APPROVED 2PC order in one 2PC transaction; answers CANCELLED, or ``Conflict``."""
    two_phase_require()
    phases = _Phases(saga_id=uuid.uuid4(), actor=COORDINATOR)
    data = {"order_id": str(order_id), "customer_id": str(customer_id), "total": f"{total:.2f}"}
    saga = _begin(saga_type="cancel_order", subject_id=order_id, data=data, phases=phases)

    def work(coordinator: _Coordinator) -> dict[str, Any]:
        outcome = coordinator.run_branch("orders", "orders.order_cancel", order_id=order_id)
        coordinator.run_branch("customers", "customers.credit_release", customer_id=customer_id, order_id=order_id)
        return outcome

    outcome = _protocol(saga, phases, work)
    if outcome is None:  # rolled back for an error: the order is as it was
        raise Unavailable(f"The cancel was rolled back ({saga_error(saga.id)}); the order is still APPROVED. Try again.", {"saga_id": str(saga.id)})
    return TwoPhaseFinished(order_id=order_id, saga_id=saga.id, outcome=outcome)


def saga_error(saga_id: uuid.UUID) -> str:
    return SagaInstance.objects.using(ALIAS).filter(id=saga_id).values_list("last_error", flat=True).first() or "unknown error"


# --- recovery ---------------------------------------------------------------------------------


@dataclass
class ResolveReport:
    """What one ``resolve_in_doubt`` pass saw and did."""

    committed: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    #: Transactions of ours left alone: too young to presume anything (their coordinator may be
    #: alive), or a finish that failed for now (the next pass tries again).
    waiting: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Prepared transactions that are not ours: reported with their age, never touched.
    foreign: list[Prepared] = field(default_factory=list)
    ended: list[uuid.UUID] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"committed": len(self.committed), "rolled_back": len(self.rolled_back), "waiting": len(self.waiting), "errors": len(self.errors), "foreign": len(self.foreign), "ended": len(self.ended)}


def prepared_by_transaction() -> tuple[dict[uuid.UUID, list[Prepared]], list[Prepared]]:
    """Prepared transactions in the branch databases: ours by transaction id, and the others."""
    ours: dict[uuid.UUID, list[Prepared]] = {}
    foreign: list[Prepared] = []
    node = node_name()
    for alias in BRANCHES:
        for prepared in prepared_list(alias):
            parsed = gid_parse(prepared.gid)
            if parsed is not None and parsed.node == node and parsed.branch == alias:
                ours.setdefault(parsed.transaction_id, []).append(prepared)
            else:
                foreign.append(prepared)
    return ours, foreign


def in_doubt_resolve(*, actor: str = "resolve_in_doubt", safety_seconds: float | None = None, dry_run: bool = False) -> ResolveReport:
    """Finish every 2PC transaction of ours that its coordinator left: what the log says COMMIT
    is committed; what it says ABORT, or never decided and older than the safety interval
    (presumed abort), is rolled back. Each action is recorded in the log.

    Looks at both the prepared transactions of our node and the records still RUNNING (a
    coordinator that died before any PREPARE leaves only a record). A decided transaction is
    left to its coordinator for ``TWO_PC_DECIDED_GRACE_SECONDS`` after its decision (it is
    usually committing it that very millisecond). ``safety_seconds`` overrides both intervals
    (an operator who knows no coordinator runs). With ``dry_run`` it only reports.
    """
    report = ResolveReport()
    if two_phase_problems():
        return report
    safety = dt.timedelta(seconds=float(settings.TWO_PC_SAFETY_INTERVAL_SECONDS if safety_seconds is None else safety_seconds))
    grace = min(safety, dt.timedelta(seconds=float(settings.TWO_PC_DECIDED_GRACE_SECONDS)))
    # Decisions first, prepared transactions after: a branch of a decided transaction that is
    # missing from a list read *after* its decision has been finished; it cannot be one that
    # is "not prepared yet" (COMMIT is only logged once both are prepared).
    running = {saga.id: saga for saga in SagaInstance.objects.using(ALIAS).filter(mode=MODE, state__in=ACTIVE_STATES)}
    decisions = {
        saga_id: (outcome, at)
        for saga_id, outcome, at in CoordinatorLogEntry.objects.using(ALIAS).filter(saga_id__in=running.keys(), phase="decision").values_list("saga_id", "outcome", "at")
    }
    ours, report.foreign = prepared_by_transaction()
    for transaction_id in sorted(running.keys() | ours.keys()):
        try:
            if transaction_id in running:
                saga: SagaInstance | None = running[transaction_id]
                decided = decisions.get(transaction_id)
            else:  # a prepared branch whose record has ended, or has none: read it after the list
                saga = SagaInstance.objects.using(ALIAS).filter(id=transaction_id).first()
                decided = CoordinatorLogEntry.objects.using(ALIAS).filter(saga_id=transaction_id, phase="decision").values_list("outcome", "at").first()
            _resolve_one(transaction_id, saga, decided, ours.get(transaction_id, []), actor=actor, safety=safety, grace=grace, dry_run=dry_run, report=report)
        except (DatabaseError, BranchError) as exc:
            report.errors.append(f"{transaction_id}: {type(exc).__name__}: {exc}")
    return report


def _resolve_one(
    transaction_id: uuid.UUID, saga: SagaInstance | None, decided: tuple[str, dt.datetime] | None, prepared: list[Prepared],
    *, actor: str, safety: dt.timedelta, grace: dt.timedelta, dry_run: bool, report: ResolveReport,
) -> None:
    now = timezone.now()
    if decided is not None:
        decision, decided_at = decided
        if now - decided_at < grace:
            report.waiting.append(f"{transaction_id}: decided {decision} {(now - decided_at).total_seconds():.1f}s ago: its coordinator is finishing it")
            return
    else:
        born = saga.created_at if saga is not None else min(p.prepared_at for p in prepared)
        if now - born < safety:
            report.waiting.append(f"{transaction_id}: undecided, {(now - born).total_seconds():.1f}s old (safety interval {safety.total_seconds():.0f}s): its coordinator may be alive")
            return
        if dry_run:
            report.rolled_back += [f"{p.gid} (would presume ABORT)" for p in prepared]
            return
        if saga is None:
            # Our node's prefix but no record (the sagas database was restored from an older
            # backup?): nothing says COMMIT, so presumed abort applies; there is no log to write.
            for p in prepared:
                _finish(p.alias, p.gid, commit=False, phases=None, report=report)
            return
        decision = _decide(transaction_id, ABORT, _Phases(saga_id=transaction_id, actor=actor), detail=f"presumed abort: no decision after {(now - born).total_seconds():.1f}s")
        if decision != ABORT:
            # Its coordinator decided COMMIT after our first look: what it prepared may not have
            # been in our list yet. Look again, now that the decision is known.
            ours, _ = prepared_by_transaction()
            prepared = ours.get(transaction_id, [])
    if saga is None:
        report.errors.append(f"{transaction_id}: decided {decision} but its record is gone; left alone")
        return
    if dry_run:
        target = report.committed if decision == COMMIT else report.rolled_back
        target += [f"{p.gid} (would {decision.lower()})" for p in prepared]
        return
    phases = _Phases(saga_id=transaction_id, actor=actor)
    finished = all(_finish(p.alias, p.gid, commit=decision == COMMIT, phases=phases, report=report) for p in prepared)
    if not finished or saga.state not in ACTIVE_STATES:
        phases.write()
        return
    if decision == COMMIT:
        outcome = saga.data.get("outcome") or ({"state": "APPROVED", "rejection_reason": None, "version": 2} if saga.type == "create_order" else None)
        ended = _end(saga, SagaState.COMPLETED, phases, outcome=outcome)
    else:
        started = timezone.now()
        saga.refresh_from_db(using=ALIAS)  # the ABORT may have brought the refusal's reason
        try:
            outcome = _reject_store(saga, saga.data.get("reason"))()
        except (DatabaseError, BranchError) as exc:
            phases.add("store", "failed", branch="orders", started_at=started, detail=str(exc))
            phases.write()
            report.waiting.append(f"{transaction_id}: rolled back, but its REJECTED order could not be stored yet: {exc}")
            return
        if outcome is not None:
            phases.add("store", "ok", branch="orders", started_at=started, detail=f"order {outcome['state']}")
        ended = _end(saga, SagaState.COMPENSATED, phases, outcome=outcome, error=saga.last_error or f"aborted by {actor}")
    if ended:
        report.ended.append(transaction_id)


def _finish(alias: str, prepared_gid: str, *, commit: bool, phases: _Phases | None, report: ResolveReport) -> bool:
    """COMMIT/ROLLBACK PREPARED one branch on a new connection. 'Does not exist' is done: for a
    rollback always, for a commit because the caller only commits what the log says COMMIT
    (and COMMIT is only logged once both branches are prepared)."""
    started = timezone.now()
    phase = "commit" if commit else "rollback"
    try:
        finish_prepared(alias, prepared_gid, commit=commit)
        outcome, detail = "ok", prepared_gid
    except NoSuchPrepared:
        outcome, detail = "already done", f"{prepared_gid} no longer exists"
    except (DatabaseError, BranchError) as exc:
        if phases is not None:
            phases.add(phase, "failed", branch=alias, started_at=started, detail=str(exc))
        report.errors.append(f"{prepared_gid}: {phase} failed: {exc}")
        return False
    if phases is not None:
        phases.add(phase, outcome, branch=alias, started_at=started, detail=detail)
    (report.committed if commit else report.rolled_back).append(prepared_gid)
    return True
