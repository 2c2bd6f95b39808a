"""Invariant checks of event-sourced state, shared by every context, and of the central log.

Each check returns ``Violation`` records instead of raising, so ``manage.py verify`` can report
every broken invariant at once. Checks stream through the tables in chunks.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from eventlog.domain import Aggregate, DomainEvent
from eventlog.models import LogEvent, OutboxEvent, StoredEvent
from eventlog.relay import outboxes

A = TypeVar("A", bound=Aggregate)
EVENTLOG_ALIAS = "eventlog"
CHUNK = 5000


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.subject}: {self.detail}"


@dataclass
class CheckResult:
    name: str
    checked: int
    violations: list[Violation]


def _streams(model: type[StoredEvent], alias: str, stream_type: str | None = None) -> Iterator[tuple[uuid.UUID, list[Any]]]:
    queryset = model.objects.using(alias)
    if stream_type is not None:
        queryset = queryset.filter(stream_type=stream_type)
    rows = queryset.order_by("stream_id", "version").values_list("stream_id", "version", "type", "data").iterator(chunk_size=CHUNK)
    for stream_id, group in itertools.groupby(rows, key=lambda row: row[0]):
        yield stream_id, list(group)


def versions_violations(invariant: str, stream_id: uuid.UUID, versions: list[int]) -> list[Violation]:
    if versions != list(range(1, len(versions) + 1)):
        return [Violation(invariant, f"stream {stream_id}", f"versions are {versions[:10]}{'...' if len(versions) > 10 else ''}, not 1..{len(versions)}")]
    return []


def fold_check(
    *,
    name: str,
    events: type[OutboxEvent],
    alias: str,
    aggregate_class: type[A],
    state_rows: dict[uuid.UUID, Any],
    compare: Callable[[A, Any], Iterable[str]],
) -> CheckResult:
    """Every stream of the aggregate's type has versions 1..n, and its state row equals the
    fold of its events. (Streams of other types in the same outbox, such as the customers
    context's one-event ``CreditCheck`` records, have no state row; the log check covers their
    versions.)"""
    violations: list[Violation] = []
    seen: set[uuid.UUID] = set()
    for stream_id, rows in _streams(events, alias, aggregate_class.stream_type):
        seen.add(stream_id)
        violations += versions_violations("stream versions 1..n", stream_id, [row[1] for row in rows])
        aggregate = aggregate_class.fold(stream_id, [DomainEvent.from_data(row[2], row[3]) for row in rows])
        row = state_rows.get(stream_id)
        if row is None:
            violations.append(Violation("state row = fold", f"{aggregate_class.stream_type} {stream_id}", "has events but no state row"))
            continue
        violations += [Violation("state row = fold", f"{aggregate_class.stream_type} {stream_id}", difference) for difference in compare(aggregate, row)]
    for orphan in state_rows.keys() - seen:
        violations.append(Violation("state row = fold", f"{aggregate_class.stream_type} {orphan}", "has a state row but no events"))
    return CheckResult(name=name, checked=len(seen), violations=violations)


def differences(pairs: dict[str, tuple[Any, Any]]) -> list[str]:
    """``field: row=X fold=Y`` for each pair that differs."""
    return [f"{field}: row={row!s} fold={folded!s}" for field, (row, folded) in pairs.items() if row != folded]


def outbox_in_log_check() -> CheckResult:
    """Every relayed outbox event is in the log exactly once, with its identity unchanged, and
    the log holds nothing that no outbox wrote; pending (unrelayed) events are counted."""
    violations: list[Violation] = []
    logged = {
        event_id: (stream_id, version)
        for event_id, stream_id, version in LogEvent.objects.using(EVENTLOG_ALIAS).values_list("event_id", "stream_id", "version").iterator(chunk_size=CHUNK)
    }
    written: set[uuid.UUID] = set()
    checked = 0
    for outbox in outboxes():
        rows: Iterable[Any] = outbox.model.objects.using(outbox.alias).values_list("event_id", "stream_id", "version", "relayed_at").iterator(chunk_size=CHUNK)
        for event_id, stream_id, version, relayed_at in rows:
            checked += 1
            written.add(event_id)
            in_log = logged.get(event_id)
            if relayed_at is not None and in_log is None:
                violations.append(Violation("outbox event in log once", f"{outbox.source} event {event_id}", "marked relayed but missing from the log"))
            elif in_log is not None and in_log != (stream_id, version):
                violations.append(Violation("outbox event in log once", f"{outbox.source} event {event_id}", f"log has stream/version {in_log}, outbox {(stream_id, version)}"))
    for orphan in logged.keys() - written:
        violations.append(Violation("outbox event in log once", f"log event {orphan}", "is in the log but in no outbox"))
    for stream_id, rows in _streams(LogEvent, EVENTLOG_ALIAS):
        violations += versions_violations("log stream versions 1..n", stream_id, [row[1] for row in rows])
    return CheckResult(name="every outbox event is in the log exactly once", checked=checked, violations=violations)
